"""What the studio costs the engine: one decode per frame, drawing off the sampling thread,
previews that still arrive, the newest preview winning, and the same latents as the engine."""

import threading
import time
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets.widgets.display import DisplayWorker


def params(**kwargs):
    kwargs.setdefault("steps", 2)
    kwargs.setdefault("sequence_loop_count", 4)
    kwargs.setdefault("positive_seq", "0: a red circle\n2: a blue square")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**kwargs)


def count_vae_decodes(pipe) -> list:
    """Record each call of the pipeline's VAE decoder (every path to pixels goes through it)."""
    calls, decode = [], pipe.vae.decode

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return decode(*args, **kwargs)

    pipe.vae.decode = counted
    return calls


# -- one decode per frame ------------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [True, False])
def test_a_frame_is_decoded_once_for_coherence_thumbnail_preview_and_metrics(threaded):
    pipe = sw.testing.tiny_pipeline()
    studio = sw.Studio(pipe, threaded=threaded, live_preview=False)
    studio.session  # noqa: B018 (the session, before counting)
    decodes = count_vae_decodes(pipe)
    run = studio.run(wait=True, **params(color_coherence="lab").to_dict())
    for index in run.indices:  # the large preview of every frame, and its metrics row
        studio.select(run, index)
    assert [row["loop"] for row in studio.session.metrics(run)] == [0, 1, 2, 3]
    assert studio.timeline.row(run.id).done == {0, 1, 2, 3}  # every thumbnail drawn
    # Loop 0 is the colour reference of loops 1-3 and each of loops 0-2 is matched before the
    # next loop: coherence, thumbnails, the preview and the strip share one decode of each.
    assert sum(decodes) == 4


def test_a_branch_with_coherence_decodes_only_its_own_new_frames():
    pipe = sw.testing.tiny_pipeline()
    session = sw.Session(pipe)
    run = session.run(params(color_coherence="lab", sequence_loop_count=5))
    for index in run.indices:
        session.thumbnail(run, index, 56)
    decodes = count_vae_decodes(pipe)
    alt = session.branch((run, 2), cfg=3.0)  # loops 3, 4: matched to loop 0, from loops 2, 3
    for index in alt.indices:
        session.thumbnail(alt, index, 56)
    assert sum(decodes) == 2  # loops 3 and 4 of the branch; loops 0-2 are the run's, cached


@pytest.mark.parametrize("coherence", ["none", "lab", "latent"])
def test_the_studios_latents_equal_the_engines_bit_for_bit(coherence):
    pipe = sw.testing.tiny_pipeline()
    settings_ = params(color_coherence=coherence, sequence_loop_count=5)
    expected = sw.SequenceSampler(pipe).sample(settings_)  # decodes on its own
    studio = sw.Studio(pipe, threaded=True)
    run = studio.run(wait=True, **settings_.to_dict())
    got = torch.stack([studio.session.frame(run, i).latent for i in run.indices])
    assert torch.equal(got, expected)
    alt = studio.session.branch((run, 1))  # a branch reads loop 0's image from the cache
    assert torch.equal(torch.stack([studio.session.frame(alt, i).latent for i in range(5)]), got)


# -- off the sampling thread ---------------------------------------------------------------------


def test_frames_are_drawn_off_the_sampling_thread_and_all_are_there_when_the_run_returns():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=True)
    threads = {}
    draw = studio._draw_frame

    def recorded(job, branch, frame):
        threads[frame.index] = threading.current_thread().name
        draw(job, branch, frame)

    studio._draw_frame = recorded
    run = studio.run(wait=True, **params(sequence_loop_count=6).to_dict())
    assert set(threads) == set(range(6))
    assert set(threads.values()) == {"seqwidgets-display"}
    assert studio.timeline.row(run.id).done == set(range(6))  # every thumbnail, after wait
    assert studio.selected == (run, 5)
    assert studio.strip.value_at(run.id, 5) is not None


