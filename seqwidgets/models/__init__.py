"""Pipelines: the shipped toy model, tiny random ones, or any SD 1.x/2.x/SDXL by hub id or path.

``load_pipeline()`` is the one entry point the CLI, the studio and the notebooks use.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._loading import quiet_loading

TINY_RANDOM = "tiny-random"
TINY_RANDOM_XL = "tiny-random-xl"
RANDOM_SD15 = "random-sd15"


def _toy_model_path() -> Path:
    from .toy import TOY_MODEL_PATH

    if not (Path(TOY_MODEL_PATH) / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the toy model's weights are missing from {TOY_MODEL_PATH}; reinstall seqwidgets, "
            f"or pass model={TINY_RANDOM!r} for a random tiny pipeline"
        )
    return Path(TOY_MODEL_PATH)


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as every SD notebook does), fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def load_pipeline(
    model=None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
):
    """Load a Stable Diffusion 1.x/2.x or SDXL pipeline ready for :class:`SequenceSampler`.

    Args:
        model: ``None`` for the toy model shipped with seqwidgets (runs on any CPU);
            ``"tiny-random"`` / ``"tiny-random-xl"`` for random tiny SD / SDXL pipelines;
            ``"random-sd15"`` for SD 1.5's sizes with random weights (to measure a GPU offline);
            a hub id (``"stable-diffusion-v1-5/stable-diffusion-v1-5"``), a local folder in
            diffusers layout, or a ready diffusers pipeline (moved, not reloaded).
        device: default CUDA when available, else MPS, else CPU.
        dtype: default fp16 on CUDA, fp32 elsewhere.

    Weights load from safetensors only and no remote code is ever run.

    Example:
        >>> import seqwidgets as sw
        >>> pipe = sw.load_pipeline("tiny-random", device="cpu")
        >>> pipe.unet.dtype
        torch.float32
    """
    from ..device import default_cpu_threads, default_device

    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        default_cpu_threads()  # torch's one-thread-per-core crawls on a busy machine
    dtype = dtype or default_dtype(device)
    if model is None:
        with quiet_loading():
            pipe = _from_pretrained(_toy_model_path(), dtype, local_only=True)
    elif model in (TINY_RANDOM, TINY_RANDOM_XL):
        from ..testing import tiny_pipeline

        with quiet_loading():
            pipe = tiny_pipeline("sdxl" if model == TINY_RANDOM_XL else "sd")
    elif model == RANDOM_SD15:
        from ..testing import random_sd15_pipeline

        pipe = random_sd15_pipeline(device=device)
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        with quiet_loading():
            pipe = _from_pretrained(path if path.exists() else str(model), dtype, path.exists())
    elif hasattr(model, "unet") and hasattr(model, "vae"):
        pipe = model
    else:
        raise ValueError(
            "model must be None (the toy model), 'tiny-random', 'tiny-random-xl', a hub id, "
            f"a local folder or a diffusers pipeline; got {type(model).__name__}"
        )
    pipe = pipe.to(device)
    if pipe.unet.dtype != dtype:  # (diffusers warns about a cast to the dtype it already has)
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    _attach_preview_factors(pipe, model)
    return pipe


def _from_pretrained(source, dtype: torch.dtype, local_only: bool):
    from diffusers import DiffusionPipeline

    # low_cpu_mem_usage=False: the same weights either way, and no notice when accelerate is
    # not installed. (torch_dtype is the name diffusers releases before 0.36 understand.)
    kwargs = dict(
        torch_dtype=dtype,
        use_safetensors=True,
        local_files_only=local_only,
        low_cpu_mem_usage=False,
    )
    try:
        pipe = DiffusionPipeline.from_pretrained(
            source, safety_checker=None, requires_safety_checker=False, **kwargs
        )
    except TypeError:  # pipelines without a safety checker (SDXL) refuse those arguments
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except OSError as error:
        raise _loading_error(source, local_only, error) from error
    if getattr(pipe, "unet", None) is None or getattr(pipe, "text_encoder", None) is None:
        raise ValueError(
            f"{source!r} is a {type(pipe).__name__}; seqwidgets needs a Stable Diffusion "
            "1.x/2.x or SDXL pipeline (unet, vae, text encoder)"
        )
    return pipe


def _loading_error(source, local: bool, error: OSError) -> OSError:
    """One line that says what went wrong and what to do (diffusers' own text runs to several
    sentences and ends with "check the stacktrace above")."""
    if local:
        return OSError(
            f"{source}: not a loadable diffusers pipeline folder ({str(error).splitlines()[0]}); "
            "it needs model_index.json and safetensors weights"
        )
    text = str(error)
    if "404" in text or "not a valid model identifier" in text or "Repository Not Found" in text:
        return OSError(
            f"{source}: no such model on the Hugging Face hub, and no such local folder "
            "(for a gated or private model run `huggingface-cli login` first)"
        )
    if "401" in text or "403" in text or "gated" in text.lower():
        return OSError(
            f"{source}: the Hugging Face hub refused access; accept the model's licence on "
            "huggingface.co and run `huggingface-cli login`, then try again"
        )
    return OSError(
        f"{source}: not in the local Hugging Face cache and the hub could not be reached; "
        "connect to the internet (and unset HF_HUB_OFFLINE) to download it once, or pass a "
        "local diffusers folder"
    )


def _attach_preview_factors(pipe, model) -> None:
    """Give the toy model its fitted latent-to-RGB preview factors (see ``decode.py``)."""
    if model is None:
        from .toy import LATENT_RGB_BIAS, LATENT_RGB_FACTORS

        pipe.seqwidgets_latent_rgb = (LATENT_RGB_FACTORS, LATENT_RGB_BIAS)
