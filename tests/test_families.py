"""Model families: detection, and the engine on tiny SD3 and Flux pipelines built offline."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import seqwidgets as sw
from seqwidgets.cli import main
from seqwidgets.denoiser import pack_latents, unpack_latents
from seqwidgets.families import FAMILIES, detect_family, model_sampling_for
from seqwidgets.schedules import FlowModelSampling, ModelSampling
from seqwidgets.session import Session
from seqwidgets.testing import tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

FLOW_KINDS = ("sd3", "flux", "flux-schnell")


@pytest.fixture(scope="module")
def pipes():
    return {kind: tiny_pipeline(kind) for kind in FLOW_KINDS}


def params(**changes) -> sw.SequenceParams:
    base = dict(positive_seq="0: a red circle\n2: a blue square", steps=3, sequence_loop_count=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**{**base, **changes})


# -- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "family", "sampling"),
    [
        ("sd", "sd", ModelSampling),
        ("sdxl", "sdxl", ModelSampling),
        ("sd3", "sd3", FlowModelSampling),
        ("flux", "flux-dev", FlowModelSampling),
        ("flux-schnell", "flux-schnell", FlowModelSampling),
    ],
)
def test_detect_family_of_each_tiny_pipeline(kind, family, sampling):
    pipe = tiny_pipeline(kind)
    found = detect_family(pipe)
    assert found is FAMILIES[family]
    ms = model_sampling_for(pipe)
    assert type(ms) is sampling
    assert sw.SequenceSampler(pipe).family is found
    channels = 16 if found.flow else 4
    assert found.latent_channels(pipe) == channels


def test_v_prediction_sd_and_unknown_pipelines():
    pipe = tiny_pipeline("sd")
    pipe.scheduler.register_to_config(prediction_type="v_prediction")
    try:
        assert detect_family(pipe).name == "sd-v"
        assert model_sampling_for(pipe).prediction_type == "v_prediction"
    finally:
        pipe.scheduler.register_to_config(prediction_type="epsilon")

    # SD reads its noise schedule from the scheduler: without one it is refused, not guessed
    pipe.scheduler, scheduler = None, pipe.scheduler
    with pytest.raises(ValueError, match="with a 'scheduler'"):
        sw.SequenceSampler(pipe)
    pipe.scheduler = scheduler

    class Other:
        vae = None

    with pytest.raises(ValueError, match="neither a 'unet' nor a 'transformer'"):
        detect_family(Other())
    with pytest.raises(ValueError, match="neither a 'unet' nor a 'transformer'"):
        sw.SequenceSampler(Other())


# -- the engine on SD3 and Flux --------------------------------------------------------------


@pytest.mark.parametrize("kind", FLOW_KINDS)
@pytest.mark.parametrize(("cfg", "batch"), [(3.0, 2), (1.0, 1)])
def test_one_batched_transformer_call_per_step(pipes, record, kind, cfg, batch):
    pipe = pipes[kind]
    calls = record(pipe.transformer)
    sampler = sw.SequenceSampler(pipe)
    frames = list(sampler.frames(params(cfg=cfg)))
    assert len(frames) == 4
    assert len(calls) == sum(frame.steps for frame in frames) == 4 * 3
    assert sampler.unet_calls == len(calls)
    for _, kwargs in calls.calls:
        assert kwargs["hidden_states"].shape[0] == batch  # negative + positive in one call
    assert frames[0].latent.shape == (16, 8, 8)


def test_timestep_and_guidance_reach_the_transformer(pipes, record):
    # SD3: sigma * 1000 (ComfyUI's timestep); Flux: sigma (diffusers' transformer multiplies by
    # 1000 itself) and the guidance only where the transformer embeds it.
    for kind, scale in (("sd3", 1000.0), ("flux", 1.0), ("flux-schnell", 1.0)):
        calls = record(pipes[kind].transformer)
        sampler = sw.SequenceSampler(pipes[kind])
        frame = next(sampler.frames(params(cfg=1.0, flux_guidance=2.5, sequence_loop_count=1)))
        sent = [float(kwargs["timestep"][0]) for _, kwargs in calls.calls]
        assert sent == pytest.approx([float(s) * scale for s in frame.sigmas[:-1]], rel=1e-6)
        assert sent[0] == pytest.approx(scale)  # full denoise starts at sigma 1
        guidance = calls.calls[0][1].get("guidance")
        if kind == "flux":
            assert guidance.tolist() == [2.5]
        else:
            assert guidance is None
        if kind != "sd3":
            kwargs = calls.calls[0][1]
            assert kwargs["hidden_states"].shape == (1, 16, 64)  # 4x4 tokens of 2x2x16
            assert kwargs["img_ids"].shape == (16, 3)


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_runs_are_deterministic_and_seeded(pipes, kind):
    a = sw.SequenceSampler(pipes[kind]).sample(params(sampler_name="euler_ancestral"))
    b = sw.SequenceSampler(pipes[kind]).sample(params(sampler_name="euler_ancestral"))
    c = sw.SequenceSampler(pipes[kind]).sample(params(sampler_name="euler_ancestral", seed=5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()


def diffusers_one_step(pipe, seed: int) -> torch.Tensor:
    """diffusers' own pipeline, one step from the CPU noise of ``seed``, at cfg 1 (latent out)."""
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(seed))
    flux = detect_family(pipe).packed
    with torch.no_grad():
        out = pipe(
            "a red circle",
            num_inference_steps=1,
            guidance_scale=3.5 if flux else 1.0,
            height=64,
            width=64,
            latents=pack_latents(noise) if flux else noise,
            output_type="latent",
        ).images
    return unpack_latents(out, 16, 8, 8)[0] if flux else out[0]


