"""Nothing a user made is lost: atomic writes, crash-safe saves, refusals to overwrite."""

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from seqwidgets import _io


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def names(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


def dead_pid() -> int:
    """The id of a process that has exited (for temporary names of a killed writer)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the atomic-write helper -------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_and_folders_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = _io.write_bytes(tmp_path / "a.bin", b"data")
    assert mode(path) == 0o666 & ~mask
    _io.write_file(tmp_path / "b.png", lambda tmp: tmp.write_bytes(b"png"))
    assert mode(tmp_path / "b.png") == 0o666 & ~mask
    folder = _io.replace_folder(tmp_path / "f", {"x.json": b"{}", "y.bin": b"1"})
    assert mode(folder) == 0o777 & ~mask
    assert {mode(p) for p in folder.iterdir()} == {0o666 & ~mask}


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = _io.write_bytes(tmp_path / "seq.gif", b"precious")

    def crash(tmp):
        tmp.write_bytes(b"GIF89a half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        _io.write_file(path, crash, overwrite=True)
    assert path.read_bytes() == b"precious"
    assert names(tmp_path) == ["seq.gif"]


@pytest.mark.parametrize("existing", [True, False])
def test_a_full_disk_never_leaves_an_empty_file_under_the_name(tmp_path, monkeypatch, existing):
    path = tmp_path / "latents.safetensors"
    if existing:
        path.write_bytes(b"previous")
    # A full disk that the writer did not report (delayed allocation): the file stays empty.
    with pytest.raises(OSError, match="nothing was written"):
        _io.write_file(path, lambda tmp: None, overwrite=True)
    # ... or that shows only when the data is flushed to the disk.
    real_fsync = os.fsync

    def full(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        _io.write_bytes(path, b"new content", overwrite=True)
    with pytest.raises(OSError, match="No space"):
        _io.replace_folder(tmp_path / "folder", {"a": b"1"})
    monkeypatch.undo()
    assert names(tmp_path) == (["latents.safetensors"] if existing else [])
    if existing:
        assert path.read_bytes() == b"previous"


def test_the_file_and_its_folder_are_synced_before_the_name_is_used(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        info = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    _io.write_bytes(tmp_path / "a.bin", b"12345")
    assert synced == [("file", 5), ("dir", synced[-1][1])]
    synced.clear()
    _io.replace_folder(tmp_path / "f", {"a": b"1", "b": b"22"})
    assert [kind for kind, _ in synced] == ["file", "file", "dir", "dir"]


def test_without_overwrite_a_file_that_appears_meanwhile_is_kept(tmp_path):
    path = tmp_path / "out.png"

    def racing_writer(tmp):
        path.write_bytes(b"someone else's")  # appears while we write
        tmp.write_bytes(b"ours")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        _io.write_file(path, racing_writer)
    assert path.read_bytes() == b"someone else's"
    assert names(tmp_path) == ["out.png"]
    with pytest.raises(FileExistsError):
        _io.write_bytes(path, b"x")
    with pytest.raises(IsADirectoryError):
        _io.write_bytes(tmp_path, b"x", overwrite=True)


def test_a_folder_replacement_that_fails_puts_the_previous_folder_back(tmp_path, monkeypatch):
    folder = _io.replace_folder(tmp_path / "s", {"manifest.json": b"old"})
    real_rename = os.rename

    def fail_second(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError(errno.EIO, "I/O error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_second)
    with pytest.raises(OSError, match="I/O error"):
        _io.replace_folder(folder, {"manifest.json": b"new"}, overwrite=True)
    monkeypatch.undo()
    assert names(tmp_path) == ["s"] and names(folder) == ["manifest.json"]
    assert (folder / "manifest.json").read_bytes() == b"old"
    _io.replace_folder(folder, {"manifest.json": b"new"}, overwrite=True)
    assert names(tmp_path) == ["s"] and (folder / "manifest.json").read_bytes() == b"new"
    with pytest.raises(ValueError, match="plain file name"):
        _io.replace_folder(folder, {"../escape": b""}, overwrite=True)


def test_recovery_and_orphan_cleanup_touch_only_what_a_dead_writer_left(tmp_path):
    pid = dead_pid()
    # A save killed between its two renames: only the old copy and the new temporary remain.
    old = tmp_path / f".s.{pid}-0123abcd.old"
    old.mkdir()
    (old / "manifest.json").write_bytes(b"previous")
    (tmp_path / f".s.{pid}-89abcdef.tmp").mkdir()
    (tmp_path / f".a.gif.{pid}-00000000.tmp.gif").write_bytes(b"half")
    alive = tmp_path / f".b.gif.{os.getpid()}-00000000.tmp.gif"  # a write still going on
    alive.write_bytes(b"in progress")
    (tmp_path / ".s.notes.tmp").write_bytes(b"a user's own file")  # not one of our names

    assert _io.remove_orphans(tmp_path) != []
    assert old.exists()  # kept while its target is missing: it is the only copy
    assert _io.recover_folder(tmp_path / "s") is True
    assert (tmp_path / "s" / "manifest.json").read_bytes() == b"previous"
    assert _io.recover_folder(tmp_path / "s") is False
    assert names(tmp_path) == [alive.name, ".s.notes.tmp", "s"]

    # Once the target is back, a leftover .old copy is an orphan like any other.
    stale = tmp_path / f".s.{pid}-fedcba98.old"
    stale.mkdir()
    assert _io.remove_orphans(tmp_path) == [stale]
    assert names(tmp_path) == [alive.name, ".s.notes.tmp", "s"]


def test_temporary_names_of_long_targets_stay_short(tmp_path):
    name = "x" * 240 + ".gif"
    path = _io.write_bytes(tmp_path / name, b"gif")
    assert names(tmp_path) == [name] and path.read_bytes() == b"gif"
