"""Every sampler and scheduler on ComfyUI's menus against runs recorded from ComfyUI itself.

`tests/data/comfy_menus/comfyui_a125cd8.safetensors` holds, per family (SD eps, SD v-prediction,
SD3 discrete flow, Flux) and per sampler on ComfyUI a125cd8's menu, short runs (cfg 3; the ``_cfg_pp`` ones
also at cfg 1) of ComfyUI's own KSampler
code (its sigmas with denoise, ``sampler_object``, ``KSAMPLER.sample``: noise scaling, the seed,
the post-CFG functions of the ``_cfg_pp`` samplers) over the stand-in network below, and per
scheduler ComfyUI's sigmas; its README says how it was made. Here seqwidgets' own path runs the
same stand-in: `loop_sigmas`, the model sampling's noise scaling, `samplers.sample` with the
seed, and `CFGDenoiser` (one batched call for both prompts, the unconditional estimate for the
``_cfg_pp`` samplers, the negative half skipped at cfg 1). Relative L2 must stay within
2e-3 on SD (eps and v) and 1e-4 on the flow families.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from seqwidgets import samplers
from seqwidgets.choices import SAMPLERS, SCHEDULERS
from seqwidgets.conditioning import Conditioning
from seqwidgets.denoiser import CFGDenoiser
from seqwidgets.families import FAMILIES
from seqwidgets.schedules import FlowModelSampling, ModelSampling, loop_sigmas

FIXTURE = Path(__file__).parent / "data" / "comfy_menus" / "comfyui_a125cd8.safetensors"
TOLERANCE = {"sd": 2e-3, "sd-v": 2e-3, "sd3": 1e-4, "flux": 1e-4}
FAMILY_NAMES = tuple(TOLERANCE)
SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def stand_in(channels: int, t_scale: float):
    """A small deterministic nonlinear network and its two context vectors (cond, uncond).

    ``net(x, t, context)``: the model input ``[B, C, h, w]``, the timestep the model receives
    ``[B]`` and one context vector per item ``[B, 16]`` -> the model output (eps, v or flow v).
    """
    g = torch.Generator().manual_seed(19)
    w1 = torch.randn(16, channels, 3, 3, generator=g) / (9 * channels) ** 0.5
    w2 = torch.randn(channels, 16, 1, 1, generator=g) / 4.0
    freq = torch.randn(16, generator=g) * 3.0
    contexts = {"cond": torch.randn(16, generator=g), "uncond": torch.randn(16, generator=g)}

    def net(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        emb = torch.sin(t.reshape(-1, 1) / t_scale * freq)
        h = torch.nn.functional.conv2d(x, w1, padding=1) + (emb + 0.5 * context)[:, :, None, None]
        return 0.5 * torch.nn.functional.conv2d(torch.tanh(h), w2) + 0.8 * x

    return net, contexts


class StandInNetwork:
    """The stand-in behind the calling convention `CFGDenoiser` uses for a UNet or SD3's
    transformer: the prompt's "token embeddings" are its one context vector."""

    dtype = torch.float32

    def __init__(self, net) -> None:
        self.net = net

    def __call__(self, *args, **kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        return (self.net(x, t, kwargs["encoder_hidden_states"][:, 0]),)


@cache
def fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(FIXTURE, framework="pt") as f:
        names = f.keys()  # (a safe_open handle is not iterable)
        return {key: f.get_tensor(key) for key in names}, f.metadata()


def meta(key: str):
    return json.loads(fixture()[1][key])


def model_sampling(family: str):
    if family in ("sd", "sd-v"):
        prediction = "v_prediction" if family == "sd-v" else "epsilon"
        return ModelSampling.from_config({**SD15, "prediction_type": prediction})
    if family == "sd3":
        return FlowModelSampling("discrete", shift=3.0, multiplier=1000)
    return FlowModelSampling("flux", shift=1.15)


def relative_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def run_seqwidgets(family: str, sampler_name: str, denoise: float, cfg: float | None = None):
    """One fixture's run on seqwidgets' path; returns (sigmas, result, network calls, noise)."""
    tensors, metadata = fixture()
    shape, t_scale, scheduler = meta("families")[family]
    steps, seed = int(metadata["steps"]), int(metadata["seed"])
    cfg = float(metadata["cfg"]) if cfg is None else cfg
    ms = model_sampling(family)
    sigmas = loop_sigmas(ms, scheduler, sampler_name, steps, denoise)
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    latent = torch.zeros(shape) if denoise == 1.0 else tensors[f"{family}/latent"]
    x = ms.noise_scaling(sigmas[0], noise, latent, ms.max_denoise(sigmas))
    net, contexts = stand_in(shape[1], t_scale)
    model = CFGDenoiser(
        StandInNetwork(net),
        ms,
        Conditioning(contexts["cond"].view(1, 1, -1)),
        Conditioning(contexts["uncond"].view(1, 1, -1)),
        cfg,
        # the UNet call for SD, SD3's transformer call for both flow tables (Flux's 2x2 packing
        # is a layout of the network's input, not part of what is compared here)
        family=FAMILIES["sd3" if ms.is_flow else "sd"],
    )
    out = samplers.sample(sampler_name, model, x, sigmas, seed=seed)
    return sigmas, out, model.calls, noise


CASES = [
    (family, name, denoise)
    for family in FAMILY_NAMES
    for name in meta("samplers")
    for denoise in (1.0, 0.6)
]


def test_the_fixture_is_comfyuis_whole_menu_with_this_stand_in():
    tensors, metadata = fixture()
    assert metadata["comfyui_commit"].startswith("a125cd8")
    assert len(meta("samplers")) == 42 and len(meta("schedulers")) == 9
    assert set(SCHEDULERS) == set(meta("schedulers"))
    # the network recorded is the very code above
    assert metadata["stand_in"].strip() == textwrap.dedent(inspect.getsource(stand_in)).strip()
    assert FIXTURE.stat().st_size < 1_000_000


@pytest.mark.parametrize(("family", "name", "denoise"), CASES)
def test_sampler_matches_comfyui(family, name, denoise):
    if name not in SAMPLERS:
        pytest.skip(f"sampler {name} is not in seqwidgets yet")
    tensors, _ = fixture()
    key = f"{family}/{name}/{denoise}"
    sigmas, out, calls, noise = run_seqwidgets(family, name, denoise)
    assert torch.equal(noise, tensors[f"{family}/noise"])  # ComfyUI's CPU noise
    # (read after sampling: the plan's sigmas stay untouched, unlike ComfyUI's uni_pc's)
    torch.testing.assert_close(sigmas, tensors[f"{key}/sigmas"], rtol=1e-6, atol=0)
    error = relative_l2(out, tensors[f"{key}/out"])
    assert error <= TOLERANCE[family], f"{key}: relative L2 {error:.3g}"
    assert calls == meta("model_calls")[key], f"{key}: network calls"


@pytest.mark.parametrize(
    ("family", "name"),
    [(f, n) for f in FAMILY_NAMES for n in meta("samplers") if n.endswith("_cfg_pp")],
)
def test_cfg_pp_sampler_at_cfg_1_matches_comfyui(family, name):
    # ComfyUI's _cfg_pp samplers turn the cfg1 optimisation off: at cfg 1 they still read the
    # negative prompt's estimate, so the result differs from the plain sampler's.
    if name not in SAMPLERS:
        pytest.skip(f"sampler {name} is not in seqwidgets yet")
    key = f"{family}/{name}/1.0/cfg1"
    _, out, calls, _ = run_seqwidgets(family, name, 1.0, cfg=1.0)
    error = relative_l2(out, fixture()[0][f"{key}/out"])
    assert error <= TOLERANCE[family], f"{key}: relative L2 {error:.3g}"
    assert calls == meta("model_calls")[key], f"{key}: network calls"


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("scheduler", json.loads(fixture()[1]["schedulers"]))
def test_scheduler_matches_comfyui(family, scheduler):
    if scheduler not in SCHEDULERS:
        pytest.skip(f"scheduler {scheduler} is not in seqwidgets yet")
    tensors, metadata = fixture()
    steps = int(metadata["scheduler_steps"])
    ms = model_sampling(family)
    for sampler_name in ("euler", "dpm_2"):  # dpm_2: one more step, the penultimate dropped
        for denoise in (1.0, 0.6):
            want = tensors[f"{family}/schedule/{scheduler}/{sampler_name}/{denoise}"]
            got = loop_sigmas(ms, scheduler, sampler_name, steps, denoise)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
