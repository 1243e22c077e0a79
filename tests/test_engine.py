"""SequenceSampler on tiny random pipelines: the behaviour a user relies on, loop by loop."""

import math
import threading

import pytest
import torch
from comfy_reference import reference_run

import seqwidgets as sw
from seqwidgets.interp import blend_latents
from seqwidgets.schedules import ModelSampling

FAST = dict(steps=3, sequence_loop_count=3, positive_seq="0: a red circle", cfg=4.0)


def rel_l2(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_sample_returns_stacked_latents_one_frame_per_loop(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    params = sw.SequenceParams(**FAST)
    frames = list(sampler.frames(params))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.seed for f in frames] == sw.seed_sequence(params)
    assert all(f.latent.shape == (4, 8, 8) and f.latent.device.type == "cpu" for f in frames)
    assert [f.denoise for f in frames] == [1.0, 0.5, 0.5]
    stacked = sampler.sample(params)
    assert stacked.shape == (3, 4, 8, 8)
    assert torch.equal(stacked, torch.stack([f.latent for f in frames]))


def test_two_runs_are_bitwise_equal_on_cpu(tiny_pipe):
    params = sw.SequenceParams(**{**FAST, "sampler_name": "euler_ancestral"})
    a = sw.SequenceSampler(tiny_pipe).sample(params)
    b = sw.SequenceSampler(tiny_pipe).sample(params)
    assert torch.equal(a, b)


def test_exactly_steps_unet_calls_per_loop_with_cfg_batched(tiny_pipe, record):
    unet = record(tiny_pipe.unet)
    params = sw.SequenceParams(**{**FAST, "steps": 4, "sequence_loop_count": 3})
    sampler = sw.SequenceSampler(tiny_pipe)
    sampler.sample(params)
    assert len(unet) == 4 * 3 == sampler.unet_calls
    # One call per step carries both CFG halves: batch 2, negative then positive.
    assert all(args[0].shape[0] == 2 for args, _ in unet.calls)


def test_cfg_one_skips_the_negative_half(tiny_pipe, record):
    unet = record(tiny_pipe.unet)
    sw.SequenceSampler(tiny_pipe).sample(sw.SequenceParams(**{**FAST, "cfg": 1.0}))
    assert all(args[0].shape[0] == 1 for args, _ in unet.calls)


def test_text_encoder_runs_once_per_distinct_prompt(tiny_pipe, record):
    encoder = record(tiny_pipe.text_encoder)
    params = sw.SequenceParams(
        steps=1,
        sequence_loop_count=12,
        positive_seq="0: a red circle\n4: a blue square\n8: a red circle",
        negative_seq="0: blurry",
    )
    sampler = sw.SequenceSampler(tiny_pipe)
    sampler.sample(params)
    assert len(encoder) == 3 == sampler.text_encoder_calls  # red circle, blue square, blurry


def test_loop_noise_is_cpu_randn_of_the_loop_seed(tiny_pipe, record):
    """The UNet's first input recovers the noise: ComfyUI's CPU noise and first-noise scaling."""
    unet = record(tiny_pipe.unet)
    params = sw.SequenceParams(**{**FAST, "steps": 2, "sequence_loop_count": 2, "seed": 41})
    sampler = sw.SequenceSampler(tiny_pipe)
    frames = list(sampler.frames(params))
    seeds = sw.seed_sequence(params)
    plans = sampler.plan(params)

    def noise(seed):
        return torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(seed))

    # Loop 0, empty latent, full denoise: input (0 + n * sqrt(1 + s0^2)) / sqrt(s0^2 + 1) == n.
    first_input = unet.calls[0][0][0][:1]
    assert torch.allclose(first_input, noise(seeds[0]), atol=1e-5)
    # Loop 1 at denoise 0.5: input (prev + n * s0) / sqrt(s0^2 + 1).
    s0 = float(plans[1].sigmas[0])
    loop1_input = unet.calls[2][0][0][:1]
    recovered = (loop1_input * math.sqrt(s0**2 + 1) - frames[0].latent[None]) / s0
    assert torch.allclose(recovered, noise(seeds[1]), atol=1e-4)


def test_unet_receives_the_nearest_integer_timestep(tiny_pipe, record):
    unet = record(tiny_pipe.unet)
    params = sw.SequenceParams(**{**FAST, "sequence_loop_count": 1, "scheduler": "karras"})
    sampler = sw.SequenceSampler(tiny_pipe)
    sampler.sample(params)
    received = [float(args[1][0]) for args, _ in unet.calls]
    ms = ModelSampling.from_pipeline(tiny_pipe)
    expected = [
        int((torch.log(s) - ms.log_sigmas).abs().argmin())
        for s in sampler.plan(params)[0].sigmas[:-1]
    ]
    assert received == expected
    assert received[0] == 999 and all(t == int(t) for t in received)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"scheduler": "karras", "seed_mode_seq": "decrement", "seed": 3},
        {"use_latent_interpolation": True, "latent_interp_strength": 0.3, "denoise_seq": 0.7},
        {"positive_seq": "0: a red circle\n2: a blue square", "negative_seq": "0: blurry"},
    ],
)
def test_parity_with_a_plain_reading_of_the_node(tiny_pipe, changes):
    """Per-loop latents equal an independent ComfyUI-convention loop (relative L2 < 1e-3)."""
    params = sw.SequenceParams(**{**FAST, "sequence_loop_count": 4, **changes})
    ours = sw.SequenceSampler(tiny_pipe).sample(params)
    reference = reference_run(tiny_pipe, params, sw.seed_sequence(params))
    for loop in range(params.sequence_loop_count):
        assert rel_l2(ours[loop], reference[loop]) < 1e-3, f"loop {loop}"


