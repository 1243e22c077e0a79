"""How live drafts answer a settings change: the first draft frame's latency, the work a burst costs.

The studio (threaded, as in Jupyter) runs the toy model at few steps, selects loop 1 of a run and
turns live on; then:

* latency: ~20 single changes of denoise_seq (each waits for its draft to end), from the change
  to the draft's first frame drawn on the timeline (its loop computed, decoded and drawn), as
  the median and p95, against one loop's engine time (the same loop through a bare
  `Session.run`, median); then the same with `Studio.draft_steps` (``--draft-steps``, fewer
  model steps than the branch's: Keep renders the branch at its full steps);
* bursts of 20 changes, given at once and 50 ms apart (a slider dragged at 20 Hz): drafts
  started and finished, and the model calls spent, against one draft's.

Target: the first frame within 2x one loop's engine time. Run (one thread, as on a laptop):

    python benchmarks/bench_live.py --json benchmarks/results/live.json \
        --figure docs/images/live_drafts.png

``--figure`` also draws the drafts of a dragged denoise_seq side by side (notebook 05's figure).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch
from common import machine, write_result

import seqwidgets as sw
from seqwidgets.families import detect_family


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Counter:
    """Counts the denoiser network's forward calls."""

    def __init__(self, module):
        self.calls = 0
        module.register_forward_pre_hook(self._count)

    def _count(self, *_args) -> None:
        self.calls += 1


def drafts_figure(pipe, path: Path) -> Path:
    """Drafts from loop 3 of a run while denoise_seq is dragged, one row each (as notebook 05)."""
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from seqwidgets import plots

    params = sw.SequenceParams(
        seed=2, positive_seq="0: a red circle\n5: a blue square", sequence_loop_count=9, steps=4
    )
    params = params.replace(cfg=2.0, denoise_seq=0.5)
    studio = sw.Studio(pipe, params=params, threaded=True)
    run = studio.run(wait=True)
    studio.select(run, 3)
    studio.live = True
    rows = {f"{run.name} (denoise 0.5)": [studio.session.image(run, i) for i in run.indices]}
    for denoise in (0.25, 0.75, 1.0):
        studio.panel.set_values(denoise_seq=denoise)
        studio.wait_draft()
        draft = studio.draft
        rows[f"draft: denoise {denoise}"] = [studio.session.image(draft, i) for i in draft.indices]
    studio.close()
    captions = {  # a draft's loops up to 3 are the run's own frames
        name: ["shared" if j > 0 and i <= 3 else f"loop {i}" for i in range(9)]
        for j, name in enumerate(rows)
    }
    figure = plots.plot_timelines(
        rows, captions, title="Live drafts from loop 3 while denoise_seq is dragged (toy model)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    with Image.open(path) as image:  # pictures: 256 colours are a third of the size
        quantized = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    quantized.save(path, optimize=True)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the shipped toy model")
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--draft-steps", type=int, default=2, help="the draft steps measured")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="a PNG of drafts side by side")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    pipe = sw.load_pipeline(args.model)
    if args.figure is not None:
        drafts_figure(pipe, args.figure)
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n4: a blue square",
        sequence_loop_count=args.loops,
        steps=args.steps,
        cfg=args.cfg,
        denoise_seq=0.6,
    )
    counter = Counter(detect_family(pipe).denoiser_network(pipe))

    # One loop's engine time: the loops of a bare session run, timed frame to frame.
    session = sw.Session(pipe)
    session.run(params)  # warm-up
    stamps = []
    session.run(params, on_frame=lambda _b, _f: stamps.append(time.perf_counter()))
    loop_s = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))

    studio = sw.Studio(pipe, params=params, threaded=True)
    run = studio.run(wait=True)
    studio.select(run, 1)
    studio.live = True

    first_frame: list[float] = []  # when the current draft's frames were drawn
    drawn = studio.timeline.add_frame

    def add_frame(branch, index, image):
        drawn(branch, index, image)
        if branch is studio.draft:
            first_frame.append(time.perf_counter())

    studio.timeline.add_frame = add_frame

    def change(value: float) -> float:
        first_frame.clear()  # each latency is measured after the previous draft has ended
        start = time.perf_counter()
        studio.panel.set_values(denoise_seq=value)
        return start

    values = [round(0.30 + 0.01 * i, 2) for i in range(args.changes + 1)]
    change(values[-1])  # warm-up draft
    studio.wait_draft()
    calls_before = counter.calls
    change(0.95)
    studio.wait_draft()
    one_draft_calls = counter.calls - calls_before

    # Each change at the branch's steps, then the same change at draft steps, in turn: the load
    # of a shared machine comes and goes, and alternating exposes both to it alike.
    latencies, fewer_steps = [], []
    for value in values[: args.changes]:
        for steps, times in ((None, latencies), (args.draft_steps, fewer_steps)):
            studio.draft_steps = steps  # drafts the current settings again: let that end first
            studio.wait_draft()
            start = change(value)
            studio.wait_draft()
            times.append(first_frame[0] - start)
            change(values[-1])  # back, so that the next change is a change at either steps
            studio.wait_draft()
    studio.draft_steps = None  # the bursts draft at the branch's steps
    studio.wait_draft()

    bursts = {}
    for name, gap in (("at once", 0.0), ("50 ms apart", 0.05)):
        change(0.99)
        studio.wait_draft()
        started, finished, calls = (
            studio.drafts.started,
            studio.drafts.finished,
            counter.calls,
        )
        begin = time.perf_counter()
        for value in values[: args.changes]:
            change(value)
            if gap:
                threading.Event().wait(gap)
        studio.wait_draft()
        bursts[name] = {
            "changes": args.changes,
            "drafts_started": studio.drafts.started - started,
            "drafts_finished": studio.drafts.finished - finished,
            "model_calls": counter.calls - calls,
            "model_calls_of_one_draft": one_draft_calls,
            "last_draft_is_last_change": studio.draft.params.denoise_seq
            == values[args.changes - 1],
            "seconds_to_last_draft_done": round(time.perf_counter() - begin, 3),
        }
    studio.close()

    median = statistics.median(latencies)
    result = {
        "benchmark": "live drafts: change -> first draft frame, model calls per burst",
        "settings": {
            "model": args.model or "toy",
            "loops": args.loops,
            "steps": args.steps,
            "cfg": args.cfg,
            "draft_from_loop": 2,
            "draft_loops": args.loops - 2,
            "threads": torch.get_num_threads(),
        },
        "one_loop_engine_ms": round(1000 * loop_s, 1),
        "first_frame_ms": {
            "median": round(1000 * median, 1),
            "p95": round(1000 * percentile(latencies, 0.95), 1),
            "changes": len(latencies),
        },
        "first_frame_over_one_loop": {
            "median": round(median / loop_s, 2),
            "p95": round(percentile(latencies, 0.95) / loop_s, 2),
            "target": 2.0,
        },
        "first_frame_ms_at_draft_steps": {
            "draft_steps": args.draft_steps,
            "median": round(1000 * statistics.median(fewer_steps), 1),
            "p95": round(1000 * percentile(fewer_steps, 0.95), 1),
            "over_one_loop_median": round(statistics.median(fewer_steps) / loop_s, 2),
            "changes": len(fewer_steps),
        },
        "bursts": bursts,
        "machine": machine(pipe),
    }
    return write_result(args.json, result)


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
