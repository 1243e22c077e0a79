"""Session: branch / rerun / extend without recomputing the prefix, delete, stop, save, load, export.

Every run uses the tiny random pipeline, 2 steps and at most 5 loops.
"""

import errno
import gc
import json
import os
import pickle
import sys
import threading
import weakref

import pytest
import torch
from PIL import Image

import seqwidgets as sw
from seqwidgets import session_io
from seqwidgets.session import Branch, Session

STEPS = 2
N = 4
PARAMS = dict(steps=STEPS, sequence_loop_count=N, positive_seq="0: a red circle", cfg=4.0)


def same(a, b):
    return torch.equal(a.latent, b.latent)


@pytest.fixture(scope="module")
def base(tiny_pipe):
    """A session with one finished root run; tests may add branches but not delete it."""
    session = Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**PARAMS))
    return session, root


@pytest.fixture
def fresh(tiny_pipe):
    return Session(tiny_pipe)


# -- runs and branches -------------------------------------------------------------------------


def test_run_is_a_root_branch_holding_the_samplers_frames(tiny_pipe, fresh):
    params = sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 3})
    seen = []
    root = fresh.run(params, on_frame=lambda b, f: seen.append((b, f.index)))
    assert fresh.branches == [root] and root.parent is None and root.fork == 0
    assert seen == [(root, 0), (root, 1), (root, 2)]
    assert root.indices == root.own_indices == [0, 1, 2] and root.is_complete
    expected = sw.SequenceSampler(tiny_pipe).sample(params)
    assert torch.equal(torch.stack([f.latent for f in fresh.path(root)]), expected)
    latent = fresh.frame(root, 1).latent
    assert latent.device.type == "cpu" and latent.dtype == tiny_pipe.unet.dtype
    assert not fresh.running and fresh.last_error is None


def test_branch_without_changes_reproduces_the_original_bitwise(base):
    session, root = base
    branch = session.branch((root, 1))
    assert branch.parent is root and branch.fork == 2 and branch.own_indices == [2, 3]
    assert branch.indices == [0, 1, 2, 3] and branch.is_complete
    for i in range(N):
        assert same(session.frame(branch, i), session.frame(root, i))
    # The shared prefix is the parent's frames themselves, not copies.
    assert session.frame(branch, 1) is session.frame(root, 1)
    assert session.frame(branch, 2) is not session.frame(root, 2)


def test_branching_costs_only_the_loops_after_the_fork(base, tiny_pipe, record):
    session, root = base
    unet, text = record(tiny_pipe.unet), record(tiny_pipe.text_encoder)
    for k in range(N):
        before = len(unet)
        session.branch((root, k))
        assert len(unet) - before == (N - k - 1) * STEPS
    assert len(text) == 0  # prompts already encoded by the original run
    before = len(unet)
    session.rerun((root, 2))
    assert len(unet) - before == (N - 2) * STEPS


def test_a_new_prompt_from_the_next_loop_costs_one_encoding(base, tiny_pipe, record):
    session, root = base
    unet, text = record(tiny_pipe.unet), record(tiny_pipe.text_encoder)
    branch = session.branch((root, 1), positive_seq="0: a red circle\n2: a blue square")
    assert len(text) == 1 and len(unet) == (N - 2) * STEPS
    assert session.frame(branch, 2).prompt == "a blue square"
    assert session.frame(branch, 1).prompt == "a red circle"


def test_changing_only_the_seed_changes_what_follows_the_fork_and_nothing_before(base):
    session, root = base
    branch = session.branch((root, 1), seed=7)
    for i in (0, 1):
        assert session.frame(branch, i) is session.frame(root, i)
    for i in (2, 3):
        assert not same(session.frame(branch, i), session.frame(root, i))
    # The seed schedule stays aligned with the loop numbers of the full sequence.
    seeds = sw.seed_sequence(root.params.replace(seed=7))
    assert [session.frame(branch, i).seed for i in (2, 3)] == seeds[2:]
    assert branch.params == root.params.replace(seed=7)


