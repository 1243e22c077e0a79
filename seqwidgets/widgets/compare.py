"""Compare mode: two branches side by side, their difference as a heatmap, the changed settings.

Pick the two branches, scrub the loop slider: both frames of that loop, and a heatmap of where
they differ (`seqwidgets.metrics.difference_map`), move together. The settings that differ are
listed above. Everything comes from `Session.diff`; decoded images come from the session's cache.

Example:
    >>> import seqwidgets as sw
    >>> session = sw.Session(sw.testing.tiny_pipeline())
    >>> run = session.run(sw.SequenceParams(steps=2, sequence_loop_count=3, positive_seq="0: a"))
    >>> alt = session.branch((run, 0), cfg=3.0)
    >>> view = CompareView(session, run, alt)
    >>> view.loop.options, view.index, view.pair.shared  # opens where the frames part
    ((0, 1, 2), 1, False)
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable

import ipywidgets as W
import numpy as np
import traitlets
from PIL import Image

from seqwidgets.metrics import BranchDiff, FramePair
from seqwidgets.session import Branch, Session

__all__ = ["HEAT_SCALE", "CompareView", "heatmap"]

#: A mean RGB difference of this much (half the range) shows as the hottest colour; the scale is
#: fixed, so heatmaps of different loops compare at a glance.
HEAT_SCALE = 0.5

# black -> deep red -> orange -> pale yellow
_HEAT_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
_HEAT_COLORS = np.array([[0, 0, 0], [150, 20, 40], [245, 130, 30], [255, 245, 190]], dtype=float)


def heatmap(difference: np.ndarray, scale: float = HEAT_SCALE) -> Image.Image:
    """A ``[H, W]`` difference in [0, 1] as an RGB heat image (black where the frames agree).

    Example:
        >>> heatmap(np.array([[0.0, 0.5]])).getpixel((1, 0))
        (255, 245, 190)
    """
    t = np.clip(np.asarray(difference, dtype=float) / scale, 0.0, 1.0)
    rgb = np.stack([np.interp(t, _HEAT_STOPS, _HEAT_COLORS[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8))


def _png(image: Image.Image, size: int) -> bytes:
    # Small frames (the toy model's 64 px) are enlarged without blurring.
    scale = max(1, size // max(image.size))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="png")
    return buffer.getvalue()


class CompareView(W.VBox):
    """Two branches' frames side by side with a difference heatmap, scrubbed together.

    Args:
        session (`Session`): the session holding both branches.
        a, b (`Branch`, *optional*): the branches to compare (default: the first two).
        size (`int`, defaults to 256): displayed side of each image, in pixels.
        on_select (*optional*): ``on_select(branch_a, loop)`` when the slider moves, so the
            studio's timeline follows.

    Traits:
        index: the loop shown (the slider's value).

    Wiring into the studio (a "Compare" tab or toggle beside the preview)::

        compare = CompareView(session, on_select=lambda b, i: timeline.select(b.id, i))
        # on_frame / new branch:        compare.refresh()
        # timeline.observe("selected"): compare.index = loop (when it is a shared loop)
    """

    index = traitlets.Int(0)

    def __init__(
        self,
        session: Session,
        a: Branch | None = None,
        b: Branch | None = None,
        *,
        size: int = 256,
        on_select: Callable[[Branch, int], None] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.add_class("sw-compare")
        self.session = session
        self.size = size
        self.on_select = on_select
        self.diff: BranchDiff | None = None
        self.menu_a = W.Dropdown(description="A", layout=W.Layout(width="240px"))
        self.menu_b = W.Dropdown(description="B", layout=W.Layout(width="240px"))
        for menu in (self.menu_a, self.menu_b):
            menu.style.description_width = "16px"
        self.loop = W.SelectionSlider(
            options=[0], description="loop", continuous_update=True, layout=W.Layout(width="360px")
        )
        self.settings = W.HTML()
        box = W.Layout(width=f"{size}px", height="auto")
        self.image_a, self.image_b, self.image_diff = (
            W.Image(format="png", layout=box) for _ in range(3)
        )
        self.captions = [W.HTML() for _ in range(3)]
        columns = [
            W.VBox([caption, image])
            for caption, image in zip(
                self.captions, (self.image_a, self.image_b, self.image_diff), strict=True
            )
        ]
        self.children = [
            W.HBox([self.menu_a, self.menu_b, self.loop], layout=W.Layout(gap="8px")),
            self.settings,
            W.HBox(columns, layout=W.Layout(gap="8px")),
        ]
        self._syncing = False
        self._shown: tuple | None = None  # the branch pair shown, by id
        self.refresh(a, b)
        self.menu_a.observe(lambda _: self._on_branches(), "value")
        self.menu_b.observe(lambda _: self._on_branches(), "value")
        self.loop.observe(self._on_loop, "value")

    # -- state -----------------------------------------------------------------------------------

    @property
    def branch_a(self) -> Branch | None:
        return self._by_id(self.menu_a.value)

    @property
    def branch_b(self) -> Branch | None:
        return self._by_id(self.menu_b.value)

    @property
    def pair(self) -> FramePair | None:
        """The frames shown now (``None`` when the branches share no computed loop)."""
        if self.diff is None:
            return None
        return next((p for p in self.diff.pairs if p.index == self.index), None)

    def _by_id(self, branch_id) -> Branch | None:
        return next((b for b in self.session.branches if b.id == branch_id), None)

    def refresh(self, a: Branch | None = None, b: Branch | None = None) -> None:
        """Re-read the session's branches (new ones, new frames) and redraw.

        ``a`` / ``b`` choose the branches; by default the current choice stays (else the first
        two branches).
        """
        branches = self.session.branches
        options = [(f"{x.id}: {x.name}", x.id) for x in branches]
        current_a = a.id if a is not None else self.menu_a.value
        current_b = b.id if b is not None else self.menu_b.value
        ids = [x.id for x in branches]
        if current_a not in ids:
            current_a = ids[0] if ids else None
        if current_b not in ids:
            current_b = next((i for i in ids if i != current_a), current_a)
        self._syncing = True
        try:
            self.menu_a.options = options
            self.menu_b.options = options
            self.menu_a.value = current_a
            self.menu_b.value = current_b
        finally:
            self._syncing = False
        self._on_branches()

    def _on_branches(self) -> None:
        if self._syncing:
            return
        a, b = self.branch_a, self.branch_b
        self.diff = self.session.diff(a, b) if a is not None and b is not None else None
        loops = [p.index for p in self.diff.pairs] if self.diff else []
        self._syncing = True
        try:
            self.loop.options = loops or [0]
            pair = (self.menu_a.value, self.menu_b.value)
            if pair != self._shown:  # a new pair opens where its frames part
                self._shown = pair
                keep = self.diff.parted_at if self.diff else None
            else:  # new frames of the same pair: stay where the user scrubbed
                keep = self.index
            self.loop.value = keep if keep in loops else (loops[-1] if loops else 0)
        finally:
            self._syncing = False
        self._show_settings()
        self.index = self.loop.value
        self.draw()

    @traitlets.observe("index")
    def _on_index(self, change) -> None:
        if change["new"] in self.loop.options and self.loop.value != change["new"]:
            self.loop.value = change["new"]
        self.draw()

    def _on_loop(self, change) -> None:
        if self._syncing:
            return
        self.index = change["new"]
        if self.on_select is not None and self.branch_a is not None:
            self.on_select(self.branch_a, self.index)

    # -- drawing -----------------------------------------------------------------------------------

    def _show_settings(self) -> None:
        if self.diff is None:
            self.settings.value = ""
            return
        if not self.diff.settings:
            self.settings.value = "<span class='sw-muted'>same settings</span>"
            return
        cells = "".join(
            f"<tr><td><code>{html.escape(name)}</code></td>"
            f"<td>{html.escape(repr(va))}</td><td>{html.escape(repr(vb))}</td></tr>"
            for name, (va, vb) in self.diff.settings.items()
        )
        parted = self.diff.parted_at
        where = "" if parted is None else f" · frames differ from loop {parted}"
        self.settings.value = (
            f"<table class='sw-compare-settings'><tr><th>setting</th><th>A</th><th>B</th></tr>"
            f"{cells}</table><span class='sw-muted'>{len(self.diff.settings)} setting(s) "
            f"differ{where}</span>"
        )

    def draw(self) -> None:
        """Show the current loop's two frames and their difference heatmap."""
        pair = self.pair
        if pair is None:
            for image in (self.image_a, self.image_b, self.image_diff):
                image.value = b""
            for caption in self.captions:
                caption.value = ""
            return
        image_a, image_b = pair.images()
        difference = pair.difference()
        self.image_a.value = _png(image_a, self.size)
        self.image_b.value = _png(image_b, self.size)
        self.image_diff.value = _png(heatmap(difference), self.size)
        self.captions[0].value = f"<b>A</b> loop {pair.index} · seed {pair.a.seed}"
        self.captions[1].value = f"<b>B</b> loop {pair.index} · seed {pair.b.seed}"
        self.captions[2].value = (
            "shared frame: identical"
            if pair.shared
            else f"difference · RMSE {pair.rmse():.3f} · max {difference.max():.2f}"
        )
