"""Colour drift over a long loopback run, with and without each colour coherence mode.

One fixed prompt, ``--loops`` loops at denoise 0.5 on the shipped toy model (or another), run
once per ``color_coherence`` mode (reference: loop 0). For each mode: the LAB colour drift from
loop 0 (`seqwidgets.metrics`, ``drift_lab``) at the last loop and its mean over the last 10
loops, the drift per loop, the median time per loop (colour matching included), the matching's
own time, and the time `Session.metrics` adds per loop once the thumbnails are decoded (the
studio's metrics strip). One thread, as on a shared CPU. Run:

    python benchmarks/bench_drift.py --json benchmarks/results/drift.json \\
        --figure docs/images/color_drift.png
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from common import machine, write_result  # noqa: E402

import seqwidgets as sw  # noqa: E402
from seqwidgets import plots  # noqa: E402
from seqwidgets.choices import COLOR_COHERENCE_MODES  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the shipped toy model")
    p.add_argument("--loops", type=int, default=60)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompt", default="a red circle")
    p.add_argument("--modes", nargs="+", default=list(COLOR_COHERENCE_MODES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None, help="write the drift figure here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = sw.load_pipeline(args.model, device="cpu")
    base = dict(
        positive_seq=f"0: {args.prompt}",
        steps=args.steps,
        cfg=7.5,
        sequence_loop_count=args.loops,
        denoise_seq=0.5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keyframes beyond a short --loops
        sw.Session(pipe).run(sw.SequenceParams(**dict(base, sequence_loop_count=2)))  # warm-up

    runs, seconds, coherence_seconds, metrics_seconds = {}, {}, {}, {}
    for mode in args.modes:
        session = sw.Session(pipe)
        params = sw.SequenceParams(**base, color_coherence=mode)
        branch = session.run(params)
        frames = session.path(branch)
        # Medians of the per-loop timings (matching included): robust to a busy shared CPU.
        seconds[mode] = statistics.median(f.timings["total"] for f in frames)
        coherence_seconds[mode] = statistics.median(f.timings.get("coherence", 0.0) for f in frames)
        # The studio decodes every frame for its thumbnail; the metrics then reuse that image.
        for i in branch.indices:
            session.thumbnail(branch, i, 56)
        started = time.perf_counter()
        runs[mode] = session.metrics(branch)
        metrics_seconds[mode] = (time.perf_counter() - started) / args.loops

    tail = min(10, args.loops)
    drift = {mode: rows.column("drift_lab") for mode, rows in runs.items()}
    print(
        f"{args.loops} loops x {args.steps} steps at denoise 0.5, '{args.prompt}', "
        f"model {args.model or 'toy'}, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"{'mode':8}{'drift last':>12}{f'mean last {tail}':>14}{'s/loop':>9}{'matching':>10}"
        f"{'metrics':>9}"
    )
    for mode in runs:
        print(
            f"{mode:8}{drift[mode][-1]:12.2f}{sum(drift[mode][-tail:]) / tail:14.2f}"
            f"{seconds[mode]:9.3f}{coherence_seconds[mode]:10.4f}{metrics_seconds[mode]:9.4f}"
        )
    if args.figure is not None:
        figure = plots.drift_figure(runs, "drift_lab")
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=100)
    result = {
        "benchmark": "color_drift",
        **machine(pipe),
        "model": args.model or "toy",
        "prompt": args.prompt,
        "loops": args.loops,
        "steps": args.steps,
        "denoise_seq": 0.5,
        "color_reference": "loop0",
        "drift_lab_last": {mode: values[-1] for mode, values in drift.items()},
        f"drift_lab_mean_last_{tail}": {m: sum(v[-tail:]) / tail for m, v in drift.items()},
        "seconds_per_loop": seconds,
        "matching_seconds_per_loop": coherence_seconds,
        "metrics_seconds_per_loop": metrics_seconds,
        "metrics_over_loop_time": {m: metrics_seconds[m] / seconds[m] for m in runs},
        "drift_lab": drift,
    }
    return write_result(args.json, result)


if __name__ == "__main__":
    main()