def test_rerun_recomputes_the_frame_itself(base):
    session, root = base
    again = session.rerun((root, 2))
    assert again.fork == 2 and again.own_indices == [2, 3]
    assert all(same(session.frame(again, i), session.frame(root, i)) for i in range(N))
    changed = session.rerun(session.frame(root, 2), seed=11)  # a Frame works as well as a pair
    assert changed.parent is root
    assert session.frame(changed, 1) is session.frame(root, 1)
    assert not same(session.frame(changed, 2), session.frame(root, 2))
    whole = session.rerun((root, 0))
    assert whole.fork == 0 and all(
        same(session.frame(whole, i), session.frame(root, i)) for i in range(N)
    )


def test_branches_of_branches_form_a_tree(base):
    session, root = base
    child = session.branch((root, 0), seed=3)
    grandchild = session.branch((child, 2), seed=5)
    assert grandchild.parent is child and child.parent is root and grandchild.root is root
    assert session.children(child) == [grandchild]
    path = session.path(grandchild)
    assert [f.index for f in path] == [0, 1, 2, 3]
    assert path[0] is session.frame(root, 0)
    assert path[1] is session.frame(child, 1) and path[2] is session.frame(child, 2)
    assert path[3] is grandchild.frames[3]
    assert session.path(grandchild, 1) == path[:2]
    # Branching from a loop a branch shares with its parent keeps the branch's own settings.
    shared = session.branch((grandchild, 0))
    assert shared.parent is grandchild and shared.params == grandchild.params
    assert session.frame(shared, 0) is session.frame(root, 0)


def test_extend_continues_a_finished_branch(fresh, tiny_pipe, record):
    params = sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 2})
    root = fresh.run(params)
    unet = record(tiny_pipe.unet)
    assert fresh.extend(root, 2) is root
    assert len(unet) == 2 * STEPS and root.params.sequence_loop_count == 4
    assert root.indices == [0, 1, 2, 3] and root.is_complete
    longer = sw.SequenceSampler(tiny_pipe).sample(params.replace(sequence_loop_count=4))
    assert torch.equal(torch.stack([f.latent for f in fresh.path(root)]), longer)
    with pytest.raises(ValueError, match="1024"):
        fresh.extend(root, 1021)


def test_delete_frees_its_frames_and_leaves_the_others_intact(fresh):
    root = fresh.run(sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 3}))
    child = fresh.branch((root, 0), seed=9)
    grandchild = fresh.branch((child, 1))
    kept = fresh.branch((root, 1), seed=4)
    fresh.metrics(child)  # the measures hold their frames: deleting must free those too
    fresh._images.clear()
    fresh.image(child, 2)
    fresh.image(root, 0)
    refs = [weakref.ref(child.frames[i].latent) for i in child.own_indices]
    kept_latents = [f.latent.clone() for f in fresh.path(kept)]

    with pytest.raises(ValueError, match="forked from it"):
        fresh.delete(child)
    assert fresh.branches == [root, child, grandchild, kept]
    fresh.delete(child, recursive=True)
    assert fresh.branches == [root, kept]
    assert child.frames == {} and grandchild.frames == {}
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert fresh._images.keys() == [(root.id, 0)]  # the deleted branch's image is dropped
    for frame, latent in zip(fresh.path(kept), kept_latents, strict=True):
        assert torch.equal(frame.latent, latent)
    with pytest.raises(ValueError, match="not in this session"):
        fresh.frame(child, 0)
    with pytest.raises(ValueError, match="not in this session"):
        fresh.branch((grandchild, 0))
    fresh.delete(kept)
    assert fresh.branches == [root]


