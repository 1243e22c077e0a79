"""Each model family in one place, and the 2026 families on offline stand-ins.

Expected sigmas are computed here in float64 numpy from ComfyUI's formulas
(``comfy/model_sampling.py``: ``ModelSamplingDiscreteFlow``, ``ModelSamplingFlux``) with each
family's constants from ``comfy/supported_models.py``, never by calling the code under test.
"""

from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

import seqwidgets
import seqwidgets as sw
from seqwidgets.choices import BUILT_IN_MODELS
from seqwidgets.cli import main
from seqwidgets.conditioning import Conditioning, PromptEncoder
from seqwidgets.families import (
    FAMILIES,
    NetworkInputs,
    detect_family,
    latent_image_ids,
    pack_latents,
    unpack_latents,
)
from seqwidgets.schedules import loop_sigmas
from seqwidgets.session import Session
from seqwidgets.testing import tiny_pipeline

PACKAGE = Path(seqwidgets.__file__).parent


# -- one place per family ---------------------------------------------------------------------


def _family_name_tests(path: Path) -> list[str]:
    """Comparisons in ``path`` that test a family's name (``family.name == "sdxl"``, ``in``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = [s for s in sides if isinstance(s, ast.Attribute) and s.attr == "name"]
            if names and any(
                isinstance(s, ast.Attribute) and "family" in ast.unparse(s) for s in names
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Subscript) and "TAESD_MODELS[" in ast.unparse(node):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_engine_conditioning_denoiser_and_decode_never_test_a_family_name():
    # Each Family owns its prompt encoding, network call, latent format and previews; the
    # modules that use it ask it and never branch on which family it is.
    for module in ("engine.py", "conditioning.py", "denoiser.py", "decode.py"):
        assert _family_name_tests(PACKAGE / module) == [], module


def test_the_name_test_check_finds_a_name_test(tmp_path):
    # The check above must be able to fail: it finds the branch that engine.py used to have.
    source = 'if self.family.name == "sdxl":\n    pass\nx = family.name in ("a", "b")\n'
    (tmp_path / "m.py").write_text(source)
    assert len(_family_name_tests(tmp_path / "m.py")) == 2


# -- the 2026 families on their offline stand-ins ---------------------------------------------

# kind -> (detect_family name, load_pipeline name, label in the studio header,
#          ComfyUI's model sampling (table, shift, multiplier) from comfy/supported_models.py,
#          the timestep diffusers' transformer reads at sigma)
CASES = {
    "chroma": ("chroma", "tiny-random-chroma", "Chroma", ("flux", 1.15, 1.0), lambda s: s),
    "lumina2": (
        "lumina2",
        "tiny-random-lumina2",
        "Lumina 2",
        ("discrete", 6.0, 1.0),
        lambda s: 1 - s,
    ),
    "zimage": ("z-image", "tiny-random-zimage", "Z-Image", ("discrete", 3.0, 1.0), lambda s: 1 - s),
    "qwen-image": (
        "qwen-image",
        "tiny-random-qwen-image",
        "Qwen-Image",
        ("flux", 1.15, 1.0),
        lambda s: s,
    ),
    "hidream": (
        "hidream",
        "tiny-random-hidream",
        "HiDream",
        ("discrete", 1.0, 1000.0),
        lambda s: s * 1000,
    ),
    "flux2": (
        "flux2-klein",
        "tiny-random-flux2",
        "Flux.2 klein",
        ("flux", 2.02, 1.0),
        lambda s: s,
    ),
    "flux2-dev": (
        "flux2",
        "tiny-random-flux2-dev",
        "Flux.2 (dev)",
        ("flux", 2.02, 1.0),
        lambda s: s,
    ),
}
KINDS = list(CASES)


@pytest.fixture(scope="module")
def pipes():
    return {kind: tiny_pipeline(kind) for kind in KINDS}


def params(**changes) -> sw.SequenceParams:
    base = dict(
        positive_seq="0: a red circle\n2: a blue square on grass",
        negative_seq="0: blurry",  # shorter than the positives: a batch of two lengths
        steps=3,
        sequence_loop_count=4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**{**base, **changes})


def comfy_table(kind: str) -> np.ndarray:
    """ComfyUI's sigma table in float64: ``ModelSamplingFlux`` (10,000 entries, ``exp(shift) /
    (exp(shift) + 1/t - 1)``) or ``ModelSamplingDiscreteFlow`` (1,000 entries, ``shift * t /
    (1 + (shift - 1) * t)``), t = i / entries."""
    table, shift, _ = CASES[kind][3]
    if table == "flux":
        t = np.arange(1, 10001, dtype=np.float64) / 10000
        return math.exp(shift) / (math.exp(shift) + (1 / t - 1))
    t = np.arange(1, 1001, dtype=np.float64) / 1000
    return shift * t / (1 + (shift - 1) * t)


def comfy_schedule(kind: str, scheduler: str, steps: int) -> np.ndarray:
    """comfy/samplers.py's schedulers over the family's table, with the trailing 0."""
    table = comfy_table(kind)
    multiplier = CASES[kind][3][2] if CASES[kind][3][0] == "discrete" else 1.0
    smin, smax = table[0], table[-1]
    if scheduler in ("normal", "sgm_uniform"):
        # timestep(sigma) = sigma * multiplier; sigma(timestep) inverts it through the shift
        count = steps + 1 if scheduler == "sgm_uniform" else steps
        ts = np.linspace(smax * multiplier, smin * multiplier, count)[:steps]
        out = [_sigma_of_timestep(kind, t) for t in ts]
    elif scheduler == "karras":
        ramp = np.linspace(0, 1, steps)
        out = list((smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7)
    elif scheduler == "exponential":
        out = list(np.exp(np.linspace(math.log(smax), math.log(smin), steps)))
    elif scheduler == "ddim_uniform":
        out = list(table[list(range(1, len(table), max(len(table) // steps, 1)))][::-1])
    elif scheduler == "beta":  # beta(0.6, 0.6) quantiles of the table, repeats dropped
        quantiles = scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6)
        out, last = [], -1
        for t in np.rint(quantiles * (len(table) - 1)):
            if t != last:
                out.append(table[int(t)])
            last = t
    else:  # simple
        out = [table[-(1 + int(i * len(table) / steps))] for i in range(steps)]
    return np.array([*out, 0.0])


def _sigma_of_timestep(kind: str, timestep: float) -> float:
    table, shift, multiplier = CASES[kind][3]
    if table == "flux":
        return math.exp(shift) / (math.exp(shift) + (1 / timestep - 1))
    t = timestep / multiplier
    return shift * t / (1 + (shift - 1) * t)


@pytest.mark.parametrize("kind", KINDS)
def test_detected_with_comfyuis_model_sampling(pipes, kind):
    name, model, _, (table, shift, multiplier), _ = CASES[kind]
    family = detect_family(pipes[kind])
    assert family is FAMILIES[name] and family.flow
    assert (family.flow_kind, family.shift, family.multiplier) == (table, shift, multiplier)
    ms = family.model_sampling(pipes[kind])
    np.testing.assert_allclose(ms.sigmas.double().numpy(), comfy_table(kind), rtol=2e-6)
    assert detect_family(sw.load_pipeline(model, device="cpu")) is family
    assert model in BUILT_IN_MODELS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "scheduler",
    ["normal", "sgm_uniform", "karras", "exponential", "simple", "ddim_uniform", "beta"],
)
@pytest.mark.parametrize(("steps", "denoise"), [(4, 1.0), (9, 1.0), (5, 0.5), (7, 0.3)])
def test_sigmas_are_comfyuis(pipes, kind, scheduler, steps, denoise):
    ms = detect_family(pipes[kind]).model_sampling(pipes[kind])
    got = loop_sigmas(ms, scheduler, "euler", steps, denoise).double().numpy()
    # KSampler.set_steps: the whole schedule at denoise 1 (ddim_uniform's can be one longer),
    # below it the last steps + 1 of an int(steps / d)-step schedule
    want = comfy_schedule(kind, scheduler, int(steps / denoise))
    if denoise < 1:
        want = want[-(steps + 1) :]
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("cfg", "batch"), [(3.0, 2), (1.0, 1)])
def test_steps_network_calls_per_loop_with_cfg_batched(pipes, record, kind, cfg, batch):
    calls = record(pipes[kind].transformer)
    sampler = sw.SequenceSampler(pipes[kind])
    frames = list(sampler.frames(params(cfg=cfg)))
    assert len(calls) == sampler.unet_calls == 4 * 3
    for args, kwargs in calls.calls:
        sent = kwargs.get("hidden_states", args[0] if args else None)
        assert len(sent) == batch  # negative and positive in one call
    # the timestep diffusers' transformer reads: sigma, or 1 - sigma (Lumina 2, Z-Image)
    args, kwargs = calls.calls[0]
    sent = kwargs.get("timestep", kwargs.get("timesteps", args[1] if len(args) > 1 else None))
    first = float(frames[0].sigmas[0])
    assert sent.tolist() == pytest.approx([CASES[kind][4](first)] * batch, abs=1e-6)
    assert frames[0].latent.shape == (channels_of(pipes[kind]), 8, 8)
    assert all(torch.isfinite(frame.latent).all() for frame in frames)
    assert sampler.text_encoder_calls == 3  # two positives, one negative


@pytest.mark.parametrize("kind", KINDS)
def test_runs_are_deterministic_and_seeded(pipes, kind):
    run = dict(sampler_name="euler_ancestral", cfg=2.0)
    a = sw.SequenceSampler(pipes[kind]).sample(params(**run))
    b = sw.SequenceSampler(pipes[kind]).sample(params(**run))
    c = sw.SequenceSampler(pipes[kind]).sample(params(seed=5, **run))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_branch_and_rerun_without_changes_reproduce_the_frames(pipes, kind):
    session = Session(pipes[kind])
    root = session.run(params(sampler_name="dpmpp_2m", cfg=2.0))
    original = [session.frame(root, i).latent for i in range(4)]
    branch = session.branch((root, 1))
    rerun = session.rerun((root, 2))
    for i in (2, 3):
        assert torch.equal(session.frame(branch, i).latent, original[i])
        assert torch.equal(session.frame(rerun, i).latent, original[i])


@pytest.mark.parametrize("kind", KINDS)
def test_sessions_save_load_and_export(pipes, kind, tmp_path):
    session = Session(pipes[kind])
    root = session.run(params(sequence_loop_count=3))
    path = session.save(tmp_path / f"{kind}.seqw")
    loaded = Session.load(path, pipes[kind])
    for i in root.indices:
        assert torch.equal(
            loaded.frame(loaded.branches[0], i).latent, session.frame(root, i).latent
        )
    gif = loaded.export(loaded.branches[0], tmp_path / "run.gif")
    assert gif.stat().st_size > 0
    assert loaded.image(loaded.branches[0], 2).size == (64, 64)


@pytest.mark.parametrize("kind", KINDS)
def test_the_studio_header_names_the_family(pipes, kind):
    from seqwidgets.widgets import Studio

    studio = Studio(pipes[kind], params=params(steps=1, sequence_loop_count=1), threaded=False)
    try:
        title = studio.header.title.value
        assert CASES[kind][2] in title and "64×64" in title
        assert "latent-to-RGB preview" in title
        assert studio.run(wait=True).is_complete
    finally:
        studio.close()


@pytest.mark.parametrize("kind", KINDS)
def test_render_from_the_command_line(kind, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["render", "--model", CASES[kind][1], "--out", str(out), "--quiet", "--device", "cpu"]
    assert main([*args, "--steps", "1", "--loops", "2"]) == 0, capsys.readouterr().err
    assert len(list(out.glob("loop_*.png"))) == 2


def engine_one_step(pipe) -> sw.Frame:
    one = params(steps=1, cfg=1.0, sequence_loop_count=1, positive_seq="0: a red circle")
    return next(sw.SequenceSampler(pipe).frames(one))


def channels_of(pipe) -> int:
    """Latent channels: 16, or Flux.2's 32."""
    return detect_family(pipe).latent_channels(pipe)


