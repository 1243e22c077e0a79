"""ComfyUI's two newest schedulers, ``linear_quadratic`` and ``kl_optimal``, on every family.

The values below are worked out by hand from ``comfy/samplers.py`` at a125cd8
(``linear_quadratic_schedule``, ``kl_optimal_scheduler``, ``KSampler.set_steps``); the reference
fixtures recorded from ComfyUI itself are checked in ``test_comfy_parity_menus.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets.choices import SCHEDULERS
from seqwidgets.schedules import FlowModelSampling, ModelSampling, calculate_sigmas, loop_sigmas

SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
FAMILIES = {
    "sd": lambda: ModelSampling.from_config(SD15),
    "sd3": lambda: FlowModelSampling("discrete", shift=3.0, multiplier=1000),
    "flux": lambda: FlowModelSampling("flux", shift=1.15),
    "flux-schnell": lambda: FlowModelSampling("discrete", shift=1.0, multiplier=1),
}
NEW = ("linear_quadratic", "kl_optimal")


def test_comfyuis_last_two_schedulers_are_offered_last():
    # comfy/samplers.py SCHEDULER_HANDLERS ends with linear_quadratic, kl_optimal.
    assert SCHEDULERS[-2:] == NEW
    for name in NEW:
        assert sw.SequenceParams(scheduler=name).scheduler == name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_linear_quadratic_four_steps_by_hand(family):
    # steps 4: linear_steps 2 -> drops 0, 0.0125; quadratic 0.2375 i^2 - 0.9375 i + 0.95 at
    # i = 2, 3 -> 0.025, 0.275; then 1. Sigmas = (1 - drop) * sigma_max, float32.
    ms = FAMILIES[family]()
    want = torch.tensor([1.0, 0.9875, 0.975, 0.725, 0.0]) * ms.sigma_max
    assert torch.equal(calculate_sigmas(ms, "linear_quadratic", 4), want)


def test_linear_quadratic_denoise_tail_by_hand():
    # denoise 0.5, 3 steps: the last 4 of the 6-step schedule. Six steps: linear_steps 3,
    # quadratic (2.85 / 27) i^2 - 0.625 i + 0.95 at i = 3, 4, 5 -> 0.025, 5/36, 167/360.
    ms = FAMILIES["sd3"]()
    got = loop_sigmas(ms, "linear_quadratic", "euler", steps=3, denoise=0.5)
    np.testing.assert_allclose(got.numpy(), [0.975, 31 / 36, 193 / 360, 0.0], rtol=1e-6)
    # dpm_2 computes one more step and drops the penultimate sigma: 7 steps -> 4 linear.
    got = loop_sigmas(ms, "linear_quadratic", "dpm_2", steps=3, denoise=0.5)
    assert len(got) == 4 and float(got[-1]) == 0.0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_kl_optimal_three_steps_by_hand(family):
    # tan of atan(sigma_max), the midpoint of the two arctangents, atan(sigma_min); then 0.
    ms = FAMILIES[family]()
    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    want = [hi, math.tan((math.atan(lo) + math.atan(hi)) / 2), lo, 0.0]
    got = calculate_sigmas(ms, "kl_optimal", 3)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), want, rtol=3e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_step_is_sigma_max_then_zero(family):
    # ComfyUI's kl_optimal divides 0 by 0 for one step and yields NaN; we give sigma_max, as
    # linear_quadratic does for one step.
    ms = FAMILIES[family]()
    for name in NEW:
        assert calculate_sigmas(ms, name, 1).tolist() == [float(ms.sigma_max), 0.0]


@settings(max_examples=40, deadline=None)
@given(
    family=st.sampled_from(list(FAMILIES)),
    name=st.sampled_from(NEW),
    steps=st.integers(1, 60),
    denoise=st.floats(0.05, 1.0),
)
def test_new_schedules_take_steps_down_to_zero(family, name, steps, denoise):
    ms = FAMILIES[family]()
    sigmas = loop_sigmas(ms, name, "euler", steps, denoise)
    assert len(sigmas) == steps + 1  # exactly `steps` model steps, never deduplicated
    assert bool(torch.isfinite(sigmas).all())
    assert float(sigmas[0]) <= float(ms.sigma_max) * (1 + 1e-6)
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("kind", ["sd", "flux"])
def test_the_engine_runs_each_new_schedule(kind):
    pipe = sw.testing.tiny_pipeline(kind)
    sampler = sw.SequenceSampler(pipe)
    for name in NEW:
        params = sw.SequenceParams(
            positive_seq="0: a red circle",
            steps=3,
            scheduler=name,
            sequence_loop_count=2,
            denoise_start=0.7,
            denoise_seq=0.5,
        )
        frames = list(sampler.frames(params))
        for frame, denoise in zip(frames, (0.7, 0.5), strict=True):
            want = loop_sigmas(sampler.model_sampling, name, "euler", 3, denoise)
            assert torch.equal(frame.sigmas, want)
            assert bool(torch.isfinite(frame.latent).all())
