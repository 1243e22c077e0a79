"""What the studio costs the engine: one decode per frame, drawing off the sampling thread,
previews that still arrive, the newest preview winning, and the same latents as the engine."""

import threading
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets.testing import count_vae_decodes
from seqwidgets.widgets.display import DisplayWorker


def params(**kwargs):
    kwargs.setdefault("steps", 2)
    kwargs.setdefault("sequence_loop_count", 4)
    kwargs.setdefault("positive_seq", "0: a red circle\n2: a blue square")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**kwargs)


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


# -- decoded beside the sampling, drawn in the job's thread -------------------------------------


@pytest.mark.parametrize("threaded", [True, False])
def test_frames_are_decoded_beside_the_sampling_drawn_in_the_jobs_thread_and_all_there(threaded):
    pipe = sw.testing.tiny_pipeline()
    studio = sw.Studio(pipe, threaded=threaded)
    studio.display.threaded = True  # as on an accelerator, or a CPU with a core to spare
    decoders, drawers = set(), {}
    decode = pipe.vae.decode

    def recorded_decode(*args, **kwargs):
        decoders.add(threading.current_thread().name)
        return decode(*args, **kwargs)

    pipe.vae.decode = recorded_decode
    draw = studio._draw_frame

    def recorded(job, branch, frame):
        drawers[frame.index] = threading.current_thread().name
        draw(job, branch, frame)

    studio._draw_frame = recorded
    run = studio.run(wait=True, **params(sequence_loop_count=6).to_dict())
    assert decoders == {"seqwidgets-display"}  # the VAE never ran in the sampling thread
    # Widgets are updated from the one thread that always drew them (the caller's, on Colab).
    job_thread = "seqwidgets-studio" if threaded else threading.current_thread().name
    assert drawers == dict.fromkeys(range(6), job_thread)
    assert studio.timeline.row(run.id).done == set(range(6))  # every thumbnail, after wait
    assert studio.selected == (run, 5)
    assert studio.strip.value_at(run.id, 5) is not None


@pytest.mark.parametrize(("spare", "where"), [(0, "seqwidgets-studio"), (1, "seqwidgets-display")])
def test_on_a_cpu_the_decode_goes_beside_the_sampling_only_with_a_core_to_spare(
    monkeypatch, spare, where
):
    # torch's threads (1 here) hold every core, or leave one idle.
    monkeypatch.setattr("seqwidgets.widgets.studio.spare_cpu_cores", lambda: spare)
    pipe = sw.testing.tiny_pipeline()
    studio = sw.Studio(pipe, threaded=True)
    decoders = set()
    decode = pipe.vae.decode

    def recorded_decode(*args, **kwargs):
        decoders.add(threading.current_thread().name)
        return decode(*args, **kwargs)

    pipe.vae.decode = recorded_decode
    run = studio.run(wait=True, **params().to_dict())
    assert studio.display.threaded is bool(spare) and decoders == {where}
    assert studio.timeline.row(run.id).done == {0, 1, 2, 3}
    assert studio.decode_process is None  # a short run never starts the helper process


