"""Model families: which kind of diffusers pipeline this is, and what follows from that.

One detection, :func:`detect_family`, used everywhere (engine, prompt encoding, previews,
sessions, loading). A :class:`Family` says how to read the pipeline, following ComfyUI's
``comfy/supported_models.py`` and ``comfy/latent_formats.py``:

=================  ==============  ==========================================  ==========
family             network         model sampling (ComfyUI)                    latents
=================  ==============  ==========================================  ==========
``sd``             ``unet``        discrete, eps                               4 channels
``sd-v``           ``unet``        discrete, v-prediction (SD 2.x 768)         4 channels
``sdxl``           ``unet``        discrete, eps; pooled text + time ids       4 channels
``sd3``            ``transformer`` discrete flow, shift 3, multiplier 1000     16 channels
``flux-dev``       ``transformer`` Flux flow, shift 1.15; guidance embedding   16, packed
``flux-schnell``   ``transformer`` discrete flow, shift 1, multiplier 1        16, packed
=================  ==============  ==========================================  ==========

Example:
    >>> from seqwidgets.testing import tiny_pipeline
    >>> family = detect_family(tiny_pipeline("sdxl"))
    >>> family.name, family.network, family.pooled
    ('sdxl', 'unet', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .schedules import AnyModelSampling, FlowModelSampling, ModelSampling

__all__ = ["FAMILIES", "Family", "detect_family", "model_sampling_for"]

# ComfyUI's preview factors (comfy/latent_formats.py): rows are latent channels, columns R, G, B,
# for latents in the model's scaling (diffusers' scaling).
SD15_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SDXL_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS: tuple[float, float, float] = (0.1084, -0.0175, -0.0011)
SD3_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_LATENT_RGB_BIAS: tuple[float, float, float] = (0.2394, 0.2135, 0.1925)
FLUX_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_LATENT_RGB_BIAS: tuple[float, float, float] = (-0.0329, -0.0718, -0.0851)


@dataclass(frozen=True)
class Family:
    """What one model family needs from the engine.

    Attributes:
        name: ``"sd"``, ``"sd-v"``, ``"sdxl"``, ``"sd3"``, ``"flux-dev"`` or ``"flux-schnell"``.
        label: a name for people (``"Stable Diffusion 3"``).
        network: the pipeline attribute holding the denoising network (``"unet"`` or
            ``"transformer"``).
        pooled: the conditioning carries a pooled text embedding (SDXL, SD3, Flux).
        packed: the transformer reads 2x2 patches of the latent as tokens (Flux), with image ids.
        guidance_embeds: the transformer takes a distilled guidance value (Flux dev): the
            ``flux_guidance`` setting.
        flow: flow-matching sampling (ComfyUI's ``CONST``).
        shift, multiplier: the flow table's settings (see `FlowModelSampling`).
        flow_kind: ``"discrete"`` or ``"flux"`` (the flow table).
        latent_rgb: ComfyUI's preview ``(factors, bias)``; bias ``None`` where ComfyUI has none.
    """

    name: str
    label: str
    network: str
    pooled: bool = False
    packed: bool = False
    guidance_embeds: bool = False
    flow: bool = False
    shift: float = 1.0
    multiplier: float = 1000.0
    flow_kind: str = "discrete"
    latent_rgb: tuple[Any, Any] | None = None

    def model_sampling(self, pipe: Any) -> AnyModelSampling:
        """This family's model sampling: ComfyUI's fixed settings, or the SD scheduler's betas."""
        if self.flow:
            return FlowModelSampling(self.flow_kind, self.shift, self.multiplier)
        return ModelSampling.from_pipeline(pipe)

    def denoiser_network(self, pipe: Any) -> torch.nn.Module:
        """The pipeline's UNet or transformer."""
        return getattr(pipe, self.network)

    def latent_channels(self, pipe: Any) -> int:
        """Channels of a latent as sessions store it (unpacked): the VAE's latent channels."""
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            return int(vae.config.latent_channels)
        channels = int(self.denoiser_network(pipe).config.in_channels)
        return channels // 4 if self.packed else channels

    def size_multiple(self, pipe: Any) -> int:
        """Image width / height must be multiples of this (VAE factor x patch size)."""
        patch = getattr(self.denoiser_network(pipe).config, "patch_size", 1) or 1
        if self.packed:
            patch = 2  # 2x2 latent patches per token
        return int(pipe.vae_scale_factor) * int(patch)

    def default_image_size(self, pipe: Any) -> int:
        """The pipeline's default square image side in pixels."""
        if self.packed:  # FluxPipeline keeps its default on the pipeline (128 latent pixels)
            return int(getattr(pipe, "default_sample_size", 128)) * int(pipe.vae_scale_factor)
        return int(self.denoiser_network(pipe).config.sample_size) * int(pipe.vae_scale_factor)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "sd", "Stable Diffusion 1.x / 2.x", "unet", latent_rgb=(SD15_LATENT_RGB_FACTORS, None)
        ),
        Family(
            "sd-v",
            "Stable Diffusion 2.x (v-prediction)",
            "unet",
            latent_rgb=(SD15_LATENT_RGB_FACTORS, None),
        ),
        Family(
            "sdxl",
            "Stable Diffusion XL",
            "unet",
            pooled=True,
            latent_rgb=(SDXL_LATENT_RGB_FACTORS, SDXL_LATENT_RGB_BIAS),
        ),
        Family(
            "sd3",
            "Stable Diffusion 3 / 3.5",
            "transformer",
            pooled=True,
            flow=True,
            shift=3.0,
            multiplier=1000.0,
            latent_rgb=(SD3_LATENT_RGB_FACTORS, SD3_LATENT_RGB_BIAS),
        ),
        Family(
            "flux-dev",
            "Flux (guidance-distilled, dev)",
            "transformer",
            pooled=True,
            packed=True,
            guidance_embeds=True,
            flow=True,
            shift=1.15,
            multiplier=1.0,
            flow_kind="flux",
            latent_rgb=(FLUX_LATENT_RGB_FACTORS, FLUX_LATENT_RGB_BIAS),
        ),
        Family(
            "flux-schnell",
            "Flux (schnell)",
            "transformer",
            pooled=True,
            packed=True,
            flow=True,
            shift=1.0,
            multiplier=1.0,
            latent_rgb=(FLUX_LATENT_RGB_FACTORS, FLUX_LATENT_RGB_BIAS),
        ),
    )
}


