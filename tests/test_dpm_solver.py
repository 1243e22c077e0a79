"""dpm_fast and dpm_adaptive: ComfyUI's DPM-Solver on analytic denoisers and in the engine.

Both walk their own grid in ``t = -log sigma`` from ``sigmas[0]`` to the last nonzero sigma and
stop there. The analytic denoisers have known ODE solutions: a one-point dataset (a straight
path to the point) and Gaussian data N(MU, S**2) per coordinate, whose probability flow is
``x(sigma) - MU = (x0 - MU) * sqrt((S**2 + sigma**2) / (S**2 + sigma0**2))``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets import choices, samplers
from seqwidgets.dpm_solver import PIDStepSizeController, sample_dpm_adaptive, sample_dpm_fast
from seqwidgets.schedules import FlowModelSampling, ModelSampling, loop_sigmas
from seqwidgets.session import Session
from seqwidgets.testing import tiny_pipeline

DPM = ("dpm_fast", "dpm_adaptive")
SD = ModelSampling.from_config(
    {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
)
FLOW = FlowModelSampling("discrete", shift=3.0)
MU, S = 0.3, 0.5


class Counting:
    """Wraps a denoiser; records the sigma of every call."""

    def __init__(self, fn) -> None:
        self.fn, self.sigmas = fn, []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.sigmas.append(sigma.clone())
        return self.fn(x, sigma)


def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of N(MU, S**2) data."""
    return MU + S**2 / (S**2 + sigma.view(-1, 1, 1, 1) ** 2) * (x - MU)


def solution(x0: torch.Tensor, sigma0: float, sigma1: float) -> torch.Tensor:
    return MU + (x0 - MU) * math.sqrt((S**2 + sigma1**2) / (S**2 + sigma0**2))


