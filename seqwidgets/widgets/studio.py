"""`Studio`: the control panel, the live timeline and the preview, wired to a `Session`.

The studio only calls its `Session` (DESIGN.md: widgets -> session -> engine); `render` writes
what it shows. Jobs (run, branch, re-run, export) run on a `JobRunner`'s thread (the caller's on
Colab): progress at most 10 times a second, live previews 4, errors shown, the controls back.
"""

from __future__ import annotations

import html
import time
import traceback
from importlib import resources
from pathlib import Path
from typing import Any

import ipywidgets as W
import traitlets

from seqwidgets.decode_process import DecodeProcess
from seqwidgets.device import available_memory, spare_cpu_cores
from seqwidgets.offload import execution_device
from seqwidgets.params import SequenceParams
from seqwidgets.session import DRAFT_ID as DRAFT_ROW

from . import render
from .colab import choose_renderer, default_threaded
from .compare import CompareView
from .controls import ErrorArea, FrameView, Header, Transport, close_all, on_click, studio_layout
from .display import DisplayWorker
from .drafts import LatestOnly
from .jobs import Job, JobRunner, export_path, find_branch, fork_changes, loop_index
from .metrics_strip import MetricsStrip
from .panel import ControlPanel
from .timeline import CanvasPreview, CanvasTimeline, ImagePreview, ImageTimeline

__all__ = ["Studio"]

_CSS = resources.files(__package__).joinpath("studio.css").read_text(encoding="utf-8")

#: Seconds a typed edit waits for the next keystroke before its draft starts.
TYPING_DELAY = 0.3

#: The drafts' request that drops the draft: a click never waits for a model step to end.
_DROP = "drop the draft"

#: On a CPU with cores to spare, frames are decoded in a helper process once a job has sampled
#: this long: the helper takes seconds to start, which a short run would not win back.
DECODER_PROCESS_AFTER_S = 2.0

#: ... and only with this much memory free: the helper holds its own torch and a copy of the VAE
#: (about 0.46 GB with the toy model).
DECODER_PROCESS_MEMORY = 2 << 30


def _cores_to_spare() -> bool:
    """Whether torch's threads leave as many cores again idle: a decode beside the sampling
    then runs with the same threads (so the same pixels) without slowing it."""
    import torch

    return spare_cpu_cores() >= torch.get_num_threads()


