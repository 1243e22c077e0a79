"""A plain, independent reading of KSampler Sequence as ComfyUI runs it, for parity tests.

Written straight from the node's ``sample`` loop and ComfyUI's conventions with nothing from
seqwidgets but the pipeline's components: numpy betas, ComfyUI's ``normal`` and ``karras``
schedules, the denoise tail, CPU noise from ``torch.manual_seed``, first-noise scaling, the
nearest-integer timestep, CFG from two separate UNet calls, and a hand-written Euler loop. If
seqwidgets drifts from any of these conventions, the per-loop latents stop matching.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class ComfyDiscreteSchedule:
    """ComfyUI's ModelSamplingDiscrete for SD's scaled_linear betas, read plainly."""

    def __init__(self, beta_start=0.00085, beta_end=0.012, steps=1000):
        betas = np.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=np.float64) ** 2
        alphas_cumprod = np.cumprod(1.0 - betas)
        self.sigmas = torch.tensor(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])

    def timestep(self, sigma: float) -> int:
        return int((math.log(sigma) - self.log_sigmas).abs().argmin())

    def sigma(self, t: float) -> float:
        low, high, w = math.floor(t), math.ceil(t), t - math.floor(t)
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return float(log_sigma.exp())

    def normal(self, steps: int) -> list[float]:
        start, end = self.timestep(self.sigma_max), self.timestep(self.sigma_min)
        ts = torch.linspace(start, end, steps)
        return [self.sigma(float(t)) for t in ts] + [0.0]

    def karras(self, steps: int, rho: float = 7.0) -> list[float]:
        ramp = torch.linspace(0, 1, steps)
        lo, hi = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)
        return [float(s) for s in (hi + ramp * (lo - hi)) ** rho] + [0.0]

    def loop_sigmas(self, scheduler: str, steps: int, denoise: float) -> list[float]:
        make = getattr(self, scheduler)
        if denoise > 0.9999:
            return make(steps)
        if denoise <= 0:
            return []
        return make(int(steps / denoise))[-(steps + 1) :]


def node_keyframe(keyframes, loop, last):
    """The node's update_conditioning: the keyframe at this loop, else the last one used."""
    for index, prompt in keyframes:
        if index == loop:
            return prompt
    return last


@torch.no_grad()
def reference_run(pipe, params, seeds):
    """The node's loop for the euler sampler, on a plain SD pipeline. Returns [N, C, h, w]."""
    schedule = ComfyDiscreteSchedule()
    unet = pipe.unet
    size = pipe.unet.config.sample_size
    shape = (1, unet.config.in_channels, size, size)

    def encode(prompt):
        return pipe.encode_prompt(prompt, "cpu", 1, False)[0]

    def model(x, sigma, embeds):
        t = torch.tensor([float(schedule.timestep(sigma))])
        eps = unet(x / math.sqrt(sigma**2 + 1), t, encoder_hidden_states=embeds).sample
        return x - eps * sigma

    results, positive, negative = [], None, None
    for loop in range(params.sequence_loop_count):
        positive = node_keyframe(params.positive_keyframes, loop, positive)
        negative = node_keyframe(params.negative_keyframes, loop, negative)
        if results:
            latent, denoise = results[-1], params.denoise_seq
        else:
            latent, denoise = torch.zeros(shape), params.denoise_start
        sigmas = schedule.loop_sigmas(params.scheduler, params.steps, denoise)
        if not sigmas:
            sample = latent
        else:
            noise = torch.randn(shape, generator=torch.manual_seed(seeds[loop]))
            first = sigmas[0]
            if math.isclose(first, schedule.sigma_max, rel_tol=1e-5) or first > schedule.sigma_max:
                x = latent + noise * math.sqrt(1 + first**2)
            else:
                x = latent + noise * first
            cond, uncond = encode(positive), encode(negative)
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
                d_cond = model(x, sigma, cond)
                d_uncond = model(x, sigma, uncond)
                denoised = d_uncond + (d_cond - d_uncond) * params.cfg
                x = x + (x - denoised) / sigma * (sigma_next - sigma)
            sample = x
        if params.use_latent_interpolation and results:
            strength = params.latent_interp_strength  # Blend: (1 - t) * previous + t * sample
            sample = (1 - strength) * results[-1] + strength * sample
        results.append(sample)
    return torch.cat(results)
