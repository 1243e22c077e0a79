"""Nothing a user made is lost: atomic writes, crash-safe saves, refusals to overwrite."""

import builtins
import errno
import fcntl
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import seqwidgets as sw
from seqwidgets import _io, session_io


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


_WRITER = """
import sys, time
from pathlib import Path
from seqwidgets import _io
target = Path(sys.argv[1])
with _io.target_lock(target):
    tmp = _io._temp_name(target, "tmp", target.suffix)
    tmp.write_bytes(b"in progress")
    print(tmp.name, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def writer():
    """``writer(target)`` starts a process that is writing ``target`` (it holds its lock and
    has made a temporary file) and returns ``(process, temporary name)``; ``kill -9`` it to
    play a crash. Every process is killed at the end."""
    started = []

    def start(target: Path) -> tuple[subprocess.Popen, str]:
        env = dict(os.environ, PYTHONPATH=str(Path(sw.__file__).parents[1]))
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, env=env
        )
        started.append(child)
        name = child.stdout.readline().decode().strip()
        assert name, "the writer did not start"
        return child, name

    yield start
    for child in started:
        child.kill()
        child.wait()


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


def test_a_replaced_file_or_folder_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    private = _io.write_bytes(tmp_path / "private.safetensors", b"old")
    os.chmod(private, 0o600)
    _io.write_bytes(private, b"new", overwrite=True)
    assert mode(private) == 0o600 and private.read_bytes() == b"new"
    folder = _io.replace_folder(tmp_path / "f", {"a": b"1"})
    os.chmod(folder, 0o700)
    _io.replace_folder(folder, {"a": b"2"}, overwrite=True)
    assert mode(folder) == 0o700


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
def test_a_full_disk_never_leaves_an_empty_file_under_the_name(tmp_path, full_disk, existing):
    path = tmp_path / "latents.safetensors"
    if existing:
        path.write_bytes(b"previous")
    # A full disk that the writer did not report (delayed allocation): the file stays empty.
    with pytest.raises(OSError, match="nothing was written"):
        _io.write_file(path, lambda tmp: None, overwrite=True)
    # ... or that shows only when the data is flushed to the disk.
    full_disk()
    with pytest.raises(OSError, match="No space"):
        _io.write_bytes(path, b"new content", overwrite=True)
    with pytest.raises(OSError, match="No space"):
        _io.replace_folder(tmp_path / "folder", {"a": b"1"})
    full_disk.undo()
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


def test_recovery_and_orphan_cleanup_touch_only_what_a_dead_writer_left(tmp_path, writer):
    pid = dead_pid()
    # A save killed between its two renames: only the old copy and the new temporary remain.
    old = tmp_path / f".s.{pid}-0123abcd.old"
    old.mkdir()
    (old / "manifest.json").write_bytes(b"previous")
    (tmp_path / f".s.{pid}-89abcdef.tmp").mkdir()
    (tmp_path / f".a.gif.{pid}-00000000.tmp.gif").write_bytes(b"half")
    child, alive = writer(tmp_path / "b.gif")  # a write still going on
    alive = tmp_path / alive
    (tmp_path / ".s.notes.tmp").write_bytes(b"a user's own file")  # not one of our names

    assert _io.remove_orphans(tmp_path) != []
    assert old.exists()  # kept while its target is missing: it is the only copy
    assert _io.recover_folder(tmp_path / "s") is True
    assert (tmp_path / "s" / "manifest.json").read_bytes() == b"previous"
    assert _io.recover_folder(tmp_path / "s") is False
    assert names(tmp_path) == [alive.name, ".b.gif.seqwidgets-lock", ".s.notes.tmp", "s"]

    # Once the target is back, a leftover .old copy is an orphan like any other.
    stale = tmp_path / f".s.{pid}-fedcba98.old"
    stale.mkdir()
    assert _io.remove_orphans(tmp_path) == [stale]
    assert names(tmp_path) == [alive.name, ".b.gif.seqwidgets-lock", ".s.notes.tmp", "s"]

    # kill -9 frees the writer's lock: what it left is an orphan now, and its lock file goes too.
    child.kill()
    child.wait()
    assert _io.remove_orphans(tmp_path) == [alive]
    assert names(tmp_path) == [".s.notes.tmp", "s"]


def test_temporary_names_of_long_targets_stay_short(tmp_path):
    name = "x" * 240 + ".gif"
    path = _io.write_bytes(tmp_path / name, b"gif")
    assert names(tmp_path) == [name] and path.read_bytes() == b"gif"


# -- sessions ----------------------------------------------------------------------------------


FAST = dict(steps=1, positive_seq="0: a red circle")


@pytest.fixture(scope="module")
def sessions(tiny_pipe):
    """Two different sessions: the one on disk and the one saved over it."""
    old = sw.Session(tiny_pipe)
    old.run(sw.SequenceParams(**FAST, sequence_loop_count=2, seed=1), name="old")
    new = sw.Session(tiny_pipe)
    root = new.run(sw.SequenceParams(**FAST, sequence_loop_count=3, seed=2), name="new")
    new.branch((root, 0), seed=9)
    return old, new


def same(a: sw.Session, b: sw.Session) -> bool:
    if [(x.id, x.name) for x in a.branches] != [(x.id, x.name) for x in b.branches]:
        return False
    return all(
        torch.equal(x.frames[i].latent, y.frames[i].latent)
        for x, y in zip(a.branches, b.branches, strict=True)
        for i in x.own_indices
    )


def header_length(path: Path) -> int:
    if path.is_dir():
        path = path / "latents.safetensors"
    with open(path, "rb") as file:
        return struct.unpack("<Q", file.read(8))[0]


def test_every_header_length_saves_and_loads_back(tiny_pipe, tmp_path):
    """safetensors starts with its header length (u64, little-endian, a multiple of 8): a low
    byte of 0x80 is the pickle opcode PROTO, and such saves must still load."""
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST, sequence_loop_count=1, denoise_seq=0.0))
    seen = set()
    # One file: each 8 more characters of the name move the header by 8 bytes.
    for n in range(0, 256, 8):
        root.name = "n" * n
        path = session.save(tmp_path / f"{n}.safetensors")
        seen.add(header_length(path) % 256)
        assert same(sw.Session.load(path, tiny_pipe), session)
    assert seen == set(range(0, 256, 8))
    # A folder: its latents file has no manifest, so grow the run (denoise 0 costs no model
    # call) until its header has shown every low byte, 0x80 included.
    seen.clear()
    for loops in range(1, 120):
        if loops > 1:
            session.extend(root, 1)
        tensors = session_io.snapshot(session.branches, 2, session.sampler)[1]
        from safetensors.torch import save

        low = struct.unpack("<Q", save(tensors)[:8])[0] % 256
        if low in seen:
            continue
        seen.add(low)
        path = session.save(tmp_path / f"folder{loops}")
        assert header_length(path) % 256 == low
        assert same(sw.Session.load(path, tiny_pipe), session)
        if 0x80 in seen and len(seen) >= 16:
            break
    assert 0x80 in seen


# Every call that changes the file system, and the calls that write data (and flock).
_FS_CALLS = ("mkdir", "open", "rename", "replace", "link", "unlink", "rmdir", "fsync")


def save_killed_after(session: sw.Session, path: Path, calls: int) -> int:
    """Save ``session`` over ``path`` in a child process killed (SIGKILL) right after its
    ``calls``-th file-system call; returns the child's exit code (0: the save finished)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            count = 0

            def counted(function):
                def call(*args, **kwargs):
                    nonlocal count
                    count += 1
                    if count > calls:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)

                return call

            for name in _FS_CALLS:
                setattr(os, name, counted(getattr(os, name)))
            builtins.open = counted(builtins.open)
            fcntl.flock = counted(fcntl.flock)  # taking the save's lock, too
            session.save(path, overwrite=True)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("name", ["s.safetensors", "s"])
