"""The metrics strip and the compare view, headless."""

import io
import warnings

import numpy as np
import pytest
from painting import PaintRecorder
from PIL import Image

import seqwidgets as sw
from seqwidgets.widgets.compare import HEAT_SCALE, CompareView, heatmap
from seqwidgets.widgets.metrics_strip import BRANCH_COLORS, MetricsStrip
from seqwidgets.widgets.timeline import KEYFRAME, TimelineLayout


def params(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(steps=2, positive_seq="0: a\n3: b", **kwargs)


@pytest.fixture(scope="module")
def session(tiny_pipe):
    session = sw.Session(tiny_pipe)
    run = session.run(params(sequence_loop_count=6))
    session.branch((run, 1), cfg=3.0)
    return session


def test_strip_draws_one_point_per_visible_loop_and_branch(session):
    run, child = session.branches
    # 300 px wide with 56 px thumbnails: the timeline shows 3 loop columns.
    strip = MetricsStrip(session, width=300, thumb=56, renderer="image")
    layout = TimelineLayout(300, 56)
    assert layout.columns == 3
    strip.refresh()
    strip.scroll = 2
    recorder = PaintRecorder()
    strip.paint(recorder)
    for branch in (run, child):
        markers = recorder.markers(BRANCH_COLORS[branch.id % len(BRANCH_COLORS)])
        assert len(markers) == 3  # loops 2, 3, 4
        # Each point sits under its thumbnail's column.
        centres = [x for x, _ in markers]
        assert centres == [layout.x(loop, 2) + 28 for loop in (2, 3, 4)]
    keyframe_ticks = [c for c in recorder.calls if c[0] == "line" and c[1][1] == KEYFRAME]
    assert len(keyframe_ticks) == 2  # loop 3 starts a keyframe, in both branches


def test_strip_skips_loop_zero_for_change_measures_and_follows_the_menu(session):
    strip = MetricsStrip(session, renderer="image", branch_ids=[session.branches[0].id])
    strip.refresh()
    assert [len(p) for p in strip.series().values()] == [6]
    strip.menu.value = "change_rmse"  # NaN at loop 0: not drawn
    assert strip.measure == "change_rmse"
    assert [loop for loop, _ in strip.series()[session.branches[0].id]] == [1, 2, 3, 4, 5]
    assert "previous loop" in strip.help.value
    png = Image.open(io.BytesIO(strip.image.value))
    assert png.size == (1040, 96)


def test_strip_highlights_and_reads_out_the_selected_loop(session):
    run = session.branches[0]
    strip = MetricsStrip(session, renderer="image")
    strip.refresh()
    strip.selected = (run.id, 4)
    value = session.metrics(run)[4]["drift_lab"]
    assert f"loop 4: <b>{value:.3g}</b>" in strip.readout.value
    recorder = PaintRecorder()
    strip.paint(recorder)
    highlight = [c for c in recorder.calls if c[0] == "rect" and c[2].get("stroke") is not None]
    assert len(highlight) == 1


def test_strip_refresh_reuses_the_sessions_rows(session):
    run = session.branches[0]
    strip = MetricsStrip(session, renderer="image")
    strip.refresh(run)
    first = strip.rows[run.id]
    strip.refresh(run)
    assert all(a is b for a, b in zip(first, strip.rows[run.id], strict=True))


def test_canvas_strip_click_selects_the_nearest_branchs_loop(session):
    pytest.importorskip("ipycanvas")
    chosen = []
    strip = MetricsStrip(
        session, renderer="canvas", on_select=lambda b, i: chosen.append((b.id, i))
    )
    strip.refresh()
    layout = strip.geometry
    x = layout.x(2, 0) + 10
    strip._on_click(x, 50)
    assert chosen and chosen[0][1] == 2
    strip._on_move(x, 50)
    assert strip.hover == 2 and "loop 2" in strip.readout.value
    strip._on_click(10, 50)  # the gutter: nothing
    assert len(chosen) == 1


def test_heatmap_scale():
    image = heatmap(np.array([[0.0, HEAT_SCALE / 2, HEAT_SCALE, 1.0]]))
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((2, 0)) == image.getpixel((3, 0)) == (255, 245, 190)


def test_compare_view_scrubs_both_branches_together(session):
    run, child = session.branches
    moved = []
    view = CompareView(session, run, child, on_select=lambda b, i: moved.append((b.id, i)))
    assert view.loop.options == tuple(range(6))
    assert view.index == 2  # opens where the frames part
    assert "cfg" in view.settings.value and "differ from loop 2" in view.settings.value
    assert not view.pair.shared and "RMSE" in view.captions[2].value
    view.loop.value = 0
    assert moved == [(run.id, 0)] and view.pair.shared
    assert view.captions[2].value == "shared frame: identical"
    heat = np.asarray(Image.open(io.BytesIO(view.image_diff.value)))
    assert not heat.any()  # a shared frame: all black
    view.index = 5
    assert view.loop.value == 5 and view.pair.index == 5
    a, b = (np.asarray(Image.open(io.BytesIO(v.value))) for v in (view.image_a, view.image_b))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_compare_view_follows_the_branch_menus(session):
    run, child = session.branches
    view = CompareView(session)
    assert (view.branch_a, view.branch_b) == (run, child)
    view.menu_b.value = run.id
    assert view.diff.settings == {} and view.diff.parted_at is None
    assert "same settings" in view.settings.value


def test_panel_offers_colour_coherence_and_a_typed_reference_path():
    from seqwidgets.widgets.panel import ControlPanel

    panel = ControlPanel()
    assert "Colour coherence" in panel._section_titles
    panel.set_values(color_coherence="lab", color_reference="refs/palette.png")
    assert panel.params.color_coherence == "lab"
    assert panel.params.color_reference == "refs/palette.png"
    panel.controls["color_reference"].value = "palette"
    assert panel.params is None and "or a path to a .png" in panel.messages["color_reference"].value
