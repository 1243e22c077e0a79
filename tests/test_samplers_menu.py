"""Every sampler of ComfyUI's menu on eps, v and flow model sampling, and in the engine.

The stand-in model is exact for Gaussian data (mean ``mu``, std 0.5 per element) and goes through
the model sampling's own ``calculate_denoised``, so eps, v and flow each take their own path. It
has two prompts (two data means) and classifier-free guidance, so the CFG++ samplers read a real
unconditional estimate.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets import samplers
from seqwidgets.choices import (
    SAMPLER_GROUPS,
    SAMPLER_SPECS,
    SAMPLER_SPECS_BY_NAME,
    SAMPLERS,
    samplers_by_group,
)
from seqwidgets.denoiser import CFGDenoiser
from seqwidgets.families import detect_family
from seqwidgets.schedules import FlowModelSampling, ModelSampling, loop_sigmas

pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}
MODEL_SAMPLINGS = {
    "eps": ModelSampling.from_config({**SD, "beta_schedule": "scaled_linear"}),
    "v": ModelSampling.from_config(
        {**SD, "beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}
    ),
    "flow": FlowModelSampling("discrete", shift=3.0),
}
DATA_STD = 0.5
DETERMINISTIC = [spec.name for spec in SAMPLER_SPECS if spec.noise == "none"]
# Samplers on their own sigma grid (DPM-Solver fast / adaptive: their own call counts and
# callbacks) and those that stop above sigma 0 as ComfyUI's do (those two, and UniPC at 0.001):
# tests/test_dpm_solver.py and tests/test_uni_pc.py check where they stop and what they call.
OWN_GRID = {spec.name for spec in SAMPLER_SPECS if spec.model_calls is None}
STOP_ABOVE_ZERO = OWN_GRID | {"uni_pc", "uni_pc_bh2"}
STEPPED = [name for name in SAMPLERS if name not in OWN_GRID]
TO_ZERO = [name for name in SAMPLERS if name not in STOP_ABOVE_ZERO]
# CFG++ sampler -> the plain sampler it becomes when the unconditional estimate is the guided one
CFG_PP_PLAIN = {
    "euler_cfg_pp": "euler",
    "euler_ancestral_cfg_pp": "euler_ancestral",
    "dpmpp_2m_cfg_pp": "dpmpp_2m",
    "res_multistep_cfg_pp": "res_multistep",
    "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
    "gradient_estimation_cfg_pp": "gradient_estimation",
}
# (Not dpmpp_2s_ancestral_cfg_pp: ComfyUI's second stage reads the uncond of its second call with
# the guided estimate of its first, so it differs from dpmpp_2s_ancestral even then.)
# On flow models the plain ancestral ones take ComfyUI's rectified-flow step and their CFG++
# twins do not (ComfyUI has no such branch there), so those pairs agree on eps / v only.
FLOW_BRANCH_PLAIN = {"euler_ancestral", "dpmpp_2s_ancestral"}


def exact_denoised(ms, x: torch.Tensor, sigma: torch.Tensor, mu: float) -> torch.Tensor:
    """E[x0 | x] for x0 ~ N(mu, DATA_STD^2) per element, in the model sampling's noising."""
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    var = DATA_STD**2
    if ms.is_flow:  # x = (1 - s) x0 + s n
        a = 1 - s
        return mu + a * var / (a**2 * var + s**2) * (x - a * mu)
    return mu + var / (var + s**2) * (x - mu)  # x = x0 + s n


def network_output(ms, x, sigma, denoised):
    """The eps / v / velocity a network would output for ``denoised`` (inverse of
    ``calculate_denoised``), so the stand-in goes through the model sampling's own formula."""
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    if ms.is_flow or ms.prediction_type != "v_prediction":
        return (x - denoised) / s
    return (x / (s**2 + 1) - denoised) * (s**2 + 1) ** 0.5 / s