def test_main_thread_mode_draws_in_the_callers_thread():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=False)
    threads = set()
    draw = studio._draw_frame
    studio._draw_frame = lambda *a: (threads.add(threading.current_thread()), draw(*a))
    run = studio.run(wait=True, **params().to_dict())
    assert threads == {threading.current_thread()}
    assert studio.timeline.row(run.id).done == set(range(4))


def test_live_previews_still_arrive_while_the_run_goes_on():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=True)
    shown = threading.Event()
    show_live = studio.view.preview.show_live

    def recorded(*args):
        show_live(*args)
        shown.set()

    studio.view.preview.show_live = recorded
    # The sampling thread waits, in loop 0's frame callback, for the first live picture: it
    # must be drawn by the worker while the run has not finished.
    on_frame = studio._on_frame

    def waiting(branch, frame):
        if frame.index == 0:
            assert shown.wait(30), "no live preview was drawn while the run went on"
        on_frame(branch, frame)

    studio._on_frame = waiting
    run = studio.run(wait=True, **params(sequence_loop_count=3).to_dict())
    assert shown.is_set() and studio.last_error is None and len(run.indices) == 3


def test_a_drawing_error_is_shown_and_the_run_completes():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=True)

    def broken(*_args):
        raise RuntimeError("the canvas went away")

    studio.strip.refresh = broken
    run = studio.run(wait=True, **params().to_dict())
    assert len(run.indices) == 4 and isinstance(studio.last_error, RuntimeError)
    assert "the canvas went away" in studio.error_area.children[0].value


# -- the newest preview wins ---------------------------------------------------------------------


def test_a_slow_previewer_never_builds_a_queue_and_the_newest_preview_wins():
    worker = DisplayWorker(threaded=True)
    started, drawn, most_waiting = threading.Event(), [], []

    def slow_preview(step):
        started.set()
        time.sleep(0.05)  # a decoder far slower than the steps
        drawn.append(step)

    for step in range(200):  # a burst of model steps, each handing a preview over
        worker.submit(lambda step=step: slow_preview(step), latest="live")
        most_waiting.append(worker.pending)
        if step == 0:
            started.wait(5)  # the first preview is being decoded while the burst goes on
    assert worker.drain(30)
    assert max(most_waiting) == 1  # never more than the newest one waiting
    assert drawn[0] == 0 and drawn[-1] == 199  # the newest is the last shown
    assert len(drawn) <= 3 and worker.dropped == 200 - len(drawn)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["frame", "live", "progress"]), min_size=1, max_size=30))
def test_kept_tasks_all_run_in_order_and_each_latest_is_the_newest(kinds):
    worker = DisplayWorker(threaded=True)
    gate = threading.Event()
    worker.submit(lambda: gate.wait(5))  # holds the worker while the tasks are handed over
    ran = []
    for n, kind in enumerate(kinds):
        latest = None if kind == "frame" else kind
        worker.submit(lambda n=n, kind=kind: ran.append((kind, n)), latest=latest)
    gate.set()
    assert worker.drain(10)
    frames = [n for n, kind in enumerate(kinds) if kind == "frame"]
    assert [n for kind, n in ran if kind == "frame"] == frames
    for kind in ("live", "progress"):
        given_ = [n for n, k in enumerate(kinds) if k == kind]
        assert [n for k, n in ran if k == kind] == given_[-1:]
    # Handed-over order is kept: a preview handed over before a frame is drawn before it.
    assert [n for _, n in ran] == sorted(n for _, n in ran)


def test_a_task_may_hand_over_another_and_drain_from_inside_returns():
    worker = DisplayWorker(threaded=True)
    ran = []

    def first():
        worker.submit(lambda: ran.append("second"))
        worker.drain()  # the worker cannot wait for itself: returns at once
        ran.append("first")

    worker.submit(first)
    assert worker.drain(10) and ran == ["first", "second"]
