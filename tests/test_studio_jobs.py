"""The studio's job runner and the texts it shows, without a widget or a model."""

from __future__ import annotations

import html
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqwidgets.params import SequenceParams
from seqwidgets.widgets import render
from seqwidgets.widgets.jobs import (
    Job,
    JobRunner,
    export_path,
    find_branch,
    fork_changes,
    loop_index,
)


@given(
    loops=st.integers(1, 60),
    steps=st.integers(1, 30),
    data=st.data(),
)
def test_progress_counts_from_the_fork_and_ends_at_the_last_step(loops, steps, data):
    fork = data.draw(st.integers(0, loops - 1), label="fork")
    params = SequenceParams(steps=steps, sequence_loop_count=loops, positive_seq="0: a")
    job = Job("branch", params, started=0.0)
    now, shown = 1.0, []
    for loop in range(fork, loops):
        for step in range(steps):
            now += 0.5
            job.on_step(loop, step, now)
            shown.append(job.done_steps / job.total_steps)
        job.on_frame(loop)
    # Each step moves the bar forward; the last one fills it, whatever the fork.
    assert all(b > a for a, b in zip(shown, shown[1:], strict=False))
    assert shown[-1] == 1.0 and job.frames == loops - fork
    text = render.progress_html(job, now)
    assert f"loop {loops - 1} ({loops}/{loops})" in text and f"step {steps}/{steps}" in text
    if job.steps > 1:
        assert "2.0 it/s" in text and "ETA 0:00" in text
    job.finished = True
    assert "ETA" not in render.progress_html(job, now)


def test_progress_before_the_first_step_is_the_note():
    job = Job("run", SequenceParams(steps=2, sequence_loop_count=3, positive_seq="0: a"), 0.0)
    assert render.progress_html(job, 5.0, "run: starting…") == (
        "<span class='sw-progress'>run: starting…</span>"
    )
    job.on_step(0, 0, 1.0)
    assert "it/s" not in render.progress_html(job, 5.0), "no speed from a single step"


def test_how_a_job_ended_is_said_once_and_plainly():
    job = Job("rerun", None, started=10.0, frames=2)
    assert render.finish_note(job, 12.0, stopped=False) == ("idle", "done: 2 frame(s) in 2.0 s")
    job.error = RuntimeError("boom")
    assert render.finish_note(job, 12.0, stopped=True)[0] == "error"
    assert render.bar_style(job) == "danger"


@pytest.mark.parametrize("threaded", [True, False])
def test_the_runner_reports_an_error_and_finishes_either_way(threaded):
    finished, errors = [], []
    runner = JobRunner(
        threaded,
        lambda job: finished.append(runner.running),
        lambda exc, text: errors.append((exc, text)),
    )
    job = Job("run", None, started=0.0)

    def fail(job):
        raise ValueError("settings: no")

    with pytest.raises(ValueError, match="settings: no"):
        runner.start(job, fail, wait=True)
    assert finished == [False], "on_finish sees the job as no longer running"
    assert isinstance(errors[0][0], ValueError) and "Traceback" in errors[0][1]
    assert job.finished and job.error is errors[0][0] and not runner.running


def test_one_job_at_a_time_and_stop_marks_it():
    release = threading.Event()
    runner = JobRunner(True, lambda job: None)
    job = Job("run", None, started=0.0)
    assert runner.start(job, lambda job: release.wait(10) and "done", wait=False) is None
    assert runner.running
    with pytest.raises(RuntimeError, match="in progress"):
        runner.start(Job("run", None, 0.0), lambda job: None)
    assert runner.stop() and job.stopping
    release.set()
    assert runner.wait(10) and job.result == "done" and not runner.running
    assert not runner.stop(), "nothing to stop once it ended"


def test_export_paths_never_overwrite(tmp_path):
    first = export_path(tmp_path, 2, 5, "contact_sheet")
    first.write_bytes(b"x")
    second = export_path(tmp_path, 2, 5, "contact_sheet")
    assert (first.name, second.name) == ("seqwidgets-2-loop5.png", "seqwidgets-2-loop5-2.png")
    assert export_path(tmp_path, 2, 5, "png").name == "seqwidgets-2-loop5"  # a folder of PNGs


@given(st.text(max_size=40))
def test_texts_from_the_user_are_escaped(prompt):
    shown = render.error_html(ValueError(prompt), prompt)
    assert html.escape(f"ValueError: {prompt}") in shown
    chain = render.chain_html([(prompt, 1.0)])
    inner = re.fullmatch(r"<span class='sw-prompt'>(.*)</span>", chain, re.S).group(1)
    assert "<" not in inner and html.unescape(inner) == (prompt or "(empty)")


class _Branch:
    """What the lookups read of a session's `Branch`."""

    def __init__(self, id: int, name: str, done: int, loops: int):
        self.id, self.name, self.indices = id, name, list(range(done))
        self.params = SequenceParams(sequence_loop_count=loops, positive_seq="0: a")


@given(st.integers(1, 30), st.data())
def test_loop_index_counts_negatives_from_the_last_computed_loop(loops, data):
    done = data.draw(st.integers(1, loops))
    branch = _Branch(3, "run 3", done, loops)
    index = data.draw(st.integers(-done, loops - 1))
    assert loop_index(branch, index) == (index if index >= 0 else done + index)
    outside = data.draw(st.one_of(st.integers(loops, loops + 5), st.integers(-50, -done - 1)))
    with pytest.raises(IndexError, match=r"branch 3 \(run 3\) has loops 0\.\."):
        loop_index(branch, outside)


def test_find_branch_by_itself_its_id_or_its_name():
    a, b = _Branch(1, "run 1", 2, 2), _Branch(2, "run 1 > from loop 1", 2, 2)
    assert find_branch([a, b], b) is b
    assert find_branch([a, b], 2) is b
    assert find_branch([a, b], "run 1") is a
    with pytest.raises(ValueError, match="no branch 'gentle'"):
        find_branch([a, b], "gentle")


@settings(max_examples=30)
@given(st.floats(1.0, 15.0), st.floats(1.0, 15.0), st.integers(1, 40), st.integers(1, 40))
def test_fork_changes_are_exactly_the_fields_that_differ(cfg_a, cfg_b, steps_a, steps_b):
    a = SequenceParams(cfg=cfg_a, steps=steps_a)
    b = SequenceParams(cfg=cfg_b, steps=steps_b)
    expected = {}
    if cfg_a != cfg_b:
        expected["cfg"] = cfg_b
    if steps_a != steps_b:
        expected["steps"] = steps_b
    assert fork_changes(a, b) == expected
    assert a.replace(**fork_changes(a, b)) == b


def test_a_pick_during_a_job_follows_only_the_newest_frame():
    job = Job("run", None, started=0.0)
    job.branch = _Branch(4, "run 4", 3, 8)
    newest = {4: 2}.__getitem__
    job.picked((4, 1), newest)
    assert not job.follow, "an older frame: the selection stays there"
    job.picked((4, 2), newest)
    assert job.follow, "back on the newest frame: follow the run again"
    job.picked(None, newest)
    assert not job.follow