class StandIn:
    """Two prompts (data means 0.3 and -0.2) with CFG; counts its calls."""

    def __init__(self, ms, cfg: float = 3.0, cond: float = 0.3, uncond: float = -0.2):
        self.model_sampling, self.cfg = ms, cfg
        self.means = (cond, uncond)
        self.calls = 0

    def _estimate(self, x, sigma, mu):
        ms = self.model_sampling
        out = network_output(ms, x, sigma, exact_denoised(ms, x, sigma, mu))
        return ms.calculate_denoised(sigma, out, x)

    def denoise_with_uncond(self, x, sigma):
        self.calls += 1
        cond = self._estimate(x, sigma, self.means[0])
        uncond = self._estimate(x, sigma, self.means[1])
        return uncond + (cond - uncond) * self.cfg, uncond

    def __call__(self, x, sigma):
        return self.denoise_with_uncond(x, sigma)[0]


def start(ms, sigmas, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = 0.3 + DATA_STD * torch.randn(batch, 4, 4, 4, generator=g)
    noise = torch.randn(batch, 4, 4, 4, generator=g)
    return ms.noise_scaling(sigmas[0], noise, x0, ms.max_denoise(sigmas))


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------
# the menu
# ------------------------------------------------------------------------------------------


def test_every_sampler_is_in_exactly_one_menu_group() -> None:
    groups = samplers_by_group()
    assert tuple(groups) == SAMPLER_GROUPS
    listed = [name for names in groups.values() for name in names]
    assert sorted(listed) == sorted(SAMPLERS)
    assert all(groups[group] for group in SAMPLER_GROUPS)
    assert all(spec.name.endswith("_cfg_pp") == (spec.group == "CFG++") for spec in SAMPLER_SPECS)


def test_gpu_variants_share_the_function_of_their_plain_sampler() -> None:
    for spec in SAMPLER_SPECS:
        if spec.name.endswith("_gpu"):
            plain = SAMPLER_SPECS_BY_NAME[spec.name.removesuffix("_gpu")]
            assert spec.function == plain.function and spec.noise == plain.noise == "brownian"
            assert not spec.cpu_tree and plain.cpu_tree
            assert {**plain.kwargs, "cpu_tree": False} == spec.kwargs


# ------------------------------------------------------------------------------------------
# every sampler, every model sampling
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(MODEL_SAMPLINGS))
@pytest.mark.parametrize("name", STEPPED)
def test_finite_deterministic_and_calls_as_the_spec_says(name: str, family: str) -> None:
    ms = MODEL_SAMPLINGS[family]
    spec = SAMPLER_SPECS_BY_NAME[name]
    sigmas = loop_sigmas(ms, "karras", name, 5, 1.0)
    runs = []
    for _ in range(2):
        model = StandIn(ms)
        seen: list[dict] = []
        out = samplers.sample(name, model, start(ms, sigmas), sigmas, seed=5, callback=seen.append)
        assert model.calls == spec.loop_calls(len(sigmas) - 1, to_zero=True)
        assert [info["i"] for info in seen] == list(range(len(sigmas) - 1))  # one per step
        runs.append(out)
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
    if spec.noise != "none":  # another seed, other noise (SA-Solver's only mid-schedule)
        sigmas = loop_sigmas(ms, "simple", name, 8, 1.0)
        x = start(ms, sigmas)
        one = samplers.sample(name, StandIn(ms), x, sigmas, seed=5)
        assert not torch.equal(one, samplers.sample(name, StandIn(ms), x, sigmas, seed=6))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(STEPPED),
    steps=st.integers(1, 7),
    denoise=st.sampled_from([1.0, 0.6, 0.3]),
    scheduler=st.sampled_from(["normal", "karras", "simple"]),
)
def test_model_calls_match_loop_calls_for_any_schedule(name, steps, denoise, scheduler) -> None:
    ms = MODEL_SAMPLINGS["eps"]
    sigmas = loop_sigmas(ms, scheduler, name, steps, denoise)
    for last in (None, -1):  # the loop's own slice (ends at 0), and one stopping short of 0
        cut = sigmas[:last]
        model = StandIn(ms)
        samplers.sample(name, model, start(ms, cut), cut, seed=1)
        expected = SAMPLER_SPECS_BY_NAME[name].loop_calls(len(cut) - 1, to_zero=cut[-1] == 0)
        assert model.calls == (expected if len(cut) > 1 else 0)