def test_bad_references_and_changes_are_clear_errors(base, tiny_pipe):
    session, root = base
    with pytest.raises(IndexError, match="no loop 9"):
        session.frame(root, 9)
    with pytest.raises(ValueError, match="unknown parameter"):
        session.branch((root, 0), sed=1)
    with pytest.raises(IndexError, match="no loop -1"):
        session.frame(root, -1)
    with pytest.raises(ValueError, match="ends before loop 2: it must be at least 3"):
        session.branch((root, 2), sequence_loop_count=2)
    with pytest.raises(ValueError, match="ends before loop 2"):
        session.rerun((root, 2), sequence_loop_count=2)
    count = len(session.branches)
    with pytest.raises(ValueError, match="multiple of 8"):
        session.run(root.params.replace(width=100))
    assert len(session.branches) == count  # nothing listed for a run refused up front
    with pytest.raises(ValueError, match="width / height"):
        session.branch((root, 0), width=128)
    with pytest.raises(TypeError, match="Frame or a"):
        session.branch(root)
    other = Session(tiny_pipe)
    with pytest.raises(ValueError, match="not in this session"):
        other.frame(root, 0)
    with pytest.raises(ValueError, match="does not belong"):
        other.branch(root.frames[0])


def test_rerun_from_loop_zero_reuses_the_runs_input_latent(fresh):
    latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))
    params = sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 2, "denoise_start": 0.6})
    root = fresh.run(params, latent_image=latent)
    assert torch.equal(root.initial[0], latent)
    again = fresh.rerun((root, 0))
    assert all(same(fresh.frame(again, i), fresh.frame(root, i)) for i in range(2))


# -- stop, errors, concurrency -----------------------------------------------------------------


def test_stop_keeps_the_finished_frames_and_extend_completes_the_run(fresh, tiny_pipe):
    params = sw.SequenceParams(**PARAMS)

    def stop_in_loop_2(loop, step, sigma, denoised):
        if loop == 2:
            fresh.stop()

    root = fresh.run(params, callback=stop_in_loop_2)
    assert root.indices == [0, 1] and not root.is_complete and fresh.last_error is None
    assert fresh.stopped
    fresh.extend(root, 0)
    assert root.is_complete and not fresh.stopped
    # A stop while a frame is being drawn ends the run after that frame.
    short = fresh.run(params, on_frame=lambda branch, frame: fresh.stop())
    assert short.indices == [0] and fresh.stopped
    expected = sw.SequenceSampler(tiny_pipe).sample(params)
    assert torch.equal(torch.stack([f.latent for f in fresh.path(root)]), expected)


def test_a_run_that_raises_keeps_its_frames_and_the_session_keeps_working(fresh):
    class Boom(Exception):
        pass

    def fail_in_loop_2(loop, step, sigma, denoised):
        if loop == 2:
            raise Boom("loop 2")

    with pytest.raises(Boom):
        fresh.run(sw.SequenceParams(**PARAMS), callback=fail_in_loop_2)
    (broken,) = fresh.branches
    assert broken.indices == [0, 1] and isinstance(fresh.last_error, Boom)
    assert not fresh.running
    fixed = fresh.branch((broken, 1))
    assert fixed.is_complete and fresh.last_error is None


def test_a_second_run_while_one_is_going_is_refused(fresh):
    started, release = threading.Event(), threading.Event()
    params = sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 2})

    def wait(loop, step, sigma, denoised):
        started.set()
        release.wait(30)

    worker = threading.Thread(target=lambda: fresh.run(params, callback=wait))
    worker.start()
    try:
        assert started.wait(60)
        assert fresh.running
        with pytest.raises(RuntimeError, match="already in progress"):
            fresh.run(params)
        (running,) = fresh.branches
        with pytest.raises(RuntimeError, match="is running"):
            fresh.delete(running)
        fresh.stop()  # from this thread, while the worker runs
    finally:
        release.set()
        worker.join(60)
    assert not fresh.running and running.indices == []


# -- images and export ---------------------------------------------------------------------------


