"""One job at a time: a run, branch, re-run or export of the studio, on a thread of its own.

A `Job` is the whole state of one job: what it is, how far it got, how it ended. The
`JobRunner` starts it (on a background thread, or on the calling thread for Colab), and calls
``on_finish(job)`` however it ends; nothing about a job lives anywhere else, so a new job starts
from a clean slate by construction.

Example:
    >>> runner = JobRunner(threaded=True, on_finish=lambda job: None)
    >>> runner.start(Job("export", None, started=0.0), lambda job: 42, wait=True)
    42
    >>> runner.running, runner.job.result
    (False, 42)
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqwidgets.engine import CancelToken
from seqwidgets.export import EXPORT_FORMATS
from seqwidgets.params import SequenceParams

__all__ = ["Job", "JobRunner", "export_path", "find_branch", "fork_changes", "loop_index"]


@dataclass(eq=False)
class Job:
    """The state of one studio job.

    Attributes:
        kind (`str`): ``"run"``, ``"branch"``, ``"rerun"`` or ``"export"``.
        params (`SequenceParams` or `None`): the settings it samples with (``None``: export).
        started (`float`): `time.monotonic` when it started.
        fork (`int` or `None`): the first loop it computes (known at its first step).
        loop, step (`int`): the loop and step reached (0-based).
        steps (`int`): model steps done so far; first_step: when the first one ended.
        frames (`int`): frames finished.
        branch: the `Branch` the frames go to, once known.
        follow (`bool`): the selection follows each new frame (until the user picks another).
        stopping (`bool`): Stop was pressed.
        cancel (`CancelToken`): the job's stop request, made with the job and handed to the
            session's run: a Stop pressed before the job's thread reaches the run still stops it.
        finished (`bool`): it has ended, however.
        result: what the job returned; error: what it raised (``None`` if nothing).
        shown_error (`bool`): an error from a callback was already shown (shown once per job).
        last_progress, last_live (`float`): when the progress line and the live preview were
            last drawn (both are throttled).
    """

    kind: str
    params: SequenceParams | None
    started: float
    fork: int | None = None
    loop: int = 0
    step: int = 0
    steps: int = 0
    first_step: float | None = None
    frames: int = 0
    branch: Any = None
    follow: bool = True
    stopping: bool = False
    cancel: CancelToken = field(default_factory=CancelToken)
    finished: bool = False
    result: Any = None
    error: BaseException | None = None
    shown_error: bool = False
    last_progress: float = 0.0
    last_live: float = 0.0

    def on_step(self, loop: int, step: int, now: float) -> None:
        """Count one finished model step of ``loop``."""
        self.steps += 1
        if self.first_step is None:
            self.first_step = now
        if self.fork is None:
            self.fork = loop
        self.loop, self.step = loop, step

    def on_frame(self, index: int) -> None:
        """Count loop ``index`` as finished (all of its steps done)."""
        self.frames += 1
        if self.fork is None:
            self.fork = index
        self.loop, self.step = index, (self.params.steps - 1 if self.params else 0)

    def picked(self, selected, last_index: Callable[[Any], int]) -> None:
        """The user selected ``selected`` (``(branch_id, loop)``) during the job: new frames are
        followed only if it is the newest frame of the job's branch (``last_index(id)``)."""
        branch = self.branch
        self.follow = (
            selected is not None
            and branch is not None
            and tuple(selected) == (branch.id, last_index(branch.id))
        )

    def first_error(self) -> bool:
        """Whether no error of a callback was shown yet for this job (now one counts as shown):
        a drawing failure must not flood the error area once per step."""
        first, self.shown_error = not self.shown_error, True
        return first

    def due(self, what: str, now: float, every: float) -> bool:
        """Whether ``what`` ("progress" or "live") was last drawn ``every`` seconds ago or more;
        if so, it counts as drawn now.

        >>> job = Job("run", None, started=0.0)
        >>> job.due("live", 1.0, 0.25), job.due("live", 1.1, 0.25), job.due("live", 1.3, 0.25)
        (True, False, True)
        """
        name = f"last_{what}"
        if now - getattr(self, name) < every:
            return False
        setattr(self, name, now)
        return True

    @property
    def total_steps(self) -> int:
        """Model steps the job will take in all (at least 1)."""
        if self.params is None:
            return 1
        fork = self.fork or 0
        return max((self.params.sequence_loop_count - fork) * self.params.steps, 1)

    @property
    def done_steps(self) -> int:
        """Model steps done, counted from where the job started."""
        if self.params is None:
            return 0
        return (self.loop - (self.fork or 0)) * self.params.steps + self.step + 1

    def rate(self, now: float) -> float | None:
        """Model steps per second so far (``None`` before the second step)."""
        if self.first_step is None or self.steps < 2:
            return None
        return (self.steps - 1) / max(now - self.first_step, 1e-6)


