"""Every sampler of the menu: model calls and time per loop, and the sampler's own arithmetic.

For each sampler the engine runs the same sequence (``--loops`` loops of ``--steps`` steps,
``denoise_seq`` 0.5, cfg 6) and the benchmark reports:

* ``model_calls_per_loop``: network calls (one batched CFG call each), counted by the engine;
  ``steps`` for most samplers, about twice or three times that for the two- and three-stage ones;
* ``seconds_per_loop``: the median wall time of a loop, network included;
* ``sampler_ms_per_step``: the sampler's own cost per step, measured on a stand-in denoiser that
  costs nothing, on a latent of the model's shape: the arithmetic, noise draws and coefficient
  work (DEIS, SA-Solver, ER-SDE integrals) that come on top of the network.

Run from the repository root:

    python benchmarks/bench_samplers.py                       # the shipped toy model
    python benchmarks/bench_samplers.py --model tiny-random --repeats 1 --steps 4
"""

from __future__ import annotations

import argparse

import torch
from common import add_run_options, machine, median_seconds, write_result

import seqwidgets as sw
from seqwidgets import samplers
from seqwidgets.choices import SAMPLERS
from seqwidgets.schedules import loop_sigmas


class FreeDenoiser:
    """A denoiser that costs nothing: the sampler's arithmetic is all that is timed."""

    def __init__(self, model_sampling):
        self.model_sampling = model_sampling

    def __call__(self, x, sigma):
        return x * 0.5

    def denoise_with_uncond(self, x, sigma):
        return x * 0.5, x * 0.25


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser, repeats=3, loops=3, steps=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--samplers", nargs="*", default=list(SAMPLERS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = sw.load_pipeline(args.model)
    engine = sw.SequenceSampler(pipe)
    model_sampling = engine.model_sampling
    free = FreeDenoiser(model_sampling)
    per_sampler = {}
    for name in args.samplers:
        params = sw.SequenceParams(
            positive_seq="0: a red circle",
            negative_seq="",
            sequence_loop_count=args.loops,
            steps=args.steps,
            cfg=6.0,
            denoise_seq=0.5,
            sampler_name=name,
        )
        before = engine.unet_calls
        first = engine.sample(params)
        calls = (engine.unet_calls - before) / args.loops
        seconds = median_seconds(lambda params=params: engine.sample(params), args.repeats)

        sigmas = loop_sigmas(model_sampling, "normal", name, args.steps, 1.0)
        x = torch.randn(1, *first.shape[1:], generator=torch.Generator().manual_seed(0))
        arithmetic = median_seconds(
            lambda name=name, sigmas=sigmas, x=x: samplers.sample(name, free, x, sigmas, seed=0),
            args.repeats,
        )
        per_sampler[name] = {
            "model_calls_per_loop": calls,
            "seconds_per_loop": seconds / args.loops,
            "sampler_ms_per_step": 1000 * arithmetic / args.steps,
        }
        print(
            f"{name:32s} {calls:5.1f} calls/loop  {seconds / args.loops:7.3f} s/loop  "
            f"{1000 * arithmetic / args.steps:7.3f} ms/step of sampler arithmetic"
        )
    result = {
        "benchmark": "samplers",
        "machine": machine(pipe),
        "settings": {"loops": args.loops, "steps": args.steps, "denoise_seq": 0.5, "cfg": 6.0},
        "samplers": per_sampler,
    }
    return write_result(args.json, result)


if __name__ == "__main__":
    main()