@pytest.mark.parametrize("family", list(MODEL_SAMPLINGS))
@pytest.mark.parametrize("name", SAMPLERS)
def test_a_batch_of_two_seeds_equals_two_separate_runs(name: str, family: str) -> None:
    ms = MODEL_SAMPLINGS[family]
    sigmas = loop_sigmas(ms, "normal", name, 4, 0.8)
    x = start(ms, sigmas, batch=2, seed=3)
    seeds = [7, 8]
    noise = samplers.batch_noise_sampler(name, x, sigmas, seeds)
    batch = samplers.sample(name, StandIn(ms), x, sigmas, noise_sampler=noise)
    for i, seed in enumerate(seeds):
        alone = samplers.sample(name, StandIn(ms), x[i : i + 1], sigmas, seed=seed)
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", list(MODEL_SAMPLINGS))
@pytest.mark.parametrize("name", TO_ZERO)
def test_an_exact_denoiser_of_one_point_lands_on_it(name: str, family: str) -> None:
    # The data is the single latent mu: the exact denoiser returns mu whatever it is shown, and
    # every sampler must end exactly there (the stochastic ones too: their last step to 0 is a
    # jump to the estimate or a step whose noise vanishes).
    ms = MODEL_SAMPLINGS[family]
    mu = torch.linspace(-1, 1, 64).view(1, 4, 4, 4)

    class Point:
        model_sampling = ms

        def __call__(self, x, sigma):
            return mu.clone()

    sigmas = loop_sigmas(ms, "karras", name, 6, 1.0)
    out = samplers.sample(name, Point(), start(ms, sigmas), sigmas, seed=3)
    torch.testing.assert_close(out, mu, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", list(MODEL_SAMPLINGS))
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name, family) -> None:
    # Gaussian data: with the exact denoiser the probability-flow ODE maps x(sigma_max) to a
    # known point; 60 karras steps of any deterministic solver land within 3.5% of it.
    ms = MODEL_SAMPLINGS[family]
    mu, var = 0.3, DATA_STD**2

    def solution(x, sigma):  # x0 along the ODE through (x, sigma)
        if ms.is_flow:  # x = (1 - s) x0 + s n with std sqrt((1 - s)^2 var + s^2)
            return (
                mu + (x - (1 - sigma) * mu) * var**0.5 / ((1 - sigma) ** 2 * var + sigma**2) ** 0.5
            )
        return mu + (x - mu) * var**0.5 / (var + sigma**2) ** 0.5

    errors = []
    for steps in (10, 60):
        sigmas = loop_sigmas(ms, "karras", name, steps, 1.0)
        x = start(ms, sigmas, seed=9)
        one_prompt = StandIn(ms, cfg=1.0, cond=mu, uncond=mu)  # CFG++ then follows it too
        out = samplers.sample(name, one_prompt, x, sigmas)
        errors.append(rel_l2(out, solution(x, sigmas[0])))
    assert errors[0] < 0.2 and errors[1] < 0.035, errors  # first order: ~0.03 at 60 steps