def noised(sigmas: torch.Tensor, batch: int = 1, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(batch, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
    return SD.noise_scaling(sigmas[0], noise, torch.full_like(noise, MU))


# -- where they stop ----------------------------------------------------------------------------


@pytest.mark.parametrize("ms", [SD, FLOW], ids=["eps", "flow"])
@pytest.mark.parametrize("name", DPM)
def test_a_point_dataset_ends_at_the_last_nonzero_sigma(name: str, ms) -> None:
    # ComfyUI's wrapper stops the ODE at sigma_min = sigmas[-2] when the last sigma is 0: the
    # straight path to mu, stopped there. Exact for a constant denoiser, whatever the grid.
    mu = torch.full((1, 4, 2, 2), 0.3)
    sigmas = loop_sigmas(ms, "karras" if ms is SD else "simple", name, 5, 1.0)
    x = ms.noise_scaling(sigmas[0], torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))
    model = Counting(lambda x, sigma: mu.expand_as(x).clone())
    out = samplers.sample(name, model, x, sigmas)
    want = mu + (x - mu) * (sigmas[-2] / sigmas[0])
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert min(float(s.min()) for s in model.sigmas) >= float(sigmas[-2]) * (1 - 1e-5)


@pytest.mark.parametrize("name", DPM)
def test_without_a_final_zero_the_last_sigma_is_the_end(name: str) -> None:
    sigmas = torch.tensor([6.0, 3.0, 1.0, 0.4])
    x = noised(sigmas)
    out = samplers.sample(name, lambda x, sigma: torch.full_like(x, MU), x, sigmas)
    torch.testing.assert_close(out, MU + (x - MU) * (0.4 / 6.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DPM)
def test_a_single_step_spends_at_most_one_call_and_keeps_x(name: str) -> None:
    # [sigma_0, 0]: sigma_min = sigma_max, nothing to integrate. dpm_fast still evaluates the
    # model once (its one order-1 step has h = 0), dpm_adaptive not at all, as in ComfyUI.
    model = Counting(gaussian)
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    out = samplers.sample(name, model, x, torch.tensor([3.0, 0.0]))
    assert torch.equal(out, x)
    assert len(model.sigmas) == (1 if name == "dpm_fast" else 0)


def test_positive_sigmas_are_required() -> None:
    with pytest.raises(ValueError, match="DPM-Solver needs positive sigmas"):
        sample_dpm_fast(gaussian, torch.ones(1, 1, 1, 1), torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="increasing sigmas"):
        sample_dpm_adaptive(gaussian, torch.ones(1, 1, 1, 1), torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        sample_dpm_adaptive(gaussian, torch.ones(1, 1, 1, 1), torch.tensor([1.0, 0.0]), order=4)


# -- calls and callbacks -----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 30), denoise=st.sampled_from([1.0, 0.7, 0.35]))
def test_dpm_fast_spends_exactly_steps_calls_on_its_own_grid(steps: int, denoise: float) -> None:
    sigmas = loop_sigmas(SD, "karras", "dpm_fast", steps, denoise)
    model = Counting(gaussian)
    seen: list[dict] = []
    samplers.sample("dpm_fast", model, noised(sigmas), sigmas, callback=seen.append)
    assert len(model.sigmas) == steps
    # One callback per solver step: floor(steps / 3) + 1 of them (orders 3, ..., 3 and the
    # remainder, or 3, ..., 3, 2, 1 when 3 divides steps).
    solver_steps = steps // 3 + 1
    assert [info["i"] for info in seen] == list(range(solver_steps))
    grid = [info["sigma"] for info in seen]
    assert all(isinstance(s, float) for s in grid)
    assert grid[0] == pytest.approx(float(sigmas[0]), rel=1e-5)
    assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    # evenly spaced in log sigma
    ratios = [math.log(a / b) for a, b in zip(grid, grid[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-3) if ratios else True


def test_dpm_adaptive_calls_come_in_threes_and_the_callback_sees_every_attempt() -> None:
    sigmas = loop_sigmas(SD, "karras", "dpm_adaptive", 10, 1.0)
    model = Counting(gaussian)
    seen: list[dict] = []
    samplers.sample("dpm_adaptive", model, noised(sigmas), sigmas, callback=seen.append)
    calls = len(model.sigmas)
    assert calls > 0 and calls % 3 == 0
    assert [info["i"] for info in seen] == list(range(calls // 3))
    for info in seen:
        assert set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(sigmas[-2]) <= info["sigma"] <= float(sigmas[0]) * (1 + 1e-5)
    assert [info["sigma"] for info in seen] == sorted(
        (info["sigma"] for info in seen), reverse=True
    )
    # the denoised it reports is the model's output at that attempt's first call
    first = seen[0]
    torch.testing.assert_close(
        first["denoised"],
        gaussian(first["x"], torch.tensor([first["sigma"]])),
        rtol=1e-5,
        atol=1e-5,
    )


def test_model_calls_of_the_specs() -> None:
    for name in DPM:
        assert choices.SAMPLER_SPECS_BY_NAME[name].model_calls is None
        assert choices.SAMPLER_SPECS_BY_NAME[name].noise == "none"
        assert not choices.SAMPLER_SPECS_BY_NAME[name].discard_penultimate
        assert samplers.SAMPLER_FUNCTIONS[name].__module__ == "seqwidgets.dpm_solver"
    assert "| `dpm_adaptive` | own grid | none |" in choices.samplers_markdown()


# -- accuracy ----------------------------------------------------------------------------------


def test_dpm_fast_converges_at_third_order() -> None:
    # Error at the end for 12 and 24 calls (4 and 8 third-order steps, the last of lower order).
    sigmas = {n: torch.linspace(math.log(10.0), math.log(0.05), n + 1).exp() for n in (12, 24)}
    x = torch.full((1, 1, 1, 1), 10.0 * 1.7 + MU)
    want = float(solution(x, 10.0, 0.05))
    err = {n: abs(float(sample_dpm_fast(gaussian, x, s)) - want) for n, s in sigmas.items()}
    assert math.log2(err[12] / err[24]) > 3.0, err
    euler = {n: abs(float(samplers.sample_euler(gaussian, x, s)) - want) for n, s in sigmas.items()}
    assert err[24] < euler[24] / 20


def test_dpm_adaptive_meets_its_tolerance_and_tighter_costs_more() -> None:
    sigmas = loop_sigmas(SD, "karras", "dpm_adaptive", 10, 1.0)
    x = noised(sigmas, seed=5)
    want = solution(x, float(sigmas[0]), float(sigmas[-2]))
    loose, tight = Counting(gaussian), Counting(gaussian)
    out = sample_dpm_adaptive(loose, x, sigmas)
    fine = sample_dpm_adaptive(tight, x, sigmas, rtol=0.005, atol=0.00078)
    err = float((out - want).abs().max())
    fine_err = float((fine - want).abs().max())
    assert err < 0.05 * float((want - MU).abs().max()) + 0.0078
    assert fine_err < err and len(tight.sigmas) > len(loose.sigmas)
    # order 2 (DPM-Solver-12) also runs, at 2 calls an attempt
    two = Counting(gaussian)
    sample_dpm_adaptive(two, x, sigmas, order=2)
    assert len(two.sigmas) % 2 == 0


def test_pid_controller_rejects_large_errors_and_shrinks_the_step() -> None:
    pid = PIDStepSizeController(0.05, 0.0, 1.0, 0.0, order=3)
    assert not pid.propose_step(10.0) and pid.h < 0.05
    assert pid.propose_step(0.01) and pid.h > 0.05 * 0.5


def test_dpm_adaptive_refuses_a_nan_error_instead_of_looping_forever() -> None:
    def broken(x, sigma):
        return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="dpm_adaptive"):
        sample_dpm_adaptive(broken, torch.ones(1, 1, 1, 1), torch.tensor([2.0, 1.0, 0.0]))


@pytest.mark.parametrize("name", DPM)
def test_batch_items_compute_what_they_would_alone(name: str) -> None:
    # dpm_adaptive keeps one step-size controller per item, so branches batched together take
    # the steps each would take alone (ComfyUI measures one error for its whole batch).
    sigmas = loop_sigmas(SD, "karras", name, 8, 0.8)
    x = torch.cat([noised(sigmas, seed=1), 3 * noised(sigmas, seed=2)])
    model = Counting(gaussian)
    batch = samplers.sample(name, model, x, sigmas)
    alone = [Counting(gaussian) for _ in range(2)]
    for i in range(2):
        one = samplers.sample(name, alone[i], x[i : i + 1], sigmas)
        torch.testing.assert_close(batch[i : i + 1], one, rtol=1e-6, atol=1e-6)
    assert len(model.sigmas) == max(len(a.sigmas) for a in alone)
    assert torch.equal(batch, samplers.sample(name, gaussian, x, sigmas))  # deterministic


# -- the engine ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["eps", "flux"])
def pipe(request):
    if request.param == "eps":
        return request.getfixturevalue("tiny_pipe")  # the session's, read-only
    return tiny_pipeline("flux", seed=0)


@pytest.mark.parametrize("name", ["dpm_fast", pytest.param("dpm_adaptive", marks=pytest.mark.slow)])
def test_engine_runs_deterministic_with_progress_inside_the_loop(pipe, name: str) -> None:
    params = sw.SequenceParams(
        positive_seq="0: a red circle",
        steps=4,
        cfg=4.0,
        sequence_loop_count=2,
        denoise_seq=0.6,
        sampler_name=name,
    )
    seen: list[tuple[int, int, float]] = []
    sampler = sw.SequenceSampler(pipe)
    first = sampler.sample(
        params, callback=lambda loop, step, sigma, d: seen.append((loop, step, sigma))
    )
    assert torch.isfinite(first).all()
    plans = sampler.plan(params)
    if name == "dpm_fast":
        assert sampler.unet_calls == 2 * 4
    else:
        assert sampler.unet_calls % 3 == 0 and sampler.unet_calls > 0
    for loop in range(2):
        # every plan step reported once, in order, whatever the solver's own grid
        assert [step for lp, step, _ in seen if lp == loop] == [0, 1, 2, 3]
        sigmas = [sigma for lp, _, sigma in seen if lp == loop]
        plan = plans[loop].sigmas
        assert all(float(plan[-2]) * 0.999 <= s <= float(plan[0]) * 1.001 for s in sigmas)
    assert torch.equal(sw.SequenceSampler(pipe).sample(params), first)

    session = Session(pipe)
    root = session.run(params)
    assert torch.equal(torch.stack([f.latent for f in session.path(root)]), first)
    branch = session.branch((root, 0))
    assert torch.equal(session.frame(branch, 1).latent, session.frame(root, 1).latent)
    # a batch of branches equals the branches run one by one
    many = session.branch_many((root, 0), [{"seed": 11}, {"seed": 12}])
    for changes, batched in zip([{"seed": 11}, {"seed": 12}], many, strict=True):
        single = session.branch((root, 0), **changes)
        torch.testing.assert_close(
            session.frame(batched, 1).latent, session.frame(single, 1).latent, rtol=1e-4, atol=1e-4
        )


def test_engine_reports_the_step_of_a_loop_without_model_calls(tiny_pipe) -> None:
    # One step: sigma_min = sigma_max, dpm_adaptive makes no call; the step is still reported.
    params = sw.SequenceParams(
        positive_seq="0: a red circle", steps=1, sequence_loop_count=2, sampler_name="dpm_adaptive"
    )
    seen: list[tuple[int, int]] = []
    sampler = sw.SequenceSampler(tiny_pipe)
    sampler.sample(params, callback=lambda loop, step, sigma, denoised: seen.append((loop, step)))
    assert seen == [(0, 0), (1, 0)] and sampler.unet_calls == 0
