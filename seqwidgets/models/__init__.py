"""Pipelines: the shipped toy model, tiny random ones, or any SD 1.x/2.x, SDXL, SD3/SD3.5 or Flux
pipeline by hub id or path.

``load_pipeline()`` is the one entry point the CLI, the studio and the notebooks use.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from .._loading import quiet_loading
from ..choices import BUILT_IN_MODELS, HUB_ID
from ..families import detect_family
from ..offload import check_offload, enable_offload
from ..offload import free_text_encoders as free_text_encoders_of
from ..quantize import (
    check_quantize,
    check_transformer_file,
    family_from_index,
    load_transformer_file,
    quantization_config,
    quantize_components,
    require,
    require_backend,
)

TINY_RANDOM = "tiny-random"
TINY_RANDOM_XL = "tiny-random-xl"
TINY_RANDOM_SD3 = "tiny-random-sd3"
TINY_RANDOM_FLUX = "tiny-random-flux"
TINY_RANDOM_FLUX_SCHNELL = "tiny-random-flux-schnell"
TINY_RANDOM_CHROMA = "tiny-random-chroma"
TINY_RANDOM_LUMINA2 = "tiny-random-lumina2"
TINY_RANDOM_ZIMAGE = "tiny-random-zimage"
TINY_RANDOM_QWEN_IMAGE = "tiny-random-qwen-image"
TINY_RANDOM_HIDREAM = "tiny-random-hidream"
TINY_RANDOM_FLUX2 = "tiny-random-flux2"
TINY_RANDOM_FLUX2_DEV = "tiny-random-flux2-dev"
#: ``load_pipeline`` names of the tiny random pipelines -> `seqwidgets.testing.tiny_pipeline` kind.
TINY_MODELS = {
    TINY_RANDOM: "sd",
    TINY_RANDOM_XL: "sdxl",
    TINY_RANDOM_SD3: "sd3",
    TINY_RANDOM_FLUX: "flux",
    TINY_RANDOM_FLUX_SCHNELL: "flux-schnell",
    TINY_RANDOM_CHROMA: "chroma",
    TINY_RANDOM_LUMINA2: "lumina2",
    TINY_RANDOM_ZIMAGE: "zimage",
    TINY_RANDOM_QWEN_IMAGE: "qwen-image",
    TINY_RANDOM_HIDREAM: "hidream",
    TINY_RANDOM_FLUX2: "flux2",
    TINY_RANDOM_FLUX2_DEV: "flux2-dev",
}
RANDOM_SD15 = "random-sd15"
RANDOM_SD3 = "random-sd3"


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
    lora=(),
    offload: str | None = None,
    quantize: str | None = None,
    transformer_file: str | os.PathLike | None = None,
    free_text_encoders: bool = False,
):
    """Load a pipeline of any supported family ready for :class:`SequenceSampler`: SD 1.x/2.x,
    SDXL, SD3/SD3.5, Flux, Flux.2, Chroma, Qwen-Image, HiDream, Lumina 2 or Z-Image.

    Args:
        model: ``None`` for the toy model shipped with seqwidgets (runs on any CPU);
            ``"tiny-random"``, ``"tiny-random-xl"``, ``"tiny-random-sd3"``, ``"tiny-random-flux"``,
            ``"tiny-random-flux-schnell"``, ``"tiny-random-chroma"``, ``"tiny-random-lumina2"``,
            ``"tiny-random-zimage"``, ``"tiny-random-qwen-image"``, ``"tiny-random-hidream"``
            ``"tiny-random-flux2"`` (Flux.2 klein) or ``"tiny-random-flux2-dev"`` (Flux.2 dev)
            for random tiny pipelines of each family;
            ``"random-sd15"`` / ``"random-sd3"`` for SD 1.5's / an SD3-medium-size pipeline with
            random weights (to measure a GPU offline);
            a hub id (``"stable-diffusion-v1-5/stable-diffusion-v1-5"``,
            ``"stabilityai/stable-diffusion-3.5-medium"``, ``"Tongyi-MAI/Z-Image-Turbo"``), a
            local folder in diffusers layout, or a ready diffusers pipeline (moved, not reloaded).
        device: default CUDA when available, else MPS, else CPU.
        dtype: default fp16 on CUDA, fp32 elsewhere (bf16 is the usual choice for Flux).
        lora: LoRA weights to apply, ``[(path_or_hub_id, scale), ...]``: each is loaded with
            diffusers' ``pipe.load_lora_weights`` as adapter ``lora_0``, ``lora_1``, ... and
            all are activated with ``pipe.set_adapters`` at their scales (needs ``peft``).
        offload: ``"model"`` or ``"sequential"``: diffusers' CPU offload hooks
            (``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload``), for a pipeline
            larger than the accelerator's memory; needs an accelerator (`seqwidgets.offload`).
        quantize: ``"4bit"`` or ``"8bit"``: the network and the large text encoders quantized
            as they load from a hub id or folder (bitsandbytes on CUDA; on the CPU only
            ``"8bit"``, torchao's int8 weight-only); see `seqwidgets.quantize`.
        transformer_file: a single-file transformer (a ``.gguf`` such as city96's, or a
            ``.safetensors`` in the original layout) used instead of the pipeline's own; the
            rest loads from ``model``, a hub id or folder of the same model.
        free_text_encoders: keep the text encoders off the accelerator except while new
            prompts are encoded (a no-op on the CPU).

    ``quantize``, ``transformer_file`` and ``offload`` need ``pip install "seqwidgets[quant]"``.
    `seqwidgets.device.weight_memory` estimates what each setting needs.

    Weights load from safetensors (or GGUF) only and no remote code is ever run.

    Example:
        >>> import seqwidgets as sw
        >>> pipe = sw.load_pipeline("tiny-random", device="cpu")
        >>> pipe.unet.dtype
        torch.float32
    """
    from ..device import default_cpu_threads, default_device

    device = torch.device(device) if device is not None else default_device()
    file = check_load_options(
        model, device, offload, quantize, transformer_file, free_text_encoders
    )
    if device.type == "cpu":
        default_cpu_threads()  # torch's one-thread-per-core crawls on a busy machine
    dtype = dtype or default_dtype(device)
    pipe = _pipeline_from(model, device, dtype, quantize, file)
    quantized = quantize is not None or file is not None  # loaded in their dtype already
    pipe = _placed(pipe, device, None if quantized else dtype, offload)
    _attach_preview_factors(pipe, model)
    _load_loras(pipe, lora)
    if offload is not None:  # last: the hooks own where each model is from here on
        enable_offload(pipe, offload, device)
    if free_text_encoders:
        free_text_encoders_of(pipe, device)
    return pipe


def _pipeline_from(model, device: torch.device, dtype: torch.dtype, quantize, file):
    """The pipeline ``model`` names (see `load_pipeline`), loaded on the CPU (the random
    full-size ones directly on ``device``), or ``model`` itself when it is one."""
    if model is None:
        with quiet_loading():
            pipe = _from_pretrained(_toy_model_path(), dtype, local_only=True)
    elif isinstance(model, str) and model in TINY_MODELS:
        from ..testing import tiny_pipeline

        with quiet_loading():
            pipe = tiny_pipeline(TINY_MODELS[model])
    elif model == RANDOM_SD15:
        from ..testing import random_sd15_pipeline

        pipe = random_sd15_pipeline(device=device)
    elif model == RANDOM_SD3:
        from ..testing import random_sd3_pipeline

        pipe = random_sd3_pipeline(device=device)
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        with quiet_loading():
            pipe = _from_pretrained(
                path if path.exists() else str(model),
                dtype,
                path.exists(),
                quantize=quantize,
                device=device,
                transformer_file=file,
            )
    elif (hasattr(model, "unet") or hasattr(model, "transformer")) and hasattr(model, "vae"):
        pipe = model
    else:
        raise ValueError(
            f"model must be None (the toy model), one of {', '.join(map(repr, TINY_MODELS))}, a "
            f"hub id, a local folder or a diffusers pipeline; got {type(model).__name__}"
        )
    return pipe


def _placed(pipe, device: torch.device, dtype: torch.dtype | None, offload: str | None):
    """``pipe`` on ``device`` (left on the CPU for the offload hooks) in ``dtype`` (``None``:
    as loaded), its progress bars off."""
    network = detect_family(pipe).denoiser_network(pipe)
    if offload is None:
        pipe = pipe.to(device)
    if dtype is not None and network.dtype != dtype:  # (diffusers warns about a no-op cast)
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_load_options(
    model,
    device: torch.device,
    offload: str | None = None,
    quantize: str | None = None,
    transformer_file: str | os.PathLike | None = None,
    free_text_encoders: bool = False,
    *,
    flags: bool = False,
) -> Path | None:
    """Check `load_pipeline`'s big-model options before anything loads, each mistake one line
    naming the argument (with ``flags``: the CLI's ``--offload``, ``--quantize``...); return the
    transformer file as a `Path` (or ``None``). The optional packages a setting needs are
    imported here, so a missing one is said before minutes of downloading.

    Example:
        >>> check_load_options("tiny-random", torch.device("cpu"), quantize="8bit")
        Traceback (most recent call last):
        ...
        ValueError: quantize: applies as weights load from a hub id or folder, and model is 'tiny-random'
    """

    def name(argument: str) -> str:
        return "--" + argument.replace("_", "-") if flags else argument

    if free_text_encoders and offload is not None:
        raise ValueError(
            f"{name('free_text_encoders')}: {name('offload')} {offload!r} already moves the text "
            "encoders off the accelerator after use; pass one or the other"
        )
    check_offload(offload, device, name("offload"))
    check_quantize(quantize, device, name("quantize"))
    file = check_transformer_file(transformer_file, name("transformer_file"))
    loads_weights = isinstance(model, (str, os.PathLike)) and model not in BUILT_IN_MODELS
    for argument, value in (("quantize", quantize), ("transformer_file", transformer_file)):
        if value is not None and not loads_weights:
            shown = repr(model)
            if model is None:
                shown = "not given (the toy model)" if flags else "None (the toy model)"
            if not isinstance(model, (str, os.PathLike, type(None))):
                shown = f"a ready {type(model).__name__}"
            raise ValueError(
                f"{name(argument)}: applies as weights load from a hub id or folder, and "
                f"{name('model')} is {shown}"
            )
    if quantize is not None:
        require_backend(quantize, device)
    if file is not None and file.suffix.lower() == ".gguf":
        require("gguf", f"{name('transformer_file')} {file.name}")
    if offload is not None:
        require("accelerate", f"{name('offload')} {offload!r}")
    return file


def _load_loras(pipe, lora) -> None:
    """Load ``[(path_or_id, scale), ...]`` as adapters ``lora_0, lora_1, ...`` and activate them.

    Each is checked before diffusers sees it, so a mistake is one line naming ``lora[i]``: a
    local path that does not exist (`FileNotFoundError`), a scale that is not a finite number,
    or adapter weights made for another model family (`ValueError` naming both families)."""
    items = list(lora or ())
    names, scales = [], []
    family = detect_family(pipe)
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"lora[{i}] must be a (path_or_hub_id, scale) pair, got {item!r}")
        source, scale = item
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ValueError(f"lora[{i}]: scale must be a number, got {scale!r}")
        if not math.isfinite(scale):
            raise ValueError(f"lora[{i}]: scale must be a finite number, got {scale!r}")
        if not hasattr(pipe, "load_lora_weights"):
            raise ValueError(f"{type(pipe).__name__} cannot load LoRA weights")
        where = f"lora[{i}] {str(source)!r}"
        path = _lora_path(source, where)
        if path is not None:
            _check_lora_family(path, pipe, family, where)
        name = f"lora_{i}"
        try:
            with quiet_loading(), _silent_diffusers():
                pipe.load_lora_weights(str(path) if path else source, adapter_name=name)
        except (OSError, ValueError) as error:
            raise type(error)(f"{where}: {str(error).splitlines()[0]}") from error
        except RuntimeError as error:  # a state dict that does not fit: shapes of another model
            raise ValueError(
                f"{where}: its weights do not fit this {family.label} pipeline's "
                f"{family.network} (made for another model family?)"
            ) from error
        except Exception as error:  # the hub's client: no network, a timeout
            raise OSError(
                f"{where}: could not be loaded ({type(error).__name__}: {error})"
            ) from error
        if name not in _adapter_names(pipe):  # no key matched: nothing was loaded
            raise ValueError(
                f"{where}: none of its weights fit this {family.label} pipeline "
                "(a LoRA made for another model family?)"
            )
        names.append(name)
        scales.append(float(scale))
    if names:
        pipe.set_adapters(names, adapter_weights=scales)
        pipe.seqwidgets_lora = [
            (name, str(source), scale)
            for name, (source, _), scale in zip(names, items, scales, strict=True)
        ]


def _lora_path(source, where: str) -> Path | None:
    """The local file or folder ``source`` names, ``None`` for a hub id, or a
    `FileNotFoundError` for a path that does not exist (a `Path`, or text that is no hub id)."""
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"{where}: expected a path or a hub id, got {type(source).__name__}")
    path = Path(source).expanduser()
    if path.exists():
        return path
    if isinstance(source, str) and HUB_ID.fullmatch(source):
        return None  # left to diffusers and the hub
    raise FileNotFoundError(f"{where}: no such file or folder")


def _lora_weights_file(path: Path) -> Path | None:
    """The safetensors file of a LoRA: ``path`` itself, or the one diffusers reads in a folder."""
    if path.is_file():
        return path if path.suffix == ".safetensors" else None
    default = path / "pytorch_lora_weights.safetensors"
    if default.is_file():
        return default
    found = sorted(path.glob("*.safetensors"))
    return found[0] if len(found) == 1 else None


def lora_family(keys_and_shapes: dict[str, list[int]]) -> tuple[str, int | None] | None:
    """What a LoRA's weights were made for, from their names and shapes (no tensor is read):
    ``("flux", None)``, ``("sd3", None)``, ``("unet", cross_attention_width)`` (SD 1.x / 2.x /
    SDXL, told apart by the width their cross-attention reads), or ``None`` when unknown.

    Example:
        >>> lora_family({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": [4, 64]})
        ('flux', None)
        >>> lora_family({"unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A."
        ...              "weight": [4, 768]})
        ('unet', 768)
    """
    names = list(keys_and_shapes)
    if any("single_transformer_blocks" in k or "single_blocks" in k for k in names):
        return ("flux", None)
    if any(k.startswith("transformer.") or "joint_blocks" in k for k in names):
        return ("sd3", None)
    if any(k.startswith(("unet.", "lora_unet_")) for k in names):
        widths = {
            shape[-1]
            for key, shape in keys_and_shapes.items()
            if ("attn2.to_k.lora_A" in key or "attn2_to_k.lora_down" in key) and shape
        }
        return ("unet", widths.pop() if len(widths) == 1 else None)
    return None


# Names for the cross-attention widths of the UNet families' text encoders.
_UNET_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def _check_lora_family(path: Path, pipe, family, where: str) -> None:
    """A `ValueError` naming both families when a local LoRA's weights are for another one."""
    from safetensors import safe_open

    weights = _lora_weights_file(path)
    if weights is None:
        return  # another layout: diffusers judges it
    try:
        with safe_open(str(weights), "pt") as file:
            shapes = {key: list(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # not safetensors, truncated: one line, not the parser's dump
        raise ValueError(f"{where}: {weights.name} is not a readable safetensors file") from error
    made_for = lora_family(shapes)
    if made_for is None:
        return
    kind, width = made_for
    this = family.label
    if kind == "unet":
        network = getattr(pipe, "unet", None)
        if network is not None:
            ours = network.config.get("cross_attention_dim")
            if width is None or not isinstance(ours, int) or width == ours:
                return
            this = f"{family.label} (cross-attention width {ours})"
        label = _UNET_WIDTHS.get(width) or (
            "a UNet model (SD 1.x / 2.x / SDXL)"
            if width is None
            else f"a UNet model with cross-attention width {width}"
        )
    else:
        if family.network == "transformer" and family.name.startswith(kind):
            return
        label = {"flux": "Flux", "sd3": "Stable Diffusion 3"}[kind]
    raise ValueError(
        f"{where}: a LoRA for {label}, but this pipeline is {this}; load a LoRA made for "
        f"{family.label}"
    )


def _adapter_names(pipe) -> set[str]:
    names: set[str] = set()
    for adapters in pipe.get_list_adapters().values():
        names.update(adapters)
    return names


@contextmanager
def _silent_diffusers():
    """diffusers logs a failed LoRA's whole state-dict error before raising it: hold that back
    (the error itself is turned into one line)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def lora_adapters(pipe) -> list[tuple[str, str, float]]:
    """The LoRA adapters `load_pipeline` applied: ``[(adapter_name, source, scale), ...]``.

    For a header or a session record; empty for a pipeline loaded without ``lora``.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> lora_adapters(tiny_pipeline())
        []
    """
    return list(getattr(pipe, "seqwidgets_lora", []))


def _from_pretrained(
    source,
    dtype: torch.dtype,
    local_only: bool,
    *,
    quantize: str | None = None,
    device: torch.device | None = None,
    transformer_file: Path | None = None,
):
    from diffusers import DiffusionPipeline

    # low_cpu_mem_usage=False: the same weights either way, and no notice when accelerate is
    # not installed. (torch_dtype is the name diffusers releases before 0.36 understand.)
    kwargs = dict(
        torch_dtype=dtype,
        use_safetensors=True,
        local_files_only=local_only,
        low_cpu_mem_usage=False,
    )
    if quantize is not None or transformer_file is not None:
        kwargs.update(
            _big_model_kwargs(source, dtype, local_only, quantize, device, transformer_file)
        )
    try:
        pipe = DiffusionPipeline.from_pretrained(
            source, safety_checker=None, requires_safety_checker=False, **kwargs
        )
    except TypeError:  # pipelines without a safety checker (SDXL) refuse those arguments
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except OSError as error:
        raise _loading_error(source, local_only, error) from error
    try:
        detect_family(pipe)
    except ValueError as error:
        raise ValueError(f"{source!r}: {error}") from error
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "vae", None) is None:
        raise ValueError(
            f"{source!r} is a {type(pipe).__name__} without a text encoder or VAE; seqwidgets "
            "needs a complete SD 1.x/2.x, SDXL, SD3/SD3.5 or Flux pipeline"
        )
    return pipe


def _big_model_kwargs(source, dtype, local_only, quantize, device, transformer_file) -> dict:
    """``from_pretrained``'s arguments for a quantized pipeline or a single-file transformer:
    the family (from ``model_index.json``, before any weights load) says what to quantize."""
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(str(source), local_files_only=local_only)
    except OSError as error:
        raise _loading_error(source, local_only, error) from error
    try:
        family = family_from_index(index)
    except ValueError as error:
        from ..families import _KNOWN

        raise ValueError(f"{str(source)!r}: {error}; seqwidgets runs {_KNOWN}") from error
    kwargs: dict = {"low_cpu_mem_usage": True}  # quantizers load through accelerate
    components = quantize_components(family)
    if transformer_file is not None:
        kwargs["transformer"] = load_transformer_file(
            transformer_file, source, index, dtype, local_only
        )
        components = tuple(name for name in components if name != "transformer")
    if quantize is not None and components:
        kwargs["quantization_config"] = quantization_config(components, quantize, device, dtype)
    return kwargs


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
    """Give the toy model its fitted latent-to-RGB factors and preview decoder (``decode.py``)."""
    if model is None:
        from .toy import attach_previews

        attach_previews(pipe)