def engine_one_step(pipe) -> sw.Frame:
    return next(sw.SequenceSampler(pipe).frames(params(steps=1, cfg=1.0, sequence_loop_count=1)))


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_one_step_equals_diffusers_own_pipeline(pipes, kind):
    # One Euler step from sigma 1 at cfg 1: ComfyUI's conventions and diffusers' pipeline agree
    # (x0 = noise - v at t = 1000), so this checks the timestep, packing, ids, pooled text,
    # T5 length and guidance end to end.
    frame = engine_one_step(pipes[kind])
    want = diffusers_one_step(pipes[kind], frame.seed)
    torch.testing.assert_close(frame.latent, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_frames_decode_as_diffusers_decodes_them(pipes, kind):
    from seqwidgets.decode import decode_latents

    pipe = pipes[kind]
    latent = engine_one_step(pipe).latent
    config = pipe.vae.config
    with torch.no_grad():  # the pipelines' own last step: unscale, unshift, decode
        raw = latent[None] / config.scaling_factor + config.shift_factor
        want = pipe.image_processor.postprocess(pipe.vae.decode(raw).sample, output_type="np")[0]
    got = np.asarray(decode_latents(pipe.vae, latent)[0], dtype=np.float64) / 255
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_branch_and_rerun_without_changes_reproduce_the_frames(pipes, kind):
    session = Session(pipes[kind])
    root = session.run(params(sampler_name="dpmpp_2m_sde", cfg=2.0))
    original = [session.frame(root, i).latent for i in range(4)]
    branch = session.branch((root, 1))
    rerun = session.rerun((root, 2))
    for i in (2, 3):
        assert torch.equal(session.frame(branch, i).latent, original[i])
    for i in (2, 3):
        assert torch.equal(session.frame(rerun, i).latent, original[i])
    variations = session.branch_many((root, 0), [{"seed": 11}, {"seed": 12}])
    alone = session.branch((root, 0), seed=12)
    torch.testing.assert_close(
        session.frame(variations[1], 3).latent, session.frame(alone, 3).latent, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_sixteen_channel_sessions_round_trip(pipes, kind, tmp_path):
    session = Session(pipes[kind])
    root = session.run(params(sequence_loop_count=3))
    branch = session.branch((root, 0), seed=9)
    path = session.save(tmp_path / f"{kind}.seqw")
    loaded = Session.load(path, pipes[kind])
    assert [b.id for b in loaded.branches] == [root.id, branch.id]
    for old, new in zip(session.branches, loaded.branches, strict=True):
        for i in old.indices:
            got = loaded.frame(new, i).latent
            assert got.shape == (16, 8, 8)
            assert torch.equal(got, session.frame(old, i).latent)
    # a session of another family is refused with a message naming both channel counts
    with pytest.raises(ValueError, match="latents have 16 channels"):
        Session.load(path, tiny_pipeline("sd"))
    # and its frames export through the family's VAE (scale and shift undone)
    gif = loaded.export(loaded.branches[1], tmp_path / "branch.gif")
    sheet = loaded.export(loaded.branches[0], tmp_path / "sheet.png", format="contact_sheet")
    assert gif.stat().st_size > 0 and sheet.stat().st_size > 0
    assert loaded.image(loaded.branches[0], 2).size == (64, 64)


def test_sd3_without_t5_and_the_empty_latent(pipes):
    pipe = tiny_pipeline("sd3")
    pipe.text_encoder_3, pipe.tokenizer_3 = None, None  # T5 is optional, as in diffusers
    frames = sw.SequenceSampler(pipe).sample(params(sequence_loop_count=2))
    assert frames.shape == (2, 16, 8, 8) and torch.isfinite(frames).all()
    # ComfyUI does not shift an all-zero latent: the empty latent is zeros in model space too
    sampler = sw.SequenceSampler(pipes["flux"])
    empty = sampler.initial_latent(params())
    assert empty.shape == (1, 16, 8, 8) and not empty.any()


def test_flux_sizes_must_fit_the_2x2_packing(pipes):
    sampler = sw.SequenceSampler(pipes["flux"])
    with pytest.raises(ValueError, match="width=72 must be a multiple of 16"):
        sampler.latent_shape(params(width=72))
    assert sampler.latent_shape(params(width=96, height=32)) == (1, 16, 4, 12)


def test_pack_unpack_round_trip():
    x = torch.randn(2, 16, 6, 10)
    packed = pack_latents(x)
    assert packed.shape == (2, 15, 64)
    assert torch.equal(unpack_latents(packed, 16, 6, 10), x)
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.zeros(1, 16, 5, 4))


# -- loading and the command line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("tiny-random-sd3", "sd3"),
        ("tiny-random-flux", "flux-dev"),
        ("tiny-random-flux-schnell", "flux-schnell"),
    ],
)
def test_load_pipeline_tiny_flow_models(name, family):
    pipe = sw.load_pipeline(name, device="cpu")
    assert detect_family(pipe).name == family
    assert pipe.transformer.dtype == torch.float32


