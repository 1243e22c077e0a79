"""Live drafts in the studio: a draft is a Branch not listed until kept, equal to it bit for bit,
and a burst of changes never queues work."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets.widgets.studio import Studio

BASE = dict(sequence_loop_count=5, steps=2, positive_seq="0: a red square\n3: a blue circle")


@pytest.fixture
def studio(tiny_pipe, request):
    """A studio whose run (BASE; its steps a loop: the parameter, when given) has loop 1
    selected."""
    steps = getattr(request, "param", BASE["steps"])
    studio = Studio(tiny_pipe, params=sw.SequenceParams(**dict(BASE, steps=steps)), threaded=True)
    run = studio.run(wait=True)
    studio.select(run, 1)
    yield studio
    studio.close()


def latents(branch) -> dict[int, torch.Tensor]:
    return {i: f.latent.clone() for i, f in branch.frames.items()}


def session_state(session):
    return [(b.id, b.name, b.fork, b.indices, b.params) for b in session.branches]


@pytest.mark.parametrize(
    "changes",
    [
        {"denoise_seq": 0.35},
        {"cfg": 3.0, "seed_mode_seq": "fixed"},
        {"positive_seq": "0: a red square\n2: a green triangle"},  # typed: debounced
    ],
)
def test_a_draft_equals_a_branch_with_the_same_settings_bit_for_bit(studio, changes):
    studio.live = True
    studio.panel.set_values(**changes)
    assert studio.wait_draft(60)
    draft = studio.draft
    assert draft is not None and draft not in studio.session.branches
    assert draft.fork == 2 and sorted(draft.frames) == [2, 3, 4]
    drafted = latents(draft)
    row = studio.timeline.row(draft.id)
    assert row.draft and row.done == {2, 3, 4}  # the marked row shows every draft frame

    studio.live = False
    studio.select(studio.session.branches[0], 1)
    branch = studio.branch(wait=True, **changes)
    assert sorted(branch.frames) == sorted(drafted)
    for index, latent in drafted.items():
        assert torch.equal(branch.frames[index].latent, latent), index


@pytest.mark.parametrize(
    ("studio", "draft_steps"), [(2, None), (4, 2)], indirect=["studio"], ids=["full", "draft-2"]
)
def test_a_burst_of_changes_runs_at_most_two_drafts_and_spends_bounded_calls(
    studio, draft_steps, record
):
    studio.draft_steps = draft_steps
    studio.live = True
    unet = record(studio.session.pipe.unet)
    studio.panel.set_values(denoise_seq=0.9)
    assert studio.wait_draft(60)
    one_draft = len(unet.calls)  # loops 2..4
    assert one_draft > 0
    unet.calls.clear()
    finished = studio.drafts.finished

    values = [round(0.3 + 0.02 * i, 2) for i in range(20)]
    for value in values:
        studio.panel.set_values(denoise_seq=value)
    assert studio.wait_draft(120)

    assert studio.drafts.finished - finished <= 2
    assert studio.draft.params.denoise_seq == values[-1]  # the last change is what shows
    assert studio.draft.params.steps == (draft_steps or 2)
    assert sorted(studio.draft.frames) == [2, 3, 4]
    # Each cancelled draft stops at its next model step: at most the step under way and one more.
    cancelled = studio.drafts.started - studio.drafts.finished
    assert len(unet.calls) <= 2 * one_draft + 2 * cancelled
    assert len(unet.calls) < len(values) * one_draft / 4


def test_keep_makes_an_ordinary_branch_that_survives_save_and_load(studio, tmp_path):
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4)
    assert studio.wait_draft(60)
    drafted = latents(studio.draft)

    kept = studio.keep()
    assert studio.draft is None and studio.timeline.row(0) is None
    assert kept in studio.session.branches and kept.id == 2
    assert kept.name == "run 1 > from loop 2" and studio.timeline.row(kept.id) is not None
    assert studio.session.branches[0].frames  # the run it forks from is untouched

    path = studio.session.save(tmp_path / "kept.safetensors")
    loaded = sw.Session.load(path, studio.session.pipe)
    (again,) = [b for b in loaded.branches if b.name == kept.name]
    assert again.fork == 2 and again.params.denoise_seq == 0.4
    for index, latent in drafted.items():
        assert torch.equal(again.frames[index].latent, latent)


def test_discard_leaves_the_session_as_before(studio):
    before = session_state(studio.session)
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4, positive_seq="0: a prompt only the draft uses")
    assert studio.wait_draft(60)
    assert studio.draft is not None

    studio.discard()
    assert studio.draft is None and studio.timeline.row(0) is None
    assert session_state(studio.session) == before
    prompts = studio.session.sampler.encoder._prompts
    assert not any("only the draft" in prompt for prompt in prompts)  # its encoding is freed
    studio.live = False
    studio.select(studio.session.branches[0], 1)
    assert studio.branch(wait=True, denoise_seq=0.4).id == 2  # no id was spent on the draft


def test_turning_live_off_discards_the_draft(studio):
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4)
    assert studio.wait_draft(60)
    assert studio.draft is not None and studio.timeline.row(0) is not None
    studio.live = False
    assert studio.draft is None and studio.timeline.row(0) is None
    assert not studio.live_bar.toggle.value  # the toggle follows the attribute


def test_no_draft_without_a_selected_frame(tiny_pipe):
    studio = Studio(tiny_pipe, params=sw.SequenceParams(**BASE), threaded=True)
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4)
    assert studio.wait_draft(10)
    assert studio.drafts.started == 0 and studio.draft is None
    studio.close()


def test_without_a_change_no_draft_runs_and_an_undone_change_drops_the_draft(studio):
    studio.live = True
    assert studio.drafts.started == 0  # live on, settings as the frame's: nothing to draft
    original = studio.panel.params.denoise_seq
    studio.panel.set_values(denoise_seq=0.4)
    assert studio.wait_draft(60) and studio.draft is not None
    studio.panel.set_values(denoise_seq=original)
    assert studio.wait_draft(60) and studio.draft is None


def test_an_error_in_a_draft_shows_in_the_studio_and_nothing_raises(studio):
    studio.select(studio.session.branches[0], 3)
    studio.live = True
    studio.panel.set_values(sequence_loop_count=2)  # ends before the selected loop 3
    assert studio.wait_draft(60)
    assert isinstance(studio.last_error, ValueError)
    assert "sequence_loop_count" in str(studio.last_error)
    assert "failed" in studio.live_bar.note.value
    assert studio.draft is None and studio.timeline.row(0) is None
    assert studio.error_area.layout.display != "none"


def test_a_job_stops_the_draft_first(studio):
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4)
    branch = studio.branch(wait=True)  # the session is free for it even while a draft ran
    assert branch.params.denoise_seq == 0.4 and not studio.drafts.busy
    assert "drafting" not in studio.live_bar.note.value  # ready, or stopped: never stale


def test_nothing_forks_from_a_draft(studio):
    session = studio.session
    draft = session.draft((session.branches[0], 1), denoise_seq=0.4)
    with pytest.raises(ValueError, match="keep_draft"):
        session.branch((draft, 3))
    with pytest.raises(ValueError, match="discard_draft"):
        session.delete(draft)
    session.discard_draft()
    with pytest.raises(ValueError, match="no draft"):
        session.keep_draft()


@pytest.mark.slow
def test_the_live_benchmark_runs_and_a_burst_finishes_at_most_two_drafts():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import bench_live

    result = bench_live.main(["--model", "tiny-random", "--loops", "4", "--changes", "6"])
    assert result["first_frame_ms"]["changes"] == 6
    assert result["first_frame_ms_at_draft_steps"]["changes"] == 6
    assert result["first_frame_ms_at_draft_steps"]["median"] > 0
    assert result["one_loop_engine_ms"] > 0 and result["first_frame_ms"]["median"] > 0
    for burst in result["bursts"].values():
        assert burst["drafts_finished"] <= 2 and burst["last_draft_is_last_change"]
        assert burst["drafts_started"] <= burst["changes"]


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(1, 30),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.004]), min_size=30, max_size=30),
)
def test_latest_only_never_queues_and_ends_on_the_last_request(count, gaps):
    from seqwidgets.widgets.drafts import LatestOnly

    completed, steps, submitted, running, at_once = [], [], {}, [], []

    def work(request, cancel):  # a draft of 5 model steps that checks its token before each
        running.append(request)
        at_once.append(len(running))
        try:
            for _ in range(5):
                if cancel.cancelled:
                    return False
                steps.append((request, time.monotonic()))
                time.sleep(0.001)
            completed.append(request)
            return True
        finally:
            running.remove(request)

    latest = LatestOnly(work)
    for request in range(count):
        submitted[request] = time.monotonic()
        latest.submit(request)
        time.sleep(gaps[request])
    assert latest.wait(10)
    assert max(at_once) == 1  # never two drafts at once
    assert completed[-1] == count - 1  # the last request always runs to its end
    assert latest.started <= count and latest.finished == len(completed)
    # Nothing queued: once a newer request came, a running one takes at most the step under way.
    for request in range(count - 1):
        late = [t for r, t in steps if r == request and t > submitted[request + 1]]
        assert len(late) <= 1, (request, late)


# -- draft steps: a draft may run fewer steps than the branch it would become ------------------------

#: The studio fixture with a run of 4 steps a loop.
STEPS_4 = pytest.mark.parametrize("studio", [4], indirect=True)


def branch_of(studio, **changes):
    """A plain Branch from loop 1 of the run with ``changes`` (live off: no draft involved)."""
    studio.live = False
    studio.select(studio.session.branches[0], 1)
    return studio.branch(wait=True, **changes)


def assert_same_latents(a: dict, b) -> None:
    assert sorted(a) == sorted(b.frames)
    for index, latent in a.items():
        assert torch.equal(b.frames[index].latent, latent), index


@STEPS_4
def test_a_draft_at_draft_steps_equals_a_branch_at_those_steps_bit_for_bit(studio):
    studio.draft_steps = 2
    studio.live = True
    studio.panel.set_values(denoise_seq=0.45)
    assert studio.wait_draft(60)
    draft = studio.draft
    assert draft.params.steps == 2 and draft.params.denoise_seq == 0.45
    drafted = latents(draft)
    assert_same_latents(drafted, branch_of(studio, denoise_seq=0.45, steps=2))


@STEPS_4
@pytest.mark.parametrize(
    ("changes", "full"), [({"cfg": 3.0}, 4), ({"cfg": 3.0, "steps": 5}, 5)], ids=["cfg", "steps"]
)
def test_keep_renders_a_draft_at_draft_steps_as_the_full_branch_bit_for_bit(
    studio, record, changes, full
):
    studio.draft_steps = 1
    studio.live = True
    studio.panel.set_values(**changes)
    assert studio.wait_draft(60) and studio.draft.params.steps == 1
    unet = record(studio.session.pipe.unet)

    kept = studio.keep()
    assert kept.params.steps == full and kept.params.cfg == 3.0 and kept.fork == 2
    assert len(unet.calls) == 3 * full  # loops 2-4 rendered anew at the full steps
    assert studio.draft is None and studio.timeline.row(0) is None  # the draft is dropped
    assert kept in studio.session.branches and kept.name == "run 1 > from loop 2"
    assert f"rendered at {full} steps" in studio.live_bar.note.value
    assert_same_latents(latents(kept), branch_of(studio, **changes))


@STEPS_4
def test_keep_of_a_draft_at_the_branchs_own_steps_keeps_it_as_computed(studio, record):
    studio.draft_steps = 8  # not fewer than the branch's 4: the draft runs the full 4
    studio.live = True
    studio.panel.set_values(cfg=3.0)
    assert studio.wait_draft(60)
    draft = studio.draft
    assert draft.params.steps == 4
    unet = record(studio.session.pipe.unet)
    assert studio.keep() is draft and unet.calls == []  # kept, not computed again


@STEPS_4
def test_the_draft_row_and_the_live_bar_say_the_draft_steps(studio):
    studio.live = True
    studio.draft_steps = 2
    assert studio.live_bar.draft_steps.value == 2  # the menu follows the attribute
    studio.panel.set_values(denoise_seq=0.45)
    assert studio.wait_draft(60)
    assert "draft at 2 steps — Keep renders at 4" in studio.live_bar.note.value
    assert studio.timeline.row(0).note == "2 of 4 steps"

    studio.live_bar.draft_steps.value = 0  # "as the branch", from the menu
    assert studio.draft_steps is None
    assert studio.wait_draft(60)  # drafted again, at the full steps
    assert studio.draft.params.steps == 4
    assert "Keep renders" not in studio.live_bar.note.value
    assert studio.timeline.row(0).note == ""


@STEPS_4
def test_changing_draft_steps_while_live_drafts_again_at_the_new_steps(studio):
    studio.live = True
    studio.panel.set_values(denoise_seq=0.45)
    assert studio.wait_draft(60) and studio.draft.params.steps == 4
    studio.draft_steps = 3
    assert studio.wait_draft(60) and studio.draft.params.steps == 3
    studio.draft_steps = 5  # an odd value: offered in the menu from now on
    assert 5 in [value for _, value in studio.live_bar.draft_steps.options]


@STEPS_4
@pytest.mark.parametrize("steps", [0, -2])
def test_draft_steps_below_one_is_refused_with_one_line(studio, steps):
    with pytest.raises(ValueError, match=r"draft_steps: .* use an int >= 1, or None"):
        studio.draft_steps = steps
    assert studio.draft_steps is None


@STEPS_4
def test_with_draft_steps_discard_still_cancels_and_drops_the_draft(studio):
    before = session_state(studio.session)
    studio.draft_steps = 2
    studio.live = True
    studio.panel.set_values(denoise_seq=0.8)
    studio.discard()  # cancels the draft under way
    assert studio.draft is None and not studio.drafts.busy
    assert session_state(studio.session) == before
    with pytest.raises(ValueError, match="no draft to keep"):
        studio.keep()


# -- the kernel never waits for a draft's model step ---------------------------------------------


@pytest.fixture
def held_unet(studio):
    """Each UNet call of the studio's pipeline waits (10 s at most) until ``release`` is set;
    ``entered`` is set once a call waits."""
    import threading

    entered, release, timed_out = threading.Event(), threading.Event(), []

    def hold(*_args):
        entered.set()
        if not release.wait(10):
            timed_out.append(True)

    handle = studio.session.pipe.unet.register_forward_pre_hook(hold)
    yield entered, release, timed_out
    release.set()
    handle.remove()


@pytest.mark.parametrize("how", ["button", "live off", "change undone"])
def test_discarding_during_a_draft_returns_before_its_model_step_ends(studio, held_unet, how):
    entered, release, timed_out = held_unet
    before = session_state(studio.session)
    original = studio.panel.params.denoise_seq
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4)
    assert entered.wait(10)  # the draft is inside a model call, held there

    if how == "button":
        studio.live_bar.discard_button.click()
    elif how == "live off":
        studio.live = False
    else:
        studio.panel.set_values(denoise_seq=original)
    returned_while_held = not release.is_set()
    release.set()

    assert returned_while_held and not timed_out  # the click did not wait for the step
    assert studio.wait_draft(60)
    assert studio.draft is None and studio.timeline.row(0) is None
    assert session_state(studio.session) == before
    assert "draft" not in studio.live_bar.note.value  # no stale "drafting…" line


def test_a_job_started_while_a_drop_waits_drops_the_draft_first(studio, held_unet):
    import threading

    entered, release, _ = held_unet
    studio.live = True
    studio.panel.set_values(denoise_seq=0.4)
    assert entered.wait(10)
    studio.discard(wait=False)  # the drop waits behind the held draft
    threading.Timer(0.2, release.set).start()  # the step ends while Branch waits for it
    branch = studio.branch(wait=True)  # the panel's settings: no new draft asked for
    assert studio.draft is None and studio.timeline.row(0) is None
    assert branch in studio.session.branches and branch.params.denoise_seq == 0.4


def test_keep_clicked_during_a_draft_stops_it_and_renders_the_branch_as_a_job(studio):
    import threading

    entered, release, draft_calls = threading.Event(), threading.Event(), []

    def hold(*_args):  # the draft's first model call waits for the click
        if threading.current_thread().name == "seqwidgets-draft":
            draft_calls.append(1)
            entered.set()
            release.wait(10)

    handle = studio.session.pipe.unet.register_forward_pre_hook(hold)
    try:
        studio.live = True
        studio.panel.set_values(denoise_seq=0.4)
        assert entered.wait(10)
        click = threading.Thread(target=studio.live_bar.keep_button.click)
        click.start()
        threading.Timer(0.2, release.set).start()  # the held step ends; the click stops the rest
        click.join(30)
        assert not click.is_alive() and studio.wait(60)
    finally:
        release.set()
        handle.remove()
    # The draft (3 loops x 2 steps) stopped at the step after the click: Keep did not wait for it.
    assert len(draft_calls) <= 2
    kept = studio.session.branches[-1]
    assert studio.draft is None and kept.params.denoise_seq == 0.4 and kept.is_complete
    assert "kept the draft" in studio.live_bar.note.value
    assert_same_latents(latents(kept), branch_of(studio, denoise_seq=0.4))