def test_images_are_decoded_once_cached_and_decoded_again_after_eviction(tiny_pipe, record):
    session = Session(tiny_pipe, image_cache_items=2)
    root = session.run(sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 3}))
    branch = session.branch((root, 0))
    decoder = record(tiny_pipe.vae.decoder)
    first = session.image(root, 0)
    assert isinstance(first, Image.Image) and first.size == (64, 64)
    assert session.image(branch, 0) is first  # a shared frame is one cache entry
    assert len(decoder) == 1
    session.image(root, 1)
    session.image(root, 2)  # evicts loop 0
    again = session.image(root, 0)
    assert len(decoder) == 4 and again is not first
    assert list(again.getdata()) == list(first.getdata())
    thumb = session.thumbnail(root, 0, 32)
    assert thumb.size == (32, 32) and session.thumbnail(root, 0, 32) is thumb


def test_export_of_a_branch_and_of_a_path_to_a_frame(base, tmp_path):
    session, root = base
    branch = session.branch((root, 1), seed=13)
    gif = session.export(branch, tmp_path / "branch.gif")
    with Image.open(gif) as image:
        assert image.n_frames == N
    pngs = session.export(branch, tmp_path / "frames", format="png", upto=2)
    assert [p.name for p in pngs] == ["loop_0000.png", "loop_0001.png", "loop_0002.png"]
    with Image.open(pngs[2]) as image:
        assert image.tobytes() == session.image(branch, 2).tobytes()
    sheet = session.export(branch, tmp_path / "sheet.png", format="contact_sheet")
    with Image.open(sheet) as image:
        assert image.width > 2 * 64 and image.height > 2 * 64
    with pytest.raises(FileExistsError, match="overwrite=True"):
        session.export(branch, gif)
    session.export(branch, gif, overwrite=True, upto=0)
    with Image.open(gif) as image:
        assert image.n_frames == 1
    with pytest.raises(ValueError, match="allowed: gif, mp4, png, contact_sheet"):
        session.export(branch, tmp_path / "x.webm", format="webm")


def test_mp4_export_without_ffmpeg_says_what_to_install(base, tmp_path, monkeypatch):
    session, root = base
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(ImportError, match=r"seqwidgets\[video\]"):
        session.export(root, tmp_path / "run.mp4", format="mp4")
    assert not (tmp_path / "run.mp4").exists()


def test_mp4_export(base, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    session, root = base
    path = session.export(root, tmp_path / "run.mp4", format="mp4")
    assert path.stat().st_size > 0


# -- save and load -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_tree(tiny_pipe):
    """A session with a root, a branch, a branch of the branch and a stopped run."""
    session = Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 3}))
    child = session.branch((root, 0), seed=21, name="seed 21")
    session.rerun((child, 2), positive_seq="0: a blue square")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    session.run(
        sw.SequenceParams(**{**PARAMS, "sequence_loop_count": 2, "denoise_start": 0.5}),
        latent_image=latent,
    )
    return session


