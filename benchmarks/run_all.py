"""Run every benchmark, each in its own process, and print one summary table.

Each benchmark writes its JSON (machine, versions, device, medians, ratios) to
``benchmarks/results/``. Run from the repository root:

    python benchmarks/run_all.py                 # the shipped toy model
    python benchmarks/run_all.py --model tiny-random --quick
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def benchmarks(model: str | None, quick: bool) -> list[tuple[str, list[str]]]:
    """``(name, [script, arguments...])`` for each benchmark, in the order they run."""
    model_args = ["--model", model] if model else []
    repeats = ["--repeats", "3" if quick else "7"]
    return [
        (
            "engine overhead",
            [
                "bench_engine.py",
                *model_args,
                *repeats,
                "--loops",
                "8",
                "--steps",
                "10",
                "--json",
                str(RESULTS / "engine_overhead.json"),
            ],
        ),
        (
            "batched branches",
            [
                "bench_branches.py",
                *model_args,
                *repeats,
                "--branches",
                "4",
                "--json",
                str(RESULTS / "batched_branches.json"),
            ],
        ),
        (
            "session memory",
            [
                "bench_session_memory.py",
                "--frames",
                "200" if quick else "1000",
                "--out",
                str(RESULTS),
            ],
        ),
        (
            "every sampler",
            [
                "bench_samplers.py",
                *model_args,
                "--repeats",
                "1" if quick else "3",
                "--json",
                str(RESULTS / "samplers.json"),
            ],
        ),
        (
            "toy model speed",
            ["bench_toy.py", *repeats, "--json", str(RESULTS / "toy.json")],
        ),
        (
            "startup",
            ["bench_startup.py", *repeats, "--json", str(RESULTS / "startup.json")],
        ),
        (
            "CPU threads",
            [
                "bench_threads.py",
                "--repeats",
                "2" if quick else "3",
                "--json",
                str(RESULTS / "threads.json"),
            ],
        ),
        (
            "studio interaction",
            ["bench_interaction.py", *repeats, "--json", str(RESULTS / "interaction.json")],
        ),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the shipped toy model")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and frames")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    failures = 0
    for name, command in benchmarks(args.model, args.quick):
        script = HERE / command[0]
        if not script.exists():
            print(f"\n## {name}: {command[0]} is not there, skipped")
            continue
        print(f"\n## {name}\n$ python benchmarks/{' '.join(command)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(script), *command[1:]], check=False)
        print(f"({time.perf_counter() - started:.0f} s)")
        if done.returncode:
            print(f"!! {name} failed with exit code {done.returncode}")
            failures += 1
    print(
        "\nJSON results in benchmarks/results/:",
        ", ".join(sorted(p.name for p in RESULTS.glob("*.json"))),
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
