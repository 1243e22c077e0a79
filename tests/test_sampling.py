"""Tests for seqwidgets.schedules and seqwidgets.samplers: ComfyUI's schedules and samplers.

References are computed independently here, in float64 numpy / math from ComfyUI's formulas,
never by calling the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from schedule_reference import ref_kl_optimal, ref_linear_quadratic

from seqwidgets import samplers as sm
from seqwidgets.choices import SAMPLERS, SCHEDULERS, check_sampler, check_scheduler
from seqwidgets.samplers import sample
from seqwidgets.schedules import ModelSampling, calculate_sigmas, loop_sigmas

# torchsde's clamp warning at sigma_max; the module silences it, pytest re-enables warnings.
pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

SD15_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "trained_betas": None,
}

# Reference table in float64 (ComfyUI: make_beta_schedule "linear" == diffusers "scaled_linear").
_BETAS = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
_AC = np.cumprod(1.0 - _BETAS)
REF_SIGMAS = np.sqrt((1.0 - _AC) / _AC)
REF_LOG = np.log(REF_SIGMAS)
SMIN, SMAX = float(REF_SIGMAS[0]), float(REF_SIGMAS[-1])

FIXED_LENGTH = ("normal", "karras", "exponential", "sgm_uniform", "simple")
DETERMINISTIC = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim")
STOCHASTIC = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "lcm")


@pytest.fixture(scope="module")
def ms() -> ModelSampling:
    return ModelSampling.from_config(SD15_CONFIG)


def ref_sigma(t: float) -> float:
    """ComfyUI's ModelSamplingDiscrete.sigma in float64: log-linear interpolation."""
    t = min(max(t, 0.0), 999.0)
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * REF_LOG[lo] + w * REF_LOG[hi])


