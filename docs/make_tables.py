"""Write the tables of the docs that come from code or from measurements, so they cannot drift:

* ``performance``: docs/performance.md's table, read from the JSON files in benchmarks/results/;
* ``drift``: docs/drift.md's table, from benchmarks/results/drift.json;
* ``sampler_costs``: docs/performance.md's per-sampler table, from benchmarks/results/samplers.json;
* ``toy_few_steps``: docs/toy_model.md's steps x cfg table, from seqwidgets/models/toy/few_steps.json;
* ``inputs``: docs/reference.md's table of the node's inputs, from ``seqwidgets.PARAM_SPECS``;
* ``samplers``, ``schedulers``: docs/reference.md's menus, from ``seqwidgets.choices``;
* ``big_models``: docs/big_models.md's family x card table, from ``seqwidgets.device``'s
  parameter counts (estimates, not measurements).

Each table sits between ``<!-- table NAME: ... -->`` and ``<!-- /table NAME -->`` markers.

    python docs/make_tables.py           # rewrite what is out of date, name each file written
    python docs/make_tables.py --check   # change nothing; exit 1 naming the tables out of date

A benchmark that has not been run leaves its rows out; the table says which results are missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _start(name: str) -> str:
    return f"<!-- table {name}: written by docs/make_tables.py; edit the source, not the table -->"


def _end(name: str) -> str:
    return f"<!-- /table {name} -->"


def _result(name: str, results: Path) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def performance_table(results: Path = RESULTS) -> str:
    """The performance rows, each from the result that measured it.

    Example:
        >>> print(performance_table(Path("/nonexistent")).splitlines()[-1])
        Not measured yet: batched_branches, engine_overhead, interaction, live, session_memory, startup, threads, toy, toy_preview (run `python benchmarks/run_all.py`).
    """
    rows = ["| what | figure | target | from |", "|---|---|---|---|"]
    missing = []
    for name, make in _PERFORMANCE_ROWS.items():
        result = _result(name, results)
        if result is None:
            missing.append(name)
            continue
        rows += [
            f"| {what} | {figure} | {target} | `{name}.json` |"
            for what, figure, target in make(result)
        ]
    if missing:
        rows.append("")
        rows.append(
            f"Not measured yet: {', '.join(sorted(missing))} (run `python benchmarks/run_all.py`)."
        )
    return "\n".join(rows)


def _engine_rows(r: dict) -> list[tuple[str, str, str]]:
    ratio, calls = r["ratio_to_hand_loop"], r["text_encoder_calls_per_run"]
    same = (
        "bit for bit"
        if r["engine_vs_hand_rel_l2"] == 0
        else f"rel. L2 {r['engine_vs_hand_rel_l2']:.0e}"
    )
    return [
        (
            f"engine, {r['loops']} loops x {r['steps']} steps, against a hand-written loop making the same model calls",
            f"**{ratio['engine']:.2f}x** (the same latents, {same})",
            "<= 1.05x",
        ),
        (
            "naive loop of `StableDiffusionImg2ImgPipeline` calls, same work",
            f"{ratio['img2img loop']:.2f}x (re-encodes the prompts: {calls['img2img loop']} text-encoder calls against {calls['engine']})",
            "slower than the engine",
        ),
    ]


def _branches_rows(r: dict) -> list[tuple[str, str, str]]:
    return [
        (
            f"{r['branches']} branches from one frame as one batch (`branch_many`) against {r['branches']} in a row",
            f"**{r['speedup']:.1f}x** the throughput, max relative L2 {r['max_rel_l2']:.0e} between them",
            ">= 2.5x on a GPU",
        )
    ]


def _interaction_rows(r: dict) -> list[tuple[str, str, str]]:
    rows = [
        (
            "select and draw a computed frame in the studio (Python side)",
            f"**{r['select_frame_ms']:.2f} ms**",
            "< 2 ms",
        ),
        (
            "redraw a timeline holding 1,000 frames (only visible columns are drawn)",
            f"**{r['timeline_1000_redraw_ms']:.2f} ms**",
            "< 50 ms",
        ),
        (
            f"a studio run with live previews ({r['live_preview']}), metrics strip and drawing, against the engine alone; "
            f"{r['vae_decodes_per_run']:.0f} VAE decodes for {r['loops']} loops, in {r['studio_decodes_in']}",
            f"**{_pct(r['studio_over_engine'])}** (median of rounds; fastest runs {_pct(r['studio_over_engine_fastest'])})",
            "<= 5%",
        ),
        (
            "the same with each frame decoded, measured and drawn in the sampling thread (a CPU whose cores torch's threads all hold)",
            f"{_pct(r['inline_over_engine'])} (fastest runs {_pct(r['inline_over_engine_fastest'])})",
            "",
        ),
        (
            "the studio's own work on the sampling thread, as CPU time (which other processes' load inflates far less than wall time)",
            f"**{_pct(r['studio_work_cpu_over_engine'])}**; a VAE decode a frame there would add {_pct(r['vae_decode_cpu_over_engine'])}",
            "",
        ),
    ]
    return [
        *rows,
        (
            f"the same with a TAESD-sized previewer on this CPU ({r['taesd_decode_s'] * 1000:.0f} ms a decode)",
            _pct(r["taesd_studio_over_engine"]),
            "a GPU decodes it in about a millisecond",
        ),
    ]


def _toy_preview_rows(r: dict) -> list[tuple[str, str, str]]:
    return [
        (
            "the toy model's preview decoder against latent-to-RGB previews, in a studio run",
            f"{_pct(r['studio_decoder_over_studio_latent_rgb'])} ({r['preview_decoder_ms']:.2f} ms a preview; a VAE decode {r['vae_decode_ms']:.1f} ms)",
            "",
        )
    ]


def _memory_rows(r: dict) -> list[tuple[str, str, str]]:
    shape = "x".join(str(n) for n in r["latent_shape"])
    return [
        (
            f"host RAM for {r['frames']:,} frames of SD-1.5 latent size ({shape}, {r['dtype']})",
            f"**{r['rss_delta_session_bytes'] / 1e6:.0f} MB**; {r['rss_delta_session_and_caches_bytes'] / 1e6:.0f} MB with the image caches full",
            f"< {r['target_mb']} MB",
        )
    ]


def _toy_rows(r: dict) -> list[tuple[str, str, str]]:
    return [
        (
            f"toy model, one image {r['image']}, {r['threads']} CPU thread(s)",
            f"**{r['median_s']['euler']:.2f} s** (Euler; {r['median_s']['shipped']:.2f} s with its own scheduler)",
            "< 0.5 s",
        )
    ]


def _startup_rows(r: dict) -> list[tuple[str, str, str]]:
    ratio, seconds = r["ratio_to_python"], r["median_s"]
    commands = ("seqwidgets --help", "seqwidgets render --help", "seqwidgets --version")
    return [
        (
            "`seqwidgets --help` / `render --help` / `--version`, against `python -c pass`",
            " / ".join(f"**{ratio[c]:.1f}x**" for c in commands)
            + f" ({min(seconds[c] for c in commands):.2f} to {max(seconds[c] for c in commands):.2f} s; `import torch` alone: {ratio['import torch (for scale)']:.0f}x)",
            "no torch at startup",
        ),
        (
            "`import seqwidgets`, against `python -c pass`",
            f"**{ratio['import seqwidgets']:.1f}x** (names load on first use)",
            "",
        ),
    ]


def _threads_rows(r: dict) -> list[tuple[str, str, str]]:
    idle, loaded = r["idle"], r["loaded"]
    return [
        (
            f"toy model on a shared {r['cores']}-core CPU (load average {r['load_average_before'][0]:.0f}), 1 thread against 2",
            f"**{idle['1']['loops_per_s']:.1f} against {idle['2']['loops_per_s']:.2f} loops/s**; {loaded['1']['loops_per_s']:.2f} against {loaded['2']['loops_per_s']:.2f} with one more busy process",
            "the default: half the cores",
        )
    ]


def _live_rows(r: dict) -> list[tuple[str, str, str]]:
    first, ratio, burst = (
        r["first_frame_ms"],
        r["first_frame_over_one_loop"],
        r["bursts"]["at once"],
    )
    s = r["settings"]
    rows = [
        (
            f"live draft on the {s['model']} model ({s['steps']} steps, {s['threads']} thread): a settings change to the first draft frame",
            f"**{first['median']:.0f} ms** median, {first['p95']:.0f} ms p95 ({ratio['median']:.2f}x / {ratio['p95']:.2f}x one loop of {r['one_loop_engine_ms']:.0f} ms)",
            f"<= {ratio['target']:g}x one loop",
        ),
    ]
    fewer = r.get("first_frame_ms_at_draft_steps")
    if fewer is not None:
        rows.append(
            (
                f"the same with draft steps {fewer['draft_steps']} (Keep renders the branch at {s['steps']})",
                f"**{fewer['median']:.0f} ms** median, {fewer['p95']:.0f} ms p95 ({fewer['over_one_loop_median']:.2f}x one loop at {s['steps']} steps)",
                "",
            )
        )
    return [
        *rows,
        (
            f"a burst of {burst['changes']} changes at once",
            f"{burst['drafts_started']} drafts started, {burst['drafts_finished']} finished, {burst['model_calls']} model calls (one draft: {burst['model_calls_of_one_draft']})",
            "no queued work",
        ),
    ]


_PERFORMANCE_ROWS: dict[str, Callable[[dict], list[tuple[str, str, str]]]] = {
    "engine_overhead": _engine_rows,
    "batched_branches": _branches_rows,
    "interaction": _interaction_rows,
    "toy_preview": _toy_preview_rows,
    "live": _live_rows,
    "session_memory": _memory_rows,
    "toy": _toy_rows,
    "startup": _startup_rows,
    "threads": _threads_rows,
}


def drift_table(results: Path = RESULTS) -> str:
    """docs/drift.md's table: drift and cost per colour-coherence mode."""
    r = _result("drift", results)
    if r is None:
        return "Not measured yet: run `python benchmarks/bench_drift.py`."
    rows = [
        f"| `color_coherence` | ΔE from loop 0 at loop {r['loops'] - 1} | mean ΔE, last 10 loops | matching per loop | median time per loop |",
        "|---|---|---|---|---|",
    ]
    best = min(r["drift_lab_mean_last_10"], key=r["drift_lab_mean_last_10"].get)
    for mode, last in r["drift_lab_last"].items():
        mean = r["drift_lab_mean_last_10"][mode]
        mean_text = f"**{mean:.1f}**" if mode == best else f"{mean:.1f}"
        matching = r["matching_seconds_per_loop"][mode]
        rows.append(
            f'| `"{mode}"` | {last:.1f} | {mean_text} | {matching:.4g} s | {r["seconds_per_loop"][mode]:.2f} s |'
        )
    return "\n".join(rows)


