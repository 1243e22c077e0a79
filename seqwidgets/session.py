"""Session: a tree of runs and branches over one `SequenceSampler`.

A *branch* is one timeline of loops. A root branch (``session.run``) computes loops from 0; a
child branch shares every frame of its parent before its ``fork`` loop and computes the loops
from ``fork`` on with its own settings: the parent's settings with some changes. Its plan is the
full-sequence plan of those settings, so loop numbering, the seed schedule and keyframe positions
stay aligned with the original run; only loops ``>= fork`` are computed. Shared frames are never
recomputed and never copied: ``session.frame(branch, i)`` finds them through the parent chain.

``branch((b, k), **changes)`` forks *after* loop ``k`` (``fork = k + 1``); ``rerun((b, k),
**changes)`` recomputes loop ``k`` itself (``fork = k``). ``extend(b, loops)`` lengthens a
branch in place.

Runs are synchronous: a widget calls them from its own thread and draws each frame from the
``on_frame(branch, frame)`` callback. ``stop()`` may be called from any thread.

Memory: frames hold their latent on the CPU in the pipeline's dtype (64 KiB per 4x64x64 fp32
frame); decoded images and thumbnails live in bounded LRU caches and are decoded again on demand.

Files (``save`` / ``Session.load``): a JSON manifest (settings, tree, per-frame metadata, a
format version and a SHA-256 checksum over manifest and tensors) plus safetensors for the
latents; either one ``.safetensors`` file with the manifest in its metadata, or a folder holding
``manifest.json`` and ``latents.safetensors``. Writes go to a temporary name and are renamed into
place. Nothing is ever unpickled.

Example:
    >>> import seqwidgets as sw
    >>> session = sw.Session(sw.testing.tiny_pipeline())
    >>> run = session.run(sw.SequenceParams(steps=2, sequence_loop_count=3))
    >>> alt = session.branch((run, 0), positive_seq="0: a red circle")
    >>> alt.fork, alt.indices
    (1, [0, 1, 2])
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import export as _export
from .decode import ImageCache, decode_latents, thumbnail
from .engine import CancelToken, Frame, SequenceSampler, StepCallback
from .families import detect_family
from .params import SequenceParams

__all__ = ["FORMAT", "FORMAT_VERSION", "Branch", "Session"]

#: The ``format`` field of a saved session's manifest.
FORMAT = "seqwidgets.session"
#: The manifest version this module writes and reads.
FORMAT_VERSION = 1

_MANIFEST = "manifest.json"
_LATENTS = "latents.safetensors"
_METADATA_KEY = "seqwidgets.session"

FrameCallback = Callable[["Branch", Frame], None]
FrameRef = Frame | tuple["Branch", int]


@dataclass(eq=False)
class Branch:
    """One timeline of a session: its own frames plus the prefix it shares with its parent.

    Attributes:
        id (`int`): unique within the session, never reused.
        name (`str`): a label for the user (may be reassigned).
        params (`SequenceParams`): the settings of the whole timeline (the parent's settings with
            this branch's changes); only loops ``>= fork`` were computed with them.
        parent (`Branch` or `None`): the branch whose frames before ``fork`` this one shares.
        fork (`int`): the first loop this branch computes (0 for a root).
        frames (`dict[int, Frame]`): the frames this branch computed, by loop index.
        initial (`torch.Tensor` or `None`): a root's loop-0 input latent ``[1, C, h, w]`` (from
            ``latent_image`` or an encoded ``init_image``); ``None`` for the empty latent.
    """

    id: int
    name: str
    params: SequenceParams
    parent: Branch | None = None
    fork: int = 0
    frames: dict[int, Frame] = field(default_factory=dict)
    initial: torch.Tensor | None = field(default=None, repr=False)

    @property
    def own_indices(self) -> list[int]:
        """Loop indices of the frames this branch computed itself."""
        return sorted(list(self.frames))

    @property
    def indices(self) -> list[int]:
        """Every loop index this timeline has: the shared prefix, then its own frames."""
        return list(range(self.fork)) + self.own_indices

    @property
    def is_complete(self) -> bool:
        """Whether every loop of ``params.sequence_loop_count`` is there."""
        return self.fork + len(self.frames) >= self.params.sequence_loop_count

    def owner(self, index: int) -> Branch:
        """The branch that computes loop ``index`` of this timeline: this one from ``fork`` on,
        else the ancestor whose frames this one shares there.

        Example:
            >>> import seqwidgets as sw
            >>> run = Branch(1, "run 1", sw.SequenceParams(sequence_loop_count=16))
            >>> alt = Branch(2, "run 1 > from loop 4", run.params, parent=run, fork=4)
            >>> alt.owner(3).name, alt.owner(4).name
            ('run 1', 'run 1 > from loop 4')
        """
        if index < 0:
            raise IndexError(f"loop index must be >= 0, got {index}")
        branch = self
        while index < branch.fork and branch.parent is not None:
            branch = branch.parent
        return branch

    @property
    def root(self) -> Branch:
        """The root of this branch's tree."""
        branch = self
        while branch.parent is not None:
            branch = branch.parent
        return branch

    @staticmethod
    def fork_name(parent: Branch, fork: int) -> str:
        """The default name of a branch of ``parent`` whose own frames start at loop ``fork``.

        Every fork says where its own frames start the same way, whichever way it was made
        (`Session.branch` after loop 5 and `Session.rerun` of loop 6 both give loop 6):

            >>> import seqwidgets as sw
            >>> Branch.fork_name(Branch(1, "run 1", sw.SequenceParams()), 6)
            'run 1 > from loop 6'
        """
        return f"{parent.name} > from loop {fork}"

    def __repr__(self) -> str:
        parent = None if self.parent is None else self.parent.id
        return (
            f"Branch(id={self.id}, name={self.name!r}, parent={parent}, fork={self.fork}, "
            f"frames={len(self.indices)}/{self.params.sequence_loop_count})"
        )


