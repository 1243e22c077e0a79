"""Structure, readability and the studio's edges (issue 22, round 3)."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import ipywidgets as W
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqwidgets import comfy, export
from seqwidgets.engine import CancelToken
from seqwidgets.frames import chain_blend, chain_caption, prompt_shares
from seqwidgets.params import PARAM_SPECS, SequenceParams
from seqwidgets.session import Session
from seqwidgets.widgets import Studio, colab, render
from seqwidgets.widgets.panel import ControlPanel
from seqwidgets.widgets.sections import ToggleSections

PACKAGE = Path(__file__).resolve().parents[1] / "seqwidgets"
LONGEST = 100  # lines, the signature and docstring included: beyond it, split into steps


def test_no_function_is_over_100_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines}")
    assert not long, "split these into readable steps:\n" + "\n".join(long)


def test_the_codec_knows_the_nodes_int_widgets_as_the_settings_do():
    # comfy.py no longer imports params (no cycle): its copy of the node's INT inputs and of
    # the "as the node does" defaults must stay what SequenceParams says.
    ints = tuple(name for name in comfy.NODE_WIDGETS if PARAM_SPECS[name].kind == "int")
    assert ints == comfy.INT_WIDGETS
    for name, (default, _) in comfy.DROPPED.items():
        assert PARAM_SPECS[name].default == default, name


# -- Stop right after a background run ----------------------------------------------------------

LONG = dict(steps=2, sequence_loop_count=40, positive_seq="0: a red circle")


@pytest.mark.parametrize("kind", ["run", "branch"])
def test_stop_right_after_a_background_job_stops_it(tiny_pipe, monkeypatch, kind):
    studio = Studio(tiny_pipe, params=SequenceParams(**LONG))
    if kind == "branch":
        studio.run(sequence_loop_count=2)
    before = len(studio.session.branches)
    # The job's thread is slow to start, as on a busy machine: Stop lands before it runs.
    update = studio._update_buttons

    def slow_start():
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.1)
        update()

    monkeypatch.setattr(studio, "_update_buttons", slow_start)
    start = studio.run if kind == "run" else studio.branch
    assert start(wait=False, sequence_loop_count=40) is None
    studio.stop()
    assert studio.wait(60)
    frames = sum(len(branch.frames) for branch in studio.session.branches[before:])
    assert frames <= 1, f"{frames} of 40 loops ran after Stop"
    assert "stopped" in studio.header.status.value
    assert not studio.transport.run_button.disabled and studio.transport.stop_button.disabled
    studio.close()


def test_session_stop_right_after_a_background_run_stops_it(tiny_pipe):
    session = Session(tiny_pipe)
    branch = session.run(SequenceParams(**LONG), wait=False)
    session.stop()
    deadline = time.monotonic() + 60
    while session.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not session.running and session.stopped
    assert len(branch.frames) <= 1


def test_a_token_cancelled_before_the_run_stops_it_at_its_first_step(tiny_pipe):
    token = CancelToken()
    token.cancel()
    session = Session(tiny_pipe)
    branch = session.run(SequenceParams(**LONG), cancel=token)
    assert branch.frames == {} and session.stopped


# -- the prompt cache follows the branches ------------------------------------------------------


def test_deleting_branches_frees_the_prompts_no_branch_uses(tiny_pipe):
    session = Session(tiny_pipe)
    fast = dict(steps=1, sequence_loop_count=3, negative_seq="0: blurry")
    kept = session.run(SequenceParams(positive_seq="0: a red circle\n2: a blue square", **fast))
    encoder = session.sampler.encoder
    doomed = []
    for n in range(5):
        doomed.append(session.run(SequenceParams(positive_seq=f"0: shape {n}", **fast)))
    assert len(encoder.cached_prompts) == 3 + 5
    for branch in doomed:
        session.delete(branch)
    assert sorted(encoder.cached_prompts) == ["a blue square", "a red circle", "blurry"]
    calls = session.sampler.text_encoder_calls
    session.rerun((kept, 0))
    session.branch((kept, 1), cfg=3.0)
    assert session.sampler.text_encoder_calls == calls, "a kept branch's prompts were freed"


def test_a_prompt_shared_with_a_remaining_branch_stays(tiny_pipe):
    session = Session(tiny_pipe)
    fast = dict(steps=1, sequence_loop_count=2, negative_seq="0: blurry")
    a = session.run(SequenceParams(positive_seq="0: a red circle", **fast))
    b = session.branch((a, 0), positive_seq="0: a red circle\n1: a green triangle")
    session.delete(b)
    assert "a green triangle" not in session.sampler.encoder.cached_prompts
    session.delete(a)
    assert session.sampler.encoder.cached_prompts == []


def _interpolated_run(pipe, first: str, last: str, loops: int):
    """A session and its run from ``first`` at loop 0 to ``last`` at the last loop, linearly
    interpolated: every loop in between has a chain of its own."""
    session = Session(pipe)
    keyframes = f"0: {first}\n{loops - 1}: {last}"
    params = SequenceParams(
        steps=1, sequence_loop_count=loops, positive_seq=keyframes, keyframe_interpolation="linear"
    )
    return session, session.run(params)


@pytest.mark.filterwarnings("ignore:.*never reached")
def test_an_interpolated_run_keeps_a_bounded_number_of_folded_chains(tiny_pipe):
    session, run = _interpolated_run(tiny_pipe, "a red circle", "a blue square", 100)
    encoder = session.sampler.encoder
    assert len(encoder._chains) <= encoder.CHAINS_KEPT < 100
    # A dropped chain is folded again to the same conditioning: same frames, bit for bit.
    again = session.rerun((run, 1), sequence_loop_count=3)
    for i in (1, 2):
        assert torch.equal(session.frame(again, i).latent, session.frame(run, i).latent)


# -- readable session and diff ------------------------------------------------------------------


def test_a_printed_diff_is_short_and_says_what_changed(tiny_pipe):
    session = Session(tiny_pipe)
    run = session.run(SequenceParams(steps=1, sequence_loop_count=30, positive_seq="0: a"))
    alt = session.branch((run, 3), cfg=3.0)
    diff = session.diff(run, alt)
    text, line = str(diff), repr(diff)
    assert "tensor" not in text + line
    assert len(text) < 1500 and len(line) < 200 and "\n" not in line
    assert "cfg: 8.0 -> 3.0" in text and "loops 0..3: shared" in text
    assert "more loops" in text  # 26 parted loops: the table stops, and says so
    assert "'run 1'" in line and "cfg changed" in line and "parted at loop 4" in line
    # The data stays as it was.
    assert diff.settings == {"cfg": (8.0, 3.0)} and diff.parted_at == 4 and len(diff.pairs) == 30
    assert len(repr(diff.pairs[5])) < 400


def test_a_session_has_a_short_repr(tiny_pipe):
    session = Session(tiny_pipe)
    assert repr(session) == "<Session sd: 0 branch(es), 0 frame(s), idle>"
    session.run(SequenceParams(steps=1, sequence_loop_count=3, positive_seq="0: a"))
    assert repr(session) == "<Session sd: 1 branch(es), 3 frame(s), idle>"
    token = CancelToken()
    token.cancel()
    session.run(SequenceParams(steps=1, sequence_loop_count=3, positive_seq="0: b"), cancel=token)
    assert repr(session) == "<Session sd: 2 branch(es), 3 frame(s), stopped>"


# -- captions under keyframe interpolation ------------------------------------------------------


def test_captions_between_keyframes_show_the_blend(tiny_pipe, monkeypatch, tmp_path):
    session, run = _interpolated_run(tiny_pipe, "a green triangle", "a yellow circle", 11)
    prompts = [session.frame(run, i).prompt for i in range(11)]
    assert prompts[0] == "a green triangle" and prompts[10] == "a yellow circle"
    assert prompts[1] == "a green triangle → a yellow circle, 10%"
    assert prompts[9] == "a green triangle → a yellow circle, 90%"
    # The contact sheet's captions and the studio's frame details say the same.
    written = {}
    monkeypatch.setattr(
        export,
        "save_contact_sheet",
        lambda images, path, captions, **kw: written.update(c=captions),
    )
    session.export(run, tmp_path / "sheet.png", format="contact_sheet")
    assert written["c"][2][1] == "a green triangle → a yellow circle, 20%"
    details = render.frame_info_html(run, session.frame(run, 3), (64, 64))
    assert "a yellow circle</span> <span class='sw-muted'>30%</span>" in details


chains = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0.0, 1.0)), min_size=1, max_size=6
)


@given(chains)
def test_a_chains_shares_add_up_and_its_caption_names_the_main_prompts(chain):
    chain = ((chain[0][0], 1.0), *chain[1:])
    shares = prompt_shares(chain)
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    prompt, following, percent = chain_blend(chain)
    newest = list(shares)[-1]
    if following is None:  # one prompt holds: the newest at ~100%, or the one before at ~0%
        assert (prompt == newest) == (round(100 * shares[newest]) >= 100 or len(shares) == 1)
    else:
        assert 0 < percent < 100 and following == list(shares)[-1] != prompt
        assert abs(shares[following] * 100 - percent) <= 0.5
    assert chain_caption(chain).startswith(prompt)


# -- Colab: no Accordion ------------------------------------------------------------------------


def _tree(widget):
    """``widget`` and every widget under it, each with its ancestors (outermost first)."""
    stack = [(widget, ())]
    while stack:
        node, above = stack.pop()
        yield node, above
        for child in getattr(node, "children", ()):
            stack.append((child, (*above, node)))


def _click(button) -> None:
    """What the browser sends when a ToggleButton is clicked: a state update of its value."""
    state = {"value": not button.value}
    button.comm.handle_msg({"content": {"data": {"method": "update", "state": state}}})


def test_on_colab_the_settings_fold_without_an_accordion(monkeypatch):
    monkeypatch.setattr(colab, "in_colab", lambda: True)
    panel = ControlPanel(SequenceParams())
    assert not any(isinstance(w, W.Accordion) for w, _ in _tree(panel))
    sections = panel.sections
    assert isinstance(sections, ToggleSections)
    assert sections.titles[sections.selected_index] == "Sampling"  # open, as the Accordion is
    seed = sections.titles.index("Seed")
    header, box = sections.headers[seed], sections.boxes[seed]
    assert box.layout.display == "none"
    _click(header)
    assert box.layout.display is None and sections.selected_index == seed
    assert sections.boxes[sections.titles.index("Sampling")].layout.display == "none"
    _click(header)
    assert box.layout.display == "none" and sections.selected_index is None
    # Every setting is in the panel, and opening its section shows it.
    where = {id(w): above for w, above in _tree(panel)}
    for name, control in panel.controls.items():
        assert id(control) in where, f"{name} is not in the panel"
        section = next((b for b in sections.boxes if b in where[id(control)]), None)
        if section is not None:
            sections.selected_index = sections.boxes.index(section)
        hidden = [w for w in where[id(control)] if w.layout.display == "none"]
        assert hidden in ([], [panel.rows[name]]), name  # only a row the model has no use for


def test_an_error_opens_its_section_on_colab_too(monkeypatch):
    monkeypatch.setattr(colab, "in_colab", lambda: True)
    panel = ControlPanel(SequenceParams())
    panel.controls["use_conditioning_slerp"].value = True
    panel.controls["keyframe_interpolation"].value = "linear"  # they exclude each other
    assert "⚠ Interpolation" in panel.sections.titles
    assert panel.sections.titles[panel.sections.selected_index] == "⚠ Interpolation"
    assert "⚠ Interpolation" in [h.description for h in panel.sections.headers]


def test_elsewhere_the_settings_stay_an_accordion(monkeypatch):
    monkeypatch.setattr(colab, "in_colab", lambda: False)
    assert isinstance(ControlPanel().sections, W.Accordion)
