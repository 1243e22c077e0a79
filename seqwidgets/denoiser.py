"""The denoiser the samplers call: a diffusers UNet behind ComfyUI's conventions.

``CFGDenoiser(x, sigma)`` returns the denoised estimate of ``x`` at noise level ``sigma``:

1. the UNet sees ``x / sqrt(sigma**2 + 1)`` and the *nearest integer* training step of ``sigma``;
2. negative and positive prompts go through the UNet as one batch (one call per step);
3. ``denoised = x - sigma * eps`` (or the v-prediction form) for each;
4. classifier-free guidance ``uncond + cfg * (cond - uncond)``; when every ``cfg == 1`` that is
   ``cond`` alone, so the negative half is skipped (ComfyUI's cfg1 optimisation).

A batch of latents may carry one conditioning and one cfg per item (branches run together).
Latents stay float32 between steps; only the UNet input is cast to the UNet's dtype (fp16 on
CUDA), as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .conditioning import Conditioning


class CFGDenoiser:
    """Wraps ``pipe.unet`` as a k-diffusion style denoiser with batched CFG.

    Args:
        unet: the pipeline's ``UNet2DConditionModel``.
        model_sampling: a :class:`seqwidgets.schedules.ModelSampling` on the UNet's device.
        positive, negative: a :class:`Conditioning` per batch item (or one for all).
        cfg: the guidance scale, one per batch item or one for all.
        time_ids: SDXL's ``add_time_ids`` ``[1, 6]``; ``None`` for SD 1.x/2.x.

    Attributes:
        calls: UNet forward passes made so far (one per step, CFG included).
    """

    def __init__(
        self,
        unet,
        model_sampling,
        positive: Conditioning | Sequence[Conditioning],
        negative: Conditioning | Sequence[Conditioning],
        cfg: float | Sequence[float],
        time_ids: torch.Tensor | None = None,
    ):
        positive = [positive] if isinstance(positive, Conditioning) else list(positive)
        negative = [negative] if isinstance(negative, Conditioning) else list(negative)
        cfgs = [float(cfg)] if isinstance(cfg, (int, float)) else [float(c) for c in cfg]
        if not len(positive) == len(negative) == len(cfgs):
            raise ValueError(
                f"one positive, negative and cfg per item: got {len(positive)}, "
                f"{len(negative)} and {len(cfgs)}"
            )
        self.unet = unet
        self.model_sampling = model_sampling
        self.calls = 0
        # Read once: `unet.dtype` walks every parameter, too slow to ask on every step.
        self.dtype = unet.dtype
        self.items = len(cfgs)
        # Batch order [negatives..., positives...]; when every cfg is 1 only the positives.
        self.guided = any(c != 1.0 for c in cfgs)
        sides = Conditioning.cat(negative + positive if self.guided else positive)
        self._embeds = sides.embeds.to(self.dtype)
        device = self._embeds.device
        self._cfg = torch.tensor(cfgs, device=device).view(-1, 1, 1, 1)
        self._added = None
        if sides.pooled is not None:
            ids = time_ids.to(device=device, dtype=self.dtype).repeat(len(sides.pooled), 1)
            self._added = {"text_embeds": sides.pooled.to(self.dtype), "time_ids": ids}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        ms = self.model_sampling
        repeats = self._embeds.shape[0] // x.shape[0]
        x_in = ms.calculate_input(sigma, x)
        eps = self.unet(
            x_in.repeat(repeats, 1, 1, 1).to(self.dtype),
            ms.timestep(sigma).repeat(repeats),
            encoder_hidden_states=self._embeds,
            added_cond_kwargs=self._added,
            return_dict=False,
        )[0].float()
        self.calls += 1
        denoised = ms.calculate_denoised(sigma.repeat(repeats), eps, x.repeat(repeats, 1, 1, 1))
        if not self.guided:
            return denoised
        uncond, cond = denoised.chunk(2)
        return uncond + (cond - uncond) * self._cfg


def sdxl_time_ids(height: int, width: int) -> torch.Tensor:
    """SDXL's ``add_time_ids``: original size, crop top-left (0, 0), target size.

    Example:
        >>> sdxl_time_ids(1024, 768).tolist()
        [[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0]]
    """
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