def ref_schedule(name: str, steps: int) -> list[float]:
    """Independent float64 reading of ComfyUI's schedulers (comfy/samplers.py)."""
    if name == "normal":
        return [ref_sigma(t) for t in np.linspace(999, 0, steps)] + [0.0]
    if name == "sgm_uniform":
        return [ref_sigma(t) for t in np.linspace(999, 0, steps + 1)[:-1]] + [0.0]
    if name == "karras":
        ramp = np.linspace(0, 1, steps)
        lo, hi = SMIN ** (1 / 7), SMAX ** (1 / 7)
        return list((hi + ramp * (lo - hi)) ** 7) + [0.0]
    if name == "exponential":
        return list(np.exp(np.linspace(math.log(SMAX), math.log(SMIN), steps))) + [0.0]
    if name == "simple":
        return [REF_SIGMAS[-(1 + int(i * 1000 / steps))] for i in range(steps)] + [0.0]
    if name == "ddim_uniform":
        return [REF_SIGMAS[i] for i in range(1, 1000, 1000 // steps)][::-1] + [0.0]
    if name == "beta":
        # Beta(0.6, 0.6) quantiles by bisection on the regularised incomplete beta function,
        # not by scipy.stats.beta.ppf (which the code under test uses).
        def ppf(q: float) -> float:
            lo, hi = 0.0, 1.0
            for _ in range(80):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if scipy.special.betainc(0.6, 0.6, mid) < q else (lo, mid)
            return (lo + hi) / 2

        ts = [round(ppf(1 - i / steps) * 999) for i in range(steps)]
        dedup = [t for k, t in enumerate(ts) if k == 0 or t != ts[k - 1]]
        return [REF_SIGMAS[t] for t in dedup] + [0.0]
    if name == "linear_quadratic":
        return ref_linear_quadratic(steps, SMAX)
    if name == "kl_optimal":
        return ref_kl_optimal(steps, SMIN, SMAX)
    raise AssertionError(name)


# ------------------------------------------------------------------------------------------
# ModelSampling
# ------------------------------------------------------------------------------------------


def test_sd15_sigma_table(ms: ModelSampling) -> None:
    assert ms.sigmas.dtype == torch.float32 and ms.log_sigmas.dtype == torch.float32
    assert len(ms.sigmas) == 1000
    # Published SD 1.5 values (k-diffusion / ComfyUI): 0.0292 .. 14.6146.
    assert float(ms.sigma_min) == pytest.approx(0.0291675, abs=1e-6)
    assert float(ms.sigma_max) == pytest.approx(14.614642, abs=1e-5)
    np.testing.assert_allclose(ms.sigmas.numpy(), REF_SIGMAS, rtol=1e-6)
    # log taken in float64 before the float32 cast (ComfyUI's set_sigmas)
    np.testing.assert_array_equal(ms.log_sigmas.numpy(), REF_LOG.astype(np.float32))


def test_timestep_nearest_integer(ms: ModelSampling) -> None:
    assert ms.timestep(ms.sigma_max).item() == 999.0
    assert ms.timestep(ms.sigma_min).item() == 0.0
    assert ms.timestep(ms.sigma_max).dtype == torch.float32
    # between steps 500 and 501 in log space: the nearer one wins
    a, b = REF_LOG[500], REF_LOG[501]
    near_500 = torch.tensor([math.exp(a + 0.4 * (b - a))])
    near_501 = torch.tensor([math.exp(a + 0.6 * (b - a))])
    assert ms.timestep(near_500).tolist() == [500.0]
    assert ms.timestep(near_501).tolist() == [501.0]
    assert ms.timestep(torch.tensor([100.0, 1e-4])).tolist() == [999.0, 0.0]  # clamps


def test_sigma_log_interpolation(ms: ModelSampling) -> None:
    t = 123.25
    expected = math.exp(0.75 * REF_LOG[123] + 0.25 * REF_LOG[124])
    assert float(ms.sigma(torch.tensor(t))) == pytest.approx(expected, rel=1e-6)
    # log, not linear, interpolation: differs from the linear mean by far more than round-off
    linear = 0.75 * REF_SIGMAS[123] + 0.25 * REF_SIGMAS[124]
    assert abs(expected - linear) > 1e-6
    # integer t: exp(log_sigmas[t]) in float32 (1 ulp from sigmas[t], as in ComfyUI)
    assert float(ms.sigma(torch.tensor(999.0))) == float(ms.log_sigmas[999].exp())
    assert float(ms.sigma(torch.tensor(5000.0))) == float(ms.log_sigmas[999].exp())  # clamped


def test_linear_betas_and_trained_betas() -> None:
    linear = ModelSampling.from_config({**SD15_CONFIG, "beta_schedule": "linear"})
    betas = np.linspace(0.00085, 0.012, 1000)
    ac = np.cumprod(1 - betas)
    np.testing.assert_allclose(linear.sigmas.numpy(), np.sqrt((1 - ac) / ac), rtol=1e-6)
    trained = ModelSampling.from_config({**SD15_CONFIG, "trained_betas": list(betas)})
    np.testing.assert_array_equal(trained.sigmas.numpy(), linear.sigmas.numpy())


@pytest.mark.parametrize(
    "change",
    [
        {"beta_schedule": "squaredcos_cap_v2"},
        {"prediction_type": "sample"},
        {"rescale_betas_zero_snr": True},
    ],
)
def test_from_config_rejects_unsupported(change: dict) -> None:
    with pytest.raises(ValueError, match=repr(next(iter(change.values()))).strip("'")):
        ModelSampling.from_config({**SD15_CONFIG, **change})


def test_from_pipeline_accepts_pipeline_scheduler_and_itself(ms: ModelSampling) -> None:
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(**{k: v for k, v in SD15_CONFIG.items()})

    class FakePipe:
        pass

    pipe = FakePipe()
    pipe.scheduler = scheduler
    for obj in (pipe, scheduler):
        got = ModelSampling.from_pipeline(obj)
        np.testing.assert_array_equal(got.sigmas.numpy(), ms.sigmas.numpy())
    assert ModelSampling.from_pipeline(ms) is ms
    with pytest.raises(TypeError):
        ModelSampling.from_pipeline(object())


def test_denoiser_arithmetic_eps_and_v(ms: ModelSampling) -> None:
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    sigma = torch.tensor([0.5, 7.0])
    s = sigma.view(2, 1, 1, 1)
    x = x0 + s * eps
    torch.testing.assert_close(ms.calculate_input(sigma, x), x / torch.sqrt(s**2 + 1))
    torch.testing.assert_close(ms.calculate_denoised(sigma, eps, x), x0, rtol=0, atol=1e-5)
    vpred = ModelSampling.from_config({**SD15_CONFIG, "prediction_type": "v_prediction"})
    # v = alpha * eps - sigma_vp * x0 in the variance-preserving scaling
    v = eps / torch.sqrt(1 + s**2) - s / torch.sqrt(1 + s**2) * x0
    torch.testing.assert_close(vpred.calculate_denoised(sigma, v, x), x0, rtol=0, atol=1e-5)


def test_noise_scaling_and_max_denoise(ms: ModelSampling) -> None:
    noise, latent = torch.full((1, 2), 2.0), torch.full((1, 2), 1.0)
    smax = ms.sigma_max
    full = ms.noise_scaling(smax, noise, latent, max_denoise=True)
    torch.testing.assert_close(full, latent + noise * math.sqrt(1 + float(smax) ** 2))
    part = ms.noise_scaling(torch.tensor(3.0), noise, latent, max_denoise=False)
    torch.testing.assert_close(part, latent + noise * 3.0)
    assert ms.max_denoise(calculate_sigmas(ms, "normal", 10))  # 14.614640 ~ 14.614641
    assert ms.max_denoise(torch.tensor([float(smax) * (1 + 5e-6), 0.0]))
    assert ms.max_denoise(torch.tensor([100.0, 0.0]))
    assert not ms.max_denoise(loop_sigmas(ms, "normal", "euler", 10, 0.5))
    with pytest.raises(ValueError):
        ms.max_denoise(torch.zeros(0))


# ------------------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("steps", [1, 3, 10, 25])
def test_scheduler_matches_independent_reference(ms: ModelSampling, name: str, steps: int) -> None:
    got = calculate_sigmas(ms, name, steps)
    ref = ref_schedule(name, steps)
    assert got.dtype == torch.float32
    assert len(got) == len(ref)
    np.testing.assert_allclose(got.numpy(), np.array(ref), rtol=2e-6, atol=0)
    assert float(got[-1]) == 0.0
    assert bool((got[1:] < got[:-1]).all())


@pytest.mark.parametrize("name", FIXED_LENGTH)
def test_fixed_length_schedulers(ms: ModelSampling, name: str) -> None:
    assert len(calculate_sigmas(ms, name, 10)) == 11


def test_literal_schedule_values(ms: ModelSampling) -> None:
    karras = calculate_sigmas(ms, "karras", 10)
    assert float(karras[0]) == pytest.approx(float(ms.sigma_max), rel=1e-6)
    assert float(karras[-2]) == pytest.approx(float(ms.sigma_min), rel=1e-6)
    exponential = calculate_sigmas(ms, "exponential", 10)
    assert float(exponential[0]) == pytest.approx(float(ms.sigma_max), rel=1e-6)
    # simple takes training sigmas verbatim: sigmas[-1], sigmas[-101], ...
    simple = calculate_sigmas(ms, "simple", 10)
    assert simple[:-1].tolist() == ms.sigmas[[-1 - 100 * i for i in range(10)]].tolist()
    # normal ends on sigma_min, sgm_uniform stops one grid point before it
    assert float(calculate_sigmas(ms, "normal", 10)[-2]) == pytest.approx(SMIN, rel=1e-6)
    assert float(calculate_sigmas(ms, "sgm_uniform", 10)[-2]) == pytest.approx(
        ref_sigma(99.9), rel=1e-6
    )


def test_normal_20_steps_published_values(ms: ModelSampling) -> None:
    # The widely published SD 1.5 20-step schedule of k-diffusion's get_sigmas / ComfyUI normal.
    published = [14.6146, 10.7468, 8.0815, 6.2049, 4.8557, 3.8654, 3.1238, 2.5572, 2.1157, 1.7648,
                 1.4806, 1.2458, 1.0481, 0.8784, 0.7297, 0.5964, 0.4736, 0.3555, 0.2322, 0.0292,
                 0.0]  # fmt: skip
    got = calculate_sigmas(ms, "normal", 20).tolist()
    assert [round(v, 4) for v in got] == published


def test_ddim_uniform_and_beta_lengths_follow_comfyui(ms: ModelSampling) -> None:
    # range(1, 1000, 142) has 8 members, so 7 "steps" give 8 (ComfyUI does the same).
    assert len(calculate_sigmas(ms, "ddim_uniform", 7)) == 9
    assert float(calculate_sigmas(ms, "ddim_uniform", 10)[-2]) == float(ms.sigmas[1])
    # beta deduplicates repeated training steps near the ends for long schedules
    assert len(calculate_sigmas(ms, "beta", 800)) < 801
    assert float(calculate_sigmas(ms, "beta", 10)[0]) == float(ms.sigma_max)


def test_unknown_names_raise_listing_supported(ms: ModelSampling) -> None:
    with pytest.raises(
        ValueError, match="'eulr'.*euler, euler_cfg_pp, euler_ancestral.*sa_solver_pece"
    ):
        check_sampler("eulr")
    with pytest.raises(ValueError, match="'karas'.*normal, karras.*beta"):
        check_scheduler("karas")
    with pytest.raises(ValueError, match="'not_a_sampler'"):
        sample("not_a_sampler", lambda x, s: x, torch.zeros(1), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="'align_your_steps'.*kl_optimal"):
        calculate_sigmas(ms, "align_your_steps", 10)  # a ComfyUI node, not a KSampler scheduler
    with pytest.raises(ValueError, match="steps"):
        calculate_sigmas(ms, "normal", 0)
    with pytest.raises(ValueError, match="denoise"):
        loop_sigmas(ms, "normal", "euler", 10, 1.5)
    assert check_sampler("ddim") == "ddim" and check_scheduler("beta") == "beta"


# ------------------------------------------------------------------------------------------
# loop_sigmas (KSampler.set_steps)
# ------------------------------------------------------------------------------------------


def test_loop_sigmas_denoise_tails(ms: ModelSampling) -> None:
    full = loop_sigmas(ms, "normal", "euler", 10, 1.0)
    assert torch.equal(full, calculate_sigmas(ms, "normal", 10))
    assert torch.equal(loop_sigmas(ms, "normal", "euler", 10, 0.99995), full)  # > 0.9999
    half = loop_sigmas(ms, "normal", "euler", 10, 0.5)
    assert torch.equal(half, calculate_sigmas(ms, "normal", 20)[-11:])
    assert len(loop_sigmas(ms, "karras", "euler", 10, 0.0)) == 0
    assert loop_sigmas(ms, "karras", "euler", 10, 0).dtype == torch.float32
    # int(10 / 0.3) == 33: the last 11 of a 33-step schedule
    assert int(10 / 0.3) == 33
    tail = loop_sigmas(ms, "karras", "euler", 10, 0.3)
    assert torch.equal(tail, calculate_sigmas(ms, "karras", 33)[-11:])
    assert float(tail[0]) < float(ms.sigma_max)


@pytest.mark.parametrize("sampler_name", ["dpm_2", "dpm_2_ancestral"])
def test_loop_sigmas_dpm2_drops_penultimate(ms: ModelSampling, sampler_name: str) -> None:
    plus_one = calculate_sigmas(ms, "normal", 11)
    got = loop_sigmas(ms, "normal", sampler_name, 10, 1.0)
    assert len(got) == 11
    assert torch.equal(got, torch.cat([plus_one[:-2], plus_one[-1:]]))
    assert float(plus_one[-2]) not in got.tolist()
    half = loop_sigmas(ms, "normal", sampler_name, 10, 0.5)
    s21 = calculate_sigmas(ms, "normal", 21)
    assert torch.equal(half, torch.cat([s21[:-2], s21[-1:]])[-11:])
    # other samplers keep it
    assert (
        float(calculate_sigmas(ms, "normal", 10)[-2])
        in loop_sigmas(ms, "normal", "euler", 10, 1.0).tolist()
    )


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(1, 30),
    denoise=st.floats(0.05, 1.0),
    scheduler=st.sampled_from(SCHEDULERS),
    sampler_name=st.sampled_from(SAMPLERS),
)
def test_loop_sigmas_invariants(
    ms: ModelSampling, steps: int, denoise: float, scheduler: str, sampler_name: str
) -> None:
    sigmas = loop_sigmas(ms, scheduler, sampler_name, steps, denoise)
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[0]) <= float(ms.sigma_max) * (1 + 1e-6)
    model_steps = len(sigmas) - 1
    if scheduler == "beta":
        assert 1 <= model_steps <= steps  # deduplication can only remove steps
    elif scheduler == "ddim_uniform" and denoise > 0.9999:
        assert model_steps >= min(steps, 999)  # ComfyUI's stride can add steps
    else:
        assert model_steps == steps
    # the denoised loop starts no higher than the full schedule
    assert float(sigmas[0]) <= float(loop_sigmas(ms, scheduler, sampler_name, steps, 1.0)[0])


