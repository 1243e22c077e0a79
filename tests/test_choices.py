"""The name registries in seqwidgets.choices agree with the code that acts on the names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqwidgets import choices, samplers
from seqwidgets.choices import SAMPLER_SPECS, SAMPLERS
from seqwidgets.interp import LATENT_INTERPOLATIONS
from seqwidgets.params import PARAM_SPECS, SequenceParams
from seqwidgets.plan import prompt_chains
from seqwidgets.schedules import ModelSampling, calculate_sigmas, loop_sigmas

pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

MS = ModelSampling.from_config(
    {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
)
SIGMAS = torch.tensor([3.0, 2.0, 1.0])  # no step to 0: every sampler takes its full steps


def elementwise_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """An exact Gaussian-data denoiser, item by item (a batch is its items side by side)."""
    k = (0.25 / (0.25 + sigma**2)).view(-1, *([1] * (x.ndim - 1)))
    return 0.1 + k * (x - 0.1)


elementwise_model.model_sampling = MS  # sample_lcm re-noises with it


def test_registry_is_consistent() -> None:
    names = [spec.name for spec in SAMPLER_SPECS]
    assert len(set(names)) == len(names)
    assert tuple(names) == SAMPLERS
    assert set(choices.SAMPLER_SPECS_BY_NAME) == set(SAMPLERS)
    assert all(spec.noise in choices.NOISE_KINDS for spec in SAMPLER_SPECS)
    assert choices.ANCESTRAL_SAMPLERS.isdisjoint(choices.SDE_SAMPLERS)


@pytest.mark.parametrize("spec", SAMPLER_SPECS, ids=lambda spec: spec.name)
def test_every_spec_resolves_to_its_sampler_function(spec: choices.SamplerSpec) -> None:
    fn = getattr(samplers, spec.function)
    assert callable(fn)
    assert samplers.SAMPLER_FUNCTIONS[spec.name] is fn


@pytest.mark.parametrize("spec", SAMPLER_SPECS, ids=lambda spec: spec.name)
def test_noise_kind_is_what_the_function_draws(
    spec: choices.SamplerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real_default, real_tree = samplers.default_noise_sampler, samplers.BrownianTreeNoiseSampler

    def default(*args, **kwargs):
        built.append("gaussian")
        return real_default(*args, **kwargs)

    def tree(*args, **kwargs):
        built.append("brownian")
        return real_tree(*args, **kwargs)

    monkeypatch.setattr(samplers, "default_noise_sampler", default)
    monkeypatch.setattr(samplers, "BrownianTreeNoiseSampler", tree)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    samplers.sample(spec.name, elementwise_model, x, SIGMAS, seed=1)
    assert built == ([] if spec.noise == "none" else [spec.noise])


@pytest.mark.parametrize("spec", SAMPLER_SPECS, ids=lambda spec: spec.name)
def test_model_calls_per_step(spec: choices.SamplerSpec) -> None:
    if spec.model_calls is None:
        pytest.skip("walks its own sigma grid: tests/test_dpm_solver.py counts its calls")
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return elementwise_model(x, sigma)

    model.model_sampling = MS
    samplers.sample(spec.name, model, torch.ones(1, 1, 2, 2), SIGMAS, seed=0)
    assert len(calls) == spec.loop_calls(len(SIGMAS) - 1, to_zero=False)
    calls.clear()
    to_zero = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0])
    samplers.sample(spec.name, model, torch.ones(1, 1, 2, 2), to_zero, seed=0)
    assert len(calls) == spec.loop_calls(len(to_zero) - 1, to_zero=True)


@pytest.mark.parametrize("spec", SAMPLER_SPECS, ids=lambda spec: spec.name)
def test_batched_items_draw_the_noise_of_their_own_seed(spec: choices.SamplerSpec) -> None:
    # What batched branches rely on: item i of a batch run equals a run of item i alone with its
    # seed. A sampler filed under the wrong noise kind gets the wrong kind of source and fails.
    sigmas = loop_sigmas(MS, "karras", spec.name, 4, 0.7)
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    seeds = [7, 8]
    noise = samplers.batch_noise_sampler(spec.name, x, sigmas, seeds)
    batch = samplers.sample(spec.name, elementwise_model, x, sigmas, noise_sampler=noise)
    for i, seed in enumerate(seeds):
        alone = samplers.sample(spec.name, elementwise_model, x[i : i + 1], sigmas, seed=seed)
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", SAMPLER_SPECS, ids=lambda spec: spec.name)
def test_discard_penultimate(spec: choices.SamplerSpec) -> None:
    got = loop_sigmas(MS, "normal", spec.name, 5, 1.0)
    plain = calculate_sigmas(MS, "normal", 5)
    assert len(got) == 6
    assert torch.equal(got, plain) != spec.discard_penultimate


def test_other_name_lists_are_the_ones_the_code_uses() -> None:
    assert tuple(LATENT_INTERPOLATIONS) == choices.LATENT_INTERPOLATION_MODES
    specs = PARAM_SPECS
    assert specs["sampler_name"].choices == SAMPLERS
    assert specs["scheduler"].choices == choices.SCHEDULERS
    assert specs["latent_interpolation_mode"].choices == choices.LATENT_INTERPOLATION_MODES
    assert specs["keyframe_interpolation"].choices == choices.KEYFRAME_INTERPOLATIONS
    for name in choices.KEYFRAME_INTERPOLATIONS:
        assert len(prompt_chains([(0, "a"), (2, "b")], 3, interpolation=name)) == 3
    for name in choices.SCHEDULERS:
        assert SequenceParams(scheduler=name).scheduler == name
    with pytest.raises(ValueError, match="unknown sampler_name 'nope'; supported: euler, "):
        choices.check_sampler("nope")


def test_samplers_markdown_lists_every_sampler() -> None:
    table = choices.samplers_markdown().splitlines()
    assert len(table) == 2 + len(SAMPLERS)
    for spec, row in zip(SAMPLER_SPECS, table[2:], strict=True):
        calls = "own grid" if spec.model_calls is None else spec.model_calls
        assert row.startswith(f"| `{spec.name}` | {calls} | {spec.noise} |")
        assert row.endswith(f" | {spec.group} |")


def test_choices_module_needs_no_torch() -> None:
    # Load the file on its own (the package root imports torch for other reasons).
    path = Path(choices.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('choices_alone', {str(path)!r})\n"
        "module = sys.modules['choices_alone'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.SAMPLERS and 'torch' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_docs_name_every_sampler_scheduler_and_family() -> None:
    from seqwidgets.families import FAMILIES

    docs = Path(choices.__file__).parents[1] / "docs"
    reference = (docs / "reference.md").read_text(encoding="utf-8")
    for name in (*SAMPLERS, *choices.SCHEDULERS):
        assert f"`{name}`" in reference, name
    families = (docs / "how_a_run_works.md").read_text(encoding="utf-8")
    for name in FAMILIES:
        assert f"`{name}`" in families, name