# ------------------------------------------------------------------------------------------
# CFG++
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(MODEL_SAMPLINGS))
@pytest.mark.parametrize("name", list(CFG_PP_PLAIN))
def test_cfg_pp_equals_its_plain_sampler_when_both_prompts_agree(name: str, family: str) -> None:
    # ComfyUI's CFG++ steps along the unconditional estimate where the plain sampler steps along
    # the guided one: with one prompt on both sides (uncond == cond) the two are one method.
    plain = CFG_PP_PLAIN[name]
    if family == "flow" and plain in FLOW_BRANCH_PLAIN:
        pytest.skip("the plain sampler takes ComfyUI's rectified-flow step here")
    ms = MODEL_SAMPLINGS[family]
    sigmas = loop_sigmas(ms, "karras", name, 6, 1.0)
    x = start(ms, sigmas, seed=2)
    same = StandIn(ms, cfg=1.0, cond=0.3, uncond=0.3)
    got = samplers.sample(name, same, x, sigmas, seed=4)
    want = samplers.sample(plain, StandIn(ms, cfg=1.0, cond=0.3, uncond=0.3), x, sigmas, seed=4)
    assert rel_l2(got, want) < 1e-5
    # and the negative prompt matters: another uncond gives another result, at cfg 1 too
    other = samplers.sample(name, StandIn(ms, cfg=1.0), x, sigmas, seed=4)
    assert rel_l2(other, want) > 1e-3


def test_euler_cfg_pp_one_step_hand_formula() -> None:
    # ComfyUI's sample_euler_ancestral_cfg_pp at eta 0, eps: x' = D + sigma' (x - U) / sigma.
    ms = MODEL_SAMPLINGS["eps"]
    sigmas = torch.tensor([4.0, 1.5])
    x = start(ms, sigmas)
    model = StandIn(ms, cfg=5.0)
    guided, uncond = model.denoise_with_uncond(x, torch.full((1,), 4.0))
    want = guided + 1.5 * (x - uncond) / 4.0
    torch.testing.assert_close(samplers.sample("euler_cfg_pp", model, x, sigmas), want)


def test_a_plain_model_serves_cfg_pp_as_its_own_uncond() -> None:
    # A model without CFG (any callable) has one estimate: CFG++ then steps along it.
    ms = MODEL_SAMPLINGS["eps"]
    sigmas = loop_sigmas(ms, "normal", "euler", 5, 1.0)
    x = start(ms, sigmas)

    def plain(x, sigma):
        return exact_denoised(ms, x, sigma, 0.3)

    got = samplers.sample("euler_cfg_pp", plain, x, sigmas)
    assert rel_l2(got, samplers.sample("euler", plain, x, sigmas)) < 1e-5


def test_denoise_with_uncond_runs_both_prompts_in_one_network_call_at_cfg_1(
    tiny_pipe, record
) -> None:
    family = detect_family(tiny_pipe)
    ms = family.model_sampling(tiny_pipe)
    encoder = sw.conditioning.PromptEncoder(tiny_pipe)
    red, blurry = encoder.encode("a red circle"), encoder.encode("blurry")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0, 3.0])
    both = CFGDenoiser(tiny_pipe.unet, ms, [red, red], [blurry, blurry], [1.0, 1.0], family=family)
    unet = record(tiny_pipe.unet)
    denoised, uncond = both.denoise_with_uncond(x, sigma)
    assert len(unet) == 1 and both.calls == 1
    assert unet.calls[0][0][0].shape[0] == 4  # negatives and positives together
    # uncond is the negative prompt's own estimate, the guided one the positive's (cfg 1)
    ones = [1.0, 1.0]
    negative_only = CFGDenoiser(tiny_pipe.unet, ms, [blurry] * 2, [blurry] * 2, ones, family=family)
    positive_only = CFGDenoiser(tiny_pipe.unet, ms, [red] * 2, [red] * 2, ones, family=family)
    torch.testing.assert_close(uncond, negative_only(x, sigma), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(denoised, positive_only(x, sigma), rtol=1e-4, atol=1e-5)
    assert rel_l2(uncond, denoised) > 1e-3
    assert unet.calls[-1][0][0].shape[0] == 2  # a plain call at cfg 1 still skips the negatives


# ------------------------------------------------------------------------------------------
# noise sources
# ------------------------------------------------------------------------------------------


def test_a_device_tree_on_the_cpu_is_the_cpu_tree() -> None:
    x = torch.zeros(1, 4, 4, 4)
    lo, hi = torch.tensor(0.03), torch.tensor(14.6)
    cpu = samplers.BrownianTreeNoiseSampler(x, lo, hi, seed=3, cpu=True)
    device = samplers.BrownianTreeNoiseSampler(x, lo, hi, seed=3, cpu=False)
    for a, b in ((14.6, 5.0), (5.0, 0.5), (0.5, 0.03)):
        torch.testing.assert_close(
            cpu(torch.tensor(a), torch.tensor(b)), device(torch.tensor(a), torch.tensor(b))
        )


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n.endswith("_gpu")])
def test_gpu_variants_equal_their_plain_sampler_on_the_cpu(name: str) -> None:
    ms = MODEL_SAMPLINGS["flow"]
    sigmas = loop_sigmas(ms, "simple", name, 5, 1.0)
    x = start(ms, sigmas)
    got = samplers.sample(name, StandIn(ms), x, sigmas, seed=12)
    want = samplers.sample(name.removesuffix("_gpu"), StandIn(ms), x, sigmas, seed=12)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------
