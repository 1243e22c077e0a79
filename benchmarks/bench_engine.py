"""Engine overhead: SequenceSampler against a hand-written loop and a naive img2img loop.

Three ways to run the same sequence (same UNet calls, shapes and sigma slices):

* ``hand loop``: the minimum, written inline: prompts encoded once, one batched CFG UNet call
  per step and an Euler update, nothing else;
* ``engine``: ``SequenceSampler.sample`` (planning, prompt cache, step callback, per-loop CPU
  copy and NaN check included);
* ``img2img loop``: one ``StableDiffusionImg2ImgPipeline`` call per loop (``strength=denoise``,
  ``num_inference_steps=int(steps / denoise)``, latents in and out), which re-encodes the prompts
  and rebuilds its timesteps every loop: what people write without a sequence engine.

Every figure is the median of ``--repeats`` runs after a warm-up, and every comparison is a ratio
against the hand loop measured in the same process. Run:

    python benchmarks/bench_engine.py --model tiny-random --loops 8 --steps 10
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from common import machine, median_seconds, write_result

import seqwidgets as sw


@torch.no_grad()
def hand_loop(pipe, params: sw.SequenceParams, plans) -> torch.Tensor:
    """The same model calls as the engine for euler, with nothing around them."""
    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    ms = sw.schedules.ModelSampling.from_pipeline(pipe)
    log_sigmas = ms.log_sigmas.to(device)
    embeds = {}
    for plan in plans:
        for prompt in (plan.positive[0][0], plan.negative[0][0]):
            if prompt not in embeds:
                embeds[prompt] = pipe.encode_prompt(prompt, device, 1, False)[0]
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x_prev = torch.zeros(shape, device=device)
    results = []
    for plan in plans:
        sigmas = plan.sigmas.to(device)
        context = torch.cat([embeds[plan.negative[0][0]], embeds[plan.positive[0][0]]]).to(dtype)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(plan.seed))
        first = float(plan.sigmas[0])
        scale = math.sqrt(1 + first**2) if plan.index == 0 else first
        x = x_prev + noise.to(device) * scale
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i]
            t = (sigma.log() - log_sigmas).abs().argmin().float()
            model_in = (x / torch.sqrt(sigma**2 + 1)).repeat(2, 1, 1, 1).to(dtype)
            eps = unet(model_in, t.repeat(2), encoder_hidden_states=context).sample.float()
            uncond, cond = (x.repeat(2, 1, 1, 1) - eps * sigma).chunk(2)
            denoised = uncond + (cond - uncond) * params.cfg
            x = x + (x - denoised) / sigma * (sigmas[i + 1] - sigma)
        x_prev = x
        results.append(x.cpu())
    return torch.cat(results)


@torch.no_grad()
def img2img_loop(img2img, params: sw.SequenceParams, plans) -> torch.Tensor:
    latents = None
    results = []
    for plan in plans:
        prompt, negative = plan.positive[0][0], plan.negative[0][0]
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        if latents is None:
            shape = (1, 4, img2img.unet.config.sample_size, img2img.unet.config.sample_size)
            latents = torch.zeros(shape, device=img2img.device)
            strength = params.denoise_start
        else:
            strength = params.denoise_seq
        latents = img2img(
            prompt=prompt,
            negative_prompt=negative,
            image=latents,
            strength=strength,
            num_inference_steps=max(1, int(params.steps / strength)),
            guidance_scale=params.cfg,
            generator=generator,
            output_type="latent",
        ).images
        results.append(latents.cpu())
    return torch.cat(results)


def count_calls(module, run) -> int:
    calls = []
    handle = module.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the shipped toy model")
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = sw.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    params = sw.SequenceParams(
        positive_seq="0: a red circle\n4: a blue square",
        negative_seq="",
        sequence_loop_count=args.loops,
        steps=args.steps,
        cfg=6.0,
        denoise_seq=0.5,
    )
    sampler = sw.SequenceSampler(pipe)
    plans = sampler.plan(params)

    runs = {
        "hand loop": lambda: hand_loop(pipe, params, plans),
        # A fresh sampler per run, so its prompt cache starts empty like the other two.
        "engine": lambda: sw.SequenceSampler(pipe).sample(params),
        "img2img loop": lambda: img2img_loop(img2img, params, plans),
    }
    engine_out, hand_out = runs["engine"](), runs["hand loop"]()
    agreement = float((engine_out.float() - hand_out).norm() / hand_out.norm())
    seconds = {name: median_seconds(run, args.repeats) for name, run in runs.items()}
    unet_calls = {name: count_calls(pipe.unet, run) for name, run in runs.items()}
    text_calls = {name: count_calls(pipe.text_encoder, run) for name, run in runs.items()}

    base = seconds["hand loop"]
    print(
        f"{args.loops} loops x {args.steps} steps, model {args.model or 'toy'}, "
        f"device {pipe.device}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'':14}{'seconds':>9}{'x hand loop':>13}{'UNet calls/loop':>17}{'text enc calls':>16}")
    for name in runs:
        print(
            f"{name:14}{seconds[name]:9.3f}{seconds[name] / base:13.3f}"
            f"{unet_calls[name] / args.loops:17.1f}{text_calls[name]:16d}"
        )
    print(f"engine vs hand loop latents: relative L2 {agreement:.2e}")
    result = {
        "benchmark": "engine_overhead",
        **machine(pipe),
        "model": args.model or "toy",
        "loops": args.loops,
        "steps": args.steps,
        "repeats": args.repeats,
        "seconds": seconds,
        "ratio_to_hand_loop": {k: v / base for k, v in seconds.items()},
        "unet_calls_per_loop": {k: v / args.loops for k, v in unet_calls.items()},
        "text_encoder_calls_per_run": text_calls,
        "engine_vs_hand_rel_l2": agreement,
    }
    return write_result(args.json, result)


if __name__ == "__main__":
    main()
