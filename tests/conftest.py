import pytest
import torch

from seqwidgets.testing import tiny_pipeline

# Tiny models gain nothing from a second thread, and OpenMP threads spinning on a busy 2-core
# machine make each UNet call up to 100x slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipe():
    """One random tiny SD pipeline for the whole test session (read-only: do not modify)."""
    return tiny_pipeline("sd", seed=0)


@pytest.fixture(scope="session")
def tiny_xl_pipe():
    return tiny_pipeline("sdxl", seed=0)


class CallRecorder:
    """Counts a module's forward calls and keeps each call's positional/keyword arguments."""

    def __init__(self, module):
        self.calls = []
        self._handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append((args, kwargs))

    def remove(self):
        self._handle.remove()

    def __len__(self):
        return len(self.calls)


@pytest.fixture
def record():
    recorders = []

    def start(module):
        recorder = CallRecorder(module)
        recorders.append(recorder)
        return recorder

    yield start
    for recorder in recorders:
        recorder.remove()


@pytest.fixture
def full_disk(monkeypatch):
    """Call ``full_disk()`` to make every file's fsync fail with ENOSPC from then on, as on a
    disk that fills up while data is flushed (folders still sync); ``full_disk.undo()`` ends it."""
    import errno
    import os
    import stat

    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def start():
        monkeypatch.setattr(os, "fsync", fsync)

    start.undo = monkeypatch.undo
    return start
