"""The studio's drawing, off the sampling thread: a worker that takes what the run hands it.

Decoding a frame, its thumbnail, the metrics strip's measures, the live preview and every canvas
message cost as much as a tenth of a toy-model loop. Done in the sampling thread's callbacks,
that time is added to the run. A `DisplayWorker` runs them on a thread of its own instead: the
sampling thread only hands over a task and goes on with the next model step.

Two kinds of task:

* **kept** (each new frame: its thumbnail, the strip, the selection): every one runs, in the
  order given, so no thumbnail is ever missing;
* **latest** (a live preview, the progress line): a newer task of the same name replaces one
  still waiting, so a slow previewer never builds a queue: the newest picture wins.

Tasks run in the order they were handed over (a replaced task's place is taken by its
replacement, at the end), so a live estimate of loop 3 never covers loop 3's finished frame.
Main-thread mode (``threaded=False``, for Colab, where widget updates from other threads are
unreliable) runs each task at once, in the caller's thread, as the studio always did there.

Example:
    >>> worker = DisplayWorker(threaded=True)
    >>> shown = []
    >>> for step in range(5):
    ...     worker.submit(lambda step=step: shown.append(step), latest="live")
    >>> worker.drain()
    True
    >>> shown[-1], worker.done + worker.dropped
    (4, 5)
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

__all__ = ["DisplayWorker"]

Task = Callable[[], None]


class DisplayWorker:
    """Runs drawing tasks on one background thread, in order, the latest of a name only.

    Args:
        threaded (`bool`, defaults to `True`): run tasks on the worker's thread; ``False``: run
            each at once in the caller's thread (main-thread mode).
        on_error: ``on_error(exc, traceback_text)`` when a task raises (the task is dropped, the
            worker goes on); default: the error is kept in ``last_error`` only.

    Attributes:
        done (`int`): tasks run. dropped (`int`): ``latest`` tasks replaced before they ran.
        last_error (`BaseException` or `None`): the last error a task raised.
    """

    def __init__(
        self,
        threaded: bool = True,
        on_error: Callable[[BaseException, str], None] | None = None,
    ):
        self.threaded = threaded
        self.on_error = on_error
        self.done = 0
        self.dropped = 0
        self.last_error: BaseException | None = None
        self._pending: list[tuple[str | None, Task]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None  # alive while tasks are waiting or running

    @property
    def pending(self) -> int:
        """Tasks waiting to run."""
        with self._cond:
            return len(self._pending)

    def submit(self, task: Task, *, latest: str | None = None) -> None:
        """Hand ``task`` over; with ``latest``, it replaces a waiting task of that name."""
        if not self.threaded:
            self._call(task)
            return
        with self._cond:
            if latest is not None:
                kept = [item for item in self._pending if item[0] != latest]
                self.dropped += len(self._pending) - len(kept)
                self._pending = kept
            self._pending.append((latest, task))
            if self._thread is None:  # the thread ends when the queue is empty: start one
                self._thread = threading.Thread(
                    target=self._work, name="seqwidgets-display", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every task handed over has run; return whether they all have.

        Called from a task itself (the worker's own thread) it returns at once: the worker
        cannot wait for itself.
        """
        if threading.current_thread() is self._thread:
            return not self._pending
        with self._cond:
            return self._cond.wait_for(lambda: self._thread is None, timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                _, task = self._pending.pop(0)
            self._call(task)

    def _call(self, task: Task) -> None:
        try:
            task()
        except Exception as exc:  # drawing never stops the worker nor reaches the sampler
            self.last_error = exc
            if self.on_error is not None:
                self.on_error(exc, traceback.format_exc())
        finally:
            self.done += 1
