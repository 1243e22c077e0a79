"""The latest request wins: live drafts are computed one at a time, and only the newest one.

A live studio asks for a new draft on every settings change. Work must never queue: a newer
request cancels the running one (its `CancelToken`, so it ends at the next model step) and
replaces any request still waiting, so a burst of changes costs at most the draft running when
it began plus the last one.

Example:
    >>> done = []
    >>> latest = LatestOnly(lambda request, cancel: done.append(request) or True, threaded=False)
    >>> latest.submit("a"); latest.submit("b")
    >>> done
    ['a', 'b']
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from seqwidgets.engine import CancelToken

__all__ = ["LatestOnly"]


class LatestOnly:
    """Run ``work(request, cancel)`` for the newest request only, on a thread of its own.

    Args:
        work: computes one request and returns whether it got to its end; it should end soon
            after ``cancel.cancelled`` turns true.
        threaded (`bool`): on a background thread (a new request cancels the running one), or
            on the caller's (Colab: each request runs to its end before `submit` returns).

    Attributes:
        started, finished (`int`): requests begun, and those whose work got to its end.
    """

    def __init__(self, work: Callable[[Any, CancelToken], bool], threaded: bool = True):
        self._work = work
        self.threaded = threaded
        self._lock = threading.Lock()
        self._pending: tuple[Any, float] | None = None  # (request, when it may start)
        self._cancel: CancelToken | None = None
        self._thread: threading.Thread | None = None
        self.started = 0
        self.finished = 0

    @property
    def busy(self) -> bool:
        """Whether a request is running or waiting."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def pending(self) -> bool:
        """Whether a request waits to start."""
        return self._pending is not None

    def submit(self, request: Any, delay: float = 0.0) -> None:
        """Make ``request`` the next one, starting ``delay`` seconds from now (a request
        submitted meanwhile replaces it and starts its own wait: a debounce for typing); the
        running one, if any, is cancelled."""
        if not self.threaded:
            self._run(request, CancelToken())
            return
        with self._lock:
            self._pending = (request, time.monotonic() + delay)
            if self._cancel is not None:
                self._cancel.cancel()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="seqwidgets-draft")
                self._thread.daemon = True
                self._thread.start()

    def cancel(self) -> bool:
        """Drop the waiting request and cancel the running one (it ends at its next step);
        return whether a waiting request was dropped (its work never ran)."""
        with self._lock:
            dropped = self._pending is not None
            self._pending = None
            if self._cancel is not None:
                self._cancel.cancel()
        return dropped

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing runs nor waits; return whether that is so."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return not self.busy

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._pending is None:
                    self._cancel = None
                    return
                request, start_at = self._pending
                wait = start_at - time.monotonic()
                if wait <= 0:
                    self._pending = None
                    cancel = self._cancel = CancelToken()
            if wait > 0:
                time.sleep(min(wait, 0.05))  # a newer request may move the start later
                continue
            self._run(request, cancel)

    def _run(self, request: Any, cancel: CancelToken) -> None:
        self.started += 1
        if self._work(request, cancel):
            self.finished += 1
