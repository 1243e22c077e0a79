"""Big models on small cards: offload, quantize, a GGUF transformer, text encoders parked on the
CPU, the memory estimates, and the same options in the CLI and the studio launcher.

GGUF and torchao run for real on the CPU on tiny pipelines saved to a folder. bitsandbytes and
offload need a GPU: here only their checks and the configs handed to diffusers are tested.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

import seqwidgets as sw
from seqwidgets import cli
from seqwidgets.device import (
    BYTES_PER_WEIGHT,
    CARD_SIZES,
    MODEL_SIZES,
    RUN_HEADROOM,
    fitting_settings,
    module_device,
    weight_memory,
    weight_memory_table,
)
from seqwidgets.families import FAMILIES, detect_family
from seqwidgets.offload import TextEncoderParking, execution_device, free_text_encoders
from seqwidgets.quantize import (
    QUANT_EXTRA,
    family_from_index,
    quantization_config,
    quantize_components,
)
from seqwidgets.testing import tiny_pipeline

CPU = torch.device("cpu")
PARAMS = dict(sequence_loop_count=1, steps=2, width=64, height=64, seed=3, cfg=2.0)


def _one_loop(pipe, prompts="0: a red circle") -> torch.Tensor:
    params = sw.SequenceParams(positive_seq=prompts, **PARAMS)
    return next(iter(sw.SequenceSampler(pipe).frames(params))).latent


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def zimage_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zimage")
    tiny_pipeline("zimage").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux")
    tiny_pipeline("flux").save_pretrained(folder)
    return folder


# -- option checks: one line, before anything loads --------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_offload_needs_an_accelerator():
    with pytest.raises(ValueError) as error:
        sw.load_pipeline("tiny-random", device="cpu", offload="model")
    text = _one_line(error)
    assert text.startswith("offload 'model': moves weights between the CPU and an accelerator")
    assert "the CPU" in text


@pytest.mark.parametrize(
    ("options", "starts"),
    [
        (dict(offload="layers"), "offload: 'layers' is not one of None, 'model', 'sequential'"),
        (dict(quantize="2bit"), "quantize: '2bit' is not one of None, '4bit', '8bit'"),
        (dict(quantize="4bit"), "quantize '4bit': needs a CUDA GPU (bitsandbytes)"),
        (dict(quantize="8bit"), "quantize: applies as weights load from a hub id or folder"),
        (dict(offload="model", free_text_encoders=True), "free_text_encoders: offload 'model'"),
    ],
)
def test_bad_options_are_one_line_value_errors(options, starts):
    with pytest.raises(ValueError) as error:
        sw.load_pipeline("tiny-random", device="cpu", **options)
    assert _one_line(error).startswith(starts)


def test_transformer_file_is_checked(tmp_path, flux_folder):
    with pytest.raises(FileNotFoundError) as error:
        sw.load_pipeline(flux_folder, device="cpu", transformer_file=tmp_path / "none.gguf")
    assert _one_line(error).endswith("none.gguf': no such file")
    text_file = tmp_path / "model.txt"
    text_file.write_text("x")
    with pytest.raises(ValueError) as error:
        sw.load_pipeline(flux_folder, device="cpu", transformer_file=text_file)
    assert "expected a .gguf or .safetensors file" in _one_line(error)


def test_a_gguf_for_another_model_is_one_line(tmp_path, flux_folder, zimage_folder):
    pytest.importorskip("gguf")
    path = tmp_path / "zimage.gguf"
    _write_zimage_gguf(tiny_pipeline("zimage").transformer, path)
    with pytest.raises(ValueError) as error:
        sw.load_pipeline(flux_folder, device="cpu", transformer_file=path)
    assert "does not fit" in _one_line(error)


# -- missing optional packages name the extra ---------------------------------------------------


@pytest.mark.parametrize("package", ["gguf", "torchao"])
def test_a_missing_package_names_the_extra(monkeypatch, tmp_path, zimage_folder, package):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails
    gguf_file = tmp_path / "t.gguf"
    gguf_file.write_bytes(b"GGUF")
    options = dict(transformer_file=gguf_file) if package == "gguf" else dict(quantize="8bit")
    with pytest.raises(ImportError) as error:
        sw.load_pipeline(zimage_folder, device="cpu", **options)
    text = _one_line(error)
    assert f"'{package}'" in text and text.endswith(QUANT_EXTRA)


def test_bitsandbytes_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ImportError) as error:
        quantization_config(("transformer",), "4bit", torch.device("cuda"), torch.bfloat16)
    assert _one_line(error).endswith(QUANT_EXTRA) and "'bitsandbytes'" in str(error.value)


def test_the_cli_says_a_missing_package_in_one_line(monkeypatch, tmp_path, flux_folder, capsys):
    monkeypatch.setitem(sys.modules, "torchao", None)
    code = cli.main(
        ["render", "--model", str(flux_folder), "--quantize", "8bit", "--device", "cpu"]
        + ["--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.endswith(QUANT_EXTRA)
    assert not (tmp_path / "out").exists()


# -- GGUF: a ComfyUI-layout Z-Image transformer, Q8_0, loaded for real --------------------------


def _comfy_zimage_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The transformer's weights in the original (ComfyUI / city96) layout: fused qkv and the
    original names, the inverse of diffusers' ``convert_z_image_transformer_checkpoint...``."""
    state = transformer.state_dict()
    renames = {
        "all_final_layer.2-1.": "final_layer.",
        "all_x_embedder.2-1.": "x_embedder.",
        ".attention.to_out.0.": ".attention.out.",
        ".attention.norm_q.": ".attention.q_norm.",
        ".attention.norm_k.": ".attention.k_norm.",
    }
    original = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue  # fused into qkv with to_q
        if ".attention.to_q." in key:
            parts = [state[key.replace("to_q", name)] for name in ("to_q", "to_k", "to_v")]
            original[key.replace(".to_q.", ".qkv.")] = torch.cat(parts)
            continue
        for old, new in renames.items():
            key = key.replace(old, new)
        original[key] = value
    return original


