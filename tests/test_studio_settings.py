"""The panel follows the selected frame: it shows the settings that made it, marks the edits
against them, and Branch / Re-run with no edits continue that branch exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqwidgets.params import PARAM_SPECS, SequenceParams
from seqwidgets.widgets import Studio
from seqwidgets.widgets.panel import ControlPanel

# The issue's own story, on the tiny pipeline: a red circle, a blue square, a green triangle.
FIRST = "0: a red circle\n3: a blue square\n6: a green triangle"
YELLOW = "0: a red circle\n3: a blue square\n6: a yellow square"
BASE = dict(steps=2, sequence_loop_count=8, positive_seq=FIRST)


@pytest.fixture
def studio(tiny_pipe):
    studio = Studio(tiny_pipe, params=SequenceParams(**BASE), renderer="image")
    yield studio
    studio.stop()
    studio.wait(10)


def _prompts(studio) -> str:
    return studio.panel.controls["positive_seq"].value


def _changed_rows(panel) -> set[str]:
    return {n for n, row in panel.rows.items() if "sw-changed" in row.get_state()["_dom_classes"]}


def test_selecting_a_frame_loads_the_settings_of_its_branch(studio):
    run = studio.run(wait=True)
    studio.select(run, 5)
    yellow = studio.branch(positive_seq=YELLOW)
    assert yellow.fork == 6 and yellow.params.positive_seq == YELLOW
    # A frame of the yellow branch: the panel shows the yellow keyframes...
    studio.select(yellow, 7)
    assert _prompts(studio) == YELLOW and studio.params == yellow.params
    # ...and a frame of the first run shows the first run's, whatever was typed last.
    studio.panel.controls["cfg"].value = 2.5
    studio.select(run, 7)
    assert _prompts(studio) == FIRST and studio.params == run.params
    assert studio.panel.changes() == {}
    # A loop the yellow branch shares with the run was made with the run's settings.
    studio.select(yellow, 2)
    assert studio.params == run.params
    assert "settings of" in studio.panel.source.value and run.name in studio.panel.source.value


def test_branching_again_from_a_second_level_branch_reproduces_it(studio):
    """With no edits, Branch and Re-run from any frame give that branch's own frames."""
    run = studio.run(wait=True)
    studio.select(run, 1)
    first = studio.branch(positive_seq=YELLOW)
    studio.select(first, 3)
    second = studio.branch(denoise_seq=0.35)
    assert (second.parent, second.fork) == (first, 4)
    studio.select(second, 5)
    assert studio.params == second.params
    assert studio.panel.changes() == {}
    again = studio.branch()
    assert again.parent is second and again.params == second.params
    for index in range(6, 8):
        mine, theirs = studio.session.frame(again, index), studio.session.frame(second, index)
        assert torch.equal(mine.latent, theirs.latent), f"loop {index} differs"
    studio.select(second, 5)
    rerun = studio.rerun()
    assert rerun.fork == 5
    for index in range(5, 8):
        assert torch.equal(
            studio.session.frame(rerun, index).latent, studio.session.frame(second, index).latent
        )
    # A loop the second branch shares with the first: Branch continues the first.
    studio.select(second, 2)
    shared = studio.branch()
    assert shared.parent is first and shared.params == first.params
    assert torch.equal(
        studio.session.frame(shared, 3).latent, studio.session.frame(first, 3).latent
    )


def test_edits_are_highlighted_and_summed_up_and_reset(studio):
    run = studio.run(wait=True)
    studio.select(run, 4)
    panel = studio.panel
    assert _changed_rows(panel) == set()
    assert panel.changes_line.layout.display == "none"
    panel.controls["denoise_seq"].value = 0.3
    panel.controls["positive_seq"].value = FIRST.replace("blue", "purple")
    assert _changed_rows(panel) == {"denoise_seq", "positive_seq"}
    line = panel.changes_line.value
    assert "Branch will change:" in line
    assert "denoise_seq 0.5 → 0.3" in line and "positive_seq (line 2)" in line
    assert panel.changes_line.layout.display != "none"
    assert panel.reset_button.layout.display != "none"
    # A seed typed as text that is not a number yet is an edit too (and an error).
    panel.controls["seed"].value = "12a"
    assert "seed 0 → 12a" in panel.changes_line.value
    panel.reset_button.click()
    assert _changed_rows(panel) == set() and panel.changes_line.value == ""
    assert studio.params == run.params