# ------------------------------------------------------------------------------------------
# Samplers over analytic denoisers
# ------------------------------------------------------------------------------------------


class CountingDenoiser:
    """Exact denoiser for data ~ N(mu, s^2) per coordinate: D = mu + s^2/(s^2+sigma^2)(x-mu)."""

    def __init__(self, ms: ModelSampling, mu: torch.Tensor, s: float) -> None:
        self.model_sampling = ms
        self.mu, self.s2 = mu, s * s
        self.calls = 0
        self.sigmas_seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],)
        self.calls += 1
        self.sigmas_seen.append(sigma)
        k = (self.s2 / (self.s2 + sigma**2)).view(-1, *([1] * (x.ndim - 1)))
        return self.mu + k * (x - self.mu)


def exact_ode_result(x_t, mu, s, sigma_t, sigma_last):
    """Probability-flow ODE solved exactly to sigma_last, then the final denoising step."""
    x_last = mu + (x_t - mu) * math.sqrt((s * s + sigma_last**2) / (s * s + sigma_t**2))
    return mu + s * s / (s * s + sigma_last**2) * (x_last - mu)


def _start(ms: ModelSampling, sigmas: torch.Tensor, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
    return ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), ms.max_denoise(sigmas))


def _relative_ode_error(ms: ModelSampling, name: str, steps: int) -> float:
    """Relative max error of a sampler against the exact ODE solution (Gaussian data)."""
    mu, s = torch.linspace(-0.8, 0.8, 4).view(1, 4, 1, 1), 0.5
    sigmas = loop_sigmas(ms, "karras", name, steps, 1.0)
    x = _start(ms, sigmas)
    ref = exact_ode_result(x.double(), mu.double(), s, float(sigmas[0]), float(sigmas[-2]))
    out = sample(name, CountingDenoiser(ms, mu, s), x, sigmas)
    return float((out.double() - ref).abs().max() / (ref - mu.double()).abs().max())


