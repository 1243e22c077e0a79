"""Atomic writes: the one way seqwidgets puts a user's file or folder on disk.

Every file seqwidgets writes for a user (sessions, exports, ``seqwidgets render`` outputs) goes
through `write_file` / `write_bytes`, and every session folder through `replace_folder`. Their
guarantees:

* **All or nothing.** The content is written to a temporary name in the target's own folder,
  flushed and ``fsync``-ed, then renamed over the target with `os.replace` and the folder is
  ``fsync``-ed. A crash, a kill or a full disk at any moment leaves either the previous file or
  the complete new one under the target name, never a truncated or empty one.
* **Nothing else is touched.** On any error the temporary file is removed and the previous file
  at the name is left as it was.
* **Ordinary permissions.** New files and folders get the permissions of any the user makes
  (``0o666`` / ``0o777`` less the umask), not the ``0o600`` of `tempfile.mkstemp`; a replaced
  one keeps its own, as when a file is written over in place.
* **No surprise replacement.** With ``overwrite=False`` a file that appears under the name while
  we write is not replaced (`FileExistsError`).
* **One writer at a time.** A write holds an exclusive lock on ``.NAME.seqwidgets-lock`` beside
  the target for its whole length (`target_lock`): two processes writing one name take turns,
  and the last to finish wins. The kernel releases the lock when its process dies, even on
  ``kill -9``, so "is the writer of this temporary name still running?" is asked of the lock,
  never of a process id (ids are reused, all the more in containers).

Temporary names look like ``.NAME.<pid>-<token>.tmp`` (``.old`` for a folder moved aside); NAME
is shortened by bytes, so any valid name has valid temporary names. One left behind by a killed
process is removed by `remove_orphans`; `recover_folder` puts back a folder whose replacement
was interrupted. Reading goes through `open_regular`, which refuses a FIFO, socket or device at
once instead of blocking on it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_bytes(folder / "notes.txt", b"first").name
    'notes.txt'
    >>> write_bytes(folder / "notes.txt", b"second", overwrite=True).read_bytes()
    b'second'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary file left
    ['notes.txt']
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; liveness falls back to process ids (see _Lock)
    fcntl = None

__all__ = [
    "NotRegularFileError",
    "check_regular",
    "open_regular",
    "read_regular",
    "recover_folder",
    "remove_orphans",
    "replace_folder",
    "target_lock",
    "write_bytes",
    "write_file",
]

# .NAME.<pid>-<8 hex>.tmp[.suffix] for files, .NAME.<pid>-<8 hex>.tmp / .old for folders, and
# .NAME.seqwidgets-lock for the lock. DOTALL + fullmatch: a name may hold any character, a
# newline included.
_TEMP = re.compile(
    r"\.(?P<stem>.+)\.(?:(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old)(\.[^./]*)?|(?P<lock>seqwidgets-lock))",
    re.DOTALL,
)
_LOCK = "seqwidgets-lock"

# Bytes of a name kept whole in temporary names; longer ones keep a prefix and a hash. With the
# pid, token, kind and a suffix of at most _MAX_SUFFIX bytes, a temporary name stays far below
# the 255 bytes most file systems allow.
_MAX_STEM = 96
_MAX_SUFFIX = 32

#: How long a write waits for another process's write of the same name before giving up.
LOCK_WAIT_SECONDS = 600.0


def _nbytes(text: str) -> int:
    # surrogatepass: a name from a badly encoded folder listing still has a length.
    return len(text.encode("utf-8", "surrogatepass"))


def _prefix(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` bytes, cut between characters."""
    used = 0
    for at, char in enumerate(text):
        used += _nbytes(char)
        if used > limit:
            return text[:at]
    return text


def _stem(name: str) -> str:
    """The target's name as it appears in its temporary names (short enough for any system:
    measured in bytes, since file systems limit a name's bytes, not its characters).

    Example:
        >>> _stem("demo.gif")
        'demo.gif'
        >>> len(_stem("霧" * 80).encode()) <= 96  # 240 bytes of name
        True
    """
    if _nbytes(name) <= _MAX_STEM:
        return name
    # Long names: a prefix plus a hash of the whole name, so two long names never share it.
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_prefix(name, 64)}~{digest}"