def samplers_cost_table(results: Path = RESULTS) -> str:
    """docs/performance.md's per-sampler table: model calls and time per loop on the toy model.

    Example:
        >>> samplers_cost_table(Path("/nonexistent"))
        'Not measured yet: run `python benchmarks/bench_samplers.py --json benchmarks/results/samplers.json`.'
    """
    r = _result("samplers", results)
    if r is None:
        return "Not measured yet: run `python benchmarks/bench_samplers.py --json benchmarks/results/samplers.json`."
    settings = r["settings"]
    rows = [
        f"{settings['loops']} loops of {settings['steps']} steps at `denoise_seq={settings['denoise_seq']}`, "
        f"cfg {settings['cfg']}, {r['machine']['threads']} CPU thread(s):",
        "",
        "| sampler | model calls / loop | seconds / loop | the sampler's own ms / step |",
        "|---|---|---|---|",
    ]
    for name, m in r["samplers"].items():
        rows.append(
            f"| `{name}` | {m['model_calls_per_loop']:g} | {m['seconds_per_loop']:.2f} | {m['sampler_ms_per_step']:.2f} |"
        )
    return "\n".join(rows)


TOY_FEW_STEPS = ROOT / "seqwidgets" / "models" / "toy" / "few_steps.json"


def toy_few_steps_table(path: Path = TOY_FEW_STEPS) -> str:
    """docs/toy_model.md's steps x cfg table of color adherence, from the toy model's evaluation.

    Example:
        >>> toy_few_steps_table(Path("/nonexistent.json")).startswith("Not measured yet")
        True
    """
    if not path.exists():
        return (
            "Not measured yet: run `python -m seqwidgets.models.toy.evaluate --threads 1 "
            "--few-steps seqwidgets/models/toy/few_steps.json`."
        )
    from seqwidgets.models.toy.evaluate import few_steps_markdown

    return few_steps_markdown(json.loads(path.read_text(encoding="utf-8")))


