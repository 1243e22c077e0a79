"""Pure HTML and text for the studio: what each part of the screen says, with no widget in sight.

Every function here takes plain values (settings, a frame, a job's counters, a time) and returns
a string, so what the studio shows is tested without a front end, a thread or a clock.

Example:
    >>> describe_changes({"denoise_seq": (0.5, 0.3), "positive_seq": ("0: a\\n4: b", "0: a\\n4: c")})
    'denoise_seq 0.5 → 0.3, positive_seq (line 2)'
"""

from __future__ import annotations

import html
from typing import Any

from seqwidgets.device import module_device
from seqwidgets.frames import chain_blend
from seqwidgets.params import PARAM_SPECS

__all__ = [
    "EMPTY_INFO_HTML",
    "bar_style",
    "chain_html",
    "describe_changes",
    "error_html",
    "finish_note",
    "fmt_seconds",
    "format_value",
    "frame_info_html",
    "full_vae_info_html",
    "header_html",
    "live_info_html",
    "lora_text",
    "missing_info_html",
    "model_description",
    "progress_html",
    "status_html",
]


def format_value(value: Any) -> str:
    """A setting as the panel shows it: ``None`` is "auto", booleans are "on" / "off".

    >>> format_value(None), format_value(True), format_value(0.25), format_value("euler")
    ('auto', 'on', '0.25', 'euler')
    """
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _changed_lines(old: str, new: str) -> list[int]:
    """1-based numbers of the lines that differ between two texts (added or removed count)."""
    a, b = old.splitlines(), new.splitlines()
    return [i + 1 for i in range(max(len(a), len(b))) if a[i : i + 1] != b[i : i + 1]]


def describe_changes(changes: dict[str, tuple[Any, Any]], *, limit: int = 3) -> str:
    """``changes`` (field -> (selected value, edited value)) as one short line.

    A keyframe text names its changed lines rather than repeating the prompts.

    >>> describe_changes({"cfg": (8.0, 3.0), "seed_mode_seq": ("increment", "fixed")})
    'cfg 8 → 3, seed_mode_seq increment → fixed'
    >>> describe_changes({"positive_seq": ("0: a", "0: a\\n3: b\\n5: c\\n7: d\\n9: e")})
    'positive_seq (lines 2, 3, 4, …)'
    >>> describe_changes({})
    ''
    """
    parts = []
    for name, (old, new) in changes.items():
        spec = PARAM_SPECS.get(name)
        if spec is not None and spec.kind == "keyframes" and isinstance(new, str):
            lines = _changed_lines(old or "", new)
            if not lines:
                parts.append(f"{name} (whitespace)")
                continue
            shown = ", ".join(str(n) for n in lines[:limit]) + (", …" if len(lines) > limit else "")
            parts.append(f"{name} (line{'s' if len(lines) > 1 else ''} {shown})")
        else:
            parts.append(f"{name} {format_value(old)} → {format_value(new)}")
    return ", ".join(parts)


# -- the studio's texts ------------------------------------------------------------------------

#: The info panel before any frame exists: what to do first.
EMPTY_INFO_HTML = (
    "<div class='sw-info'><div class='sw-loop'>no frame yet</div>"
    "<div class='sw-muted'>Write keyframe prompts, press <b>Run</b>, then click a frame on the "
    "timeline (drag to scrub, arrow keys to step). The panel shows the settings that made the "
    "selected frame: <b>Branch</b> continues after it with the settings you change; "
    "<b>Re-run</b> recomputes it.</div></div>"
)

_CHIP = {"running": "running", "stopping": "stopped", "stopped": "stopped", "error": "error"}


def fmt_seconds(seconds: float) -> str:
    """``m:ss``, for times left.

    >>> fmt_seconds(75.4), fmt_seconds(-3)
    ('1:15', '0:00')
    """
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def status_html(state: str) -> str:
    """The status chip: ``idle``, ``running``, ``stopping``, ``stopped`` or ``error``.

    >>> status_html("error")
    "<span class='sw-chip error'>error</span>"
    """
    return f"<span class='sw-chip {_CHIP.get(state, '')}'>{html.escape(state)}</span>"


