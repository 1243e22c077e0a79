"""CPU threads against loops per second, on an idle and on a loaded machine.

    python benchmarks/bench_threads.py [--threads 1 2 4] [--load 1] [--json results/threads.json]

For each thread count (counts above the machine's cores are skipped: they cannot be measured
there) a fresh process renders a short sequence on the shipped toy model with
``torch.set_num_threads(n)`` and reports loops per second (median of ``--repeats`` runs after a
warm-up). Then the same again while ``--load`` busy-loop processes spin, as on a laptop that
compiles, or a CI runner shared with other jobs. The figures behind ``seqwidgets.device``'s
default: OpenMP threads that wait for a core held by another process make every model call slow.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

HERE = Path(__file__).parent

# Run in a child process: the thread count must be set before torch runs anything.
CHILD = """
import json, statistics, sys, time
import torch
torch.set_num_threads({threads})
import seqwidgets as sw
pipe = sw.load_pipeline(device="cpu")
params = sw.SequenceParams(positive_seq="0: a red circle\\n2: a blue square",
    sequence_loop_count={loops}, steps={steps}, denoise_seq=0.6)
sampler = sw.SequenceSampler(pipe)
sampler.sample(params.replace(sequence_loop_count=1))  # warm-up
times = []
for _ in range({repeats}):
    start = time.perf_counter()
    sampler.sample(params)
    times.append(time.perf_counter() - start)
print(json.dumps({{"loops_per_s": {loops} / statistics.median(times), "times": times,
    "torch_threads": torch.get_num_threads()}}))
"""


def _spin(stop) -> None:
    # A busy loop: holds one core the way a compiler or another job does.
    while not stop.is_set():
        for _ in range(10_000):
            pass


def measure(threads: int, loops: int, steps: int, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), SEQWIDGETS_CPU_THREADS=str(threads))
    code = CHILD.format(threads=threads, loops=loops, steps=steps, repeats=repeats)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--load", type=int, default=1, help="busy-loop processes for 'loaded'")
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    counts = [n for n in args.threads if n <= cores]
    result = {
        "benchmark": "threads",
        "cores": cores,
        "load_average_before": os.getloadavg(),
        "loops": args.loops,
        "steps": args.steps,
        "busy_loop_processes_when_loaded": args.load,
        "not_measured": [n for n in args.threads if n > cores],
        "idle": {},
        "loaded": {},
    }
    for n in counts:
        result["idle"][n] = measure(n, args.loops, args.steps, args.repeats)
        print(f"idle   {n} threads: {result['idle'][n]['loops_per_s']:.2f} loops/s", flush=True)
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(args.load)]
    for spinner in spinners:
        spinner.start()
    time.sleep(0.5)
    try:
        for n in counts:
            result["loaded"][n] = measure(n, args.loops, args.steps, args.repeats)
            print(
                f"loaded {n} threads: {result['loaded'][n]['loops_per_s']:.2f} loops/s",
                flush=True,
            )
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()
    best_idle = max(result["idle"][n]["loops_per_s"] for n in counts)
    result["loaded_over_idle_best"] = {
        n: result["loaded"][n]["loops_per_s"] / best_idle for n in counts
    }
    result["spread_s"] = {
        kind: {n: statistics.pstdev(v["times"]) for n, v in result[kind].items()}
        for kind in ("idle", "loaded")
    }
    return write_result(args.json, result)


if __name__ == "__main__":
    main()
