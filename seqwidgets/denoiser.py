"""The denoiser the samplers call: a diffusers UNet or transformer behind ComfyUI's conventions.

``CFGDenoiser(x, sigma)`` returns the denoised estimate of ``x`` at noise level ``sigma``:

1. the network sees the model sampling's input (``x / sqrt(sigma**2 + 1)`` for SD-style models,
   ``x`` itself for flow models) and its timestep (the *nearest integer* training step for SD,
   ``sigma * 1000`` for SD3, ``sigma`` for Flux, whose transformer multiplies by 1000 itself);
2. negative and positive prompts go through the network as one batch (one call per step);
3. ``denoised = x - sigma * eps`` (or the v-prediction form, or ``x - sigma * v`` for flow);
4. classifier-free guidance ``uncond + cfg * (cond - uncond)``; when every ``cfg == 1`` that is
   ``cond`` alone, so the negative half is skipped (ComfyUI's cfg1 optimisation). The CFG++
   samplers also read the negative prompt's estimate: ``denoise_with_uncond`` returns both from
   the same single call and never skips the negative half (ComfyUI disables the optimisation
   for them).

Flux reads the latent as 2x2 patches (packed tokens with image ids) and, for Flux dev, a
distilled guidance value (``flux_guidance``, ComfyUI's FluxGuidance, default 3.5).

A batch of latents may carry one conditioning and one cfg per item (branches run together).
Latents stay float32 between steps; only the network input is cast to its dtype (fp16 on CUDA),
as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .conditioning import Conditioning
from .families import (  # noqa: F401 (the packing helpers are part of this module's API)
    FAMILIES,
    Family,
    NetworkInputs,
    latent_image_ids,
    pack_latents,
    sdxl_time_ids,
    unpack_latents,
)


def _per_item_list(value: float | Sequence[float]) -> list[float]:
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


class CFGDenoiser:
    """Wraps a pipeline's UNet or transformer as a k-diffusion style denoiser with batched CFG.

    Args:
        network: the pipeline's ``UNet2DConditionModel``, ``SD3Transformer2DModel`` or
            ``FluxTransformer2DModel``.
        model_sampling: a `seqwidgets.schedules.ModelSampling` or ``FlowModelSampling`` on the
            network's device.
        positive, negative: a :class:`Conditioning` per batch item (or one for all).
        cfg: the guidance scale, one per batch item or one for all.
        time_ids: SDXL's ``add_time_ids`` ``[1, 6]``; ``None`` otherwise.
        family: the pipeline's `seqwidgets.families.Family` (default SD 1.x/2.x).
        guidance: Flux dev's distilled guidance, one per item or one for all (ignored by
            families without guidance embeddings).

    Attributes:
        calls: network forward passes made so far (one per step, CFG included).

    Example:
        >>> from seqwidgets.conditioning import PromptEncoder
        >>> from seqwidgets.families import detect_family
        >>> from seqwidgets.testing import tiny_pipeline
        >>> pipe = tiny_pipeline("flux")
        >>> family = detect_family(pipe)
        >>> cond = PromptEncoder(pipe).encode("a red circle")
        >>> denoiser = CFGDenoiser(pipe.transformer, family.model_sampling(pipe), cond, cond,
        ...                        1.0, family=family, guidance=3.5)
        >>> denoiser(torch.zeros(1, 16, 8, 8), torch.tensor([0.5])).shape, denoiser.calls
        (torch.Size([1, 16, 8, 8]), 1)
    """

    def __init__(
        self,
        network,
        model_sampling,
        positive: Conditioning | Sequence[Conditioning],
        negative: Conditioning | Sequence[Conditioning],
        cfg: float | Sequence[float],
        time_ids: torch.Tensor | None = None,
        *,
        family: Family | None = None,
        guidance: float | Sequence[float] = 3.5,
    ):
        positive = [positive] if isinstance(positive, Conditioning) else list(positive)
        negative = [negative] if isinstance(negative, Conditioning) else list(negative)
        cfgs = _per_item_list(cfg)
        if not len(positive) == len(negative) == len(cfgs):
            raise ValueError(
                f"one positive, negative and cfg per item: got {len(positive)}, "
                f"{len(negative)} and {len(cfgs)}"
            )
        self.network = network
        self.family = family or FAMILIES["sd"]
        self.model_sampling = model_sampling
        self.calls = 0
        # Read once: `network.dtype` walks every parameter, too slow to ask on every step.
        self.dtype = network.dtype
        self.items = len(cfgs)
        # Batch order [negatives..., positives...]. When every cfg is 1 a plain call sends only
        # the positives (ComfyUI's cfg1 optimisation); `denoise_with_uncond` always sends both.
        self.guided = any(c != 1.0 for c in cfgs)
        sides = Conditioning.cat(negative + positive)
        self._embeds = sides.embeds.to(self.dtype)
        device = self._embeds.device
        self._cfg = torch.tensor(cfgs, device=device).view(-1, 1, 1, 1)
        self._pooled = None if sides.pooled is None else sides.pooled.to(self.dtype)
        self._time_ids = None
        if time_ids is not None:  # SDXL's image size, one row per batch item (both sides)
            self._time_ids = time_ids.to(device=device, dtype=self.dtype).repeat(
                len(sides.embeds), 1
            )
        self._mask = sides.mask
        self._guidance = None
        if self.family.guidance_embeds:
            values = _per_item_list(guidance)
            values = values * len(cfgs) if len(values) == 1 else values
            if len(values) != len(cfgs):
                raise ValueError(f"one guidance per item: got {len(values)} for {len(cfgs)}")
            self._guidance = torch.tensor(values * 2, device=device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        if not self.guided:
            return self._denoise(x, sigma, both=False)
        uncond, cond = self._denoise(x, sigma, both=True).chunk(2)
        return uncond + (cond - uncond) * self._cfg

    @torch.no_grad()
    def denoise_with_uncond(
        self, x: torch.Tensor, sigma: torch.Tensor, **extra_args
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(denoised, uncond_denoised)`` from one network call on both prompt sides.

        What ComfyUI's ``_cfg_pp`` samplers read through ``sampler_post_cfg_function``: they
        also set ``disable_cfg1_optimization``, so at cfg 1 the negative half still runs and
        ``uncond_denoised`` is the negative prompt's estimate (not the positive one).

        Example:
            >>> from seqwidgets.conditioning import PromptEncoder
            >>> from seqwidgets.families import detect_family
            >>> from seqwidgets.testing import tiny_pipeline
            >>> pipe = tiny_pipeline()
            >>> enc, family = PromptEncoder(pipe), detect_family(pipe)
            >>> denoiser = CFGDenoiser(pipe.unet, family.model_sampling(pipe),
            ...     enc.encode("a red circle"), enc.encode("blurry"), 1.0, family=family)
            >>> denoised, uncond = denoiser.denoise_with_uncond(torch.zeros(1, 4, 8, 8),
            ...     torch.tensor([1.0]))
            >>> denoiser.calls, bool(torch.equal(denoised, uncond))
            (1, False)
        """
        uncond, cond = self._denoise(x, sigma, both=True).chunk(2)
        return uncond + (cond - uncond) * self._cfg, uncond

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, both: bool) -> torch.Tensor:
        """Denoised estimates for ``[negatives..., positives...]`` (``both``) or the positives."""
        ms = self.model_sampling
        repeats = 2 if both else 1
        x_in = ms.calculate_input(sigma, x).repeat(repeats, 1, 1, 1).to(self.dtype)
        timestep = ms.timestep(sigma).repeat(repeats)
        out = self._forward(x_in, timestep, slice(None) if both else slice(self.items, None))
        self.calls += 1
        return ms.calculate_denoised(sigma.repeat(repeats), out.float(), x.repeat(repeats, 1, 1, 1))

    def _forward(self, x_in: torch.Tensor, timestep: torch.Tensor, rows: slice) -> torch.Tensor:
        """One network call on the conditioning ``rows``; returns eps / v in the latent's layout."""
        inputs = NetworkInputs(
            self._embeds[rows],
            None if self._pooled is None else self._pooled[rows],
            None if self._mask is None else self._mask[rows],
            None if self._time_ids is None else self._time_ids[rows],
            None if self._guidance is None else self._guidance[rows],
        )
        return self.family.forward(self.network, x_in, timestep, inputs)
