"""What every benchmark shares: medians after a warm-up, and results with their machine."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import seqwidgets as sw


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` runs, after one warm-up run."""
    run()  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        run()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine(pipe=None) -> dict:
    """Where the figures come from: platform, versions, device and threads."""
    info = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    if pipe is not None:
        from seqwidgets.families import detect_family

        network = detect_family(pipe).denoiser_network(pipe)  # UNet or transformer
        info.update(device=str(pipe.device), dtype=str(network.dtype))
    return info


def write_result(path: Path | None, result: dict) -> dict:
    """Write ``result`` as JSON to ``path`` (when given) and return it."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def add_run_options(
    parser: argparse.ArgumentParser, repeats: int = 5, loops: int = 12, steps: int = 20
) -> None:
    """The options of a benchmark that times runs of `run_params`: model, loops, steps, repeats,
    and the JSON file to write."""
    parser.add_argument("--model", default=None, help="default: the shipped toy model")
    parser.add_argument("--loops", type=int, default=loops)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")


def run_params(args: argparse.Namespace) -> sw.SequenceParams:
    """The sequence the studio benchmarks time: a keyframe change half way, img2img loops."""
    return sw.SequenceParams(
        positive_seq="0: a red circle\n6: a blue square",
        sequence_loop_count=args.loops,
        steps=args.steps,
        cfg=7.5,
        denoise_seq=0.6,
    )
