"""Big models on small accelerators: diffusers' CPU offload hooks, and text encoders that leave
the accelerator once the prompts are encoded.

Two ways to keep a large pipeline within a card's memory, both off by default (a pipeline that
fits runs as it always did, and on a CPU there is nothing to move):

* ``load_pipeline(..., offload="model" | "sequential")``: diffusers' own hooks.
  ``"model"`` (``enable_model_cpu_offload``) keeps each whole model on the CPU and moves it to
  the accelerator when it is called, so the card holds the largest model (the transformer), not
  all of them; ``"sequential"`` (``enable_sequential_cpu_offload``) moves one layer at a time:
  the least memory, and many times slower.
* ``load_pipeline(..., free_text_encoders=True)``: the text encoders wait on the CPU and come to
  the accelerator only while new prompts are encoded; the first call of the denoising network
  after that sends them back. A run encodes each distinct prompt once (`PromptEncoder` caches
  them), so a run of any length moves them in and out once per new prompt, and the card's
  memory goes to the transformer in between. ComfyUI does the same when a card is short of
  memory: it unloads the text encoder before it loads the diffusion model.

Example:
    >>> from seqwidgets.testing import tiny_pipeline
    >>> pipe = tiny_pipeline("flux")
    >>> free_text_encoders(pipe) is None  # on the CPU there is nothing to free
    True
    >>> execution_device(pipe)
    device(type='cpu')
"""

from __future__ import annotations

from typing import Any

import torch

from .device import module_device
from .errors import check_one_of

__all__ = [
    "OFFLOAD_MODES",
    "TextEncoderParking",
    "bring_back_text_encoders",
    "check_offload",
    "enable_offload",
    "execution_device",
    "free_text_encoders",
]

#: ``load_pipeline``'s ``offload`` values: diffusers' model-level and layer-level CPU offload.
OFFLOAD_MODES = ("model", "sequential")

# The pipeline attribute that holds its `TextEncoderParking` (absent: nothing is parked).
_PARKING = "seqwidgets_text_encoder_parking"


def check_offload(offload: str | None, device: torch.device, name: str = "offload") -> None:
    """Refuse an ``offload`` that cannot work here, in one line naming ``name`` (the argument,
    or the CLI's flag), before any weights load.

    Example:
        >>> check_offload(None, torch.device("cpu"))  # no offload: nothing to check
        >>> check_offload("layer", torch.device("cuda"))
        Traceback (most recent call last):
        ...
        ValueError: offload: 'layer' is not one of None, 'model', 'sequential'
    """
    if offload is None:
        return
    check_one_of(name, offload, OFFLOAD_MODES, optional=True)
    if device.type == "cpu":
        from .device import available_devices

        others = available_devices()[1:]
        here = (
            "this machine has only the CPU"
            if not others
            else f"the device chosen is the CPU (this machine also has {', '.join(others)})"
        )
        raise ValueError(
            f"{name} {offload!r}: moves weights between the CPU and an accelerator (CUDA, "
            f"MPS), and {here}; leave {name} unset to run on the CPU"
        )


