"""How instantly the studio answers: selecting a frame, redrawing a long timeline, previews.

Python side only, messages built and handed to the comm (in a plain process the comm drops
them; serialising them is the work measured):

* select: selecting a computed frame and drawing it (timeline highlight + preview);
* redraw: repainting a timeline that holds 1,000 frames (only the visible columns are drawn);
* preview cost: a studio run (live previews, decoding, thumbnails, the metrics strip's per-loop
  measures and drawing, canvas messages) against the same run through the bare engine, as a
  ratio; with the default live preview, then with a TAESD-sized decoder (diffusers'
  ``AutoencoderTiny`` with taesd's architecture, random weights: the cost, not the picture,
  is measured, and nothing is downloaded).

The studio prepares each new frame (its VAE decode, thumbnail and row of measures) on a thread
beside the sampling (`seqwidgets.widgets.display`) on an accelerator, and on a CPU where torch's
threads leave a core free (the default: half the cores); the sampling thread only draws. The
"inline" figures time the same studio preparing in the sampling thread, in the same rounds:
what a machine without a free core pays. "cpu" figures are the process's CPU time, every
thread: what the run costs on a single core. On a shared machine the load of other processes
moves these ratios by more than the studio's share, so the studio's own work is also measured
where it happens: CPU time of the sampling thread inside the studio's callbacks (and the
drawing left for the end of the run), against the engine's CPU time, and the VAE decodes' CPU
time wherever they ran.

Targets: select < 2 ms, redraw < 50 ms, previews, decoding and the strip <= 5% of the run's
time. Run:

    python benchmarks/bench_interaction.py --json benchmarks/results/interaction.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from common import add_run_options, machine, run_params, write_result
from PIL import Image

import seqwidgets as sw
from seqwidgets.testing import count_vae_decodes
from seqwidgets.widgets.timeline import CanvasTimeline, Row


def per_call_ms(call, count: int) -> float:
    times = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def paired_seconds(runs: dict, repeats: int) -> dict:
    """Each of ``runs`` (name -> function; ``"engine"`` first) run in turn, ``repeats`` rounds,
    after a warm-up of each: load from other processes on a shared machine comes and goes, and
    alternating exposes them all to it alike.

    Returns, for each studio run: its median seconds, the median of its per-round ratios to the
    engine, and the ratio of the fastest runs (noise only ever adds time, so the minimums are
    the least disturbed figures); and the engine's median seconds.
    """
    for run in runs.values():  # warm-up: allocator, kernels, caches
        run()
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}  # the process's CPU time, every thread: the work done
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    engine, engine_cpu = times.pop("engine"), cpu.pop("engine")
    result = {
        "engine_run_s": statistics.median(engine),
        "engine_cpu_s": statistics.median(engine_cpu),
    }
    for name, studio in times.items():
        result[f"{name}_run_s"] = statistics.median(studio)
        result[f"{name}_over_engine"] = statistics.median(
            s / e for e, s in zip(engine, studio, strict=True)
        )
        result[f"{name}_over_engine_fastest"] = min(studio) / min(engine)
        # On one core (Binder) every thread's work adds up: this is that run's cost there.
        result[f"{name}_cpu_over_engine"] = statistics.median(
            s / e for e, s in zip(engine_cpu, cpu[name], strict=True)
        )
    return result


class ThreadCPU:
    """Adds up the CPU time of the calling thread spent inside the functions it wraps: the work
    a studio adds to the sampling thread, which the load of other processes does not inflate
    the way it inflates wall time."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start

        return timed


