"""Batched branches: N variations from one frame as one UNet batch vs N branches in a row.

Both paths compute the same frames (checked: relative L2 between them is printed). On a GPU
the batch fills the device and should give several times the throughput; on a CPU the gain is
small, since one image already keeps the cores busy. Run:

    python benchmarks/bench_branches.py --model tiny-random --branches 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import machine, median_seconds, write_result

import seqwidgets as sw


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the shipped toy model")
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--loops", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = sw.load_pipeline(args.model)
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n3: a blue square",
        sequence_loop_count=args.loops,
        steps=args.steps,
        cfg=6.0,
        denoise_seq=0.5,
    )
    session = sw.Session(pipe)
    root = session.run(params)
    changes = [{"seed": 1000 + i} for i in range(args.branches)]

    def sequential():
        return [session.branch((root, 0), **c) for c in changes]

    def batched():
        return session.branch_many((root, 0), changes)

    one_by_one, together = sequential(), batched()
    error = max(
        float((b.frames[i].latent.float() - a.frames[i].latent.float()).norm())
        / float(a.frames[i].latent.float().norm())
        for a, b in zip(one_by_one, together, strict=True)
        for i in a.own_indices
    )
    seconds = {
        "sequential": median_seconds(sequential, args.repeats),
        "batched": median_seconds(batched, args.repeats),
    }
    for branch in list(session.branches)[1:]:
        session.delete(branch)
    frames = args.branches * (args.loops - 1)
    speedup = seconds["sequential"] / seconds["batched"]
    print(
        f"{args.branches} branches x {args.loops - 1} loops x {args.steps} steps, model "
        f"{args.model or 'toy'}, device {pipe.device}, median of {args.repeats}"
    )
    for name, value in seconds.items():
        print(f"{name:12}{value:9.3f} s{frames / value:9.1f} loops/s")
    print(f"batch speed-up {speedup:.2f}x; max relative L2 batched vs sequential {error:.1e}")
    result = {
        "benchmark": "batched_branches",
        **machine(pipe),
        "model": args.model or "toy",
        "branches": args.branches,
        "loops": args.loops,
        "steps": args.steps,
        "seconds": seconds,
        "loops_per_second": {k: frames / v for k, v in seconds.items()},
        "speedup": speedup,
        "max_rel_l2": error,
    }
    return write_result(args.json, result)


if __name__ == "__main__":
    main()