# (minimum error ratio when steps x4, i.e. about 4**order; error bound at 80 steps)
CONVERGENCE = {
    "euler": (3.0, 0.03),
    "ddim": (3.0, 0.03),
    "heun": (12.0, 2e-3),
    "dpm_2": (12.0, 1e-3),
    "dpmpp_2m": (12.0, 2e-3),
    "lms": (40.0, 2e-4),
}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_converge_at_their_order(ms: ModelSampling, name: str) -> None:
    min_ratio, bound = CONVERGENCE[name]
    coarse, fine = _relative_ode_error(ms, name, 20), _relative_ode_error(ms, name, 80)
    assert fine < bound, (coarse, fine)
    assert coarse / fine > min_ratio, (coarse, fine)


def test_higher_order_beats_euler(ms: ModelSampling) -> None:
    euler = _relative_ode_error(ms, "euler", 20)
    for name in ("heun", "dpm_2", "dpmpp_2m", "lms"):
        assert _relative_ode_error(ms, name, 20) < euler / 4, name


def test_euler_one_step_hand_formula(ms: ModelSampling) -> None:
    mu, s = torch.full((1, 4, 1, 1), 0.3), 0.7
    sigmas = torch.tensor([5.0, 2.0])
    x = _start(ms, sigmas)
    model = CountingDenoiser(ms, mu, s)
    denoised = model(x, torch.full((2,), 5.0))
    expected = x + (x - denoised) / 5.0 * (2.0 - 5.0)
    torch.testing.assert_close(sm.sample_euler(model, x, sigmas), expected)
    torch.testing.assert_close(sample("ddim", model, x, sigmas), expected)


