"""The shipped toy model: it loads offline from the package and draws what the prompt asks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqwidgets.models.toy import (
    COLORS,
    LATENT_RGB_BIAS,
    LATENT_RGB_FACTORS,
    POSITIONS,
    SHAPES,
    TOY_MODEL_PATH,
    WORDS,
    caption,
)

# --- pure checks: grammar, vocabulary, files ------------------------------------------------------


def test_caption_grammar():
    assert caption("red", "circle") == "a red circle"
    assert caption("red", "circle", "left", "small") == "a small red circle on the left"
    assert caption("orange", "triangle", "center") == "an orange triangle in the center"
    assert caption(shape="square", position="right") == "a square on the right"
    assert caption("blue") == "a blue shape"
    with pytest.raises(ValueError, match="color"):
        caption("pink", "circle")
    assert len(COLORS) >= 6 and set(SHAPES) == {"circle", "square", "triangle"}
    assert set(POSITIONS) == {"left", "center", "right"}


def test_tokenizer_has_one_token_per_word():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(TOY_MODEL_PATH / "tokenizer", local_files_only=True)
    assert tok.model_max_length <= 77
    assert tok.pad_token_id == tok.eos_token_id  # SD pads with the end token
    for word in WORDS:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok(
        "a small red circle on the left", padding="max_length", max_length=tok.model_max_length
    ).input_ids
    assert ids[0] == tok.bos_token_id and ids[8:] == [tok.eos_token_id] * (len(ids) - 8)
    # a word outside the grammar is spelled in letters, never an error
    assert len(tok("blurry", add_special_tokens=False).input_ids) > 1


def test_weights_folder_is_a_small_safetensors_sd_pipeline():
    files = [p for p in TOY_MODEL_PATH.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "model_index.json" in names
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    for part in ("unet", "vae", "text_encoder"):
        assert list((TOY_MODEL_PATH / part).glob("*.safetensors")), part
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    sched = json.loads((TOY_MODEL_PATH / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "scaled_linear"
    assert (sched["beta_start"], sched["beta_end"]) == (0.00085, 0.012)
    assert sched["num_train_timesteps"] == 1000 and sched["prediction_type"] == "epsilon"
    vae = json.loads((TOY_MODEL_PATH / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 4 and vae["latent_channels"] == 4  # 8x downscale
    assert vae["scaling_factor"] != 1.0


# --- the model itself ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    from seqwidgets.models.toy import load_toy_pipeline

    p = load_toy_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def _generate(pipe, prompts, seed=0, **kwargs):
    import torch

    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(
        prompts,
        height=64,
        width=64,
        num_inference_steps=20,
        guidance_scale=7.5,
        generator=gens,
        **kwargs,
    )
    return (
        out.images
        if kwargs.get("output_type") == "latent"
        else np.stack([np.asarray(im) for im in out.images])
    )


def _foreground(image: np.ndarray) -> np.ndarray:
    """The shape's pixels: saturated ones (the backgrounds are near-gray)."""
    x = image.astype(np.float64)
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    return (hi - lo) / np.maximum(hi, 1) > 0.4


@pytest.mark.slow
def test_follows_color_prompts(pipe):
    prompts = ["a red circle", "a blue square", "a green triangle", "a red square", "a blue circle"]
    images = _generate(pipe, prompts)
    for prompt, image in zip(prompts, images, strict=True):
        mask = _foreground(image)
        assert mask.mean() > 0.02, f"{prompt!r}: no shape drawn"
        mean = image[mask].mean(axis=0)  # R, G, B of the shape
        channel = "rgb"[int(np.argmax(mean))]
        expected = {"red": "r", "green": "g", "blue": "b"}[prompt.split()[1]]
        assert channel == expected, f"{prompt!r}: shape color {mean.round()}"
        # dominance by a clear margin, which random weights (gray noise) never reach
        assert mean.max() - np.sort(mean)[-2] > 50, f"{prompt!r}: shape color {mean.round()}"