class Session:
    """The tree of runs and branches of one pipeline, with decoded-image caches.

    Args:
        pipe: a diffusers Stable Diffusion 1.x/2.x or SDXL pipeline (see `SequenceSampler`).
        image_cache_items (`int`, defaults to 256): most decoded images held.
        image_cache_bytes (`int`, defaults to 128 MiB): most pixel bytes of decoded images held
            (170 SD-1.5 images of 512x512; ``None``: no byte bound). Thumbnails have their own
            cache of ``4 * image_cache_items`` items and at most 16 MiB. With these bounds a
            session of 1,000 SD-1.5 frames stays within 300 MB of host RAM
            (``benchmarks/bench_session_memory.py``).

    Attributes:
        sampler (`SequenceSampler`): the engine every run of this session uses.
        last_error (`BaseException` or `None`): what ended the last run, if it raised.
    """

    def __init__(
        self, pipe, *, image_cache_items: int = 256, image_cache_bytes: int | None = 128 * 2**20
    ):
        self.pipe = pipe
        self.sampler = SequenceSampler(pipe)
        self.last_error: BaseException | None = None
        self._images = ImageCache(image_cache_items, image_cache_bytes)
        self._thumbnails = ImageCache(4 * image_cache_items, 16 * 2**20)
        self._branches: list[Branch] = []
        self._next_id = 1
        self._lock = threading.RLock()  # guards the tree (branches, frames dicts)
        self._busy = threading.Lock()  # held for the whole of a run
        self._active: Branch | None = None
        self._cancel = CancelToken()  # the current run's; a new one per run
        self._stopped = False

    # -- the tree ------------------------------------------------------------------------------

    @property
    def branches(self) -> list[Branch]:
        """All branches, in creation order."""
        with self._lock:
            return list(self._branches)

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._busy.locked()

    @property
    def stopped(self) -> bool:
        """Whether the last run ended early because of `stop`."""
        return self._stopped

    def children(self, branch: Branch) -> list[Branch]:
        """The branches forked directly from ``branch``, in creation order."""
        self._check(branch)
        with self._lock:
            return [b for b in self._branches if b.parent is branch]

    def frame(self, branch: Branch, index: int) -> Frame:
        """Loop ``index`` of ``branch``'s timeline, found through the parents for a shared loop.

        Raises:
            `IndexError`: the timeline has no such loop (not computed, or out of range).
        """
        owner = self._owner(branch, index)
        return owner.frames[index]

    def path(self, branch: Branch, index: int | None = None) -> list[Frame]:
        """The frames of ``branch``'s timeline from loop 0 to ``index`` (default: its last)."""
        self._check(branch)
        with self._lock:
            indices = branch.indices
            if index is None:
                if not indices:
                    return []
                index = indices[-1]
            return [self.frame(branch, i) for i in range(index + 1)]

    def image(self, branch: Branch, index: int) -> Image.Image:
        """Loop ``index`` decoded by the VAE (cached; decoded again after eviction)."""
        owner = self._owner(branch, index)
        latent = owner.frames[index].latent
        return self._images.get((owner.id, index), lambda: decode_latents(self.pipe.vae, latent)[0])

    def thumbnail(self, branch: Branch, index: int, size: int | tuple[int, int]) -> Image.Image:
        """Loop ``index`` decoded and fitted into ``size`` (see `seqwidgets.decode.thumbnail`)."""
        owner = self._owner(branch, index)
        key = (owner.id, index, size if isinstance(size, int) else tuple(size))
        return self._thumbnails.get(key, lambda: thumbnail(self.image(owner, index), size))

    # -- runs ----------------------------------------------------------------------------------

    def run(
        self,
        params: SequenceParams,
        *,
        latent_image: torch.Tensor | None = None,
        init_image=None,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        name: str | None = None,
        wait: bool = True,
    ) -> Branch:
        """Run ``params`` from loop 0 as a new root branch and return it.

        Args:
            params (`SequenceParams`): the settings.
            latent_image (`torch.Tensor`, *optional*): loop 0's input latent (diffusers scaling).
            init_image (*optional*): an image to encode with the VAE as loop 0's input.
            callback: ``callback(loop, step, sigma, denoised)`` after every model step.
            on_frame: ``on_frame(branch, frame)`` as each frame arrives, from the running thread.
            name (`str`, *optional*): the branch's label (default ``"run <id>"``).
            wait (`bool`, defaults to True): ``False`` computes in a background thread and
                returns the branch at once; `running` says when it is done, and `stop` works
                from the moment this returns.

        The branch is listed in `branches` as soon as the run starts. If the run is stopped or
        raises, the finished frames stay in the branch; an error is also kept in `last_error`.
        """
        if not isinstance(params, SequenceParams):
            raise TypeError(f"params must be a SequenceParams, got {type(params).__name__}")
        initial = None
        self.sampler.latent_shape(params)  # checks width / height before anything is listed
        if latent_image is not None or init_image is not None:
            initial = self.sampler.initial_latent(params, latent_image, init_image)
        if not wait:
            self._begin()
            try:
                branch = self._new_branch(params, None, 0, initial, name)
            except BaseException:
                self._end()
                raise

            def work() -> None:
                try:
                    self._compute(branch, 0, callback, on_frame)
                except BaseException:  # kept in last_error by _collect
                    pass
                finally:
                    self._end()

            threading.Thread(target=work, name="seqwidgets-run", daemon=True).start()
            return branch
        with self._running():
            branch = self._new_branch(params, None, 0, initial, name)
            self._compute(branch, 0, callback, on_frame)
        return branch

    def branch(
        self,
        frame: FrameRef,
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        name: str | None = None,
        **changes: Any,
    ) -> Branch:
        """Fork after ``frame`` with ``changes`` and compute the loops that follow it.

        Args:
            frame: a `Frame` of this session, or ``(branch, index)``.
            **changes: settings to change (any `SequenceParams` field), applied to the loops
                after ``frame``. With no changes the new frames equal the original ones bitwise.

        Branching at loop ``k`` of ``n`` costs ``(n - k - 1) * steps`` UNet calls and no call
        for loops ``0..k``. Returns the new branch, which shares loops ``0..k``.
        """
        parent, index = self._resolve(frame)
        name = name or Branch.fork_name(parent, index + 1)
        return self._fork(parent, index, index + 1, changes, callback, on_frame, name)

    def branch_many(
        self,
        frame: FrameRef,
        changes: list[dict[str, Any]],
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
    ) -> list[Branch]:
        """Fork several branches after ``frame`` and compute them together, as one batch.

        Each item of ``changes`` is a dict of settings, as for `branch`. Variations that keep
        the sigma schedule (seed, seed mode, prompts, cfg, slerp, interpolation) go through the
        UNet as one batch, one call per step for all of them: on a GPU, several times the
        throughput of running them one after another, with the same frames up to float
        round-off. Variations that change the schedule (steps, sampler, scheduler, denoise,
        loop count, unsample) are grouped with those they share it with.

        Example:
            >>> import seqwidgets as sw
            >>> session = sw.Session(sw.testing.tiny_pipeline())
            >>> root = session.run(sw.SequenceParams(steps=2, sequence_loop_count=4,
            ...                                      positive_seq="0: a red circle"))
            >>> seeds = session.branch_many((root, 1), [{"seed": s} for s in (7, 8, 9)])
            >>> [b.fork for b in seeds], [len(b.frames) for b in seeds]
            ([2, 2, 2], [2, 2, 2])
        """
        parent, index = self._resolve(frame)
        if not changes:
            raise ValueError("branch_many needs at least one dict of changes")
        items = [parent.params.replace(**change) for change in changes]
        for params in items:
            if params.sequence_loop_count <= index:
                raise ValueError(
                    f"sequence_loop_count={params.sequence_loop_count} ends before loop "
                    f"{index}: it must be at least {index + 1}"
                )
            if (params.width, params.height) != (parent.params.width, parent.params.height):
                raise ValueError("width / height cannot change in a branch (it continues a latent)")
        groups: dict[tuple, list[int]] = {}
        for i, params in enumerate(items):
            key = tuple(getattr(params, name) for name in SequenceSampler.BATCH_SHARED)
            groups.setdefault(key, []).append(i)
        previous = self.frame(parent, index).latent
        branches: list[Branch] = [None] * len(items)
        with self._running():
            for members in groups.values():
                group = [
                    self._new_branch(
                        items[i], parent, index + 1, None, Branch.fork_name(parent, index + 1)
                    )
                    for i in members
                ]
                for i, branch in zip(members, group, strict=True):
                    branches[i] = branch
                self._active = group[0]
                batches = self.sampler.frames_batch(
                    [b.params for b in group],
                    start=index + 1,
                    previous=previous,
                    callback=callback,
                    earlier=lambda i: self.frame(parent, i).latent,  # colour references
                    cancel=self._cancel,
                )
                self._collect(group, batches, on_frame)
                if self._stopped:
                    break
        return [b for b in branches if b is not None]

    def rerun(
        self,
        frame: FrameRef,
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        name: str | None = None,
        **changes: Any,
    ) -> Branch:
        """Like `branch`, but recompute ``frame`` itself too (the new branch forks at its loop)."""
        parent, index = self._resolve(frame)
        name = name or Branch.fork_name(parent, index)
        return self._fork(parent, index, index, changes, callback, on_frame, name)

    def extend(
        self,
        branch: Branch,
        loops: int,
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
    ) -> Branch:
        """Add ``loops`` loops to ``branch`` (its ``sequence_loop_count`` grows) and compute them.

        A branch that was stopped or failed is first completed: its missing loops are computed
        too (``extend(branch, 0)`` only does that). The seeds, prompts and denoise of existing
        loops do not depend on the loop count, so the new loops continue the same plan.
        Returns ``branch``.
        """
        self._check(branch)
        if not isinstance(loops, int) or isinstance(loops, bool) or loops < 0:
            raise ValueError(f"loops must be an int >= 0, got {loops!r}")
        count = branch.params.sequence_loop_count + loops
        if count > 1024:
            raise ValueError(
                f"extend: {branch.params.sequence_loop_count} + {loops} loops = {count} exceeds "
                "the node's maximum sequence_loop_count of 1024"
            )
        with self._running():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # keyframes still beyond the end
                branch.params = branch.params.replace(sequence_loop_count=count)
            start = branch.fork + len(branch.frames)
            self._compute(branch, start, callback, on_frame)
        return branch

    def stop(self) -> None:
        """Stop the current run at the next model step; finished frames are kept.

        Safe to call from any thread; does nothing when no run is in progress.
        """
        if self._busy.locked():
            self._cancel.cancel()

    def delete(self, branch: Branch, *, recursive: bool = False) -> None:
        """Remove ``branch`` and free its frames and cached images.

        Raises:
            `ValueError`: other branches fork from it and ``recursive`` is False.
            `RuntimeError`: a run in progress uses it.
        """
        self._check(branch)
        with self._lock:
            doomed = [branch]
            for candidate in self._branches:  # creation order: parents come before children
                if candidate.parent in doomed and candidate not in doomed:
                    doomed.append(candidate)
            if len(doomed) > 1 and not recursive:
                names = ", ".join(f"{b.id} ({b.name})" for b in doomed[1:])
                raise ValueError(
                    f"branch {branch.id} ({branch.name}) has branches forked from it: {names}; "
                    "delete them first or pass recursive=True"
                )
            if self._active is not None and self._active in doomed:
                raise RuntimeError(
                    f"branch {self._active.id} is running; stop() it and wait before deleting"
                )
            ids = {b.id for b in doomed}
            for b in doomed:
                self._branches.remove(b)
                b.frames.clear()
                b.initial = None
        for cache in ("_images", "_thumbnails"):
            setattr(self, cache, _without(getattr(self, cache), ids))

    # -- measures and comparison (seqwidgets.metrics) -------------------------------------------

    def metrics(self, branch: Branch, upto: int | None = None):
        """One row of measures per loop of ``branch`` (a `seqwidgets.metrics.MetricsTable`).

        Each row holds ``loop``, ``keyframe`` (where its positive keyframe starts) and every
        measure of `seqwidgets.metrics.MEASURES`: colour drift from loop 0 and from the keyframe
        start, change from the previous loop, saturation, contrast, the latent's norm. A row is
        computed once per frame, from the image `image` decodes (and caches for the thumbnails),
        and kept: asking again, or for a branch sharing the frame, costs nothing.

        Example:
            >>> import seqwidgets as sw
            >>> session = sw.Session(sw.testing.tiny_pipeline())
            >>> run = session.run(sw.SequenceParams(steps=2, sequence_loop_count=3))
            >>> table = session.metrics(run)
            >>> [row["loop"] for row in table], table[0]["drift_lab"]
            ([0, 1, 2], 0.0)
        """
        from .metrics import MetricsTable

        frames = self.path(branch, upto)
        return MetricsTable(self._metrics_row(branch, frame.index) for frame in frames)

    def diff(self, a: Branch, b: Branch):
        """Compare two branches (a `seqwidgets.metrics.BranchDiff`): the settings that differ
        and, for each loop index both have, the two frames (`FramePair`: images, difference).

        Example:
            >>> import seqwidgets as sw
            >>> session = sw.Session(sw.testing.tiny_pipeline())
            >>> run = session.run(sw.SequenceParams(steps=2, sequence_loop_count=3))
            >>> alt = session.branch((run, 0), cfg=3.0)
            >>> d = session.diff(run, alt)
            >>> d.settings, d.parted_at, [pair.shared for pair in d.pairs]
            ({'cfg': (8.0, 3.0)}, 1, [True, False, False])
        """
        from .metrics import BranchDiff, FramePair

        self._check(a)
        self._check(b)
        settings = {
            name: (value, getattr(b.params, name))
            for name, value in a.params.to_dict().items()
            if value != getattr(b.params, name)
        }
        with self._lock:
            common = sorted(set(a.indices) & set(b.indices))
            pairs = [
                FramePair(
                    i,
                    self.frame(a, i),
                    self.frame(b, i),
                    lambda i=i: (self.image(a, i), self.image(b, i)),
                )
                for i in common
            ]
        return BranchDiff(settings, pairs)

    def _metrics_row(self, branch: Branch, index: int) -> dict[str, float]:
        """The metrics row of loop ``index``, cached per frame (its owner and loop)."""
        from .metrics import color_stats, loop_metrics
        from .plan import keyframe_start

        # Created on first use, so the measures need nothing from __init__.
        rows = self.__dict__.setdefault("_metric_rows", {})
        stats = self.__dict__.setdefault("_color_stats", {})
        owner = self._owner(branch, index)
        frame = owner.frames[index]
        cached = rows.get((owner.id, index))
        if cached is not None and cached[0] is frame:
            return cached[1]

        def stats_of(i: int):
            source = self._owner(owner, i)
            key = (source.id, i)
            if key not in stats or stats[key][0] is not source.frames[i]:
                stats[key] = (source.frames[i], color_stats(self.image(source, i)))
            return stats[key][1]

        keyframe = keyframe_start(owner.params.positive_keyframes, index)
        row = loop_metrics(
            self.image(owner, index),
            loop=index,
            keyframe=keyframe,
            first=stats_of(0),
            key=stats_of(keyframe),
            previous=self.image(owner, index - 1) if index > 0 else None,
            stats=stats_of(index),
            latent=frame.latent,
        )
        rows[(owner.id, index)] = (frame, row)
        return row

    # -- export --------------------------------------------------------------------------------

    def export(
        self,
        branch: Branch,
        path: str | os.PathLike,
        *,
        format: str = "gif",
        upto: int | None = None,
        overwrite: bool = False,
        fps: float = 4,
    ) -> Path | list[Path]:
        """Write the timeline of ``branch`` from loop 0 to ``upto`` (default: its last loop).

        Args:
            format (`str`): ``"gif"``, ``"mp4"`` (needs ``pip install "seqwidgets[video]"``),
                ``"png"`` (``path`` is a folder; ``loop_0000.png``... numbered by loop) or
                ``"contact_sheet"`` (a PNG grid, each image captioned with its loop index, seed
                and keyframe prompt).
            upto (`int`, *optional*): the last loop to export: the path from the root to it.
            overwrite (`bool`, defaults to `False`): replace existing files.
            fps (`float`, defaults to 4): frames per second of a GIF or MP4.

        Returns the written path (a list of paths for ``"png"``).
        """
        writers = ("gif", "mp4", "png", "contact_sheet")
        if format not in writers:
            raise ValueError(f"format: {format!r} is unknown; allowed: {', '.join(writers)}")
        frames = self.path(branch, upto)
        if not frames:
            raise ValueError(f"branch {branch.id} ({branch.name}) has no frames to export")
        images = [self.image(branch, f.index) for f in frames]
        if format == "gif":
            return _export.save_gif(images, path, fps=fps, overwrite=overwrite)
        if format == "mp4":
            return _export.save_mp4(images, path, fps=fps, overwrite=overwrite)
        if format == "png":
            return _export.save_png_frames(images, path, prefix="loop", overwrite=overwrite)
        keyframes = {i for i, _ in branch.params.positive_keyframes}
        captions = [
            [
                f"loop {f.index} · seed {f.seed}" + (" · key" if f.index in keyframes else ""),
                f.prompt,
            ]
            for f in frames
        ]
        return _export.save_contact_sheet(images, path, captions, overwrite=overwrite)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the session: one file when ``path`` ends in ``.safetensors``, else a folder.

        The file (or ``latents.safetensors`` in the folder) holds every latent; the manifest
        (the safetensors metadata, or ``manifest.json``) holds the settings, the tree, each
        frame's metadata, the format version and a SHA-256 checksum. The write is atomic: a
        temporary name, then a rename. Refuses to replace an existing path unless ``overwrite``.
        Decoded images are not saved (they are decoded again on demand).
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        with self._lock:
            manifest, tensors = self._snapshot()
        text = _seal(manifest, tensors)
        from safetensors.torch import save as st_save

        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a folder; save a file elsewhere")
            data = st_save(tensors, metadata={_METADATA_KEY: text})
            _atomic_file(path, data)
        else:
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(
                    f"{path} is a file; name a .safetensors file or a folder to save into"
                )
            data = st_save(tensors)
            _atomic_folder(path, {_MANIFEST: text.encode("utf-8"), _LATENTS: data})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, pipe, **options: Any) -> Session:
        """Read a session written by `save` (a ``.safetensors`` file or a folder).

        Everything is checked before a session is built: the format and its version, the
        checksum (an edited or damaged file is refused), the tree and every frame's latent. A
        pickle or ``torch.save`` file is refused without being unpickled.

        Args:
            path: the file or folder.
            pipe: the pipeline to attach (the latents are cast to its dtype).
            **options: passed to `Session` (``image_cache_items``...).

        Raises:
            `ValueError`: saying what is wrong with the file. `FileNotFoundError`.
        """
        manifest, tensors = _read(Path(path))
        branches = _build(manifest, tensors, pipe, path)
        session = cls(pipe, **options)
        session._branches = branches
        next_id = manifest.get("next_id")
        session._next_id = max(
            [b.id + 1 for b in branches] + [next_id if isinstance(next_id, int) else 1]
        )
        return session

    # -- internals -----------------------------------------------------------------------------

    def _check(self, branch: Branch) -> None:
        if not isinstance(branch, Branch):
            raise TypeError(f"expected a Branch, got {type(branch).__name__}")
        with self._lock:
            if not any(b is branch for b in self._branches):
                raise ValueError(
                    f"branch {branch.id} ({branch.name}) is not in this session (deleted?)"
                )

    def _owner(self, branch: Branch, index: int) -> Branch:
        """The branch that computed loop ``index`` of ``branch``'s timeline."""
        self._check(branch)
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        owner = branch.owner(index) if index >= 0 else branch
        if index < 0 or index not in owner.frames:
            have = branch.indices
            shown = f"0..{have[-1]}" if have else "none yet"
            raise IndexError(
                f"branch {branch.id} ({branch.name}) has no loop {index} (loops: {shown}, of "
                f"{branch.params.sequence_loop_count})"
            )
        return owner

    def _resolve(self, ref: FrameRef) -> tuple[Branch, int]:
        """``(branch, index)`` for a Frame of this session or a ``(branch, index)`` pair."""
        if isinstance(ref, tuple) and len(ref) == 2:
            branch, index = ref
            self._owner(branch, index)  # checks that the loop exists
            return branch, index
        if isinstance(ref, Frame):
            with self._lock:
                for branch in self._branches:
                    if branch.frames.get(ref.index) is ref:
                        return branch, ref.index
            raise ValueError(f"frame of loop {ref.index} does not belong to this session")
        raise TypeError(f"expected a Frame or a (branch, index) pair, got {type(ref).__name__}")

    def _fork(self, parent, index, fork, changes, callback, on_frame, name) -> Branch:
        """A branch of ``parent`` computing loops ``fork..``; loop ``index`` must stay in it."""
        params = parent.params.replace(**changes)
        if params.sequence_loop_count <= index:
            raise ValueError(
                f"sequence_loop_count={params.sequence_loop_count} ends before loop {index}: "
                f"it must be at least {index + 1}"
            )
        root = parent.root
        initial = root.initial if fork == 0 else None
        if (params.width, params.height) != (parent.params.width, parent.params.height) and (
            fork > 0 or initial is not None
        ):
            raise ValueError(
                "width / height can change only when re-running loop 0 of a run that started "
                "from the empty latent (a branch continues from a latent of the original size)"
            )
        self.sampler.latent_shape(params)  # checks width / height before anything is listed
        with self._running():
            branch = self._new_branch(params, parent, fork, initial, name)
            self._compute(branch, fork, callback, on_frame)
        return branch

    def _new_branch(self, params, parent, fork, initial, name) -> Branch:
        with self._lock:
            branch_id = self._next_id
            self._next_id += 1
            if name is None:
                name = f"run {branch_id}"
            branch = Branch(branch_id, str(name), params, parent, fork, {}, initial)
            self._branches.append(branch)
        return branch

    @contextmanager
    def _running(self) -> Iterator[None]:
        self._begin()
        try:
            yield
        finally:
            self._end()

    def _begin(self) -> None:
        """Claim the session for one run, with a new cancel token (released by `_end`)."""
        if not self._busy.acquire(blocking=False):
            active = self._active
            what = f" (branch {active.id}, {active.name})" if active is not None else ""
            raise RuntimeError(
                f"a run is already in progress in this session{what}; call stop() and wait for "
                "it to return before starting another"
            )
        self._cancel = CancelToken()
        self._stopped = False
        self.last_error = None

    def _end(self) -> None:
        self._active = None
        self._busy.release()

    def _compute(self, branch, start, callback, on_frame) -> None:
        """Compute loops ``start..`` of ``branch``, adding each frame as it arrives."""
        self._active = branch
        if start >= branch.params.sequence_loop_count:
            return
        previous = self.frame(branch, start - 1).latent if start > 0 else None
        latent_image = branch.root.initial if start == 0 else None
        frames = self.sampler.frames(
            branch.params,
            latent_image,
            start=start,
            previous=previous,
            callback=callback,
            earlier=lambda i: self.frame(branch, i).latent,  # colour references
            cancel=self._cancel,
        )
        self._collect([branch], _one_at_a_time(frames), on_frame)

    def _collect(self, branches, batches, on_frame) -> None:
        """Add each loop's frames to their branches as they arrive; keep them on any error."""
        try:
            with closing(batches):
                for frames in batches:
                    for branch, frame in zip(branches, frames, strict=True):
                        with self._lock:
                            branch.frames[frame.index] = frame
                        if on_frame is not None:
                            on_frame(branch, frame)
        except BaseException as error:
            self.last_error = error
            raise
        finally:
            self._stopped = self.sampler.stopped

    def _snapshot(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {}
        entries = []
        for branch in self._branches:
            sigma_keys: dict[int, str] = {}
            frames = []
            for index in branch.own_indices:
                frame = branch.frames[index]
                key = sigma_keys.get(id(frame.sigmas))
                if key is None:
                    key = sigma_keys[id(frame.sigmas)] = f"sigmas/{branch.id}/{len(sigma_keys)}"
                    tensors[key] = frame.sigmas.detach().cpu().contiguous()
                tensors[f"latent/{branch.id}/{index}"] = frame.latent.detach().cpu().contiguous()
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
                tensors[f"initial/{branch.id}"] = branch.initial.detach().cpu().contiguous()
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
        from ._version import __version__

        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "written_by": f"seqwidgets {__version__}",
            "pipeline": {
                "class": type(self.pipe).__name__,
                "latent_channels": self.sampler.family.latent_channels(self.pipe),
                "dtype": str(self.sampler.dtype).removeprefix("torch."),
            },
            "next_id": self._next_id,
            "branches": entries,
        }
        return manifest, tensors


