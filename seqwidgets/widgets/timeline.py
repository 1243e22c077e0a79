"""The studio's timeline (one row per branch, one column per loop) and its large preview.

Two renderers share one layout and one painting routine:

* ``"canvas"`` (ipycanvas): each thumbnail is sent once, as lossless RGBA, into its own hidden
  `Canvas`; every later draw (scrolling, a new branch, a page reload) is ``draw_image`` of that
  canvas, so no pixels travel twice. Two layers: thumbnails below, the selection above, so
  scrubbing redraws only a highlight. Click selects, drag scrubs, arrow keys step, the wheel
  scrolls; only the visible columns and rows are drawn.
* ``"image"`` (plain ``ipywidgets.Image``): the same picture composed with Pillow and sent as
  PNG, for front ends where ipycanvas cannot render. Selection uses the slider and the menu.

Drawing may come from the sampling thread. ipycanvas has one canvas manager for the whole
kernel and ``hold_canvas`` toggles a global flag without ``try/finally``, so every draw goes
through `drawing()`: one process-wide lock, one ``hold_canvas`` batch, and no exception ever
escapes inside it (a failure is reported to ``on_error`` instead).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "Row",
    "TimelineLayout",
    "CanvasTimeline",
    "ImageTimeline",
    "CanvasPreview",
    "ImagePreview",
    "drawing",
    "ipycanvas_available",
    "put_pixels",
]

# Colours: a dark strip so thumbnails read as film, one accent for the selection.
BACKGROUND = "#17181c"
LANE = "#202229"
PLACEHOLDER = "#2b2e37"
GRID_TEXT = "#8b90a0"
LABEL_TEXT = "#d7dae3"
ACCENT = "#ffb020"
KEYFRAME = "#4cc3ff"
CONNECTOR = "#6c7386"
RUNNING = "#53d769"
DRAFT_LANE = "#3a2f12"  # a live draft's row: amber, unlike any kept branch

_DRAW_LOCK = threading.RLock()


def ipycanvas_available() -> bool:
    """Whether ipycanvas can be imported (its front end may still be missing; see colab.py)."""
    try:
        import ipycanvas  # noqa: F401
    except Exception:
        return False
    return True


@contextlib.contextmanager
def drawing(on_error: Callable[[BaseException, str], None] | None = None):
    """Batch canvas commands from any thread: one lock, one ``hold_canvas``, nothing raised inside.

    An exception in the body is passed to ``on_error(exc, traceback_text)`` (or dropped) and
    suppressed, so ``hold_canvas`` always flushes and resets its global caching flag.
    """
    from ipycanvas import hold_canvas

    with _DRAW_LOCK, hold_canvas():
        try:
            yield
        except Exception as exc:  # never let an exception unwind through hold_canvas
            if on_error is not None:
                with contextlib.suppress(Exception):
                    on_error(exc, traceback.format_exc())


def put_pixels(canvas, pixels: np.ndarray) -> None:
    """``canvas.put_image_data(pixels, 0, 0)`` for uint8 RGBA ``[h, w, 4]`` pixels, packed faster.

    ipycanvas sends the pixels as a PNG packed at zlib's level 6: for a thumbnail or a toy-model
    frame that costs more than half a millisecond, several per new frame (bench_interaction).
    Small pictures go stored instead (level 0: a few more kilobytes to a local browser), larger
    ones at level 1; the pixels are the same. With an ipycanvas that has no canvas manager to
    send through, its own `put_image_data` does it.
    """
    manager = getattr(canvas, "_canvas_manager", None)
    try:
        from ipycanvas.canvas import COMMANDS
    except ImportError:
        manager = None
    if manager is None:
        canvas.put_image_data(pixels, 0, 0)
        return
    buffer = io.BytesIO()
    level = 0 if pixels.shape[0] * pixels.shape[1] <= 128 * 128 else 1
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=level)
    manager.send_draw_command(canvas, COMMANDS["putImageData"], [0, 0], [buffer.getvalue()])


def _forget_current_canvas() -> None:
    """Make the next command name its canvas again. The canvas manager skips the switch when
    the canvas is the one it drew on last, but a client that has just connected never saw it."""
    from ipycanvas.canvas import _CANVAS_MANAGER

    with _DRAW_LOCK:
        _CANVAS_MANAGER._current_canvas = None


@dataclass
class Row:
    """One branch on the timeline.

    Attributes:
        key: the branch id.
        name: the label shown in the gutter (the line under it says "from loop <fork>").
        fork: the first loop the branch computes itself (earlier loops are its parent's).
        length: the loops it will have (``sequence_loop_count``).
        parent: the parent's key, or ``None`` for a root run.
        keyframes: loops where a positive keyframe starts (markers on the axis).
        branch: the session's `Branch` it shows; it says which row owns a shared loop. A row
            without one owns every loop it shows.
    """

    key: Hashable
    name: str
    fork: int = 0
    length: int = 1
    parent: Hashable | None = None
    keyframes: tuple[int, ...] = ()
    done: set[int] = field(default_factory=set)
    branch: Any = field(default=None, repr=False, compare=False)
    draft: bool = False
    #: The line under the label, when not the usual "from loop <fork>" (a draft's steps).
    note: str = ""

    #: Characters of a label that fit in the gutter.
    LABEL = 15

    @classmethod
    def of(cls, branch, draft: bool = False, note: str = "") -> Row:
        """The row of a session's `Branch`: its name when that fits the gutter, else
        ``"branch <id>"`` (the fork's loop is on the line below).

        >>> import seqwidgets as sw
        >>> run = sw.Branch(1, "run 1", sw.SequenceParams(sequence_loop_count=16))
        >>> alt = sw.Branch(2, "run 1 > from loop 4", run.params, parent=run, fork=4)
        >>> Row.of(run).name, Row.of(alt).name, Row.of(alt).fork, Row.of(alt).parent
        ('run 1', 'branch 2', 4, 1)
        """
        name = branch.name
        if len(name) > cls.LABEL:
            name = f"{'branch' if branch.parent is not None else 'run'} {branch.id}"
        return cls(
            key=branch.id,
            name=name,
            fork=branch.fork,
            length=branch.params.sequence_loop_count,
            parent=None if branch.parent is None else branch.parent.id,
            keyframes=tuple(i for i, _ in branch.params.positive_keyframes),
            branch=branch,
            draft=draft,
            note=note,
        )


class TimelineLayout:
    """Pixel geometry of the timeline: where each (row, loop) cell is, and what a point hits.

    Args:
        width: canvas width in pixels.
        thumb: thumbnail box side in pixels.
        max_rows: rows visible at once; more rows scroll vertically.
    """

    gutter = 104
    axis = 26
    gap = 6
    pad = 8

    def __init__(self, width: int = 1040, thumb: int = 56, max_rows: int = 5):
        self.width = width
        self.thumb = thumb
        self.max_rows = max_rows
        self.col_w = thumb + self.gap
        self.row_h = thumb + self.gap + 4

    @property
    def columns(self) -> int:
        """Columns visible at once."""
        return max(1, (self.width - self.gutter - self.pad) // self.col_w)

    def height(self, rows: int) -> int:
        return self.axis + max(1, min(rows, self.max_rows)) * self.row_h + self.pad

    def x(self, col: int, scroll: int) -> int:
        return self.gutter + (col - scroll) * self.col_w

    def y(self, pos: int) -> int:
        return self.axis + pos * self.row_h + 2

    def hit(self, x: float, y: float, scroll: int, row_scroll: int) -> tuple[int, int] | None:
        """``(row_index, loop)`` under the point, or ``None`` outside the cells."""
        if x < self.gutter or y < self.axis:
            return None
        col = int((x - self.gutter) // self.col_w) + scroll
        pos = int((y - self.axis) // self.row_h)
        if pos >= self.max_rows:
            return None
        return pos + row_scroll, col


# -- painters: one drawing vocabulary for ipycanvas and for Pillow ----------------------------


class _CanvasPainter:
    def __init__(self, canvas, images: dict):
        self.c = canvas
        self.images = images
        self._styles: dict[str, object] = {}  # set by this painter (one paint)

    def _set(self, name: str, value) -> None:
        # Each style set is a command to the browser and about 6 us here, however often the
        # value repeats (a strip's markers, a row's texts). Within one paint nothing else
        # touches the canvas, so a repeat is skipped; a new paint sets each style again, since
        # the browser may have reset them (a resized canvas, a reloaded page).
        if self._styles.get(name, self) != value:
            self._styles[name] = value
            setattr(self.c, name, value)

    def rect(self, x, y, w, h, fill=None, stroke=None, width=1.0):
        if fill is not None:
            self._set("fill_style", fill)
            self.c.fill_rect(x, y, w, h)
        if stroke is not None:
            self._set("stroke_style", stroke)
            self._set("line_width", width)
            self.c.stroke_rect(x, y, w, h)

    def squares(self, centres, side, fill):
        """Filled squares of ``side`` centred on each ``(x, y)``: one canvas command."""
        if centres:
            self._set("fill_style", fill)
            xs, ys = (np.asarray(v, dtype=float) - side / 2 for v in zip(*centres, strict=True))
            self.c.fill_rects(xs, ys, side, side)

    def line(self, points, color, width=1.0):
        self._set("stroke_style", color)
        self._set("line_width", width)
        self.c.stroke_lines(points)

    def polygon(self, points, fill):
        self._set("fill_style", fill)
        self.c.fill_polygon(points)

    def text(self, s, x, y, color, size=11, bold=False, align="left"):
        self._set("font", f"{'bold ' if bold else ''}{size}px sans-serif")
        self._set("fill_style", color)
        self._set("text_align", align)
        self._set("text_baseline", "top")
        self.c.fill_text(s, x, y)

    def image(self, key, x, y, w, h):
        source = self.images.get(key)
        if source is not None:
            self.c.draw_image(source, x, y)

    def clear(self, w, h):
        self.c.clear_rect(0, 0, w, h)


class _PILPainter:
    def __init__(self, image: Image.Image, images: dict):
        self.im = image
        self.d = ImageDraw.Draw(image)
        self.images = images
        self._fonts: dict = {}

    def _font(self, size):
        if size not in self._fonts:
            try:
                self._fonts[size] = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1
                self._fonts[size] = ImageFont.load_default()
        return self._fonts[size]

    def rect(self, x, y, w, h, fill=None, stroke=None, width=1.0):
        box = [x, y, x + w - 1, y + h - 1]
        self.d.rectangle(box, fill=fill, outline=stroke, width=max(1, round(width)))

    def squares(self, centres, side, fill):
        for x, y in centres:
            self.rect(x - side / 2, y - side / 2, side, side, fill=fill)

    def line(self, points, color, width=1.0):
        self.d.line([tuple(p) for p in points], fill=color, width=max(1, round(width)))

    def polygon(self, points, fill):
        self.d.polygon([tuple(p) for p in points], fill=fill)

    def text(self, s, x, y, color, size=11, bold=False, align="left"):
        font = self._font(size)
        if align == "center":
            x -= self.d.textlength(s, font=font) / 2
        elif align == "right":
            x -= self.d.textlength(s, font=font)
        self.d.text((x, y), s, fill=color, font=font)

    def image(self, key, x, y, w, h):
        thumb = self.images.get(key)
        if thumb is not None:
            self.im.paste(thumb, (int(x), int(y)))

    def clear(self, w, h):
        self.d.rectangle([0, 0, w, h], fill=(0, 0, 0, 0))


# -- the timeline ------------------------------------------------------------------------------


class _Timeline(W.VBox):
    """State, navigation and painting shared by both renderers.

    ``selected`` is ``(branch_key, loop)`` along the branch the user follows; the cell lit up is
    the frame's owner (a loop before a branch's fork belongs to its parent). ``on_error`` gets
    drawing failures, which never propagate into the sampling thread.
    """

    selected = traitlets.Any(None, allow_none=True)
    #: ``(scroll, row_scroll)``: the first loop column and the first row shown; it changes
    #: whenever the view scrolls, so a widget drawn in step (the metrics strip) can follow.
    viewport = traitlets.Tuple((0, 0))

    def __init__(self, *, width: int = 1040, thumb: int = 56, max_rows: int = 5):
        super().__init__()
        self.add_class("sw-timeline")
        self.layout_ = TimelineLayout(width, thumb, max_rows)
        self.rows: list[Row] = []
        self.thumbs: dict[tuple, Image.Image] = {}
        self.scroll = 0
        self.row_scroll = 0
        self.running: tuple | None = None
        self.follow_scroll = True
        #: True while `select_auto` moves the selection (a run following its frames), so an
        #: observer of `selected` tells the program's moves from the user's.
        self.auto = False
        self.on_error: Callable[[BaseException, str], None] | None = None

        self.play = W.Play(
            interval=250,
            min=0,
            max=0,
            step=1,
            repeat=True,
            description="Play",
            tooltip="Animate the selected branch",
            layout=W.Layout(width="auto"),
        )
        self.loop_slider = W.IntSlider(
            min=0,
            max=0,
            description="loop",
            continuous_update=True,
            layout=W.Layout(width="360px"),
            style={"description_width": "36px"},
        )
        # Play steps the selection through the kernel rather than a jslink to the slider: a
        # link echoes stale slider values back while a run moves the selection, which would
        # jump the selection backwards.
        self.branch_menu = W.Dropdown(
            options=[],
            description="branch",
            layout=W.Layout(width="230px"),
            style={"description_width": "52px"},
        )
        self.speed = W.Dropdown(
            options=[
                ("1 fps", 1000),
                ("2 fps", 500),
                ("4 fps", 250),
                ("8 fps", 125),
                ("15 fps", 66),
            ],
            value=250,
            layout=W.Layout(width="86px"),
            tooltip="Playback speed",
        )
        self.speed.observe(lambda change: setattr(self.play, "interval", change["new"]), "value")
        self.scrollbar = W.IntSlider(
            min=0,
            max=0,
            description="scroll",
            readout=False,
            continuous_update=True,
            layout=W.Layout(width="100%", display="none"),
            style={"description_width": "44px"},
        )
        self.toolbar = W.HBox(
            [self.play, self.speed, self.loop_slider, self.branch_menu],
            layout=W.Layout(align_items="center", gap="8px"),
        )
        self.loop_slider.observe(self._on_slider, "value")
        self.play.observe(self._on_slider, "value")
        self.branch_menu.observe(self._on_menu, "value")
        self.scrollbar.observe(self._on_scrollbar, "value")
        self._syncing = False

    # -- rows and frames -------------------------------------------------------------------

    def row_index(self, key) -> int | None:
        for i, row in enumerate(self.rows):
            if row.key == key:
                return i
        return None

    def row(self, key) -> Row | None:
        i = self.row_index(key)
        return None if i is None else self.rows[i]

    def add_row(self, row: Row) -> None:
        """Add a branch row (or update it when its key is known); redraws."""
        i = self.row_index(row.key)
        if i is None:
            self.rows.append(row)
        else:
            row.done = self.rows[i].done
            self.rows[i] = row
        self._sync_menu()
        self._resized()
        self.redraw()

    def show_branch(self, branch) -> None:
        """Add the row of a session's `Branch`, or update it when its length changed."""
        row = self.row(branch.id)
        if row is None or row.length != branch.params.sequence_loop_count:
            draft = row is not None and row.draft
            self.add_row(Row.of(branch, draft=draft, note=row.note if draft else ""))

    def add_frame(self, branch, index: int, image: Image.Image) -> None:
        """Show a new frame of a session's `Branch`: its row, its thumbnail, and the next loop's
        cell marked as being computed (no mark after the last loop)."""
        self.show_branch(branch)
        following = index + 1 < branch.params.sequence_loop_count
        # Marked before the cell is painted: the cell's repaint draws the mark with it.
        self.running = (branch.id, index + 1) if following else None
        self.add_thumbnail(branch.id, index, image)
        if self._cell_xy(branch.id, index) is None:  # no cell painted, so no mark either
            self._paint_overlay()

    def sync(self, branches, thumbnail: Callable) -> None:
        """A row for each of a session's ``branches`` and a thumbnail for each of their frames
        (``thumbnail(branch, index)`` makes a missing one); selects the first frame when nothing
        is selected."""
        for branch in branches:
            self.show_branch(branch)
            for index in branch.own_indices:
                if (branch.id, index) not in self.thumbs:
                    self.add_thumbnail(branch.id, index, thumbnail(branch, index))
        if self.selected is None:
            first = next((b for b in branches if b.indices), None)
            if first is not None:
                self.select(first.id, 0)

    def show_draft(self, branch, note: str = "") -> None:
        """Show ``branch`` as the live draft's row (marked "DRAFT", with ``note`` under the
        label when given), emptied of the previous draft's frames; the row keeps its place."""
        row = self.row(branch.id)
        if row is not None:
            for index in list(row.done):
                self._forget(row.key, index)
            row.done.clear()
        self.add_row(Row.of(branch, draft=True, note=note))

    def remove_row(self, key) -> None:
        i = self.row_index(key)
        if i is None:
            return
        row = self.rows.pop(i)
        for index in list(row.done):
            self._forget(key, index)
        if self.selected and self.selected[0] == key:
            self.selected = None
        self._sync_menu()
        self._resized()
        self.redraw()

    def add_thumbnail(self, key, index: int, image: Image.Image) -> None:
        """Show ``image`` (a PIL thumbnail) as loop ``index`` of branch ``key``."""
        row = self.row(key)
        if row is None:
            raise KeyError(f"no timeline row for branch {key!r}")
        image = image.convert("RGBA")
        self.thumbs[(key, index)] = image
        row.done.add(index)
        self._store(key, index, image)
        if self.follow_scroll:
            self._ensure_visible(self.row_index(key), index)
        self._paint_cell(key, index)
        self._sync_slider()

    def set_running(self, key, index: int | None) -> None:
        """Mark the cell being computed (``index=None`` clears the mark); a mark already
        there is not painted again (each loop's first step asks, after its frame's cell did)."""
        running = None if index is None else (key, index)
        if running == self.running:
            return
        self.running = running
        self._paint_overlay()

    def owner(self, key, index: int):
        """The key of the row that holds loop ``index`` along branch ``key``'s path."""
        row = self.row(key)
        if row is None or row.branch is None:
            return None if row is None else row.key
        return row.branch.owner(max(index, 0)).id

    def visible_keys(self) -> list:
        """The keys of the rows shown now, top to bottom."""
        return [row.key for _, row in self._visible_rows()]

    def last_index(self, key) -> int:
        """The last loop shown along branch ``key``'s path (-1 when none)."""
        row = self.row(key)
        if row is None:
            return -1
        if row.done:
            return max(row.done)
        return row.fork - 1

    # -- navigation ------------------------------------------------------------------------

    def select(self, key, index: int) -> None:
        """Select loop ``index`` of branch ``key`` (the `selected` trait changes)."""
        if self.row(key) is None:
            raise KeyError(f"no timeline row for branch {key!r}")
        index = int(index)
        self.selected = (key, index)

    def select_auto(self, key, index: int) -> None:
        """Select as the program does (a run following its new frames, a deletion), not the
        user: the view scrolls to the frame and `auto` is True while observers run."""
        self.auto = True
        try:
            self.follow_scroll = True
            self.select(key, index)
        finally:
            self.auto = False

    @traitlets.observe("selected")
    def _on_selected(self, change) -> None:
        if change["new"] is not None:
            key, index = change["new"]
            owner = self.owner(key, index)
            self._ensure_visible(self.row_index(owner), index)
        self._sync_menu()
        self._sync_slider()
        self._paint_overlay()

    def step(self, loops: int = 0, rows: int = 0) -> None:
        """Move the selection by ``loops`` along the branch, or ``rows`` to another branch."""
        if not self.rows:
            return
        key, index = self.selected or (self.rows[0].key, 0)
        if rows:
            i = self.row_index(self.owner(key, index))
            i = min(max(i + rows, 0), len(self.rows) - 1)
            key = self.rows[i].key
            index = min(max(index, 0), max(self.last_index(key), 0))
        if loops:
            index = min(max(index + loops, 0), max(self.last_index(key), 0))
        self.select(key, index)

    def _ensure_visible(self, row_i, index) -> bool:
        changed = False
        cols = self.layout_.columns
        # One step past an edge (the arrow keys, a run's next frame): move by one column.
        if index == self.scroll - 1:
            self.scroll, changed = index, True
        elif index == self.scroll + cols:
            self.scroll, changed = index - cols + 1, True
        elif not self.scroll <= index < self.scroll + cols:
            # A jump: put the frame in the middle.
            self.scroll, changed = max(0, min(index - cols // 2, self._max_scroll())), True
        if row_i is not None:
            if row_i < self.row_scroll:
                self.row_scroll, changed = row_i, True
            elif row_i >= self.row_scroll + self.layout_.max_rows:
                self.row_scroll, changed = row_i - self.layout_.max_rows + 1, True
        if changed:
            self._sync_scrollbar()
            self.redraw()
        return changed

    def scroll_to(self, column: int) -> None:
        column = min(max(int(column), 0), self._max_scroll())
        if column != self.scroll:
            self.scroll = column
            self.follow_scroll = False
            self._sync_scrollbar()
            self.redraw()

    def _max_scroll(self) -> int:
        length = max((r.length for r in self.rows), default=0)
        return max(0, length - self.layout_.columns)

    def _sync_scrollbar(self) -> None:
        self._syncing = True
        try:
            top = self._max_scroll()
            self.scrollbar.max = top
            self.scrollbar.value = min(self.scroll, top)
            self.scrollbar.layout.display = None if top > 0 else "none"
        finally:
            self._syncing = False
        self.viewport = (self.scroll, self.row_scroll)

    def _sync_menu(self) -> None:
        self._syncing = True
        try:
            options = [(r.name, r.key) for r in self.rows]
            if list(self.branch_menu.options) != options:
                self.branch_menu.options = options
            if self.selected is not None:
                self.branch_menu.value = self.selected[0]
        finally:
            self._syncing = False

    def _sync_slider(self) -> None:
        self._syncing = True
        try:
            if self.selected is None:
                return
            key, index = self.selected
            top = max(self.last_index(key), index, 0)
            if self.loop_slider.max != top:
                self.loop_slider.max = top
                self.play.max = top
            if self.loop_slider.value != index:
                self.loop_slider.value = index
            if self.play.value != index:
                self.play.value = index
        finally:
            self._syncing = False

    def _on_slider(self, change) -> None:
        if self._syncing or self.selected is None:
            return
        self.follow_scroll = False
        self.select(self.selected[0], change["new"])

    def _on_menu(self, change) -> None:
        if self._syncing or change["new"] is None:
            return
        key = change["new"]
        # The browser echoes the menu's value back after its options change: only a real
        # change of branch moves the selection.
        if self.selected is not None and self.selected[0] == key:
            return
        last = self.last_index(key)
        if last < 0:
            return
        index = self.selected[1] if self.selected else last
        self.select(key, min(index, last))

    def _on_scrollbar(self, change) -> None:
        if not self._syncing:
            self.scroll_to(change["new"])

    # -- painting --------------------------------------------------------------------------

    def _visible_rows(self) -> list[tuple[int, Row]]:
        first = self.row_scroll
        return [
            (pos, self.rows[first + pos])
            for pos in range(min(self.layout_.max_rows, len(self.rows) - first))
        ]

    def _cell_xy(self, key, index) -> tuple[int, int] | None:
        i = self.row_index(key)
        cols = self.layout_.columns
        if i is None or not (self.scroll <= index < self.scroll + cols):
            return None
        pos = i - self.row_scroll
        if not 0 <= pos < self.layout_.max_rows:
            return None
        return self.layout_.x(index, self.scroll), self.layout_.y(pos)

    def _paint_background(self, p) -> None:
        """Axis, row labels, placeholders, thumbnails and fork connectors: visible cells only."""
        L = self.layout_
        t = L.thumb
        height = L.height(len(self.rows))
        p.rect(0, 0, L.width, height, fill=BACKGROUND)
        first, last = self.scroll, self.scroll + L.columns
        every = max(1, 5 if L.col_w < 40 else 1)
        for col in range(first, last):
            x = L.x(col, self.scroll) + t / 2
            if col % every == 0:
                p.text(str(col), x, 12, GRID_TEXT, size=10, align="center")
        if len(self.rows) > L.max_rows:  # say which rows show (the keys and the menu scroll)
            last_row = min(self.row_scroll + L.max_rows, len(self.rows))
            text = f"rows {self.row_scroll + 1}-{last_row} of {len(self.rows)}"
            p.text(text, 10, 12, GRID_TEXT, size=10)
        else:
            p.text("loop", 10, 12, GRID_TEXT, size=10)
        if not self.rows:
            p.text(
                "Press Run: each loop's frame appears here as soon as it is done.",
                L.gutter,
                L.axis + t / 2 - 6,
                GRID_TEXT,
                size=12,
            )
        for pos, row in self._visible_rows():
            y = L.y(pos)
            p.rect(0, y - 2, L.width, L.row_h - 4, fill=DRAFT_LANE if row.draft else LANE)
            label, color = ("◆ DRAFT", ACCENT) if row.draft else (row.name, LABEL_TEXT)
            p.text(label[: Row.LABEL], 10, y + t / 2 - 14, color, size=12, bold=True)
            sub = f"from loop {row.fork}" if row.parent is not None else f"{row.length} loops"
            sub = row.note or sub
            p.text(sub, 10, y + t / 2 + 2, GRID_TEXT, size=10)
            for col in range(max(first, row.fork), min(last, row.length)):
                self._paint_thumb(p, row, col, L.x(col, self.scroll), y)
        # Each branch is tied to the frame it continues from: down from the parent's cell at
        # fork - 1, then right into the branch's first cell.
        for pos, row in self._visible_rows():
            if row.parent is None:
                continue
            parent_i = self.row_index(row.parent)
            if parent_i is None:
                continue
            y_child = L.y(pos) + t / 2
            y_parent = L.y(parent_i - self.row_scroll) + t
            x_parent = L.x(row.fork - 1, self.scroll) + t / 2
            x_child = L.x(row.fork, self.scroll)
            y_parent = max(y_parent, L.axis)
            if x_child < L.gutter:
                continue  # the fork is scrolled off to the left
            if x_parent < L.gutter:  # the parent's frame is off to the left: enter from the edge
                p.line([(L.gutter, y_child), (x_child, y_child)], CONNECTOR, 2)
            else:
                p.line(
                    [(x_parent, y_parent), (x_parent, y_child), (x_child, y_child)], CONNECTOR, 2
                )

    def _paint_thumb(self, p, row: Row, col: int, x: int, y: int) -> None:
        t = self.layout_.thumb
        if (row.key, col) in self.thumbs:
            p.image((row.key, col), x, y, t, t)
        else:
            p.rect(x, y, t, t, fill=PLACEHOLDER)
        if col in row.keyframes:  # a keyframe starts here: a bar on the cell's left edge
            p.rect(x, y, 3, t, fill=KEYFRAME)

    def _paint_selection(self, p) -> None:
        """The selection-dependent layer: the selected branch's keyframes on the axis, the
        running cell, the selected cell."""
        L = self.layout_
        t = L.thumb
        selected_row = self.row(self.selected[0]) if self.selected else None
        row = selected_row or (self.rows[0] if self.rows else None)
        for col in row.keyframes if row else ():
            if self.scroll <= col < self.scroll + L.columns:
                x = L.x(col, self.scroll) + t / 2
                p.polygon([(x - 5, 3), (x + 5, 3), (x, 10)], KEYFRAME)
        if self.running is not None:
            xy = self._cell_xy(*self.running)
            if xy:
                p.rect(xy[0] - 1, xy[1] - 1, t + 2, t + 2, stroke=RUNNING, width=2)
        if self.selected is None:
            return
        key, index = self.selected
        owner = self.owner(key, index)
        xy = self._cell_xy(owner, index)
        if xy:
            p.rect(xy[0] - 3, xy[1] - 3, t + 6, t + 6, stroke=ACCENT, width=3)
        x = L.x(index, self.scroll) + t / 2
        if L.gutter <= x < L.width:
            p.polygon([(x - 6, L.axis - 2), (x + 6, L.axis - 2), (x, L.axis - 8)], ACCENT)

    # Renderer hooks.
    def _store(self, key, index, image) -> None: ...
    def _forget(self, key, index) -> None:
        self.thumbs.pop((key, index), None)

    def _resized(self) -> None: ...
    def redraw(self) -> None: ...
    def _paint_cell(self, key, index) -> None: ...
    def _paint_overlay(self) -> None: ...

    def _report(self, exc: BaseException, text: str) -> None:
        if self.on_error is not None:
            self.on_error(exc, text)


def _event_handler(method):
    """Front-end events must not raise (the error would only reach the kernel's log): report."""

    def handler(self, *args):
        try:
            method(self, *args)
        except Exception as exc:
            self._report(exc, traceback.format_exc())

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


class CanvasTimeline(_Timeline):
    """The timeline on an ipycanvas `MultiCanvas` (thumbnails layer + selection layer).

    Args:
        width: canvas width in pixels (default 1040).
        thumb: thumbnail side in pixels (default 56).
        max_rows: rows shown at once (default 5); more scroll with the arrow keys / menu.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        from ipycanvas import Canvas, MultiCanvas

        self._Canvas = Canvas
        L = self.layout_
        self.canvas = MultiCanvas(2, width=L.width, height=L.height(0))
        #: The thumbnails layer and the selection layer (which receives the mouse and keys).
        self.layers = (self.canvas[0], self.canvas[1])
        self.canvas.layout.width = f"{L.width}px"
        self.canvas.layout.height = f"{L.height(0)}px"
        #: One hidden canvas per thumbnail, holding its pixels in the browser.
        self.sources: dict[tuple, object] = {}
        self._dragging = False
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(self._on_mouse_move)
        self.canvas.on_mouse_up(self._on_mouse_up)
        self.canvas.on_mouse_out(self._on_mouse_up)
        self.canvas.on_mouse_wheel(self._on_wheel)
        self.canvas.on_key_down(self._on_key)
        self.canvas.on_client_ready(self._on_client_ready)
        # A <canvas> takes keyboard focus (arrow keys) only with a tabindex.
        for layer in self.layers:
            layer.tabbable = True
        self.children = [self.toolbar, self.canvas, self.scrollbar]
        self.redraw()

    # A thumbnail's pixels go to the browser once, into its own canvas.
    def _store(self, key, index, image) -> None:
        old = self.sources.pop((key, index), None)
        source = self._Canvas(width=image.width, height=image.height)
        self.sources[(key, index)] = source
        pixels = np.asarray(image, dtype=np.uint8)
        with drawing(self._report):
            put_pixels(source, pixels)
        if old is not None:
            old.close()

    def _forget(self, key, index) -> None:
        super()._forget(key, index)
        source = self.sources.pop((key, index), None)
        if source is not None:
            source.close()

    def _resized(self) -> None:
        height = self.layout_.height(len(self.rows))
        if self.canvas.height != height:
            with _DRAW_LOCK:
                self.canvas.height = height
                self.canvas.layout.height = f"{height}px"

    def redraw(self) -> None:
        """Repaint both layers (visible cells only)."""
        with drawing(self._report):
            base = self.canvas[0]
            _CanvasPainter(base, {}).clear(self.layout_.width, self.canvas.height)
            self._paint_background(_CanvasPainter(base, self.sources))
            top = self.canvas[1]
            top.clear()
            self._paint_selection(_CanvasPainter(top, self.sources))

    def _paint_cell(self, key, index) -> None:
        xy = self._cell_xy(key, index)
        if xy is None:
            return
        with drawing(self._report):
            painter = _CanvasPainter(self.canvas[0], self.sources)
            self._paint_thumb(painter, self.row(key), index, *xy)
        self._paint_overlay()

    def _paint_overlay(self) -> None:
        with drawing(self._report):
            top = self.canvas[1]
            top.clear()
            self._paint_selection(_CanvasPainter(top, self.sources))

    @_event_handler
    def _on_client_ready(self) -> None:
        # A new client (page reload, Voila) has blank canvases: refill the hidden ones, then
        # repaint. The manager's idea of the "current canvas" is stale for that client too.
        with drawing(self._report):
            _forget_current_canvas()
            for (key, index), source in list(self.sources.items()):
                image = self.thumbs.get((key, index))
                if image is not None:
                    put_pixels(source, np.asarray(image, dtype=np.uint8))
        self.redraw()

    # -- events ----------------------------------------------------------------------------

    def _hit(self, x, y):
        hit = self.layout_.hit(x, y, self.scroll, self.row_scroll)
        if hit is None or hit[0] >= len(self.rows):
            return None
        row = self.rows[hit[0]]
        last = self.last_index(row.key)
        if last < 0:  # nothing computed along this branch yet
            return None
        index = min(hit[1], last)
        if index < row.fork and row.parent is None:
            return None
        return row.key, index

    @_event_handler
    def _on_mouse_down(self, x, y) -> None:
        hit = self._hit(x, y)
        if hit is None:
            return
        self._dragging = True
        self.follow_scroll = False
        key, index = hit
        # A loop before a branch's fork belongs to its parent: select it along the branch the
        # user clicked, so Play then runs through the branch's whole path.
        self.select(key, index if index >= self.row(key).fork else self.row(key).fork)

    @_event_handler
    def _on_mouse_move(self, x, y) -> None:
        if not self._dragging or self.selected is None:
            return
        key = self.selected[0]
        col = int((x - self.layout_.gutter) // self.layout_.col_w) + self.scroll
        index = min(max(col, 0), max(self.last_index(key), 0))
        if index != self.selected[1]:
            self.select(key, index)

    @_event_handler
    def _on_mouse_up(self, x, y) -> None:
        self._dragging = False

    @_event_handler
    def _on_wheel(self, dx, dy) -> None:
        delta = dx if abs(dx) > abs(dy) else dy
        if delta:
            self.scroll_to(
                self.scroll + (1 if delta > 0 else -1) * max(1, self.layout_.columns // 4)
            )

    @_event_handler
    def _on_key(self, key, shift, ctrl, meta) -> None:
        moves = {
            "ArrowLeft": (-1, 0),
            "ArrowRight": (1, 0),
            "ArrowUp": (0, -1),
            "ArrowDown": (0, 1),
        }
        if key in moves:
            self.follow_scroll = False
            loops, rows = moves[key]
            self.step(loops * (10 if shift else 1), rows)
        elif key == "Home" and self.selected:
            self.select(self.selected[0], 0)
        elif key == "End" and self.selected:
            self.select(self.selected[0], max(self.last_index(self.selected[0]), 0))
        elif key == " ":
            self.play.playing = not self.play.playing


class ImageTimeline(_Timeline):
    """The timeline as one PNG in an ``ipywidgets.Image`` (no custom front end needed).

    Repaints are throttled to ``max_fps`` while frames stream in; navigation uses the slider,
    the branch menu and the scroll bar.
    """

    def __init__(self, max_fps: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        L = self.layout_
        self.image = W.Image(format="png", layout=W.Layout(width=f"{L.width}px"))
        self._min_interval = 1.0 / max_fps
        self._last = 0.0
        self._pending: threading.Timer | None = None
        self._lock = threading.Lock()
        self.children = [self.toolbar, self.image, self.scrollbar]
        self.redraw()

    def render(self) -> Image.Image:
        """The timeline as a Pillow image (what the widget shows)."""
        L = self.layout_
        im = Image.new("RGBA", (L.width, L.height(len(self.rows))), BACKGROUND)
        self._paint_background(_PILPainter(im, self.thumbs))
        self._paint_selection(_PILPainter(im, self.thumbs))
        return im

    def redraw(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
            self._last = time.monotonic()
        try:
            buffer = io.BytesIO()
            self.render().save(buffer, format="png")
            self.image.value = buffer.getvalue()
        except Exception as exc:
            self._report(exc, traceback.format_exc())

    def _throttled(self) -> None:
        with self._lock:
            wait = self._min_interval - (time.monotonic() - self._last)
            if wait > 0:
                if self._pending is None:
                    self._pending = threading.Timer(wait, self.redraw)
                    self._pending.daemon = True
                    self._pending.start()
                return
        self.redraw()

    def _paint_cell(self, key, index) -> None:
        self._throttled()

    def _paint_overlay(self) -> None:
        self._throttled()


# -- the large preview -------------------------------------------------------------------------


def _as_image(rgb: Image.Image | np.ndarray) -> Image.Image:
    return rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)


def _display_size(width: int, height: int, box: int) -> tuple[int, int]:
    """Integer upscale of a small image to fit ``box`` (crisp pixels); big images stay 1:1."""
    scale = max(1, box // max(width, height))
    return width * scale, height * scale


class _Preview(W.VBox):
    def __init__(self, size: int = 320):
        super().__init__()
        self.add_class("sw-preview")
        self.size = size
        self.on_error: Callable[[BaseException, str], None] | None = None
        self.showing: Hashable | None = None

    def _report(self, exc, text):
        if self.on_error is not None:
            self.on_error(exc, text)

    def _live_pixels(self, rgb: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
        image = _as_image(rgb).resize(size, Image.Resampling.BILINEAR)
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)


class CanvasPreview(_Preview):
    """The selected frame at full resolution on a canvas, or the live latent preview.

    A decoded frame goes to the browser once, into a hidden canvas of its own (the last
    ``keep`` frames are kept); showing it again is a ``draw_image``. Small images (the 64 px toy
    model) are upscaled by an integer factor without smoothing, so pixels stay crisp.
    """

    def __init__(self, size: int = 320, keep: int = 48):
        super().__init__(size)
        from ipycanvas import Canvas

        self._Canvas = Canvas
        self.canvas = Canvas(width=size, height=size)
        self.canvas.layout.width = f"{size}px"
        self.canvas.layout.height = f"{size}px"
        self.keep = keep
        self.sources: OrderedDict = OrderedDict()
        #: The hidden canvas the live estimate is put into, at latent size.
        self.live_source = None
        #: Set by the studio: ``redisplay(key)`` shows a frame again after a reload.
        self.redisplay: Callable | None = None
        self.children = [self.canvas]
        self.canvas.on_client_ready(self._on_client_ready)
        self.clear()

    def _fit(self, width, height) -> tuple[int, int]:
        w, h = _display_size(width, height, self.size)
        if (self.canvas.width, self.canvas.height) != (w, h):
            self.canvas.width, self.canvas.height = w, h
            self.canvas.layout.width, self.canvas.layout.height = f"{w}px", f"{h}px"
        return w, h

    def clear(self) -> None:
        self.showing = None
        with drawing(self._report):
            self.canvas.fill_style = BACKGROUND
            self.canvas.fill_rect(0, 0, self.canvas.width, self.canvas.height)

    def show_image(self, key: Hashable, image: Image.Image) -> None:
        """Show a decoded frame (sent once per ``key``, then drawn from its canvas)."""
        with drawing(self._report):
            source = self.sources.get(key)
            if source is None:
                source = self._Canvas(width=image.width, height=image.height)
                put_pixels(source, np.asarray(image.convert("RGBA"), dtype=np.uint8))
                self.sources[key] = source
                while len(self.sources) > self.keep:
                    self.sources.popitem(last=False)[1].close()
            self.sources.move_to_end(key)
            w, h = self._fit(image.width, image.height)
            self.canvas.image_smoothing_enabled = w < image.width
            self.canvas.clear()
            self.canvas.draw_image(source, 0, 0, w, h)
            self.showing = key

    def show_live(self, rgb: Image.Image | np.ndarray, image_size: tuple[int, int]) -> None:
        """Show a live estimate (a PIL image or uint8 ``[h, w, 3]``) stretched over the frame
        of ``image_size``.

        Only the estimate's own pixels travel (a latent-to-RGB map is latent-sized: 8x8 for the
        toy model, 128x128 for SD 1.5), into the hidden ``live_source`` canvas; the browser
        scales it up. Encoding the preview-sized picture instead cost more than a tenth of a
        toy-model loop.
        """
        with drawing(self._report):
            w, h = self._fit(*image_size)
            pixels = np.asarray(_as_image(rgb).convert("RGBA"), dtype=np.uint8)
            size = (pixels.shape[1], pixels.shape[0])
            source = self.live_source
            if source is None or (source.width, source.height) != size:
                if source is not None:
                    source.close()
                source = self.live_source = self._Canvas(width=size[0], height=size[1])
            put_pixels(source, pixels)
            self.canvas.image_smoothing_enabled = True
            self.canvas.clear()
            self.canvas.draw_image(source, 0, 0, w, h)
            self.showing = None

    def _on_client_ready(self) -> None:
        # The new client lacks the hidden frames: drop them; the next show sends them again.
        key = self.showing
        with _DRAW_LOCK:
            _forget_current_canvas()
            for source in self.sources.values():
                source.close()
            self.sources.clear()
            if self.live_source is not None:
                self.live_source.close()
                self.live_source = None
        self.clear()
        if key is not None and self.redisplay is not None:
            self.redisplay(key)


class ImagePreview(_Preview):
    """The preview as a PNG in an ``ipywidgets.Image`` (fallback renderer)."""

    def __init__(self, size: int = 320):
        super().__init__(size)
        self.image = W.Image(format="png", layout=W.Layout(width=f"{size}px", height=f"{size}px"))
        self.children = [self.image]
        self.clear()

    def _set(self, image: Image.Image) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format="png")
        self.image.value = buffer.getvalue()
        self.image.layout.width = f"{image.width}px"
        self.image.layout.height = f"{image.height}px"

    def clear(self) -> None:
        self.showing = None
        self._set(Image.new("RGB", (self.size, self.size), BACKGROUND))

    def show_image(self, key, image: Image.Image) -> None:
        size = _display_size(image.width, image.height, self.size)
        self._set(image.convert("RGB").resize(size, Image.Resampling.NEAREST))
        self.showing = key

    def show_live(self, rgb: Image.Image | np.ndarray, image_size: tuple[int, int]) -> None:
        size = _display_size(*image_size, self.size)
        self._set(Image.fromarray(self._live_pixels(rgb, size)))
        self.showing = None