def _temp_name(target: Path, kind: str, suffix: str = "") -> Path:
    token = secrets.token_hex(4)
    if _nbytes(suffix) > _MAX_SUFFIX:
        suffix = ""  # no writer picks a format from a suffix that long
    return target.parent / f".{_stem(target.name)}.{os.getpid()}-{token}.{kind}{suffix}"


def _lock_name(target: Path) -> Path:
    return target.parent / f".{_stem(target.name)}.{_LOCK}"


# -- the lock a write holds ------------------------------------------------------------------


class _Lock:
    """An exclusive ``flock`` on a lock file, which its holder removes when it lets go.

    Whoever takes the lock checks that the file it locked still has the lock's name (a holder
    may have removed it meanwhile) and tries again if not; so at any moment at most one process
    holds the lock of a name, and a lock file that a killed process left is taken over by the
    next. Where ``flock`` is missing (Windows, some network mounts) nothing is locked, and
    `remove_orphans` and `recover_folder` fall back to the process id in a temporary name.
    """

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    @classmethod
    def take(cls, path: Path, *, wait: bool) -> _Lock | None:
        """The lock at ``path``; ``None`` when another process holds it and ``wait`` is False."""
        if fcntl is None:
            return cls(path, None)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.002
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not wait:
                    return None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path.parent}: another process has been writing "
                        f"{path.name[1 : -len(_LOCK) - 1]!r} for {LOCK_WAIT_SECONDS:g} s; "
                        "try again when it has finished"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 0.05)
                continue
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    # A file system without flock: the lock file means nothing here.
                    path.unlink(missing_ok=True)
                    return cls(path, None)
                raise
            if same_file(path, fd, follow_symlinks=False):
                return cls(path, fd)
            os.close(fd)  # the holder we waited for removed it: take the new one

    @property
    def real(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if same_file(self.path, self.fd, follow_symlinks=False):
                os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = None


def same_file(path: str | os.PathLike, fd: int, *, follow_symlinks: bool = True) -> bool:
    """Whether the name ``path`` still leads to the file or folder open as ``fd``."""
    try:
        named = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


_held = threading.local()  # lock path -> [_Lock, depth] of the locks this thread holds


def _held_locks() -> dict[str, list]:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


@contextmanager
def target_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of ``path`` (a file or folder seqwidgets writes): other processes
    and threads writing it wait until the block ends (at most `LOCK_WAIT_SECONDS`). The same
    thread may take it again inside the block.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "demo.safetensors"
        >>> with target_lock(path):
        ...     _ = write_bytes(path, b"1")  # takes the same lock again: no deadlock
        >>> sorted(p.name for p in path.parent.iterdir())  # the lock file goes with the lock
        ['demo.safetensors']
    """
    path = Path(path)
    lock_path = _lock_name(path)
    held = _held_locks()
    key = os.fspath(lock_path)
    if key in held:
        held[key][1] += 1
        try:
            yield
        finally:
            held[key][1] -= 1
        return
    try:
        lock = _Lock.take(lock_path, wait=True)
    except TimeoutError:
        raise
    except OSError as error:  # a read-only or missing folder: name the target, not the lock
        raise type(error)(error.errno, f"{path}: cannot write here ({error.strerror})") from None
    held[key] = [lock, 1]
    try:
        yield
    finally:
        del held[key]
        lock.release()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows has no folder handles to sync)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> int:
    """``fsync`` a written file; returns its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _create(path: Path) -> None:
    """Create an empty file with the user's ordinary permissions (0o666 less the umask)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _keep_mode(previous: Path, new: Path) -> None:
    """Give ``new`` the permissions of the ``previous`` file or folder it replaces, if any."""
    try:
        mode = stat.S_IMODE(os.stat(previous).st_mode)
    except FileNotFoundError:
        return
    os.chmod(new, mode)


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists; pass overwrite=True to replace it")


class NotRegularFileError(ValueError):
    """A path that should be a regular file is a FIFO, socket, device or folder."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str = "file") -> bool:
    """Whether ``path`` exists; a `ValueError` if it is neither a regular file nor a folder
    (opening a FIFO would block until someone writes to it)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False  # as Path.exists: a missing folder on the way, a NUL in the name
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise NotRegularFileError(
            f"{path} is {_kind(mode)}, not a {what}: refused without opening it"
        )
    return True


def open_regular(
    path: str | os.PathLike,
    what: str = "file",
    *,
    dir_fd: int | None = None,
    folder_ok: bool = False,
    shown: str | os.PathLike | None = None,
) -> int:
    """A read-only descriptor of ``path`` if it is a regular file (or a folder, with
    ``folder_ok``); a `ValueError` naming ``path`` otherwise, at once.

    The file is opened without blocking and checked on the descriptor itself, so a FIFO put
    under the name between a check and the open cannot hang the caller either.

    Raises:
        `FileNotFoundError`: nothing at ``path``. `NotRegularFileError` (a `ValueError`): a
            FIFO, socket, device (or a folder without ``folder_ok``).

    Example:
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> fifo = Path(tempfile.mkdtemp()) / "pipe"
        >>> os.mkfifo(fifo)
        >>> try:
        ...     open_regular(fifo, "workflow file")
        ... except ValueError as error:
        ...     print(str(error).split(": ")[1])
        a FIFO (named pipe), not a workflow file
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to block on
    flags = os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode)):
            if nonblocking and stat.S_ISREG(mode):
                os.set_blocking(fd, True)
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise NotRegularFileError(
        f"{shown or path}: {_kind(mode)}, not a {what}: refused without reading it"
    )


