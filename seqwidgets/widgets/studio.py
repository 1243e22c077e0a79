"""`Studio`: the control panel, the live timeline and the preview, composed over a `Session`.

The studio only calls its `Session` (DESIGN.md: widgets -> session -> engine). A run goes like
this:

1. Run / Branch / Re-run takes the panel's validated settings and starts a job on a background
   thread (or on the calling thread with ``threaded=False``, for Colab);
2. every model step calls ``_on_step``: progress (loop, step, it/s, time left) at most 10 times a
   second, and a latent-to-RGB estimate of the denoised image at most 4 times a second;
3. every finished loop calls ``_on_frame``: the frame is decoded once, its thumbnail goes to the
   timeline, and (unless the user has picked another frame meanwhile) the preview shows it;
4. when the job ends, however it ends, the controls come back; an exception is shown in the
   error area with its traceback folded, and the studio stays usable.
"""

from __future__ import annotations

import html
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from seqwidgets.params import SequenceParams

from .colab import choose_renderer, default_threaded
from .panel import ControlPanel
from .timeline import (
    CanvasPreview,
    CanvasTimeline,
    ImagePreview,
    ImageTimeline,
    Row,
)

__all__ = ["Studio"]

_EXTENSIONS = {"gif": ".gif", "mp4": ".mp4", "png": "", "contact_sheet": ".png"}

_CSS = """
<style>
.sw-studio { font-family: var(--jp-ui-font-family, sans-serif); }
.sw-studio .sw-card { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 8px;
  padding: 8px 10px; background: var(--jp-layout-color1, #fff); }
.sw-studio .sw-title { font-size: 15px; font-weight: 600; letter-spacing: .2px; }
.sw-studio .sw-sub { color: var(--jp-ui-font-color2, #777); font-size: 12px; }
.sw-studio .sw-chip { display: inline-block; border-radius: 10px; padding: 1px 9px;
  font-size: 11px; font-weight: 600; color: #fff; background: #6c7386; }
.sw-studio .sw-chip.running { background: #2f9e44; }
.sw-studio .sw-chip.error { background: #c92a2a; }
.sw-studio .sw-chip.stopped { background: #e67700; }
.sw-studio .sw-label { font-family: var(--jp-code-font-family, monospace); font-size: 12px;
  color: var(--jp-ui-font-color1, #333); cursor: help; }
.sw-studio .sw-error { color: #c92a2a; font-size: 12px; line-height: 1.35; }
.sw-studio .sw-warning { color: #b26a00; font-size: 12px; line-height: 1.35; }
.sw-studio .sw-muted { color: var(--jp-ui-font-color2, #888); font-size: 12px; }
.sw-studio .sw-progress { font-family: var(--jp-code-font-family, monospace); font-size: 12px;
  color: var(--jp-ui-font-color1, #333); }
.sw-studio .sw-info { font-size: 12.5px; line-height: 1.5; }
.sw-studio .sw-info .sw-loop { font-size: 22px; font-weight: 600; }
.sw-studio .sw-info .sw-loop span { font-size: 13px; font-weight: 400;
  color: var(--jp-ui-font-color2, #888); }
.sw-studio .sw-info table { border-collapse: collapse; margin: 4px 0; }
.sw-studio .sw-info td { padding: 1px 10px 1px 0; vertical-align: top; }
.sw-studio .sw-info td:first-child { color: var(--jp-ui-font-color2, #888); }
.sw-studio .sw-badge { display: inline-block; border-radius: 4px; padding: 0 6px; font-size: 11px;
  background: #4cc3ff; color: #0b2533; font-weight: 600; margin-left: 6px; }
.sw-studio .sw-live { background: #53d769; color: #0b2b12; }
.sw-studio .sw-prompt { font-style: italic; }
.sw-studio .sw-errorbox { border-left: 4px solid #c92a2a; background: rgba(201,42,42,.07);
  padding: 6px 10px; font-size: 12.5px; border-radius: 4px; }
.sw-studio .sw-errorbox pre { font-size: 11px; max-height: 260px; overflow: auto; }
.sw-studio .widget-accordion .lm-AccordionPanel-title,
.sw-studio .jupyter-widget-Collapse-header { padding: 4px 8px; font-size: 12.5px; }
</style>
"""


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _descendants(widget: W.Widget) -> list[W.Widget]:
    found = []
    for child in getattr(widget, "children", ()):
        found.append(child)
        found.extend(_descendants(child))
    return found


