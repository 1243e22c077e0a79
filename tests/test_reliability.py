"""Odd input, extreme values and faults: every one answered clearly, no finished frame lost."""

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets.params import PARAM_SPECS

FAST = dict(steps=2, sequence_loop_count=4, positive_seq="0: a red circle", cfg=4.0)

any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["euler", "karras", "Blend", "increment", "linear", "0: a cat"]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(PARAM_SPECS) + ["bogus"]), any_value, max_size=6))
def test_any_settings_validate_or_name_the_field(values):
    """Every dict of settings either builds or raises ValueError naming a field it holds."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sw.SequenceParams.from_dict(values)
    except ValueError as error:
        assert any(name in str(error) for name in values), str(error)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_keyframe_text_parses_or_names_the_line(text):
    try:
        keyframes = sw.parse_keyframes(text, field="positive_seq")
    except ValueError as error:
        assert "positive_seq" in str(error) and "line" in str(error), str(error)
    else:
        assert keyframes[0][0] == 0
        assert [i for i, _ in keyframes] == sorted({i for i, _ in keyframes})


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 2, 2**64 - 1])
@pytest.mark.parametrize("mode", ["increment", "decrement", "random", "fixed"])
@pytest.mark.parametrize("alternate", [True, False])
@pytest.mark.parametrize("loops", [1, 1024])
def test_extreme_seeds_and_loop_counts_stay_in_range(seed, mode, alternate, loops):
    params = sw.SequenceParams(
        seed=seed, seed_mode_seq=mode, alternate_values=alternate, sequence_loop_count=loops
    )
    seeds = sw.seed_sequence(params)
    assert len(seeds) == loops
    assert all(0 <= s < 2**64 for s in seeds)
    torch.Generator().manual_seed(seeds[-1])  # torch accepts every one of them


@pytest.mark.parametrize("denoise", [0.0, 0.01, 1.0])
@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_extreme_denoise_and_strengths_run_and_stay_finite(tiny_pipe, denoise, strength):
    params = sw.SequenceParams(
        **FAST,
        denoise_seq=denoise,
        use_latent_interpolation=True,
        latent_interpolation_mode="Slerp",
        latent_interp_strength=strength,
        use_conditioning_slerp=True,
        cond_slerp_strength=strength,
    )
    latents = sw.SequenceSampler(tiny_pipe).sample(params)
    assert latents.shape[0] == 4 and torch.isfinite(latents).all()
    if strength == 0.0:  # interpolation keeps the previous result entirely
        assert torch.equal(latents[3], latents[0])


def test_unicode_and_overlong_prompts(tiny_pipe):
    long_prompt = "a very red circle " * 30
    params = sw.SequenceParams(**{**FAST, "positive_seq": f"0: 🌹 rosé ½\n2: {long_prompt}"})
    with pytest.warns(UserWarning, match="tokens; the text encoder reads only the first 77"):
        latents = sw.SequenceSampler(tiny_pipe).sample(params)
    assert torch.isfinite(latents).all()


class FailAt:
    """A forward hook that breaks the UNet on its n-th call."""

    def __init__(self, unet, call, make_output=None, error=None):
        self.count, self.call, self.make_output, self.error = 0, call, make_output, error
        self.handle = unet.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.count += 1
        if self.count == self.call:
            if self.error is not None:
                raise self.error
            return self.make_output(output)
        return output


def test_a_model_error_at_loop_k_keeps_frames_before_it(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    hook = FailAt(tiny_pipe.unet, call=2 * FAST["steps"] + 1, error=RuntimeError("boom"))
    frames = []
    try:
        with pytest.raises(RuntimeError, match="boom") as raised:
            for frame in sampler.frames(sw.SequenceParams(**FAST)):
                frames.append(frame)
    finally:
        hook.handle.remove()
    assert [f.index for f in frames] == [0, 1]
    assert raised.value.loop == 2  # the error says which loop failed
    if hasattr(raised.value, "__notes__"):
        assert "raised in loop 2" in raised.value.__notes__[0]
    # The sampler is free again, and resuming from the last good frame completes the run.
    rest = list(sampler.frames(sw.SequenceParams(**FAST), start=2, previous=frames[-1].latent))
    assert [f.index for f in rest] == [2, 3]


def test_nan_in_a_loop_is_reported_with_its_index_and_never_passed_on(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)

    def nan_output(output):
        return (torch.full_like(output[0], math.nan),) + tuple(output[1:])

    hook = FailAt(tiny_pipe.unet, call=FAST["steps"] + 1, make_output=nan_output)
    frames = []
    try:
        with pytest.raises(FloatingPointError, match="loop 1: the latent holds NaN"):
            for frame in sampler.frames(sw.SequenceParams(**FAST)):
                frames.append(frame)
    finally:
        hook.handle.remove()
    assert [f.index for f in frames] == [0]
    assert torch.isfinite(frames[0].latent).all()


def test_out_of_memory_says_what_to_lower(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    hook = FailAt(tiny_pipe.unet, call=1, error=torch.OutOfMemoryError("CUDA out of memory"))
    try:
        with pytest.raises(torch.OutOfMemoryError, match="loop 0: out of .* memory. Lower width"):
            sampler.sample(sw.SequenceParams(**FAST))
    finally:
        hook.handle.remove()


@pytest.mark.slow
def test_1024_loops_complete_with_bounded_memory(tiny_pipe):
    """The node's maximum loop count: memory grows only by the frames kept (256 B each here)."""
    import tracemalloc

    params = sw.SequenceParams(
        positive_seq="0: a red circle", steps=1, sequence_loop_count=1024, cfg=1.0
    )
    sampler = sw.SequenceSampler(tiny_pipe)
    tracemalloc.start()
    count, peak_after_100 = 0, None
    for frame in sampler.frames(params):
        count += 1
        del frame
        if count == 100:
            peak_after_100 = tracemalloc.get_traced_memory()[0]
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 1024
    # Python-side allocations do not grow with the loop count when frames are not kept.
    assert current - peak_after_100 < 2_000_000


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.integers(1, 3),
    denoise=st.one_of(st.just(0.0), st.floats(0.01, 1.0)),  # the node steps by 0.01
    sampler_name=st.sampled_from(sw.choices.SAMPLERS),
    scheduler=st.sampled_from(sw.choices.SCHEDULERS),
)
def test_every_sampler_and_scheduler_runs_the_promised_steps(
    tiny_pipe, steps, denoise, sampler_name, scheduler
):
    params = sw.SequenceParams(
        positive_seq="0: a red circle",
        steps=steps,
        sequence_loop_count=2,
        denoise_seq=denoise,
        sampler_name=sampler_name,
        scheduler=scheduler,
    )
    sampler = sw.SequenceSampler(tiny_pipe)
    frames = list(sampler.frames(params))
    assert len(frames) == 2 and all(torch.isfinite(f.latent).all() for f in frames)
    plans = sampler.plan(params)
    assert [f.steps for f in frames] == [p.steps for p in plans]
