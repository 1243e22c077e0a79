"""Colour coherence: histogram and latent matching, the settings, the plan, the engine hook."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import seqwidgets as sw
from seqwidgets import cli, coherence, engine
from seqwidgets.coherence import match_channel, match_histograms, match_latent
from seqwidgets.errors import ParamWarning
from seqwidgets.metrics import color_stats, hist_distance, lab_distance
from seqwidgets.plan import plan_sequence


def params(**kwargs):
    kwargs.setdefault("steps", 2)
    kwargs.setdefault("positive_seq", "0: a red circle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**kwargs)


# -- pure functions ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40, unique=True), st.randoms())
def test_match_channel_takes_the_reference_histogram_and_keeps_the_order(values, rnd):
    source = np.array(values)
    # Distinct values, as in a real image's float channels: then the match is exact.
    reference = np.array(rnd.sample(range(-(10**6), 10**6), len(values))) / 1000
    matched = match_channel(source, reference)
    np.testing.assert_allclose(np.sort(matched), np.sort(reference))
    # Each value keeps its rank: the brightest pixel stays the brightest.
    assert (np.diff(matched[np.argsort(source)]) >= 0).all()


@pytest.mark.parametrize("space", ["lab", "hsv", "rgb"])
def test_match_histograms_maps_an_images_histogram_onto_the_reference(space):
    rng = np.random.default_rng(0)
    reference = rng.random((24, 24, 3)) * [0.4, 0.3, 0.9] + [0.5, 0.1, 0.0]  # a violet cast
    image = rng.random((16, 16, 3)) * 0.6  # darker, more neutral, another size
    before = hist_distance(color_stats(image), color_stats(reference))
    matched = match_histograms(image, reference, space)
    assert matched.shape == image.shape and matched.min() >= 0 and matched.max() <= 1
    after = hist_distance(color_stats(matched), color_stats(reference))
    assert after < 0.3 * before
    assert lab_distance(color_stats(matched), color_stats(reference)) < 2.5  # reference: ~40
    if space == "rgb":  # exact per channel: each channel now has the reference's values
        for c in range(3):
            q = np.linspace(0, 1, 11)
            np.testing.assert_allclose(
                np.quantile(matched[..., c], q), np.quantile(reference[..., c], q), atol=0.05
            )


def test_match_histograms_rejects_an_unknown_space():
    with pytest.raises(ValueError, match="space: 'xyz' is unknown; allowed: lab, hsv, rgb"):
        match_histograms(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), "xyz")


def test_match_latent_sets_each_channels_mean_and_std():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 8, generator=gen) * 3 + 1
    ref = torch.randn(4, 8, 8, generator=gen) * torch.tensor([0.5, 1, 2, 4])[:, None, None]
    out = match_latent(x, ref)
    torch.testing.assert_close(out.mean(dim=(1, 2)), ref.mean(dim=(1, 2)))
    torch.testing.assert_close(out.std(dim=(1, 2)), ref.std(dim=(1, 2)))
    flat = torch.ones(4, 8, 8)  # no spread: only shifted, no division by zero
    assert torch.isfinite(match_latent(flat, ref)).all()


# -- settings and plan ---------------------------------------------------------------------------


def test_settings_default_off_and_name_the_field_when_wrong():
    p = sw.SequenceParams()
    assert (p.color_coherence, p.color_reference) == ("none", "loop0")
    with pytest.raises(ValueError, match="color_coherence: 'magenta' is unknown choice"):
        params(color_coherence="magenta")
    with pytest.raises(ValueError, match=r"color_reference: 'first' .*or a path to a \.png"):
        params(color_reference="first")
    assert params(color_reference="refs/Sunset.JPG").color_reference == "refs/Sunset.JPG"


def test_plan_says_what_each_loop_input_is_matched_to():
    def matches(**kwargs):
        return [plan.color_match for plan in plan_sequence(params(sequence_loop_count=7, **kwargs))]

    assert matches() == [None] * 7
    # Loop 1's input is loop 0's result itself: nothing to match.
    assert matches(color_coherence="lab") == [None, None, 0, 0, 0, 0, 0]
    keyed = matches(color_coherence="latent", color_reference="keyframe", positive_seq="0: a\n3: b")
    assert keyed == [None, None, 0, 0, None, 3, 3]
    assert matches(color_coherence="rgb", color_reference="ref.png") == [None] + ["image"] * 6


def test_cli_and_sessions_carry_the_settings(tiny_pipe, tmp_path):
    args = cli.build_parser().parse_args(
        ["render", "--color-coherence", "hsv", "--color-reference", "keyframe"]
    )
    p = cli.params_from_args(args)
    assert (p.color_coherence, p.color_reference) == ("hsv", "keyframe")
    render_help = cli.build_parser()._subparsers._group_actions[0].choices["render"].format_help()
    assert "--color-coherence" in render_help and "--color-reference" in render_help
    session = sw.Session(tiny_pipe)
    session.run(params(sequence_loop_count=2, color_coherence="latent"))
    session.save(tmp_path / "s.safetensors")
    loaded = sw.Session.load(tmp_path / "s.safetensors", tiny_pipe)
    assert loaded.branches[0].params.color_coherence == "latent"


def test_to_comfy_drops_coherence_with_a_warning():
    plain = params(sequence_loop_count=3)
    ours = plain.replace(color_coherence="lab")
    for fmt in ("widgets", "api", "workflow"):
        with pytest.warns(ParamWarning, match="color_coherence='lab' is a seqwidgets addition"):
            assert ours.to_comfy(fmt) == plain.to_comfy(fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain.to_comfy("api")  # no warning when it is off


# -- the engine ------------------------------------------------------------------------------------


def test_coherence_off_leaves_the_latents_bitwise_identical(tiny_pipe, monkeypatch):
    p = params(sequence_loop_count=4)
    sampler = sw.SequenceSampler(tiny_pipe)
    with_hook = sampler.sample(p)

    class NoHook:  # the engine as it was before colour coherence existed
        def __init__(self, *args):
            pass

        def before_loop(self, plans, x):
            return x

        def after_loop(self, frames):
            pass

    monkeypatch.setattr(engine, "ColorCoherence", NoHook)
    without_hook = sampler.sample(p)
    assert torch.equal(with_hook, without_hook)
    # Off, the hook hands back the very tensor it was given.
    hook = coherence.ColorCoherence(tiny_pipe, [p], [plan_sequence(p)], (64, 64), 0, None)
    x = torch.randn(1, 4, 8, 8)
    assert hook.before_loop(plan_sequence(p)[2:3], x) is x


@pytest.mark.parametrize("mode", ["lab", "latent"])
def test_coherence_changes_the_run_and_branches_reproduce_it(tiny_pipe, mode):
    session = sw.Session(tiny_pipe)
    off = session.run(params(sequence_loop_count=5))
    on = session.run(params(sequence_loop_count=5, color_coherence=mode))
    assert torch.equal(on.frames[1].latent, off.frames[1].latent)  # loop 1: nothing to match yet
    assert not torch.equal(on.frames[2].latent, off.frames[2].latent)
    assert on.frames[2].timings["coherence"] > 0
    # A branch with no changes from loop 2 reads loop 0 (its reference) from the shared prefix
    # and computes bit for bit what the run computed.
    again = session.branch((on, 2))
    for i in (3, 4):
        assert torch.equal(again.frames[i].latent, on.frames[i].latent)


def test_resuming_without_the_reference_says_so(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    p = params(sequence_loop_count=4, color_coherence="latent")
    latents = sampler.sample(p)
    with pytest.raises(ValueError, match="loop 0 is the colour reference"):
        list(sampler.frames(p, start=3, previous=latents[2]))
    resumed = list(sampler.frames(p, start=3, previous=latents[2], earlier=lambda i: latents[i]))
    assert torch.equal(resumed[0].latent, latents[3])


@pytest.mark.parametrize("mode", ["rgb", "latent"])
def test_an_image_reference_pulls_colours_towards_it(tiny_pipe, tmp_path, mode):
    path = tmp_path / "violet.png"
    Image.new("RGB", (20, 20), (150, 40, 200)).save(path)
    sampler = sw.SequenceSampler(tiny_pipe)
    run = sampler.sample(
        params(sequence_loop_count=3, color_coherence=mode, color_reference=str(path))
    )
    assert run.shape == (3, 4, 8, 8) and torch.isfinite(run).all()
    with pytest.raises(ValueError, match="color_reference: '.*missing.png' is not an image file"):
        sampler.sample(
            params(sequence_loop_count=2, color_coherence=mode, color_reference="missing.png")
        )


@pytest.mark.slow
def test_lab_coherence_holds_the_toy_models_colours_over_30_loops():
    """The README's measured claim, shortened: 30 loops at denoise 0.5 with a fixed prompt."""
    pipe = sw.load_pipeline()
    session = sw.Session(pipe)
    drift = {}
    for mode in ("none", "lab"):
        p = params(steps=10, sequence_loop_count=30, denoise_seq=0.5, color_coherence=mode)
        table = session.metrics(session.run(p))
        drift[mode] = np.mean(table.column("drift_lab")[-5:])
    # Measured: about 9.8 without, 1.8 with (ratio 0.19).
    assert drift["lab"] < 0.4 * drift["none"]


def test_drift_benchmark_runs_and_reports_every_mode(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import bench_drift

    out = tmp_path / "drift.json"
    result = bench_drift.main(
        ["--model", "tiny-random", "--loops", "3", "--steps", "1", "--modes", "none", "latent"]
        + ["--json", str(out), "--figure", str(tmp_path / "drift.png")]
    )
    assert set(result["drift_lab_last"]) == {"none", "latent"}
    assert [len(v) for v in result["drift_lab"].values()] == [3, 3]
    assert result["drift_lab"]["none"][0] == 0.0
    assert out.exists() and (tmp_path / "drift.png").stat().st_size > 1000


def test_a_colour_reference_over_pillows_limit_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    from seqwidgets._io import read_image

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4,096 pixels: over twice the limit
    with pytest.raises(ValueError, match="color_reference .*larger than Pillow's limit"):
        read_image(path, "color_reference")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # over the limit: Pillow only warns
    with pytest.raises(ValueError, match="larger than Pillow's limit"):
        read_image(path, "color_reference")
