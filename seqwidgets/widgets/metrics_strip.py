"""The metrics strip: one per-loop measure under the timeline, a line per branch.

Columns line up with the timeline's loop thumbnails (the same `TimelineLayout` geometry and
scroll), so the value of loop ``i`` sits under its thumbnail. A dropdown picks the measure
(`seqwidgets.metrics.MEASURES`); keyframe starts are marked on the axis; the selected loop's
values are highlighted and read out. Rows come from `Session.metrics`, computed once per frame
from the images the thumbnails already decode: the strip adds no VAE decode.

Wiring into a studio: `MetricsStrip.follow` keeps the strip in step with a timeline (its
columns, visible rows and selection; a click selects there); call `refresh` from ``on_frame``.

Example:
    >>> import seqwidgets as sw
    >>> session = sw.Session(sw.testing.tiny_pipeline())
    >>> run = session.run(sw.SequenceParams(steps=2, sequence_loop_count=3, positive_seq="0: a"))
    >>> strip = MetricsStrip(session)
    >>> strip.refresh()
    >>> [len(points) for points in strip.series().values()]
    [3]
"""

from __future__ import annotations

import html
import io
import math
import traceback
from collections.abc import Callable

import ipywidgets as W
import traitlets
from PIL import Image

from seqwidgets.metrics import MEASURES, MetricsTable
from seqwidgets.session import Branch, Session
from seqwidgets.widgets.timeline import (
    ACCENT,
    BACKGROUND,
    GRID_TEXT,
    KEYFRAME,
    LANE,
    TimelineLayout,
    _CanvasPainter,
    _PILPainter,
    drawing,
    ipycanvas_available,
)

__all__ = ["BRANCH_COLORS", "MetricsStrip"]

#: Line colours, one per branch (by branch id), readable on the timeline's dark background.
BRANCH_COLORS = ("#4cc3ff", "#ff6b8b", "#8be36b", "#c792ff", "#ffd166", "#5eead4", "#f4a261")

SelectCallback = Callable[[Branch, int], None]


