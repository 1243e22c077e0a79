"""Headless tests of the studio: the panel, the timeline's canvas commands, runs, branches, errors.

No browser: every message a widget sends to the front end goes through its comm; the comms are
recorded here and the canvas commands decoded back into ``(canvas, command, args, buffers)``.
Front-end events (clicks, keys, a page reload) arrive the way the browser sends them: as a comm
message to the widget.
"""

from __future__ import annotations

import io
import json
import threading
import time

import comm
import ipywidgets as W
import numpy as np
import pytest
from ipycanvas.canvas import COMMANDS
from PIL import Image

from seqwidgets.params import PARAM_SPECS, SequenceParams
from seqwidgets.widgets import GROUPS, Studio, TimelineLayout
from seqwidgets.widgets.panel import ControlPanel
from seqwidgets.widgets.timeline import ImageTimeline, Row

FAST = dict(steps=2, sequence_loop_count=3, positive_seq="0: a red circle\n2: a blue square")
NAMES = {number: name for name, number in COMMANDS.items()}


class Commands:
    """Every canvas command sent to the front end, decoded from the comm messages."""

    def __init__(self):
        self.sent = []  # (canvas model id, command name, args, buffers)
        self._canvas = None

    def publish(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        """What a comm publishes: ipycanvas' draw commands are custom messages whose first
        buffer is the JSON list of commands and the rest their binary payloads."""
        if msg_type != "comm_msg" or not data or data.get("method") != "custom" or not buffers:
            return
        try:
            commands = json.loads(bytes(buffers[0]))
        except ValueError:
            return
        if not isinstance(commands, list) or not commands:
            return
        if isinstance(commands[0], int):
            commands = [commands]
        rest = list(buffers[1:])
        for command in commands:
            name = NAMES[command[0]]
            args = command[1] if len(command) > 1 else []
            count = command[2] if len(command) > 2 else 0
            mine, rest = rest[:count], rest[count:]
            if name == "switchCanvas":
                self._canvas = args[0].removeprefix("IPY_MODEL_")
                continue
            self.sent.append((self._canvas, name, args, [bytes(b) for b in mine]))

    def on(self, canvas, name=None):
        return [c for c in self.sent if c[0] == canvas.model_id and (name is None or c[1] == name)]

    def mark(self) -> int:
        return len(self.sent)

    def since(self, mark: int, name=None):
        return [c for c in self.sent[mark:] if name is None or c[1] == name]


@pytest.fixture
def commands(monkeypatch):
    recorder = Commands()
    # Outside a kernel every widget talks through a comm.DummyComm, which drops the messages.
    monkeypatch.setattr(
        comm.DummyComm,
        "publish_msg",
        lambda self, *args, **kwargs: recorder.publish(*args, **kwargs),
    )
    return recorder


def frontend(widget, **content) -> None:
    """A custom message from the browser to ``widget`` (a click, a key, a client ready)."""
    widget.comm.handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


@pytest.fixture
def studio(tiny_pipe, commands):
    studio = Studio(tiny_pipe, params=SequenceParams(**FAST))
    yield studio
    studio.stop()
    studio.wait(10)


def _model_ref(widget) -> str:
    return f"IPY_MODEL_{widget.model_id}"


# -- the panel ---------------------------------------------------------------------------------


def test_panel_has_one_control_per_field_in_one_group():
    panel = ControlPanel()
    assert set(panel.controls) == set(PARAM_SPECS)
    placed = [name for names in GROUPS.values() for name in names]
    assert sorted(placed) == sorted(PARAM_SPECS), "every field sits in exactly one group"
    assert panel.params == SequenceParams()
    assert isinstance(panel.controls["positive_seq"], W.Textarea)
    assert isinstance(panel.controls["sampler_name"], W.Dropdown)
    sampler_names = [name for _, name in panel.controls["sampler_name"].options]
    assert sorted(sampler_names) == sorted(PARAM_SPECS["sampler_name"].choices)
    assert isinstance(panel.controls["use_conditioning_slerp"], W.Checkbox)
    assert panel.controls["cfg"].tooltip.startswith(PARAM_SPECS["cfg"].help)


def test_invalid_settings_show_next_to_the_field_and_disable_run(studio):
    panel = studio.panel
    assert not studio.transport.run_button.disabled
    panel.controls["steps"].value = 0
    assert studio.transport.run_button.disabled
    assert (
        "steps" in panel.messages["steps"].value and "out of range" in panel.messages["steps"].value
    )
    assert panel.messages["steps"].layout.display != "none"
    assert panel.messages["cfg"].value == ""
    # Several bad fields show at once; the seed is text (it exceeds what JavaScript holds).
    panel.controls["seed"].value = "twelve"
    assert "not an integer" in panel.messages["seed"].value
    assert "steps" in panel.messages["steps"].value
    with pytest.raises(ValueError, match="seed"):
        studio.run(wait=True)
    panel.controls["steps"].value = 2
    panel.controls["seed"].value = str(2**64 - 1)
    assert not studio.transport.run_button.disabled
    assert panel.params.seed == 2**64 - 1
    # A malformed keyframe line: the parser's message, with its line number.
    panel.controls["positive_seq"].value = "0: a red circle\nnot a keyframe"
    assert studio.transport.run_button.disabled
    assert "line 2" in panel.messages["positive_seq"].value
    panel.controls["positive_seq"].value = FAST["positive_seq"]
    # Fields that exclude each other.
    panel.controls["use_conditioning_slerp"].value = True
    panel.controls["keyframe_interpolation"].value = "linear"
    assert studio.transport.run_button.disabled
    assert "exclude each other" in panel.messages["use_conditioning_slerp"].value
    assert "⚠ Interpolation" in panel.sections.titles
    panel.controls["keyframe_interpolation"].value = "none"
    assert not studio.transport.run_button.disabled
    assert "⚠ Interpolation" not in panel.sections.titles
    # A keyframe the loop count never reaches is a warning, not an error.
    panel.controls["positive_seq"].value = "0: a\n50: b"
    assert "never reached" in panel.messages["positive_seq"].value
    assert not studio.transport.run_button.disabled
    # Nullable size: empty is "the pipeline's size", a non-multiple of 8 is an error.
    panel.controls["width"].value = "60"
    assert "multiple of 8" in panel.messages["width"].value
    panel.controls["width"].value = ""
    assert panel.params.width is None


# -- a run, thumbnails, selection ----------------------------------------------------------------


def test_run_draws_each_thumbnail_once_as_rgba(studio, commands):
    branch = studio.run(wait=True)
    assert branch.indices == [0, 1, 2]
    assert studio.session.branches == [branch]
    timeline = studio.timeline
    assert [r.key for r in timeline.rows] == [branch.id]
    assert len(timeline.sources) == 3
    for index in range(3):
        source = timeline.sources[(branch.id, index)]
        puts = commands.on(source, "putImageData")
        assert len(puts) == 1, "each thumbnail's pixels travel once"
        png = puts[0][3][0]
        assert png[:8] == b"\x89PNG\r\n\x1a\n", "RGBA goes as lossless PNG, not JPEG"
        image = Image.open(io.BytesIO(png))
        assert image.mode == "RGBA" and image.size == (56, 56)
        expected = np.asarray(studio.session.thumbnail(branch, index, 56).convert("RGBA"))
        assert np.array_equal(np.asarray(image), expected)
        draws = [
            c for c in commands.on(timeline.canvas[0], "drawImage") if c[2][0] == _model_ref(source)
        ]
        assert draws, f"loop {index} drawn on the timeline from its own canvas"
        x, y = draws[-1][2][1:3]
        assert (x, y) == (timeline.layout_.x(index, 0), timeline.layout_.y(0))
    # The run followed its frames: the last one is selected and shown large.
    assert studio.selected == (branch, 2)
    assert studio.view.preview.showing == (branch.id, 2)
    assert "loop 2" in studio.view.info.value
    assert "done: 3 frame(s)" in studio.transport.progress_text.value
    assert "loop 2 (3/3)" in studio.transport.progress_text.value
    assert "step 2/2" in studio.transport.progress_text.value
    assert "it/s" in studio.transport.progress_text.value
    assert studio.error_area.layout.display == "none"


def test_selection_changes_the_preview_without_resending_pixels(studio, commands):
    branch = studio.run(wait=True)
    preview = studio.view.preview
    studio.select(branch, 0)
    assert studio.selected == (branch, 0)
    assert preview.showing == (branch.id, 0)
    assert (
        "loop 0" in studio.view.info.value
        and f"{studio.selected_frame.seed}" in studio.view.info.value
    )
    assert "keyframe" in studio.view.info.value
    assert "a red circle" in studio.view.info.value
    first = commands.on(preview.canvas, "drawImage")[-1][2][0]
    studio.select(branch, 1)
    assert "loop 1" in studio.view.info.value
    second = commands.on(preview.canvas, "drawImage")[-1][2][0]
    assert first != second
    # Scrubbing back and forth again: draw commands only, no pixels.
    mark = commands.mark()
    for index in (0, 1, 2, 1, 0):
        studio.select(branch, index)
    assert commands.since(mark, "putImageData") == []
    assert commands.since(mark, "drawImage")
    # The full-resolution frame went once per frame, upscaled crisp in the browser.
    source = preview.sources[(branch.id, 0)]
    put = commands.on(source, "putImageData")
    assert len(put) == 1
    assert Image.open(io.BytesIO(put[0][3][0])).size == (64, 64)
    assert (preview.canvas.width, preview.canvas.height) == (320, 320)
    assert preview.canvas.image_smoothing_enabled is False


def test_mouse_and_keys_select_and_scrub(studio, commands):
    branch = studio.run(wait=True)
    canvas, top = studio.timeline.canvas, studio.timeline.canvas[1]
    layout = studio.timeline.layout_

    def event(name, x, y):
        frontend(canvas, event=name, x=x, y=y)

    event("mouse_down", layout.x(1, 0) + 5, layout.y(0) + 5)
    assert studio.selected == (branch, 1)
    event("mouse_move", layout.x(2, 0) + 5, layout.y(0) + 5)
    assert studio.selected == (branch, 2)
    event("mouse_up", layout.x(2, 0) + 5, layout.y(0) + 5)
    event("mouse_move", layout.x(0, 0) + 5, layout.y(0) + 5)
    assert studio.selected == (branch, 2), "moving without a button pressed does not scrub"
    key = {
        "event": "key_down",
        "key": "ArrowLeft",
        "shift_key": False,
        "ctrl_key": False,
        "meta_key": False,
    }
    frontend(canvas, **key)
    assert studio.selected == (branch, 1)
    frontend(canvas, **dict(key, key="Home"))
    assert studio.selected == (branch, 0)
    # The Play control drives the loop slider (linked in the browser); the slider selects.
    assert studio.timeline.loop_slider.max == 2
    studio.timeline.loop_slider.value = 2
    assert studio.selected == (branch, 2)
    # The selection highlight is drawn on the top layer only.
    mark = commands.mark()
    studio.select(branch, 0)
    assert {
        c[0]
        for c in commands.since(mark)
        if c[0] in (studio.timeline.canvas[0].model_id, studio.timeline.canvas[1].model_id)
    } == {top.model_id}


def test_branch_adds_a_row_starting_at_its_fork(studio, commands):
    run = studio.run(wait=True)
    studio.select(run, 1)
    branch = studio.branch(denoise_seq=0.3)
    assert branch.parent is run and branch.fork == 2
    assert branch.params.denoise_seq == 0.3
    rows = studio.timeline.rows
    assert [r.key for r in rows] == [run.id, branch.id]
    assert rows[1].fork == 2 and rows[1].parent == run.id
    assert sorted(k for k in studio.timeline.thumbs if k[0] == branch.id) == [(branch.id, 2)]
    assert studio.selected == (branch, 2)
    # The connector: from the parent's loop 1 down into the branch's loop 2.
    layout = studio.timeline.layout_
    lines = [c for c in commands.on(studio.timeline.canvas[0], "strokeLines")]
    assert lines
    # Re-run from the selected frame with the panel's settings: forks at the loop itself.
    studio.select(run, 1)
    studio.panel.controls["cfg"].value = 3.0
    rerun = studio.rerun()
    assert rerun.fork == 1 and rerun.params.cfg == 3.0
    assert [r.fork for r in studio.timeline.rows] == [0, 2, 1]
    assert studio.timeline.canvas.height == layout.height(3)
    # A loop before a branch's fork is its parent's frame.
    studio.select(branch, 0)
    assert studio.view.preview.showing == (run.id, 0)


def test_only_visible_columns_are_drawn(tiny_pipe, commands):
    studio = Studio(tiny_pipe, params=SequenceParams(**FAST), width=420)
    columns = studio.timeline.layout_.columns
    assert columns < 10
    run = studio.session.run(SequenceParams(**dict(FAST, sequence_loop_count=14, steps=1)))
    studio.select(run, 0)
    mark = commands.mark()
    studio.timeline.redraw()
    draws = commands.since(mark, "drawImage")
    assert 0 < len(draws) <= columns
    studio.select(run, 13)  # scrolls to the end
    assert studio.timeline.scroll == 14 - columns
    assert studio.timeline.scrollbar.layout.display != "none"


def test_client_ready_redraws_from_python(studio, commands):
    branch = studio.run(wait=True)
    mark = commands.mark()
    # A page reload: the new client's canvases are blank; Python refills and repaints them.
    frontend(studio.timeline.canvas, event="client_ready")
    puts = commands.since(mark, "putImageData")
    assert len(puts) == 3
    assert len(commands.since(mark, "drawImage")) >= 3
    assert len(studio.session.branches) == 1 and branch.indices == [0, 1, 2]


# -- responsiveness ------------------------------------------------------------------------------


def test_an_error_in_the_run_shows_and_the_studio_stays_usable(studio, monkeypatch):
    unet = studio.session.pipe.unet
    calls = {"n": 0}
    forward = unet.forward

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected UNet failure")
        return forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", failing)
    with pytest.raises(RuntimeError, match="injected"):
        studio.run(wait=True)
    assert studio.error_area.layout.display != "none"
    assert "injected UNet failure" in studio.error_area.html.value
    assert (
        "<details>" in studio.error_area.html.value and "Traceback" in studio.error_area.html.value
    )
    assert "error" in studio.header.status.value
    assert not studio.transport.run_button.disabled and studio.transport.stop_button.disabled
    assert not studio.running
    monkeypatch.setattr(unet, "forward", forward)
    branch = studio.run(wait=True)
    assert branch.is_complete
    assert studio.error_area.layout.display == "none"
    # A button click that cannot work (nothing to export yet of a deleted selection) shows too.
    studio.timeline.selected = None
    studio.transport.export_button.click()
    assert "select a frame" in studio.error_area.html.value


def test_stop_mid_run_in_the_background(studio, monkeypatch):
    unet = studio.session.pipe.unet
    forward = unet.forward
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(0.02)
        return forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", slow)
    assert studio.run(wait=False, sequence_loop_count=40, steps=4) is None
    assert started.wait(10)
    assert (
        studio.running
        and studio.transport.run_button.disabled
        and not studio.transport.stop_button.disabled
    )
    assert studio.transport.branch_button.disabled
    deadline = time.monotonic() + 10
    while not studio.timeline.thumbs and time.monotonic() < deadline:
        time.sleep(0.02)
    # The user picks a frame during the run: the studio stops following the new frames.
    first = next(iter(studio.timeline.thumbs))
    studio.select(first[0], first[1])
    studio.stop()
    assert studio.wait(10)
    branch = studio.session.branches[-1]
    assert 1 <= len(branch.indices) < 40
    assert not branch.is_complete
    assert "stopped" in studio.header.status.value
    assert studio.selected[1] == first[1]
    assert not studio.transport.run_button.disabled and studio.transport.stop_button.disabled
    assert studio.error_area.layout.display == "none"


def test_live_preview_is_throttled_and_replaced_by_the_frame(studio, commands, monkeypatch):
    unet = studio.session.pipe.unet
    forward = unet.forward

    def slow(*args, **kwargs):
        time.sleep(0.06)
        return forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", slow)
    start = time.monotonic()
    branch = studio.run(wait=True, sequence_loop_count=2, steps=8)
    elapsed = time.monotonic() - start
    live = commands.on(studio.view.preview.live_source, "putImageData")  # latent-sized estimates
    assert studio.view.preview.live_source.width == 8  # the 8x8 latent travels, not 320 px
    assert 1 <= len(live) <= elapsed * 4 + 1
    assert studio.view.preview.showing == (branch.id, 1), "the decoded frame replaced the estimate"


# -- environments ----------------------------------------------------------------------------------


def test_image_renderer_without_ipycanvas(tiny_pipe, monkeypatch):
    import seqwidgets.widgets.timeline as timeline

    monkeypatch.setattr(timeline, "ipycanvas_available", lambda: False)
    studio = Studio(tiny_pipe, params=SequenceParams(**FAST))
    assert studio.renderer == "image"
    assert isinstance(studio.timeline, ImageTimeline)
    branch = studio.run(wait=True)
    studio.timeline.redraw()
    picture = Image.open(io.BytesIO(studio.timeline.image.value))
    layout = studio.timeline.layout_
    cell = np.asarray(picture.convert("RGB"))[
        layout.y(0) : layout.y(0) + 56, layout.x(0, 0) : layout.x(0, 0) + 56
    ]
    assert len(np.unique(cell.reshape(-1, 3), axis=0)) > 16, "the thumbnail is in the picture"
    studio.select(branch, 1)
    assert studio.view.preview.showing == (branch.id, 1)
    assert Image.open(io.BytesIO(studio.view.preview.image.value)).size == (320, 320)


def test_main_thread_mode(tiny_pipe, commands):
    studio = Studio(tiny_pipe, params=SequenceParams(**FAST), threaded=False)
    caller = threading.current_thread()
    seen = []  # the threads that moved the selection along with the run, frame by frame
    studio.timeline.observe(lambda _: seen.append(threading.current_thread()), "selected")
    studio.run(wait=False)
    assert len(seen) >= 3 and all(t is caller for t in seen)
    assert not studio.running and len(studio.timeline.thumbs) == 3


def test_renderer_choice_is_checked(tiny_pipe):
    with pytest.raises(ValueError, match="renderer"):
        Studio(tiny_pipe, renderer="svg")


def test_layout_hit_testing():
    layout = TimelineLayout(width=700, thumb=56, max_rows=3)
    assert layout.hit(layout.x(4, 2) + 1, layout.y(1) + 1, scroll=2, row_scroll=0) == (1, 4)
    assert layout.hit(5, layout.y(0) + 5, 0, 0) is None  # the gutter
    assert layout.hit(layout.x(0, 0) + 5, 3, 0, 0) is None  # the axis
    assert layout.height(10) == layout.height(3)


def test_export_writes_the_selected_path(studio, tmp_path):
    studio.export_dir = tmp_path
    branch = studio.run(wait=True)
    studio.select(branch, 1)
    path = studio.export(format="gif")
    assert path.exists() and path.name == f"seqwidgets-{branch.id}-loop1.gif"
    assert Image.open(path).n_frames == 2
    second = studio.export(format="gif")
    assert second != path, "never overwrites"
    assert "wrote" in studio.transport.progress_text.value


def test_rows_for_an_existing_session(tiny_pipe, commands):
    from seqwidgets.session import Session

    session = Session(tiny_pipe)
    run = session.run(SequenceParams(**FAST))
    session.branch((run, 0), cfg=2.0)
    studio = Studio(session=session)
    assert [r.fork for r in studio.timeline.rows] == [0, 1]
    assert len(studio.timeline.thumbs) == 5
    assert studio.selected == (run, 0)


def test_row_names_and_owner():
    from seqwidgets.session import Branch

    run = Branch(1, "run 1", SequenceParams(**FAST))
    alt = Branch(2, Branch.fork_name(run, 2), run.params, parent=run, fork=2)
    timeline = ImageTimeline()
    timeline.add_row(Row.of(run))
    timeline.add_row(Row.of(alt))
    # The timeline asks the branch which row holds a shared loop.
    assert timeline.owner(2, 1) == 1 and timeline.owner(2, 2) == 2
    assert [label for label, _ in timeline.branch_menu.options] == ["run 1", "branch 2"]
    # A row without a branch shares nothing.
    timeline.add_row(Row(key=3, name="#3", fork=2, length=4, parent=1))
    assert timeline.owner(3, 1) == 3


def test_colab_turns_on_the_custom_widget_manager_and_main_thread_mode(
    tiny_pipe, monkeypatch, commands
):
    import sys
    import types

    import seqwidgets.widgets.colab as colab

    calls = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("on")
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.output = output
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.setattr(colab, "_enabled", False)
    assert colab.in_colab()
    studio = Studio(tiny_pipe, params=SequenceParams(**FAST))
    Studio(tiny_pipe, params=SequenceParams(**FAST))
    assert calls == ["on"], "enabled once per kernel"
    assert studio.renderer == "canvas" and studio.threaded is False
    assert "main-thread mode" in studio.header.title.value
    assert studio.run(wait=False).is_complete


def test_no_pipe_loads_the_default_model_on_the_first_run(tiny_pipe, monkeypatch, commands):
    import seqwidgets.models

    loaded = []
    monkeypatch.setattr(seqwidgets.models, "load_pipeline", lambda: loaded.append(1) or tiny_pipe)
    studio = Studio(params=SequenceParams(**FAST))
    assert loaded == [] and "loads on the first run" in studio.header.title.value
    branch = studio.run(wait=True)
    assert loaded == [1] and studio.session.pipe is tiny_pipe
    title = studio.header.title.value  # the family, once the pipeline is known, and its preview
    assert branch.is_complete and "Stable Diffusion 1.x" in title and "preview" in title


def test_scripting_select_by_id_or_name_and_play(studio):
    branch = studio.run(wait=True)
    studio.select(branch.id, -1)
    assert studio.selected == (branch, 2)
    studio.select(branch.name, 0)
    assert studio.selected == (branch, 0)
    studio.timeline.play.value = 1  # what the Play control's timer does in the browser
    assert studio.selected == (branch, 1)
    with pytest.raises(IndexError):
        studio.select(branch, 7)
    with pytest.raises(ValueError, match="no branch"):
        studio.select("nope", 0)


def test_launch_writes_a_valid_notebook_once(tmp_path):
    import nbformat

    from seqwidgets.widgets.launch import launch, write_notebook

    path = write_notebook(tmp_path, "tiny-random")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = notebook.cells[1].source
    compile(code, "studio", "exec")
    assert "load_pipeline('tiny-random')" in code and code.rstrip().endswith("studio")
    path.write_text(path.read_text().replace("Run", "RUN"))
    assert write_notebook(tmp_path) == path and "RUN" in path.read_text(), "never overwritten"
    command = launch(tmp_path, port=8899, dry_run=True)
    assert command[1:3] == ["-m", "jupyterlab"] and command[-1] == "--port=8899"


def test_delete_a_branch(studio, commands):
    run = studio.run(wait=True)
    studio.select(run, 0)
    child = studio.branch(cfg=2.0)
    studio.select(run, 1)
    with pytest.raises(ValueError, match="forked from it"):
        studio.delete(run)
    studio.select(child, 2)
    studio.transport.delete_button.click()
    assert studio.session.branches == [run]
    assert [r.key for r in studio.timeline.rows] == [run.id]
    assert not any(key[0] == child.id for key in studio.timeline.sources)
    assert studio.selected == (run, 2)
    assert studio.error_area.layout.display == "none"


def test_close_closes_every_widget(tiny_pipe, commands):
    studio = Studio(tiny_pipe, params=SequenceParams(**FAST))
    studio.run(wait=True)
    sources = list(studio.timeline.sources.values())
    studio.close()
    assert studio.comm is None and studio.panel.comm is None
    assert all(source.comm is None for source in sources)
    assert studio.timeline.canvas.comm is None