def _config(module: Any) -> Mapping[str, Any]:
    config = getattr(module, "config", None)
    return config if isinstance(config, Mapping) else {}


def detect_family(pipe: Any) -> Family:
    """The family of a diffusers pipeline, from its networks' configurations.

    A ``transformer`` whose config has rotary ``axes_dims_rope`` is Flux (dev when it has
    guidance embeddings, schnell otherwise); one with ``caption_projection_dim`` is SD3. A
    ``unet`` with a second text encoder is SDXL; otherwise SD 1.x/2.x, ``sd-v`` when the
    scheduler predicts v.

    Raises:
        ValueError: for a pipeline of none of these families, naming what it lacks.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> detect_family(tiny_pipeline()).name
        'sd'
    """
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        config = _config(transformer)
        if "axes_dims_rope" in config:
            return FAMILIES["flux-dev" if config.get("guidance_embeds") else "flux-schnell"]
        if "caption_projection_dim" in config:
            return FAMILIES["sd3"]
        raise ValueError(
            f"{type(pipe).__name__}: its transformer ({type(transformer).__name__}) is neither "
            "SD3's nor Flux's; seqwidgets runs SD 1.x/2.x, SDXL, SD3/SD3.5 and Flux pipelines"
        )
    if getattr(pipe, "unet", None) is not None:
        if getattr(pipe, "text_encoder_2", None) is not None:
            return FAMILIES["sdxl"]
        scheduler = _config(getattr(pipe, "scheduler", None))
        return FAMILIES["sd-v" if scheduler.get("prediction_type") == "v_prediction" else "sd"]
    raise ValueError(
        f"{type(pipe).__name__} has neither a 'unet' nor a 'transformer'; seqwidgets runs SD "
        "1.x/2.x, SDXL, SD3/SD3.5 and Flux pipelines"
    )


def model_sampling_for(obj: Any) -> AnyModelSampling:
    """The model sampling of a pipeline (by its family), or ``obj`` itself if it is one.

    A bare diffusers scheduler (no pipeline around it) is read as an SD-style schedule.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> model_sampling_for(tiny_pipeline()).prediction_type
        'epsilon'
    """
    if isinstance(obj, (ModelSampling, FlowModelSampling)):
        return obj
    if getattr(obj, "unet", None) is None and getattr(obj, "transformer", None) is None:
        return ModelSampling.from_pipeline(obj)
    return detect_family(obj).model_sampling(obj)