def test_spare_cores_count_the_cores_torchs_threads_leave_within_a_cpu_quota(monkeypatch):
    from seqwidgets import device

    monkeypatch.setattr(device, "_torch_default_threads", lambda: 8)
    monkeypatch.setattr(device, "_cgroup_cpus", lambda: None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert device.usable_cores() == 8 and device.spare_cpu_cores() == 4
    monkeypatch.setattr(device, "_cgroup_cpus", lambda: 1)  # a pod limited to one CPU
    assert device.usable_cores() == 1 and device.spare_cpu_cores() == 0


@pytest.mark.parametrize(("text", "cpus"), [("max 100000", None), ("150000 100000", 2), ("", None)])
def test_a_cgroup_cpu_quota_is_read_in_whole_cpus(monkeypatch, tmp_path, text, cpus):
    from seqwidgets import device

    real_path = device.Path
    (tmp_path / "cpu.max").write_text(text)
    monkeypatch.setattr(
        device,
        "Path",
        lambda p: tmp_path / "cpu.max" if p == "/sys/fs/cgroup/cpu.max" else real_path(p),
    )
    assert device._cgroup_cpus() == cpus


# -- a helper process decodes beside a CPU sampler -----------------------------------------------


@pytest.mark.slow
def test_a_helper_process_decodes_the_same_pixels_and_its_end_loses_nothing():
    import numpy as np

    from seqwidgets.decode import decode_latents
    from seqwidgets.decode_process import DecodeProcess

    vae = sw.testing.tiny_pipeline().vae
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    helper = DecodeProcess(vae)
    helper.start()
    assert helper.wait_ready(120), helper.state
    for latent in latents:
        here = np.asarray(decode_latents(vae, latent)[0])
        assert np.array_equal(np.asarray(helper.decode(latent)), here)
    assert (helper.decoded_there, helper.decoded_here) == (3, 0)
    vae.to(torch.float64)  # not what was copied: decoded here, in float64
    wide = decode_latents(vae, latents[0])[0]
    assert np.array_equal(np.asarray(helper.decode(latents[0])), np.asarray(wide))
    assert helper.decoded_here == 1
    vae.to(torch.float32)
    helper._process.kill()  # it dies: the next decode is made here, equal, and says why
    helper._process.wait()
    image = helper.decode(latents[0])
    assert np.array_equal(np.asarray(image), np.asarray(decode_latents(vae, latents[0])[0]))
    assert helper.decoded_here == 2 and helper.state.startswith(
        "failed: the decoding process failed ("
    )
    helper.close()


@pytest.mark.slow
def test_a_helper_that_stops_answering_is_given_up_and_the_frame_decoded_here():
    import os
    import signal

    from seqwidgets.decode_process import DecodeProcess

    vae = sw.testing.tiny_pipeline().vae
    helper = DecodeProcess(vae)
    helper.start()
    assert helper.wait_ready(120), helper.state
    os.kill(helper._process.pid, signal.SIGSTOP)  # alive, and silent
    helper.patience = 1.5
    assert helper.decode(torch.zeros(4, 8, 8)).size == (64, 64)  # here, after 1.5 s
    assert helper.decoded_here == 1 and "TimeoutError: no answer in 2 s" in helper.state
    assert helper._process is None  # killed, not left stopped
    helper.close()


def test_a_vae_that_cannot_be_copied_is_decoded_here_and_says_why():
    from seqwidgets.decode_process import DecodeProcess

    vae = sw.testing.tiny_pipeline().vae
    vae.unpicklable = lambda: None  # a lambda: pickle refuses it
    helper = DecodeProcess(vae)
    helper.start()
    assert not helper.wait_ready(30)
    assert helper.state.startswith("failed: ") and "pickle" in helper.state.lower()
    assert helper.decode(torch.zeros(4, 8, 8)).size == (64, 64) and helper.decoded_here == 1
    helper.close()


@pytest.mark.slow
def test_a_long_studio_run_on_a_cpu_decodes_its_frames_in_the_helper(monkeypatch):
    import numpy as np

    from seqwidgets.decode import decode_latents

    monkeypatch.setattr("seqwidgets.widgets.studio.spare_cpu_cores", lambda: 1)
    monkeypatch.setattr("seqwidgets.widgets.studio.DECODER_PROCESS_AFTER_S", 0.0)
    pipe = sw.testing.tiny_pipeline()
    studio = sw.Studio(pipe, threaded=True)
    studio.run(wait=True, **params().to_dict())  # starts the helper
    helper = studio.decode_process
    assert helper is not None and helper.wait_ready(120), helper.state
    run = studio.run(wait=True, **params(seed=7).to_dict())
    assert helper.decoded_there == 4  # every frame of the second run
    for index in run.indices:  # the same pixels as a decode here
        latent = studio.session.frame(run, index).latent
        expected = np.asarray(decode_latents(pipe.vae, latent)[0])
        assert np.array_equal(np.asarray(studio.session.image(run, index)), expected)
    other = sw.testing.tiny_pipeline(seed=1).vae  # another VAE given to the pipeline
    pipe.vae = other
    latent = torch.randn(4, 8, 8)
    expected = np.asarray(decode_latents(other, latent)[0])
    decoded = studio.session.decoder(latent, studio.session.pipe.vae)  # as `Session.image` asks
    assert np.array_equal(np.asarray(decoded), expected)
    process = helper._process
    studio.close()
    assert helper.state == "closed" and process.poll() is not None  # no process left behind


def test_live_previews_still_arrive_while_the_run_goes_on():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=True)
    drawn_at = []  # frames finished when each live picture was drawn
    show_live = studio.view.preview.show_live

    def recorded(*args):
        show_live(*args)
        drawn_at.append(len(studio.session.branches[-1].frames))

    studio.view.preview.show_live = recorded
    run = studio.run(wait=True, **params(sequence_loop_count=3).to_dict())
    assert drawn_at and drawn_at[0] == 0  # the first step's estimate, before loop 0 ended
    assert studio.last_error is None and len(run.indices) == 3