@pytest.mark.parametrize("name", ["session.safetensors", "session_folder"])
def test_save_load_round_trip(saved_tree, tiny_pipe, tmp_path, name):
    path = saved_tree.save(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind
    loaded = Session.load(path, tiny_pipe)
    assert len(loaded.branches) == len(saved_tree.branches)
    for old, new in zip(saved_tree.branches, loaded.branches, strict=True):
        assert (new.id, new.name, new.fork, new.params) == (old.id, old.name, old.fork, old.params)
        assert (new.parent and new.parent.id) == (old.parent and old.parent.id)
        assert new.own_indices == old.own_indices
        for i in new.own_indices:
            a, b = old.frames[i], new.frames[i]
            assert torch.equal(a.latent, b.latent) and a.latent.dtype == b.latent.dtype
            assert (a.seed, a.denoise, a.positive, a.negative) == (
                b.seed,
                b.denoise,
                b.positive,
                b.negative,
            )
            assert torch.equal(a.sigmas, b.sigmas)
        assert (old.initial is None) == (new.initial is None)
        if old.initial is not None:
            assert torch.equal(old.initial, new.initial)
    assert loaded.branches[2].parent is loaded.branches[1]
    # A loaded session branches on as the original does, and never reuses an id.
    old_child, new_child = saved_tree.branches[1], loaded.branches[1]
    again = loaded.branch((new_child, 0))
    assert again.id > max(b.id for b in saved_tree.branches)
    for i in range(3):
        assert torch.equal(loaded.frame(again, i).latent, saved_tree.frame(old_child, i).latent)


def test_save_refuses_to_clobber_and_writes_atomically(saved_tree, tmp_path, monkeypatch):
    for name in ("s.safetensors", "folder"):
        path = saved_tree.save(tmp_path / name)
        with pytest.raises(FileExistsError, match="overwrite=True"):
            saved_tree.save(path)
        before = sorted(p.name for p in tmp_path.rglob("*"))
        data = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

        def crash(fd):
            raise OSError(errno.ENOSPC, "disk full")

        monkeypatch.setattr(os, "fsync", crash)
        with pytest.raises(OSError, match="disk full"):
            saved_tree.save(path, overwrite=True)
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
        assert all(p.read_bytes() == content for p, content in data.items())
        saved_tree.save(path, overwrite=True)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before


def _rewrite_folder_manifest(folder, edit, reseal=False):
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    if reseal:
        from safetensors.torch import load_file

        text = session_io.seal(manifest, load_file(folder / "latents.safetensors"))
    else:
        text = json.dumps(manifest)
    manifest_path.write_text(text)


def test_damaged_edited_and_foreign_files_are_refused(saved_tree, tiny_pipe, tmp_path):
    from safetensors.torch import save_file

    def refused(path, match):
        with pytest.raises(ValueError, match=match):
            Session.load(path, tiny_pipe)

    good = saved_tree.save(tmp_path / "good.safetensors")
    data = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    refused(truncated, "truncated or damaged")
    (tmp_path / "tiny.safetensors").write_bytes(data[:5])
    refused(tmp_path / "tiny.safetensors", "truncated")

    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # a byte of the last latent
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    refused(tmp_path / "flipped.safetensors", "checksum mismatch")

    folder = saved_tree.save(tmp_path / "edited")
    _rewrite_folder_manifest(folder, lambda m: m["branches"][0]["frames"][1].update(seed=5))
    refused(folder, "checksum mismatch")

    folder = saved_tree.save(tmp_path / "resealed")
    _rewrite_folder_manifest(folder, lambda m: m["branches"][1].update(parent=99), reseal=True)
    refused(folder, r"branches\[1\]: parent 99 is not an earlier branch")

    folder = saved_tree.save(tmp_path / "newer")
    _rewrite_folder_manifest(folder, lambda m: m.update(version=99), reseal=True)
    refused(folder, "version 99.*newer")

    weights = tmp_path / "model.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, weights)
    refused(weights, "not a seqwidgets session.*checkpoint")

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"format": "something else"}')
    save_file({"x": torch.zeros(1)}, tmp_path / "other" / "latents.safetensors")
    refused(tmp_path / "other", "not a seqwidgets session")
    refused(tmp_path, "manifest.json missing")

    (tmp_path / "pickled.safetensors").write_bytes(pickle.dumps({"x": 1}))
    refused(tmp_path / "pickled.safetensors", "pickle")
    torch.save({"x": torch.zeros(1)}, tmp_path / "torch.safetensors")
    refused(tmp_path / "torch.safetensors", "pickle")
    folder = saved_tree.save(tmp_path / "pickled_folder")
    torch.save({"x": torch.zeros(1)}, folder / "latents.safetensors")
    refused(folder, "pickle")

    with pytest.raises(FileNotFoundError):
        Session.load(tmp_path / "missing.safetensors", tiny_pipe)


def test_branch_repr_and_fields(base):
    session, root = base
    assert isinstance(root, Branch) and isinstance(root.id, int) and root.name == "run 1"
    assert "frames=4/4" in repr(root)
