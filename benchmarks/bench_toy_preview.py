"""What the toy model's live preview costs: tiny preview decoder against latent-to-RGB factors.

* decode cost of one preview: the tiny decoder, the full VAE, the latent-to-RGB factors;
* the studio's overhead over the bare engine on the same run (12 loops x 20 steps, "0: a red
  circle / 6: a blue square" at denoise 0.6, as ``bench_interaction.py``), once with the
  latent-to-RGB live preview the studio draws, once with the live preview drawn from
  ``seqwidgets.decode.make_previewer`` (the tiny decoder for the toy model), hooked into the
  studio's frame view by ``use_previewer`` below.

Budget: the studio at most 10% over the engine. Run:

    python benchmarks/bench_toy_preview.py [--json benchmarks/results/toy_preview.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import add_run_options, machine, run_params, write_result

import seqwidgets as sw
from seqwidgets.decode import make_previewer
from seqwidgets.models.toy.train_preview import cost_ms


class _Counting:
    """A previewer that counts the images it returns (``None`` is a skipped step)."""

    def __init__(self, previewer):
        self.previewer, self.images = previewer, 0

    def __call__(self, latent, **options):
        image = self.previewer(latent, **options)
        self.images += image is not None
        return image


def interleaved_seconds(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each of ``runs`` (name -> call), ``repeats`` rounds in which every run
    takes its turn, after one warm-up round."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser)
    args = parser.parse_args(argv)

    pipe = sw.load_pipeline(args.model)
    params = run_params(args)
    latent = sw.SequenceSampler(pipe).sample(params)[-1:].to(pipe.device)

    # 1. One preview: the decoder make_previewer picks, the full VAE, the factors.
    previewer, note = make_previewer(pipe)
    factors, _ = make_previewer(pipe, "latent_rgb")
    decoder = getattr(previewer, "decoder", None)
    scale = pipe.vae.config.scaling_factor
    costs = {
        "vae_decode_ms": cost_ms(lambda x: pipe.vae.decode(x / scale).sample, latent),
        "latent_rgb_ms": cost_ms(factors, latent),
    }
    if decoder is not None:
        costs["preview_decoder_ms"] = cost_ms(lambda x: decoder.decode(x).sample, latent)
        costs["preview_decoder_image_ms"] = cost_ms(lambda x: previewer(x, force=True), latent)

    # 2. The studio's run against the engine's: latent-to-RGB live previews, then the decoder's.
    # The three runs take turns in each round, so a machine shared with other jobs slows them
    # alike; each ratio is the median of its per-round ratios.
    plain = sw.Studio(pipe, params=params, threaded=False, preview="latent_rgb")
    decoded = sw.Studio(pipe, params=params, threaded=False)  # the default: the decoder
    live = decoded.view.live
    live.previewer = counting = _Counting(live.previewer)
    times = interleaved_seconds(
        {
            "engine": lambda: sw.SequenceSampler(pipe).sample(params),
            "latent_rgb": lambda: plain.run(wait=True),
            "decoder": lambda: decoded.run(wait=True),
        },
        args.repeats,
    )
    engine_s, plain_s, decoded_s = (
        statistics.median(times[k]) for k in ("engine", "latent_rgb", "decoder")
    )
    plain_ratio, decoded_ratio, swap_ratio = (
        statistics.median(a / b for a, b in zip(times[k], times[base], strict=True))
        for k, base in (("latent_rgb", "engine"), ("decoder", "engine"), ("decoder", "latent_rgb"))
    )
    previews_per_run = counting.images / (args.repeats + 1)

    result = {
        "benchmark": "toy_preview",
        **machine(pipe),
        "model": args.model or "toy",
        "loops": args.loops,
        "steps": args.steps,
        "preview": live.note,
        **{k: round(v, 3) for k, v in costs.items()},
        "engine_run_s": engine_s,
        "studio_latent_rgb_run_s": plain_s,
        "studio_decoder_run_s": decoded_s,
        "studio_latent_rgb_over_engine": plain_ratio,
        "studio_decoder_over_engine": decoded_ratio,
        "studio_decoder_over_studio_latent_rgb": swap_ratio,
        "run_seconds": times,
        "decoder_previews_per_run": previews_per_run,
    }
    print(f"toy preview, {args.loops} loops x {args.steps} steps on {result['device']} ({note}):")
    for name, ms in costs.items():
        print(f"  {name:28s} {ms:8.3f} ms")
    print(f"  engine run                   {engine_s:8.2f} s")
    for label, seconds, ratio in (
        ("latent-to-RGB", plain_s, plain_ratio),
        (live.note, decoded_s, decoded_ratio),
    ):
        print(
            f"  studio, {label:20s} {seconds:8.2f} s -> {100 * (ratio - 1):+.1f}% "
            "over the engine (budget <= 10%)"
        )
    print(f"  studio, decoder over latent-to-RGB   {100 * (swap_ratio - 1):+.1f}%")
    print(f"  decoder previews per run     {previews_per_run:8.1f}")
    return write_result(args.json, result)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