def test_a_drawing_error_is_shown_and_the_run_completes():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=True)

    def broken(*_args):
        raise RuntimeError("the canvas went away")

    studio.strip.refresh = broken
    run = studio.run(wait=True, **params().to_dict())
    assert len(run.indices) == 4 and isinstance(studio.last_error, RuntimeError)
    assert "the canvas went away" in studio.error_area.children[0].value


# -- the newest preview wins ---------------------------------------------------------------------


def test_behind_a_slow_decode_a_burst_of_previews_never_builds_a_queue_and_the_newest_wins():
    queue = DisplayWorker()
    decoding, drawn, most_waiting = threading.Event(), [], []
    queue.submit(lambda: drawn.append("frame 0"), prepare=lambda: decoding.wait(10))
    for step in range(200):  # a burst of model steps while the frame decodes
        queue.submit(lambda step=step: drawn.append(step), latest="live")
        queue.draw_ready()  # as each step does: nothing is ready behind the decoding frame
        most_waiting.append(queue.pending)
    assert drawn == [] and max(most_waiting) == 2  # the frame and the newest preview only
    decoding.set()
    assert queue.drain(10)
    assert drawn == ["frame 0", 199] and queue.dropped == 199


def test_a_preview_replaced_before_its_turn_is_never_prepared():
    queue = DisplayWorker()
    decoding, prepared = threading.Event(), []
    queue.submit(lambda: None, prepare=lambda: decoding.wait(10))  # the worker is busy
    for step in range(50):
        queue.submit(lambda: None, prepare=lambda step=step: prepared.append(step), latest="live")
    decoding.set()
    assert queue.drain(10)
    assert prepared == [49] and queue.dropped == 49  # only the newest preview's arithmetic


def test_a_preview_is_drawn_in_the_step_that_made_it_when_nothing_waits_before_it():
    queue = DisplayWorker()
    drawn = []
    for step in range(20):
        queue.submit(lambda step=step: drawn.append(step), latest="live")
        assert queue.draw_ready() == 1
    assert drawn == list(range(20)) and queue.pending == 0 and queue.dropped == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["frame", "live", "progress"]), min_size=1, max_size=30))
def test_kept_tasks_all_run_in_order_and_each_latest_is_the_newest(kinds):
    queue = DisplayWorker()
    gate = threading.Event()
    queue.submit(lambda: None, prepare=lambda: gate.wait(5))  # a decode holding the queue
    ran = []
    for n, kind in enumerate(kinds):
        latest = None if kind == "frame" else kind
        queue.submit(lambda n=n, kind=kind: ran.append((kind, n)), latest=latest)
        queue.draw_ready()
    gate.set()
    assert queue.drain(10)
    frames = [n for n, kind in enumerate(kinds) if kind == "frame"]
    assert [n for kind, n in ran if kind == "frame"] == frames
    for kind in ("live", "progress"):
        given_ = [n for n, k in enumerate(kinds) if k == kind]
        assert [n for k, n in ran if k == kind] == given_[-1:]
    # The order handed over is kept: a preview handed over before a frame is drawn before it.
    assert [n for _, n in ran] == sorted(n for _, n in ran)


def test_without_a_thread_everything_runs_at_once_in_the_callers_thread():
    queue = DisplayWorker(threaded=False)
    where = []

    def record():
        where.append(threading.current_thread())

    queue.submit(record, prepare=record)
    assert queue.draw_ready() == 1 and where == [threading.current_thread()] * 2


# -- pixels reach the browser unchanged, packed cheaply ------------------------------------------


