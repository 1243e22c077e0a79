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

Files (``save`` / ``Session.load``): the format is `seqwidgets.session_io`'s; a JSON manifest
plus safetensors latents, in one ``.safetensors`` file or a folder. Saves are atomic and replace
only a seqwidgets session; loads check everything first. Nothing is ever unpickled.

Example:
    >>> import seqwidgets as sw
    >>> session = sw.Session(sw.testing.tiny_pipeline())
    >>> run = session.run(sw.SequenceParams(steps=2, sequence_loop_count=3))
    >>> alt = session.branch((run, 0), positive_seq="0: a red circle")
    >>> alt.fork, alt.indices
    (1, [0, 1, 2])
"""

from __future__ import annotations

import os
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
from . import session_io
from .decode import ImageCache, decode_latents, thumbnail
from .engine import CancelToken, SequenceSampler, StepCallback
from .frames import Frame
from .params import SequenceParams

__all__ = ["FORMAT", "FORMAT_VERSION", "Branch", "Session"]

FORMAT = session_io.FORMAT
#: The id of `Session.draft`'s branch: no listed branch has it (their ids start at 1).
DRAFT_ID = 0
FORMAT_VERSION = session_io.FORMAT_VERSION

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
        decoder (*optional*): ``decoder(latent, vae) -> PIL image``, how a frame's image is
            made with the pipeline's VAE; ``None``: `decode_latents`, here. It must give the
            same pixels (the studio sets a `seqwidgets.decode_process.DecodeProcess`'s
            ``decode``).
    """

    def __init__(
        self, pipe, *, image_cache_items: int = 256, image_cache_bytes: int | None = 128 * 2**20
    ):
        self.pipe = pipe
        self.sampler = SequenceSampler(pipe)
        self.last_error: BaseException | None = None
        self.decoder: Callable[[torch.Tensor, Any], Image.Image] | None = None
        self._images = ImageCache(image_cache_items, image_cache_bytes)
        self._thumbnails = ImageCache(4 * image_cache_items, 16 * 2**20)
        # Per-frame measures, keyed (owner id, loop) and held with the frame they describe.
        self._metric_rows: dict[tuple[int, int], tuple[Frame, dict[str, float]]] = {}
        self._color_stats: dict[tuple[int, int], tuple[Frame, Any]] = {}
        self._branches: list[Branch] = []
        self._next_id = 1
        self._lock = threading.RLock()  # guards the tree (branches, frames dicts)
        self._busy = threading.Lock()  # held for the whole of a run
        self._active: Branch | None = None
        self._draft: Branch | None = None  # the studio's live draft: readable, never listed
        self._cancel = CancelToken()  # the current run's; a new one per run
        self._stopped = False

    def __repr__(self) -> str:
        with self._lock:
            branches = list(self._branches)
        frames = sum(len(branch.frames) for branch in branches)
        state = "running" if self.running else "stopped" if self._stopped else "idle"
        return (
            f"<Session {self.sampler.family.name}: {len(branches)} branch(es), {frames} "
            f"frame(s), {state}>"
        )

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
        latent, decode = owner.frames[index].latent, self.decoder or _decode_here
        return self._images.get((owner.id, index), lambda: decode(latent, self.pipe.vae))

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
        cancel: CancelToken | None = None,
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
            cancel (`CancelToken`, *optional*): the run's stop request, for a caller that
                starts the run on a thread of its own: cancelling it stops the run even before
                the run has begun (`stop` cancels it too). Default: a new one.

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
            self._begin(cancel)
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
        with self._running(cancel):
            branch = self._new_branch(params, None, 0, initial, name)
            self._compute(branch, 0, callback, on_frame)
        return branch

    def branch(
        self,
        frame: FrameRef,
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        cancel: CancelToken | None = None,
        name: str | None = None,
        **changes: Any,
    ) -> Branch:
        """Fork after ``frame`` with ``changes`` and compute the loops that follow it.

        Args:
            frame: a `Frame` of this session, or ``(branch, index)``.
            cancel (`CancelToken`, *optional*): the run's stop request, as for `run`.
            **changes: settings to change (any `SequenceParams` field), applied to the loops
                after ``frame``. With no changes the new frames equal the original ones bitwise.

        Branching at loop ``k`` of ``n`` costs ``n - k - 1`` loops of model calls (``steps``
        calls a loop for one-call samplers such as ``euler``; `SamplerSpec.loop_calls` gives the
        count for the others) and no call for loops ``0..k``. Returns the new branch, which shares loops ``0..k``.
        """
        parent, index = self._resolve(frame)
        name = name or Branch.fork_name(parent, index + 1)
        return self._fork(parent, index, index + 1, changes, callback, on_frame, name, cancel)

    def branch_many(
        self,
        frame: FrameRef,
        changes: list[dict[str, Any]],
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        cancel: CancelToken | None = None,
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
        with self._running(cancel):
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
        cancel: CancelToken | None = None,
        name: str | None = None,
        **changes: Any,
    ) -> Branch:
        """Like `branch`, but recompute ``frame`` itself too (the new branch forks at its loop)."""
        parent, index = self._resolve(frame)
        name = name or Branch.fork_name(parent, index)
        return self._fork(parent, index, index, changes, callback, on_frame, name, cancel)

    def extend(
        self,
        branch: Branch,
        loops: int,
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        cancel: CancelToken | None = None,
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
        with self._running(cancel):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # keyframes still beyond the end
                branch.params = branch.params.replace(sequence_loop_count=count)
            start = branch.fork + len(branch.frames)
            self._compute(branch, start, callback, on_frame)
        return branch

    # -- the live draft -------------------------------------------------------------------------

    @property
    def current_draft(self) -> Branch | None:
        """The draft made by `draft` and not yet kept nor discarded, or ``None``."""
        return self._draft

    def draft(
        self,
        frame: FrameRef,
        *,
        callback: StepCallback | None = None,
        on_frame: FrameCallback | None = None,
        cancel: CancelToken | None = None,
        **changes: Any,
    ) -> Branch:
        """Compute what ``branch(frame, **changes)`` would, as the session's one **draft**: a
        branch that is not listed in `branches` (nor saved, nor given an id) until
        `keep_draft`. A new draft replaces the previous one (`discard_draft`).

        Its frames equal, bit for bit, those of `branch` with the same changes. `frame`,
        `image` and `thumbnail` read it like any branch; nothing can fork from it.

        Example:
            >>> import seqwidgets as sw
            >>> session = sw.Session(sw.testing.tiny_pipeline())
            >>> run = session.run(sw.SequenceParams(sequence_loop_count=3, steps=2))
            >>> draft = session.draft((run, 0), denoise_seq=0.5)
            >>> draft.name, draft.indices, len(session.branches)
            ('draft', [0, 1, 2], 1)
            >>> session.keep_draft().name, len(session.branches)
            ('run 1 > from loop 1', 2)
        """
        parent, index = self._resolve(frame)
        self.discard_draft()
        return self._fork(
            parent, index, index + 1, changes, callback, on_frame, "draft", cancel, listed=False
        )

    def keep_draft(self, name: str | None = None) -> Branch:
        """List the draft as an ordinary branch (a new id, ``name`` or the usual fork name) and
        return it; the session then has no draft.

        Raises:
            `ValueError`: no draft, or the branch it started from was deleted.
            `RuntimeError`: the draft is still being computed.
        """
        draft = self._draft
        if draft is None:
            raise ValueError("there is no draft to keep")
        if self._active is draft:
            raise RuntimeError("the draft is still running; stop() it and wait before keeping it")
        self._check(draft.parent)  # deleted since: its frames would be lost
        name = session_io.check_text(str(name), "name") if name is not None else None
        with self._lock:
            if self._next_id >= session_io.MAX_BRANCH_ID:
                raise ValueError(
                    f"this session has used every branch id (next id {self._next_id}); "
                    "save its branches into a new session"
                )
            draft.id, self._next_id = self._next_id, self._next_id + 1
            draft.name = name or Branch.fork_name(draft.parent, draft.fork)
            self._branches.append(draft)
            self._draft = None
        self._forget({DRAFT_ID})  # images cached under the id the branch no longer has
        return draft

    def discard_draft(self) -> None:
        """Drop the draft (if any): its frames, cached images and the prompt encodings only it
        used are freed; the session is as it was before the draft.

        Raises:
            `RuntimeError`: the draft is still being computed.
        """
        draft = self._draft
        if draft is None:
            return
        if self._active is draft:
            raise RuntimeError("the draft is still running; stop() it and wait before discarding")
        with self._lock:
            self._draft = None
            draft.frames.clear()
        self._forget({DRAFT_ID})

    def stop(self) -> None:
        """Stop the current run at the next model step; finished frames are kept.

        Safe to call from any thread; does nothing when no run is in progress.
        """
        if self._busy.locked():
            self._cancel.cancel()

    def delete(self, branch: Branch, *, recursive: bool = False) -> None:
        """Remove ``branch`` and free its frames, cached images and the prompt encodings that no
        remaining branch uses.

        Raises:
            `ValueError`: other branches fork from it and ``recursive`` is False.
            `RuntimeError`: a run in progress uses it.
        """
        self._check(branch)
        if branch is self._draft:
            raise ValueError("the draft is not a branch of the session: discard_draft() drops it")
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
            for b in doomed:
                self._branches.remove(b)
                b.frames.clear()
                b.initial = None
        self._forget({b.id for b in doomed})

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
        return BranchDiff(settings, pairs, (a.name, b.name))

    def _metrics_row(self, branch: Branch, index: int) -> dict[str, float]:
        """The metrics row of loop ``index``, cached per frame (its owner and loop)."""
        from .metrics import color_stats, loop_metrics
        from .plan import keyframe_start

        rows, stats = self._metric_rows, self._color_stats
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
        if format not in _export.EXPORT_FORMATS:
            allowed = ", ".join(_export.EXPORT_FORMATS)
            raise ValueError(f"format: {format!r} is unknown; allowed: {allowed}")
        self._check(branch)
        if upto is not None:
            last = branch.indices[-1] if branch.indices else None
            if type(upto) is not int or last is None or not 0 <= upto <= last:
                shown = "none computed yet" if last is None else f"an int from 0 to {last}"
                raise ValueError(
                    f"upto: {upto!r} is not a loop of branch {branch.id}; allowed: {shown}"
                )
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
        frame's metadata, the pipeline it was made with, the format version and a SHA-256
        checksum. Decoded images are not saved (they are decoded again on demand).

        The write is atomic, even if the process is killed: the path then holds the previous
        session or the new one (a folder moved aside is put back by the next `load` or `save`).
        Saves of one path by several processes take turns (a lock beside it, which the system
        frees when a process dies); the last to finish wins. Latents in a float type a session
        does not store (float8) are saved as float32, which holds them exactly.

        Args:
            path: a ``.safetensors`` file or a folder.
            overwrite (`bool`, defaults to `False`): replace an existing session. Anything that
                is not a seqwidgets session (a model checkpoint, a folder of other files) is
                never replaced.

        Raises:
            `FileExistsError`: ``path`` exists and ``overwrite`` is False, or it is not a
                session. `ValueError`: a branch name that cannot be written (a lone surrogate),
                ``path`` is a FIFO, socket or device, or a ``.safetensors`` file cannot hold the
                manifest (over 100 MB: save to a folder).
        """
        with self._lock:
            manifest, tensors = session_io.snapshot(self._branches, self._next_id, self.sampler)
        return session_io.write(path, manifest, tensors, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, pipe, **options: Any) -> Session:
        """Read a session written by `save` (a ``.safetensors`` file or a folder).

        Everything is checked before a session is built: the format and its exact version, the
        checksum (an edited or damaged file is refused), the tree, and every latent (finite,
        of the shape its settings give). A pickle or ``torch.save`` file is refused without
        being unpickled. A session saved with another pipeline class or other weights loads
        with a `UserWarning`; one whose latents have another channel count than ``pipe``'s is
        refused. Each file is read through one descriptor, so a save by another process
        meanwhile gives the old session or the new one, never a mix.

        Args:
            path: the file or folder.
            pipe: the pipeline to attach (the latents are cast to its dtype).
            **options: passed to `Session` (``image_cache_items``...).

        Raises:
            `ValueError`: saying what is wrong with the file (a FIFO or device is refused
                without being opened). `FileNotFoundError`.
        """
        session = cls(pipe, **options)
        saved, next_id = session_io.read(path, session.sampler)
        by_id: dict[int, Branch] = {}
        for b in saved:
            parent = None if b.parent is None else by_id[b.parent]
            by_id[b.id] = Branch(b.id, b.name, b.params, parent, b.fork, b.frames, b.initial)
        session._branches = list(by_id.values())
        session._next_id = next_id
        return session

    # -- internals -----------------------------------------------------------------------------

    def _forget(self, ids: set[int]) -> None:
        """Free the cached images and measures of branches ``ids`` (already out of the tree),
        and the prompt encodings that no remaining branch uses."""
        for cache in (self._images, self._thumbnails):
            cache.discard(lambda key: key[0] in ids)
        for table in (self._metric_rows, self._color_stats):  # they hold frames: free them too
            for key in [key for key in table if key[0] in ids]:
                del table[key]
        # Prompt encodings that no remaining branch can use again (a re-run or branch of a kept
        # branch still finds all of its own).
        with self._lock:
            used = {
                prompt
                for b in self._branches
                for _, prompt in b.params.positive_keyframes + b.params.negative_keyframes
            }
        self.sampler.encoder.keep_only(used)

    def _check(self, branch: Branch) -> None:
        if not isinstance(branch, Branch):
            raise TypeError(f"expected a Branch, got {type(branch).__name__}")
        with self._lock:
            if branch is not self._draft and not any(b is branch for b in self._branches):
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

    def _fork(
        self, parent, index, fork, changes, callback, on_frame, name, cancel, listed=True
    ) -> Branch:
        """A branch of ``parent`` computing loops ``fork..``; loop ``index`` must stay in it.
        Unlisted, it is the session's draft instead (see `draft`)."""
        if parent is self._draft:
            raise ValueError("a branch cannot start from the draft: keep_draft() it first")
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
        with self._running(cancel):
            if listed:
                branch = self._new_branch(params, parent, fork, initial, name)
            else:
                branch = self._draft = Branch(DRAFT_ID, name, params, parent, fork, {}, initial)
            self._compute(branch, fork, callback, on_frame)
        return branch

    def _new_branch(self, params, parent, fork, initial, name) -> Branch:
        if name is not None:
            name = session_io.check_text(str(name), "name")  # before an id is taken
        with self._lock:
            branch_id = self._next_id
            if branch_id >= session_io.MAX_BRANCH_ID:  # a file forged at the top of the range
                raise ValueError(
                    f"this session has used every branch id (next id {branch_id}); "
                    "save its branches into a new session"
                )
            self._next_id += 1
            if name is None:
                name = f"run {branch_id}"
            branch = Branch(branch_id, name, params, parent, fork, {}, initial)
            self._branches.append(branch)
        return branch

    @contextmanager
    def _running(self, cancel: CancelToken | None = None) -> Iterator[None]:
        self._begin(cancel)
        try:
            yield
        finally:
            self._end()

    def _begin(self, cancel: CancelToken | None = None) -> None:
        """Claim the session for one run, with its cancel token (a new one unless the caller
        made it before starting the run); released by `_end`."""
        if not self._busy.acquire(blocking=False):
            active = self._active
            what = f" (branch {active.id}, {active.name})" if active is not None else ""
            raise RuntimeError(
                f"a run is already in progress in this session{what}; call stop() and wait for "
                "it to return before starting another"
            )
        self._cancel = CancelToken() if cancel is None else cancel
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
            earlier=_Loops(self, branch),  # colour coherence: references, decoded images
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


# -- helpers -----------------------------------------------------------------------------------------


class _Loops:
    """The loops of ``branch`` computed so far, for colour coherence: ``loops(i)`` is loop
    ``i``'s latent, ``loops.image(i)`` its image from the session's cache, decoded once for
    coherence, thumbnails, the preview and the metrics alike."""

    def __init__(self, session: Session, branch: Branch):
        self.session, self.branch = session, branch

    def __call__(self, index: int) -> torch.Tensor:
        return self.session.frame(self.branch, index).latent

    def image(self, index: int) -> Image.Image:
        return self.session.image(self.branch, index)


def _decode_here(latent: torch.Tensor, vae) -> Image.Image:
    return decode_latents(vae, latent)[0]


def _one_at_a_time(frames: Iterator[Frame]) -> Iterator[list[Frame]]:
    """A run's frames as one-item batches (closing this closes the run)."""
    with closing(frames):
        for frame in frames:
            yield [frame]
