"""The memory estimate (`seqwidgets.device.run_memory`) against measured peaks, on the CPU.

    python benchmarks/bench_memory.py [--model toy] [--sizes 512 1024 1536]

For each size, two fresh processes: one runs a one-step, one-loop sequence (the denoiser's
activations, with CFG), the other one VAE decode of a latent of that size. Each reports its
peak resident memory above what it held after loading the pipeline (``ru_maxrss``), beside the
estimate's ``denoiser`` and ``decode`` parts. The estimate is meant as an upper bound: the
ratio measured / estimate should stay below 1 at the sizes where a refusal matters.

Writes ``benchmarks/results/memory_estimate.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# Runs in a fresh process: load, note ru_maxrss, run one part, print the peak's growth.
_MEASURE = """
import json, resource, sys
import torch
torch.set_num_threads(1)
import seqwidgets as sw
from seqwidgets.decode import decode_latents
model, part, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
pipe = sw.load_pipeline(None if model == "toy" else model, device="cpu")
sampler = sw.SequenceSampler(pipe)
params = sw.SequenceParams(positive_seq="0: a red circle", steps=1, sequence_loop_count=1,
                           width=side, height=side)
latent = sampler.empty_latent(params)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    if part == "decode":
        decode_latents(pipe.vae, torch.randn_like(latent))
    else:
        sampler.sample(params)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps((after - before) * 1024))
"""


def measure(model: str, part: str, side: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, model, part, str(side)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1536])
    parser.add_argument("--json", type=Path, default=RESULTS / "memory_estimate.json")
    args = parser.parse_args(argv)

    from common import machine, write_result

    import seqwidgets as sw
    from seqwidgets.device import run_memory

    pipe = sw.load_pipeline(None if args.model == "toy" else args.model, device="cpu")
    rows = []
    print(f"{'size':>6} {'part':>9} {'measured MB':>12} {'estimate MB':>12} {'ratio':>6}")
    for side in args.sizes:
        estimate = run_memory(pipe, side, side)
        for part in ("denoiser", "decode"):
            measured = measure(args.model, part, side)
            ratio = measured / estimate[part]
            rows.append(
                {
                    "size": side,
                    "part": part,
                    "measured_bytes": measured,
                    "estimate_bytes": estimate[part],
                    "ratio": round(ratio, 3),
                }
            )
            print(
                f"{side:>6} {part:>9} {measured / 1e6:>12.0f} {estimate[part] / 1e6:>12.0f} {ratio:>6.2f}"
            )
    # The measuring processes run torch on one thread (as a shared machine would).
    return write_result(args.json, {**machine(pipe), "model": args.model, "rows": rows})


if __name__ == "__main__":
    main()