def test_cfg_is_uncond_plus_scale_times_difference(tiny_pipe):
    from seqwidgets.conditioning import PromptEncoder
    from seqwidgets.denoiser import CFGDenoiser

    ms = ModelSampling.from_pipeline(tiny_pipe)
    enc = PromptEncoder(tiny_pipe)
    pos, neg = enc.encode("a red circle"), enc.encode("blurry")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0])
    guided = CFGDenoiser(tiny_pipe.unet, ms, pos, neg, 7.5)(x, sigma)
    cond = CFGDenoiser(tiny_pipe.unet, ms, pos, neg, 1.0)(x, sigma)
    uncond = CFGDenoiser(tiny_pipe.unet, ms, neg, pos, 1.0)(x, sigma)
    # Batch-of-2 vs batch-of-1 UNet calls differ by float round-off, amplified by the scale.
    assert torch.allclose(guided, uncond + 7.5 * (cond - uncond), atol=1e-4)


def test_denoise_zero_returns_the_input_unchanged(tiny_pipe, record):
    unet = record(tiny_pipe.unet)
    params = sw.SequenceParams(**{**FAST, "denoise_seq": 0.0})
    frames = list(sw.SequenceSampler(tiny_pipe).frames(params))
    assert torch.equal(frames[1].latent, frames[0].latent)
    assert torch.equal(frames[2].latent, frames[0].latent)
    assert len(unet) == FAST["steps"]  # only loop 0 ran the model
    assert frames[1].steps == 0


def test_latent_interpolation_mixes_previous_result_and_sample(tiny_pipe):
    base = sw.SequenceParams(**FAST)
    plain = sw.SequenceSampler(tiny_pipe).sample(base.replace(sequence_loop_count=2))
    mixed = sw.SequenceSampler(tiny_pipe).sample(
        base.replace(
            sequence_loop_count=2, use_latent_interpolation=True, latent_interp_strength=0.25
        )
    )
    assert torch.equal(mixed[0], plain[0])
    assert torch.allclose(mixed[1], blend_latents(0.25, plain[0], plain[1]), atol=1e-6)