# uni_pc stops at sigma 0.001 and dpm_fast / dpm_adaptive at the last nonzero sigma, as in
# ComfyUI: tests/test_uni_pc.py and tests/test_dpm_solver.py check where they land.
STOP_ABOVE_ZERO = {"uni_pc", "uni_pc_bh2", "dpm_fast", "dpm_adaptive"}


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in STOP_ABOVE_ZERO])
def test_every_sampler_lands_on_a_point_dataset(ms: ModelSampling, name: str) -> None:
    # data = one point: the exact denoiser is constant, every sampler must end exactly there
    mu = torch.full((2, 4, 4, 4), 0.25)

    class Point:
        model_sampling = ms

        def __call__(self, x, sigma):
            return mu.clone()

    sigmas = loop_sigmas(ms, "karras", name, 6, 1.0)
    out = sample(name, Point(), _start(ms, sigmas), sigmas, seed=3)
    torch.testing.assert_close(out, mu, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "calls"),
    [
        ("euler", 8),
        ("ddim", 8),
        ("lms", 8),
        ("dpmpp_2m", 8),
        ("dpmpp_2m_sde", 8),
        ("euler_ancestral", 8),
        ("lcm", 8),
        ("heun", 15),
        ("dpm_2", 15),
        ("dpm_2_ancestral", 15),
        ("dpmpp_sde", 15),
    ],
)
def test_model_calls_and_callback_contract(ms: ModelSampling, name: str, calls: int) -> None:
    sigmas = loop_sigmas(ms, "normal", name, 8, 0.6)
    model = CountingDenoiser(ms, torch.zeros(1, 4, 1, 1), 0.5)
    seen: list[dict] = []
    sample(name, model, _start(ms, sigmas), sigmas, callback=seen.append, seed=0)
    assert model.calls == calls  # second-order samplers: 2 per step, 1 for the step to 0
    assert [info["i"] for info in seen] == list(range(8))
    for i, info in enumerate(seen):
        assert set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(info["sigma"]) == float(sigmas[i])
        assert info["denoised"].shape == info["x"].shape == (2, 4, 4, 4)
    # the first call sees sigma[0] for every batch item
    assert model.sigmas_seen[0].tolist() == [float(sigmas[0])] * 2


