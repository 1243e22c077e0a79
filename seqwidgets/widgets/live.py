"""The studio's live preview: the previewer `seqwidgets.decode.make_previewer` builds for the
pipeline, and the last estimate, held so that it can be decoded with the full VAE.

A preview is a nicety: a previewer that raises is turned off, with a note saying why, and the
run goes on. A previewer that returns ``None`` (a TAESD decoder staying within its time budget)
is skipped: the preview keeps its last picture.

Example:
    >>> import torch
    >>> from seqwidgets.params import SequenceParams
    >>> from seqwidgets.testing import tiny_pipeline
    >>> live = LivePreview()
    >>> live.attach(tiny_pipeline("flux"))
    >>> live.note, live.kind
    ('latent-to-RGB preview', 'latent-to-RGB')
    >>> live(torch.zeros(1, 16, 8, 8), loop=2, step=0, params=SequenceParams()).size
    (8, 8)
    >>> live.held.loop, tuple(live.held.latent.shape)
    (2, (1, 16, 8, 8))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from PIL import Image

__all__ = ["LiveEstimate", "LivePreview"]


class LiveEstimate(NamedTuple):
    """The denoised estimate of loop ``loop`` at model step ``step`` (a copy, ``[1, C, h, w]``)."""

    latent: torch.Tensor
    loop: int
    step: int
    params: Any


class LivePreview:
    """Turns the sampler's denoised estimates into preview images for one pipeline.

    Args:
        preview (`str`, *optional*): the preview `make_previewer` builds (``"latent_rgb"``,
            ``"taesd"``, ...); ``None``: its default.

    Attributes:
        note (`str`): what the preview is, or why it is not what was asked for (for the header).
        held (`LiveEstimate` or ``None``): the last estimate, until its loop's frame arrives.
        on_note: called with the note once the previewer is built, or turned off after failing.
    """

    def __init__(self, preview: str | None = None):
        self.preview = preview
        self.pipe = None
        self.previewer: Callable[[torch.Tensor], Image.Image | None] | None = None
        self.note = ""
        self.held: LiveEstimate | None = None
        self.on_note: Callable[[str], None] | None = None
        self._prepared: tuple[torch.Tensor, Image.Image | None] | None = None

    @property
    def kind(self) -> str:
        """The preview in a word or two, from the note: ``"latent-to-RGB"``, ``"TAESD"``, ..."""
        # A fallback's note reads "TAESD preview unavailable (...); latent-to-RGB preview".
        last = self.note.rsplit("; ", 1)[-1]
        return last.removesuffix(" preview") if last.endswith(" preview") else "preview"

    def attach(self, pipe, *, strict: bool = True) -> None:
        """Build the previewer for ``pipe``, once per pipeline (``None``: not known yet).

        ``strict``: a preview name `make_previewer` refuses raises its `ValueError`; otherwise
        (a pipeline loaded during a run) the preview is turned off with a note.
        """
        if pipe is None or pipe is self.pipe:
            return
        from seqwidgets.decode import make_previewer

        options = {} if self.preview is None else {"preview": self.preview}
        self.pipe, self.previewer = pipe, None
        try:
            self.previewer, self.note = make_previewer(pipe, **options)
        except Exception as exc:
            if strict and isinstance(exc, ValueError):
                raise
            self._turn_off(exc)
        else:
            self._tell()

    def prepare(self, denoised: torch.Tensor, *, loop: int, step: int, params) -> None:
        """Preview ``denoised`` ahead (on the display's thread, beside the sampling): the next
        call with this same tensor returns that picture instead of making it again."""
        self._prepared = (denoised, self(denoised, loop=loop, step=step, params=params))

    def __call__(
        self, denoised: torch.Tensor, *, loop: int, step: int, params
    ) -> Image.Image | None:
        """Hold a copy of ``denoised`` (the sampler's tensor is never touched) and preview it:
        an image, or ``None`` when there is none (no previewer, a skipped step, a failure)."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] is denoised:
            return prepared[1]
        latent = denoised[:1].detach().clone()
        self.held = LiveEstimate(latent, loop, step, params)
        if self.previewer is None:
            return None
        try:
            return self.previewer(latent)
        except Exception as exc:  # never fail a run over a preview
            self._turn_off(exc)
            return None

    def release(self, loop: int | None = None) -> None:
        """Forget the held estimate (of ``loop`` only, when given: its frame replaced it)."""
        held = self.held
        if held is not None and (loop is None or held.loop == loop):
            self.held = None

    def _turn_off(self, exc: BaseException) -> None:
        self.previewer = None
        self.note = f"live preview off ({type(exc).__name__}: {exc})"
        self._tell()

    def _tell(self) -> None:
        if self.on_note is not None:
            self.on_note(self.note)
