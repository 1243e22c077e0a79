"""One 20-step 64x64 image with CFG from the shipped toy model, on 2 CPU threads.

    python benchmarks/bench_toy.py [--threads 2] [--repeats 5]

Prints the median wall time of ``repeats`` runs after one warm-up (target: < 0.5 s), for the
pipeline's own scheduler (PNDM, SD 1.5's) and for Euler.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import EulerDiscreteScheduler

from seqwidgets.models.toy import load_toy_pipeline


def bench(pipe, repeats: int) -> list[float]:
    def once():
        pipe(
            "a red circle",
            negative_prompt="",
            height=64,
            width=64,
            num_inference_steps=20,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(0),
        )

    once()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    for name in (f"{type(pipe.scheduler).__name__} (shipped)", "Euler"):
        if name == "Euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        times = bench(pipe, args.repeats)
        print(
            f"toy model, 1 image 64x64, 20 steps, CFG 7.5, {args.threads} threads, {name}: "
            f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"
        )


if __name__ == "__main__":
    main()
