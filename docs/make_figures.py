"""Render the figures of the README and docs/teaching.md into docs/images/.

    python docs/make_figures.py            # every figure
    python docs/make_figures.py drift      # only the ones named

Diagrams come from `seqwidgets.plots` (no model); pictures from the shipped toy model on the CPU
(about a minute in all). Every PNG must stay under 200 KB; the script checks.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import seqwidgets as sw  # noqa: E402
from seqwidgets import plots  # noqa: E402
from seqwidgets.decode import decode_latents  # noqa: E402
from seqwidgets.session import Session  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"
MAX_BYTES = 200 * 1024
KEYFRAMES = "0: a red circle\n5: a blue circle\n10: a blue square"

_pipe = None


def pipe():
    global _pipe
    if _pipe is None:
        _pipe = sw.load_pipeline(device="cpu")
    return _pipe


def save(figure, name: str, *, palette: bool = False) -> Path:
    """Write a figure as PNG; ``palette``: as 256 colours (pictures: a third of the size)."""
    path = OUT / f"{name}.png"
    figure.savefig(path, dpi=100)
    if palette:
        with Image.open(path) as image:
            quantized = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
        quantized.save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path.name} is {size // 1024} KB; keep figures under 200 KB")
    print(f"{path.relative_to(OUT.parent.parent)}: {size // 1024} KB")
    return path


def sigma_slices():
    params = sw.SequenceParams(
        positive_seq="0: a red circle", steps=10, sequence_loop_count=6, denoise_seq=0.5
    )
    save(plots.plot_sigma_slices(params), "sigma_slices")


def schedulers():
    save(plots.plot_schedulers(steps=20), "schedulers")


def seed_sequence():
    settings = [
        sw.SequenceParams(seed=5, sequence_loop_count=12),
        sw.SequenceParams(seed=0, sequence_loop_count=12),
        sw.SequenceParams(seed=5, seed_mode_seq="decrement", sequence_loop_count=12),
        sw.SequenceParams(seed=5, alternate_values=False, sequence_loop_count=12),
        sw.SequenceParams(seed=5, seed_mode_seq="random", sequence_loop_count=12),
    ]
    save(plots.plot_seed_sequence(settings), "seed_sequence")


def keyframe_weights():
    base = sw.SequenceParams(positive_seq=KEYFRAMES, sequence_loop_count=15)
    settings = [
        base,
        base.replace(use_conditioning_slerp=True, cond_slerp_strength=0.5),
        base.replace(keyframe_interpolation="linear"),
        base.replace(keyframe_interpolation="ease"),
    ]
    save(plots.plot_keyframe_weights(settings), "keyframe_weights")


def interpolation_norms():
    save(plots.plot_interpolation_norms(), "interpolation_norms")


def _keyframe_runs():
    base = sw.SequenceParams(
        positive_seq=KEYFRAMES,
        sequence_loop_count=15,
        steps=12,
        denoise_seq=0.5,
        seed=1,
        seed_mode_seq="fixed",
        alternate_values=False,
    )
    variants = {
        "hard cuts": base,
        "the node's conditioning slerp, strength 0.5": base.replace(
            use_conditioning_slerp=True, cond_slerp_strength=0.5
        ),
        'smooth transition, keyframe_interpolation="ease"': base.replace(
            keyframe_interpolation="ease"
        ),
    }
    sampler = sw.SequenceSampler(pipe())
    return {name: sampler.sample(params) for name, params in variants.items()}


def keyframe_runs():
    """Three rows: the same keyframes as hard cuts, the node's slerp and an eased transition."""
    runs = _keyframe_runs()
    rows = {name: decode_latents(pipe().vae, latents) for name, latents in runs.items()}
    save(plots.plot_timelines(rows), "keyframe_runs", palette=True)
    save(plots.plot_drift(runs, keyframes=[5, 10]), "drift")


def branches():
    """A run and three branches from its loop 3, one row each (shared loops captioned)."""
    session = Session(pipe())
    params = sw.SequenceParams(
        seed=3,
        positive_seq="0: a red circle\n6: a blue square",
        sequence_loop_count=10,
        steps=12,
        denoise_seq=0.5,
    )
    main = session.run(params, name="main run")
    tree = [
        main,
        session.branch((main, 3), denoise_seq=0.3, name="branch after loop 3: denoise_seq 0.3"),
        session.branch((main, 3), denoise_seq=0.8, name="branch after loop 3: denoise_seq 0.8"),
        session.branch(
            (main, 3),
            positive_seq="0: a red circle\n6: a green triangle",
            name="branch after loop 3: 6: a green triangle",
        ),
    ]
    rows = {b.name: [session.image(b, i) for i in b.indices] for b in tree}
    captions = {
        b.name: [f"loop {i}" + (" shared" if i < b.fork else "") for i in b.indices] for b in tree
    }
    save(plots.plot_timelines(rows, captions), "branches", palette=True)


FIGURES = {
    "sigma_slices": sigma_slices,
    "schedulers": schedulers,
    "seed_sequence": seed_sequence,
    "keyframe_weights": keyframe_weights,
    "interpolation_norms": interpolation_norms,
    "keyframe_runs": keyframe_runs,
    "branches": branches,
}
COMMANDS = FIGURES


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    OUT.mkdir(parents=True, exist_ok=True)
    unknown = [name for name in names if name not in COMMANDS]
    if unknown:
        raise SystemExit(f"unknown figure(s) {unknown}; known: {', '.join(COMMANDS)}")
    for name in names or FIGURES:
        COMMANDS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