class SentPixels:
    """Records every ``putImageData`` the canvas manager sends: (canvas, args, decoded pixels)."""

    def __init__(self, monkeypatch):
        import io

        import numpy as np
        from ipycanvas.canvas import _CANVAS_MANAGER, COMMANDS
        from PIL import Image

        self.sent = []
        send = _CANVAS_MANAGER.send_draw_command

        def recorded(canvas, name, args=(), buffers=()):
            if name == COMMANDS["putImageData"]:
                with Image.open(io.BytesIO(buffers[0])) as image:
                    self.sent.append((canvas, list(args), np.asarray(image.convert("RGBA"))))
            return send(canvas, name, list(args), list(buffers))

        monkeypatch.setattr(_CANVAS_MANAGER, "send_draw_command", recorded)


@settings(max_examples=20, deadline=None)
@given(
    st.integers(1, 200),
    st.integers(1, 200),
    st.integers(0, 2**32 - 1),
)
def test_put_pixels_sends_what_ipycanvas_would_the_same_pixels(width, height, seed):
    import numpy as np
    from ipycanvas import Canvas

    from seqwidgets.widgets.timeline import put_pixels

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    canvas = Canvas(width=width, height=height)
    with pytest.MonkeyPatch.context() as monkeypatch:
        sent = SentPixels(monkeypatch)
        canvas.put_image_data(pixels, 0, 0)  # ipycanvas's own way
        put_pixels(canvas, pixels)
    (_, args_own, own), (target, args, ours) = sent.sent
    assert target is canvas and args == args_own == [0, 0]
    assert np.array_equal(ours, pixels) and np.array_equal(own, pixels)
    canvas.close()


def test_every_thumbnail_and_frame_reaches_its_canvas_with_its_exact_pixels(monkeypatch):
    import numpy as np

    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=False, renderer="canvas")
    sent = SentPixels(monkeypatch)
    run = studio.run(wait=True, **params().to_dict())
    received = {id(canvas): pixels for canvas, _, pixels in sent.sent}
    for index in run.indices:
        thumb = studio.session.thumbnail(run, index, studio.thumb_size).convert("RGBA")
        source = studio.timeline.sources[(run.id, index)]
        assert np.array_equal(received[id(source)], np.asarray(thumb))
        frame = studio.session.image(run, index).convert("RGBA")
        source = studio.view.preview.sources[(run.id, index)]
        assert np.array_equal(received[id(source)], np.asarray(frame))


def test_a_new_frame_moves_the_running_mark_and_repaints_the_selection_layer_twice_at_most():
    studio = sw.Studio(sw.testing.tiny_pipeline(), threaded=False, renderer="canvas")
    timeline, marks, paints = studio.timeline, [], []
    paint, add_frame = timeline._paint_overlay, timeline.add_frame

    def counted_paint():
        paints.append(timeline.running)
        paint()

    def recorded_add_frame(branch, index, image):
        before = len(paints)
        add_frame(branch, index, image)
        marks.append((index, timeline.running, len(paints) - before))

    timeline._paint_overlay, timeline.add_frame = counted_paint, recorded_add_frame
    run = studio.run(wait=True, **params().to_dict())
    key = run.id
    # After loop i the mark is on loop i + 1 (none after the last), painted with loop i's cell.
    assert marks == [(0, (key, 1), 1), (1, (key, 2), 1), (2, (key, 3), 1), (3, None, 1)]
    # Per loop: its cell (with the mark) and the selection following it; the first step of
    # the next loop finds its mark there already.
    assert len(paints) <= 2 * len(run.indices) + 2


def test_a_frame_out_of_view_still_moves_the_running_mark():
    from seqwidgets.widgets.timeline import CanvasTimeline

    branch = sw.Branch(1, "run 1", params(sequence_loop_count=40))
    timeline = CanvasTimeline(width=400)
    timeline.follow_scroll = False  # the user scrolled away: new frames do not pull the view
    paints = []
    paint = timeline._paint_overlay
    timeline._paint_overlay = lambda: paints.append(timeline.running) or paint()
    from PIL import Image

    timeline.add_frame(branch, 30, Image.new("RGB", (8, 8)))  # far right of the view
    assert timeline.running == (1, 31) and paints[-1] == (1, 31)