def enable_offload(pipe: Any, offload: str, device: torch.device) -> None:
    """Install diffusers' CPU offload hooks on ``pipe`` for ``device`` (``offload`` "model" or
    "sequential", checked by `check_offload`; accelerate installed, as
    ``seqwidgets.models.check_load_options`` makes sure). The pipeline must not have been moved
    to the accelerator before: the hooks move each model there when it runs."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)


def execution_device(pipe: Any) -> torch.device:
    """The device the pipeline's denoising network computes on (`seqwidgets.device.module_device`:
    the accelerator offload hooks move it to, not the CPU or ``meta`` its weights wait on): where the
    latents and prompt encodings belong, with or without offload hooks.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> execution_device(tiny_pipeline())
        device(type='cpu')
    """
    from .families import detect_family

    return module_device(detect_family(pipe).denoiser_network(pipe))


def _text_encoder_names(pipe: Any) -> list[str]:
    """The pipeline's text encoders that can be moved: ``text_encoder``, ``text_encoder_2``...
    Quantized ones (bitsandbytes refuses ``.to``) stay where they are."""
    names = []
    for name, module in pipe.components.items():
        if not name.startswith("text_encoder") or not isinstance(module, torch.nn.Module):
            continue
        if getattr(module, "hf_quantizer", None) is not None or getattr(
            module, "is_quantized", False
        ):
            continue
        names.append(name)
    return names


def _move(module: torch.nn.Module, device: torch.device) -> None:
    module.to(device)


class TextEncoderParking:
    """Keeps a pipeline's text encoders on the CPU except while prompts are encoded.

    `bring_back` moves them to ``device`` (`PromptEncoder` calls it, through
    `bring_back_text_encoders`, before a prompt it has not encoded yet); the next call of the
    denoising network parks them on the CPU again (a forward pre-hook), so every prompt a loop
    needs is encoded with one move in and one move out.

    Attributes:
        names: the text encoders moved (``text_encoder``, ``text_encoder_2``, ...).
        device: where they are brought to encode.
        moves_in, moves_out: how many times they were brought back and parked.
    """

    def __init__(self, pipe: Any, device: torch.device):
        from .families import detect_family

        self.pipe = pipe
        self.device = torch.device(device)
        self.names = _text_encoder_names(pipe)
        self.moves_in = 0
        self.moves_out = 0
        self.resident = True  # where load_pipeline put them
        network = detect_family(pipe).denoiser_network(pipe)
        self._hook = network.register_forward_pre_hook(self._before_network)
        self.park()

    def _before_network(self, module, args) -> None:
        if self.resident:
            self.park()

    def bring_back(self) -> None:
        """Move the text encoders to the accelerator (nothing to do when they are there)."""
        if self.resident:
            return
        for name in self.names:
            _move(getattr(self.pipe, name), self.device)
        self.resident = True
        self.moves_in += 1

    def park(self) -> None:
        """Move the text encoders to the CPU and give their memory back to the accelerator."""
        if not self.resident:
            return
        cpu = torch.device("cpu")
        for name in self.names:
            _move(getattr(self.pipe, name), cpu)
        self.resident = False
        self.moves_out += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # else the freed blocks stay reserved for this process

    def remove(self) -> None:
        """Stop parking: bring the text encoders back and take the hook off the network."""
        self.bring_back()
        self._hook.remove()
        if getattr(self.pipe, _PARKING, None) is self:
            delattr(self.pipe, _PARKING)


def free_text_encoders(pipe: Any, device: torch.device | str | None = None):
    """Keep ``pipe``'s text encoders off the accelerator except while new prompts are encoded;
    return the `TextEncoderParking`, or ``None`` when the pipeline runs on the CPU (nothing to
    free: the call changes nothing and costs nothing).

    For seqwidgets' runs, which encode through `PromptEncoder`: calling the diffusers pipeline
    itself afterwards finds its text encoders on the CPU; ``parking.remove()`` undoes this.

    Args:
        pipe: a pipeline already on its device (``load_pipeline(..., free_text_encoders=True)``
            calls this).
        device: where the text encoders encode (default: where the network computes).
    """
    existing = getattr(pipe, _PARKING, None)
    if existing is not None:
        return existing
    device = torch.device(device) if device is not None else execution_device(pipe)
    if device.type == "cpu":
        return None
    parking = TextEncoderParking(pipe, device)
    setattr(pipe, _PARKING, parking)
    return parking


def bring_back_text_encoders(pipe: Any) -> None:
    """Before a new prompt is encoded: bring parked text encoders back to the accelerator
    (`free_text_encoders`); a no-op for every other pipeline.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> bring_back_text_encoders(tiny_pipeline())  # nothing parked: nothing to do
    """
    parking = getattr(pipe, _PARKING, None)
    if parking is not None:
        parking.bring_back()