# -- cache maintenance -----------------------------------------------------------------------


def _without(cache: ImageCache, ids: set[int]) -> ImageCache:
    """A copy of ``cache`` without the entries of branches ``ids``, in the same LRU order."""
    kept = ImageCache(cache.max_items, cache.max_bytes)
    for key in cache.keys():  # noqa: SIM118 (ImageCache has no __iter__)
        if key[0] in ids:
            continue
        try:
            image = cache.get(key, _missing)
        except KeyError:  # evicted meanwhile
            continue
        kept.put(key, image)
    return kept


def _one_at_a_time(frames: Iterator[Frame]) -> Iterator[list[Frame]]:
    """A run's frames as one-item batches (closing this closes the run)."""
    with closing(frames):
        for frame in frames:
            yield [frame]


def _missing() -> Image.Image:
    raise KeyError("evicted")


# -- files -----------------------------------------------------------------------------------


def _digest(manifest: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the canonical manifest (without its checksum) and every tensor."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        h.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _seal(manifest: dict, tensors: dict[str, torch.Tensor]) -> str:
    manifest = dict(manifest, checksum=_digest(manifest, tensors))
    return json.dumps(manifest, ensure_ascii=False, indent=1)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_file(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _fsync_write(Path(tmp), data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _atomic_folder(path: Path, files: dict[str, bytes]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        for name, data in files.items():
            _fsync_write(tmp / name, data)
        if path.exists():
            # A folder cannot be replaced in one step: move the old one aside first, so the
            # target name always holds either the old session or the new one.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.rename(old, path)
            old = None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


_PICKLE_HINT = (
    "it looks like a pickle or torch.save file; seqwidgets sessions never use pickle, "
    "so it is refused without being unpickled"
)


def _check_not_pickle(path: Path, head: bytes) -> None:
    # Pickle protocol 2+ starts with 0x80; torch.save writes a zip archive of pickles.
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise ValueError(f"{path}: {_PICKLE_HINT}")


def _open_safetensors(path: Path) -> tuple[dict[str, str] | None, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    with open(path, "rb") as f:
        head = f.read(8)
    _check_not_pickle(path, head)
    if len(head) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(head)} bytes: truncated?)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as error:  # SafetensorError and friends
        raise ValueError(
            f"{path}: not a valid safetensors file (truncated or damaged?): {error}"
        ) from None
    return metadata, tensors


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Manifest and tensors of a saved session, checked against their checksum."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such session file or folder")
    if path.is_dir():
        manifest_path, latents = path / _MANIFEST, path / _LATENTS
        for part in (manifest_path, latents):
            if not part.is_file():
                raise ValueError(f"{path}: not a seqwidgets session folder ({part.name} missing)")
        raw = manifest_path.read_bytes()
        _check_not_pickle(manifest_path, raw[:4])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{manifest_path}: not UTF-8 text: {error}") from None
        _, tensors = _open_safetensors(latents)
        where = str(manifest_path)
    else:
        metadata, tensors = _open_safetensors(path)
        if not metadata or _METADATA_KEY not in metadata:
            raise ValueError(
                f"{path}: a safetensors file but not a seqwidgets session (no "
                f"{_METADATA_KEY!r} metadata; a model checkpoint?)"
            )
        text = metadata[_METADATA_KEY]
        where = str(path)
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: the manifest is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(
            f"{where}: not a seqwidgets session (format {found!r}, expected {FORMAT!r})"
        )
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where}: session format version {version!r}; this seqwidgets reads version "
            f"{FORMAT_VERSION}" + (" (saved by a newer seqwidgets?)" if _newer(version) else "")
        )
    if manifest.get("checksum") != _digest(manifest, tensors):
        raise ValueError(
            f"{where}: checksum mismatch: the session was modified or damaged after it was "
            "saved (manifest or latents differ from what was written)"
        )
    return manifest, tensors


