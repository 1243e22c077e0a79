"""Several branches from one frame, computed as one batch through the UNet."""

import pytest
import torch

import seqwidgets as sw

FAST = dict(steps=2, sequence_loop_count=5, positive_seq="0: a red circle", cfg=4.0)


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def test_batched_branches_equal_sequential_ones_with_one_unet_call_per_step(tiny_pipe, record):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST))
    changes = [{"seed": 100}, {"cfg": 2.0}, {"positive_seq": "0: a red circle\n3: a blue square"}]
    sequential = [session.branch((root, 1), **c) for c in changes]
    unet = record(tiny_pipe.unet)
    batched = session.branch_many((root, 1), changes)
    assert len(unet) == 3 * FAST["steps"]  # loops 2..4, all three variations in each call
    assert [b.fork for b in batched] == [2, 2, 2]
    for one, many in zip(sequential, batched, strict=True):
        assert many.params == one.params and many.indices == one.indices
        for index in one.own_indices:
            assert rel_l2(many.frames[index].latent, one.frames[index].latent) < 1e-4
        assert session.frame(many, 1) is session.frame(root, 1)  # the prefix is shared


def test_variations_that_change_the_schedule_run_in_their_own_group(tiny_pipe, record):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST))
    unet = record(tiny_pipe.unet)
    branches = session.branch_many((root, 2), [{"seed": 1}, {"steps": 3}, {"seed": 2}])
    assert [b.params.steps for b in branches] == [2, 3, 2]
    assert len(unet) == 2 * 2 + 2 * 3  # seeds 1 and 2 together, steps=3 on its own
    assert all(len(b.own_indices) == 2 for b in branches)


def test_branch_many_refuses_nothing_to_do_and_bad_settings(tiny_pipe):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST))
    with pytest.raises(ValueError, match="at least one"):
        session.branch_many((root, 1), [])
    with pytest.raises(ValueError, match="cfg"):
        session.branch_many((root, 1), [{"cfg": -1.0}])
    assert len(session.branches) == 1
    assert torch.isfinite(session.frame(root, 4).latent).all()
