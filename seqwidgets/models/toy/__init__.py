"""The shipped toy text-to-image model: colored shapes at 64x64, fast on a CPU.

A Stable-Diffusion-architecture pipeline (CLIP tokenizer and text encoder, conditional UNet,
``AutoencoderKL`` with SD's 8x downscale, SD 1.5's scheduler config) trained from scratch by
``python -m seqwidgets.models.toy.train`` on the procedural pictures of ``dataset.py``, and shipped
as a diffusers folder at ``TOY_MODEL_PATH``::

    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(TOY_MODEL_PATH, safety_checker=None,
        requires_safety_checker=False, local_files_only=True)
    pipe("a red circle", height=64, width=64, **DEFAULTS)

Prompts follow ``caption()``: "a red circle", "a small blue square on the left", "an orange
triangle in the center". Importing this module imports neither torch nor diffusers.
"""

from __future__ import annotations

from pathlib import Path

from .vocab import COLORS, POSITIONS, SHAPES, SIZES, WORDS, caption

#: The diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
TOY_MODEL_PATH: Path = Path(__file__).resolve().parent / "weights"

#: Image size the toy model was trained at (latents 4x8x8).
TOY_IMAGE_SIZE = 64

#: Settings that work well with the shipped pipeline (the evaluation's defaults).
DEFAULTS = {"num_inference_steps": 20, "guidance_scale": 7.5}

#: Latent-to-RGB preview factors of the toy model, rows = latent channels -> (R, G, B), for latents
#: in diffusers' scaling (x scaling_factor); fitted by least squares (``latent_rgb.py``) when the
#: model was trained. Preview = ``latent @ factors + bias``, then ``(v + 1) / 2`` clamped.
LATENT_RGB_FACTORS: list[list[float]] = [
    [-0.1728, -0.1883, -0.1051],
    [-0.1765, -0.3440, -0.4965],
    [-0.0810, -0.1810, -0.2159],
    [0.3053, 0.4617, 0.5235],
]
LATENT_RGB_BIAS: list[float] = [0.8216, 0.8939, 0.9128]

#: ComfyUI's published factors (comfy/latent_formats.py): SD 1.5 (no bias) and SDXL (with bias).
SD15_LATENT_RGB_FACTORS: list[list[float]] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
SD15_LATENT_RGB_BIAS: list[float] = [0.0, 0.0, 0.0]
SDXL_LATENT_RGB_FACTORS: list[list[float]] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
]
SDXL_LATENT_RGB_BIAS: list[float] = [0.1084, -0.0175, -0.0011]


def _load_preview_decoder():
    from .preview_decoder import load_preview_decoder  # torch only when a preview is made

    return load_preview_decoder()


def attach_previews(pipe):
    """Mark ``pipe`` as the toy model for `seqwidgets.decode`: its fitted latent-to-RGB factors
    (``pipe.seqwidgets_latent_rgb``) and its tiny preview decoder, loaded on first use
    (``pipe.seqwidgets_preview_decoder``, see ``preview_decoder.py``). Returns ``pipe``.

    Example:
        >>> from types import SimpleNamespace
        >>> pipe = attach_previews(SimpleNamespace())
        >>> pipe.seqwidgets_latent_rgb[0] is LATENT_RGB_FACTORS
        True
    """
    pipe.seqwidgets_latent_rgb = (LATENT_RGB_FACTORS, LATENT_RGB_BIAS)
    pipe.seqwidgets_preview_decoder = _load_preview_decoder
    return pipe


def load_toy_pipeline(device=None, torch_dtype=None):
    """The shipped pipeline, loaded offline (``StableDiffusionPipeline``, no safety checker),
    with its previews attached (`attach_previews`).

    Args:
        device (`str` or `torch.device`, *optional*): where to move it; default: stays on CPU.
        torch_dtype (`torch.dtype`, *optional*): e.g. ``torch.float16`` on CUDA; default float32.
    """
    from diffusers import StableDiffusionPipeline

    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    pipe = StableDiffusionPipeline.from_pretrained(
        TOY_MODEL_PATH,
        safety_checker=None,
        requires_safety_checker=False,
        local_files_only=True,
        **kwargs,
    )
    attach_previews(pipe)
    return pipe if device is None else pipe.to(device)


__all__ = [
    "COLORS",
    "DEFAULTS",
    "LATENT_RGB_BIAS",
    "LATENT_RGB_FACTORS",
    "POSITIONS",
    "SD15_LATENT_RGB_BIAS",
    "SD15_LATENT_RGB_FACTORS",
    "SDXL_LATENT_RGB_BIAS",
    "SDXL_LATENT_RGB_FACTORS",
    "SHAPES",
    "SIZES",
    "TOY_IMAGE_SIZE",
    "TOY_MODEL_PATH",
    "WORDS",
    "attach_previews",
    "caption",
    "load_toy_pipeline",
]
