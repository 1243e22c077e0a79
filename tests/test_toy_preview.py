"""The toy model's live preview: a tiny decoder trained for its latents, chosen by default."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import seqwidgets as sw
from seqwidgets.decode import TAESDPreviewer, make_previewer
from seqwidgets.models.toy import LATENT_RGB_BIAS, LATENT_RGB_FACTORS
from seqwidgets.models.toy.preview_decoder import (
    PREVIEW_DECODER_PATH,
    ToyPreviewDecoder,
    load_preview_decoder,
)
from seqwidgets.models.toy.train_preview import factors_preview, vae_decode


@pytest.fixture(scope="module")
def toy_pipe():
    return sw.load_pipeline()


@pytest.fixture(scope="module")
def decoder():
    return load_preview_decoder()


@pytest.fixture(scope="module")
def toy_latents(toy_pipe):
    """Latents the toy model really produces: each loop's denoised estimates of a short sequence
    (mid-loop and finished), for prompts of three colours and shapes."""
    latents = []

    def keep(loop, step, sigma, denoised):
        latents.append(denoised[:1].clone())

    for seed, sequence in enumerate(
        ["0: a red circle\n1: a green triangle", "0: a blue square on the left\n1: a yellow circle"]
    ):
        params = sw.SequenceParams(
            positive_seq=sequence, sequence_loop_count=2, steps=20, denoise_seq=0.6, seed=seed + 7
        )
        sw.SequenceSampler(toy_pipe).sample(params, callback=keep)
    return torch.cat(latents)


def test_the_shipped_decoder_loads_small_and_decodes_64px(decoder):
    assert PREVIEW_DECODER_PATH.stat().st_size < 300_000
    assert isinstance(decoder, ToyPreviewDecoder) and decoder.config.latent_channels == 4
    assert not decoder.training
    image = decoder.decode(torch.zeros(2, 4, 8, 8)).sample
    assert image.shape == (2, 3, 64, 64) and image.dtype == torch.float32


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 10),
    width=st.integers(1, 10),
    scale=st.floats(0.0, 50.0),
    seed=st.integers(0, 2**16),
)
def test_any_latent_gives_an_8x_image_within_range(decoder, batch, height, width, scale, seed):
    x = torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(seed)) * scale
    out = decoder.decode(x).sample
    assert out.shape == (batch, 3, 8 * height, 8 * width)
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1


def test_decoder_is_closer_to_the_vae_decode_than_the_latent_rgb_factors(
    toy_pipe, decoder, toy_latents
):
    reference = vae_decode(toy_pipe.vae, toy_latents)
    with torch.no_grad():
        ours = decoder(toy_latents)
    linear = factors_preview(toy_latents, LATENT_RGB_FACTORS, LATENT_RGB_BIAS)
    ours_mse = ((ours - reference) ** 2).mean()
    linear_mse = ((linear - reference) ** 2).mean()
    assert ours_mse < 0.5 * linear_mse, (ours_mse, linear_mse)
    # Colour: each image's mean colour, as the preview and the VAE show it.
    ours_colour = (ours.mean(dim=(2, 3)) - reference.mean(dim=(2, 3))).abs().mean()
    linear_colour = (linear.mean(dim=(2, 3)) - reference.mean(dim=(2, 3))).abs().mean()
    assert ours_colour < 0.5 * linear_colour, (ours_colour, linear_colour)


def test_the_toy_model_previews_with_its_decoder_by_default(toy_pipe, toy_latents):
    previewer, note = make_previewer(toy_pipe)
    assert isinstance(previewer, TAESDPreviewer) and note == "preview decoder"
    latent = toy_latents[-1:].clone()
    image = previewer(latent, force=True)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert torch.equal(latent, toy_latents[-1:])  # decoded from a copy
    # a red circle ends the first sequence's first loop: the preview's shape is red
    first_end = toy_latents[19:20]  # 20 steps in a loop at full denoise
    pixels = np.asarray(previewer(first_end, force=True), dtype=float)
    centre = pixels[24:40, 24:40].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] + 60 and centre[0] > centre[2] + 60, centre
    # asked for explicitly, the fitted factors are still there (one pixel per latent pixel)
    linear, note = make_previewer(toy_pipe, "latent_rgb")
    assert note == "latent-to-RGB preview" and linear(latent).size == (8, 8)


def test_other_pipelines_keep_latent_rgb(tiny_pipe):
    previewer, note = make_previewer(tiny_pipe)
    assert note == "latent-to-RGB preview" and previewer(torch.zeros(4, 8, 8)).size == (8, 8)


def test_a_broken_decoder_falls_back_to_latent_rgb_with_a_note(toy_pipe, tmp_path, monkeypatch):
    bad = tmp_path / "bad.safetensors"
    save_file({"other": torch.zeros(3)}, str(bad))
    monkeypatch.setattr(toy_pipe, "seqwidgets_preview_decoder", lambda: load_preview_decoder(bad))
    previewer, note = make_previewer(toy_pipe)
    assert note.startswith("preview decoder unavailable (") and "bad.safetensors" in note
    assert note.endswith("latent-to-RGB preview")
    assert previewer(torch.zeros(4, 8, 8)).size == (8, 8)


def test_loading_errors_name_the_file(tmp_path):
    with pytest.raises(OSError, match="missing.safetensors: .*missing"):
        load_preview_decoder(tmp_path / "missing.safetensors")
    text = tmp_path / "text.safetensors"
    text.write_text("not weights")
    with pytest.raises(OSError, match="text.safetensors: not a safetensors file"):
        load_preview_decoder(text)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"body.0.weight": torch.zeros(8, 4, 3, 3)}, str(wrong))
    with pytest.raises(ValueError, match="wrong.safetensors: weights do not fit"):
        load_preview_decoder(wrong)


def test_studio_runs_headless_with_the_decoder_preview(toy_pipe):
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n1: a blue square",
        sequence_loop_count=2,
        steps=10,
        denoise_seq=0.6,
    )
    studio = sw.Studio(toy_pipe, params=params, threaded=False)  # the toy model's default
    assert studio.view.live.note == "preview decoder"
    shown = []
    previewer = studio.view.live.previewer
    studio.view.live.previewer = lambda latent, **kw: (
        shown.append(previewer(latent, **kw)) or shown[-1]
    )
    studio.run(wait=True)
    assert [image.size for image in shown if image is not None][:1] == [(64, 64)]
    branch = studio.session.branches[-1]
    assert len(branch.indices) == 2
    expected = sw.SequenceSampler(toy_pipe).sample(params)
    got = torch.stack([studio.session.frame(branch, i).latent for i in branch.indices])
    assert torch.equal(got.cpu(), expected.cpu())  # previews never touch the sampling


@pytest.mark.slow
def test_preview_benchmark_compares_both_previews(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import bench_toy_preview

    out = tmp_path / "toy_preview.json"
    result = bench_toy_preview.main(
        ["--loops", "2", "--steps", "2", "--repeats", "1", "--json", str(out)]
    )
    assert result["preview"] == "preview decoder" and out.exists()
    assert result["decoder_previews_per_run"] >= 1  # the hooked studio drew decoder previews
    assert {len(v) for v in result["run_seconds"].values()} == {1}
