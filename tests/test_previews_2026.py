"""Previews of the 2026 families: ComfyUI's latent-to-RGB factors, and the tiny decoders that
diffusers' AutoencoderTiny cannot load (TAEF2 for Flux.2, TAEW2.1 for Qwen-Image's Wan 2.1
latent) from weight files with the real files' key names and shapes, falling back offline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from seqwidgets.decode import TAESDPreviewer, latent_to_rgb, make_previewer
from seqwidgets.families import FAMILIES, patchify
from seqwidgets.testing import tiny_pipeline

# -- ComfyUI's latent-to-RGB factors ----------------------------------------------------------

# comfy/latent_formats.py, copied by hand: the first and last rows and the bias of Flux and
# Wan21 at a125cd8, and of Flux2 in a later ComfyUI (32 rows, for its 128 patched channels
# reshaped to 32 at twice the size).
COMFY = {
    "Flux": ((-0.0346, 0.0244, 0.0681), (-0.1262, -0.0982, -0.0778), (-0.0329, -0.0718, -0.0851)),
    "Wan21": ((-0.1299, -0.1692, 0.2932), (0.1984, 0.0913, 0.1861), (-0.1835, -0.0868, -0.3360)),
    "Flux2": ((0.0058, 0.0113, 0.0073), (-0.0111, -0.0460, -0.0614), (-0.0329, -0.0718, -0.0851)),
}
# comfy/supported_models.py: each family's latent_format (Z-Image inherits Lumina2's)
FORMAT = {
    "chroma": ("Flux", 16),
    "hidream": ("Flux", 16),
    "lumina2": ("Flux", 16),
    "z-image": ("Flux", 16),
    "qwen-image": ("Wan21", 16),
    "flux2": ("Flux2", 32),
    "flux2-klein": ("Flux2", 32),
}


@pytest.mark.parametrize("name", list(FORMAT))
def test_each_2026_family_has_comfyuis_preview_factors(name):
    comfy, rows = FORMAT[name]
    factors, bias = FAMILIES[name].latent_rgb
    first, last, comfy_bias = COMFY[comfy]
    assert len(factors) == rows
    assert tuple(factors[0]) == first and tuple(factors[-1]) == last
    assert tuple(bias) == comfy_bias


def test_the_flux2_preview_is_comfyuis_on_its_patched_latent():
    # ComfyUI keeps Flux.2's latent as 128 channels of 2x2 patches and reshapes them to 32
    # channels at twice the size before its factors (latent_rgb_factors_reshape); seqwidgets
    # keeps the 32 channels: the preview must be the same picture.
    factors, bias = FAMILIES["flux2"].latent_rgb
    ours = torch.randn(32, 8, 8, generator=torch.Generator().manual_seed(0))
    t = patchify(ours[None])  # ComfyUI's [1, 128, 4, 4]
    comfy = t.reshape(t.shape[0], 32, 2, 2, t.shape[-2], t.shape[-1]).permute(0, 1, 4, 2, 5, 3)
    comfy = comfy.reshape(t.shape[0], 32, t.shape[-2] * 2, t.shape[-1] * 2)
    rgb = torch.nn.functional.linear(
        comfy.movedim(1, -1), torch.tensor(factors).T, torch.tensor(bias)
    )
    want = (((rgb[0] + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(latent_to_rgb(ours, factors, bias), want)


# -- the tiny decoders, from files shaped as the published ones --------------------------------


def taef2_file(path) -> None:
    """``taef2.safetensors`` with random values: AutoencoderTiny's key names
    (``decoder.layers.N``, TAESD's decoder index minus one) for TAESD's ``Decoder(32,
    use_midblock_gn=True)``: the first three blocks with a group-normalised 1x1 branch."""
    g = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    weights = {"decoder.layers.0.weight": rand(64, 32, 3, 3), "decoder.layers.0.bias": rand(64)}
    for i in (2, 3, 4, 7, 8, 9, 12, 13, 14, 17):  # blocks
        for j in (0, 2, 4):
            weights[f"decoder.layers.{i}.conv.{j}.weight"] = rand(64, 64, 3, 3)
            weights[f"decoder.layers.{i}.conv.{j}.bias"] = rand(64)
        if i in (2, 3, 4):
            weights[f"decoder.layers.{i}.pool.0.weight"] = rand(256, 64, 1, 1)
            weights[f"decoder.layers.{i}.pool.1.weight"] = 1 + rand(256)
            weights[f"decoder.layers.{i}.pool.1.bias"] = rand(256)
            weights[f"decoder.layers.{i}.pool.3.weight"] = rand(64, 256, 1, 1)
    for i in (6, 11, 16):  # convolutions after each upsampling, no bias
        weights[f"decoder.layers.{i}.weight"] = rand(64, 64, 3, 3)
    weights["decoder.layers.18.weight"] = rand(3, 64, 3, 3)
    weights["decoder.layers.18.bias"] = rand(3)
    weights["encoder.layers.0.weight"] = rand(64, 3, 3, 3)  # the encoder: not read
    save_file(weights, str(path))


def taew21_file(path) -> None:
    """``taew2_1.safetensors`` with random values: TAEHV's key names (``decoder.N``) for its
    decoder on 16 channels: memory blocks of 256, 128 and 64 features reading twice their
    width, temporal growth 1, 2, 2 (1x1 convolutions to stride x features)."""
    g = torch.Generator().manual_seed(2)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    weights = {"decoder.1.weight": rand(256, 16, 3, 3), "decoder.1.bias": rand(256)}
    for blocks, grow, conv, width, stride, out in (
        ((3, 4, 5), 7, 8, 256, 1, 128),
        ((9, 10, 11), 13, 14, 128, 2, 64),
        ((15, 16, 17), 19, 20, 64, 2, 64),
    ):
        for i in blocks:
            weights[f"decoder.{i}.conv.0.weight"] = rand(width, width * 2, 3, 3)
            weights[f"decoder.{i}.conv.0.bias"] = rand(width)
            for j in (2, 4):
                weights[f"decoder.{i}.conv.{j}.weight"] = rand(width, width, 3, 3)
                weights[f"decoder.{i}.conv.{j}.bias"] = rand(width)
        weights[f"decoder.{grow}.conv.weight"] = rand(width * stride, width, 1, 1)
        weights[f"decoder.{conv}.weight"] = rand(out, width, 3, 3)
    weights["decoder.22.weight"] = rand(3, 64, 3, 3)
    weights["decoder.22.bias"] = rand(3)
    weights["encoder.0.weight"] = rand(64, 3, 3, 3)  # the encoder: not read
    save_file(weights, str(path))


DECODERS = {  # kind -> (weights file maker, file name, latent channels)
    "flux2": (taef2_file, "taef2.safetensors", 32),
    "flux2-dev": (taef2_file, "taef2.safetensors", 32),
    "qwen-image": (taew21_file, "taew2_1.safetensors", 16),
}


@pytest.mark.parametrize("kind", list(DECODERS))
def test_the_tiny_decoder_previews_a_copy_of_the_latent_at_full_size(kind, tmp_path):
    make, name, channels = DECODERS[kind]
    make(tmp_path / name)
    pipe = tiny_pipeline(kind)
    previewer, note = make_previewer(pipe, "taesd", source=tmp_path / name)
    assert isinstance(previewer, TAESDPreviewer) and note == "TAESD preview"
    latent = torch.randn(channels, 8, 8, generator=torch.Generator().manual_seed(3))
    before = latent.clone()
    image = previewer(latent)
    assert image.size == (64, 64)  # the 8x decoder: the pipeline's 64x64 image
    assert torch.equal(latent, before)
    pixels = np.asarray(image)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0  # the weights were read: a picture
    # the decoder read the file: other weights give another picture
    other = previewer.decoder
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.05)
    assert not np.array_equal(np.asarray(previewer(latent, force=True)), pixels)


@pytest.mark.parametrize("kind", list(DECODERS))
def test_the_tiny_decoder_falls_back_to_latent_rgb_offline(kind, tmp_path, monkeypatch):
    # Nothing downloaded and no network: latent-to-RGB, with the note saying why.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    pipe = tiny_pipeline(kind)
    previewer, note = make_previewer(pipe, "taesd", local_files_only=True)
    assert note.startswith("TAESD preview unavailable (") and note.endswith("latent-to-RGB preview")
    _, _, channels = DECODERS[kind]
    assert previewer(torch.zeros(channels, 8, 8)).size == (8, 8)


def test_a_failed_download_falls_back_too(tmp_path, monkeypatch):
    # An address that cannot be reached (a closed local port) is "offline" at once.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    pipe = tiny_pipeline("qwen-image")
    source = "http://127.0.0.1:9/taew2_1.safetensors"
    previewer, note = make_previewer(pipe, "taesd", source=source)
    assert "offline: 127.0.0.1 cannot be reached" in note
    assert note.endswith("latent-to-RGB preview")
    assert previewer(torch.zeros(16, 8, 8)).size == (8, 8)
    # A host that answers but a download that fails falls back the same way.
    monkeypatch.setattr("seqwidgets.decode.host_reachable", lambda address: True)
    previewer, note = make_previewer(pipe, "taesd", source=source)
    assert "cannot download" in note and note.endswith("latent-to-RGB preview")


def test_another_decoders_weights_are_refused_in_one_line(tmp_path):
    taef2_file(tmp_path / "taef2.safetensors")
    pipe = tiny_pipeline("qwen-image")
    with pytest.raises(ValueError, match=r"^not TAEW2.1 decoder weights: [^\n]*$"):
        TAESDPreviewer.load(pipe, str(tmp_path / "taef2.safetensors"))
    previewer, note = make_previewer(pipe, "taesd", source=str(tmp_path / "taef2.safetensors"))
    assert note.startswith("TAESD preview unavailable (not TAEW2.1 decoder weights")


# -- offline: no waiting on a network that is not there ----------------------------------------


def test_an_unreachable_host_falls_back_without_trying_to_download(tmp_path, monkeypatch):
    # Offline and nothing cached: one quick connection check, never the hub client's retries.
    import seqwidgets.decode as decode
    import seqwidgets.tiny_decoders as tiny_decoders

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    asked = []
    monkeypatch.setattr(decode, "host_reachable", lambda address: asked.append(address) or False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted offline")

    monkeypatch.setattr(tiny_decoders.torch.hub, "download_url_to_file", no_download)
    previewer, note = make_previewer(tiny_pipeline("qwen-image"), "taesd")
    assert asked == [("github.com", 443)]
    assert "offline: github.com cannot be reached" in note
    assert note.endswith("latent-to-RGB preview")
    assert previewer(torch.zeros(16, 8, 8)).size == (8, 8)


def test_a_cached_decoder_loads_without_asking_the_network(tmp_path, monkeypatch):
    from seqwidgets import decode
    from seqwidgets.tiny_decoders import TAEW21_URL

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    taew21_file(cache / TAEW21_URL.rsplit("/", 1)[1])

    def no_network(address):
        raise AssertionError(f"the network was asked for {address}")

    monkeypatch.setattr(decode, "host_reachable", no_network)
    previewer, note = make_previewer(tiny_pipeline("qwen-image"), "taesd")
    assert note == "TAESD preview" and isinstance(previewer, TAESDPreviewer)