def inputs_table() -> str:
    """The Markdown table of every `SequenceParams` input, from `PARAM_SPECS`."""
    from seqwidgets.params import PARAM_SPECS

    def allowed(spec) -> str:
        if spec.kind == "choice":
            if len(spec.choices) > 12:
                return f"one of {len(spec.choices)} names (below)"
            return ", ".join(f"`{choice}`" for choice in spec.choices)
        if spec.kind == "bool":
            return "`True` / `False`"
        if spec.kind == "keyframes":
            return "`index: prompt` lines"
        number = (lambda v: str(int(v))) if spec.kind == "int" else (lambda v: f"{v:g}")
        high = "2**64 - 1" if spec.max == 2**64 - 1 else number(spec.max)
        text = f"{number(spec.min)} – {high}"
        if spec.multiple_of:
            text += f", multiple of {spec.multiple_of}"
        return text + (", or `None`" if spec.nullable else "")

    def default(spec) -> str:
        if spec.kind == "keyframes":
            return "the node's rosebud keyframes" if spec.default else '`""` (the empty prompt)'
        value = spec.default
        return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"

    rows = ["| input | what it does | default | allowed |", "|---|---|---|---|"]
    for spec in PARAM_SPECS.values():
        name = f"`{spec.name}`" + ("" if spec.node else " *(seqwidgets)*")
        rows.append(f"| {name} | {spec.help} | {default(spec)} | {allowed(spec)} |")
    return "\n".join(rows)


