"""LoRA through the engine: tiny adapters made with peft on the tiny pipelines, loaded offline."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from test_families import diffusers_one_step, engine_one_step

import seqwidgets as sw
from seqwidgets.families import detect_family
from seqwidgets.models import lora_adapters
from seqwidgets.testing import tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

KINDS = ("sd", "sdxl", "sd3", "flux")
PARAMS = dict(positive_seq="0: a red circle", steps=2, sequence_loop_count=2, cfg=2.0)


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory):
    """One saved LoRA per family: random, non-zero rank-2 adapters on the attention projections."""
    folders = {}
    for kind in KINDS:
        pipe = tiny_pipeline(kind)
        family = detect_family(pipe)
        network = family.denoiser_network(pipe)
        torch.manual_seed(1)
        config = LoraConfig(
            r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False
        )
        network.add_adapter(config)
        layers = {f"{family.network}_lora_layers": get_peft_model_state_dict(network)}
        folder = tmp_path_factory.mktemp(f"lora-{kind}")
        type(pipe).save_lora_weights(folder, safe_serialization=True, **layers)
        folders[kind] = folder
    return folders


def run(pipe) -> torch.Tensor:
    return sw.SequenceSampler(pipe).sample(sw.SequenceParams(**PARAMS))


@pytest.mark.parametrize("kind", KINDS)
def test_lora_changes_the_result_and_scale_zero_restores_it(lora_dirs, kind):
    base = run(tiny_pipeline(kind))
    pipe = sw.load_pipeline(tiny_pipeline(kind), device="cpu", lora=[(lora_dirs[kind], 0.8)])
    assert lora_adapters(pipe) == [("lora_0", str(lora_dirs[kind]), 0.8)]
    with_lora = run(pipe)
    assert float((with_lora - base).abs().max()) > 1e-3
    pipe.set_adapters(["lora_0"], adapter_weights=[0.0])
    assert torch.equal(run(pipe), base)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_lora_one_step_equals_diffusers_with_the_same_adapter(lora_dirs, kind):
    pipe = sw.load_pipeline(tiny_pipeline(kind), device="cpu", lora=[(lora_dirs[kind], 0.7)])
    frame = engine_one_step(pipe)
    torch.testing.assert_close(
        frame.latent, diffusers_one_step(pipe, frame.seed), rtol=1e-4, atol=1e-5
    )
    base = engine_one_step(tiny_pipeline(kind))
    assert float((frame.latent - base.latent).abs().max()) > 1e-4


def test_two_adapters_and_bad_lora_arguments(lora_dirs, tmp_path):
    pipe = sw.load_pipeline(
        tiny_pipeline("sd3"),
        device="cpu",
        lora=[(lora_dirs["sd3"], 0.5), (lora_dirs["sd3"], 0.5)],
    )
    assert [name for name, _, _ in lora_adapters(pipe)] == ["lora_0", "lora_1"]
    one = sw.load_pipeline(tiny_pipeline("sd3"), device="cpu", lora=[(lora_dirs["sd3"], 1.0)])
    torch.testing.assert_close(run(pipe), run(one), rtol=1e-4, atol=1e-5)  # 0.5 + 0.5 == 1
    with pytest.raises(ValueError, match=r"lora\[0\] must be a \(path_or_hub_id, scale\) pair"):
        sw.load_pipeline(tiny_pipeline("sd"), device="cpu", lora=["just/a/path"])
    with pytest.raises(ValueError, match=r"lora\[0\]: scale must be a number"):
        sw.load_pipeline(tiny_pipeline("sd"), device="cpu", lora=[(lora_dirs["sd"], "1")])
    with pytest.raises(FileNotFoundError, match=r"lora\[0\] '.*missing': no such file or folder"):
        sw.load_pipeline(tiny_pipeline("sd"), device="cpu", lora=[(tmp_path / "missing", 1.0)])


@pytest.mark.parametrize("source", ["./no_such_lora", "~/no_such.safetensors", "/no/such/lora"])
def test_a_lora_path_that_does_not_exist_is_file_not_found_naming_it(source, capsys):
    with pytest.raises(FileNotFoundError) as error:
        sw.load_pipeline(tiny_pipeline("sd"), device="cpu", lora=[(source, 1.0)])
    assert str(error.value) == f"lora[0] {source!r}: no such file or folder"


@pytest.mark.parametrize(
    ("kind", "made_for", "theirs"),
    [
        ("sd", "sd3", "Stable Diffusion 3"),
        ("sd", "flux", "Flux"),
        ("sd", "sdxl", "a UNet model with cross-attention width 64"),
        ("sdxl", "sd", "a UNet model with cross-attention width 32"),
        ("sd3", "flux", "Flux"),
        ("sd3", "sd", "a UNet model with cross-attention width 32"),
        ("flux", "sd3", "Stable Diffusion 3"),
        ("flux", "sdxl", "a UNet model with cross-attention width 64"),
    ],
)
def test_a_lora_of_another_family_names_both_families_in_one_line(
    lora_dirs, capfd, kind, made_for, theirs
):
    pipe = tiny_pipeline(kind)
    with pytest.raises(ValueError) as error:
        sw.load_pipeline(pipe, device="cpu", lora=[(lora_dirs[made_for], 1.0)])
    message = str(error.value)
    ours = detect_family(pipe).label
    assert f"a LoRA for {theirs}, but this pipeline is {ours}" in message
    assert "\n" not in message and "size mismatch" not in message
    assert "size mismatch" not in capfd.readouterr().err  # no state-dict dump in the log either
    assert lora_adapters(pipe) == []


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), float("-inf")])
def test_a_lora_scale_that_is_not_finite_is_refused_naming_it(lora_dirs, scale):
    with pytest.raises(ValueError, match=r"lora\[0\]: scale must be a finite number, got"):
        sw.load_pipeline(tiny_pipeline("sd"), device="cpu", lora=[(lora_dirs["sd"], scale)])


def test_a_session_records_its_adapters_and_warns_when_loaded_without_them(lora_dirs, tmp_path):
    pipe = sw.load_pipeline(tiny_pipeline("sd3"), device="cpu", lora=[(lora_dirs["sd3"], 0.8)])
    session = sw.Session(pipe)
    session.run(sw.SequenceParams(**PARAMS))
    path = session.save(tmp_path / "with-lora.safetensors")
    with pytest.warns(UserWarning, match=r"LoRA adapters \['.*lora-sd3.* @ 0.8'\]"):
        sw.Session.load(path, tiny_pipeline("sd3"))
    # Onto the same adapters: no warning about them.
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sw.Session.load(path, pipe)
    assert not [w for w in caught if "LoRA" in str(w.message)]