def test_sample_with_no_steps_returns_input(ms: ModelSampling) -> None:
    x = torch.randn(1, 4, 2, 2)
    for name in SAMPLERS:
        assert sample(name, lambda *a: pytest.fail("called"), x, torch.zeros(0)) is x
        assert sample(name, lambda *a: pytest.fail("called"), x, torch.tensor([1.0])) is x


def test_extra_args_reach_the_model(ms: ModelSampling) -> None:
    got = []

    def model(x, sigma, cond=None):
        got.append(cond)
        return torch.zeros_like(x)

    sample("euler", model, torch.ones(1, 1), torch.tensor([1.0, 0.0]), extra_args={"cond": "c"})
    assert got == ["c"]


# ------------------------------------------------------------------------------------------
# Stochastic samplers: seeds
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_are_reproducible_per_seed(ms: ModelSampling, name: str) -> None:
    sigmas = loop_sigmas(ms, "karras", name, 5, 1.0)
    x = _start(ms, sigmas)
    model = CountingDenoiser(ms, torch.zeros(1, 4, 1, 1), 0.5)
    a = sample(name, model, x, sigmas, seed=7)
    b = sample(name, model, x, sigmas, seed=7)
    c = sample(name, model, x, sigmas, seed=8)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-3
    # and they really are stochastic: different from the deterministic Euler path
    assert float((a - sample("euler", model, x, sigmas)).abs().max()) > 1e-3


