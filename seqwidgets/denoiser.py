"""The denoiser the samplers call: a diffusers UNet behind ComfyUI's conventions.

``CFGDenoiser(x, sigma)`` returns the denoised estimate of ``x`` at noise level ``sigma``:

1. the UNet sees ``x / sqrt(sigma**2 + 1)`` and the *nearest integer* training step of ``sigma``;
2. positive and negative prompts go through the UNet as one batch (one call per step);
3. ``denoised = x - sigma * eps`` (or the v-prediction form) for each;
4. classifier-free guidance ``uncond + cfg * (cond - uncond)``; at ``cfg == 1`` that is ``cond``
   alone, so the negative half is skipped (ComfyUI's cfg1 optimisation).

Latents stay float32 between steps; only the UNet input is cast to the UNet's dtype (fp16 on
CUDA), as ComfyUI does.
"""

from __future__ import annotations

import torch

from .conditioning import Conditioning


class CFGDenoiser:
    """Wraps ``pipe.unet`` as a k-diffusion style denoiser with batched CFG.

    Args:
        unet: the pipeline's ``UNet2DConditionModel``.
        model_sampling: a :class:`seqwidgets.sampling.ModelSampling` on the UNet's device.
        positive, negative: :class:`Conditioning` for each side.
        cfg (`float`): guidance scale.
        time_ids: SDXL's ``add_time_ids`` ``[1, 6]``; ``None`` for SD 1.x/2.x.

    Attributes:
        calls: UNet forward passes made so far (one per step, CFG included).
    """

    def __init__(
        self,
        unet,
        model_sampling,
        positive: Conditioning,
        negative: Conditioning,
        cfg: float,
        time_ids: torch.Tensor | None = None,
    ):
        self.unet = unet
        self.model_sampling = model_sampling
        self.cfg = float(cfg)
        self.calls = 0
        # Batch order [negative, positive]; at cfg 1 only the positive half exists.
        sides = [positive] if self.cfg == 1.0 else [negative, positive]
        # Read once: `unet.dtype` walks every parameter, too slow to ask on every step.
        self.dtype = dtype = unet.dtype
        self._embeds = torch.cat([s.embeds for s in sides]).to(dtype)
        self._added = None
        if positive.pooled is not None:
            pooled = torch.cat([s.pooled for s in sides]).to(dtype)
            ids = time_ids.to(device=pooled.device, dtype=dtype).repeat(len(sides), 1)
            self._added = {"text_embeds": pooled, "time_ids": ids}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        ms = self.model_sampling
        sides = self._embeds.shape[0]
        batch = x.shape[0]
        x_in = ms.calculate_input(sigma, x)
        t = ms.timestep(sigma)
        # Each latent in the batch pairs with every prompt side: [neg x B, pos x B].
        model_in = x_in.repeat(sides, 1, 1, 1).to(self.dtype)
        embeds = self._embeds.repeat_interleave(batch, dim=0)
        added = None
        if self._added is not None:
            added = {k: v.repeat_interleave(batch, dim=0) for k, v in self._added.items()}
        eps = self.unet(
            model_in,
            t.repeat(sides),
            encoder_hidden_states=embeds,
            added_cond_kwargs=added,
            return_dict=False,
        )[0].float()
        self.calls += 1
        denoised = ms.calculate_denoised(sigma.repeat(sides), eps, x.repeat(sides, 1, 1, 1))
        if sides == 1:
            return denoised
        uncond, cond = denoised.chunk(2)
        return uncond + (cond - uncond) * self.cfg


def sdxl_time_ids(height: int, width: int) -> torch.Tensor:
    """SDXL's ``add_time_ids``: original size, crop top-left (0, 0), target size.

    Example:
        >>> sdxl_time_ids(1024, 768).tolist()
        [[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0]]
    """
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