def _write_zimage_gguf(transformer, path) -> int:
    """Write the transformer as city96's converter does: large 2-D weights in Q8_0, the rest in
    F16 / F32. Returns how many tensors are Q8_0."""
    import gguf
    import numpy as np

    kinds = gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(str(path), "lumina2")
    quantized = 0
    for key, value in _comfy_zimage_state_dict(transformer).items():
        array = value.float().numpy()
        large = array.ndim == 2 and array.shape[-1] % 32 == 0 and array.size > 1024
        if key.endswith(".weight") and large:
            writer.add_tensor(key, gguf.quants.quantize(array, kinds.Q8_0), raw_dtype=kinds.Q8_0)
            quantized += 1
            continue
        if array.ndim >= 2:
            writer.add_tensor(key, array.astype(np.float16), raw_dtype=kinds.F16)
        else:
            writer.add_tensor(key, array, raw_dtype=kinds.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantized


def test_a_gguf_transformer_runs_close_to_fp32(tmp_path, zimage_folder):
    pytest.importorskip("gguf")
    from diffusers.quantizers.gguf.utils import GGUFParameter

    reference = sw.load_pipeline(zimage_folder, device="cpu")
    path = tmp_path / "z_image_turbo-Q8_0.gguf"
    assert _write_zimage_gguf(reference.transformer, path) >= 5
    pipe = sw.load_pipeline(zimage_folder, device="cpu", transformer_file=path)
    assert detect_family(pipe).name == "z-image"
    quantized = [p for p in pipe.transformer.parameters() if isinstance(p, GGUFParameter)]
    assert len(quantized) >= 5  # the weights stay Q8_0 in memory
    # The rest of the pipeline is the folder's.
    for a, b in zip(
        pipe.text_encoder.parameters(), reference.text_encoder.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    ours, fp32 = _one_loop(pipe), _one_loop(reference)
    assert 0 < _relative(ours, fp32) < 0.02  # quantized (not the same), and close


def test_a_safetensors_transformer_in_comfyui_layout_is_the_same_model(tmp_path, zimage_folder):
    from safetensors.torch import save_file

    reference = sw.load_pipeline(zimage_folder, device="cpu")
    state = _comfy_zimage_state_dict(reference.transformer)
    path = tmp_path / "z_image_turbo_bf16.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in state.items()}, path)
    pipe = sw.load_pipeline(zimage_folder, device="cpu", transformer_file=path)
    assert torch.equal(_one_loop(pipe), _one_loop(reference))


# -- torchao int8 weight-only on the CPU -----------------------------------------------------------


def test_quantize_8bit_on_the_cpu_uses_torchao_and_runs_close(flux_folder):
    pytest.importorskip("torchao")
    reference = sw.load_pipeline(flux_folder, device="cpu")
    pipe = sw.load_pipeline(flux_folder, device="cpu", quantize="8bit")

    def weight_kinds(module) -> set[str]:
        return {type(m.weight).__name__ for m in module.modules() if isinstance(m, torch.nn.Linear)}

    assert weight_kinds(pipe.transformer) == {"Int8Tensor"}
    assert weight_kinds(pipe.text_encoder_2) == {"Int8Tensor"}  # T5: quantized
    assert weight_kinds(pipe.text_encoder) == {"Parameter"}  # CLIP: small, left as is
    ours, fp32 = _one_loop(pipe), _one_loop(reference)
    assert 0 < _relative(ours, fp32) < 0.02


# -- what quantize hands diffusers on CUDA ---------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_quantizes_its_network_and_large_text_encoders(family):
    components = quantize_components(FAMILIES[family])
    assert components[0] == FAMILIES[family].network
    pipe_kind = {
        "sd-v": "sd",
        "flux-dev": "flux",
        "flux-schnell": "flux",
        "flux2": "flux2",
        "flux2-klein": "flux2",
        "z-image": "zimage",
    }.get(family, family)
    pipe = tiny_pipeline(pipe_kind)
    for name in components:  # every name is a component of the family's pipelines
        assert isinstance(getattr(pipe, name), torch.nn.Module)
    for name in components[1:]:  # and none is a CLIP
        assert "CLIP" not in type(getattr(pipe, name)).__name__


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_cuda_quantization_is_bitsandbytes_per_component(quantize):
    pytest.importorskip("bitsandbytes")  # transformers' config checks its version
    import diffusers
    import transformers

    config = quantization_config(
        ("transformer", "text_encoder_2"), quantize, torch.device("cuda"), torch.bfloat16
    )
    network, text = config.quant_mapping["transformer"], config.quant_mapping["text_encoder_2"]
    assert isinstance(network, diffusers.BitsAndBytesConfig)
    assert isinstance(text, transformers.BitsAndBytesConfig)
    for item in (network, text):
        assert item.load_in_4bit == (quantize == "4bit")
        assert item.load_in_8bit == (quantize == "8bit")
    if quantize == "4bit":
        assert network.bnb_4bit_quant_type == "nf4"
        assert network.bnb_4bit_compute_dtype == torch.bfloat16


def test_the_family_is_read_from_model_index(flux_folder, zimage_folder):
    for folder, name in ((flux_folder, "flux-dev"), (zimage_folder, "z-image")):
        index = json.loads((folder / "model_index.json").read_text())
        assert family_from_index(index).name == name
    with pytest.raises(ValueError, match="none seqwidgets knows"):
        family_from_index({"transformer": ["diffusers", "WanTransformer3DModel"]})


# -- text encoders parked on the CPU ---------------------------------------------------------------


class _Moves:
    """Records each text-encoder move instead of making it (this machine has no accelerator)."""

    def __init__(self):
        self.log: list[str] = []

    def __call__(self, module, device) -> None:
        self.log.append(torch.device(device).type)


def test_text_encoders_leave_after_encoding_and_come_back_for_a_new_prompt(monkeypatch):
    moves = _Moves()
    monkeypatch.setattr("seqwidgets.offload._move", moves)
    pipe = tiny_pipeline("flux")
    calls = []
    pipe.text_encoder_2.register_forward_hook(lambda *_: calls.append(1))
    parking = TextEncoderParking(pipe, torch.device("cuda"))
    pipe.seqwidgets_text_encoder_parking = parking  # as free_text_encoders does on a GPU
    assert parking.names == ["text_encoder", "text_encoder_2"]
    assert moves.log == ["cpu", "cpu"] and not parking.resident  # parked from the start

    sampler = sw.SequenceSampler(pipe)
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n2: a blue square",
        **{**PARAMS, "sequence_loop_count": 4},
    )
    list(sampler.frames(params))
    # Three prompts (two keyframes and the empty negative): each encoded once, and the encoders
    # brought in for loop 0's pair and loop 2's new keyframe only, parked after each.
    assert len(calls) == 3 and sampler.encoder.encoded == 3
    assert (parking.moves_in, parking.moves_out) == (2, 3)
    assert not parking.resident

    list(sampler.frames(params))  # the same prompts again: nothing moves
    assert (parking.moves_in, parking.moves_out) == (2, 3) and len(calls) == 3

    params = sw.SequenceParams(positive_seq="0: a green triangle", **PARAMS)
    list(sampler.frames(params))
    assert (parking.moves_in, parking.moves_out) == (3, 4) and len(calls) == 4
    assert moves.log[-4:] == ["cuda", "cuda", "cpu", "cpu"]

    parking.remove()  # back for good: the network no longer parks them
    assert parking.resident and not hasattr(pipe, "seqwidgets_text_encoder_parking")
    list(sampler.frames(sw.SequenceParams(positive_seq="0: a grey cube", **PARAMS)))
    assert (parking.moves_in, parking.moves_out) == (4, 4) and parking.resident


def test_free_text_encoders_changes_nothing_on_the_cpu():
    pipe = sw.load_pipeline("tiny-random-flux", device="cpu", free_text_encoders=True)
    assert free_text_encoders(pipe) is None
    assert not hasattr(pipe, "seqwidgets_text_encoder_parking")
    plain = sw.load_pipeline("tiny-random-flux", device="cpu")
    assert torch.equal(_one_loop(pipe), _one_loop(plain))


def test_execution_device_follows_the_offload_hooks():
    pytest.importorskip("accelerate")
    pipe = tiny_pipeline("flux")
    pipe.enable_model_cpu_offload(device="cpu")  # the hooks, with the CPU as the "accelerator"
    assert execution_device(pipe) == torch.device("cpu", 0)  # the hooks' device, not the weights'
    assert module_device(pipe.vae) == torch.device("cpu", 0)
    assert execution_device(tiny_pipeline("flux")) == CPU
    # A run goes through diffusers' hooks: the same frame as without them.
    assert torch.equal(_one_loop(pipe), _one_loop(tiny_pipeline("flux")))


def test_the_engine_computes_where_the_offload_hooks_do():
    pytest.importorskip("accelerate")
    pipe = tiny_pipeline("flux")
    pipe.enable_model_cpu_offload(device="cpu")
    assert sw.SequenceSampler(pipe).device == execution_device(pipe)


def test_quantized_text_encoders_are_not_parked(monkeypatch, flux_folder):
    pytest.importorskip("torchao")
    moves = _Moves()
    monkeypatch.setattr("seqwidgets.offload._move", moves)
    pipe = sw.load_pipeline(flux_folder, device="cpu", quantize="8bit")
    parking = TextEncoderParking(pipe, torch.device("cuda"))
    assert parking.names == ["text_encoder"]  # T5 is int8: it stays where it is
    assert moves.log == ["cpu"]


# -- memory estimates ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODEL_SIZES))
def test_weight_memory_orders_the_settings(model):
    bf16 = weight_memory(model)
    eight, four = weight_memory(model, quantize="8bit"), weight_memory(model, quantize="4bit")
    assert four < eight < bf16
    total = sum(b for b, _ in MODEL_SIZES[model].components.values()) * 1e9
    assert bf16 == pytest.approx(total * BYTES_PER_WEIGHT["bf16"], rel=1e-6)
    for quantize in (None, "8bit", "4bit"):
        plain = weight_memory(model, quantize=quantize)
        model_offload = weight_memory(model, quantize=quantize, offload="model")
        sequential = weight_memory(model, quantize=quantize, offload="sequential")
        assert sequential < model_offload < plain


@pytest.mark.parametrize("model", sorted(MODEL_SIZES))
def test_the_estimate_quantizes_what_load_pipeline_quantizes(model):
    size = MODEL_SIZES[model]
    assert size.quantized() == quantize_components(FAMILIES[size.family])


def test_fitting_settings_follow_the_card_size():
    for model in MODEL_SIZES:
        previous: list[str] = []
        for gb in (8, *CARD_SIZES, 80):
            fits = fitting_settings(model, gb)
            assert set(previous) <= set(fits)  # a larger card fits all a smaller one does
            for setting in fits:
                dtype, _, offload = setting.partition(" + ")
                quantize = dtype if dtype in ("8bit", "4bit") else None
                need = weight_memory(
                    model, quantize=quantize, offload=offload.split()[0] if offload else None
                )
                assert need + RUN_HEADROOM <= gb * 1e9
            previous = fits
    assert fitting_settings("FLUX.1 dev", 40)[0] == "bf16"
    assert "bf16" not in fitting_settings("FLUX.1 dev", 24)


def test_the_table_has_a_row_per_model_and_a_column_per_card():
    lines = weight_memory_table().splitlines()
    assert len(lines) == 2 + len(MODEL_SIZES)
    assert all(line.count("|") == 10 for line in lines)
    flux = next(line for line in lines if line.startswith("| FLUX.1 dev"))
    assert flux.endswith("| bf16, 8bit, 4bit |")


def test_weight_memory_refuses_unknown_names():
    with pytest.raises(ValueError, match="model: 'SD 9'"):
        weight_memory("SD 9")
    with pytest.raises(ValueError, match="quantize: '3bit'"):
        weight_memory("SD 1.5", quantize="3bit")


# -- the CLI and the studio launcher ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--offload", "model", "--device", "cpu"], "--offload 'model': moves weights"),
        (["--quantize", "4bit", "--device", "cpu"], "--quantize '4bit': needs a CUDA GPU"),
        (["--quantize", "8bit"], "--quantize: applies as weights load from a hub id or folder"),
        (["--transformer-file", "no.gguf", "--model", "a/b"], "--transformer-file 'no.gguf'"),
    ],
)
def test_the_cli_checks_big_model_flags_before_loading(tmp_path, capsys, flags, says):
    code = cli.main(["render", *flags, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"seqwidgets render: error: {says}") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_an_unknown_offload(capsys):
    with pytest.raises(SystemExit):
        cli.main(["render", "--offload", "everything"])
    assert "invalid choice: 'everything'" in capsys.readouterr().err


def test_the_cli_renders_with_a_gguf_transformer(tmp_path, zimage_folder):
    pytest.importorskip("gguf")
    path = tmp_path / "z.gguf"
    _write_zimage_gguf(tiny_pipeline("zimage").transformer, path)
    out = tmp_path / "out"
    code = cli.main(
        ["render", "--model", str(zimage_folder), "--transformer-file", str(path)]
        + ["--device", "cpu", "--loops", "1", "--steps", "1", "--width", "64", "--height", "64"]
        + ["--out", str(out), "--quiet"]
    )
    assert code == 0 and (out / "loop_0000.png").is_file()


def test_the_studio_notebook_loads_with_the_options(tmp_path, flux_folder, capsys):
    pytest.importorskip("torchao")
    code = cli.main(
        ["studio", str(tmp_path / "nb"), "--model", str(flux_folder), "--quantize", "8bit"]
        + ["--free-text-encoders", "--print-command"]
    )
    assert code == 0
    notebook = json.loads((tmp_path / "nb" / "seqwidgets-studio.ipynb").read_text())
    source = "".join(notebook["cells"][1]["source"])
    assert f"sw.load_pipeline({str(flux_folder)!r}, quantize='8bit', free_text_encoders=True)" in (
        source
    )
    capsys.readouterr()


def test_the_studio_command_checks_the_options_first(tmp_path, capsys):
    code = cli.main(["studio", str(tmp_path / "nb"), "--quantize", "8bit", "--print-command"])
    assert code == 2
    assert "--quantize: applies as weights load" in capsys.readouterr().err
    assert not (tmp_path / "nb").exists()