def test_ancestral_noise_is_comfyui_default_noise_sampler(ms: ModelSampling) -> None:
    # One euler_ancestral step 4 -> 2 with the point denoiser, noise by hand: a CPU generator
    # seeded with seed + 1 (ComfyUI's default_noise_sampler on CPU, PR #11528).
    seed, s0, s1 = 5, 4.0, 2.0
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    mu = torch.zeros_like(x)
    sigma_up = min(s1, math.sqrt(s1**2 * (s0**2 - s1**2) / s0**2))
    sigma_down = math.sqrt(s1**2 - sigma_up**2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    expected = x + (x - mu) / s0 * (sigma_down - s0) + noise * sigma_up
    got = sample("euler_ancestral", lambda x, s: mu, x, torch.tensor([s0, s1]), seed=seed)
    torch.testing.assert_close(got, expected)


def test_lcm_renoises_with_noise_scaling(ms: ModelSampling) -> None:
    seed = 11
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    mu = torch.full_like(x, 0.5)

    class Point:
        model_sampling = ms

        def __call__(self, x, sigma):
            return mu

    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    got = sample("lcm", Point(), x, torch.tensor([4.0, 1.5]), seed=seed)
    torch.testing.assert_close(got, mu + noise * 1.5)
    with pytest.raises(ValueError, match="model_sampling"):
        sample("lcm", lambda x, s: x, x, torch.tensor([4.0, 1.5]), seed=seed)


def test_brownian_noise_is_unit_variance_and_consistent() -> None:
    x = torch.zeros(4096)
    ns = sm.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=1)
    n = ns(torch.tensor(10.0), torch.tensor(5.0))
    assert 0.9 < float(n.std()) < 1.1
    again = sm.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=1)
    assert torch.equal(again(torch.tensor(10.0), torch.tensor(5.0)), n)
    # increments add up: W(10)-W(2) = (W(10)-W(5)) + (W(5)-W(2)), whatever the query order
    total = ns(torch.tensor(10.0), torch.tensor(2.0)) * math.sqrt(8.0)
    parts = n * math.sqrt(5.0) + ns(torch.tensor(5.0), torch.tensor(2.0)) * math.sqrt(3.0)
    torch.testing.assert_close(total, parts, rtol=0, atol=1e-4)


def test_sde_single_step_to_zero_returns_denoised(ms: ModelSampling) -> None:
    # ComfyUI: a step with sigma_next == 0 is a pure denoising step, no noise (any seed).
    model = CountingDenoiser(ms, torch.full((1, 4, 1, 1), 0.1), 0.5)
    x = _start(ms, torch.tensor([3.0, 0.0]))
    expected = model(x, torch.full((2,), 3.0))
    for name in STOCHASTIC:
        out = sample(name, model, x, torch.tensor([3.0, 0.0]), seed=123)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
