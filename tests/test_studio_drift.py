"""The drift views inside the studio: the metrics strip under the timeline follows its columns,
rows and selection and grows as loops land; the Compare tab shows two branches side by side."""

from __future__ import annotations

import io

import numpy as np
import pytest
from painting import PaintRecorder
from PIL import Image

from seqwidgets.params import SequenceParams
from seqwidgets.widgets import Studio
from seqwidgets.widgets.metrics_strip import BRANCH_COLORS
from seqwidgets.widgets.timeline import ACCENT

BASE = dict(
    steps=2,
    sequence_loop_count=7,
    denoise_seq=0.5,
    positive_seq="0: a red circle\n4: a blue square",
)


def points(studio: Studio) -> dict[int, list[float]]:
    """What the strip draws now: marker x positions per branch id (empty lists left out)."""
    recorder = PaintRecorder()
    studio.strip.paint(recorder)
    colors = {b.id: BRANCH_COLORS[b.id % len(BRANCH_COLORS)] for b in studio.session.branches}
    drawn = {bid: [x for x, _ in recorder.markers(color)] for bid, color in colors.items()}
    return {bid: xs for bid, xs in drawn.items() if xs}


@pytest.fixture
def studio(tiny_pipe):
    # 300 px with 56 px thumbnails: 3 loop columns, so the view scrolls over 7 loops.
    studio = Studio(
        tiny_pipe, params=SequenceParams(**BASE), renderer="image", width=300, max_rows=1
    )
    yield studio
    studio.close()


def test_the_strip_shows_one_point_per_visible_loop_of_each_visible_branch(studio):
    grown = []
    refresh = studio.strip.refresh

    def counting_refresh(branch=None):
        refresh(branch)
        if branch is not None:  # one branch: a new frame of it landed
            grown.append(len(studio.strip.rows[branch.id]))

    studio.strip.refresh = counting_refresh
    run = studio.run(wait=True)
    assert grown == [1, 2, 3, 4, 5, 6, 7]  # updated as each loop lands

    # The timeline followed the run to its end: columns 4..6 show, and so do the points.
    geometry, timeline = studio.strip.geometry, studio.timeline
    assert geometry.columns == 3 and timeline.scroll == studio.strip.scroll == 4
    centre = [geometry.x(loop, 4) + geometry.thumb / 2 for loop in (4, 5, 6)]
    assert points(studio) == {run.id: centre}

    # One row shows at a time: selecting a frame of the branch moves the rows and the strip.
    studio.select(run, 1)
    child = studio.branch(cfg=3.0)
    assert timeline.visible_keys() == [child.id] and set(points(studio)) == {child.id}
    studio.select(run, 0)
    assert timeline.visible_keys() == [run.id] and timeline.scroll == 0
    assert points(studio) == {run.id: [geometry.x(loop, 0) + 28 for loop in (0, 1, 2)]}

    # Scrolling the timeline by hand scrolls the strip with it.
    timeline.scrollbar.value = 2
    assert studio.strip.scroll == 2
    assert points(studio) == {run.id: [geometry.x(loop, 2) + 28 for loop in (2, 3, 4)]}


def test_selecting_a_frame_highlights_its_value_in_the_strip(studio):
    run = studio.run(wait=True)
    studio.select(run, 5)
    assert studio.strip.selected == (run.id, 5)
    value = studio.session.metrics(run)[5]["drift_lab"]
    assert f"loop 5: <b>{value:.3g}</b>" in studio.strip.readout.value
    recorder = PaintRecorder()
    studio.strip.paint(recorder)
    rings = [c for c in recorder.calls if c[0] == "rect" and c[2].get("stroke") == ACCENT]
    assert len(rings) == 1
    x = rings[0][1][0] + 4  # the ring is 8 px wide around the point
    geometry = studio.strip.geometry
    assert x == geometry.x(5, studio.strip.scroll) + geometry.thumb / 2
    # Another measure: the readout follows the menu.
    studio.strip.menu.value = "saturation"
    saturation = studio.session.metrics(run)[5]["saturation"]
    assert f"loop 5: <b>{saturation:.3g}</b>" in studio.strip.readout.value


def test_compare_tab_shows_the_differing_settings_and_scrubs_with_the_timeline(studio):
    run = studio.run(wait=True)
    studio.select(run, 2)
    child = studio.branch(cfg=3.0, denoise_seq=0.4)  # selected: the child's last frame
    compare = studio.compare
    assert not compare.active and compare.diff is None  # hidden: nothing compared or decoded

    studio.tabs.selected_index = 1
    assert compare.active
    assert (compare.branch_a, compare.branch_b) == (child, run)
    assert compare.diff.settings == {"cfg": (3.0, 8.0), "denoise_seq": (0.4, 0.5)}
    text = compare.settings.value
    assert "<code>cfg</code>" in text and "<code>denoise_seq</code>" in text
    assert "2 setting(s) differ" in text and "frames differ from loop 3" in text
    assert compare.index == 6  # the selected frame's loop

    # Selecting on the timeline moves the compare view; its slider moves the timeline.
    studio.select(run, 4)
    assert compare.index == 4 and not compare.pair.shared
    heat = np.asarray(Image.open(io.BytesIO(compare.image_diff.value)))
    assert heat.any()  # the frames differ: the heatmap is not all black
    compare.loop.value = 1
    assert studio.timeline.selected == (child.id, 1)
    assert compare.pair.shared and "identical" in compare.captions[2].value
    assert "loop 1" in studio.view.info.value

    # Back to the preview: the compare view stops following.
    studio.tabs.selected_index = 0
    studio.select(run, 5)
    assert compare.index == 1

    # Open again: A is the selected frame's branch; a branch run meanwhile joins the menus.
    studio.tabs.selected_index = 1
    assert (compare.branch_a, compare.branch_b) == (run, child) and compare.index == 5
    third = studio.branch(seed=7)
    assert [value for _, value in compare.menu_b.options] == [run.id, child.id, third.id]
    assert (compare.branch_a, compare.branch_b) == (run, child)  # the user's choice stays
