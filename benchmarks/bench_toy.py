"""One 20-step 64x64 image with CFG from the shipped toy model, on 2 CPU threads.

    python benchmarks/bench_toy.py [--threads 2] [--repeats 5] [--json results/toy.json]

Prints the median wall time of ``repeats`` runs after one warm-up (target: < 0.5 s), for the
pipeline's own scheduler (PNDM, SD 1.5's) and for Euler, and writes them with the machine to
``--json``: the README's toy-model figure is read from that file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import machine, write_result
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
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    result = {
        "benchmark": "toy",
        **machine(pipe),
        "load_average_before": list(os.getloadavg()),
        "image": "64x64, 20 steps, CFG 7.5",
        "repeats": args.repeats,
        "median_s": {},
    }
    for name in ("shipped", "euler"):
        if name == "euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        times = bench(pipe, args.repeats)
        result["median_s"][name] = statistics.median(times)
        print(
            f"toy model, 1 image 64x64, 20 steps, CFG 7.5, {args.threads} threads, "
            f"{type(pipe.scheduler).__name__}: median {statistics.median(times):.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f})"
        )
    result["load_average_after"] = list(os.getloadavg())
    write_result(args.json, result)


if __name__ == "__main__":
    main()
