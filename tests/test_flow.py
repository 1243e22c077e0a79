"""Flow-matching model sampling (SD3, Flux) against ComfyUI's formulas.

Every expected value is computed here in float64 numpy from the formulas of
``comfy/model_sampling.py`` (``ModelSamplingDiscreteFlow``, ``ModelSamplingFlux``, ``CONST``),
``comfy/samplers.py`` (the schedulers, ``KSampler.set_steps``) and
``comfy/k_diffusion/sampling.py`` (the ``_RF`` ancestral steps and the flow half-log-SNR), or
written down by hand; never by calling the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from schedule_reference import ref_kl_optimal, ref_linear_quadratic

from seqwidgets.choices import SAMPLERS, SCHEDULERS
from seqwidgets.families import FAMILIES
from seqwidgets.samplers import sample
from seqwidgets.schedules import FlowModelSampling, calculate_sigmas, loop_sigmas

pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

# (family, ComfyUI's table in float64)
_T1000 = np.arange(1, 1001, dtype=np.float64) / 1000
_T10000 = np.arange(1, 10001, dtype=np.float64) / 10000


def _snr_shift(shift: float, t):
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def _flux_shift(mu: float, t):
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


REFERENCE = {
    # name: (FlowModelSampling args, table, sigma(timestep), timestep(sigma))
    "sd3": (
        ("discrete", 3.0, 1000),
        _snr_shift(3.0, _T1000),
        lambda ts: _snr_shift(3.0, ts / 1000),
        lambda s: s * 1000,
    ),
    "flux-schnell": (
        ("discrete", 1.0, 1),
        _T1000.copy(),
        lambda ts: ts / 1.0,
        lambda s: s * 1.0,
    ),
    "flux-dev": (
        ("flux", 1.15, 1),
        _flux_shift(1.15, _T10000),
        lambda ts: _flux_shift(1.15, ts),
        lambda s: s,
    ),
}


def ms_of(name: str) -> FlowModelSampling:
    return FlowModelSampling(*REFERENCE[name][0])


def ref_schedule(name: str, scheduler: str, steps: int) -> np.ndarray:
    _, table, sigma, timestep = REFERENCE[name]
    smin, smax = table[0], table[-1]
    if scheduler == "normal":
        ts = np.linspace(timestep(smax), timestep(smin), steps)
        out = list(sigma(ts))
    elif scheduler == "sgm_uniform":
        ts = np.linspace(timestep(smax), timestep(smin), steps + 1)[:-1]
        out = list(sigma(ts))
    elif scheduler == "karras":
        ramp = np.linspace(0, 1, steps)
        lo, hi = smin ** (1 / 7), smax ** (1 / 7)
        out = list((hi + ramp * (lo - hi)) ** 7)
    elif scheduler == "exponential":
        out = list(np.exp(np.linspace(math.log(smax), math.log(smin), steps)))
    elif scheduler == "simple":
        ss = len(table) / steps
        out = [table[-(1 + int(i * ss))] for i in range(steps)]
    elif scheduler == "ddim_uniform":
        out = list(table[list(range(1, len(table), max(len(table) // steps, 1)))][::-1])
    elif scheduler == "linear_quadratic":
        return np.array(ref_linear_quadratic(steps, smax))
    elif scheduler == "kl_optimal":
        return np.array(ref_kl_optimal(steps, smin, smax))
    else:  # beta
        ts = np.rint(
            scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6)
            * (len(table) - 1)
        )
        out, last = [], -1
        for t in ts:
            if t != last:
                out.append(table[int(t)])
            last = t
    return np.array([*out, 0.0])


def test_family_settings_are_comfyuis():
    # comfy/supported_models.py: SD3 shift 3.0; Flux (guidance_embed) ModelSamplingFlux 1.15;
    # FluxSchnell discrete flow, shift 1.0, multiplier 1.0.
    assert (FAMILIES["sd3"].flow_kind, FAMILIES["sd3"].shift, FAMILIES["sd3"].multiplier) == (
        "discrete",
        3.0,
        1000.0,
    )
    assert (FAMILIES["flux-dev"].flow_kind, FAMILIES["flux-dev"].shift) == ("flux", 1.15)
    schnell = FAMILIES["flux-schnell"]
    assert (schnell.flow_kind, schnell.shift, schnell.multiplier) == ("discrete", 1.0, 1.0)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_tables_match_comfyui(name):
    ms = ms_of(name)
    table = REFERENCE[name][1]
    assert ms.sigmas.dtype == torch.float32 and len(ms.sigmas) == len(table)
    np.testing.assert_allclose(ms.sigmas.double().numpy(), table, rtol=2e-6, atol=1e-9)
    assert float(ms.sigma_max) == pytest.approx(1.0, abs=1e-7)


def test_literal_table_values():
    # By hand: SD3 sigma(t=1) = 3 * 0.001 / (1 + 2 * 0.001); sigma(500) = 1.5 / 2 = 0.75.
    sd3 = ms_of("sd3")
    assert float(sd3.sigma_min) == pytest.approx(0.003 / 1.002, rel=1e-6)
    assert float(sd3.sigma(torch.tensor(500.0))) == pytest.approx(0.75, rel=1e-7)
    # Flux dev: e^1.15 / (e^1.15 + 9999) at t = 1e-4; the timestep is sigma itself.
    flux = ms_of("flux-dev")
    assert float(flux.sigma_min) == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 9999), 1e-5)
    assert float(flux.timestep(torch.tensor(0.3))) == pytest.approx(0.3)
    # Flux schnell: the identity table 0.001 .. 1, timestep = sigma.
    assert float(ms_of("flux-schnell").sigma_min) == pytest.approx(0.001)


def test_normal_schedule_literal_sd3():
    # normal, 4 steps: timesteps linspace(1000, 1000 * sigma_min, 4), sigma = 3s / (1 + 2s),
    # s = t / 1000 (ComfyUI maps timestep(sigma_min) back through sigma(): not sigma_min itself).
    s_min = 0.003 / 1.002
    ts = [1.0, 1.0 - (1 - s_min) / 3, 1.0 - 2 * (1 - s_min) / 3, s_min]
    want = [3 * s / (1 + 2 * s) for s in ts] + [0.0]
    got = calculate_sigmas(ms_of("sd3"), "normal", 4)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("steps", [1, 4, 13])
def test_every_scheduler_full_denoise(name, scheduler, steps):
    got = calculate_sigmas(ms_of(name), scheduler, steps).double().numpy()
    want = ref_schedule(name, scheduler, steps)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize(("steps", "denoise"), [(5, 0.5), (7, 0.3), (4, 0.99)])
def test_every_scheduler_partial_denoise(name, scheduler, steps, denoise):
    # KSampler.set_steps: the last steps + 1 sigmas of the int(steps / denoise)-step schedule.
    got = loop_sigmas(ms_of(name), scheduler, "euler", steps, denoise).double().numpy()
    want = ref_schedule(name, scheduler, int(steps / denoise))[-(steps + 1) :]
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-7)
    # dpm_2: one more step, the penultimate sigma dropped
    got = loop_sigmas(ms_of(name), scheduler, "dpm_2", steps, denoise).double().numpy()
    full = ref_schedule(name, scheduler, int(steps / denoise) + 1)
    want = np.concatenate([full[:-2], full[-1:]])[-(steps + 1) :]
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(list(REFERENCE)),
    scheduler=st.sampled_from(SCHEDULERS),
    sampler_name=st.sampled_from(SAMPLERS),
    steps=st.integers(1, 40),
    denoise=st.floats(0.05, 1.0),
)
def test_flow_tails_decrease_to_zero_within_one(name, scheduler, sampler_name, steps, denoise):
    sigmas = loop_sigmas(ms_of(name), scheduler, sampler_name, steps, denoise)
    assert float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) <= 1.0 + 1e-6
    assert bool((sigmas[:-1] >= sigmas[1:]).all())


def test_const_conventions():
    ms = ms_of("sd3")
    x, v, noise = torch.full((2, 1, 1, 1), 0.8), torch.full((2, 1, 1, 1), 0.5), torch.ones(2, 1)
    sigma = torch.tensor([0.25, 0.5])
    assert torch.equal(ms.calculate_input(sigma, x), x)  # no input scaling
    got = ms.calculate_denoised(sigma, v, x).flatten().tolist()
    assert got == pytest.approx([0.8 - 0.25 * 0.5, 0.8 - 0.5 * 0.5])  # x - sigma * v
    latent = torch.full((2, 1), 3.0)
    got = ms.noise_scaling(sigma, noise, latent).flatten().tolist()
    assert got == pytest.approx([0.25 + 0.75 * 3, 0.5 + 0.5 * 3])  # sigma*n + (1-sigma)*x
    # ComfyUI's CONST ignores max_denoise
    assert torch.equal(
        ms.noise_scaling(sigma, noise, latent, True), ms.noise_scaling(sigma, noise, latent)
    )
    assert ms.inverse_noise_scaling(torch.tensor(0.5), torch.ones(1)).item() == 2.0
    assert ms.percent_to_sigma(0.0) == 1.0 and ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(1e-4) == pytest.approx(3 * 0.9999 / (1 + 2 * 0.9999))


def test_invalid_flow_settings():
    with pytest.raises(ValueError, match="kind"):
        FlowModelSampling("edm")
    with pytest.raises(ValueError, match="shift"):
        FlowModelSampling("discrete", shift=0.0)


class PointModel:
    """The exact denoiser of a one-point dataset, on a flow model sampling."""

    def __init__(self, ms, mu):
        self.model_sampling, self.mu, self.sigmas = ms, mu, []

    def __call__(self, x, sigma):
        self.sigmas.append(float(sigma[0]))
        return self.mu.expand_as(x).clone()


# uni_pc stops at sigma 0.001, dpm_fast / dpm_adaptive at the last nonzero sigma, as in
# ComfyUI: tests/test_uni_pc.py and tests/test_dpm_solver.py check where they land on flow.
@pytest.mark.parametrize(
    "name", [n for n in SAMPLERS if n not in {"uni_pc", "uni_pc_bh2", "dpm_fast", "dpm_adaptive"}]
)
def test_every_sampler_lands_on_a_point_dataset_under_flow(name):
    ms = ms_of("sd3")
    mu = torch.full((1, 4, 2, 2), 0.3)
    sigmas = loop_sigmas(ms, "simple", name, 5, 1.0)
    noise = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    x = ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise))
    out = sample(name, PointModel(ms, mu), x, sigmas, seed=1)
    torch.testing.assert_close(out, mu.expand_as(out), rtol=0, atol=2e-5)


def test_euler_ancestral_rf_step_by_hand():
    # sample_euler_ancestral_RF, eta 1, one step 0.8 -> 0.5, noise: CPU generator seed + 1.
    ms, seed, s0, s1 = ms_of("sd3"), 4, 0.8, 0.5
    x = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    mu = torch.full_like(x, 0.1)
    sigma_down = s1 * (s1 / s0)
    renoise = math.sqrt(s1**2 - sigma_down**2 * (1 - s1) ** 2 / (1 - sigma_down) ** 2)
    ratio = sigma_down / s0
    expected = ratio * x + (1 - ratio) * mu
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    expected = (1 - s1) / (1 - sigma_down) * expected + noise * renoise
    got = sample("euler_ancestral", PointModel(ms, mu), x, torch.tensor([s0, s1]), seed=seed)
    torch.testing.assert_close(got, expected)


def test_dpm_2_ancestral_rf_renoises_with_the_rf_coefficient():
    # With a point model d_2 = (x_2 - mu) / sigma_mid, so the DPM-2 step lands on
    # mu + (x - mu) * sigma_down / s0 exactly; then the RF alpha ratio and renoise coefficient.
    ms, seed, s0, s1 = ms_of("sd3"), 2, 0.9, 0.6
    x = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    mu = torch.full_like(x, -0.2)
    sigma_down = s1 * (s1 / s0)
    renoise = math.sqrt(s1**2 - sigma_down**2 * (1 - s1) ** 2 / (1 - sigma_down) ** 2)
    stepped = mu + (x - mu) * sigma_down / s0
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    expected = (1 - s1) / (1 - sigma_down) * stepped + noise * renoise
    got = sample("dpm_2_ancestral", PointModel(ms, mu), x, torch.tensor([s0, s1]), seed=seed)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde"])
def test_flow_sde_samplers_offset_a_first_sigma_of_one(name):
    # offset_first_sigma_for_snr: sigma 1 has log-SNR -inf; ComfyUI starts at percent_to_sigma(1e-4).
    ms = ms_of("sd3")
    model = PointModel(ms, torch.zeros(1, 1, 2, 2))
    sigmas = loop_sigmas(ms, "normal", name, 3, 1.0)
    assert float(sigmas[0]) == 1.0
    out = sample(name, model, torch.ones(1, 1, 2, 2), sigmas, seed=0)
    assert model.sigmas[0] == pytest.approx(3 * 0.9999 / (1 + 2 * 0.9999), rel=1e-6)
    assert torch.isfinite(out).all()


def test_dpmpp_2m_sde_flow_step_by_hand():
    # One step 0.7 -> 0.4 with eta 1: lambda = log((1 - s) / s), alpha_t = 1 - s_t,
    # x' = s_t / s * e^(-h) x + alpha_t (1 - e^(-2h)) mu + s_t sqrt(1 - e^(-2h)) * noise,
    # then the last step to 0 returns the estimate: check the first step via the callback.
    ms, s0, s1 = ms_of("sd3"), 0.7, 0.4
    lam = lambda s: math.log((1 - s) / s)  # noqa: E731
    h = lam(s1) - lam(s0)
    x = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    mu = torch.full_like(x, 0.25)
    seen = []
    noise_draws = []

    def noise_sampler(a, b):
        draw = torch.randn(x.shape, generator=torch.Generator().manual_seed(len(noise_draws)))
        noise_draws.append(draw)
        return draw

    sample(
        "dpmpp_2m_sde",
        PointModel(ms, mu),
        x,
        torch.tensor([s0, s1, 0.0]),
        callback=seen.append,
        noise_sampler=noise_sampler,
    )
    expected = (
        s1 / s0 * math.exp(-h) * x
        + (1 - s1) * (1 - math.exp(-2 * h)) * mu
        + s1 * math.sqrt(1 - math.exp(-2 * h)) * noise_draws[0]
    )
    torch.testing.assert_close(seen[1]["x"], expected, rtol=1e-5, atol=1e-6)