def lora_text(adapters) -> str:
    """LoRA adapters (``[(name, source, scale), ...]``, as `seqwidgets.models.lora_adapters`
    lists them) for the header: ``"LoRA: name 0.8, other 1"``, or ``""`` for none.

    >>> lora_text([("style", "me/style-lora", 0.8), ("detail", "./detail", 1.0)])
    'LoRA: style 0.8, detail 1'
    >>> lora_text([])
    ''
    """
    if not adapters:
        return ""
    return "LoRA: " + ", ".join(f"{name} {float(scale):g}" for name, _source, scale in adapters)


def model_description(pipe) -> str:
    """The model in a line: its family, image size, device and dtype of the denoising network,
    and the LoRA adapters ``load_pipeline`` applied.

    >>> from seqwidgets.testing import tiny_pipeline
    >>> model_description(tiny_pipeline("sd3"))
    'Stable Diffusion 3 / 3.5 · 64×64 · cpu · float32'
    >>> model_description(None)
    'toy model (loads on the first run)'
    """
    if pipe is None:
        return "toy model (loads on the first run)"
    from seqwidgets.families import detect_family
    from seqwidgets.models import lora_adapters

    try:
        family = detect_family(pipe)
        network = family.denoiser_network(pipe)
        side = family.default_image_size(pipe)
        dtype = str(network.dtype).removeprefix("torch.")
        text = f"{family.label} · {side}×{side} · {module_device(network).type} · {dtype}"
    except Exception:  # an unknown pipeline, or a stand-in: its class name says enough
        text = type(pipe).__name__
    lora = lora_text(lora_adapters(pipe))
    return f"{text} · {lora}" if lora else text


def header_html(
    model: str, threaded: bool = True, renderer: str = "canvas", preview: str = ""
) -> str:
    """The studio's title line: the model, the live preview in use (``preview``, the note of
    `seqwidgets.decode.make_previewer`), and any mode a user should know about.

    >>> "main-thread mode" in header_html("toy", threaded=False)
    True
    >>> "latent-to-RGB preview" in header_html("toy", preview="latent-to-RGB preview")
    True
    """
    mode = "" if threaded else " · main-thread mode"
    shown = "" if renderer == "canvas" else " · image renderer"
    note = ""
    if preview:  # a fallback's reason can be long (a hub error): the whole of it in the tooltip
        short = preview if len(preview) <= 120 else preview[:117] + "…"
        note = (
            f" · <span class='sw-note' title='{html.escape(preview)}'>{html.escape(short)}</span>"
        )
    return (
        "<span class='sw-title'>KSampler Sequence studio</span> "
        f"<span class='sw-sub'>&nbsp;{html.escape(model)}{note}{mode}{shown}</span>"
    )


def bar_style(job) -> str:
    """The progress bar's colour for ``job``: failed, stopping, done or going."""
    if job.error is not None:
        return "danger"
    if job.stopping:
        return "warning"
    return "success" if job.finished else "info"


def progress_html(job, now: float, note: str | None = None) -> str:
    """The progress line of ``job`` at time ``now``: loop, step, speed and time left.

    Loops are numbered from 0, as on the timeline and in the node's keyframes.

    >>> from seqwidgets.params import SequenceParams
    >>> from seqwidgets.widgets.jobs import Job
    >>> job = Job("run", SequenceParams(steps=4, sequence_loop_count=20), started=0.0)
    >>> for step in range(4):
    ...     job.on_step(0, step, now=1.0 + step)
    >>> progress_html(job, now=4.0)
    "<span class='sw-progress'>loop 0 (1/20) · step 4/4 · 1.0 it/s · ETA 1:16</span>"
    """
    params = job.params
    if params is None or job.fork is None:  # an export, or nothing computed yet
        return f"<span class='sw-progress'>{html.escape(note or '')}</span>"
    text = (
        f"loop {job.loop} ({job.loop + 1}/{params.sequence_loop_count}) · "
        f"step {job.step + 1}/{params.steps}"
    )
    rate = job.rate(now)
    if rate is not None:
        text += f" · {rate:.1f} it/s"
        if not job.finished:
            text += f" · ETA {fmt_seconds((job.total_steps - job.done_steps) / max(rate, 1e-6))}"
    if note:
        text = f"{note} <span class='sw-muted'>({text})</span>"
    return f"<span class='sw-progress'>{text}</span>"