def samplers_table() -> str:
    from seqwidgets.choices import samplers_markdown

    return samplers_markdown()


def schedulers_table() -> str:
    from seqwidgets.choices import SCHEDULERS

    return ", ".join(f"`{name}`" for name in SCHEDULERS)


def big_models_table() -> str:
    """Released models x card sizes: the settings whose estimated weights fit."""
    from seqwidgets.device import weight_memory_table

    return weight_memory_table()


#: Which file holds which table, and what writes it.
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "performance": ("docs/performance.md", performance_table),
    "drift": ("docs/drift.md", drift_table),
    "sampler_costs": ("docs/performance.md", samplers_cost_table),
    "toy_few_steps": ("docs/toy_model.md", toy_few_steps_table),
    "inputs": ("docs/reference.md", inputs_table),
    "samplers": ("docs/reference.md", samplers_table),
    "schedulers": ("docs/reference.md", schedulers_table),
    "big_models": ("docs/big_models.md", big_models_table),
}


def with_table(text: str, name: str, table: str, where: str) -> str:
    """``text`` with the block of table ``name`` replaced by ``table``.

    Example:
        >>> text = f"a\\n{_start('x')}\\nold\\n{_end('x')}\\nb"
        >>> with_table(text, "x", "new", "doc").splitlines()[2]
        'new'
    """
    pattern = re.compile(re.escape(_start(name)) + r"\n.*?\n?" + re.escape(_end(name)), re.DOTALL)
    if pattern.search(text) is None:
        raise ValueError(
            f"{where}: no block for table {name!r} ({_start(name)!r} ... {_end(name)!r})"
        )
    return pattern.sub(lambda _: f"{_start(name)}\n{table}\n{_end(name)}", text, count=1)


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every file this script writes, with the text it should hold."""
    files: dict[Path, str] = {}
    for name, (where, make) in TABLES.items():
        path = root / where
        text = files.get(path) or path.read_text(encoding="utf-8")
        files[path] = with_table(text, name, make(), where)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        if path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"out of date: {names}; run `python docs/make_tables.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