def noise_of(frame: sw.Frame) -> torch.Tensor:
    shape = (1, *frame.latent.shape)
    return torch.randn(shape, generator=torch.Generator().manual_seed(frame.seed))


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_equals_the_familys_diffusers_pipeline(pipes, kind):
    # One Euler step from sigma 1 at cfg 1: x0 = noise - v, in ComfyUI's conventions and in
    # diffusers' pipeline alike; this checks the timestep, packing, ids, text and masks.
    pipe = pipes[kind]
    frame = engine_one_step(pipe)
    want = DIFFUSERS_ONE_STEP[kind](pipe, noise_of(frame))
    torch.testing.assert_close(frame.latent, want, rtol=1e-4, atol=1e-5)


def _pipeline_step(pipe, latents, **inputs):
    """diffusers' pipeline, one step to a latent, at 64x64."""
    with torch.no_grad():
        return pipe(
            **inputs,
            num_inference_steps=1,
            height=64,
            width=64,
            latents=latents,
            output_type="latent",
        ).images


def _chroma_one_step(pipe, noise):
    # diffusers' ChromaPipeline passes its mask as floats, which attention adds as a bias
    # (diffusers #12116): give it the tokens its own mask selects, with nothing masked.
    embeds, _, mask, *_ = pipe.encode_prompt(
        "a red circle", do_classifier_free_guidance=False, max_sequence_length=512
    )
    read = int(mask.sum())
    out = _pipeline_step(
        pipe,
        pack_latents(noise),
        prompt_embeds=embeds[:, :read],
        prompt_attention_mask=torch.ones(1, read),
        guidance_scale=1.0,
    )
    return unpack_latents(out, 16, 8, 8)[0]