def finish_note(job, now: float, stopped: bool) -> tuple[str, str]:
    """``(state, note)`` once ``job`` has ended: how it ended, in a few words.

    >>> from seqwidgets.widgets.jobs import Job
    >>> finish_note(Job("run", None, started=0.0, frames=3), 2.5, stopped=True)
    ('stopped', 'stopped after 3 frame(s), 2.5 s')
    """
    elapsed = now - job.started
    if job.error is not None:
        return "error", f"{job.kind} failed after {elapsed:.1f} s"
    if stopped:
        return "stopped", f"stopped after {job.frames} frame(s), {elapsed:.1f} s"
    if job.kind == "export":
        return "idle", f"wrote {html.escape(str(job.result))}"
    return "idle", f"done: {job.frames} frame(s) in {elapsed:.1f} s"


def draft_steps_note(draft_steps: int, steps: int) -> str:
    """What a draft with fewer steps than its branch says, on its row and in the live bar.

    >>> draft_steps_note(2, 8), draft_steps_note(1, 4)
    ('draft at 2 steps — Keep renders at 8', 'draft at 1 step — Keep renders at 4')
    """
    unit = "step" if draft_steps == 1 else "steps"
    return f"draft at {draft_steps} {unit} — Keep renders at {steps}"


def draft_note_html(
    state: str,
    changes: dict[str, tuple[Any, Any]],
    fork: int,
    steps: tuple[int, int] | None = None,
) -> str:
    """The live bar's line: the draft's ``state`` ("drafting", "ready", "stopped", "failed"),
    what it changes, the loop it starts at and, for a draft with fewer model steps than the
    branch it would become, ``steps``: ``(draft steps, the branch's steps)``.

    >>> draft_note_html("ready", {"denoise_seq": (1.0, 0.3)}, 4)
    "<span class='sw-draft'>draft ready</span> <span class='sw-muted'>from loop 4: denoise_seq 1 → 0.3</span>"
    >>> draft_note_html("ready", {"cfg": (8.0, 2.0)}, 2, steps=(2, 8)).split(" · ")[1]
    "<span class='sw-draft-steps'>draft at 2 steps — Keep renders at 8</span>"
    """
    what = html.escape(describe_changes(changes))
    line = (
        f"<span class='sw-draft'>draft {html.escape(state)}</span> "
        f"<span class='sw-muted'>from loop {fork}: {what}</span>"
    )
    if steps is not None:
        line += f" · <span class='sw-draft-steps'>{html.escape(draft_steps_note(*steps))}</span>"
    return line


def chain_html(chain) -> str:
    """A frame's prompt chain as the caption says it (`seqwidgets.frames.chain_blend`): its
    prompt, or between keyframes the prompt, the next one and the next one's share.

    >>> chain_html([("a red circle", 1.0), ("a blue square", 0.25)])
    "<span class='sw-prompt'>a red circle</span> → <span class='sw-prompt'>a blue square</span> <span class='sw-muted'>25%</span>"
    """
    if not chain:
        return ""
    prompt, following, percent = chain_blend(chain)
    shown = f"<span class='sw-prompt'>{html.escape(prompt) or '(empty)'}</span>"
    if following is None:
        return shown
    return (
        f"{shown} → <span class='sw-prompt'>{html.escape(following) or '(empty)'}</span> "
        f"<span class='sw-muted'>{percent}%</span>"
    )


def live_info_html(loop: int, step: int, params, preview: str = "latent-to-RGB") -> str:
    """The info panel while loop ``loop`` runs and the preview is an estimate (``preview`` says
    which: ``"latent-to-RGB"``, ``"TAESD"``, ...).

    >>> from seqwidgets.params import SequenceParams
    >>> "TAESD estimate" in live_info_html(2, 3, SequenceParams(), "TAESD")
    True
    """
    return (
        f"<div class='sw-info'><div class='sw-loop'>loop {loop}"
        f"<span> of {params.sequence_loop_count}</span>"
        f"<span class='sw-badge sw-live'>live · step {step + 1}/{params.steps}</span></div>"
        f"<div class='sw-muted'>{html.escape(preview)} estimate of the denoised image; the "
        "decoded frame replaces it when the loop ends (<b>Decode with full VAE</b> shows it now)</div></div>"
    )


