"""uni_pc and uni_pc_bh2: ComfyUI's UniPC on analytic denoisers and in the engine.

The analytic denoisers have known ODE solutions: a one-point dataset (the denoiser is a constant,
the path a straight line to it) and Gaussian data N(MU, S**2) per coordinate, whose probability
flow is ``x(sigma) - MU = (x0 - MU) * sqrt((S**2 + sigma**2) / (S**2 + sigma0**2))``.
"""

from __future__ import annotations

import math

import pytest
import torch

import seqwidgets as sw
from seqwidgets import samplers
from seqwidgets.schedules import FlowModelSampling, ModelSampling, calculate_sigmas, loop_sigmas
from seqwidgets.session import Session
from seqwidgets.testing import tiny_pipeline
from seqwidgets.uni_pc import UNI_PC_FINAL_SIGMA, sample_uni_pc, sample_uni_pc_bh2

UNI_PC = ("uni_pc", "uni_pc_bh2")
SD = ModelSampling.from_config(
    {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
)
FLOW = FlowModelSampling("discrete", shift=3.0)
MU, S = 0.3, 0.5


class Point:
    """The exact denoiser of a one-point dataset: always ``mu``. Records the sigmas it sees."""

    def __init__(self, mu: torch.Tensor, model_sampling=None) -> None:
        self.mu, self.model_sampling, self.sigmas = mu, model_sampling, []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.sigmas.append(sigma.clone())
        return self.mu.expand_as(x).clone()


def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of N(MU, S**2) data (eps / VE parametrisation)."""
    return MU + S**2 / (S**2 + sigma.view(-1, 1, 1, 1) ** 2) * (x - MU)


def gaussian_flow_solution(x0: float, sigma0: float, sigma1: float) -> float:
    return MU + (x0 - MU) * math.sqrt((S**2 + sigma1**2) / (S**2 + sigma0**2))


def log_sigmas(n: int, high: float = 10.0, low: float = 0.05) -> torch.Tensor:
    """``n`` steps evenly spaced in log sigma, with no final 0."""
    return torch.linspace(math.log(high), math.log(low), n + 1).exp()


def start(x0: float = 10.0 * 1.7 + MU) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), x0)


# -- the final sigma 0 ------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNI_PC)
def test_a_point_dataset_ends_at_sigma_0001_as_in_comfyui(name: str) -> None:
    # The straight path to mu, stopped at sigma 0.001 instead of 0 (float32's VP arithmetic
    # there is coarse, so "near 0.001": between 0.0005 and 0.002, and never 0).
    mu = torch.full((2, 4, 4, 4), 0.25)
    sigmas = loop_sigmas(SD, "karras", name, 6, 1.0)
    x = SD.noise_scaling(
        sigmas[0], torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)), mu
    )
    out = samplers.sample(name, Point(mu), x, sigmas)
    left = (out - mu) / (x - mu) * sigmas[0]  # the sigma the path was stopped at
    assert (
        0.5 * UNI_PC_FINAL_SIGMA < float(left.min()) <= float(left.max()) < 2 * UNI_PC_FINAL_SIGMA
    )


@pytest.mark.parametrize("name", UNI_PC)
def test_on_flow_the_end_is_inverse_noise_scaled_at_0001(name: str) -> None:
    # ComfyUI's KSAMPLER divides by 1 - sigmas[-1] after UniPC set sigmas[-1] to 0.001.
    mu = torch.full((1, 4, 2, 2), 0.3)
    sigmas = loop_sigmas(FLOW, "simple", name, 5, 1.0)
    x = FLOW.noise_scaling(sigmas[0], torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))
    flow = samplers.sample(name, Point(mu, FLOW), x, sigmas)
    plain = samplers.sample(name, Point(mu), x, sigmas)  # no model_sampling: no rescaling
    torch.testing.assert_close(flow, plain / (1 - UNI_PC_FINAL_SIGMA), rtol=1e-6, atol=0)
    torch.testing.assert_close(flow, mu.expand_as(flow), rtol=0, atol=2e-3)


def test_the_callers_sigmas_are_left_alone() -> None:
    sigmas = loop_sigmas(SD, "normal", "uni_pc", 4, 1.0)
    kept = sigmas.clone()
    sample_uni_pc(Point(torch.zeros(1, 1, 1, 1)), torch.ones(1, 1, 1, 1), sigmas)
    assert torch.equal(sigmas, kept) and float(sigmas[-1]) == 0.0


def test_without_a_final_zero_it_ends_exactly_at_the_last_sigma() -> None:
    # A constant denoiser is integrated exactly by the data-prediction solver.
    mu = torch.full((1, 2, 2, 2), -0.4)
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])
    x = mu + 8.0 * torch.ones(1, 2, 2, 2)
    out = sample_uni_pc(Point(mu), x, sigmas)
    torch.testing.assert_close(out, mu + 0.5 * torch.ones_like(x), rtol=0, atol=1e-4)


def test_a_single_step_does_not_move_x_as_in_comfyui() -> None:
    # order = min(3, steps - 1) = 0: ComfyUI's loop only evaluates the model; x comes back
    # rescaled by alpha(sigma_0) / alpha(0.001).
    model = Point(torch.zeros(1, 1, 2, 2))
    x = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    out = sample_uni_pc(model, x, torch.tensor([3.0, 0.0]))
    scale = math.sqrt(1 + UNI_PC_FINAL_SIGMA**2) / math.sqrt(1 + 3.0**2)
    torch.testing.assert_close(out, x * scale)
    assert len(model.sigmas) == 1


# -- the schedule, calls and callbacks ---------------------------------------------------------


@pytest.mark.parametrize("name", UNI_PC)
def test_discards_the_penultimate_sigma_as_comfyui(name: str) -> None:
    got = loop_sigmas(SD, "normal", name, 5, 1.0)
    six = calculate_sigmas(SD, "normal", 6)
    assert torch.equal(got, torch.cat([six[:-2], six[-1:]]))
    half = loop_sigmas(SD, "karras", name, 4, 0.5)
    nine = calculate_sigmas(SD, "karras", 9)
    assert torch.equal(half, torch.cat([nine[:-2], nine[-1:]])[-5:])


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("name", UNI_PC)
def test_one_model_call_per_step_and_the_callback_contract(name: str, steps: int) -> None:
    sigmas = loop_sigmas(SD, "karras", name, steps, 1.0)
    calls: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def model(x, sigma):
        calls.append(sigma.clone())
        outputs.append(gaussian(x, sigma))
        return outputs[-1]

    seen: list[dict] = []
    x = SD.noise_scaling(sigmas[0], torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    samplers.sample(name, model, x, sigmas, callback=seen.append)
    assert len(calls) == steps  # the corrector's call is the next step's model value
    assert [float(c[0]) for c in calls] == [float(s) for s in sigmas[:-1]]
    assert all(c.shape == (2,) for c in calls)
    assert [info["i"] for info in seen] == list(range(steps))
    for i, info in enumerate(seen):
        assert set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(info["sigma"]) == float(sigmas[i])
        assert info["x"].shape == info["denoised"].shape == x.shape
        # ``denoised`` is the model's output at sigma_i, as ComfyUI reports it: after step 0
        # that call is the corrector's, at the predicted point (UniPC's round trip through eps
        # and VP coordinates costs a few float32 ulps).
        torch.testing.assert_close(info["denoised"], outputs[i], rtol=1e-5, atol=1e-5)


def test_extra_args_reach_the_model() -> None:
    got = []

    def model(x, sigma, cond=None):
        got.append(cond)
        return torch.zeros_like(x)

    sample_uni_pc(model, torch.ones(1, 1, 1, 1), torch.tensor([2.0, 1.0, 0.0]), {"cond": "c"})
    assert got == ["c", "c"]


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant must be 'bh1' or 'bh2'"):
        sample_uni_pc(gaussian, torch.ones(1, 1, 1, 1), torch.tensor([1.0, 0.0]), variant="bh3")


# -- accuracy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNI_PC)
def test_converges_at_third_order_on_gaussian_data(name: str) -> None:
    # Error at the last sigma for 12 and 24 steps: halving the step divides it by 2**order.
    # UniPC (order 3 multistep with a corrector) beats 2**3; Euler only halves it.
    def error(sampler: str, n: int) -> float:
        out = samplers.sample(sampler, gaussian, start(), log_sigmas(n))
        return abs(float(out) - gaussian_flow_solution(float(start()), 10.0, 0.05))

    observed = math.log2(error(name, 12) / error(name, 24))
    assert observed > 3.0, observed
    assert math.log2(error("euler", 12) / error("euler", 24)) < 1.2
    assert error(name, 24) < error("dpmpp_2m", 24) / 5


@pytest.mark.parametrize("name", UNI_PC)
def test_with_a_final_zero_it_lands_on_the_solution_at_0001(name: str) -> None:
    sigmas = loop_sigmas(SD, "karras", name, 20, 1.0)
    x = start(float(sigmas[0]) * 1.3 + MU)
    out = samplers.sample(name, gaussian, x, sigmas)
    want = gaussian_flow_solution(float(x), float(sigmas[0]), UNI_PC_FINAL_SIGMA)
    assert abs(float(out) - want) < 2e-3 * abs(float(x) - MU) / float(sigmas[0]) + 1e-4


def test_bh2_is_not_bh1() -> None:
    sigmas = loop_sigmas(SD, "karras", "uni_pc", 8, 1.0)
    x = start()
    bh1, bh2 = sample_uni_pc(gaussian, x, sigmas), sample_uni_pc_bh2(gaussian, x, sigmas)
    assert abs(float(bh1) - float(bh2)) > 1e-5
    assert samplers.SAMPLER_FUNCTIONS["uni_pc_bh2"] is sample_uni_pc_bh2
    assert samplers.SAMPLER_FUNCTIONS["uni_pc"] is sample_uni_pc


@pytest.mark.parametrize("name", UNI_PC)
def test_batch_items_are_independent_and_runs_deterministic(name: str) -> None:
    sigmas = loop_sigmas(SD, "karras", name, 6, 0.7)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(4)) * float(sigmas[0])
    batch = samplers.sample(name, gaussian, x, sigmas)
    assert torch.equal(batch, samplers.sample(name, gaussian, x, sigmas))
    for i in range(3):
        alone = samplers.sample(name, gaussian, x[i : i + 1], sigmas)
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-6, atol=1e-6)


# -- the engine: eps, v and flow models ---------------------------------------------------------


def _v_prediction_pipeline():
    pipe = tiny_pipeline("sd", seed=0)
    pipe.scheduler.register_to_config(prediction_type="v_prediction")
    return pipe


@pytest.fixture(scope="module", params=["eps", "v", "flux"])
def pipe(request):
    if request.param == "eps":
        return request.getfixturevalue("tiny_pipe")  # the session's, read-only
    if request.param == "v":
        return _v_prediction_pipeline()
    return tiny_pipeline("flux", seed=0)


@pytest.mark.parametrize("name", UNI_PC)
def test_engine_runs_deterministic_and_branches_reproduce(pipe, name: str) -> None:
    params = sw.SequenceParams(
        positive_seq="0: a red circle",
        steps=4,
        cfg=4.0,
        sequence_loop_count=2,
        denoise_seq=0.6,
        sampler_name=name,
    )
    steps_seen: list[tuple[int, int, float]] = []
    sampler = sw.SequenceSampler(pipe)
    first = sampler.sample(
        params, callback=lambda loop, step, sigma, d: steps_seen.append((loop, step, sigma))
    )
    assert torch.isfinite(first).all()
    assert sampler.unet_calls == 2 * 4  # steps calls per loop, CFG batched
    plans = sampler.plan(params)
    assert steps_seen == [
        (loop, i, float(plans[loop].sigmas[i])) for loop in range(2) for i in range(4)
    ]
    assert torch.equal(sw.SequenceSampler(pipe).sample(params), first)

    session = Session(pipe)
    root = session.run(params)
    branch = session.branch((root, 0))
    assert torch.equal(session.frame(branch, 1).latent, session.frame(root, 1).latent)