def read_regular(
    path: str | os.PathLike,
    what: str = "file",
    *,
    dir_fd: int | None = None,
    shown: str | os.PathLike | None = None,
) -> bytes:
    """The bytes of the regular file ``path``, read through one descriptor (a file replaced
    meanwhile is read whole, old or new, never a mix); see `open_regular`."""
    return read_fd(open_regular(path, what, dir_fd=dir_fd, shown=shown))


def read_image(path: str | os.PathLike, name: str):
    """The image file ``path`` as an RGB ``PIL.Image``, or one `ValueError` line naming the
    setting ``name``: not a regular file (a FIFO is refused unopened), not an image, or larger
    than Pillow's guard against decompression bombs (``PIL.Image.MAX_IMAGE_PIXELS``), which
    Pillow raises as a traceback or only warns about. A missing file is `FileNotFoundError`.

    Example:
        >>> read_image("no_such.png", "--init-image")
        Traceback (most recent call last):
        ...
        FileNotFoundError: --init-image: no_such.png does not exist
    """
    import io

    from PIL import Image

    if not check_regular(path, "image file"):
        raise FileNotFoundError(f"{name}: {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{name} {path}: a folder, not an image file")
    data = read_regular(path, "image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(
            f"{name} {path}: the image is larger than Pillow's limit of "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels (its guard against decompression bombs); "
            "use a smaller image"
        ) from None
    except OSError as error:  # not an image, truncated, unreadable
        raise ValueError(f"{name} {path}: cannot read the image ({error})") from None


def read_fd(fd: int) -> bytes:
    """Everything in the open file ``fd``, which is then closed."""
    with os.fdopen(fd, "rb") as file:
        return file.read()