class Studio(W.VBox):
    """The KSampler Sequence studio: settings, a live timeline of every loop, scrub and branch.

    Args:
        pipe: a diffusers pipeline (SD 1.x/2.x, SDXL, SD3, Flux); ``None`` loads ``seqwidgets.load_pipeline()`` (the toy
            model) on the first run.
        params (`SequenceParams`, *optional*): initial settings (default: the node's defaults).
        renderer (`str`, defaults to ``"auto"``): ``"canvas"`` (ipycanvas), ``"image"`` (plain
            ``ipywidgets.Image``, for front ends without ipycanvas) or ``"auto"``.
        threaded (`bool`, *optional*): run on a background thread (default; Stop works mid-loop)
            or on the calling thread (default on Colab, where thread updates are unreliable).
        session (`Session`, *optional*): drive an existing session (its branches are shown,
            its first frame selected, so the panel shows that branch's settings).
        thumb_size, preview_size, width (`int`, defaults to 56, 320, 1040): the timeline's
            thumbnail side, the large preview box's side and the timeline's width, in pixels.
        max_rows (`int`, defaults to 5): timeline rows shown at once.
        export_dir (`str`, defaults to ``"."``): where Export writes files.
        live_preview (`bool`, defaults to `True`): show the denoised estimate while a loop runs.
        preview (`str`, *optional*): how: ``"latent_rgb"`` (ComfyUI's latent-to-RGB map),
            ``"taesd"`` (the family's TAESD decoder, falling back to latent-to-RGB with a note in
            the header); any name `seqwidgets.decode.make_previewer` takes, default its default.

    Scripting:
        >>> import seqwidgets as sw
        >>> studio = Studio(sw.testing.tiny_pipeline())
        >>> branch = studio.run(wait=True, sequence_loop_count=4, steps=2, positive_seq="0: a")
        >>> studio.select(branch, 2)                    # the panel shows branch's settings
        >>> alt = studio.branch(denoise_seq=0.3)        # from the selected frame
        >>> alt.fork, alt.params.denoise_seq, alt.name
        (3, 0.3, 'run 1 > from loop 3')

    Live drafts: with `live` on, each settings change re-renders a draft from the selected
    frame (a marked timeline row; a newer change cancels it at the next model step):
        >>> studio.live = True
        >>> studio.select(branch, 1)
        >>> studio.panel.set_values(denoise_seq=0.7); studio.wait_draft()
        True
        >>> draft = studio.draft
        >>> draft.name, draft.indices, draft.params.denoise_seq, len(studio.session.branches)
        ('draft', [0, 1, 2, 3], 0.7, 2)
        >>> studio.keep().name, len(studio.session.branches)
        ('run 1 > from loop 2', 3)

    With `draft_steps` a draft runs fewer model steps than the branch it would become, and
    `keep` renders that branch at its full steps:
        >>> studio.draft_steps = 1
        >>> studio.panel.set_values(cfg=3.0); studio.wait_draft()
        True
        >>> studio.draft.params.steps, studio.keep().params.steps
        (1, 2)
    """

    #: Re-render a draft from the selected frame on every settings change (the Live toggle).
    live = traitlets.Bool(False)
    #: Model steps a live draft runs when fewer than the branch's own (the Live bar's "draft
    #: steps"; ``None``: the branch's). `keep` then renders the branch at its full steps.
    draft_steps = traitlets.Int(None, allow_none=True)

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
        preview: str | None = None,
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
        self.jobs = JobRunner(self.threaded, self._finish, self._show_error)
        # New frames are made beside the sampling where it can (`_on_frame`), drawn at its next step.
        self.display = DisplayWorker(threaded=None, on_error=self._show_error)
        self._decoder: DecodeProcess | None = None  # the helper process, on a CPU

        self.panel = ControlPanel(params)
        self.transport = t = Transport()
        t.connect(self._show_error, run=self.run, stop=self.stop, branch=self.branch)
        t.connect(self._show_error, rerun=self.rerun, export=self.export, delete=self.delete)
        self.header = Header()
        image = self.renderer != "canvas"
        self.view = FrameView((ImagePreview if image else CanvasPreview)(preview_size), preview)
        self.view.live.on_note = lambda _note: self._describe_soon()
        on_click(self.view.decode_button, self.decode_full, self._show_error)
        self.timeline = (ImageTimeline if image else CanvasTimeline)(
            width=width, thumb=thumb_size, max_rows=max_rows
        )
        if not image:  # after a page reload the preview asks for its frame again
            self.view.preview.redisplay = lambda _key: self._show_selected()
        self.timeline.on_error = self.view.preview.on_error = self._show_error
        self.timeline.toolbar.children = (*self.timeline.toolbar.children, t.delete_button)
        self.strip = MetricsStrip(session, width=width, thumb=thumb_size, renderer=self.renderer)
        self.strip.follow(self.timeline)
        self.compare = CompareView(session, size=preview_size * 3 // 4, active=False)
        self.compare.follow(self.timeline)
        self.tabs = self.compare.tab_beside(self.view)
        self.error_area = ErrorArea()
        self.timeline.observe(self._on_selected, "selected")
        self.panel.observe(lambda _: self._update_buttons(), "params")

        self.drafts = LatestOnly(self._draft_work, self.threaded)
        self._origin = None  # (branch, loop) the drafts start from: the last frame selected
        # (origin, settings, draft steps) of the last draft asked for, and the request of the
        # draft computed last (what `keep` renders anew when it ran fewer steps).
        self._drafted: tuple | None = None
        self._draft_request: tuple | None = None
        self._dropping = False  # a drop is asked for and not done yet (see `discard`)
        self.live_bar = t.live_bar
        traitlets.link((self, "live"), (self.live_bar.toggle, "value"))
        self.observe(self._on_live, "live")
        self.observe(self._on_draft_steps, "draft_steps")
        self.live_bar.draft_steps.observe(
            lambda change: setattr(self, "draft_steps", change["new"] or None), "value"
        )
        self.panel.observe(lambda _: self._request_draft(), "params")
        on_click(self.live_bar.keep_button, lambda: self.keep(wait=False), self._show_error)
        on_click(self.live_bar.discard_button, lambda: self.discard(wait=False), self._show_error)

        self.children = studio_layout(
            _CSS, self.header, self.panel, self.tabs, t, self.error_area, self.timeline, self.strip
        )
        self.view.live.attach(self._pipe)  # a preview name it refuses raises here
        self._describe()
        self._sync_rows()
        self._update_buttons()

    # -- scripting API -----------------------------------------------------------------------

    @property
    def session(self):
        """The `Session` this studio drives (created, and the pipeline loaded, on first use)."""
        if self._session is None:
            from seqwidgets.models import load_pipeline
            from seqwidgets.session import Session

            if self._pipe is None:
                self._pipe = load_pipeline()
            self._session = self.strip.session = self.compare.session = Session(self._pipe)
            self.view.live.attach(self._pipe, strict=False)  # its note names the model anew
        return self._session

    @property
    def params(self) -> SequenceParams:
        """The panel's current settings: what Run, Branch and Re-run use.

        Selecting a frame (a click, or `select`) loads the settings of the branch that computed
        it, unless the panel's "keep my edits" box is ticked; edits typed since then are part of
        them. Raises `ValueError` with the message shown when the settings are invalid.
        """
        params = self.panel.params
        if params is None:
            raise ValueError(self.panel.error or "the settings are invalid")
        return params

    @property
    def running(self) -> bool:
        """Whether a job (run, branch, re-run, export) is in progress."""
        return self.jobs.running

    @property
    def selected(self):
        """``(branch, index)`` of the selected frame, or ``None``."""
        if self.timeline.selected is None or self._session is None:
            return None
        key, index = self.timeline.selected
        row = self.timeline.row(key)
        return None if row is None or row.branch is None else (row.branch, index)

    @property
    def selected_frame(self):
        """The selected `Frame`, or ``None`` (nothing selected, or not computed yet)."""
        selected = self.selected
        try:
            return None if selected is None else self.session.frame(*selected)
        except (IndexError, ValueError):
            return None

    def select(self, branch, index: int = -1) -> None:
        """Select loop ``index`` (negative counts from the end) of ``branch``, as a click does:
        the preview shows the frame and the panel the settings of the branch that computed it.

        ``branch`` is a `Branch`, its id or its name.
        """
        branch = find_branch(self.session.branches, branch)
        self._sync_rows()  # branches run on the session directly show up too
        index = loop_index(branch, index)
        self.timeline.follow_scroll = True
        self.timeline.select(branch.id, index)

    def run(self, wait: bool = True, **changes: Any):
        """Run the panel's settings (after setting ``changes`` in the panel) as a new branch.

        Returns the new `Branch` when ``wait`` (re-raising an error from the run, which is also
        shown in the error area); otherwise starts in the background and returns ``None``.
        """
        self.panel.set_values(**changes)
        params, init_image = self.params, self.panel.init_image
        return self._start(
            "run", params, wait, lambda cb: self.session.run(params, init_image=init_image, **cb)
        )

    def branch(self, wait: bool = True, **changes: Any):
        """Branch after the selected frame: a new row that shares every loop up to it.

        ``changes`` are set in the panel first (as `run` does); the new branch then has the
        panel's settings: every field that differs from the settings of the branch that computed
        the selected frame changes from the next loop on. With no edits and no ``changes``, the
        new frames equal that branch's own.
        """
        return self._fork("branch", wait, changes)

    def rerun(self, wait: bool = True, **changes: Any):
        """Re-run from the selected frame: like `branch`, but the selected loop is recomputed."""
        return self._fork("rerun", wait, changes)

    def stop(self) -> None:
        """Stop the job at the next model step (finished frames stay); a job whose run has not
        begun yet never starts it."""
        if self.jobs.stop():  # cancels the job's token, which its run was (or will be) given
            self.header.set_state("stopping")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background job; return whether it is done."""
        return self.jobs.wait(timeout)

    @property
    def decode_process(self) -> DecodeProcess | None:
        """The helper process decoding new frames (`seqwidgets.decode_process.DecodeProcess`),
        on a CPU with cores to spare once a job has run a while; ``None`` until then."""
        return self._decoder

    @property
    def draft(self):
        """The live draft (a `Branch` not listed in the session until `keep`), or ``None``."""
        return None if self._session is None else self._session.current_draft

    def keep(self, name: str | None = None, wait: bool = True):
        """Keep the draft as an ordinary branch (after the draft being computed ends) and
        select its first frame; return it.

        A draft computed at `draft_steps` (fewer than the branch's) is not kept as it is: the
        draft is dropped and the branch rendered anew at its full steps, a job like `branch`
        (equal to it bit for bit; the selection follows its frames as they land). Then
        ``wait=False`` starts it in the background and returns ``None``.

        ``wait=False`` (the Keep button) never waits for a draft being computed either: it is
        stopped at its model step and the branch of the latest settings drafted is rendered
        that way, as a job.

        Raises:
            `ValueError`: there is no draft.
        """
        if not wait and self.drafts.busy and self._drafted is not None:
            (owner, index), params, steps = self._drafted
            request = (owner, index, fork_changes(owner.params, params), steps)
            return self._render_kept(request, name, wait)
        self.drafts.wait()
        if self.draft is None:
            raise ValueError("there is no draft to keep: turn live on and change a setting")
        request = self._draft_request
        if request is not None and request[3] is not None and self._drafted_by(request):
            return self._render_kept(request, name, wait)
        branch = self.session.keep_draft(name)
        self._drafted = self._draft_request = None
        self.timeline.remove_row(DRAFT_ROW)
        self._sync_rows()
        if branch.own_indices:
            self.timeline.select_auto(branch.id, branch.own_indices[0])
        self.live_bar.say(f"kept the draft as <b>{html.escape(branch.name)}</b>")
        self._update_buttons()
        return branch

    def _drafted_by(self, request: tuple) -> bool:
        """Whether the draft is the one ``request`` made (not an older one that a request
        failing before it began left in place)."""
        owner, index, changes, steps = request
        draft = self.draft
        drafted = owner.params.replace(**{**changes, "steps": steps})
        return draft.fork == index + 1 and draft.params == drafted

    def _render_kept(self, request: tuple, name: str | None, wait: bool):
        """`keep` of a draft with fewer steps (or one still being computed): the branch at its
        full settings, as a job."""
        owner, index, changes, draft_steps = request
        params = owner.params.replace(**changes)
        self.discard()
        drafted = (
            ""
            if draft_steps is None
            else f" <span class='sw-muted'>(drafted at {draft_steps})</span>"
        )
        self.live_bar.say(f"keeping the draft: rendering it at {params.steps} steps{drafted}…")

        def work(callbacks):
            return self.session.branch((owner, index), name=name, **callbacks, **changes)

        return self._start("keep", params, wait, work)

    def discard(self, wait: bool = True) -> None:
        """Drop the draft (cancelling it if it is being computed); the session is as before.

        ``wait=False`` (the Discard button, live turned off, a change undone): a draft being
        computed is cancelled and dropped on the drafts' thread when its model step ends, and
        the call returns at once (`wait_draft` waits for it); with none, it is dropped at once.
        """
        if not wait and self.drafts.busy:
            self._drafted, self._dropping = None, True
            self.drafts.submit(_DROP)  # the newest request: it cancels the draft under way
            return
        self.drafts.cancel()
        self.drafts.wait()
        self._drop_draft()

    def _drop_draft(self) -> None:
        """Drop the draft now (none is being computed): its row, its note, the session's."""
        self._dropping = False
        if self._session is not None:
            self._session.discard_draft()
        self._drafted = self._draft_request = None
        self.timeline.remove_row(DRAFT_ROW)
        self.live_bar.say("<span class='sw-muted'>live on</span>" if self.live else "live off")
        self._show_selected()
        self._update_buttons()

    def wait_draft(self, timeout: float | None = None) -> bool:
        """Wait until no draft is being computed nor waiting; return whether that is so."""
        return self.drafts.wait(timeout)

    def decode_full(self):
        """Decode with the full VAE the last live estimate (of a loop running, or stopped
        mid-way), or the selected frame when none is held; show it, labelled, and return it."""
        return self.view.decode_full(self._session, self.selected)

    def export(self, path=None, format: str | None = None, wait: bool = True, **options: Any):
        """Export the selected branch up to the selected loop (default file in ``export_dir``).

        Returns the written path when ``wait``.
        """
        if self.selected is None:
            raise ValueError("select a frame first: Export writes its branch up to it")
        branch, index = self.selected
        format = format or self.transport.export_format.value
        path = export_path(self.export_dir, branch.id, index, format) if path is None else path

        def work(_callbacks):  # an export has no steps nor frames to report
            return self.session.export(branch, path, format=format, upto=index, **options)

        return self._start("export", None, wait, work)

    def delete(self, branch=None, wait: bool = True) -> None:
        """Delete ``branch`` (default: the selected one) from the session and the timeline.

        A branch that others fork from is refused (`ValueError`): delete those first.
        Deleting is immediate; ``wait`` is accepted so that every action takes the same call.
        """
        if self.running:
            raise RuntimeError("a job is in progress; Stop it or wait() for it first")
        if branch is None and self.selected is None:
            raise ValueError("select a frame of the branch to delete first")
        branch = find_branch(self.session.branches, self.selected[0] if branch is None else branch)
        self.session.delete(branch)
        self.timeline.remove_row(branch.id)
        self._sync_rows()  # the strip and the compare tab too
        remaining = [b for b in self.session.branches if b.indices]
        if remaining:
            self.timeline.select_auto(remaining[-1].id, len(remaining[-1].indices) - 1)
        self._show_selected()
        self._update_buttons()

    def close(self) -> None:
        """Stop any job and close every widget of the studio (hidden canvases included)."""
        self.drafts.cancel()
        self.drafts.wait(30)
        self.stop()
        self.wait(30)
        if self._decoder is not None:
            self._decoder.close()
        close_all(self)
        super().close()

    def clear_error(self) -> None:
        """Hide the error area."""
        self.error_area.clear()

    # -- jobs ----------------------------------------------------------------------------------

    def _fork(self, kind: str, wait: bool, changes: dict):
        if self.selected is None:
            raise ValueError(f"select a frame first: {kind} starts from it")
        # Fork from the branch that computed the frame: its settings are the ones the panel
        # shows and measures edits against (a loop before a fork belongs to the parent).
        branch, index = self.selected
        branch = branch.owner(index)
        self.panel.set_values(**changes)
        changes = fork_changes(branch.params, self.params)
        method = self.session.branch if kind == "branch" else self.session.rerun
        params = branch.params.replace(**changes)
        return self._start(kind, params, wait, lambda cb: method((branch, index), **cb, **changes))

    def _start(self, kind: str, params: SequenceParams | None, wait: bool, work):
        if self.running:
            raise RuntimeError("a job is in progress; Stop it or wait() for it first")
        dropped = self.drafts.cancel()  # a job needs the session: the draft stops where it is
        self.drafts.wait()
        if self._dropping:  # the drop asked for was waiting behind the draft: do it now
            self._drop_draft()
        if dropped and self._drafted is not None:  # it never began: its note must not stay
            (owner, index), params, steps = self._drafted
            changes = fork_changes(owner.params, params)
            self.live_bar.say(self._draft_note("stopped", (owner, index, changes, steps)))
        job = Job(kind, params, started=time.monotonic())
        self.clear_error()
        self.view.live.release()  # an estimate of an earlier job's loop is no longer current
        self.header.set_state("running")
        self.transport.show(job, note=f"{kind}: starting…")
        guard = self.jobs.guarded  # an error in a callback shows once, never reaching the sampler
        callbacks = {
            "callback": guard(self._on_step),
            "on_frame": guard(self._on_frame),
            "cancel": job.cancel,  # made with the job, before its thread: no Stop is lost
        }

        def run(job: Job):
            self._update_buttons()  # the runner now counts the job as running
            if self._session is None:
                self.transport.show(job, note="loading the model…")
            self.session  # noqa: B018 (loads the pipeline on the first job)
            if job.cancel.cancelled:
                return None  # stopped before it began: no empty branch
            return work(callbacks)

        return self.jobs.start(job, run, wait=wait)

    def _finish(self, job: Job) -> None:
        self.display.drain()  # every frame of the job drawn before the end is shown
        try:
            self._sync_rows()
            self.timeline.set_running(None, None)
            stopped = job.stopping or (self._session is not None and self._session.stopped)
            state, note = render.finish_note(job, time.monotonic(), stopped)
            branch = job.result if job.kind != "export" else None
            if branch is not None and branch.indices and (job.follow or not self.timeline.selected):
                self.timeline.select_auto(branch.id, branch.indices[-1])
            if job.kind == "keep" and branch is not None:
                self.live_bar.say(
                    f"kept the draft as <b>{html.escape(branch.name)}</b>, rendered at "
                    f"{branch.params.steps} steps" + (" (stopped)" if stopped else "")
                )
            self.header.set_state(state)
            self.transport.show(job, note=note)
        except Exception as exc:  # keep the studio usable whatever happened
            self._show_error(exc, traceback.format_exc())
        finally:
            self._update_buttons()

    # -- callbacks: from the running thread, and the selection -------------------------------

    def _on_step(self, loop: int, step: int, sigma: float, denoised) -> None:
        # The sampling thread counts and queues; it draws what is ready (a decoded frame).
        job, now = self.jobs.job, time.monotonic()
        job.on_step(loop, step, now)
        draw, guard = self.display.submit, self.jobs.guarded
        if job.branch is None and self.session.branches:  # listed as soon as it starts
            job.branch = branch = self.session.branches[-1]
            draw(guard(lambda: self.timeline.show_branch(branch)))
        if step == 0 and job.branch is not None:
            key = job.branch.id
            draw(guard(lambda: self.timeline.set_running(key, loop)))
        if job.due("progress", now, 0.1):
            draw(guard(lambda: self.transport.show(job)), latest="progress")
        if self.live_preview and job.follow and job.due("live", now, 0.25):
            pipe = self.session.pipe
            latent = denoised[:1].detach().clone()  # the sampler goes on with its own tensor

            def make_live() -> None:  # the previewer's arithmetic, beside the sampling
                self.view.live.prepare(latent, loop=loop, step=step, params=job.params)

            def show_live() -> None:
                self.view.show_live(pipe, latent, loop, step, job.params)

            draw(guard(show_live), prepare=make_live, latest="live")
        self.display.draw_ready()

    def _on_frame(self, branch, frame) -> None:
        job = self.jobs.job
        job.branch = branch
        job.on_frame(frame.index)
        session, size = self.session, self.thumb_size
        # On an accelerator a decode in the sampling thread waits for the device (a host
        # synchronisation): a worker thread lets the sampling go on. On a CPU it helps where
        # torch's threads leave cores idle (the default, half the cores), the decode itself in a
        # helper process once a job runs a while (on a thread it takes turns with the sampler
        # for Python's lock); with every core busy it would only contend with the sampling
        # (bench_interaction, docs/performance.md).
        on_cpu = execution_device(session.pipe).type == "cpu"
        if self.display.threaded is None:
            self.display.threaded = not on_cpu or _cores_to_spare()
        if self.display.threaded and on_cpu:
            self._decode_in_a_process(job)
        self.display.submit(
            self.jobs.guarded(lambda: self._draw_frame(job, branch, frame)),
            prepare=lambda: self._prepare_frame(session, branch, frame.index, size),
        )
        self.display.draw_ready()

    def _decode_in_a_process(self, job: Job) -> None:
        """Once a job has sampled for `DECODER_PROCESS_AFTER_S`, decode in a helper process
        (`seqwidgets.decode_process`): on a thread the decode and a CPU sampler take turns
        for Python's lock. Short runs (and tests) never pay the helper's start (seconds)."""
        session = self.session
        if self._decoder is not None or time.monotonic() - job.started < DECODER_PROCESS_AFTER_S:
            return
        room = available_memory("cpu")
        if room is not None and room < DECODER_PROCESS_MEMORY:
            return
        self._decoder = DecodeProcess(session.pipe.vae)
        self._decoder.start()
        session.decoder = self._decoder.decode  # another VAE set since: decoded here

    @staticmethod
    def _prepare_frame(session, branch, index: int, size: int) -> None:
        """What a new frame's drawing reads, made beside the sampling when the display has a
        thread: the decode (torch work, which leaves Python's lock free), its thumbnail and
        its row of measures for the strip. All three are cached in the session."""
        session.thumbnail(branch, index, size)
        session.metrics(branch, index)

    def _draw_frame(self, job: Job, branch, frame) -> None:  # once decoded, on the job's thread
        self.view.live.release(frame.index)  # the frame is the better picture of its loop
        thumb = self.session.thumbnail(branch, frame.index, self.thumb_size)
        self.timeline.add_frame(branch, frame.index, thumb)
        self.strip.refresh(branch)  # the new loop's measures, from the thumbnail's decode
        self.compare.refresh()  # nothing while its tab is hidden
        if job.follow:
            self.timeline.select_auto(branch.id, frame.index)
        self.transport.show(job)
        self._update_buttons()

    def _on_selected(self, change) -> None:
        job = self.jobs.job
        if not self.timeline.auto and self.running and job is not None:
            job.picked(change["new"], self.timeline.last_index)  # a user's pick stops following
        selected = self.selected
        self.panel.follow(None if selected is None else selected[0].owner(selected[1]))
        self._show_selected()
        self._update_buttons()

    # -- live drafts ---------------------------------------------------------------------------

    def _on_live(self, change) -> None:
        if change["new"]:
            self.live_bar.say("<span class='sw-muted'>live on: change a setting</span>")
            self._request_draft()
        else:
            self.discard(wait=False)

    @traitlets.validate("draft_steps")
    def _valid_draft_steps(self, proposal):
        steps = proposal["value"]
        if steps is not None and steps < 1:
            raise ValueError(f"draft_steps: {steps} is not allowed; use an int >= 1, or None")
        return steps

    def _on_draft_steps(self, change) -> None:
        self.live_bar.show_draft_steps(change["new"])
        self._request_draft()  # a draft showing is drafted again at the new steps

    def _steps_of_draft(self, params: SequenceParams) -> int | None:
        """The steps a draft of ``params`` runs when fewer than ``params.steps``, else None."""
        steps = self.draft_steps
        return steps if steps is not None and steps < params.steps else None

    def _draft_origin(self):
        """The frame drafts start from: the selected computed frame, unless it is one of the
        draft's own (then the one selected before)."""
        selected = self.selected
        if selected is not None and selected[0].id != DRAFT_ROW and self.selected_frame:
            branch, index = selected
            self._origin = (branch.owner(index), index)
        return self._origin

    def _request_draft(self) -> None:
        """Ask for a draft of the panel's settings, if live and they change the selected frame's
        (no change: the draft would equal the frames there, so it goes)."""
        if not self.live or self.running or self._session is None:
            return
        origin, params = self._draft_origin(), self.panel.params
        if origin is None or params is None:  # nothing selected, or invalid settings (shown)
            return
        steps = self._steps_of_draft(params)
        if self._drafted is not None and self._drafted == (origin, params, steps):
            return  # e.g. a click on the draft's own row: the panel shows its settings
        owner, index = origin
        changes = fork_changes(owner.params, params)
        if not changes:
            if self.draft is not None or self.drafts.busy:
                self.discard(wait=False)
            return
        before = self._drafted[1] if self._drafted is not None else owner.params
        typed = any(
            isinstance(self.panel.controls.get(name), (W.Text, W.Textarea))
            for name in fork_changes(before, params)
        )
        self._drafted, self._dropping = (origin, params, steps), False
        request = (owner, index, changes, steps)
        self.live_bar.say(self._draft_note("drafting…", request))
        self.drafts.submit(request, TYPING_DELAY if typed else 0.0)

    @staticmethod
    def _described(owner, changes: dict) -> dict:
        return {name: (getattr(owner.params, name), value) for name, value in changes.items()}

    def _draft_note(self, state: str, request: tuple) -> str:
        """The live bar's line for the draft of ``request``, in ``state``."""
        owner, index, changes, steps = request
        full = owner.params.replace(**changes).steps
        described = self._described(owner, changes)
        return render.draft_note_html(state, described, index + 1, (steps, full) if steps else None)

    def _draft_work(self, request, cancel) -> bool:
        """Compute one draft (on the drafts' thread): each frame goes to the draft row and the
        preview as it lands; an error shows in the error area. Returns whether it is complete.

        With draft steps (``request[3]``), the draft is the branch at those steps instead.
        The request `_DROP` drops the draft (`discard` without waiting)."""
        if request == _DROP:
            self._drop_draft()
            return True
        owner, index, changes, steps = request
        session, shown = self.session, {"row": False, "error": False}
        drafted = changes if steps is None else {**changes, "steps": steps}
        full = owner.params.replace(**changes).steps
        row_note = "" if steps is None else f"{steps} of {full} steps"

        def on_frame(branch, frame) -> None:
            try:
                if not shown["row"]:  # the previous draft's frames stay until now
                    self.timeline.show_draft(branch, row_note)
                    shown["row"] = True
                thumb = session.thumbnail(branch, frame.index, self.thumb_size)
                self.timeline.add_frame(branch, frame.index, thumb)
                self.view.show(session, branch, frame.index)
            except Exception as exc:  # drawing failed: say so once, never stop the draft
                if not shown["error"]:
                    shown["error"] = True
                    self._show_error(exc, traceback.format_exc())

        self._draft_request = request
        try:
            self.clear_error()
            draft = session.draft((owner, index), cancel=cancel, on_frame=on_frame, **drafted)
            state = "ready" if draft.is_complete else "stopped"
        except Exception as exc:
            self._show_error(exc, traceback.format_exc())
            state = "failed"
        self.timeline.set_running(None, None)
        if session.current_draft is None:  # it failed before it began: no stale frames shown
            self.timeline.remove_row(DRAFT_ROW)
        if not self.drafts.pending:  # else a newer draft is on its way: its note stays
            self.live_bar.say(self._draft_note(state, request))
        self._update_buttons()
        return state == "ready"

    def _show_selected(self) -> None:
        try:
            self.view.show_selection(self._session, self.selected)
        except Exception as exc:
            self._show_error(exc, traceback.format_exc())

    def _sync_rows(self) -> None:
        """Rows for every branch of the session (e.g. one stopped before its first frame)."""
        if self._session is not None:
            session, size = self._session, self.thumb_size
            self.timeline.sync(session.branches, lambda b, i: session.thumbnail(b, i, size))
            self.strip.refresh()
            self.compare.refresh()

    def _describe_soon(self) -> None:
        """`_describe` now, or during a job by the thread that draws (the previewer that
        changed the note may be running beside the sampling)."""
        if self.running:
            self.display.submit(self.jobs.guarded(self._describe))
        else:
            self._describe()

    def _describe(self) -> None:  # the model is known (or loaded): name it, fit the panel to it
        self.header.describe(self._pipe, self.threaded, self.renderer, self.view.live.note)
        self.panel.fit_to(self._pipe)

    def _show_error(self, exc: BaseException, text: str) -> None:
        self.last_error = exc
        self.error_area.show(exc, text)

    def _update_buttons(self) -> None:
        busy = self.running
        self.transport.enable(
            busy=busy,
            valid=self.panel.params is not None,
            frame=self.selected_frame is not None,
            selected=self.selected is not None,
            error=self.panel.error,
        )
        self.view.enable(frame=self.selected_frame is not None)
        self.panel.set_enabled(not busy)
        self.live_bar.enable(draft=not busy and self.draft is not None)