def test_keep_my_edits_carries_them_to_another_branch(studio):
    run = studio.run(wait=True)
    studio.select(run, 5)
    yellow = studio.branch(positive_seq=YELLOW, cfg=5.0)
    panel = studio.panel
    studio.select(run, 3)
    panel.controls["denoise_seq"].value = 0.25
    # Off (the default): another branch's frame brings its own settings, the edit is gone.
    studio.select(yellow, 7)
    assert studio.params == yellow.params
    # On: the edit stays, on top of the newly selected branch's settings.
    studio.select(run, 3)
    panel.controls["denoise_seq"].value = 0.25
    panel.keep_edits.value = True
    studio.select(yellow, 7)
    assert studio.params == yellow.params.replace(denoise_seq=0.25)
    assert set(panel.changes()) == {"denoise_seq"}
    alt = studio.branch()
    assert alt.parent is yellow and alt.params.denoise_seq == 0.25 and alt.params.cfg == 5.0


def test_scrubbing_one_branch_keeps_the_edits_typed_meanwhile(studio):
    run = studio.run(wait=True)
    studio.select(run, 2)
    studio.panel.controls["steps"].value = 3
    for index in (3, 4, 0, 7):
        studio.select(run, index)
    assert studio.params.steps == 3 and set(studio.panel.changes()) == {"steps"}


def test_forks_are_named_by_their_first_own_loop_everywhere(studio):
    run = studio.run(wait=True)
    studio.select(run, 5)
    branched = studio.branch(cfg=2.0)
    studio.select(run, 6)
    rerun = studio.rerun(cfg=3.0)
    many = studio.session.branch_many((run, 5), [{"seed": 9}])[0]
    # Branch after loop 5 and Re-run of loop 6 both start at loop 6: one wording for both.
    assert branched.fork == rerun.fork == many.fork == 6
    assert branched.name == rerun.name == many.name == "run 1 > from loop 6"
    studio.select(branched, 7)
    assert "run 1 &gt; from loop 6" in studio.view.info.value
    row = studio.timeline.row(branched.id)
    assert row.fork == 6 and row.name == f"branch {branched.id}"
    # The gutter's line under the label says the same (drawn from the row's fork).
    words = []
    studio.timeline._paint_background(_TextRecorder(words))
    assert "from loop 6" in words and "branch @5" not in " ".join(words)


class _TextRecorder:
    """A painter that keeps the text the timeline draws."""

    def __init__(self, words):
        self.words = words

    def text(self, s, *args, **kwargs):
        self.words.append(s)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def test_select_from_a_script_updates_params_as_a_click_does(studio):
    run = studio.run(wait=True)
    studio.select(run, 2)
    other = studio.branch(seed=7, sequence_loop_count=8)
    top = studio.timeline
    # A click (the timeline's selection) and a script's select go the same way.
    top.selected = (run.id, 1)
    assert studio.params == run.params
    studio.select(other, -1)
    assert studio.params == other.params
    assert studio.params.seed == 7


_VALUES = {
    name: (
        st.sampled_from(spec.choices)
        if spec.kind == "choice"
        else st.booleans()
        if spec.kind == "bool"
        else st.integers(int(spec.min), min(int(spec.max), 2**40))
        if spec.kind == "int" and not spec.nullable
        else st.floats(spec.min, spec.max, allow_nan=False).map(lambda v: round(v, 2))
        if spec.kind == "float"
        else None
    )
    for name, spec in PARAM_SPECS.items()
}
_EDITABLE = {name: strategy for name, strategy in _VALUES.items() if strategy is not None}


_PANEL = ControlPanel()  # one panel for every example: building one takes a while


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(sorted(_EDITABLE)), max_size=5), st.data())
def test_the_changes_are_exactly_the_fields_typed_differently(picked, data):
    panel = _PANEL
    reference = SequenceParams(steps=4, cfg=6.0, sequence_loop_count=16)
    panel.keep_edits.value = False
    panel.load(reference, source="run 1")
    edits = {name: data.draw(_EDITABLE[name], label=name) for name in sorted(picked)}
    panel.set_values(**edits)
    expected = {name for name, value in edits.items() if value != getattr(reference, name)}
    assert set(panel.changes()) == expected
    assert _changed_rows(panel) == expected
    assert (panel.changes_line.value != "") == bool(expected)
    panel.reset()
    assert panel.changes() == {} and panel.params == reference