# the engine: a 2-loop sequence and a branch without changes, on SD and Flux
# ------------------------------------------------------------------------------------------

FAST_ENGINE = {
    "euler_cfg_pp",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_3m_sde_gpu",
    "heunpp2",
    "er_sde",
    "sa_solver_pece",
}


@pytest.fixture(scope="module")
def engines():
    return {
        "sd": sw.SequenceSampler(sw.testing.tiny_pipeline("sd", seed=0)),
        "flux": sw.SequenceSampler(sw.testing.tiny_pipeline("flux", seed=0)),
    }


@pytest.mark.parametrize("family", ["sd", "flux"])
@pytest.mark.parametrize(
    "name",
    [n if n in FAST_ENGINE else pytest.param(n, marks=pytest.mark.slow) for n in SAMPLERS],
)
def test_every_sampler_runs_a_sequence_and_a_branch_reproduces_it(engines, name, family):
    engine = engines[family]
    params = sw.SequenceParams(
        steps=3,
        sequence_loop_count=2,
        cfg=2.5,
        denoise_seq=0.6,
        sampler_name=name,
        positive_seq="0: a red circle",
        negative_seq="0: blurry",
    )
    calls = engine.unet_calls
    frames = list(engine.frames(params))
    spec = SAMPLER_SPECS_BY_NAME[name]
    expected = [spec.loop_calls(f.steps, to_zero=f.sigmas[-1] == 0) for f in frames]
    if None in expected:  # dpm_adaptive chooses its own number of calls: at least one a loop
        assert engine.unet_calls - calls >= len(frames)
    else:
        assert engine.unet_calls - calls == sum(expected)
    assert all(torch.isfinite(f.latent).all() for f in frames)
    again = next(engine.frames(params, start=1, previous=frames[0].latent))
    assert rel_l2(again.latent, frames[1].latent) < 1e-5
    # two branches in one batch: each draws its own noise and equals the run alone
    batch = next(engine.frames_batch([params, params], start=1, previous=frames[0].latent))
    for frame in batch:
        assert rel_l2(frame.latent, frames[1].latent) < 1e-4


@pytest.mark.slow
def test_the_samplers_benchmark_counts_what_the_specs_say(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import bench_samplers

    names = ["heunpp2", "sa_solver_pece", "euler_cfg_pp"]
    result = bench_samplers.main(
        ["--model", "tiny-random", "--loops", "2", "--steps", "3", "--repeats", "1"]
        + ["--samplers", *names, "--json", str(tmp_path / "s.json")]
    )
    assert list(result["samplers"]) == names
    for name in names:
        # loop 0 runs the full 3 steps to 0, loop 1 the last 3 of a 6-step schedule (denoise 0.5)
        calls = SAMPLER_SPECS_BY_NAME[name].loop_calls(3, to_zero=True)
        assert result["samplers"][name]["model_calls_per_loop"] == calls
    assert (tmp_path / "s.json").exists()
