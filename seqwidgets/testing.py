"""Tiny random Stable Diffusion pipelines, built offline, for tests and demos.

The weights are random, so the pictures are noise, but every component is a real diffusers
class wired exactly as in Stable Diffusion 1.x (``kind="sd"``) or SDXL (``kind="sdxl"``): the
sampler runs the same code path as it does on a full-size model, in milliseconds.

Nothing is downloaded: the CLIP tokenizer's vocabulary (one token per byte, with and without the
end-of-word marker, and no merges) is written to a temporary folder and loaded from there.

Example:
    >>> from seqwidgets.testing import tiny_pipeline
    >>> pipe = tiny_pipeline()
    >>> pipe.unet.config.sample_size * pipe.vae_scale_factor
    64
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

# SD 1.5's noise schedule: our samplers read these betas, so tiny runs use real sigmas.
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's printable stand-in for each of the 256 byte values (as in the GPT-2 tokenizer)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=1)
def tokenizer_folder() -> Path:
    """Write a byte-level CLIP vocabulary with no merges to a temporary folder, once."""
    folder = Path(tempfile.mkdtemp(prefix="seqwidgets-tokenizer-"))
    symbols = _bytes_to_unicode()
    vocab = {_BOS: 0, _EOS: 1}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_tokenizer(max_length: int = 77):
    """A CLIPTokenizer over the offline byte vocabulary, padded with the end token as SD does."""
    from transformers import CLIPTokenizer

    # from_pretrained reads vocab.json + merges.txt the same way across transformers 4 and 5.
    return CLIPTokenizer.from_pretrained(
        str(tokenizer_folder()),
        local_files_only=True,
        model_max_length=max_length,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_EOS,
        unk_token=_EOS,
    )


def _text_config(
    hidden_size: int, projection_dim: int | None = None, *, layers: int = 2, heads: int = 4
):
    """A CLIP text encoder config over the offline byte vocabulary (4x wide feed-forward for
    SD 1.5's sizes, 2x for the tiny ones)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=2 + 2 * 256,
        hidden_size=hidden_size,
        intermediate_size=(4 if layers > 2 else 2) * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection_dim or hidden_size,
        hidden_act="quick_gelu",
    )


def _vae(
    block_out_channels: tuple[int, ...], layers_per_block: int, norm_num_groups: int, size: int
):
    """An AutoencoderKL with SD's four blocks: three downsamples, so 8x (64x64 -> 4x8x8)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=size,
        scaling_factor=0.18215,
    ).eval()


def _sd_pipeline(vae, text_encoder, unet):
    """A StableDiffusionPipeline around these parts, the offline tokenizer and SD 1.5's schedule."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_pipeline(kind: str = "sd", seed: int = 0):
    """Build a random tiny Stable Diffusion (``"sd"``) or SDXL (``"sdxl"``) pipeline offline.

    Args:
        kind (`str`, defaults to ``"sd"``): ``"sd"`` for SD 1.x/2.x wiring (one CLIP text encoder),
            ``"sdxl"`` for SDXL wiring (two text encoders, pooled embeddings, time ids).
        seed (`int`, defaults to 0): seeds the random weights; the same seed gives the same
            pipeline, bit for bit.

    Returns:
        A ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` on the CPU in float32,
        default image size 64x64 (latents 4x8x8).

    Example:
        >>> pipe = tiny_pipeline("sdxl", seed=1)
        >>> type(pipe).__name__
        'StableDiffusionXLPipeline'
    """
    from ._loading import quiet_loading

    with quiet_loading():  # (importing the pipelines logs notices about optional packages)
        from diffusers import (
            EulerDiscreteScheduler,
            StableDiffusionXLPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in ("sd", "sdxl"):
        raise ValueError(f"tiny_pipeline: kind must be 'sd' or 'sdxl', got {kind!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"tiny_pipeline: seed must be a non-negative int, got {seed!r}")

    torch.manual_seed(seed)
    vae = _vae((8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, size=64)
    unet_common = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    if kind == "sd":
        text_encoder = CLIPTextModel(_text_config(32)).eval()
        unet = UNet2DConditionModel(cross_attention_dim=32, attention_head_dim=4, **unet_common)
        return _sd_pipeline(vae, text_encoder, unet.eval())

    text_encoder = CLIPTextModel(_text_config(32)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(32, projection_dim=32)).eval()
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + 32,
        **unet_common,
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=False,
    )


#: SD 1.5's UNet configuration (the published ``unet/config.json``), for full-size measurements.
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)


def random_sd15_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A Stable Diffusion 1.5 sized pipeline with random weights, built offline.

    The UNet is SD 1.5's (860 M parameters, 4x64x64 latents for 512x512 images), so it costs
    what the real model costs: for measuring the GPU path where no hub can be reached. The VAE
    and text encoder are SD 1.5's sizes too; the tokenizer is the offline byte vocabulary. The
    pictures are noise. About 4 GB in float32: build it on the device that will run it.

    Example:
        >>> from seqwidgets.testing import SD15_UNET_CONFIG
        >>> from diffusers import UNet2DConditionModel
        >>> with torch.device("meta"):
        ...     unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        >>> round(sum(p.numel() for p in unet.parameters()) / 1e6)
        860
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
        vae = _vae((128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, size=512)
        text_encoder = CLIPTextModel(_text_config(768, layers=12, heads=12)).eval()
    return _sd_pipeline(vae, text_encoder, unet)
