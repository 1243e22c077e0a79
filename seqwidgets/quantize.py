"""Quantized weights through diffusers' own machinery: ``load_pipeline(..., quantize="4bit" |
"8bit")`` and a single-file transformer (``transformer_file="....gguf"``).

* ``quantize``: a ``PipelineQuantizationConfig`` for the denoising network and the family's
  large text encoders (`Family.large_text_encoders`: T5, Llama, Qwen, Gemma, Mistral; the small
  CLIPs and the VAE keep the pipeline's dtype). On CUDA the backend is bitsandbytes (4-bit NF4
  with the pipeline's dtype for compute, or 8-bit LLM.int8); on the CPU ``"8bit"`` is torchao's
  int8 weight-only (``Int8WeightOnlyConfig``, checked on torch 2.13's CPU build), and ``"4bit"``
  is refused (torchao's int4 kernels and bitsandbytes need a GPU).
* ``transformer_file``: a transformer in one file, as ComfyUI users keep them (city96's GGUF
  files, or a ``.safetensors`` in the original layout), loaded with the transformer class's
  ``from_single_file`` (``GGUFQuantizationConfig(compute_dtype=dtype)`` for GGUF: the weights
  stay quantized, each layer dequantizes as it runs); the rest of the pipeline loads from the
  hub id or folder as usual, its transformer config included.

The packages are optional: ``pip install "seqwidgets[quant]"`` (bitsandbytes, torchao, gguf,
accelerate). A missing one is one `ImportError` naming that command.

Example:
    >>> from seqwidgets.families import FAMILIES
    >>> quantize_components(FAMILIES["flux-dev"])
    ('transformer', 'text_encoder_2')
    >>> check_quantize("2bit", torch.device("cuda"))
    Traceback (most recent call last):
    ...
    ValueError: quantize: '2bit' is not one of None, '4bit', '8bit'
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._loading import quiet_loggers
from .errors import check_one_of
from .families import _TRANSFORMER_FAMILIES, FAMILIES, Family

__all__ = [
    "QUANTIZE_MODES",
    "QUANT_EXTRA",
    "TRANSFORMER_FILE_SUFFIXES",
    "check_quantize",
    "check_transformer_file",
    "family_from_index",
    "load_transformer_file",
    "quantization_config",
    "quantize_components",
    "require",
]

#: ``load_pipeline``'s ``quantize`` values.
QUANTIZE_MODES = ("4bit", "8bit")
#: What to install for quantization, GGUF files and offload.
QUANT_EXTRA = 'pip install "seqwidgets[quant]"'
#: The single-file transformers ``transformer_file`` reads.
TRANSFORMER_FILE_SUFFIXES = (".gguf", ".safetensors")

# Denoising networks of the families `families._TRANSFORMER_FAMILIES` does not name, by class.
_NETWORK_FAMILIES = {"FluxTransformer2DModel": "flux-dev", "SD3Transformer2DModel": "sd3"}


def require(package: str, what: str) -> Any:
    """Import an optional ``package`` for ``what``, or raise one `ImportError` that says what to
    install.

    Example:
        >>> require("torch", "quantize '8bit'").__name__
        'torch'
    """
    try:
        with quiet_loggers():  # torchao lists each GPU kernel a CPU build cannot load
            return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(
            f"{what} needs the optional package {package!r}: {QUANT_EXTRA}"
        ) from error


def check_quantize(quantize: str | None, device: torch.device, name: str = "quantize") -> None:
    """Refuse a ``quantize`` that cannot work on ``device``, in one line naming ``name``, before
    any weights load (the packages themselves are checked when they are needed, by `require`)."""
    if quantize is None:
        return
    check_one_of(name, quantize, QUANTIZE_MODES, optional=True)
    if device.type == "cuda":
        return
    if device.type == "cpu" and quantize == "8bit":
        return  # torchao's int8 weight-only runs on the CPU
    there = "the CPU" if device.type == "cpu" else device.type.upper()
    offer = " (on the CPU: '8bit', torchao's int8 weight-only)" if device.type == "cpu" else ""
    raise ValueError(
        f"{name} {quantize!r}: needs a CUDA GPU (bitsandbytes), and the device is {there}{offer}"
    )


def check_transformer_file(
    path: str | os.PathLike | None, name: str = "transformer_file"
) -> Path | None:
    """The ``transformer_file`` as a `Path`, or a one-line error: `FileNotFoundError` for a
    file that is not there, `ValueError` for one that is no GGUF or safetensors file."""
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{name} {str(path)!r}: no such file")
    if file.suffix.lower() not in TRANSFORMER_FILE_SUFFIXES:
        raise ValueError(
            f"{name} {str(path)!r}: expected a .gguf or .safetensors file (a "
            "transformer in one file, as ComfyUI's models/unet or models/diffusion_models hold)"
        )
    return file


def quantize_components(family: Family) -> tuple[str, ...]:
    """The pipeline components ``quantize`` applies to: the denoising network and the family's
    large text encoders."""
    return (family.network, *family.large_text_encoders)


def family_from_index(index: Mapping[str, Any]) -> Family:
    """A pipeline's family from its ``model_index.json`` (before its weights load), by the
    class of its denoising network; `ValueError` for one seqwidgets does not run.

    Example:
        >>> family_from_index({"transformer": ["diffusers", "ZImageTransformer2DModel"]}).name
        'z-image'
    """
    if "transformer" in index:
        network = (index["transformer"] or [None, None])[1]
        name = _TRANSFORMER_FAMILIES.get(network) or _NETWORK_FAMILIES.get(network)
        if name is None:
            raise ValueError(f"its transformer ({network}) is none seqwidgets knows")
        return FAMILIES[name]
    if "unet" in index:
        return FAMILIES["sdxl" if index.get("text_encoder_2") else "sd"]
    raise ValueError("its model_index.json names neither a 'unet' nor a 'transformer'")


def quantization_config(
    components: tuple[str, ...], quantize: str, device: torch.device, dtype: torch.dtype
):
    """diffusers' ``PipelineQuantizationConfig`` quantizing ``components`` for ``device``: one
    config per component (diffusers' for the network, transformers' for the text encoders), so
    that neither library has to guess the other's arguments.

    Example:
        >>> config = quantization_config(("transformer",), "8bit", torch.device("cpu"), torch.float32)
        >>> type(config.quant_mapping["transformer"]).__name__
        'TorchAoConfig'
    """
    import diffusers
    import transformers

    check_quantize(quantize, device)
    mapping = {}
    for name in components:
        library = transformers if name.startswith("text_encoder") else diffusers
        if device.type == "cuda":
            require("bitsandbytes", f"quantize {quantize!r}")  # its configs read its version
            if quantize == "4bit":
                mapping[name] = library.BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
                )
            else:
                mapping[name] = library.BitsAndBytesConfig(load_in_8bit=True)
        else:
            torchao = require("torchao", f"quantize {quantize!r} on the CPU")
            weight_only = torchao.quantization.Int8WeightOnlyConfig()
            mapping[name] = library.TorchAoConfig(weight_only)
    return diffusers.PipelineQuantizationConfig(quant_mapping=mapping)


def require_backend(quantize: str, device: torch.device) -> None:
    """The package ``quantize`` needs on ``device``, imported now: a missing one is an
    `ImportError` naming the extra before any weights load."""
    if device.type == "cuda":
        require("bitsandbytes", f"quantize {quantize!r}")
    else:
        require("torchao", f"quantize {quantize!r} on the CPU")


def load_transformer_file(
    file: Path, source, index: Mapping[str, Any], dtype: torch.dtype, local_only: bool
) -> torch.nn.Module:
    """The transformer in ``file`` (GGUF or safetensors, in the original or ComfyUI layout that
    the class's ``from_single_file`` converts), built with the config of ``source``'s
    transformer (its hub id or folder)."""
    import diffusers

    where = f"transformer_file {str(file)!r}"
    entry = index.get("transformer")
    if not entry:
        raise ValueError(
            f"{where}: {source} is a UNet pipeline; a single-file transformer replaces a "
            "transformer (SD3, Flux, Z-Image, Qwen-Image, ...)"
        )
    cls = getattr(diffusers, entry[1], None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ValueError(f"{where}: diffusers cannot load a {entry[1]} from a single file")
    kwargs: dict[str, Any] = {}
    if file.suffix.lower() == ".gguf":
        require("gguf", where)
        kwargs["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    try:
        return cls.from_single_file(
            str(file),
            config=str(source),
            subfolder="transformer",
            torch_dtype=dtype,
            local_files_only=local_only,
            **kwargs,
        )
    except (KeyError, IndexError, RuntimeError, ValueError) as error:  # another model's keys
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{where}: does not fit {source}'s {entry[1]} (a file for another model?): {first}"
        ) from error
