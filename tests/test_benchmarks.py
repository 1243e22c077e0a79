"""The benchmarks keep running and keep comparing like with like (no timing is asserted)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def test_engine_benchmark_compares_identical_work():
    import bench_engine

    result = bench_engine.main(
        ["--model", "tiny-random", "--loops", "3", "--steps", "2", "--repeats", "1"]
    )
    # The hand-written loop and the engine compute the very same latents with the same calls.
    assert result["engine_vs_hand_rel_l2"] == 0.0
    assert result["unet_calls_per_loop"] == {"hand loop": 2, "engine": 2, "img2img loop": 2}
    assert result["text_encoder_calls_per_run"]["engine"] == 2  # one per distinct prompt
    assert result["text_encoder_calls_per_run"]["img2img loop"] == 6  # re-encoded every loop


@pytest.mark.slow
def test_batched_branches_benchmark_checks_its_results(tmp_path):
    import bench_branches

    result = bench_branches.main(
        [
            "--model",
            "tiny-random",
            "--loops",
            "3",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "b.json"),
        ]
    )
    assert result["max_rel_l2"] < 1e-4
    assert (tmp_path / "b.json").exists()
