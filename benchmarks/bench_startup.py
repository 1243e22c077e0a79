"""How long the command line and the package take to start, as a ratio to a bare interpreter.

    python benchmarks/bench_startup.py [--repeats 7] [--json results/startup.json]

Each command runs in a fresh process, ``--repeats`` times after one warm-up run (which fills the
file cache); the figure is the median wall time and its ratio to ``python -c pass`` measured in
the same run. ``import torch`` is measured too, as the cost the command line avoids.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]

# name -> the interpreter's arguments. `python -m seqwidgets.cli` is what the `seqwidgets`
# console script runs (`from seqwidgets.cli import main`), from this checkout.
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "seqwidgets --help": ["-m", "seqwidgets.cli", "--help"],
    "seqwidgets render --help": ["-m", "seqwidgets.cli", "render", "--help"],
    "seqwidgets --version": ["-m", "seqwidgets.cli", "--version"],
    "import seqwidgets": ["-c", "import seqwidgets"],
    "import torch (for scale)": ["-c", "import torch"],
}


def median_wall_s(arguments: list[str], repeats: int) -> float:
    """Median wall time of ``python <arguments>`` over ``repeats`` runs after a warm-up."""
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, *arguments], cwd=ROOT, check=True, capture_output=True, timeout=300
        )
        if run:  # the first run warms the file cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    result = {
        "benchmark": "startup",
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "repeats": args.repeats,
        "median_s": {},
        "ratio_to_python": {},
    }
    for name, arguments in COMMANDS.items():
        result["median_s"][name] = median_wall_s(arguments, args.repeats)
    base = result["median_s"]["python -c pass"]
    for name, seconds in result["median_s"].items():
        result["ratio_to_python"][name] = seconds / base
        print(f"{name:28s} {seconds * 1000:8.0f} ms  {seconds / base:6.1f}x", flush=True)
    result["load_average_after"] = os.getloadavg()
    return write_result(args.json, result)


if __name__ == "__main__":
    main()