def test_stop_from_another_thread_keeps_finished_frames(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    params = sw.SequenceParams(**{**FAST, "sequence_loop_count": 5})

    def on_step(loop, step, sigma, denoised):
        if loop == 2 and step == 1:
            threading.Thread(target=sampler.stop).start()
            threading.Event().wait(0.05)

    frames = list(sampler.frames(params, callback=on_step))
    assert sampler.stopped
    assert [f.index for f in frames] == [0, 1]
    # The sampler is usable again and the kept frames are the ones a full run computes.
    full = sampler.sample(params)
    assert not sampler.stopped and full.shape[0] == 5
    assert torch.equal(full[1], frames[1].latent)


def test_a_second_concurrent_run_is_refused(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    params = sw.SequenceParams(**FAST)
    running = sampler.frames(params)
    next(running)
    with pytest.raises(RuntimeError, match="already running"):
        next(sampler.frames(params))
    running.close()
    assert sampler.sample(params).shape[0] == 3


def test_resuming_from_a_frame_reproduces_the_rest(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    params = sw.SequenceParams(**{**FAST, "sequence_loop_count": 4})
    frames = list(sampler.frames(params))
    resumed = list(sampler.frames(params, start=2, previous=frames[1].latent))
    assert [f.index for f in resumed] == [2, 3]
    assert all(torch.equal(a.latent, b.latent) for a, b in zip(frames[2:], resumed, strict=True))


def test_step_callback_sees_every_step_with_its_sigma(tiny_pipe):
    seen = []
    sampler = sw.SequenceSampler(tiny_pipe)
    params = sw.SequenceParams(**FAST)
    sampler.sample(params, callback=lambda loop, step, sigma, d: seen.append((loop, step, sigma)))
    plans = sampler.plan(params)
    expected = [(p.index, i, float(p.sigmas[i])) for p in plans for i in range(p.steps)]
    assert seen == expected


def test_unsample_then_sample_reconstructs_the_input(tiny_pipe):
    """Euler inversion up to the loop's first sigma, then Euler down again, same prompt.

    The round trip is exact up to the discretisation error of the two Euler passes, which
    shrinks with the step size: the bound is measured at 40 steps (about 1e-2 relative L2 on
    the tiny model, against about 1.0 for a loop that adds fresh noise instead).
    """
    params = sw.SequenceParams(
        positive_seq="0: a red circle", steps=40, sequence_loop_count=2, cfg=1.0, denoise_seq=0.3
    )
    unsampled = sw.SequenceSampler(tiny_pipe).sample(params.replace(unsample_latents=True))
    renoised = sw.SequenceSampler(tiny_pipe).sample(params)
    error = rel_l2(unsampled[1], unsampled[0])
    assert error < 0.05
    assert rel_l2(renoised[1], renoised[0]) > 5 * error


def test_unsample_costs_one_extra_pass_per_step(tiny_pipe, record):
    unet = record(tiny_pipe.unet)
    params = sw.SequenceParams(**{**FAST, "sequence_loop_count": 2, "unsample_latents": True})
    sw.SequenceSampler(tiny_pipe).sample(params)
    assert len(unet) == FAST["steps"] + 2 * FAST["steps"]


def test_sdxl_tiny_run_uses_pooled_embeddings_and_time_ids(tiny_xl_pipe, record):
    unet = record(tiny_xl_pipe.unet)
    encoder_2 = record(tiny_xl_pipe.text_encoder_2)
    params = sw.SequenceParams(**{**FAST, "positive_seq": "0: a red circle\n1: a blue square"})
    latents = sw.SequenceSampler(tiny_xl_pipe).sample(params)
    assert latents.shape == (3, 4, 8, 8) and torch.isfinite(latents).all()
    added = unet.calls[0][1]["added_cond_kwargs"]
    assert added["text_embeds"].shape == (2, 32)
    assert added["time_ids"].tolist()[0] == [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]
    assert len(encoder_2) == 3  # two positives and the empty negative


def test_conditioning_slerp_changes_only_keyframe_loops(tiny_pipe):
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n2: a blue square",
        steps=2,
        sequence_loop_count=4,
        use_conditioning_slerp=True,
        cond_slerp_strength=0.5,
    )
    plans = sw.SequenceSampler(tiny_pipe).plan(params)
    assert plans[1].positive == (("a red circle", 1.0),)
    assert plans[2].positive == plans[3].positive == (("a red circle", 1.0), ("a blue square", 0.5))


def test_bad_inputs_are_clear_value_errors(tiny_pipe):
    sampler = sw.SequenceSampler(tiny_pipe)
    params = sw.SequenceParams(**FAST)
    with pytest.raises(ValueError, match="latent_image must have shape"):
        next(sampler.frames(params, latent_image=torch.zeros(3, 8, 8)))
    with pytest.raises(ValueError, match="multiple of 8"):
        next(sampler.frames(params.replace(width=68)))
    with pytest.raises(ValueError, match="previous"):
        next(sampler.frames(params, start=1))
    with pytest.raises(ValueError, match="sampler_name"):
        params.replace(sampler_name="euler_magic")


def test_init_image_starts_loop_zero_from_its_latent(tiny_pipe):
    from PIL import Image

    image = Image.new("RGB", (64, 64), (200, 30, 30))
    params = sw.SequenceParams(**{**FAST, "denoise_start": 0.0, "sequence_loop_count": 1})
    frame = next(sw.SequenceSampler(tiny_pipe).frames(params, init_image=image))
    from seqwidgets.decode import encode_image

    assert torch.allclose(frame.latent, encode_image(tiny_pipe.vae, image)[0], atol=1e-6)


@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral", "dpmpp_2m_sde"])
def test_batched_variations_equal_separate_runs(tiny_pipe, record, sampler_name):
    base = sw.SequenceParams(**{**FAST, "sequence_loop_count": 4, "sampler_name": sampler_name})
    sampler = sw.SequenceSampler(tiny_pipe)
    fork = list(sampler.frames(base))[1]
    variations = [
        base.replace(seed=11),
        base.replace(positive_seq="0: a red circle\n2: a blue square", cfg=2.0),
        base.replace(use_latent_interpolation=True, latent_interp_strength=0.3),
    ]
    separate = [list(sampler.frames(v, start=2, previous=fork.latent)) for v in variations]
    unet = record(tiny_pipe.unet)
    batched = list(sampler.frames_batch(variations, start=2, previous=fork.latent))
    assert len(unet) == 2 * FAST["steps"]  # loops 2 and 3, one call per step for all three
    assert all(args[0].shape[0] == 6 for args, _ in unet.calls)
    for loop, frames in enumerate(batched):
        for item, frame in enumerate(frames):
            expected = separate[item][loop]
            assert (frame.index, frame.seed) == (expected.index, expected.seed)
            assert rel_l2(frame.latent, expected.latent) < 1e-4


def test_batched_variations_must_share_the_sigma_schedule(tiny_pipe):
    base = sw.SequenceParams(**FAST)
    sampler = sw.SequenceSampler(tiny_pipe)
    fork = next(sampler.frames(base))
    with pytest.raises(ValueError, match="steps"):
        next(sampler.frames_batch([base, base.replace(steps=5)], start=1, previous=fork.latent))