class MetricsStrip(W.VBox):
    """A compact per-loop plot of one measure, aligned with the timeline's columns.

    Args:
        session (`Session` or `None`): where the branches and their metrics come from (``None``:
            an empty strip until `session` is set, e.g. before a studio loads its model).
        on_select (*optional*): ``on_select(branch, loop)`` when a point is clicked (canvas
            renderer only); the studio moves the timeline's selection there.
        width, thumb (`int`): the timeline's canvas width and thumbnail size (its
            `TimelineLayout`), so columns line up (defaults 1040 and 56, the timeline's).
        height (`int`, defaults to 96): the plot's height in pixels.
        renderer (`str`, defaults to ``"auto"``): ``"canvas"`` (ipycanvas: click and hover),
            ``"image"`` (a PNG in ``ipywidgets.Image``) or ``"auto"`` (canvas when available).

    Traits:
        measure: the column of `MEASURES` shown (the dropdown sets it).
        scroll: the first loop column shown (the timeline's ``scroll``).
        selected: ``(branch_id, loop)`` to highlight (the timeline's ``selected``), or None.
        branch_ids: the branches drawn, by id (empty: every branch of the session).

    Wiring into the studio::

        strip = MetricsStrip(session, width=width, thumb=thumb)
        strip.follow(timeline)         # scroll, visible rows, selection; clicks select there
        # on_frame(branch, frame):     strip.refresh(branch)
    """

    measure = traitlets.Unicode("drift_lab")
    scroll = traitlets.Int(0)
    selected = traitlets.Any(None, allow_none=True)
    branch_ids = traitlets.List(traitlets.Int())

    def __init__(
        self,
        session: Session | None,
        *,
        on_select: SelectCallback | None = None,
        width: int = 1040,
        thumb: int = 56,
        height: int = 96,
        renderer: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if renderer not in ("auto", "canvas", "image"):
            raise ValueError(f"renderer: {renderer!r} is unknown; allowed: auto, canvas, image")
        self.add_class("sw-metrics-strip")
        self.session = session
        self.on_select = on_select
        self.geometry = TimelineLayout(width, thumb)
        self.height = height
        self.rows: dict[int, MetricsTable] = {}
        self.hover: int | None = None
        self.error = ""
        self._holding = False  # `sync_view` sets several traits at once: one redraw
        self.timeline = None  # the timeline followed (see `follow`)
        self.menu = W.Dropdown(
            options=[(f"{m.label} ({m.unit})", name) for name, m in MEASURES.items()],
            value=self.measure,
            description="measure",
            layout=W.Layout(width="330px"),
            style={"description_width": "60px"},
        )
        traitlets.link((self.menu, "value"), (self, "measure"))
        self.readout = W.HTML(layout=W.Layout(margin="0 0 0 12px"))
        self.help = W.HTML()
        if renderer == "auto":
            renderer = "canvas" if ipycanvas_available() else "image"
        self.renderer = renderer
        if renderer == "canvas":
            from ipycanvas import MultiCanvas

            # The lines on one layer, the highlight on another: selecting or hovering a loop
            # (every click and key on the timeline) repaints only the highlight.
            self.canvas = MultiCanvas(2, width=width, height=height)
            self.layers = (self.canvas[0], self.canvas[1])
            self.canvas.layout.width = f"{width}px"
            self.canvas.layout.height = f"{height}px"
            self.canvas.on_mouse_down(self._on_click)
            self.canvas.on_mouse_move(self._on_move)
            self.canvas.on_mouse_out(lambda *_: self._set_hover(None))
            self.canvas.on_client_ready(self.redraw)
            view = self.canvas
        else:
            self.image = W.Image(format="png", layout=W.Layout(width=f"{width}px"))
            view = self.image
        self.children = [
            W.HBox([self.menu, self.readout], layout=W.Layout(align_items="center")),
            view,
            self.help,
        ]
        self._range = (0.0, 1.0)  # the values' span on the y axis, set by `paint_lines`
        self.observe(self._on_view, ["measure", "scroll", "selected", "branch_ids"])
        self.redraw()

    def _on_view(self, change) -> None:
        if not self._holding:
            self.redraw(lines=change["name"] != "selected")

    def follow(self, timeline) -> None:
        """Stay in step with ``timeline`` (a studio's): its first column, the branches of its
        visible rows and its selection; clicking a point selects that loop on it."""
        self.timeline = timeline
        self.on_select = lambda branch, loop: timeline.select(branch.id, loop)
        timeline.observe(lambda _: self.sync_view(), ["viewport", "selected"])
        self.sync_view()

    def sync_view(self, redraw: bool = True) -> bool:
        """Copy the followed timeline's view; return whether it changed (then redraw, if asked).
        `refresh` calls it: the rows of the timeline may have changed with the new frames."""
        t = self.timeline
        view = (t.scroll, t.visible_keys(), t.selected) if t is not None else None
        if view is None or view == (self.scroll, self.branch_ids, self.selected):
            return False
        lines = view[:2] != (self.scroll, self.branch_ids)
        self._holding = True
        try:
            self.scroll, self.branch_ids, self.selected = view
        finally:
            self._holding = False
        if redraw:
            self.redraw(lines=lines)
        return True

    # -- data ----------------------------------------------------------------------------------

    def branches(self) -> list[Branch]:
        """The branches drawn: ``branch_ids`` in that order, else all, in creation order."""
        if self.session is None:
            return []
        every = {b.id: b for b in self.session.branches}
        if self.branch_ids:
            return [every[i] for i in self.branch_ids if i in every]
        return list(every.values())

    def refresh(self, branch: Branch | None = None) -> None:
        """Read the metrics of ``branch`` (default: every branch of the session with loops not
        read yet), follow the timeline's view (`sync_view`) and redraw when anything changed.

        Safe to call from any thread on each new frame: only the new loops' rows are computed,
        the rest come from the session's cache. Following a timeline, ``branch``'s points stop
        at its last thumbnail drawn: the run may be loops ahead of the drawing, and a point
        sits under its thumbnail.
        """
        if branch is not None:
            targets = [branch]
        else:
            every = self.session.branches if self.session is not None else []
            targets = [b for b in every if len(self.rows.get(b.id, ())) != len(b.indices)]
        for b in targets:
            last = -1 if branch is None or self.timeline is None else self.timeline.last_index(b.id)
            self.rows[b.id] = self.session.metrics(b, None if last < 0 else last)
        if self.sync_view(redraw=False) or targets:  # one redraw for both
            self.redraw()

    def series(self) -> dict[int, list[tuple[int, float]]]:
        """``{branch_id: [(loop, value), ...]}`` for the visible columns (NaN values left out)."""
        first, last = self.scroll, self.scroll + self.geometry.columns
        out = {}
        for b in self.branches():
            rows = self.rows.get(b.id, [])
            out[b.id] = [
                (row["loop"], row[self.measure])
                for row in rows
                if first <= row["loop"] < last and not math.isnan(row[self.measure])
            ]
        return out

    def value_at(self, branch_id: int, loop: int) -> float | None:
        """The shown measure of one loop of one branch (None if not computed)."""
        rows = self.rows.get(branch_id, [])
        return rows[loop][self.measure] if 0 <= loop < len(rows) else None

    # -- painting ------------------------------------------------------------------------------

    def _y_range(self, series) -> tuple[float, float]:
        values = [v for points in series.values() for _, v in points]
        if not values:
            return 0.0, 1.0
        low, high = min(values + [0.0]), max(values)
        if high - low < 1e-9:
            high = low + 1.0
        return low, high

    def _x(self, loop: int) -> float:
        return self.geometry.x(loop, self.scroll) + self.geometry.thumb / 2

    def _y(self, value: float) -> float:
        low, high = self._range
        top, bottom = 14, self.height - 8
        return bottom - (value - low) / (high - low) * (bottom - top)

    def paint(self, p) -> None:
        """Draw the strip with a painter (the timeline's drawing vocabulary)."""
        self.paint_lines(p)
        self.paint_highlight(p)

    def paint_lines(self, p) -> None:
        """The background, the axis, the keyframe ticks and each branch's line of points."""
        g, h = self.geometry, self.height
        top, bottom = 14, h - 8
        p.rect(0, 0, g.width, h, fill=BACKGROUND)
        p.rect(g.gutter - 4, 0, g.width - g.gutter + 4, h, fill=LANE)
        series = self.series()
        low, high = self._range = self._y_range(series)
        y = self._y
        info = MEASURES[self.measure]
        p.text(info.unit, 6, 4, GRID_TEXT, size=10)
        p.text(f"{high:.3g}", g.gutter - 8, top - 6, GRID_TEXT, size=10, align="right")
        p.text(f"{low:.3g}", g.gutter - 8, bottom - 10, GRID_TEXT, size=10, align="right")
        first, last = self.scroll, self.scroll + g.columns
        for b in self.branches():  # keyframe starts: ticks on the top edge
            for k, _ in b.params.positive_keyframes:
                if first <= k < last and k > 0:
                    p.line([(self._x(k), 0), (self._x(k), 6)], KEYFRAME, 2)
        # The first branches last: on the loops a branch shares with the run it forks from the
        # values are equal, and the parent's colour stays visible there.
        for bid, points in reversed(series.items()):
            color = BRANCH_COLORS[bid % len(BRANCH_COLORS)]
            xy = [(self._x(loop), y(v)) for loop, v in points]
            if len(xy) > 1:
                p.line(xy, color, 1.5)
            p.squares(xy, 4, color)  # a marker per loop: the point the thumbnail above shows

    def paint_highlight(self, p) -> None:
        """The selected (or hovered) loop: a line down its column, a ring round each value."""
        top, bottom = 14, self.height - 8
        first, last = self.scroll, self.scroll + self.geometry.columns
        for loop, bid in self._highlights():
            value = self.value_at(bid, loop)
            if value is None or math.isnan(value) or not first <= loop < last:
                continue
            px = self._x(loop)
            p.line([(px, top - 4), (px, bottom + 4)], ACCENT, 1)
            p.rect(px - 4, self._y(value) - 4, 8, 8, stroke=ACCENT, width=2)

    def _highlights(self) -> list[tuple[int, int]]:
        """``(loop, branch_id)`` pairs to highlight: the selection, or the hovered column."""
        if self.hover is not None:
            return [(self.hover, b.id) for b in self.branches()]
        if self.selected is not None:
            key, loop = self.selected
            return [(loop, key)]
        return []

    def render(self) -> Image.Image:
        """The strip as a Pillow image (what the ``"image"`` renderer shows)."""
        im = Image.new("RGBA", (self.geometry.width, self.height), BACKGROUND)
        self.paint(_PILPainter(im, {}))
        return im

    def redraw(self, lines: bool = True) -> None:
        """Repaint (``lines=False``: only the highlight, on the canvas), and update the readout
        and the measure's one-line help."""
        try:
            self._update_text()
            if self.renderer == "canvas":
                with drawing(self._report):
                    if lines:
                        self.paint_lines(_CanvasPainter(self.layers[0], {}))
                    self.layers[1].clear()
                    self.paint_highlight(_CanvasPainter(self.layers[1], {}))
            else:
                buffer = io.BytesIO()
                self.render().save(buffer, format="png")
                self.image.value = buffer.getvalue()
        except Exception as exc:  # drawing runs in the sampling thread too: report, never raise
            self._report(exc, traceback.format_exc())

    def _update_text(self) -> None:
        info = MEASURES[self.measure]
        self.help.value = (
            f"<span class='sw-muted'>{html.escape(info.help)} {html.escape(info.teacher)}</span>"
        )
        parts = []
        for loop, bid in self._highlights():
            value = self.value_at(bid, loop)
            if value is not None and not math.isnan(value):
                color = BRANCH_COLORS[bid % len(BRANCH_COLORS)]
                parts.append(
                    f"<span style='color:{color}'>&#9632;</span> loop {loop}: <b>{value:.3g}</b>"
                )
        self.readout.value = " &nbsp; ".join(parts)

    def _report(self, exc: BaseException, text: str) -> None:
        self.error = text

    # -- mouse (canvas renderer) ---------------------------------------------------------------

    def loop_at(self, x: float) -> int | None:
        """The loop column under canvas x, or None in the gutter."""
        g = self.geometry
        if x < g.gutter:
            return None
        return int((x - g.gutter) // g.col_w) + self.scroll

    def _set_hover(self, loop: int | None) -> None:
        if loop != self.hover:
            self.hover = loop
            self.redraw(lines=False)

    def _on_move(self, x: float, y: float) -> None:
        self._set_hover(self.loop_at(x))

    def _on_click(self, x: float, y: float) -> None:
        loop = self.loop_at(x)
        if loop is None or self.on_select is None:
            return
        # The branch whose point is nearest the click, among those that have this loop.
        g_y = {bid: v for bid, points in self.series().items() for i, v in points if i == loop}
        if not g_y:
            return
        branches = {b.id: b for b in self.branches()}
        nearest = min(g_y, key=lambda bid: abs(self._y(g_y[bid]) - y))  # as drawn last
        self.on_select(branches[nearest], loop)