def write_file(
    path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Atomically create or replace ``path`` with what ``write(tmp)`` writes to ``tmp``.

    ``tmp`` is a path in the same folder with the same suffix as ``path`` (writers such as
    Pillow, imageio and ffmpeg pick the format from it). ``write`` may open and truncate it.
    The write holds `target_lock` of ``path`` throughout.

    Args:
        path: the file to write; its folder is created if missing.
        write: called once with the temporary path; it must write the whole content there.
        overwrite (`bool`, defaults to `False`): replace an existing file. Without it an
            existing file, even one created by someone else while ``write`` runs, raises
            `FileExistsError` and is left as it is.

    Returns the path written.

    Raises:
        `FileExistsError`: ``path`` exists and ``overwrite`` is False.
        `IsADirectoryError`: ``path`` is a folder.
        `ValueError`: ``path`` is a FIFO, socket or device (never replaced).
        `OSError`: from the writer or the disk; the target is then unchanged and no
            temporary file remains. A writer that wrote nothing is an `OSError` too: an empty
            file never replaces a target.
    """
    path = Path(path)
    _check_file_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with target_lock(path):
        _check_file_target(path, overwrite)  # again: another writer may have finished meanwhile
        _remove_stale(path)
        tmp = _temp_name(path, "tmp", path.suffix)
        _create(tmp)
        try:
            write(tmp)
            if _fsync_file(tmp) == 0:
                # A writer that silently wrote nothing (or a full disk it did not report): keep
                # the previous file rather than put an empty one under the name.
                raise OSError(errno.EIO, f"{path}: nothing was written; the previous file is kept")
            if overwrite:
                _keep_mode(path, tmp)
                os.replace(tmp, path)
            else:
                _link_new(tmp, path)
            _fsync_folder(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _check_file_target(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    if check_regular(path) and not overwrite:
        raise _exists_error(path)


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it (a hard link fails if one does)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:
        # A file system without hard links (some FUSE / SMB mounts): check, then rename.
        if path.exists():
            raise _exists_error(path) from None
        os.replace(tmp, path)


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Atomically create or replace ``path`` with ``data``; see `write_file`.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = write_bytes(path, b"one")
        >>> try:
        ...     write_bytes(path, b"two")
        ... except FileExistsError:
        ...     print(path.read_bytes())
        b'one'
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            file.write(data)

    return write_file(path, write, overwrite=overwrite)


def replace_folder(
    path: str | os.PathLike,
    files: Mapping[str, bytes],
    *,
    overwrite: bool = False,
) -> Path:
    """Atomically create or replace the folder ``path`` so that it holds exactly ``files``.

    The new folder is written in full (each file and the folder itself ``fsync``-ed) under a
    temporary name first. A folder cannot be swapped in one step, so an existing one is renamed
    aside to ``.NAME.<pid>-<token>.old``, the new one renamed in, and the old one removed. If the
    process dies between the two renames, `recover_folder` (which `Session.load` and
    `Session.save` call) renames the ``.old`` folder back. The write holds `target_lock` of
    ``path`` throughout, so readers that find ``path`` missing wait for it, not report it gone.

    Args:
        path: the folder; its parent is created if missing.
        files (`Mapping[str, bytes]`): file name -> content (plain names, no sub-folders).
        overwrite (`bool`, defaults to `False`): replace an existing folder. Checking that it
            is one the caller may replace is the caller's job.

    Returns the path written.
    """
    path = Path(path)
    for name in files:
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{name!r} is not a plain file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    with target_lock(path):
        recover_folder(path)
        if check_regular(path, "folder") and not overwrite:
            raise _exists_error(path)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} is a file; name a folder to save into")
        _remove_stale(path)
        _replace_folder(path, files)
    return path


def _replace_folder(path: Path, files: Mapping[str, bytes]) -> None:
    tmp = _temp_name(path, "tmp")
    os.mkdir(tmp, 0o777)
    old = None
    try:
        for name, data in files.items():
            _create(tmp / name)
            with open(tmp / name, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        _fsync_folder(tmp)
        if path.exists():
            _keep_mode(path, tmp)
            old = _temp_name(path, "old")
            os.rename(path, old)
            _fsync_folder(path.parent)
        os.rename(tmp, path)
        _fsync_folder(path.parent)
    except BaseException:
        if old is not None and not path.exists():
            os.rename(old, path)  # put the previous folder back before reporting
            old = None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Where no lock can be taken: whether process ``pid`` runs (a reused id reads as alive,
    which keeps a temporary name longer, never loses one)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no cheap, safe liveness check: leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _temporaries(folder: Path) -> dict[str, list[tuple[Path, re.Match]]]:
    """The temporary names (and lock files) in ``folder``, by the stem of their target."""
    found: dict[str, list[tuple[Path, re.Match]]] = {}
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is not None:
            found.setdefault(match["stem"], []).append((Path(entry.path), match))
    return found


def _targets(folder: Path) -> dict[str, Path]:
    """Stem -> entry of ``folder``, for the entries that are not temporary names."""
    try:
        return {
            _stem(entry.name): Path(entry.path)
            for entry in os.scandir(folder)
            if _TEMP.fullmatch(entry.name) is None
        }
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _remove(entry: Path) -> bool:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    except OSError:
        return False  # someone else removed it, or it is not ours to remove: leave it
    return True


def _clean(stem: str, found: list[tuple[Path, re.Match]], target: Path | None) -> list[Path]:
    """Remove the temporary names of ``stem`` (its write lock held, so no writer is left to
    finish them). An ``.old`` folder stays unless a folder now has its target's name: until a
    complete write replaced it, it is the only copy of the user's previous folder."""
    removed = []
    for entry, match in found:
        if match["lock"]:
            continue  # released with the lock
        if match["kind"] == "old" and (target is None or not target.is_dir()):
            continue
        if _remove(entry):
            removed.append(entry)
    return removed


def _remove_stale(path: Path) -> None:
    """Remove what earlier, killed writes of ``path`` left (its lock is held by this thread)."""
    found = _temporaries(path.parent).get(_stem(path.name), [])
    if not _held_locks()[os.fspath(_lock_name(path))][0].real:
        found = _dead_only(found)
    target = path if path.exists() or path.is_symlink() else None
    _clean(_stem(path.name), found, target)


def _dead_only(found: list[tuple[Path, re.Match]]) -> list[tuple[Path, re.Match]]:
    """Without a lock to ask: the temporary names whose process id no process has now."""
    return [
        (entry, match)
        for entry, match in found
        if match["pid"] and not _pid_alive(int(match["pid"]))
    ]


def recover_folder(path: str | os.PathLike) -> bool:
    """Rename back a folder that `replace_folder` moved aside, if a crash left ``path`` missing.

    Returns whether a folder was put back. Nothing happens while ``path`` exists; a write of
    ``path`` in progress is waited for (its lock), so a folder it moved aside is never taken.
    In a folder where nothing can be written, nothing can be recovered: returns False.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return False
    key = os.fspath(_lock_name(path))
    if key in _held_locks():
        return _recover(path, _held_locks()[key][0])
    try:
        lock = _Lock.take(_lock_name(path), wait=True)
    except TimeoutError:
        raise
    except OSError:
        return False  # a read-only or missing folder: nothing to recover with
    try:
        return _recover(path, lock)
    finally:
        lock.release()


def _recover(path: Path, lock: _Lock) -> bool:
    if path.exists() or path.is_symlink():
        return False  # the write we waited for finished
    candidates = [
        entry
        for entry, match in _temporaries(path.parent).get(_stem(path.name), [])
        if match["kind"] == "old"
        and entry.is_dir()
        and (lock.real or not _pid_alive(int(match["pid"])))
    ]
    if not candidates:
        return False
    newest = max(candidates, key=lambda entry: entry.stat().st_mtime_ns)
    os.rename(newest, path)
    _fsync_folder(path.parent)
    return True


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed seqwidgets processes left in
    ``folder``; returns what was removed. Those of writes still running (their lock is held)
    are kept, and so is an ``.old`` folder whose target is missing (`recover_folder` needs
    it)."""
    folder = Path(folder)
    removed = []
    targets = _targets(folder)
    held = _held_locks()
    for stem, found in _temporaries(folder).items():
        lock_path = folder / f".{stem}.{_LOCK}"
        if os.fspath(lock_path) in held:
            continue  # this thread is writing it
        try:
            lock = _Lock.take(lock_path, wait=False)
        except OSError:
            continue  # cannot lock here (read-only?): cannot tell, so keep
        if lock is None:
            continue  # a write in progress
        try:
            if not lock.real:
                found = _dead_only(found)
            removed += _clean(stem, found, targets.get(stem))
        finally:
            lock.release()
    return removed