class JobRunner:
    """Runs one `Job` at a time and reports how it ended.

    Args:
        threaded (`bool`): run on a background thread (Stop works mid-loop) or on the caller's.
        on_finish: ``on_finish(job)``, called from the job's thread however the job ends.
        on_error: ``on_error(exc, traceback_text)`` when the job raises (before ``on_finish``).

    Attributes:
        job (`Job` or `None`): the current or last job.
    """

    def __init__(
        self,
        threaded: bool,
        on_finish: Callable[[Job], None],
        on_error: Callable[[BaseException, str], None] | None = None,
    ):
        self.threaded = threaded
        self.on_finish = on_finish
        self.on_error = on_error
        self.job: Job | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return self._running

    def start(self, job: Job, work: Callable[[Job], Any], wait: bool = True) -> Any:
        """Start ``work(job)``; return its result when ``wait`` (re-raising its error).

        Raises:
            `RuntimeError`: a job is already in progress.
        """
        if self._running:
            raise RuntimeError("a job is in progress; Stop it or wait() for it first")
        self._running = True
        self.job = job
        if not self.threaded:
            self._work(job, work)
        else:
            self._thread = threading.Thread(
                target=self._work, args=(job, work), name="seqwidgets-studio", daemon=True
            )
            self._thread.start()
            if not wait:
                return None
            self._thread.join()
        if job.error is not None and wait:
            raise job.error
        return job.result

    def stop(self) -> bool:
        """Mark the job as stopping and cancel its token; return whether one is running."""
        if self._running and self.job is not None:
            self.job.stopping = True
            self.job.cancel.cancel()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background job; return whether it is done."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` made safe for the job's thread: an exception in it is reported to
        ``on_error`` once per job (a drawing failure must not flood the error area once per
        step) and never reaches the sampler.

        >>> shown = []
        >>> runner = JobRunner(False, lambda job: None, lambda exc, text: shown.append(exc))
        >>> runner.job = Job("run", None, started=0.0)
        >>> failing = runner.guarded(lambda loop: 1 / 0)
        >>> failing(0), failing(1), len(shown)
        (None, None, 1)
        """

        def call(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                job = self.job
                if job is not None and job.first_error() and self.on_error is not None:
                    self.on_error(exc, traceback.format_exc())

        return call

    def _work(self, job: Job, work: Callable[[Job], Any]) -> None:
        try:
            job.result = work(job)
        except BaseException as exc:
            job.error = exc
            if self.on_error is not None:
                self.on_error(exc, traceback.format_exc())
        finally:
            # Not running any more before on_finish, so that it can enable the buttons.
            job.finished = True
            self._running = False
            self.on_finish(job)


def export_path(folder: str | Path, branch_id: int, index: int, format: str) -> Path:
    """A path in ``folder`` for an export of branch ``branch_id`` up to loop ``index`` that no
    file takes yet (``-2``, ``-3``... are added): Export never overwrites.

    >>> import tempfile
    >>> export_path(tempfile.mkdtemp(), 3, 7, "gif").name
    'seqwidgets-3-loop7.gif'
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = f"seqwidgets-{branch_id}-loop{index}", EXPORT_FORMATS[format][1]
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}{suffix}", n + 1
    return path


def find_branch(branches, branch):
    """The branch among ``branches`` that ``branch`` names: itself, its id or its name.

    Raises:
        `ValueError`: no such branch.
    """
    for candidate in branches:
        if branch is candidate or branch in (candidate.id, candidate.name):
            return candidate
    raise ValueError(f"no branch {branch!r} in this session")


def loop_index(branch, index: int) -> int:
    """Loop ``index`` of ``branch`` as a loop number; a negative ``index`` counts from the end of
    the computed loops.

    Raises:
        `IndexError`: outside the branch's loops.
    """
    if index < 0:
        index = len(branch.indices) + index
    if not 0 <= index < branch.params.sequence_loop_count:
        raise IndexError(
            f"branch {branch.id} ({branch.name}) has loops 0..{len(branch.indices) - 1}; "
            f"got index {index}"
        )
    return index


def fork_changes(base: SequenceParams, params: SequenceParams) -> dict[str, Any]:
    """The fields of ``params`` that differ from ``base``, with their new values: what a Branch
    or Re-run from a frame computed with ``base`` changes.

    >>> fork_changes(SequenceParams(cfg=8.0), SequenceParams(cfg=3.0, steps=20))
    {'cfg': 3.0}
    """
    theirs = base.to_dict()
    return {k: v for k, v in params.to_dict().items() if v != theirs[k]}