def test_load_pipeline_from_an_sd3_folder(pipes, tmp_path):
    pipes["sd3"].save_pretrained(tmp_path / "sd3", safe_serialization=True)
    pipe = sw.load_pipeline(tmp_path / "sd3", device="cpu")
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    a = sw.SequenceSampler(pipe).sample(params(sequence_loop_count=1))
    b = sw.SequenceSampler(pipes["sd3"]).sample(params(sequence_loop_count=1))
    torch.testing.assert_close(a, b)


def test_render_tiny_random_sd3(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["render", "--model", "tiny-random-sd3", "--out", str(out), "--quiet"]
    code = main([*args, "--device", "cpu", "--steps", "2", "--loops", "2", "--seed", "3"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("loop_*.png")) == ["loop_0000.png", "loop_0001.png"]
    assert json.loads((out / "params.json").read_text())["steps"] == 2


def test_random_sd3_has_sd3_medium_sizes():
    # Built on the meta device: the sizes without the 9 GB of weights.
    from seqwidgets.testing import random_sd3_pipeline

    pipe = random_sd3_pipeline(device="meta")
    sampler = sw.SequenceSampler(pipe)
    assert sampler.family.name == "sd3"
    assert sampler.latent_shape(params()) == (1, 16, 128, 128)  # 1024 x 1024 images
    assert sum(p.numel() for p in pipe.transformer.parameters()) > 2.2e9