class Studio(W.VBox):
    """The KSampler Sequence studio: settings, a live timeline of every loop, scrub and branch.

    Args:
        pipe: a diffusers SD pipeline; ``None`` loads ``seqwidgets.load_pipeline()`` (the toy
            model) on the first run.
        params (`SequenceParams`, *optional*): initial settings (default: the node's defaults).
        renderer (`str`, defaults to ``"auto"``): ``"canvas"`` (ipycanvas), ``"image"`` (plain
            ``ipywidgets.Image``, for front ends without ipycanvas) or ``"auto"``.
        threaded (`bool`, *optional*): run on a background thread (default; Stop works mid-loop)
            or on the calling thread (default on Colab, where thread updates are unreliable).
        session (`Session`, *optional*): drive an existing session (its branches are shown).
        thumb_size (`int`, defaults to 56): timeline thumbnail side in pixels.
        preview_size (`int`, defaults to 320): side of the large preview box in pixels.
        width (`int`, defaults to 1040): timeline width in pixels.
        export_dir (`str`, defaults to ``"."``): where Export writes files.
        live_preview (`bool`, defaults to `True`): show the denoised estimate while a loop runs.

    Scripting:
        >>> import seqwidgets as sw
        >>> studio = Studio(sw.testing.tiny_pipeline())
        >>> branch = studio.run(wait=True, sequence_loop_count=4, steps=2)
        >>> studio.select(branch, 2)
        >>> alt = studio.branch(denoise_seq=0.3)        # from the selected frame
        >>> alt.fork, alt.params.denoise_seq
        (3, 0.3)
    """

    def __init__(
        self,
        pipe=None,
        *,
        params: SequenceParams | None = None,
        renderer: str = "auto",
        threaded: bool | None = None,
        session=None,
        thumb_size: int = 56,
        preview_size: int = 320,
        width: int = 1040,
        max_rows: int = 5,
        export_dir: str = ".",
        live_preview: bool = True,
    ):
        super().__init__()
        self.add_class("sw-studio")
        self._pipe = pipe if session is None else session.pipe
        self._session = session
        self.renderer = choose_renderer(renderer)
        self.threaded = default_threaded() if threaded is None else bool(threaded)
        self.thumb_size = thumb_size
        self.export_dir = Path(export_dir)
        self.live_preview = live_preview
        self.last_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopping = False
        self._result = None
        self._job_error: BaseException | None = None
        self._reported = False
        self._factors = None
        self._run_branch = None
        self._follow = True
        self._auto_select = False
        self._stats: dict[str, Any] = {}

        # 1. The control panel and its buttons.
        self.panel = ControlPanel(params)
        button = dict(layout=W.Layout(width="auto", flex="1 1 auto"))
        self.run_button = W.Button(
            description="▶ Run",
            button_style="primary",
            tooltip="Run the settings from loop 0",
            **button,
        )
        self.stop_button = W.Button(
            description="■ Stop",
            button_style="danger",
            disabled=True,
            tooltip="Stop at the next model step; finished frames stay",
            **button,
        )
        self.branch_button = W.Button(
            description="↳ Branch",
            tooltip="Continue after the selected frame with the panel's "
            "settings (a new row that shares every loop up to it)",
            **button,
        )
        self.rerun_button = W.Button(
            description="↻ Re-run",
            tooltip="Compute the selected loop again, and the loops "
            "after it, with the panel's settings (a new row from that loop)",
            **button,
        )
        self.export_format = W.Dropdown(
            options=[
                ("GIF", "gif"),
                ("MP4", "mp4"),
                ("PNG frames", "png"),
                ("Contact sheet", "contact_sheet"),
            ],
            value="gif",
            layout=W.Layout(width="130px"),
            tooltip="Export format",
        )
        self.export_button = W.Button(
            description="⤓ Export",
            tooltip="Write the selected branch up to the selected loop",
            **button,
        )
        self.delete_button = W.Button(
            description="✕ Delete branch",
            tooltip="Delete the selected branch (not the frames it shares with its parent)",
            layout=W.Layout(width="auto"),
        )
        self.delete_button.on_click(lambda _: self._click(self.delete))
        self.run_button.on_click(lambda _: self._click(self.run))
        self.stop_button.on_click(lambda _: self.stop())
        self.branch_button.on_click(lambda _: self._click(self.branch))
        self.rerun_button.on_click(lambda _: self._click(self.rerun))
        self.export_button.on_click(lambda _: self._click(self.export))

        # 2. Progress and status.
        self.progress_bar = W.FloatProgress(
            value=0,
            min=0,
            max=1,
            layout=W.Layout(width="100%", height="10px", margin="2px 0"),
            bar_style="info",
        )
        self.progress_text = W.HTML("<span class='sw-progress sw-muted'>ready</span>")
        self.status = W.HTML()

        # 3. Preview, timeline and the error area.
        if self.renderer == "canvas":
            self.preview = CanvasPreview(preview_size)
            self.timeline = CanvasTimeline(width=width, thumb=thumb_size, max_rows=max_rows)
            self.preview.redisplay = lambda _key: self._show_selected()
        else:
            self.preview = ImagePreview(preview_size)
            self.timeline = ImageTimeline(width=width, thumb=thumb_size, max_rows=max_rows)
        self.timeline.on_error = self._on_draw_error
        self.timeline.toolbar.children = (*self.timeline.toolbar.children, self.delete_button)
        self.preview.on_error = self._on_draw_error
        self.info = W.HTML(layout=W.Layout(width="100%"))
        self.error_html = W.HTML()
        self.dismiss_button = W.Button(description="Dismiss", layout=W.Layout(width="90px"))
        self.dismiss_button.on_click(lambda _: self.clear_error())
        self.error_area = W.VBox(
            [self.error_html, self.dismiss_button], layout=W.Layout(display="none")
        )
        self.timeline.observe(self._on_selected, "selected")
        self.panel.observe(self._on_params, "params")

        # 4. Layout: header; settings | (preview + details, transport, progress, errors);
        #    the timeline across the whole width.
        self.header = W.HTML()
        for widget, width in (
            (self.run_button, "96px"),
            (self.stop_button, "86px"),
            (self.branch_button, "104px"),
            (self.rerun_button, "96px"),
            (self.export_button, "92px"),
        ):
            widget.layout = W.Layout(width=width)
        gap = W.Layout(gap="6px", align_items="center", flex_flow="row wrap")
        transport = W.HBox(
            [
                W.HBox([self.run_button, self.stop_button], layout=gap),
                W.HBox([self.branch_button, self.rerun_button], layout=gap),
                W.HBox([self.export_format, self.export_button], layout=gap),
            ],
            layout=W.Layout(gap="18px", align_items="center", flex_flow="row wrap"),
        )
        self.preview.layout = W.Layout(flex="0 0 auto")
        display = W.HBox(
            [self.preview, self.info], layout=W.Layout(align_items="flex-start", gap="14px")
        )
        display.add_class("sw-card")
        controls = W.VBox([transport, self.progress_bar, self.progress_text])
        controls.add_class("sw-card")
        right = W.VBox(
            [display, controls, self.error_area],
            layout=W.Layout(flex="1 1 auto", gap="8px", min_width="0"),
        )
        left = W.VBox([self.panel], layout=W.Layout(width="410px", min_width="410px"))
        left.add_class("sw-card")
        top = W.HBox([left, right], layout=W.Layout(gap="10px", align_items="flex-start"))
        timeline_card = W.VBox([self.timeline], layout=W.Layout(margin="8px 0 0 0"))
        timeline_card.add_class("sw-card")
        self.children = [
            W.HTML(_CSS),
            W.HBox(
                [self.header, self.status],
                layout=W.Layout(
                    justify_content="space-between", align_items="center", margin="0 0 6px 0"
                ),
            ),
            top,
            timeline_card,
        ]

        if self._session is not None:
            self._sync_rows()
        self._render_header()
        self._render_status("idle")
        self._render_info()
        self._update_buttons()

    # -- scripting API -----------------------------------------------------------------------

    @property
    def session(self):
        """The `Session` this studio drives (created, and the pipeline loaded, on first use)."""
        if self._session is None:
            from seqwidgets.session import Session

            if self._pipe is None:
                from seqwidgets.models import load_pipeline

                self._pipe = load_pipeline()
            self._session = Session(self._pipe)
            self._render_header()
        return self._session

    @property
    def params(self) -> SequenceParams:
        """The panel's settings; raises `ValueError` with the message shown when invalid."""
        params = self.panel.params
        if params is None:
            raise ValueError(self.panel.error or "the settings are invalid")
        return params

    @property
    def running(self) -> bool:
        """Whether a job (run, branch, re-run, export) is in progress."""
        return self._running

    @property
    def selected(self):
        """``(branch, index)`` of the selected frame, or ``None``."""
        if self.timeline.selected is None or self._session is None:
            return None
        key, index = self.timeline.selected
        branch = self._branch(key)
        return None if branch is None else (branch, index)

    @property
    def selected_frame(self):
        """The selected `Frame`, or ``None`` (nothing selected, or not computed yet)."""
        selected = self.selected
        if selected is None:
            return None
        try:
            return self.session.frame(*selected)
        except (IndexError, ValueError):
            return None

    def select(self, branch, index: int = -1) -> None:
        """Select loop ``index`` (negative counts from the end) of ``branch``.

        ``branch`` is a `Branch`, its id or its name.
        """
        branch = self._resolve_branch(branch)
        self._sync_rows()  # branches run on the session directly show up too
        if index < 0:
            index = len(branch.indices) + index
        if not 0 <= index < branch.params.sequence_loop_count:
            raise IndexError(
                f"branch {branch.id} ({branch.name}) has loops 0..{len(branch.indices) - 1}; "
                f"got index {index}"
            )
        self.timeline.follow_scroll = True
        self.timeline.select(branch.id, index)

    def run(self, wait: bool = True, **changes: Any):
        """Run the panel's settings (after setting ``changes`` in the panel) as a new branch.

        Returns the new `Branch` when ``wait`` (re-raising an error from the run, which is also
        shown in the error area); otherwise starts in the background and returns ``None``.
        """
        if changes:
            self.panel.set_values(**changes)
        params = self.params
        init_image = self.panel.init_image

        def job(callbacks):
            return self.session.run(params, init_image=init_image, **callbacks)

        return self._start(job, "run", params, wait)

    def branch(self, wait: bool = True, **changes: Any):
        """Branch after the selected frame: a new row that shares every loop up to it.

        With ``changes``, those settings change from the selected branch's; without, the
        panel's settings are used (every field that differs from the selected branch's).
        """
        return self._fork("branch", wait, changes)

    def rerun(self, wait: bool = True, **changes: Any):
        """Re-run from the selected frame: like `branch`, but the selected loop is recomputed."""
        return self._fork("rerun", wait, changes)

    def stop(self) -> None:
        """Stop the job at the next model step (finished frames stay)."""
        if self._running and self._session is not None:
            self._stopping = True
            self._render_status("stopping")
            self.session.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background job; return whether it is done."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def export(self, path=None, format: str | None = None, wait: bool = True, **options: Any):
        """Export the selected branch up to the selected loop (default file in ``export_dir``).

        Returns the written path when ``wait``.
        """
        selected = self.selected
        if selected is None:
            raise ValueError("select a frame first: Export writes its branch up to it")
        branch, index = selected
        format = format or self.export_format.value
        if path is None:
            path = self._free_path(f"seqwidgets-{branch.id}-loop{index}", _EXTENSIONS[format])

        def job(_callbacks):
            return self.session.export(branch, path, format=format, upto=index, **options)

        return self._start(job, "export", None, wait)

    def delete(self, branch=None, wait: bool = True) -> None:
        """Delete ``branch`` (default: the selected one) from the session and the timeline.

        A branch that others fork from is refused (`ValueError`): delete those first.
        Deleting is immediate; ``wait`` is accepted so that every action takes the same call.
        """
        if self._running:
            raise RuntimeError("a job is in progress; Stop it or wait() for it first")
        if branch is None:
            if self.selected is None:
                raise ValueError("select a frame of the branch to delete first")
            branch = self.selected[0]
        branch = self._resolve_branch(branch)
        self.session.delete(branch)
        self.timeline.remove_row(branch.id)
        self.preview.clear()
        remaining = [b for b in self.session.branches if b.indices]
        if remaining:
            self._select_auto(remaining[-1].id, len(remaining[-1].indices) - 1)
        else:
            self._show_selected()
        self._update_buttons()

    def close(self) -> None:
        """Stop any job and close every widget of the studio (hidden canvases included)."""
        self.stop()
        self.wait(30)
        extra = [
            *getattr(self.timeline, "sources", {}).values(),
            *getattr(self.preview, "sources", {}).values(),
        ]
        if hasattr(self.timeline, "canvas"):
            extra.extend(self.timeline.canvas._canvases)
        for widget in [*_descendants(self), *extra]:
            if widget is not self:
                widget.close()
        super().close()

    def clear_error(self) -> None:
        """Hide the error area."""
        self.error_area.layout.display = "none"
        self.error_html.value = ""

    # -- jobs ----------------------------------------------------------------------------------

    def _fork(self, kind: str, wait: bool, changes: dict):
        selected = self.selected
        if selected is None:
            raise ValueError(f"select a frame first: {kind} starts from it")
        branch, index = selected
        if not changes:
            mine = self.params.to_dict()
            theirs = branch.params.to_dict()
            changes = {k: v for k, v in mine.items() if v != theirs[k]}
        params = branch.params.replace(**changes)
        method = self.session.branch if kind == "branch" else self.session.rerun

        def job(callbacks):
            return method((branch, index), **callbacks, **changes)

        return self._start(job, kind, params, wait)

    def _start(self, job, kind: str, params: SequenceParams | None, wait: bool):
        if self._running:
            raise RuntimeError("a job is in progress; Stop it or wait() for it first")
        self._running = True
        self._stopping = False
        self._result = None
        self._job_error = None
        self._reported = False
        self._run_branch = None
        self._follow = True
        self._stats = {
            "kind": kind,
            "params": params,
            "start": time.monotonic(),
            "steps": 0,
            "first_step": None,
            "ui": 0.0,
            "live": 0.0,
            "frames": 0,
        }
        self.clear_error()
        self._update_buttons()
        self._render_status("running")
        self._render_progress(note=f"{kind}: starting…")
        callbacks = {}
        if kind != "export":
            callbacks = {"callback": self._on_step, "on_frame": self._on_frame}
        if not self.threaded:
            self._work(job, callbacks)
        else:
            self._thread = threading.Thread(
                target=self._work, args=(job, callbacks), name="seqwidgets-studio", daemon=True
            )
            self._thread.start()
            if not wait:
                return None
            self._thread.join()
        if self._job_error is not None and wait:
            raise self._job_error
        return self._result

    def _work(self, job, callbacks) -> None:
        try:
            if self._session is None:
                self._render_progress(note="loading the model…")
            session = self.session
            if callbacks and self._factors is None:
                self._factors = self._preview_factors(session.pipe)
            self._result = job(callbacks)
        except BaseException as exc:
            self._job_error = exc
            self.last_error = exc
            self._show_error(exc, traceback.format_exc())
        finally:
            self._finish()

    def _preview_factors(self, pipe):
        """``(factors, bias)`` for live previews, or ``False`` (no preview) if unknown or odd."""
        from seqwidgets.decode import preview_factors

        try:
            found = preview_factors(pipe)
            if not found:
                return False
            factors, bias = found
            channels = pipe.unet.config.in_channels
            if np.asarray(factors, dtype=np.float32).shape != (channels, 3):
                raise ValueError(f"latent-to-RGB factors must be [{channels}, 3]")
            return factors, bias
        except Exception as exc:  # a preview is a nicety: never let it fail a run
            warnings.warn(f"live preview off: {exc}", RuntimeWarning, stacklevel=2)
            return False

    def _finish(self) -> None:
        try:
            self._sync_rows()
            self.timeline.set_running(None, None)
            stats = self._stats
            elapsed = time.monotonic() - stats["start"]
            stopped = self._stopping or (
                self._session is not None and self._session.sampler.stopped
            )
            if self._job_error is not None:
                state, note = "error", f"{stats['kind']} failed after {elapsed:.1f} s"
            elif stopped:
                state, note = (
                    "stopped",
                    f"stopped after {stats['frames']} frame(s), {elapsed:.1f} s",
                )
            elif stats["kind"] == "export":
                state, note = "idle", f"wrote {html.escape(str(self._result))}"
            else:
                state, note = "idle", f"done: {stats['frames']} frame(s) in {elapsed:.1f} s"
            branch = self._result if stats["kind"] != "export" else None
            if (
                branch is not None
                and branch.indices
                and (self._follow or self.timeline.selected is None)
            ):
                self._select_auto(branch.id, branch.indices[-1])
            self._running = False
            self._stopping = False
            self._render_status(state)
            self._render_progress(note=note, done=True)
        except Exception as exc:  # keep the studio usable whatever happened
            self._running = False
            self._show_error(exc, traceback.format_exc())
        finally:
            self._running = False
            self._update_buttons()

    # -- callbacks from the running thread -----------------------------------------------------

    def _current_branch(self):
        if self._run_branch is None and self._session is not None:
            branches = self._session.branches
            if branches:
                self._run_branch = branches[-1]
                self._add_row(self._run_branch)
        return self._run_branch

    def _on_step(self, loop: int, step: int, sigma: float, denoised) -> None:
        try:
            stats = self._stats
            now = time.monotonic()
            stats["steps"] += 1
            if stats["first_step"] is None:
                stats["first_step"] = now
            stats["loop"], stats["step"] = loop, step
            branch = self._current_branch()
            if step == 0 and branch is not None:
                self.timeline.set_running(branch.id, loop)
            if now - stats["ui"] >= 0.1:
                stats["ui"] = now
                self._render_progress()
            if self.live_preview and self._factors and self._follow and now - stats["live"] >= 0.25:
                stats["live"] = now
                from seqwidgets.decode import latent_to_rgb

                factors, bias = self._factors
                rgb = latent_to_rgb(denoised[:1], factors, bias)
                params = stats["params"]
                size = self.session.sampler.image_size(params)
                self.preview.show_live(rgb, size)
                self._render_info(live=(loop, step, params))
        except Exception as exc:
            self._report_once(exc)

    def _on_frame(self, branch, frame) -> None:
        try:
            self._run_branch = branch
            self._add_row(branch)
            thumb = self.session.thumbnail(branch, frame.index, self.thumb_size)
            self.timeline.add_thumbnail(branch.id, frame.index, thumb)
            self._stats["frames"] += 1
            following = frame.index + 1 < branch.params.sequence_loop_count
            self.timeline.set_running(branch.id, frame.index + 1 if following else None)
            if self._follow:
                self._select_auto(branch.id, frame.index)
            self._render_progress(loop_done=frame.index)
            self._update_buttons()
        except Exception as exc:
            self._report_once(exc)

    def _report_once(self, exc: BaseException) -> None:
        # A drawing failure must not end the run, nor flood the error area once per step.
        if not self._reported:
            self._reported = True
            self._show_error(exc, traceback.format_exc())

    def _on_draw_error(self, exc: BaseException, text: str) -> None:
        self._show_error(exc, text)

    # -- selection and preview -----------------------------------------------------------------

    def _select_auto(self, key, index: int) -> None:
        self._auto_select = True
        try:
            self.timeline.follow_scroll = True
            self.timeline.select(key, index)
        finally:
            self._auto_select = False

    def _on_selected(self, change) -> None:
        if not self._auto_select and self._running:
            # The user picked a frame: stop following the run, unless it is the newest frame.
            self._follow = self._is_newest(change["new"])
        self._show_selected()
        self._update_buttons()

    def _is_newest(self, selected) -> bool:
        branch = self._run_branch
        if selected is None or branch is None or selected[0] != branch.id:
            return False
        return selected[1] == self.timeline.last_index(branch.id)

    def _show_selected(self) -> None:
        selected = self.selected
        if selected is None:
            self.preview.clear()
            self._render_info()
            return
        branch, index = selected
        try:
            frame = self.session.frame(branch, index)
        except (IndexError, ValueError):
            self._render_info(missing=(branch, index))
            return
        try:
            image = self.session.image(branch, index)
            owner = self._owner_id(branch, index)
            self.preview.show_image((owner, index), image)
            self._render_info(frame=(branch, frame, image.size))
        except Exception as exc:
            self._show_error(exc, traceback.format_exc())

    def _owner_id(self, branch, index: int) -> int:
        owner = branch
        while index < owner.fork and owner.parent is not None:
            owner = owner.parent
        return owner.id

    # -- rows ------------------------------------------------------------------------------------

    def _branch(self, key):
        if self._session is None:
            return None
        for branch in self._session.branches:
            if branch.id == key:
                return branch
        return None

    def _resolve_branch(self, branch):
        from seqwidgets.session import Branch

        if isinstance(branch, Branch):
            return branch
        for candidate in self.session.branches:
            if branch in (candidate.id, candidate.name):
                return candidate
        raise ValueError(f"no branch {branch!r} in this session")

    def _row_for(self, branch) -> Row:
        name = branch.name
        if len(name) > 12:  # the session's "run 1 > branch @3": the gutter has 15 characters
            kind = "rerun" if " > rerun @" in name else "branch"
            name = f"{kind} {branch.id}"
        return Row(
            key=branch.id,
            name=name,
            fork=branch.fork,
            length=branch.params.sequence_loop_count,
            parent=None if branch.parent is None else branch.parent.id,
            keyframes=tuple(i for i, _ in branch.params.positive_keyframes),
        )

    def _add_row(self, branch) -> None:
        row = self.timeline.row(branch.id)
        if row is not None and row.length == branch.params.sequence_loop_count:
            return
        self.timeline.add_row(self._row_for(branch))

    def _sync_rows(self) -> None:
        """Rows for every branch of the session (e.g. one stopped before its first frame)."""
        if self._session is None:
            return
        for branch in self._session.branches:
            self._add_row(branch)
            for index in branch.own_indices:
                if (branch.id, index) not in self.timeline.thumbs:
                    thumb = self._session.thumbnail(branch, index, self.thumb_size)
                    self.timeline.add_thumbnail(branch.id, index, thumb)
        if self.timeline.selected is None:
            for branch in self._session.branches:
                if branch.indices:
                    self._select_auto(branch.id, 0)
                    break

    # -- rendering -------------------------------------------------------------------------------

    def _render_header(self) -> None:
        if self._pipe is None:
            model = "toy model (loads on the first run)"
        else:
            pipe = self._pipe
            try:
                side = pipe.unet.config.sample_size * pipe.vae_scale_factor
                model = (
                    f"{type(pipe).__name__} · {side}×{side} · {pipe.unet.device.type} · "
                    f"{str(pipe.unet.dtype).removeprefix('torch.')}"
                )
            except Exception:
                model = type(pipe).__name__
        mode = "" if self.threaded else " · main-thread mode"
        renderer = "" if self.renderer == "canvas" else " · image renderer"
        self.header.value = (
            f"<span class='sw-title'>KSampler Sequence studio</span> "
            f"<span class='sw-sub'>&nbsp;{html.escape(model)}{mode}{renderer}</span>"
        )

    def _render_status(self, state: str) -> None:
        cls = {
            "running": "running",
            "stopping": "stopped",
            "stopped": "stopped",
            "error": "error",
        }.get(state, "")
        self.status.value = f"<span class='sw-chip {cls}'>{html.escape(state)}</span>"

    def _render_progress(
        self, note: str | None = None, loop_done: int | None = None, done: bool = False
    ) -> None:
        stats = self._stats
        params = stats.get("params")
        if params is None or (note is not None and "loop" not in stats):
            self.progress_text.value = f"<span class='sw-progress'>{html.escape(note or '')}</span>"
            if done:
                self.progress_bar.value = 1.0 if not self._job_error else self.progress_bar.value
            return
        loops, steps = params.sequence_loop_count, params.steps
        loop = stats.get("loop", 0)
        step = stats.get("step", 0)
        if loop_done is not None:
            loop, step = loop_done, steps - 1
        fork = stats.setdefault("fork", loop)
        total = max((loops - fork) * steps, 1)
        done_steps = (loop - fork) * steps + step + 1
        self.progress_bar.value = min(done_steps / total, 1.0)
        self.progress_bar.bar_style = (
            "danger"
            if self._job_error
            else ("warning" if self._stopping else ("success" if done else "info"))
        )
        rate = ""
        eta = ""
        first = stats.get("first_step")
        if first is not None and stats["steps"] > 1:
            elapsed = time.monotonic() - first
            per_second = (stats["steps"] - 1) / max(elapsed, 1e-6)
            rate = f" · {per_second:.1f} it/s"
            if not done:
                eta = f" · ETA {_fmt_seconds((total - done_steps) / max(per_second, 1e-6))}"
        # Loops are numbered from 0 everywhere (timeline, preview, the node's keyframes).
        text = f"loop {loop} ({loop + 1}/{loops}) · step {step + 1}/{steps}{rate}{eta}"
        if note:
            text = f"{note} <span class='sw-muted'>({text})</span>"
        self.progress_text.value = f"<span class='sw-progress'>{text}</span>"

    def _render_info(self, frame=None, live=None, missing=None) -> None:
        if live is not None:
            loop, step, params = live
            self.info.value = (
                f"<div class='sw-info'><div class='sw-loop'>loop {loop}"
                f"<span> of {params.sequence_loop_count}</span>"
                f"<span class='sw-badge sw-live'>live · step {step + 1}/{params.steps}</span></div>"
                f"<div class='sw-muted'>latent-to-RGB estimate of the denoised image; the "
                f"decoded frame replaces it when the loop ends</div></div>"
            )
            return
        if missing is not None:
            branch, index = missing
            self.info.value = (
                f"<div class='sw-info'><div class='sw-loop'>loop {index}</div>"
                f"<div class='sw-muted'>{html.escape(branch.name)}: not computed yet</div></div>"
            )
            return
        if frame is None:
            self.info.value = (
                "<div class='sw-info'><div class='sw-loop'>no frame yet</div>"
                "<div class='sw-muted'>Write keyframe prompts, press <b>Run</b>, then click a "
                "frame on the timeline (drag to scrub, arrow keys to step). <b>Branch</b> "
                "continues from the selected frame with the settings you change; <b>Re-run</b> "
                "recomputes it.</div></div>"
            )
            return
        branch, f, size = frame
        params = branch.params
        keyframes = {i for i, _ in params.positive_keyframes}
        badge = "<span class='sw-badge'>keyframe</span>" if f.index in keyframes else ""
        positive = self._chain_html(f.positive)
        negative = self._chain_html(f.negative) or "<span class='sw-muted'>(empty)</span>"
        sigmas = f"{float(f.sigmas[0]):.3g} → {float(f.sigmas[-1]):.3g}" if len(f.sigmas) else "—"
        timing = f.timings.get("total")
        rows = [
            ("branch", html.escape(branch.name)),
            ("seed", str(f.seed)),
            ("denoise", f"{f.denoise:.2f}"),
            (
                "steps",
                f"{f.steps} · {html.escape(params.sampler_name)} / "
                f"{html.escape(params.scheduler)} · cfg {params.cfg:g}",
            ),
            ("sigmas", sigmas),
            ("positive", positive),
            ("negative", negative),
            ("size", f"{size[0]}×{size[1]}" + (f" · {timing:.2f} s" if timing is not None else "")),
        ]
        table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
        self.info.value = (
            f"<div class='sw-info'><div class='sw-loop'>loop {f.index}"
            f"<span> of {params.sequence_loop_count}</span>{badge}</div>"
            f"<table>{table}</table></div>"
        )

    @staticmethod
    def _chain_html(chain) -> str:
        parts = []
        for i, (prompt, t) in enumerate(chain):
            text = f"<span class='sw-prompt'>{html.escape(prompt) or '(empty)'}</span>"
            parts.append(text if i == 0 else f"→ {text} <span class='sw-muted'>({t:.2f})</span>")
        return " ".join(parts[-3:])

    def _show_error(self, exc: BaseException, text: str) -> None:
        self.last_error = exc
        message = html.escape(f"{type(exc).__name__}: {exc}")
        self.error_html.value = (
            f"<div class='sw-errorbox'><b>{message}</b>"
            f"<details><summary>traceback</summary><pre>{html.escape(text)}</pre></details></div>"
        )
        self.error_area.layout.display = None

    # -- buttons -----------------------------------------------------------------------------------

    def _click(self, action) -> None:
        # Button callbacks must never raise into the front end: show what went wrong instead.
        try:
            action(wait=False)
        except Exception as exc:
            self._show_error(exc, traceback.format_exc())

    def _on_params(self, _change) -> None:
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self._running
        valid = self.panel.params is not None
        frame = self.selected_frame is not None
        self.run_button.disabled = busy or not valid
        self.stop_button.disabled = not busy
        self.branch_button.disabled = busy or not valid or not frame
        self.rerun_button.disabled = busy or not valid or not frame
        self.export_button.disabled = busy or not frame
        self.delete_button.disabled = busy or self.selected is None
        self.export_format.disabled = busy
        self.panel.set_enabled(not busy)
        tip = "" if valid else f" (invalid settings: {self.panel.error})"
        self.run_button.tooltip = "Run the settings from loop 0" + tip

    def _free_path(self, stem: str, suffix: str) -> Path:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / f"{stem}{suffix}"
        n = 2
        while path.exists():
            path = self.export_dir / f"{stem}-{n}{suffix}"
            n += 1
        return path
