"""Colour coherence: hold a loopback sequence's colours to a reference, loop after loop.

Loopback drifts in colour (towards magenta, grey, burnt contrast). Deforum's answer, which this
module offers too, is to match the previous result's colour histograms to a reference before
each img2img step. It is ours, not the node's, and off by default (``color_coherence="none"``:
the latents stay bit for bit the node's). The modes:

* ``"lab"``, ``"hsv"``, ``"rgb"``: decode the previous result, match each channel's histogram in
  that colour space to the reference image's, encode it again (one VAE decode and one encode
  per loop; the reference is decoded once). LAB keeps lightness and the two colour axes apart,
  so it corrects a cast without flattening contrast; HSV matches hue as a plain channel (its
  wrap-around at red is ignored, as in Deforum); RGB also matches brightness per channel.
* ``"latent"``: match each latent channel's mean and standard deviation to the reference
  latent's. No VAE round trip, so nearly free, but coarser: latent channels mix colour and
  structure.

``color_reference`` says what to match: ``"loop0"`` (loop 0's result), ``"keyframe"`` (the
first loop of the keyframe the previous loop belongs to, so a new prompt may bring new colours)
or a path to an image file. `seqwidgets.plan` records each loop's reference
(`LoopPlan.color_match`); `ColorCoherence` applies it inside the engine's loop.

Example:
    >>> import numpy as np
    >>> dark = np.linspace(0.0, 0.5, 12).reshape(2, 2, 3)
    >>> bright = np.linspace(0.5, 1.0, 12).reshape(2, 2, 3)
    >>> bool(np.allclose(np.sort(match_histograms(dark, bright, "rgb"), axis=None),
    ...                  np.sort(bright, axis=None)))
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._io import read_image
from .metrics import as_rgb, hsv_to_rgb, lab_to_rgb, rgb_to_hsv, rgb_to_lab

if TYPE_CHECKING:
    from .frames import Frame
    from .params import SequenceParams
    from .plan import LoopPlan

__all__ = ["SPACES", "ColorCoherence", "match_channel", "match_histograms", "match_latent"]

#: The pixel modes: colour space -> (from RGB, back to RGB).
SPACES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "lab": (rgb_to_lab, lab_to_rgb),
    "hsv": (rgb_to_hsv, hsv_to_rgb),
    "rgb": (lambda rgb: rgb, lambda rgb: np.clip(rgb, 0.0, 1.0)),
}


def match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``source``'s values so that their histogram becomes ``reference``'s.

    Each value goes to the reference value at the same quantile (exact histogram matching, as
    ``skimage.exposure.match_histograms``): the ordering of the source is kept, its distribution
    replaced. Arrays may differ in size.

    Example:
        >>> match_channel(np.array([3.0, 1.0, 2.0]), np.array([10.0, 30.0, 20.0])).tolist()
        [30.0, 10.0, 20.0]
    """
    values, inverse, counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    mapped = np.interp(quantiles, ref_quantiles, ref_values)
    return mapped[inverse].reshape(source.shape)


def match_histograms(image: Any, reference: Any, space: str = "lab") -> np.ndarray:
    """``image`` with each channel's histogram in ``space`` matched to ``reference``'s.

    Args:
        image, reference: RGB images (PIL, uint8 or float arrays in [0, 1]; see
            `seqwidgets.metrics.as_rgb`); their sizes may differ.
        space (`str`, defaults to ``"lab"``): ``"lab"``, ``"hsv"`` or ``"rgb"``.

    Returns:
        `np.ndarray`: float64 ``[H, W, 3]`` RGB in [0, 1], the size of ``image``.
    """
    if space not in SPACES:
        raise ValueError(f"space: {space!r} is unknown; allowed: {', '.join(SPACES)}")
    forward, back = SPACES[space]
    source, target = forward(as_rgb(image)), forward(as_rgb(reference))
    matched = np.stack([match_channel(source[..., c], target[..., c]) for c in range(3)], axis=-1)
    return back(matched)


