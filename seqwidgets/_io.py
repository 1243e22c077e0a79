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

Temporary names look like ``.NAME.<pid>-<token>.tmp`` (``.old`` for a folder moved aside). One
left behind by a killed process is removed by `remove_orphans`; `recover_folder` puts back a
folder whose replacement was interrupted.

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
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "recover_folder",
    "remove_orphans",
    "replace_folder",
    "write_bytes",
    "write_file",
]

# .NAME.<pid>-<8 hex>.tmp[.suffix] for files, .NAME.<pid>-<8 hex>.tmp / .old for folders.
_TEMP = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old)(\.[^./]*)?$")


def _stem(name: str) -> str:
    """The target's name as it appears in its temporary names (short enough for any system)."""
    if len(name) <= 96:
        return name
    # Long names: a prefix plus a hash of the whole name, so two long names never share it.
    return f"{name[:64]}~{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def _temp_name(target: Path, kind: str, suffix: str = "") -> Path:
    token = secrets.token_hex(4)
    return target.parent / f".{_stem(target.name)}.{os.getpid()}-{token}.{kind}{suffix}"


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


def write_file(
    path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Atomically create or replace ``path`` with what ``write(tmp)`` writes to ``tmp``.

    ``tmp`` is a path in the same folder with the same suffix as ``path`` (writers such as
    Pillow, imageio and ffmpeg pick the format from it). ``write`` may open and truncate it.

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
        `OSError`: from the writer or the disk; the target is then unchanged and no
            temporary file remains. A writer that wrote nothing is an `OSError` too: an empty
            file never replaces a target.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    if path.exists() and not overwrite:
        raise _exists_error(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, "tmp", path.suffix)
    _create(tmp)
    try:
        write(tmp)
        if _fsync_file(tmp) == 0:
            # A writer that silently wrote nothing (or a full disk it did not report): keep the
            # previous file rather than put an empty one under the name.
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
    `Session.save` call) renames the ``.old`` folder back.

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
    if path.exists() and not overwrite:
        raise _exists_error(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; name a folder to save into")
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return path


def _owner_alive(pid: int) -> bool:
    """Whether the process that made a temporary name may still be writing it."""
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


def _temporaries(folder: Path, name: str | None = None) -> list[tuple[Path, str, bool]]:
    """``(entry, kind, owner alive)`` for the temporary names in ``folder`` (of ``name`` only,
    when given)."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or (name is not None and match["stem"] != _stem(name)):
            continue
        found.append((Path(entry.path), match["kind"], _owner_alive(int(match["pid"]))))
    return found


def recover_folder(path: str | os.PathLike) -> bool:
    """Rename back a folder that `replace_folder` moved aside, if a crash left ``path`` missing.

    Returns whether a folder was put back. Nothing happens while ``path`` exists or while the
    process that moved it aside is still running.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return False
    candidates = [
        entry
        for entry, kind, alive in _temporaries(path.parent, path.name)
        if kind == "old" and not alive and entry.is_dir()
    ]
    if not candidates:
        return False
    newest = max(candidates, key=lambda entry: entry.stat().st_mtime_ns)
    os.rename(newest, path)
    _fsync_folder(path.parent)
    return True


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed seqwidgets processes left in
    ``folder``; returns what was removed. Those of running processes are kept, and so is an
    ``.old`` folder whose target is missing (`recover_folder` needs it)."""
    folder = Path(folder)
    removed = []
    for entry, kind, alive in _temporaries(folder):
        if alive:
            continue
        if kind == "old":
            stem = _TEMP.match(entry.name)["stem"]
            if not any(_stem(p.name) == stem for p in folder.iterdir() if p.is_dir()):
                continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # someone else removed it, or it is not ours to remove: leave it
        removed.append(entry)
    return removed
