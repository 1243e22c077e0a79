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
from seqwidgets.widgets.render import format_value

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
        session (`Session` or `None`): the session holding both branches (``None``: empty until
            `session` is set).
        a, b (`Branch`, *optional*): the branches to compare (default: the first two).
        size (`int`, defaults to 256): displayed side of each image, in pixels.
        on_select (*optional*): ``on_select(branch_a, loop)`` when the slider moves, so the
            studio's timeline follows.

    Traits:
        index: the loop shown (the slider's value).
        active: whether the view is shown; while it is not, nothing is decoded or drawn, and
            showing it again refreshes it.

    Wiring into the studio (a "Compare" tab beside the preview)::

        compare = CompareView(session, active=False)
        compare.follow(timeline)       # A is the selected branch; the slider and the timeline
                                       # scrub together
        # the tab is shown / hidden:   compare.active = True / False
        # on_frame / new branch:       compare.refresh()
    """

    index = traitlets.Int(0)
    active = traitlets.Bool(True)

    def __init__(
        self,
        session: Session | None,
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
        self.timeline = None  # the timeline followed (see `follow`)
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
        branches = self.session.branches if self.session is not None else []
        return next((b for b in branches if b.id == branch_id), None)

    def follow(self, timeline) -> None:
        """Scrub together with ``timeline`` (a studio's): moving the slider selects that loop of
        branch A there; selecting a loop there moves the slider when both branches have it; on
        showing the view, A is the selected frame's branch."""
        self.timeline = timeline
        self.on_select = lambda branch, loop: timeline.select(branch.id, loop)
        timeline.observe(lambda _: self._to_selection(), "selected")

    def tab_beside(self, preview: W.Widget) -> W.Tab:
        """Tabs "Preview" (``preview``) and "Compare" (this view, `active` while its tab shows).

        >>> view = CompareView(None, active=False)
        >>> tabs = view.tab_beside(W.HTML())
        >>> tabs.selected_index = 1
        >>> view.active
        True
        """
        tabs = W.Tab([preview, self], titles=("Preview", "Compare"))
        tabs.observe(lambda change: setattr(self, "active", change["new"] == 1), "selected_index")
        return tabs

    def _to_selection(self) -> None:
        selected = self.timeline.selected if self.timeline is not None else None
        if self.active and selected is not None and selected[1] in self.loop.options:
            self.index = selected[1]

    @traitlets.observe("active")
    def _on_active(self, change) -> None:
        if change["new"]:
            selected = self.timeline.selected if self.timeline is not None else None
            self.refresh(self._by_id(selected[0]) if selected is not None else None)
            self._to_selection()

    def refresh(self, a: Branch | None = None, b: Branch | None = None) -> None:
        """Re-read the session's branches (new ones, new frames) and redraw.

        ``a`` / ``b`` choose the branches; by default the current choice stays (else the first
        two branches). Does nothing while the view is not `active`.
        """
        if not self.active:
            return
        branches = self.session.branches if self.session is not None else []
        options = [(f"{x.id}: {x.name}", x.id) for x in branches]
        current_a = a.id if a is not None else self.menu_a.value
        current_b = b.id if b is not None else self.menu_b.value
        ids = [x.id for x in branches]
        if current_a not in ids:
            current_a = ids[0] if ids else None
        if current_b not in ids or (current_b == current_a and b is None):
            current_b = next((i for i in ids if i != current_a), current_a)
        self._syncing = True
        try:
            for menu in (self.menu_a, self.menu_b):
                # Only when a branch came or went: a browser echoes a menu's value back after
                # its options change, and a refresh comes with every new frame.
                if list(menu.options) != options:
                    menu.options = options
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
            if list(self.loop.options) != (loops or [0]):
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
            f"<td>{html.escape(format_value(va))}</td><td>{html.escape(format_value(vb))}</td></tr>"
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
        if not self.active:
            return
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