def taesd_runs(pipe, params, repeats: int) -> dict:
    """The studio's overhead with a TAESD previewer (taesd's architecture, random weights)."""
    from diffusers import AutoencoderTiny

    from seqwidgets.decode import TAESDPreviewer
    from seqwidgets.families import detect_family

    family = detect_family(pipe)
    network = family.denoiser_network(pipe)  # the decoder runs where the model does
    decoder = AutoencoderTiny(latent_channels=family.latent_channels(pipe))
    previewer = TAESDPreviewer(decoder.to(device=network.device, dtype=network.dtype))
    studio = sw.Studio(pipe, params=params, threaded=True)
    studio.view.live.previewer, studio.view.live.note = previewer, "TAESD preview"
    engine = sw.SequenceSampler(pipe)
    runs = paired_seconds(
        {"engine": lambda: engine.sample(params), "studio": lambda: studio.run(wait=True)},
        repeats,
    )
    return {
        "taesd_studio_over_engine": runs["studio_over_engine"],
        "taesd_studio_over_engine_fastest": runs["studio_over_engine_fastest"],
        "taesd_decodes_per_run": previewer.decodes / (repeats + 1),
        "taesd_decode_s": previewer.seconds / max(previewer.decodes, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser)
    parser.add_argument("--taesd-repeats", type=int, default=3, help="0: skip the TAESD run")
    args = parser.parse_args(argv)

    pipe = sw.load_pipeline(args.model)
    params = run_params(args)

    # 1. Preview cost: studio runs against the engine's (one sampler, so the prompts are
    #    encoded once, as in the studio's session), same settings, in the same rounds:
    #    "studio": the default; "inline": each frame prepared in the sampling thread.
    studio = sw.Studio(pipe, params=params, threaded=True)  # the metrics strip is on
    inline = sw.Studio(pipe, params=params, threaded=True)
    inline.display.threaded = False  # as on a machine whose cores torch's threads all hold
    strip_s = []  # the strip's own share: its measures and drawing, per new frame
    refresh = studio.strip.refresh

    def timed_refresh(branch=None):
        start = time.perf_counter()
        refresh(branch)
        strip_s.append(time.perf_counter() - start)

    studio.strip.refresh = timed_refresh
    # The studio's own work on its job thread (callbacks, and the drawing left at the end) and,
    # inside it, the VAE decodes: CPU seconds, summed over the studio's runs.
    work, decoding = ThreadCPU(), ThreadCPU()
    studio._on_step, studio._on_frame = work.wrap(studio._on_step), work.wrap(studio._on_frame)
    studio.display.drain = work.wrap(studio.display.drain)
    engine = sw.SequenceSampler(pipe)
    studio.run(wait=True)  # long enough to start the helper that decodes beside a CPU sampler
    helper = studio.decode_process
    if helper is not None:
        helper.wait_ready(120)  # timed once it decodes (it takes seconds to start)
    decodes = count_vae_decodes(pipe)
    pipe.vae.decode = decoding.wrap(pipe.vae.decode)
    runs = paired_seconds(
        {
            "engine": lambda: engine.sample(params),
            "inline": lambda: inline.run(wait=True),
            "studio": lambda: studio.run(wait=True),
        },
        args.repeats,
    )
    rounds = args.repeats + 1
    # Two studios' runs (the engine decodes none); the helper's decodes are counted by it.
    there = helper.decoded_there if helper is not None else 0
    decodes_per_run = (sum(decodes) + there) / (2 * rounds)
    ratio, strip_share = runs["studio_over_engine"], sum(strip_s) / rounds
    # Per run of the default studio, against the engine's CPU time; the decodes' CPU time as a
    # studio pays it in this process (the inline one: the default's are the helper's).
    engine_cpu = runs["engine_cpu_s"]
    work_share = work.seconds / rounds / engine_cpu
    per_decode = decoding.seconds / max(sum(decodes), 1)
    decode_share = per_decode * decodes_per_run / engine_cpu
    taesd = taesd_runs(pipe, params, args.taesd_repeats) if args.taesd_repeats else {}

    # 2. Selecting a computed frame: highlight on the timeline and the large preview.
    branch = studio.session.branches[-1]
    rng = random.Random(0)
    picks = [rng.randrange(args.loops) for _ in range(200)]
    select_ms = per_call_ms(lambda i: studio.select(branch, picks[i]), len(picks))

    # 3. A timeline holding 1,000 frames: one row of 1,000 thumbnails, then full redraws.
    timeline = CanvasTimeline()
    timeline.add_row(Row(key=1, name="run 1", fork=0, length=1000, keyframes=(0, 500)))
    thumb = Image.new("RGB", (56, 56), (200, 40, 40))
    for index in range(1000):
        timeline.add_thumbnail(1, index, thumb)
    timeline.select(1, 999)
    redraw_ms = per_call_ms(lambda i: timeline.redraw(), 50)
    scrub_ms = per_call_ms(lambda i: timeline.select(1, (i * 37) % 1000), 200)

    result = {
        "benchmark": "interaction",
        **machine(pipe),
        "model": args.model or "toy",
        "loops": args.loops,
        "steps": args.steps,
        "select_frame_ms": select_ms,
        "timeline_1000_redraw_ms": redraw_ms,
        "timeline_1000_select_ms": scrub_ms,
        **runs,
        "vae_decodes_per_run": decodes_per_run,
        "studio_prepares_beside": bool(studio.display.threaded),
        "studio_decodes_in": "a helper process"
        if helper is not None and helper.decoded_there
        else ("a thread beside the sampling" if studio.display.threaded else "the sampling thread"),
        "helper_decodes_per_run": helper.decoded_there / rounds if helper is not None else 0.0,
        "studio_work_cpu_over_engine": 1 + work_share,
        "vae_decode_cpu_over_engine": 1 + decode_share,
        "live_previews_dropped_per_run": studio.display.dropped / rounds,
        "metrics_strip_s_per_run": strip_share,
        "metrics_strip_points": sum(len(p) for p in studio.strip.series().values()),
        "live_preview": studio.view.live.note,
        **taesd,
    }
    print(f"studio, {args.loops} loops x {args.steps} steps on {result['device']}:")
    print(f"  select a computed frame          {select_ms:8.2f} ms   (target < 2 ms)")
    print(f"  redraw a 1,000-frame timeline    {redraw_ms:8.2f} ms   (target < 50 ms)")
    print(f"  select on that timeline          {scrub_ms:8.2f} ms")
    engine_s, studio_s = runs["engine_run_s"], runs["studio_run_s"]
    print(
        f"  run: engine {engine_s:.2f} s, studio {studio_s:.2f} s -> previews, decoding and "
        f"drawing (metrics strip on) add {100 * (ratio - 1):.1f}% (target <= 5%; frames "
        f"decoded in {result['studio_decodes_in']}); fastest "
        f"runs: {100 * (runs['studio_over_engine_fastest'] - 1):.1f}%; prepared inline: "
        f"{100 * (runs['inline_over_engine'] - 1):.1f}% "
        f"(fastest {100 * (runs['inline_over_engine_fastest'] - 1):.1f}%); "
        f"CPU time, all threads: +{100 * (runs['studio_cpu_over_engine'] - 1):.1f}% (inline "
        f"+{100 * (runs['inline_cpu_over_engine'] - 1):.1f}%); "
        f"{decodes_per_run:.0f} VAE decodes a run of {args.loops} loops; the strip's measures "
        f"and drawing: {strip_share:.3f} s a run ({100 * strip_share / studio_s:.1f}%)"
    )
    print(
        f"  the studio's own work on the sampling thread (CPU time, not inflated by other "
        f"processes): +{100 * work_share:.1f}% of the engine's; the VAE decodes (CPU time in "
        f"the sampling thread when inline): +{100 * decode_share:.1f}%"
    )
    if taesd:
        print(
            f"  with a TAESD-sized previewer: +{100 * (taesd['taesd_studio_over_engine'] - 1):.1f}% "
            f"({taesd['taesd_decodes_per_run']:.0f} decodes a run, "
            f"{1000 * taesd['taesd_decode_s']:.1f} ms each)"
        )
    return write_result(args.json, result)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    main()