def _newer(version: Any) -> bool:
    return isinstance(version, int) and version > FORMAT_VERSION


def _field(entry: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"{where}: missing {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f"{where}.{key}: expected {kind}, got {value!r}")
    return value


def _chain(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of [prompt, weight]")
    chain = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], (int, float))
        ):
            raise ValueError(f"{where}: expected [prompt, weight], got {item!r}")
        chain.append((item[0], float(item[1])))
    return tuple(chain)


def _build(manifest: dict, tensors: dict[str, torch.Tensor], pipe, path) -> list[Branch]:
    """Branches from a checked manifest; raises `ValueError` before anything is shared."""
    family = detect_family(pipe)
    channels = family.latent_channels(pipe)
    dtype = family.denoiser_network(pipe).dtype
    saved = manifest.get("pipeline", {})
    if isinstance(saved, dict) and saved.get("latent_channels", channels) != channels:
        raise ValueError(
            f"{path}: the session has {saved['latent_channels']}-channel latents but this "
            f"pipeline's ({family.label}) have {channels}: load it with a pipeline of the same family"
        )
    entries = _field(manifest, "branches", list, "manifest")
    by_id: dict[int, Branch] = {}
    used: set[str] = set()
    shape = None
    for n, entry in enumerate(entries):
        where = f"branches[{n}]"
        branch_id = _field(entry, "id", int, where)
        if branch_id in by_id:
            raise ValueError(f"{where}: duplicate branch id {branch_id}")
        parent_id = entry.get("parent")
        if parent_id is not None and parent_id not in by_id:
            raise ValueError(f"{where}: parent {parent_id!r} is not an earlier branch")
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
        if parent is not None and not 0 <= fork <= len(parent.indices):
            raise ValueError(
                f"{where}: fork {fork} is beyond its parent's {len(parent.indices)} loops"
            )
        initial = None
        if _field(entry, "initial", bool, where):
            key = f"initial/{branch_id}"
            if key not in tensors:
                raise ValueError(f"{where}: tensor {key!r} missing")
            initial = tensors[key]
            used.add(key)
        frames: dict[int, Frame] = {}
        for m, item in enumerate(_field(entry, "frames", list, where)):
            fwhere = f"{where}.frames[{m}]"
            index = _field(item, "index", int, fwhere)
            if index != fork + m:
                raise ValueError(f"{fwhere}: loop {index}, expected {fork + m} (frames in order)")
            if index >= params.sequence_loop_count:
                raise ValueError(f"{fwhere}: loop {index} beyond sequence_loop_count")
            key = f"latent/{branch_id}/{index}"
            sigmas_key = _field(item, "sigmas", str, fwhere)
            for name in (key, sigmas_key):
                if name not in tensors:
                    raise ValueError(f"{fwhere}: tensor {name!r} missing")
            latent = tensors[key]
            if latent.ndim != 3 or latent.shape[0] != channels:
                raise ValueError(f"{fwhere}: latent shape {list(latent.shape)} is not [C, h, w]")
            if shape is not None and latent.shape != shape:
                raise ValueError(f"{fwhere}: latent shape {list(latent.shape)} != {list(shape)}")
            shape = latent.shape
            used.update((key, sigmas_key))
            timings = item.get("timings", {})
            frames[index] = Frame(
                index=index,
                seed=_field(item, "seed", int, fwhere),
                latent=latent.to(dtype),
                denoise=float(_field(item, "denoise", (int, float), fwhere)),
                positive=_chain(item.get("positive"), f"{fwhere}.positive"),
                negative=_chain(item.get("negative"), f"{fwhere}.negative"),
                sigmas=tensors[sigmas_key],
                timings=dict(timings) if isinstance(timings, dict) else {},
            )
        name = _field(entry, "name", str, where)
        by_id[branch_id] = Branch(branch_id, name, params, parent, fork, frames, initial)
    extra = sorted(set(tensors) - used)
    if extra:
        raise ValueError(f"{path}: tensors not described by the manifest: {', '.join(extra[:5])}")
    return list(by_id.values())