def full_vae_info_html(loop: int, step: int, params) -> str:
    """The info panel for the live estimate of ``loop`` at ``step`` decoded with the full VAE.

    >>> from seqwidgets.params import SequenceParams
    >>> text = full_vae_info_html(3, 4, SequenceParams(steps=20))
    >>> "full VAE" in text and "step 5/20" in text
    True
    """
    return (
        f"<div class='sw-info'><div class='sw-loop'>loop {loop}"
        f"<span> of {params.sequence_loop_count}</span>"
        f"<span class='sw-badge'>full VAE · live estimate at step {step + 1}/{params.steps}</span>"
        "</div><div class='sw-muted'>the denoised estimate of an unfinished loop, decoded with the "
        "pipeline's VAE (not a finished frame)</div></div>"
    )


def missing_info_html(name: str, index: int) -> str:
    """The info panel for a selected loop that is not computed yet."""
    return (
        f"<div class='sw-info'><div class='sw-loop'>loop {index}</div>"
        f"<div class='sw-muted'>{html.escape(name)}: not computed yet</div></div>"
    )


def frame_info_html(branch, frame, size: tuple[int, int], decoded: str = "") -> str:
    """The info panel for a computed frame of ``branch`` (the branch whose settings made it);
    ``decoded`` names the decoder in a badge (e.g. ``"full VAE"``) when the user asked for it.

    >>> import torch
    >>> from seqwidgets.frames import Frame
    >>> from seqwidgets.params import SequenceParams
    >>> from seqwidgets.session import Branch
    >>> run = Branch(1, "run 1", SequenceParams(positive_seq="0: a red circle"))
    >>> frame = Frame(index=0, seed=5, latent=None, denoise=1.0, positive=[("a red circle", 1.0)],
    ...               negative=[], sigmas=torch.tensor([14.6, 0.0]))
    >>> text = frame_info_html(run, frame, (64, 64))
    >>> "loop 0" in text and "keyframe" in text and "run 1" in text and "64×64" in text
    True
    """
    params = branch.params
    keyframes = {i for i, _ in params.positive_keyframes}
    badge = "<span class='sw-badge'>keyframe</span>" if frame.index in keyframes else ""
    if decoded:
        badge += f"<span class='sw-badge'>{html.escape(decoded)} decode</span>"
    negative = chain_html(frame.negative) or "<span class='sw-muted'>(empty)</span>"
    sigmas = frame.sigmas
    span = f"{float(sigmas[0]):.3g} → {float(sigmas[-1]):.3g}" if len(sigmas) else "—"
    timing = frame.timings.get("total")
    rows = [
        ("branch", html.escape(branch.name)),
        ("seed", str(frame.seed)),
        ("denoise", f"{frame.denoise:.2f}"),
        (
            "steps",
            f"{frame.steps} · {html.escape(params.sampler_name)} / "
            f"{html.escape(params.scheduler)} · cfg {params.cfg:g}",
        ),
        ("sigmas", span),
        ("positive", chain_html(frame.positive)),
        ("negative", negative),
        ("size", f"{size[0]}×{size[1]}" + (f" · {timing:.2f} s" if timing is not None else "")),
    ]
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return (
        f"<div class='sw-info'><div class='sw-loop'>loop {frame.index}"
        f"<span> of {params.sequence_loop_count}</span>{badge}</div>"
        f"<table>{table}</table></div>"
    )


def error_html(exc: BaseException, text: str) -> str:
    """An error: its message in bold, the traceback folded below it.

    >>> "<details>" in error_html(ValueError("steps: 0 is out of range"), "Traceback ...")
    True
    """
    message = html.escape(f"{type(exc).__name__}: {exc}")
    return (
        f"<div class='sw-errorbox'><b>{message}</b>"
        f"<details><summary>traceback</summary><pre>{html.escape(text)}</pre></details></div>"
    )