def _lumina2_one_step(pipe, noise):
    # The node's text encoder sends the prompt alone (no system prompt): diffusers' own Gemma
    # encoding of it, padded to 256 tokens with its mask, given to the pipeline.
    embeds, mask = pipe._get_gemma_prompt_embeds("a red circle", max_sequence_length=256)
    inputs = dict(prompt_embeds=embeds, prompt_attention_mask=mask, guidance_scale=1.0)
    return _pipeline_step(pipe, noise, **inputs)[0]


def _zimage_one_step(pipe, noise):
    # ZImagePipeline guides at any scale above 0
    return _pipeline_step(pipe, noise, prompt="a red circle", guidance_scale=0.0)[0]


def _qwen_image_one_step(pipe, noise):
    # true_cfg_scale 1 and no negative prompt: one call, no CFG rescaling
    out = _pipeline_step(pipe, pack_latents(noise), prompt="a red circle", true_cfg_scale=1.0)
    return unpack_latents(out, 16, 8, 8)[0]


def _hidream_one_step(pipe, noise):
    return _pipeline_step(pipe, noise, prompt="a red circle", guidance_scale=1.0)[0]


def _patches(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w]`` -> 2x2 patches as channels ``[N, 4C, h/2, w/2]`` (diffusers' Flux.2)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


def _normalised(vae, raw: torch.Tensor) -> torch.Tensor:
    """Flux.2's raw VAE latents ``[N, 32, h, w]`` normalised as its pipelines do: the 2x2
    patches by the VAE's batch-norm statistics; returned in the same layout."""
    n, c, h, w = raw.shape
    bn = vae.bn
    mean, std = (
        bn.running_mean.view(1, -1, 1, 1),
        (bn.running_var + bn.eps).sqrt().view(1, -1, 1, 1),
    )
    normalised = ((_patches(raw) - mean) / std).reshape(n, c, 2, 2, h // 2, w // 2)
    return normalised.permute(0, 1, 4, 2, 5, 3).reshape(n, c, h, w)


def _flux2_one_step(pipe, noise):
    # Flux2KleinPipeline takes the noise as 2x2 patches, [128, h/2, w/2], and returns its
    # latent as the VAE's: statistics undone, patches unfolded. Undo that here, by hand.
    raw = _pipeline_step(pipe, _patches(noise), prompt="a red circle", guidance_scale=1.0)
    return _normalised(pipe.vae, raw)[0]


def _flux2_dev_one_step(pipe, noise):
    # Flux2Pipeline encodes the prompt itself (Mistral 3, its system message in the chat
    # template), embeds the guidance (flux_guidance, 3.5 by default) and returns its latent as
    # it samples it: packed tokens, still normalised.
    tokens = _pipeline_step(pipe, _patches(noise), prompt="a red circle", guidance_scale=3.5)
    return unpack_latents(tokens, 32, 8, 8)[0]


DIFFUSERS_ONE_STEP = {
    "flux2": _flux2_one_step,
    "flux2-dev": _flux2_dev_one_step,
    "hidream": _hidream_one_step,
    "qwen-image": _qwen_image_one_step,
    "chroma": _chroma_one_step,
    "lumina2": _lumina2_one_step,
    "zimage": _zimage_one_step,
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_of_prompts_of_two_lengths_equals_each_prompt_alone(pipes, kind):
    # CFG batches the negative and positive prompts in one call: padded to one length, each
    # item must read its own tokens only, as in a call of its own.
    pipe, family = pipes[kind], detect_family(pipes[kind])
    encoder = PromptEncoder(pipe)
    short, long = encoder.encode("a"), encoder.encode("a red circle on grass")
    # HiDream and Flux.2 pad every prompt to 128 / 512 tokens, as diffusers does
    padded = kind in ("hidream", "flux2", "flux2-dev")
    assert padded or short.embeds.shape[1] < long.embeds.shape[1]
    x, t = (
        torch.randn(2, channels_of(pipe), 8, 8, generator=torch.Generator().manual_seed(0)),
        torch.tensor([0.7] * 2),
    )
    with torch.no_grad():
        alone = [
            family.forward(pipe.transformer, x[i : i + 1], t[:1], NetworkInputs(c.embeds, c.pooled))
            for i, c in enumerate((short, long))
        ]
        both = Conditioning.cat([short, long])
        inputs = NetworkInputs(both.embeds, both.pooled, both.mask)
        batched = family.forward(pipe.transformer, x, t, inputs)
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_chroma_reads_its_prompt_and_one_padding_token(pipes):
    # Chroma's reference masking (and ComfyUI's): the T5 tokens and the first padding token.
    # Keeping exactly those tokens equals the transformer on all 512 with a true (boolean) mask.
    pipe = pipes["chroma"]
    short = PromptEncoder(pipe).encode("a")
    padded, _, mask, *_ = pipe.encode_prompt(
        "a", do_classifier_free_guidance=False, max_sequence_length=512
    )
    assert short.embeds.shape[1] == int(mask.sum()) == 4  # start, "a", end, one pad
    torch.testing.assert_close(short.embeds, padded[:, :4])
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([0.7])
    with torch.no_grad():
        alone = FAMILIES["chroma"].forward(pipe.transformer, x, t, NetworkInputs(short.embeds))
        image = torch.ones(1, 16, dtype=torch.bool)
        full = pipe.transformer(
            hidden_states=pack_latents(x),
            timestep=t,
            encoder_hidden_states=padded,
            txt_ids=torch.zeros(512, 3),
            img_ids=latent_image_ids(8, 8, "cpu", torch.float32),
            attention_mask=torch.cat([mask.bool(), image], dim=1),
            return_dict=False,
        )[0]
    torch.testing.assert_close(alone, unpack_latents(full, 16, 8, 8), rtol=1e-4, atol=1e-5)


def test_qwen_image_latents_decode_and_encode_as_its_pipeline_does(pipes):
    # Wan 2.1's per-channel normalisation, the video VAE's frame axis added around its calls.
    from seqwidgets.decode import decode_latents, encode_image

    pipe = pipes["qwen-image"]
    latent = engine_one_step(pipe).latent
    config = pipe.vae.config
    mean = torch.tensor(config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(config.latents_std).view(1, 16, 1, 1, 1)
    with torch.no_grad():  # QwenImagePipeline's own last step
        raw = latent[None, :, None] * std + mean
        pixels = pipe.vae.decode(raw, return_dict=False)[0][:, :, 0]
        want = pipe.image_processor.postprocess(pixels, output_type="np")[0]
    image = decode_latents(pipe.vae, latent)[0]
    got = np.asarray(image, dtype=np.float64) / 255
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6
    encoded = encode_image(pipe.vae, image)
    assert encoded.shape == (1, 16, 8, 8)
    # encode_image normalises as the img2img pipeline does: (mode - mean) / std
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        mode = pipe.vae.encode(x[:, :, None] * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(encoded, ((mode - mean) / std)[:, :, 0], rtol=1e-4, atol=1e-5)


def test_flux2_dev_reads_flux_guidance(pipes):
    # A Flux.2 transformer with a guidance embedding (dev) is the 'flux2' family: the
    # flux_guidance setting reaches it, one value per item of the batch, and one step at cfg 1
    # equals diffusers' Flux2Pipeline at that guidance (given the same text encoding).
    from diffusers import Flux2Pipeline, Flux2Transformer2DModel

    pipe = tiny_pipeline("flux2")
    config = dict(pipe.transformer.config, guidance_embeds=True)
    pipe.transformer = Flux2Transformer2DModel.from_config(config).eval()
    family = detect_family(pipe)
    assert family is FAMILIES["flux2"] and family.guidance_embeds
    assert not FAMILIES["flux2-klein"].guidance_embeds
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    try:
        run = params(cfg=2.0, flux_guidance=2.5, sequence_loop_count=1)
        next(sw.SequenceSampler(pipe).frames(run))
    finally:
        hook.remove()
    assert [c["guidance"].tolist() for c in calls] == [[2.5, 2.5]] * 3

    one = params(steps=1, cfg=1.0, flux_guidance=2.5, sequence_loop_count=1, positive_seq="0: a")
    frame = next(sw.SequenceSampler(pipe).frames(one))
    dev = Flux2Pipeline(
        scheduler=pipe.scheduler,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,  # unused: the encoding is given
        tokenizer=pipe.tokenizer,
        transformer=pipe.transformer,
    )
    dev.default_sample_size = 8
    embeds, _ = pipe.encode_prompt("a")
    noise = noise_of(frame)
    # Flux2Pipeline returns its latent as it samples it: packed tokens, still normalised
    tokens = _pipeline_step(dev, _patches(noise), prompt_embeds=embeds, guidance_scale=2.5)
    want = unpack_latents(tokens, 32, 8, 8)[0]
    torch.testing.assert_close(frame.latent, want, rtol=1e-4, atol=1e-5)


def test_flux2_latents_are_normalised_by_the_vae_batch_norm(pipes):
    # diffusers' Flux.2 normalises 2x2 patches of the VAE latent with its batch-norm statistics
    # (ComfyUI keeps those patches, [128, h/2, w/2]; seqwidgets [32, h, w], the same numbers).
    from seqwidgets.decode import decode_latents, encode_image

    pipe = pipes["flux2"]
    image = decode_latents(pipe.vae, engine_one_step(pipe).latent)[0]
    encoded = encode_image(pipe.vae, image)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():  # Flux2KleinPipeline._encode_vae_image's normalisation, by hand
        mode = pipe.vae.encode(x * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(encoded, _normalised(pipe.vae, mode), rtol=1e-4, atol=1e-5)


def test_the_flux2_dev_stand_in_reads_flux_guidance_as_flux2pipelines_guidance_scale(pipes):
    # flux_guidance is Flux2Pipeline's guidance_scale (the embedded guidance; no true CFG):
    # one step at flux_guidance 2.0 equals the pipeline at guidance_scale 2.0, not at 3.5.
    pipe = tiny_pipeline("flux2-dev")
    one = params(steps=1, cfg=1.0, flux_guidance=2.0, sequence_loop_count=1, positive_seq="0: a")
    frame = next(sw.SequenceSampler(pipe).frames(one))
    noise = noise_of(frame)

    def diffusers_at(guidance: float) -> torch.Tensor:
        tokens = _pipeline_step(pipe, _patches(noise), prompt="a", guidance_scale=guidance)
        return unpack_latents(tokens, 32, 8, 8)[0]

    torch.testing.assert_close(frame.latent, diffusers_at(2.0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(frame.latent, diffusers_at(3.5), rtol=1e-3, atol=1e-4)
