"""Model families: which kind of diffusers pipeline this is, and what follows from that.

One detection, :func:`detect_family`, used everywhere (engine, prompt encoding, previews,
sessions, loading). A :class:`Family` says how to read the pipeline, following ComfyUI's
``comfy/supported_models.py`` and ``comfy/latent_formats.py``:

================  ===============  =============================================  ============
family            network          model sampling (ComfyUI); text                 latents
================  ===============  =============================================  ============
``sd``            ``unet``         discrete, eps                                  4 channels
``sd-v``          ``unet``         discrete, v-prediction (SD 2.x 768)            4 channels
``sdxl``          ``unet``         discrete, eps; pooled text + time ids          4 channels
``sd3``           ``transformer``  discrete flow, shift 3, multiplier 1000        16 channels
``flux-dev``      ``transformer``  Flux flow, shift 1.15; guidance embedding      16, packed
``flux-schnell``  ``transformer``  discrete flow, shift 1, multiplier 1           16, packed
``chroma``        ``transformer``  Flux flow, shift 1.15; T5 only                 16, packed
``flux2``         ``transformer``  Flux flow, shift 2.02; guidance embedding      32, packed
``flux2-klein``   ``transformer``  Flux flow, shift 2.02                          32, packed
``qwen-image``    ``transformer``  Flux flow, shift 1.15; Qwen2.5-VL              16 (Wan 2.1)
``hidream``       ``transformer``  discrete flow, shift 1, multiplier 1000        16
``lumina2``       ``transformer``  discrete flow, shift 6, multiplier 1; Gemma 2  16
``z-image``       ``transformer``  discrete flow, shift 3, multiplier 1; Qwen3    16
================  ===============  =============================================  ============

Example:
    >>> from seqwidgets.testing import tiny_pipeline
    >>> family = detect_family(tiny_pipeline("sdxl"))
    >>> family.name, family.network, family.pooled
    ('sdxl', 'unet', True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch

from .schedules import AnyModelSampling, FlowModelSampling, ModelSampling
from .tiny_decoders import TAEF2_HUB_ID, TAEW21_URL, load_taef2, load_taew21

__all__ = [
    "FAMILIES",
    "Family",
    "LatentFormat",
    "NetworkInputs",
    "TokenLimit",
    "detect_family",
    "latent_format",
    "model_sampling_for",
    "pack_latents",
    "sdxl_time_ids",
    "unpack_latents",
]

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
# Flux.2's (later ComfyUI's ``Flux2``): 32 rows, for the latent as 32 channels of 2x2 pixels,
# seqwidgets' layout (ComfyUI reshapes its 128 patched channels to it for the preview).
FLUX2_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (0.0058, 0.0113, 0.0073),
    (0.0495, 0.0443, 0.0836),
    (-0.0099, 0.0096, 0.0644),
    (0.2144, 0.3009, 0.3652),
    (0.0166, -0.0039, -0.0054),
    (0.0157, 0.0103, -0.0160),
    (-0.0398, 0.0902, -0.0235),
    (-0.0052, 0.0095, 0.0109),
    (-0.3527, -0.2712, -0.1666),
    (-0.0301, -0.0356, -0.0180),
    (-0.0107, 0.0078, 0.0013),
    (0.0746, 0.0090, -0.0941),
    (0.0156, 0.0169, 0.0070),
    (-0.0034, -0.0040, -0.0114),
    (0.0032, 0.0181, 0.0080),
    (-0.0939, -0.0008, 0.0186),
    (0.0018, 0.0043, 0.0104),
    (0.0284, 0.0056, -0.0127),
    (-0.0024, -0.0022, -0.0030),
    (0.1207, -0.0026, 0.0065),
    (0.0128, 0.0101, 0.0142),
    (0.0137, -0.0072, -0.0007),
    (0.0095, 0.0092, -0.0059),
    (0.0000, -0.0077, -0.0049),
    (-0.0465, -0.0204, -0.0312),
    (0.0095, 0.0012, -0.0066),
    (0.0290, -0.0034, 0.0025),
    (0.0220, 0.0169, -0.0048),
    (-0.0332, -0.0457, -0.0468),
    (-0.0085, 0.0389, 0.0609),
    (-0.0076, 0.0003, -0.0043),
    (-0.0111, -0.0460, -0.0614),
)
FLUX2_LATENT_RGB_BIAS: tuple[float, float, float] = (-0.0329, -0.0718, -0.0851)
# Wan 2.1's (Qwen-Image's VAE), for latents after its per-channel normalisation.
WAN21_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN21_LATENT_RGB_BIAS: tuple[float, float, float] = (-0.1835, -0.0868, -0.3360)


@dataclass(frozen=True)
class LatentFormat:
    """How a VAE's raw latents become the latents the network samples (diffusers' scaling).

    ``process_in`` is ComfyUI's ``LatentFormat.process_in``: ``(raw - shift) * scale``, or with
    per-channel statistics (Qwen-Image's Wan 2.1 VAE) ``(raw - mean_c) * scale / std_c``.
    ``frames``: the VAE is a video VAE (Wan 2.1's, Qwen-Image's) that reads and writes one
    frame, ``[N, C, 1, h, w]``; seqwidgets keeps such latents 4-D and adds the frame axis only
    around VAE calls (`to_vae`, `from_vae`). ``patched``: the statistics are of the latent's
    2x2 patches, ``4C`` channels (Flux.2's VAE batch norm); seqwidgets keeps such latents
    ``[C, h, w]``, where ComfyUI keeps them patched, ``[4C, h/2, w/2]``: the same numbers.

    Example:
        >>> fmt = LatentFormat(channels=16, scale=0.3611, shift=0.1159)
        >>> round(float(fmt.process_out(fmt.process_in(torch.tensor(1.0)))), 6)
        1.0
    """

    channels: int
    scale: float = 1.0
    shift: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    frames: bool = False
    patched: bool = False

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean), *([1] * (like.ndim - 2)))
        mean = torch.tensor(self.mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(self.std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def process_in(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents ``[N, C, ...]`` -> the model's latents."""
        if self.patched:
            return unpatchify(self._replace(patched=False).process_in(patchify(raw)))
        if self.mean is not None:
            mean, std = self._stats(raw)
            return (raw - mean) * self.scale / std
        return (raw - self.shift) * self.scale

    def process_out(self, latents: torch.Tensor) -> torch.Tensor:
        """The model's latents ``[N, C, ...]`` -> raw VAE latents."""
        if self.patched:
            return unpatchify(self._replace(patched=False).process_out(patchify(latents)))
        if self.mean is not None:
            mean, std = self._stats(latents)
            return latents * std / self.scale + mean
        return latents / self.scale + self.shift

    def _replace(self, **changes) -> LatentFormat:
        return dataclasses.replace(self, **changes)

    def to_vae(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, h, w]`` latents or images as the VAE takes them (a frame axis for video)."""
        return x[:, :, None] if self.frames else x

    def from_vae(self, x: torch.Tensor) -> torch.Tensor:
        """The VAE's latents or images as ``[N, C, h, w]`` (the one frame, for video VAEs)."""
        return x[:, :, 0] if self.frames else x


def latent_format(vae: Any) -> LatentFormat:
    """The latent format a diffusers VAE's config declares (``scaling_factor``,
    ``shift_factor``, or ``latents_mean`` / ``latents_std`` as diffusers reads them; a video
    VAE's ``z_dim`` channels and frame axis).

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> fmt = latent_format(tiny_pipeline().vae)
        >>> fmt.channels, fmt.scale, fmt.shift, fmt.mean
        (4, 0.18215, 0.0, None)
    """
    config = vae.config
    scale = float(config.get("scaling_factor") or 1.0)
    norm = getattr(vae, "bn", None)
    if isinstance(norm, torch.nn.BatchNorm2d):  # Flux.2: statistics of the 2x2 patches
        mean = tuple(norm.running_mean.tolist())
        std = tuple((norm.running_var + norm.eps).sqrt().tolist())
        return LatentFormat(int(config.latent_channels), mean=mean, std=std, patched=True)
    frames = config.get("latent_channels") is None and config.get("z_dim") is not None
    channels = int(config.get("z_dim") if frames else config.get("latent_channels"))
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is not None and std is not None:
        return LatentFormat(channels, scale, mean=tuple(mean), std=tuple(std), frames=frames)
    return LatentFormat(channels, scale, shift=float(config.get("shift_factor") or 0.0))


@dataclass(frozen=True)
class NetworkInputs:
    """The conditioning side of one batched network call, built once per denoiser.

    Attributes:
        embeds: token embeddings ``[B, tokens, dim]`` in the network's dtype.
        pooled: pooled text embeddings ``[B, dim]`` (SDXL, SD3, Flux), else ``None``.
        mask: ``[B, tokens]``, 1 where a token is read (padded prompts), else ``None``.
        time_ids: SDXL's ``add_time_ids`` ``[B, 6]``, else ``None``.
        guidance: Flux dev's distilled guidance ``[B]``, else ``None``.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None
    guidance: torch.Tensor | None = None


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):  # up to the shorter one
        if x != y:
            break
        count += 1
    return count


def plain_tokens(pipe: Any, tokenizer: Any, prompt: str, max_length: int | None) -> list[int]:
    """The prompt's token ids as a pipeline tokenizes it for CLIP, T5, Gemma or Llama: the text
    alone with the tokenizer's start / end tokens, cut to ``max_length`` when given."""
    if max_length is None:
        return list(tokenizer(prompt).input_ids)
    return list(tokenizer(prompt, max_length=max_length, truncation=True).input_ids)


def chat_tokens(
    pipe: Any, tokenizer: Any, prompt: str, max_length: int | None, *, thinking: bool
) -> list[int]:
    """Z-Image's and Flux.2 klein's tokens: the prompt as a user turn of the tokenizer's chat
    template, with the assistant's turn opened (``enable_thinking`` as each pipeline sets it)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=thinking,
    )
    return plain_tokens(pipe, tokenizer, text, max_length)


def qwen_image_tokens(pipe: Any, tokenizer: Any, prompt: str, max_length: int | None) -> list[int]:
    """Qwen-Image's tokens: the prompt in the pipeline's template, whose system part (the first
    ``prompt_template_encode_start_idx`` tokens) is dropped from the encoding; the pipeline
    cuts at ``max_sequence_length`` tokens after it, and its tokenizer at
    ``tokenizer_max_length`` (1024)."""
    drop = int(pipe.prompt_template_encode_start_idx)
    text = pipe.prompt_template_encode.format(prompt)
    if max_length is None:
        return plain_tokens(pipe, tokenizer, text, None)[drop:]
    ids = plain_tokens(pipe, tokenizer, text, int(pipe.tokenizer_max_length) + drop)
    return ids[drop:][:max_length]  # the encoding's tokens, cut after the text encoder


def mistral_chat_tokens(
    pipe: Any, tokenizer: Any, prompt: str, max_length: int | None
) -> list[int]:
    """Flux.2 dev's tokens: the pipeline's system message and the prompt as a user turn,
    through the processor's chat template, as ``Flux2Pipeline`` tokenizes them."""
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input

    cut = {} if max_length is None else dict(truncation=True, max_length=max_length)
    ids = tokenizer.apply_chat_template(
        format_input(prompts=[prompt], system_message=pipe.system_message),
        add_generation_prompt=False,
        tokenize=True,
        return_dict=True,
        **cut,
    )["input_ids"]
    return list(ids[0])


@dataclass(frozen=True)
class TokenLimit:
    """Where a pipeline cuts a prompt: a text encoder whose tokens the network reads, and the
    number of tokens its tokenization keeps (start, end and template tokens included).

    Attributes:
        encoder: the encoder's name for people (``"T5"``, ``"Qwen2.5-VL"``).
        tokenizer: the pipeline attribute holding its tokenizer.
        by: what sets the limit: ``"max_sequence_length"`` (the pipeline's argument; T5, Gemma,
            Qwen, Mistral), ``"tokenizer"`` (the tokenizer's ``model_max_length``: CLIP's 77)
            or ``"both"`` (the smaller of the two: HiDream's T5 and Llama).
        tokenize: ``tokenize(pipe, tokenizer, prompt, max_length)``: the prompt's token ids
            as the pipeline tokenizes them, cut to ``max_length`` when it is not ``None``.
        unless: the limit does not count when the pipeline has this component (SD3's CLIP,
            whose 77 tokens do not cut a prompt its T5 reads whole).
        only_with: the limit counts only when the pipeline has this attribute (the text side
            is the pipeline's: Flux.2 dev's Mistral 3 reads its ``system_message``, klein's
            Qwen3 none, whichever transformer the pipeline holds).

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> clip = TokenLimit("CLIP", by="tokenizer")
        >>> clip.cut(tiny_pipeline(), "a " * 80, 256)
        (82, 77, 'a a a a a')
    """

    encoder: str
    tokenizer: str = "tokenizer"
    by: str = "max_sequence_length"
    tokenize: Callable[[Any, Any, str, int | None], list[int]] = plain_tokens
    unless: str | None = None
    only_with: str | None = None

    def limit(self, pipe: Any, max_sequence_length: int) -> int | None:
        """Tokens this encoder reads in ``pipe`` (``None`` when it does not apply there)."""
        tokenizer = getattr(pipe, self.tokenizer, None)
        if tokenizer is None or (self.unless and getattr(pipe, self.unless, None) is not None):
            return None
        if self.only_with and getattr(pipe, self.only_with, None) is None:
            return None
        own = int(getattr(tokenizer, "tokenizer", tokenizer).model_max_length)
        if self.by == "tokenizer":
            return own
        if self.by == "both":
            return min(own, int(max_sequence_length))
        return int(max_sequence_length)

    def cut(self, pipe: Any, prompt: str, max_sequence_length: int) -> tuple[int, int, str] | None:
        """``(tokens, limit, dropped text)`` when this encoder cuts the prompt, else ``None``:
        the tokens it would read uncut (start, end and template tokens included), the limit,
        and the words of the prompt it does not see. A template's tail cut off after the whole
        prompt is not a cut prompt."""
        limit = self.limit(pipe, max_sequence_length)
        if limit is None:
            return None
        tokenizer = getattr(pipe, self.tokenizer)
        full = self.tokenize(pipe, tokenizer, prompt, None)
        if len(full) <= limit:
            return None
        # The prompt's own tokens: what the empty prompt's tokenization does not share with it
        empty = self.tokenize(pipe, tokenizer, "", None)
        start = _common_prefix(full, empty)
        end = len(full) - _common_prefix(full[start:][::-1], empty[start:][::-1])
        kept = _common_prefix(full, self.tokenize(pipe, tokenizer, prompt, limit)) - start
        if kept >= end - start:
            return None
        text = getattr(tokenizer, "tokenizer", tokenizer)
        return len(full), limit, text.decode(full[start + max(kept, 0) : end])


#: CLIP's 77 tokens (its tokenizer's ``model_max_length``): SD 1.x/2.x, SDXL.
CLIP_LIMIT = TokenLimit("CLIP", by="tokenizer")


@dataclass(frozen=True)
class Family:
    """What one model family needs from the engine; one subclass per family, as ComfyUI's
    ``comfy/supported_models.py`` has one class per model, inheriting from its nearest relative.

    Attributes:
        name: the family's short name (``"sd"``, ``"sdxl"``, ``"sd3"``, ``"flux-dev"``,
            ``"chroma"``, ``"z-image"``, ... : the keys of `FAMILIES`).
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
        taesd: where the family's tiny preview decoder is published, if one exists: the hub
            id of an ``AutoencoderTiny`` (TAESD, TAEF1), or what ``taesd_loader`` reads.
        taesd_loader: ``loader(source, local_files_only=...)`` for a tiny decoder
            ``AutoencoderTiny`` cannot load (`seqwidgets.tiny_decoders`: TAEF2, TAEW2.1);
            ``None``: ``AutoencoderTiny.from_pretrained``.
        max_sequence_length: text tokens the pipeline's ``encode_prompt`` pads or cuts to by
            default (T5, Gemma, Qwen); unused by CLIP-only families.
        token_limits: where the pipeline cuts a prompt (`TokenLimit`): the encoders whose
            tokens the network reads; a prompt is cut when one of them cuts it.
        large_text_encoders: (class attribute) the pipeline components holding the family's
            large text models (T5, Llama, Qwen, Gemma, Mistral), which ``load_pipeline(...,
            quantize=...)`` quantizes with the network; the CLIPs are small and stay as they are.
    """

    large_text_encoders: ClassVar[tuple[str, ...]] = ()

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
    taesd: str | None = None
    taesd_loader: Callable[..., Any] | None = None
    max_sequence_length: int = 256
    token_limits: tuple[TokenLimit, ...] = (CLIP_LIMIT,)

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
            return latent_format(vae).channels
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
        return int(self.denoiser_network(pipe).config.sample_size) * int(pipe.vae_scale_factor)

    def encode_prompt(
        self, pipe: Any, prompt: str, device: torch.device, max_sequence_length: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One prompt through the pipeline's own text encoder(s): ``(embeds, pooled, mask)``,
        each with a batch dimension of 1; ``pooled`` and ``mask`` may be ``None``."""
        raise NotImplementedError

    def time_ids(self, height: int, width: int) -> torch.Tensor | None:
        """Extra size conditioning for an image of this size (SDXL's); ``None`` elsewhere."""
        return None

    def forward(
        self, network: Any, x_in: torch.Tensor, timestep: torch.Tensor, inputs: NetworkInputs
    ) -> torch.Tensor:
        """One network call on a batch ``x_in`` ``[B, C, h, w]`` at ComfyUI's ``timestep``;
        returns the model output (eps, v or velocity) in the latent's layout, ComfyUI's sign."""
        raise NotImplementedError


class SD(Family):
    """SD 1.x / 2.x (``sd``, ``sd-v``): one CLIP, a UNet, the nearest integer training step."""

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
        return embeds, None, None

    def forward(self, network, x_in, timestep, inputs):
        added = None
        if inputs.time_ids is not None:
            added = {"text_embeds": inputs.pooled, "time_ids": inputs.time_ids}
        return network(
            x_in,
            timestep,
            encoder_hidden_states=inputs.embeds,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]


class SDXL(SD):
    """SDXL: two CLIPs with a pooled embedding, and the image size as ``add_time_ids``."""

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return embeds, pooled, None

    def time_ids(self, height, width):
        return sdxl_time_ids(height, width)


class SD3(Family):
    """SD3 / SD3.5: two CLIPs and T5, a transformer on 2x2 patches it makes itself, t = sigma x
    1000."""

    large_text_encoders = ("text_encoder_3",)  # T5-XXL

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompt,
            prompt_2=None,
            prompt_3=None,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        return embeds, pooled, None

    def forward(self, network, x_in, timestep, inputs):
        return network(
            hidden_states=x_in,
            timestep=timestep.to(x_in.dtype),
            encoder_hidden_states=inputs.embeds,
            pooled_projections=inputs.pooled,
            return_dict=False,
        )[0]


class Flux(Family):
    """Flux (dev and schnell): CLIP pooled + T5, packed 2x2 latents with position ids, t = sigma
    (the diffusers transformer multiplies by 1000 itself), guidance where it is embedded."""

    large_text_encoders = ("text_encoder_2",)  # T5-XXL

    def default_image_size(self, pipe):
        # FluxPipeline keeps its default on the pipeline (128 latent pixels)
        return int(getattr(pipe, "default_sample_size", 128)) * int(pipe.vae_scale_factor)

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=prompt,
            prompt_2=None,
            device=device,
            num_images_per_prompt=1,
            max_sequence_length=max_sequence_length,
        )
        return embeds, pooled, None

    def forward(self, network, x_in, timestep, inputs):
        guidance = None if inputs.guidance is None else inputs.guidance.to(x_in.dtype)
        return self._packed_call(
            network, x_in, timestep, inputs, guidance=guidance, pooled_projections=inputs.pooled
        )

    def _packed_call(self, network, x_in, timestep, inputs, **extra) -> torch.Tensor:
        """The transformer on 2x2-packed tokens with Flux's position ids; ``extra`` keywords
        are the family's own inputs."""
        batch, channels, height, width = x_in.shape
        out = network(
            hidden_states=pack_latents(x_in),
            timestep=timestep.to(x_in.dtype),
            encoder_hidden_states=inputs.embeds,
            txt_ids=torch.zeros(inputs.embeds.shape[1], 3, device=x_in.device, dtype=x_in.dtype),
            img_ids=latent_image_ids(height, width, x_in.device, x_in.dtype),
            return_dict=False,
            **extra,
        )[0]
        return unpack_latents(out, channels, height, width)


class Chroma(Flux):
    """Chroma: Flux's layout with T5 alone (no pooled text; ComfyUI's guidance 0 is built into
    diffusers' transformer). A prompt reads its T5 tokens and the first padding token, as
    ComfyUI and Chroma's reference code mask it: the encoding keeps exactly those tokens.
    (diffusers' ``ChromaPipeline`` passes its mask as floats, which attention adds as a bias
    instead of masking: diffusers issue #12116.)"""

    large_text_encoders = ("text_encoder",)  # T5-XXL

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, _, mask, *_ = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        read = int(mask[0].sum())  # the prompt's tokens and one padding token
        return embeds[:, :read], None, None

    def forward(self, network, x_in, timestep, inputs):
        mask = None
        if inputs.mask is not None:  # prompts of different lengths in one batch
            batch, _, height, width = x_in.shape
            image = torch.ones(batch, height * width // 4, dtype=torch.bool, device=x_in.device)
            mask = torch.cat([inputs.mask.bool(), image], dim=1)
        return self._packed_call(network, x_in, timestep, inputs, attention_mask=mask)


class Flux2(Flux):
    """Flux.2 (dev, klein): one text model's stacked hidden layers (Mistral 3 or Qwen3, in the
    pipeline's ``encode_prompt``), no pooled text, the 32-channel VAE's latents packed 2x2 into
    128-channel tokens with 4-D position ids ``(t, h, w, l)``; the guidance embedding where the
    transformer has one (Flux.2 dev: ``flux_guidance``)."""

    large_text_encoders = ("text_encoder",)  # Mistral Small 3.1 or Qwen3

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, _ = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=1,
            max_sequence_length=max_sequence_length,
        )
        return embeds, None, None

    def forward(self, network, x_in, timestep, inputs):
        batch, channels, height, width = x_in.shape
        tokens = inputs.embeds.shape[1]
        text_ids = torch.zeros(batch, tokens, 4, device=x_in.device, dtype=x_in.dtype)
        text_ids[..., 3] = torch.arange(tokens, device=x_in.device)  # (0, 0, 0, token)
        image_ids = torch.zeros(height // 2, width // 2, 4, device=x_in.device, dtype=x_in.dtype)
        image_ids[..., 1] = torch.arange(height // 2, device=x_in.device)[:, None]
        image_ids[..., 2] = torch.arange(width // 2, device=x_in.device)[None, :]
        out = network(
            hidden_states=pack_latents(x_in),
            timestep=timestep.to(x_in.dtype),
            guidance=None if inputs.guidance is None else inputs.guidance.to(x_in.dtype),
            encoder_hidden_states=inputs.embeds,
            txt_ids=text_ids,
            img_ids=image_ids.reshape(1, -1, 4).expand(batch, -1, -1),
            return_dict=False,
        )[0]
        return unpack_latents(out, channels, height, width)


class QwenImage(Flux):
    """Qwen-Image: Qwen2.5-VL text in the pipeline's own template (its ``encode_prompt``), no
    pooled text, no guidance; latents packed 2x2 as Flux's with the image's shape in
    ``img_shapes``; the Wan 2.1 VAE's per-channel normalisation (`latent_format`)."""

    large_text_encoders = ("text_encoder",)  # Qwen2.5-VL 7B

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, mask = pipe.encode_prompt(
            prompt, device=device, num_images_per_prompt=1, max_sequence_length=max_sequence_length
        )
        return embeds, None, mask  # one prompt has no padding: the mask is None

    def forward(self, network, x_in, timestep, inputs):
        batch, channels, height, width = x_in.shape
        out = network(
            hidden_states=pack_latents(x_in),
            timestep=timestep.to(x_in.dtype),
            encoder_hidden_states=inputs.embeds,
            encoder_hidden_states_mask=inputs.mask,
            img_shapes=[[(1, height // 2, width // 2)]] * batch,
            return_dict=False,
        )[0]
        return unpack_latents(out, channels, height, width)


class HiDream(Family):
    """HiDream-I1: two CLIPs (pooled), T5 and every hidden layer of Llama 3.1, unpacked
    latents (the transformer patches them), ``timesteps = sigma x 1000`` and the velocity
    negated, as diffusers' pipeline reads its transformer.

    A prompt's T5 tokens and Llama layers share one tensor, each token's features side by side
    (``[1, tokens, t5 + layers x llama]``), so that caching, batching and slerp treat them like
    any family's embeddings; `forward` splits them by the transformer's ``caption_channels``.
    """

    large_text_encoders = ("text_encoder_3", "text_encoder_4")  # T5-XXL, Llama 3.1 8B

    def default_image_size(self, pipe):
        return int(pipe.default_sample_size) * int(pipe.vae_scale_factor)

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        t5, _, llama, _, pooled, _ = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        if t5.shape[1] != llama.shape[2]:
            raise ValueError(
                f"HiDream: T5 gives {t5.shape[1]} tokens and Llama {llama.shape[2]}; "
                "max_sequence_length must fit both tokenizers"
            )
        layers = llama.permute(1, 2, 0, 3).flatten(2)  # [layers, 1, L, D] -> [1, L, layers * D]
        return torch.cat([t5, layers], dim=-1), pooled, None

    def forward(self, network, x_in, timestep, inputs):
        t5_width, llama_width = network.config.caption_channels
        batch, tokens, _ = inputs.embeds.shape
        llama = inputs.embeds[..., t5_width:].reshape(batch, tokens, -1, llama_width)
        out = network(
            hidden_states=x_in,
            timesteps=timestep.to(x_in.dtype),
            encoder_hidden_states_t5=inputs.embeds[..., :t5_width],
            encoder_hidden_states_llama3=llama.permute(2, 0, 1, 3),
            pooled_embeds=inputs.pooled,
            return_dict=False,
        )[0]
        return -out


class Lumina2(Family):
    """Lumina 2: Gemma 2 text (its second-to-last layer), unpacked latents (the transformer
    makes its own 2x2 patches). diffusers' transformer counts time from the image, ``t = 1 -
    sigma``, and predicts the opposite of ComfyUI's velocity; every text token is read."""

    large_text_encoders = ("text_encoder",)  # Gemma 2 2B (Z-Image: Qwen3 4B)

    def size_multiple(self, pipe):
        return int(pipe.vae_scale_factor) * 2  # 2x2 latent patches per token

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        # The node's text encoder sends the prompt as it is: the system prompt diffusers'
        # encode_prompt puts first belongs to ComfyUI's CLIPTextEncodeLumina2, another node.
        embeds, mask = pipe._get_gemma_prompt_embeds(
            prompt, device=device, max_sequence_length=max_sequence_length
        )
        return embeds[:, : int(mask[0].sum())], None, None  # the tokens, not the padding

    def forward(self, network, x_in, timestep, inputs):
        mask = inputs.mask
        if mask is None:
            mask = torch.ones(inputs.embeds.shape[:2], device=x_in.device)
        out = network(
            hidden_states=x_in,
            timestep=(1 - timestep).to(x_in.dtype),
            encoder_hidden_states=inputs.embeds,
            encoder_attention_mask=mask.bool(),
            return_dict=False,
        )[0]
        return -out


class ZImage(Lumina2):
    """Z-Image: Lumina 2's conventions with Qwen3 text in a chat template (its
    ``encode_prompt``); the transformer takes lists of latents ``[C, 1, h, w]`` and of captions
    of their own lengths."""

    def default_image_size(self, pipe):
        # ZImagePipeline's default is 1024 pixels; the tiny stand-in sets a smaller one
        return int(getattr(pipe, "default_sample_size", 128)) * int(pipe.vae_scale_factor)

    def encode_prompt(self, pipe, prompt, device, max_sequence_length):
        embeds, _ = pipe.encode_prompt(
            prompt,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        return embeds[0][None], None, None

    def forward(self, network, x_in, timestep, inputs):
        captions = list(inputs.embeds)
        if inputs.mask is not None:  # prompts of different lengths in one batch
            captions = [c[m.bool()] for c, m in zip(captions, inputs.mask, strict=True)]
        out = network(
            list(x_in.unsqueeze(2).unbind(0)),
            (1 - timestep).to(x_in.dtype),
            captions,
            return_dict=False,
        )[0]
        return -torch.stack(out).squeeze(2)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> Flux's tokens ``[B, h/2 * w/2, 4C]`` (2x2 patches, channel-major).

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> pack_latents(x)[0, 0].tolist()
        [0.0, 1.0, 4.0, 5.0]
        >>> torch.equal(unpack_latents(pack_latents(x), 1, 4, 4), x)
        True
    """
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(
            f"Flux packs 2x2 latent patches: height and width must be even, got {h}x{w}"
        )
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def patchify(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w]`` -> ``[N, 4C, h/2, w/2]``: each 2x2 patch as channels ``(c, dy, dx)``
    (Flux.2's VAE statistics and ComfyUI's Flux.2 latents are in this layout).

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> patchify(x)[0, :, 0, 0].tolist(), torch.equal(unpatchify(patchify(x)), x)
        ([0.0, 1.0, 4.0, 5.0], True)
    """
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``[N, 4C, h/2, w/2]`` -> ``[N, C, h, w]``."""
    n, c4, h, w = x.shape
    x = x.reshape(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c4 // 4, h * 2, w * 2)


def unpack_latents(tokens: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`: ``[B, h/2 * w/2, 4C]`` -> ``[B, C, h, w]``."""
    b = tokens.shape[0]
    x = tokens.view(b, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, height, width)


def latent_image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """Flux's image position ids ``[h/2 * w/2, 3]``: ``(0, row, column)`` of each 2x2 patch.

    Example:
        >>> latent_image_ids(4, 4, "cpu", torch.float32)[-1].tolist()
        [0.0, 1.0, 1.0]
    """
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def sdxl_time_ids(height: int, width: int) -> torch.Tensor:
    """SDXL's ``add_time_ids``: original size, crop top-left (0, 0), target size.

    Example:
        >>> sdxl_time_ids(1024, 768).tolist()
        [[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0]]
    """
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


#: Latents in Flux's format (its 16-channel VAE): ComfyUI's previews and the tiny decoder.
FLUX_LATENTS = dict(
    latent_rgb=(FLUX_LATENT_RGB_FACTORS, FLUX_LATENT_RGB_BIAS), taesd="madebyollin/taef1"
)
#: Where each family's pipeline cuts a prompt (its ``encode_prompt``, diffusers 0.42): the
#: encoder whose tokens the network reads. SD3's and Flux's CLIPs cut at 77 tokens too, but the
#: T5 beside them reads the whole prompt (SD3's CLIP limit counts only without its T5); Chroma,
#: Lumina 2 (Gemma 2, the prompt alone as the node sends it) and HiDream's T5 and Llama 3.1 read
#: the prompt with their tokenizers' start / end tokens; Z-Image, Flux.2 klein (Qwen3), Flux.2
#: dev (Mistral 3, with the pipeline's system message) and Qwen-Image (Qwen2.5-VL, after its
#: template's system part) read it inside a chat template, which counts towards the limit.
T5_LIMIT = TokenLimit("T5", "tokenizer_2")
SD3_LIMITS = (
    TokenLimit("T5", "tokenizer_3"),
    TokenLimit("CLIP", by="tokenizer", unless="tokenizer_3"),
)
CHROMA_LIMITS = (TokenLimit("T5"),)
LUMINA2_LIMITS = (TokenLimit("Gemma 2"),)
ZIMAGE_LIMITS = (TokenLimit("Qwen3", tokenize=partial(chat_tokens, thinking=True)),)
FLUX2_LIMITS = (
    TokenLimit("Mistral 3", tokenize=mistral_chat_tokens, only_with="system_message"),
    TokenLimit("Qwen3", tokenize=partial(chat_tokens, thinking=False), unless="system_message"),
)
QWEN_IMAGE_LIMITS = (TokenLimit("Qwen2.5-VL", tokenize=qwen_image_tokens),)
HIDREAM_LIMITS = (
    TokenLimit("T5", "tokenizer_3", by="both"),
    TokenLimit("Llama 3.1", "tokenizer_4", by="both"),
)
#: Flux.2's tiny decoder (dev and klein share the VAE): madebyollin's TAEF2, which later
#: ComfyUI names ``taef2_decoder`` (Qwen-Image's Wan 2.1 latent: TAEW2.1, ``taew2_1``).
TAEF2 = dict(taesd=TAEF2_HUB_ID, taesd_loader=load_taef2)
#: ComfyUI's ``ModelSamplingFlux`` at its default shift (``timestep = sigma``).
MODEL_SAMPLING_FLUX = dict(flow=True, shift=1.15, multiplier=1.0, flow_kind="flux")

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        SD(
            "sd",
            "Stable Diffusion 1.x / 2.x",
            "unet",
            latent_rgb=(SD15_LATENT_RGB_FACTORS, None),
            taesd="madebyollin/taesd",
        ),
        SD(
            "sd-v",
            "Stable Diffusion 2.x (v-prediction)",
            "unet",
            latent_rgb=(SD15_LATENT_RGB_FACTORS, None),
            taesd="madebyollin/taesd",
        ),
        SDXL(
            "sdxl",
            "Stable Diffusion XL",
            "unet",
            pooled=True,
            latent_rgb=(SDXL_LATENT_RGB_FACTORS, SDXL_LATENT_RGB_BIAS),
            taesd="madebyollin/taesdxl",
        ),
        SD3(
            "sd3",
            "Stable Diffusion 3 / 3.5",
            "transformer",
            pooled=True,
            flow=True,
            shift=3.0,
            multiplier=1000.0,
            latent_rgb=(SD3_LATENT_RGB_FACTORS, SD3_LATENT_RGB_BIAS),
            taesd="madebyollin/taesd3",
            token_limits=SD3_LIMITS,
        ),
        Flux(
            "flux-dev",
            "Flux (guidance-distilled, dev)",
            "transformer",
            pooled=True,
            packed=True,
            guidance_embeds=True,
            **MODEL_SAMPLING_FLUX,
            **FLUX_LATENTS,
            max_sequence_length=512,
            token_limits=(T5_LIMIT,),
        ),
        Flux(
            "flux-schnell",
            "Flux (schnell)",
            "transformer",
            pooled=True,
            packed=True,
            flow=True,
            shift=1.0,
            multiplier=1.0,
            **FLUX_LATENTS,
            token_limits=(T5_LIMIT,),
        ),
        Chroma(
            "chroma",
            "Chroma",
            "transformer",
            packed=True,
            **MODEL_SAMPLING_FLUX,
            **FLUX_LATENTS,
            max_sequence_length=512,
            token_limits=CHROMA_LIMITS,
        ),
        Flux2(
            "flux2",
            "Flux.2 (dev)",
            "transformer",
            packed=True,
            guidance_embeds=True,
            **{**MODEL_SAMPLING_FLUX, "shift": 2.02},
            latent_rgb=(FLUX2_LATENT_RGB_FACTORS, FLUX2_LATENT_RGB_BIAS),
            **TAEF2,
            max_sequence_length=512,
            token_limits=FLUX2_LIMITS,
        ),
        Flux2(
            "flux2-klein",
            "Flux.2 klein",
            "transformer",
            packed=True,
            **{**MODEL_SAMPLING_FLUX, "shift": 2.02},
            latent_rgb=(FLUX2_LATENT_RGB_FACTORS, FLUX2_LATENT_RGB_BIAS),
            **TAEF2,
            max_sequence_length=512,
            token_limits=FLUX2_LIMITS,
        ),
        QwenImage(
            "qwen-image",
            "Qwen-Image",
            "transformer",
            packed=True,
            **MODEL_SAMPLING_FLUX,
            latent_rgb=(WAN21_LATENT_RGB_FACTORS, WAN21_LATENT_RGB_BIAS),
            taesd=TAEW21_URL,
            taesd_loader=load_taew21,
            max_sequence_length=512,
            token_limits=QWEN_IMAGE_LIMITS,
        ),
        HiDream(
            "hidream",
            "HiDream-I1",
            "transformer",
            pooled=True,
            flow=True,
            shift=1.0,  # ComfyUI's class sets shift 3.0, then an empty sampling_settings wins
            multiplier=1000.0,
            **FLUX_LATENTS,
            max_sequence_length=128,
            token_limits=HIDREAM_LIMITS,
        ),
        Lumina2(
            "lumina2",
            "Lumina 2",
            "transformer",
            flow=True,
            shift=6.0,
            multiplier=1.0,
            **FLUX_LATENTS,
            token_limits=LUMINA2_LIMITS,
        ),
        ZImage(
            "z-image",
            "Z-Image",
            "transformer",
            flow=True,
            shift=3.0,
            multiplier=1.0,
            **FLUX_LATENTS,
            max_sequence_length=512,
            token_limits=ZIMAGE_LIMITS,
        ),
    )
}

#: Transformers recognised by their class (their configs share keys with Flux's).
_TRANSFORMER_FAMILIES = {
    "ChromaTransformer2DModel": "chroma",
    "Lumina2Transformer2DModel": "lumina2",
    "ZImageTransformer2DModel": "z-image",
    "QwenImageTransformer2DModel": "qwen-image",
    "HiDreamImageTransformer2DModel": "hidream",
    "Flux2Transformer2DModel": "flux2",
}


_KNOWN = (
    "SD 1.x/2.x, SDXL, SD3/SD3.5, Flux, Flux.2, Chroma, Qwen-Image, HiDream, Lumina 2 and Z-Image"
    " pipelines"
)


def _config(module: Any) -> Mapping[str, Any]:
    config = getattr(module, "config", None)
    return config if isinstance(config, Mapping) else {}


def detect_family(pipe: Any) -> Family:
    """The family of a diffusers pipeline, from its networks' classes and configurations.

    A transformer of a class in ``_TRANSFORMER_FAMILIES`` (Chroma's, Flux.2's, Qwen-Image's, HiDream's, Lumina 2's, Z-Image's) is that family's. Else a
    ``transformer`` whose config has rotary ``axes_dims_rope`` is Flux (dev when it has
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
        network = getattr(transformer, "_orig_mod", transformer)  # torch.compile wraps it
        name = _TRANSFORMER_FAMILIES.get(type(network).__name__)
        if name == "flux2" and not _config(transformer).get("guidance_embeds"):
            name = "flux2-klein"  # klein is distilled without a guidance embedding
        if name is not None:
            return FAMILIES[name]
        config = _config(transformer)
        if "axes_dims_rope" in config:
            return FAMILIES["flux-dev" if config.get("guidance_embeds") else "flux-schnell"]
        if "caption_projection_dim" in config:
            return FAMILIES["sd3"]
        raise ValueError(
            f"{type(pipe).__name__}: its transformer ({type(transformer).__name__}) is none "
            f"seqwidgets knows; seqwidgets runs {_KNOWN}"
        )
    if getattr(pipe, "unet", None) is not None:
        if getattr(pipe, "text_encoder_2", None) is not None:
            return FAMILIES["sdxl"]
        scheduler = _config(getattr(pipe, "scheduler", None))
        return FAMILIES["sd-v" if scheduler.get("prediction_type") == "v_prediction" else "sd"]
    raise ValueError(
        f"{type(pipe).__name__} has neither a 'unet' nor a 'transformer'; seqwidgets runs {_KNOWN}"
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
