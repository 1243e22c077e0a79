"""The studio's drawing queue: pictures made off the sampling thread, drawn at its next step.

Each new frame costs a VAE decode (on the toy model about one model step: 5% of a 20-step
loop), its thumbnail and row of measures, then drawing (the thumbnail, the metrics strip, the
selection: canvas messages); each live preview costs the previewer's arithmetic, then drawing.
The making runs on a thread of its own, beside the sampling (on an accelerator, and on a CPU
whose cores torch's threads leave idle; on a CPU the decode itself goes on in a helper process,
`seqwidgets.decode_process`). The drawing is Python work that would only contend with the
sampler for Python's lock (tried: no gain), and widget updates belong on one thread (from
other threads they are unreliable on Colab), so it stays on the thread that draws: the
studio's job thread, which calls `draw_ready` at each model step and `drain` at the end of the
job.

A task is queued with an optional ``prepare`` (run on the worker's thread: the decode) and
drawn, in the order given, once its ``prepare`` is done. Two kinds of task:

* **kept** (each new frame): every one is drawn, in order, so no thumbnail is ever missing;
* **latest** (a live preview, the progress line): a newer task of the same name replaces one
  still waiting (and its ``prepare``, if not begun, is skipped), so a slow frame decode or a
  burst of steps never builds a queue: the newest picture wins.

Example:
    >>> queue = DisplayWorker()
    >>> shown = []
    >>> queue.submit(lambda: shown.append("frame 0"), prepare=lambda: shown.append("decoded"))
    >>> for step in range(5):
    ...     queue.submit(lambda step=step: shown.append(f"live {step}"), latest="live")
    >>> queue.drain()
    True
    >>> shown, queue.dropped
    (['decoded', 'frame 0', 'live 4'], 4)
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DisplayWorker"]

Task = Callable[[], object]


@dataclass(eq=False)
class _Entry:
    draw: Task
    latest: str | None
    ready: threading.Event = field(default_factory=threading.Event)
    replaced: bool = False  # a newer task of its name took its place: not prepared, not drawn


class DisplayWorker:
    """Runs ``prepare`` steps on a background thread and their drawing, in order, in the
    thread that calls `draw_ready` or `drain`.

    Args:
        threaded (`bool`, defaults to `True`): prepare on the worker's thread; ``False``
            (or ``None``, not decided yet): at once, in the thread that submits.
        on_error: ``on_error(exc, traceback_text)`` when a drawing raises (it is dropped, the
            queue goes on); a ``prepare`` that raises is ignored: its drawing repeats the work
            and reports the error.

    Attributes:
        drawn (`int`): tasks drawn. dropped (`int`): ``latest`` tasks replaced before drawn.
        last_error (`BaseException` or `None`): the last error a drawing raised.
    """

    def __init__(
        self,
        threaded: bool | None = True,
        on_error: Callable[[BaseException, str], None] | None = None,
    ):
        self.threaded = threaded
        self.on_error = on_error
        self.drawn = 0
        self.dropped = 0
        self.last_error: BaseException | None = None
        self._queue: list[_Entry] = []  # waiting to be drawn, in order
        self._prepares: list[tuple[Task, _Entry]] = []  # waiting for the worker's thread
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # alive while prepares are waiting

    @property
    def pending(self) -> int:
        """Tasks waiting to be drawn."""
        with self._lock:
            return len(self._queue)

    def submit(self, draw: Task, *, prepare: Task | None = None, latest: str | None = None):
        """Queue ``draw`` after ``prepare``; with ``latest``, it replaces a waiting task of
        that name. Drawn by the next `draw_ready` once ``prepare`` is done."""
        entry = _Entry(draw, latest)
        with self._lock:
            if latest is not None:
                kept = []
                for e in self._queue:
                    if e.latest == latest:
                        e.replaced = True
                    else:
                        kept.append(e)
                self.dropped += len(self._queue) - len(kept)
                self._queue = kept
            self._queue.append(entry)
            if prepare is not None and self.threaded:
                self._prepares.append((prepare, entry))
                if self._thread is None:  # the thread ends when it has nothing left: start one
                    self._thread = threading.Thread(
                        target=self._work, name="seqwidgets-display", daemon=True
                    )
                    self._thread.start()
                return
        if prepare is not None:
            _quietly(prepare)
        entry.ready.set()

    def draw_ready(self) -> int:
        """Draw the waiting tasks that are ready, in order, up to the first that is not (its
        decode still running); return how many were drawn. Never waits."""
        count = 0
        while True:
            with self._lock:
                if not self._queue or not self._queue[0].ready.is_set():
                    return count
                entry = self._queue.pop(0)
            self._draw(entry.draw)
            count += 1

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for every ``prepare`` and draw every task; return whether all were drawn
        (``False``: ``timeout`` seconds passed first)."""
        while True:
            with self._lock:
                if not self._queue:
                    return True
                entry = self._queue[0]
            if not entry.ready.wait(timeout):
                return False
            self.draw_ready()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._prepares:
                    self._thread = None
                    return
                prepare, entry = self._prepares.pop(0)
            if not entry.replaced:  # else its picture would never be drawn: skip the work
                _quietly(prepare)
            entry.ready.set()

    def _draw(self, draw: Task) -> None:
        try:
            draw()
        except Exception as exc:  # a drawing never stops the queue nor reaches the sampler
            self.last_error = exc
            if self.on_error is not None:
                self.on_error(exc, traceback.format_exc())
        finally:
            self.drawn += 1


def _quietly(prepare: Task) -> None:
    # A failure is not reported here: the drawing does the work again and reports it.
    with contextlib.suppress(Exception):
        prepare()