@pytest.mark.slow
def test_draws_distinguishable_shapes_and_positions(pipe):
    prompts = [caption("purple", s, "center", "large") for s in SHAPES for _ in range(2)]
    prompts += [caption("orange", "circle", q) for q in ("left", "right")]
    images = _generate(pipe, prompts, seed=10)
    fill = {s: [] for s in SHAPES}
    for shape, image in zip([s for s in SHAPES for _ in range(2)], images[:6], strict=True):
        ys, xs = np.nonzero(_foreground(image))
        assert len(ys) > 40, f"no {shape} drawn"
        fill[shape].append(len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    fill = {k: float(np.mean(v)) for k, v in fill.items()}
    # the fraction of its bounding box a shape fills: square ~1, circle ~0.79, triangle ~0.5
    assert fill["triangle"] < fill["circle"] - 0.1 < fill["square"] - 0.2, fill
    left, right = (np.nonzero(_foreground(im))[1].mean() for im in images[6:])
    assert left < 26 and right > 38, (left, right)


@pytest.mark.slow
def test_latent_rgb_factors_preview_the_decoded_image(pipe):
    import torch

    from seqwidgets.models.toy import SD15_LATENT_RGB_FACTORS
    from seqwidgets.models.toy.latent_rgb import preview

    prompts = [
        "a yellow circle",
        "a blue triangle on the left",
        "a large red square on the right",
        "a green circle",
    ]
    latents = _generate(pipe, prompts, output_type="latent")
    with torch.no_grad():
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    target = images.clamp(-1, 1).numpy().reshape(4, 3, 8, 8, 8, 8).mean(axis=(3, 5))
    target = (target.transpose(0, 2, 3, 1) + 1) * 127.5
    fitted = preview(latents.numpy(), LATENT_RGB_FACTORS, LATENT_RGB_BIAS).astype(np.float64)
    sd15 = preview(latents.numpy(), SD15_LATENT_RGB_FACTORS).astype(np.float64)
    # A linear map from this small VAE's latents gets the layout and brightness, less the color:
    # correlation ~0.6 with the decoded image, where SD 1.5's factors give ~0.
    corr = np.corrcoef(fitted.ravel(), target.ravel())[0, 1]
    assert corr > 0.5 and corr > np.corrcoef(sd15.ravel(), target.ravel())[0, 1] + 0.3
    assert np.abs(fitted - target).mean() < 35 < np.abs(sd15 - target).mean()


# --- few steps: the steps x cfg table and the live preset ------------------------------------------


@pytest.mark.slow
def test_few_steps_table_scores_every_loop_of_every_setting(pipe):
    from seqwidgets.models.toy.evaluate import (
        few_steps_markdown,
        few_steps_table,
        train_classifier,
    )

    classifier = train_classifier(60, log=lambda _: None)
    result = few_steps_table(
        pipe,
        classifier,
        steps=(2, 3),
        cfgs=(1.0, 8.0),
        colors=("red", "blue"),
        shapes=("circle",),
        seeds=(0,),
        loops=3,
        log=lambda _: None,
    )
    assert [(row["steps"], row["cfg"]) for row in result["rows"]] == [
        (2, 1.0),
        (2, 8.0),
        (3, 1.0),
        (3, 8.0),
    ]
    for row in result["rows"]:
        assert row["loop0"][1] == 2 and row["later"][1] == 4  # 2 prompts; loops 1-2 of each
        assert 0 <= row["loop0"][0] <= 2 and 0 <= row["later"][0] <= 4
    assert result["settings"]["loops"] == 3 and result["settings"]["colors"] == ["red", "blue"]
    table = few_steps_markdown(result).splitlines()
    assert table[0] == "| steps | cfg 1 | cfg 8 |" and len(table) == 4
    first = result["rows"][0]
    assert (
        table[2].startswith("| 2 | ")
        and "{}/2, {}/4".format(first["loop0"][0], first["later"][0]) in table[2]
    )


@pytest.mark.slow
def test_toy_live_preset_keeps_the_asked_color_in_every_loop(pipe):
    import seqwidgets as sw

    sampler = sw.SequenceSampler(pipe)
    for color, channel in (("red", 0), ("green", 1), ("blue", 2)):
        for shape in ("circle", "square"):
            params = sw.presets.apply(
                sw.SequenceParams(
                    positive_seq=f"0: a {color} {shape}",
                    sequence_loop_count=4,
                    denoise_seq=0.5,
                    width=64,
                    height=64,
                ),
                "toy-live",
            )
            latents = sampler.sample(params)
            images = [np.asarray(im) for im in _decode(pipe, latents)]
            for loop, image in enumerate(images):
                mask = _foreground(image)
                assert mask.mean() > 0.02, f"{color} {shape}, loop {loop}: no shape drawn"
                mean = image[mask].mean(axis=0)
                assert int(np.argmax(mean)) == channel, f"{color} {shape}, loop {loop}: {mean}"


def _decode(pipe, latents):
    from seqwidgets.decode import decode_latents

    return [im.convert("RGB") for im in decode_latents(pipe.vae, latents)]