def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_session(
    sessions, tiny_pipe, tmp_path, name
):
    old, new = sessions
    path = tmp_path / name
    outcomes = []
    for calls in range(200):
        for entry in tmp_path.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        old.save(path)
        code = save_killed_after(new, path, calls)
        assert code in (0, -signal.SIGKILL), code
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = sw.Session.load(path, tiny_pipe)
        outcome = "new" if same(loaded, new) else "old" if same(loaded, old) else "neither"
        outcomes.append(outcome)
        assert outcome != "neither", f"killed after call {calls}"
        # The next save cleans up whatever the killed one left.
        new.save(path, overwrite=True)
        assert names(tmp_path) == [name], f"killed after call {calls}"
        if code == 0:
            break
    else:
        pytest.fail("the save never finished")
    assert outcomes[-1] == "new" and outcomes[0] == "old" and len(outcomes) > 5


def test_overwrite_replaces_only_a_seqwidgets_session(sessions, tmp_path):
    from safetensors.torch import save_file

    old, _ = sessions
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("a user's work")
    with pytest.raises(FileExistsError, match="not a seqwidgets session.*notes.txt"):
        old.save(project, overwrite=True)
    assert names(project) == ["notes.txt"]

    session_folder = old.save(tmp_path / "session")
    (session_folder / "notes.txt").write_text("added by hand")
    with pytest.raises(FileExistsError, match="notes.txt"):
        old.save(session_folder, overwrite=True)
    assert "notes.txt" in names(session_folder)

    checkpoint = tmp_path / "model.safetensors"
    save_file({"conv.weight": torch.zeros(2)}, checkpoint)
    before = checkpoint.read_bytes()
    with pytest.raises(FileExistsError, match="checkpoint"):
        old.save(checkpoint, overwrite=True)
    assert checkpoint.read_bytes() == before

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(FileExistsError, match="manifest.json"):
        old.save(fake, overwrite=True)

    (tmp_path / "empty").mkdir()
    old.save(tmp_path / "empty", overwrite=True)  # an empty folder holds nothing to lose
    old.save(old.save(tmp_path / "again.safetensors"), overwrite=True)


def test_saves_and_exports_follow_the_umask(sessions, tmp_path, umask):
    umask(0o022)
    old, _ = sessions
    root = old.branches[0]
    for path in (
        old.save(tmp_path / "s.safetensors"),
        old.export(root, tmp_path / "a.gif"),
        old.export(root, tmp_path / "sheet.png", format="contact_sheet"),
        *old.export(root, tmp_path / "frames", format="png"),
    ):
        assert mode(path) == 0o644, path
    folder = old.save(tmp_path / "folder")
    assert mode(folder) == 0o755 and {mode(p) for p in folder.iterdir()} == {0o644}


def test_exports_clean_what_a_killed_export_left(sessions, tmp_path):
    old, _ = sessions
    orphan = tmp_path / f".a.gif.{dead_pid()}-0badc0de.tmp.gif"
    orphan.write_bytes(b"half a gif")
    old.export(old.branches[0], tmp_path / "a.gif")
    assert names(tmp_path) == ["a.gif"]


def test_a_rerun_of_loop_zero_at_another_size_saves_and_loads_back(tiny_pipe, tmp_path):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST, sequence_loop_count=2))
    wide = session.rerun((root, 0), width=80)
    assert wide.frames[0].latent.shape[-1] == 10
    for name in ("s.safetensors", "s"):
        loaded = sw.Session.load(session.save(tmp_path / name), tiny_pipe)
        assert same(loaded, session)