def match_latent(latent: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``latent`` with each channel's mean and standard deviation set to ``reference``'s.

    Both are ``[C, h, w]`` or ``[N, C, h, w]`` (the statistics of each item's channels); a
    channel with no spread is only shifted.

    Example:
        >>> x = torch.tensor([[[0.0, 2.0]], [[1.0, 1.0]]])
        >>> match_latent(x, torch.tensor([[[10.0, 14.0]], [[5.0, 7.0]]])).tolist()
        [[[10.0, 14.0]], [[6.0, 6.0]]]
    """
    dims = (-2, -1)
    mean, std = latent.mean(dim=dims, keepdim=True), latent.std(dim=dims, keepdim=True)
    ref_mean, ref_std = (
        reference.mean(dim=dims, keepdim=True),
        reference.std(dim=dims, keepdim=True),
    )
    scale = torch.where(std > 0, ref_std / torch.where(std > 0, std, 1.0), 1.0)
    return (latent - mean) * scale + ref_mean


class ColorCoherence:
    """Colour coherence over one run (a batch of settings): the references and the matching.

    The engine calls `before_loop` with each loop's input (the previous results) and
    `after_loop` with the loop's frames; with ``color_coherence="none"`` everywhere both do
    nothing and the input is returned as it is.

    Args:
        pipe: the pipeline (its VAE decodes and encodes in the pixel modes).
        params_list: the settings of each batch item.
        plans: each item's plan (its `LoopPlan.color_match` per loop).
        size: ``(width, height)`` of the run's images.
        start: the first loop the run computes.
        earlier: ``earlier(index)`` gives the latent of a loop before ``start`` (a branch's
            shared prefix) when one is a reference; may be ``None`` for runs from loop 0. When
            it also has an ``image(index)`` method (a `Session` passes one), the pixel modes
            take each loop's decoded image from it instead of decoding it here: the session's
            cache, which the studio's thumbnails and metrics read too, so a frame is decoded
            once. Of a batch it is asked only for the loops the items share (before ``start``).
    """

    def __init__(
        self,
        pipe,
        params_list: Sequence[SequenceParams],
        plans: Sequence[Sequence[LoopPlan]],
        size: tuple[int, int],
        start: int,
        earlier: Callable[[int], torch.Tensor] | None,
    ):
        self.pipe = pipe
        self.modes = [params.color_coherence for params in params_list]
        self.params_list = list(params_list)
        self.size = size
        self._earlier = earlier
        self._start = start
        # Only the loops some later loop refers to are kept.
        self._needed = {
            plan.color_match
            for item in plans
            for plan in item[start:]
            if isinstance(plan.color_match, int)
        }
        self._results: dict[tuple[int, int], torch.Tensor] = {}
        self._references: dict[tuple[int, int | str], Any] = {}
        self._seconds = 0.0

    def before_loop(self, plans: Sequence[LoopPlan], x: torch.Tensor) -> torch.Tensor:
        """The loop's input ``[N, C, h, w]`` with each item matched to its reference."""
        started = time.perf_counter()
        self._seconds = 0.0  # a loop that matches nothing must not report the last one's time
        todo = [
            (i, plan.color_match)
            for i, plan in enumerate(plans)
            if self.modes[i] != "none" and plan.color_match is not None
        ]
        if not todo:
            return x  # untouched: coherence off leaves the node's latents bit for bit
        x = x.clone()
        for i, target in todo:  # x[i] is the result of the loop before this one
            x[i] = self._match(i, target, x[i], plans[i].index - 1)
        self._seconds = time.perf_counter() - started
        return x

    def after_loop(self, frames: Sequence[Frame]) -> None:
        """Keep the results later loops refer to; add the matching time to the timings."""
        for i, frame in enumerate(frames):
            if frame.index in self._needed:
                self._results[(i, frame.index)] = frame.latent.float()
            if self.modes[i] != "none":
                frame.timings["coherence"] = self._seconds
                frame.timings["total"] = frame.timings.get("total", 0.0) + self._seconds

    # -- internals ---------------------------------------------------------------------------

    def _match(
        self, item: int, target: int | str, latent: torch.Tensor, index: int
    ) -> torch.Tensor:
        """``latent`` (loop ``index``'s result) matched to the reference ``target``."""
        mode = self.modes[item]
        if mode == "latent":
            return match_latent(latent.float(), self._reference_latent(item, target))
        from .decode import encode_image

        image = self._decoded(item, index, latent)
        matched = match_histograms(image, self._reference_image(item, target), mode)
        pixels = torch.from_numpy(matched).permute(2, 0, 1).float()
        return encode_image(self.pipe.vae, pixels, size=self.size)[0]

    def _reference_latent(self, item: int, target: int | str) -> torch.Tensor:
        key = (item, target)
        if key not in self._references:
            if target == "image":
                from .decode import encode_image

                image = self._load_image(item)
                self._references[key] = encode_image(self.pipe.vae, image, size=self.size)[0]
            else:
                self._references[key] = self._result(item, target)
        return self._references[key]

    def _reference_image(self, item: int, target: int | str) -> np.ndarray:
        key = (item, target)
        if key not in self._references:
            if target == "image":
                self._references[key] = self._load_image(item)
            else:
                self._references[key] = self._decoded(item, target, self._result(item, target))
        return self._references[key]

    def _decoded(self, item: int, index: int, latent: torch.Tensor):
        """Loop ``index``'s result (``latent``) decoded: the image ``earlier.image`` holds
        (the session's, decoded once for every use), else decoded here."""
        shared = getattr(self._earlier, "image", None)
        if shared is not None and (index < self._start or len(self.modes) == 1):
            return shared(index)
        from .decode import decode_latents

        return decode_latents(self.pipe.vae, latent)[0]

    def _result(self, item: int, index: int) -> torch.Tensor:
        if (item, index) in self._results:
            return self._results[(item, index)]
        if index < self._start and self._earlier is not None:
            return self._earlier(index).float()
        raise ValueError(
            f"color_coherence: loop {index} is the colour reference but its result is not "
            f"available; a run resumed at loop {self._start} needs earlier=... to read it"
        )

    def _load_image(self, item: int):
        from PIL import Image

        path = Path(self.params_list[item].color_reference)
        try:  # one line, never Pillow's decompression-bomb traceback
            image = read_image(path, "color_reference")
        except FileNotFoundError:
            raise ValueError(
                f"color_reference: {str(path)!r} is not an image file that exists"
            ) from None
        return image.resize(self.size, Image.Resampling.LANCZOS)
