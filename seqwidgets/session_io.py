"""The session file format: what `Session.save` writes and `Session.load` checks and reads.

A saved session is a JSON manifest (settings, the tree of branches, per-frame metadata, the
pipeline it was made with, a format version and a SHA-256 checksum over manifest and tensors)
plus safetensors for the latents, in one of two layouts:

* one ``NAME.safetensors`` file holding the tensors, with the manifest in its metadata;
* a folder holding ``manifest.json`` and ``latents.safetensors``.

Files are written through `seqwidgets._io`: a save is all or nothing even when the process is
killed, saves of one path take turns under its lock, and a folder whose replacement was
interrupted is put back by the next load or save. Only what is recognisably a seqwidgets
session is ever replaced. Nothing is ever unpickled. A read takes each file through one
descriptor, so it sees one complete session even while another process saves over it.

Reading checks everything before a branch is built, and every problem is a `ValueError` naming
the file and the field (or `FileNotFoundError` for a missing path).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import seqwidgets as sw
    >>> session = sw.Session(sw.testing.tiny_pipeline())
    >>> _ = session.run(sw.SequenceParams(steps=1, sequence_loop_count=2, positive_seq="0: a"))
    >>> path = session.save(Path(tempfile.mkdtemp()) / "demo.safetensors")
    >>> manifest = read_manifest(path)
    >>> manifest["format"], manifest["version"], len(manifest["branches"])
    ('seqwidgets.session', 1, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import _io
from ._version import __version__
from .engine import Frame, SequenceSampler
from .families import detect_family
from .models import lora_adapters
from .params import SequenceParams, in_range, lone_surrogate, short_repr

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SavedBranch",
    "check_text",
    "pipeline_record",
    "read",
    "read_manifest",
    "snapshot",
    "write",
]

#: The ``format`` field of a saved session's manifest.
FORMAT = "seqwidgets.session"
#: The manifest version this module writes and the only one it reads.
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
LATENTS = "latents.safetensors"
METADATA_KEY = "seqwidgets.session"
#: The largest safetensors header (bytes) the safetensors library writes or reads; a
#: ``.safetensors`` session's manifest lives in it, so a larger one needs the folder form.
MAX_HEADER = 100_000_000
#: Branch ids (and ``next_id``) a session file may hold: checked on save and on load alike.
MAX_BRANCH_ID = 2**62
#: The tensor dtypes a session stores; other floating types (float8) are stored as float32.
STORED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# How often a read starts again when another process replaced the session while it was read.
_READ_ATTEMPTS = 20


class SavedBranch(NamedTuple):
    """One branch as read from a file; ``parent`` is the id of an earlier branch or ``None``."""

    id: int
    name: str
    params: SequenceParams
    parent: int | None
    fork: int
    frames: dict[int, Frame]
    initial: torch.Tensor | None


# -- the pipeline a session was made with ------------------------------------------------------


def pipeline_record(sampler: SequenceSampler) -> dict[str, Any]:
    """What a manifest records of the sampler's pipeline: its class, latent channels, dtype,
    VAE scale factor, default image size, LoRA adapters and a cheap fingerprint of the
    denoiser's weights.

    The fingerprint hashes every weight's name, shape and first four values (one transfer from
    the device, milliseconds even for SDXL): another checkpoint of the same architecture, or a
    LoRA fused into it, almost surely changes it.
    """
    pipe = sampler.pipe
    denoiser = detect_family(pipe).denoiser_network(pipe)
    h = hashlib.sha256()
    heads = []
    for name, weight in denoiser.state_dict().items():
        h.update(f"{name}|{list(weight.shape)}|".encode())
        heads.append(weight.detach().reshape(-1)[:4].float())
    if heads:
        h.update(torch.cat(heads).cpu().numpy().tobytes())
    default = SequenceParams()  # width / height None: the pipeline's default size
    channels = sampler.latent_shape(default)[1]
    return {
        "class": type(pipe).__name__,
        "latent_channels": int(channels),
        "dtype": str(denoiser.dtype).removeprefix("torch."),
        "vae_scale_factor": int(pipe.vae_scale_factor),
        "image_size": list(sampler.image_size(default)),
        "fingerprint": h.hexdigest()[:32],
        # LoRA adapters as load_pipeline applied them: "source @ scale".
        "lora": [f"{source} @ {scale:g}" for _, source, scale in lora_adapters(pipe)],
    }


# -- writing -----------------------------------------------------------------------------------


def check_text(value: Any, where: str) -> str:
    """``value`` if it is a `str` that can be written as UTF-8, else a `ValueError` naming
    ``where`` (a lone surrogate, e.g. from a badly decoded file, cannot be saved).

    Example:
        >>> check_text("a red circle", "name")
        'a red circle'
        >>> try:
        ...     check_text("bad \\udc80", "branch 3 name")
        ... except ValueError as error:
        ...     print(error)
        branch 3 name: 'bad \\udc80' is not valid Unicode text (a lone surrogate at character 4)
    """
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a str, got {type(value).__name__} {short_repr(value)}")
    at = lone_surrogate(value)
    if at is not None:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise ValueError(
            f"{where}: {short_repr(shown)} is not valid Unicode text (a lone surrogate at character "
            f"{at})"
        )
    return value


def snapshot(
    branches, next_id: int, sampler: SequenceSampler
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The manifest (without checksum) and tensors of ``branches`` (`Branch` objects) made
    with ``sampler``."""

    tensors: dict[str, torch.Tensor] = {}
    entries = []
    _check_id(next_id, "next_id", MAX_BRANCH_ID)
    for branch in branches:
        _check_id(branch.id, f"branch {branch.id}: id", MAX_BRANCH_ID - 1)
        check_text(branch.name, f"branch {branch.id} name")
        sigma_keys: dict[int, str] = {}
        frames = []
        for index in branch.own_indices:
            frame = branch.frames[index]
            key = sigma_keys.get(id(frame.sigmas))
            if key is None:
                key = sigma_keys[id(frame.sigmas)] = f"sigmas/{branch.id}/{len(sigma_keys)}"
                tensors[key] = _stored(frame.sigmas)
            tensors[f"latent/{branch.id}/{index}"] = _stored(frame.latent)
            frames.append(
                {
                    "index": index,
                    "seed": frame.seed,
                    "denoise": frame.denoise,
                    "positive": [list(item) for item in frame.positive],
                    "negative": [list(item) for item in frame.negative],
                    "sigmas": key,
                    "timings": dict(frame.timings),
                }
            )
        if branch.initial is not None:
            tensors[f"initial/{branch.id}"] = _stored(branch.initial)
        entries.append(
            {
                "id": branch.id,
                "name": branch.name,
                "parent": None if branch.parent is None else branch.parent.id,
                "fork": branch.fork,
                "params": branch.params.to_dict(),
                "initial": branch.initial is not None,
                "frames": frames,
            }
        )
    _unshare(tensors)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "written_by": f"seqwidgets {__version__}",
        "pipeline": pipeline_record(sampler),
        "next_id": next_id,
        "branches": entries,
    }
    return manifest, tensors


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a session stores it: on the CPU, contiguous, and float8 widened to float32
    (exactly: every float8 value is a float32 value). A file of float8 latents could be
    written, but torch cannot check them for NaN on load, and `Session.load` casts latents to
    the pipeline's dtype anyway, so nothing is gained by keeping them narrow.

    Example:
        >>> _stored(torch.ones(2, dtype=torch.float8_e4m3fn)).dtype
        torch.float32
    """
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in STORED_DTYPES:
        tensor = tensor.float()
    return tensor.contiguous()


def _check_id(value: Any, where: str, high: int) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise ValueError(f"{where}: expected an integer from 0 to {high}, got {short_repr(value)}")
    return value


def _unshare(tensors: dict[str, torch.Tensor]) -> None:
    """Copy tensors that share memory with an earlier one: safetensors refuses to save those,
    and a loop at denoise 0 returns its input latent itself."""
    seen: set[int] = set()
    for name, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensors[name] = tensor.clone()
        else:
            seen.add(pointer)


def _digest(manifest: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the canonical manifest (without its checksum) and every tensor."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False)
    # surrogatepass: a damaged name must reach the check that names it, not fail here.
    h = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        h.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def seal(manifest: dict, tensors: dict[str, torch.Tensor]) -> str:
    """The manifest as JSON text with its checksum."""
    manifest = dict(manifest, checksum=_digest(manifest, tensors))
    return json.dumps(manifest, ensure_ascii=False, indent=1)


def write(
    path: str | os.PathLike,
    manifest: dict,
    tensors: dict[str, torch.Tensor],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a session: one file when ``path`` ends in ``.safetensors``, else a folder.

    An existing path is replaced only with ``overwrite`` and only if it is a seqwidgets session
    (a folder holding exactly a session's two files, or an empty folder). Temporary files
    that a killed save left beside ``path`` are removed first. The whole save holds the write
    lock of ``path`` (`_io.target_lock`): saves of one path by several processes take turns, and
    the last to finish wins.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save as st_save

    path = Path(path)
    text = seal(manifest, tensors)
    if path.suffix == ".safetensors":
        try:
            data = st_save(tensors, metadata={METADATA_KEY: text})
        except SafetensorError as error:
            if "too large" not in str(error):
                raise
            size = len(text.encode("utf-8")) / 1e6
            raise ValueError(
                f"{path}: the session's manifest ({size:.0f} MB) is over the "
                f"{MAX_HEADER / 1e6:.0f} MB a .safetensors file's header can hold; save it as a "
                f"folder instead (a path without .safetensors, e.g. {path.with_suffix('')})"
            ) from None
        files = None
    else:
        files = {MANIFEST: text.encode("utf-8"), LATENTS: st_save(tensors)}
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    with _io.target_lock(path):
        _io.recover_folder(path)
        _check_target(path, overwrite)
        _io.remove_orphans(path.parent)
        if files is None:
            return _io.write_bytes(path, data, overwrite=overwrite)
        return _io.replace_folder(path, files, overwrite=overwrite)


def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace anything but a seqwidgets session (and that only with overwrite)."""
    if not _io.check_regular(path, "session file or folder") and not path.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    refuse = f"{path} exists and is not a seqwidgets session: it is not replaced, even with "
    if path.suffix == ".safetensors":
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; save a .safetensors file elsewhere")
        if not _is_session_file(path):
            raise FileExistsError(refuse + "overwrite=True (a model checkpoint?)")
        return
    if not path.is_dir():
        raise NotADirectoryError(
            f"{path} is a file; name a .safetensors file or a folder to save into"
        )
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    others = [name for name in entries if name not in (MANIFEST, LATENTS)]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise FileExistsError(
            refuse + f"overwrite=True (it holds {shown}); choose a new folder name"
        )

    # Exactly the two files a save writes, as plain files, with a session's manifest: a folder
    # named latents.safetensors (a user's, with files in it) must not be taken for ours.
    def plain(name: str) -> bool:
        return name in entries and stat.S_ISREG(os.lstat(path / name).st_mode)

    try:
        manifest = json.loads(_io.read_regular(path / MANIFEST)) if plain(MANIFEST) else None
    except (OSError, ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FileExistsError(refuse + f"overwrite=True ({MANIFEST} is not a session's)")
    if not plain(LATENTS) or _header(path / LATENTS) is None:
        raise FileExistsError(
            refuse + f"overwrite=True ({LATENTS} is not a session's safetensors file)"
        )


def _header(path: Path) -> dict | None:
    """The JSON header of the safetensors file ``path`` (read alone), or None if it has none."""
    try:
        with os.fdopen(_io.open_regular(path), "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError, RecursionError, struct.error):
        return None
    return header if isinstance(header, dict) else None


def _is_session_file(path: Path) -> bool:
    """Whether ``path`` is a safetensors file with a seqwidgets manifest (the header only)."""
    header = _header(path)
    try:
        text = header["__metadata__"][METADATA_KEY]
        return json.loads(text).get("format") == FORMAT
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return False


# -- reading -----------------------------------------------------------------------------------

_PICKLE_HINT = (
    "it looks like a pickle or torch.save file; seqwidgets sessions never use pickle, "
    "so it is refused without being unpickled"
)


def _looks_like_pickle(head: bytes) -> bool:
    # Pickle protocol 2+ starts with PROTO (0x80) and its version; torch.save writes a zip of
    # pickles. Asked only once a file failed to parse as what it should be: a safetensors
    # header length may start with 0x80 too.
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[
        :4
    ] == b"PK\x03\x04"


def _open_safetensors(
    data: bytes, where: str | os.PathLike
) -> tuple[dict[str, str] | None, dict[str, torch.Tensor]]:
    """Metadata and tensors of the safetensors file whose bytes are ``data``."""
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as error:  # SafetensorError and friends
        if _looks_like_pickle(data[:8]):
            raise ValueError(f"{where}: {_PICKLE_HINT}") from None
        if len(data) < 8:
            raise ValueError(
                f"{where}: not a safetensors file (only {len(data)} bytes: truncated?)"
            ) from None
        raise ValueError(
            f"{where}: not a valid safetensors file (truncated or damaged?): {error}"
        ) from None
    # safetensors has checked the header: its length and JSON are sound.
    (size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + size]).get("__metadata__")
    return metadata, tensors


def _parse_json(raw: bytes | str, where: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{where}: the manifest is nested too deeply to be a session") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, too many digits
        if isinstance(raw, bytes) and _looks_like_pickle(raw[:8]):
            raise ValueError(f"{where}: {_PICKLE_HINT}") from None
        raise ValueError(f"{where}: the manifest is not valid JSON: {error}") from None


class _Replaced(Exception):
    """The session was replaced by another process while it was being read."""


def _read_files(path: Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """Manifest, tensors and the name to put in messages, checked against their checksum.

    Each file is read through one descriptor, and a folder's two files through the folder
    opened once, so a save by another process meanwhile gives the old session or the new one,
    never a mix; if the save moved the folder away under the read, the read starts again.
    """
    if "\0" in os.fspath(path):
        raise FileNotFoundError(
            f"{short_repr(str(path))}: no such session file or folder (no name holds a NUL)"
        )
    for _ in range(_READ_ATTEMPTS):
        try:
            manifest, tensors, where = _read_once(path)
            break
        except _Replaced:
            continue
    else:
        raise ValueError(
            f"{path}: replaced by another process {_READ_ATTEMPTS} times while being read; "
            "load it when it is no longer being saved"
        )
    return _check_manifest(manifest, tensors, where)


def _read_once(path: Path) -> tuple[Any, dict[str, torch.Tensor], str]:
    try:
        # Puts back a folder whose save was killed; waits for a save in progress (its lock).
        _io.recover_folder(path)
        fd = _io.open_regular(path, "session file or folder", folder_ok=True)
    except FileNotFoundError:
        if _io.recover_folder(path) or path.exists():
            raise _Replaced from None  # a save moved it aside and back meanwhile
        raise FileNotFoundError(f"{path}: no such session file or folder") from None
    except OSError as error:  # a name too long for a path, a loop of links
        raise ValueError(
            f"{short_repr(str(path))}: not a usable session path ({error.strerror})"
        ) from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        where = str(path)
        metadata, tensors = _open_safetensors(_io.read_fd(fd), where)
        if not metadata or METADATA_KEY not in metadata:
            raise ValueError(
                f"{path}: a safetensors file but not a seqwidgets session (no "
                f"{METADATA_KEY!r} metadata; a model checkpoint?)"
            )
        return _parse_json(metadata[METADATA_KEY], where), tensors, where
    try:
        manifest_fd, latents_fd = _open_parts(path, fd)
    finally:
        os.close(fd)
    where = str(path / MANIFEST)
    manifest = _parse_json(_io.read_fd(manifest_fd), where)
    _, tensors = _open_safetensors(_io.read_fd(latents_fd), path / LATENTS)
    return manifest, tensors, where


def _open_parts(path: Path, folder_fd: int) -> tuple[int, int]:
    """Descriptors of the folder's manifest and latents, opened in the folder ``folder_fd``
    (the folder as it was when opened, even if a save has renamed it since)."""
    opened: list[int] = []
    try:
        for name in (MANIFEST, LATENTS):
            what = "session file (manifest or latents)"
            try:
                if os.open in os.supports_dir_fd:
                    opened.append(_io.open_regular(name, what, dir_fd=folder_fd, shown=path / name))
                else:
                    opened.append(_io.open_regular(path / name, what))
            except FileNotFoundError:
                if not _io.same_file(path, folder_fd):
                    raise _Replaced from None  # a save removed it: read the new one
                raise ValueError(
                    f"{path}: not a seqwidgets session folder ({name} missing)"
                ) from None
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return opened[0], opened[1]


def _check_manifest(
    manifest: Any, tensors: dict[str, torch.Tensor], where: str
) -> tuple[dict, dict[str, torch.Tensor], str]:
    """``manifest`` if it is a seqwidgets manifest of the version read here whose checksum
    matches; else a `ValueError` naming ``where``."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(
            f"{where}: not a seqwidgets session (format {short_repr(found)}, expected {FORMAT!r})"
        )
    version = manifest.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        newer = type(version) is int and version > FORMAT_VERSION
        raise ValueError(
            f"{where}: session format version {short_repr(version)}; this seqwidgets reads version "
            f"{FORMAT_VERSION}" + (" (saved by a newer seqwidgets?)" if newer else "")
        )
    try:
        intact = manifest.get("checksum") == _digest(manifest, tensors)
    except (RecursionError, ValueError):
        intact = False
    if not intact:
        raise ValueError(
            f"{where}: checksum mismatch: the session was modified or damaged after it was "
            "saved (manifest or latents differ from what was written)"
        )
    return manifest, tensors, where


def read_manifest(path: str | os.PathLike) -> dict:
    """The checked manifest of a saved session (format, version and checksum verified)."""
    return _read_files(Path(path))[0]


def read(path: str | os.PathLike, sampler: SequenceSampler) -> tuple[list[SavedBranch], int]:
    """The branches of a saved session and the next free branch id, checked against the
    sampler's pipeline (``pipe`` below).

    Raises:
        `ValueError`: naming the file and the field, for anything that is not a complete,
            consistent session these latents can continue on ``pipe``.
        `FileNotFoundError`: nothing at ``path``.

    Warns (`UserWarning`) when the session was saved with another pipeline class or other
    weights: it loads, but new loops will not continue the saved ones exactly.
    """
    manifest, tensors, where = _read_files(Path(path))
    record = _check_pipeline(manifest.get("pipeline"), sampler, where)
    return _Builder(manifest, tensors, sampler.pipe, record, where).build()


def _check_pipeline(saved: Any, sampler: SequenceSampler, where: str) -> dict:
    """The saved pipeline record, checked for shape and against the sampler's pipeline."""
    current = pipeline_record(sampler)
    if saved is None:
        return current
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: pipeline: expected an object, got {short_repr(saved)}")
    record = dict(current)
    for key in ("latent_channels", "vae_scale_factor"):
        if key in saved:
            record[key] = _integer(saved[key], f"{where}: pipeline.{key}", 1, 4096)
    if "image_size" in saved:
        size = saved["image_size"]
        if not isinstance(size, list) or len(size) != 2:
            raise ValueError(f"{where}: pipeline.image_size: expected [width, height]")
        record["image_size"] = [
            _integer(v, f"{where}: pipeline.image_size", 1, 2**20) for v in size
        ]
    for key in ("class", "fingerprint", "dtype"):
        if key in saved:
            record[key] = check_text(saved[key], f"{where}: pipeline.{key}")
    if "lora" in saved:
        if not isinstance(saved["lora"], list):
            raise ValueError(f"{where}: pipeline.lora: expected a list of adapters")
        record["lora"] = [check_text(item, f"{where}: pipeline.lora") for item in saved["lora"]]
    if record["latent_channels"] != current["latent_channels"]:
        raise ValueError(
            f"{where}: the session's latents have {record['latent_channels']} channels but "
            f"this {current['class']} takes {current['latent_channels']}: they cannot continue "
            "on it; load the session with a pipeline of the family it was saved with "
            f"({record['class']})"
        )
    differences = [
        f"{label} {record[key]!r} (this pipeline: {current[key]!r})"
        for key, label in (
            ("class", "pipeline class"),
            ("fingerprint", "weights fingerprint"),
            ("vae_scale_factor", "VAE scale factor"),
            ("lora", "LoRA adapters"),
        )
        if key in saved and record[key] != current[key]
    ]
    if differences:
        warnings.warn(
            f"{where}: saved with another model: {'; '.join(differences)}. The frames load as "
            "saved, but images decode with this pipeline's VAE and new loops run on its "
            "weights: they will not continue the saved ones exactly",
            UserWarning,
            stacklevel=4,
        )
    return record


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(
            f"{where}: expected an integer from {low} to {high}, got {short_repr(value)}"
        )
    return value


def _number(value: Any, where: str, low: float, high: float) -> float:
    if not in_range(value, low, high):
        raise ValueError(
            f"{where}: expected a number from {low} to {high}, got {short_repr(value)}"
        )
    return float(value)


def _field(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise ValueError(f"{where}: missing {short_repr(key)}")
    value = entry[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}.{key}: expected {names}, got {short_repr(value)}")
    return value


def _chain(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of [prompt, weight]")
    chain = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f"{where}: expected [prompt, weight], got {short_repr(item)}")
        prompt = check_text(item[0], f"{where} prompt")
        chain.append((prompt, _number(item[1], f"{where} weight", 0.0, 1.0)))
    return tuple(chain)


def _timings(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object of seconds, got {short_repr(value)}")
    return {check_text(k, where): _number(v, f"{where}.{k}", 0.0, 1e9) for k, v in value.items()}


def _tensor(tensors: dict, key: str, where: str, ndim: int) -> torch.Tensor:
    if key not in tensors:
        raise ValueError(f"{where}: tensor {short_repr(key)} missing")
    tensor = tensors[key]
    if tensor.dtype not in STORED_DTYPES or tensor.ndim != ndim:
        raise ValueError(
            f"{where}: tensor {short_repr(key)} is {tensor.dtype} {list(tensor.shape)}; expected a "
            f"{ndim}-D float16, bfloat16, float32 or float64 tensor"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where}: tensor {short_repr(key)} holds NaN or infinite values")
    return tensor


class _Builder:
    """Checks a manifest's branches one by one; nothing is returned until all are valid."""

    def __init__(self, manifest: dict, tensors: dict, pipe, record: dict, where: str):
        self.manifest, self.tensors, self.record, self.where = manifest, tensors, record, where
        self.dtype = detect_family(pipe).denoiser_network(pipe).dtype
        self.used: set[str] = set()

    def build(self) -> tuple[list[SavedBranch], int]:
        entries = _field(self.manifest, "branches", list, f"{self.where}: manifest")
        by_id: dict[int, SavedBranch] = {}
        for n, entry in enumerate(entries):
            branch = self._branch(entry, f"{self.where}: branches[{n}]", by_id)
            by_id[branch.id] = branch
        extra = sorted(set(self.tensors) - self.used)
        if extra:
            raise ValueError(
                f"{self.where}: tensors not described by the manifest: {', '.join(extra[:5])}"
            )
        # The same bounds as `snapshot` checks: what loads here saves again and loads back.
        next_id = _check_id(
            self.manifest.get("next_id", 1), f"{self.where}: next_id", MAX_BRANCH_ID
        )
        return list(by_id.values()), max([b.id + 1 for b in by_id.values()] + [next_id])

    def _branch(self, entry: Any, where: str, by_id: dict[int, SavedBranch]) -> SavedBranch:
        branch_id = _integer(_field(entry, "id", int, where), f"{where}.id", 0, MAX_BRANCH_ID - 1)
        if branch_id in by_id:
            raise ValueError(f"{where}: duplicate branch id {branch_id}")
        parent_id = entry.get("parent")
        if parent_id is not None and (type(parent_id) is not int or parent_id not in by_id):
            raise ValueError(
                f"{where}: parent {short_repr(parent_id)} is not an earlier branch's id"
            )
        parent = by_id.get(parent_id) if parent_id is not None else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                params = SequenceParams.from_dict(_field(entry, "params", dict, where))
        except ValueError as error:
            raise ValueError(f"{where}.params: {error}") from None
        fork = _field(entry, "fork", int, where)
        if parent is None and fork != 0:
            raise ValueError(f"{where}: a root branch must fork at 0, not {fork}")
        if parent is not None:
            available = parent.fork + len(parent.frames)
            if not 0 <= fork <= available:
                raise ValueError(f"{where}: fork {fork} is beyond its parent's {available} loops")
        initial = None
        if _field(entry, "initial", bool, where):
            key = f"initial/{branch_id}"
            initial = _tensor(self.tensors, key, where, 4)
            if initial.shape[:2] != (1, self.record["latent_channels"]):
                raise ValueError(f"{where}: initial latent shape {list(initial.shape)}")
            self.used.add(key)
        shape = self._shape(params, initial, parent, by_id)
        frames: dict[int, Frame] = {}
        for m, item in enumerate(_field(entry, "frames", list, where)):
            frame = self._frame(item, f"{where}.frames[{m}]", branch_id, fork + m, params, shape)
            frames[frame.index] = frame
        name = check_text(_field(entry, "name", str, where), f"{where}.name")
        return SavedBranch(branch_id, name, params, parent_id, fork, frames, initial)

    def _shape(self, params, initial, parent, by_id) -> tuple[int, int, int]:
        """``[C, h, w]`` every latent of the branch must have: its input latent's, else the
        size its settings give on the pipeline it was saved with."""
        root = parent
        while root is not None and root.parent is not None:
            root = by_id[root.parent]
        start = initial if initial is not None else (root.initial if root is not None else None)
        channels = self.record["latent_channels"]
        if start is not None:
            return (channels, *start.shape[2:])
        factor = self.record["vae_scale_factor"]
        width = params.width or self.record["image_size"][0]
        height = params.height or self.record["image_size"][1]
        return (channels, height // factor, width // factor)

    def _frame(self, item, where, branch_id, index, params, shape) -> Frame:
        found = _field(item, "index", int, where)
        if found != index:
            raise ValueError(f"{where}: loop {found}, expected {index} (frames in order)")
        if index >= params.sequence_loop_count:
            raise ValueError(f"{where}: loop {index} beyond sequence_loop_count")
        key = f"latent/{branch_id}/{index}"
        latent = _tensor(self.tensors, key, where, 3)
        if tuple(latent.shape) != shape:
            raise ValueError(
                f"{where}: latent shape {list(latent.shape)} does not match the settings "
                f"(width {params.width}, height {params.height}): expected {list(shape)}"
            )
        sigmas_key = _field(item, "sigmas", str, where)
        sigmas = _tensor(self.tensors, sigmas_key, where, 1)
        self.used.update((key, sigmas_key))
        return Frame(
            index=index,
            seed=_integer(_field(item, "seed", int, where), f"{where}.seed", 0, 2**64 - 1),
            latent=latent.to(self.dtype),
            denoise=_number(_field(item, "denoise", (int, float), where), f"{where}.denoise", 0, 1),
            positive=_chain(item.get("positive"), f"{where}.positive"),
            negative=_chain(item.get("negative"), f"{where}.negative"),
            sigmas=sigmas,
            timings=_timings(item.get("timings", {}), f"{where}.timings"),
        )
