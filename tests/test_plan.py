import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqwidgets import interp
from seqwidgets.params import SequenceParams
from seqwidgets.plan import LoopPlan, plan_sequence, prompt_chains, seed_sequence


def make_params(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SequenceParams(**kwargs)


class NodeSeeds:
    """The seed logic of KSamplerSeq, transcribed literally from the node (Python ints, no wrap).

    Only `seeds` is ours: it is the node's `sample` loop with everything but the seed removed.
    """

    def __init__(self):
        self.previous_seed = None
        self.current_seed = None

    def initialize_seeds(self, initial_seed):
        self.previous_seed = initial_seed
        self.current_seed = initial_seed

    def update_seed(self, seed, seed_mode):
        if seed_mode == "increment":
            return seed + 1
        elif seed_mode == "decrement":
            return seed - 1
        elif seed_mode == "fixed":
            return seed

    def update_alternate_seed(self, loop_count):
        if loop_count % 3 == 0:
            if self.previous_seed is None:
                self.previous_seed = self.current_seed
            else:
                self.previous_seed, self.current_seed = (
                    self.current_seed,
                    self.previous_seed + 1 if loop_count // 2 % 2 == 0 else self.previous_seed - 1,
                )
        return self.current_seed

    def seeds(self, seed, seed_mode_seq, alternate_values, sequence_loop_count):
        out = []
        seq_seed = None
        self.initialize_seeds(seed)
        for loop_count in range(sequence_loop_count):
            if alternate_values and loop_count % 2 == 0:
                seq_seed = self.update_alternate_seed(seed) if seed_mode_seq != "fixed" else seed
            else:
                seq_seed = seed if loop_count <= 0 else self.update_seed(seq_seed, seed_mode_seq)
            out.append(seq_seed)
        return out


def seeds_of(seed, mode, alternate, loops):
    return seed_sequence(
        make_params(
            seed=seed, seed_mode_seq=mode, alternate_values=alternate, sequence_loop_count=loops
        )
    )


@pytest.mark.parametrize(
    ("seed", "mode", "alternate", "loops", "expected"),
    [
        (5, "increment", True, 8, [5, 6, 5, 6, 5, 6, 5, 6]),
        (0, "increment", True, 8, [1, 2, 1, 2, 2, 3, 2, 3]),
        (7, "increment", False, 5, [7, 8, 9, 10, 11]),
        (0, "decrement", False, 3, [0, 2**64 - 1, 2**64 - 2]),
        (3, "increment", True, 8, [2, 3, 2, 3, 1, 2, 1, 2]),
        (6, "decrement", True, 6, [5, 4, 5, 4, 4, 3]),
        (9, "fixed", True, 4, [9, 9, 9, 9]),
        (9, "fixed", False, 3, [9, 9, 9]),
        (2**64 - 1, "increment", False, 3, [2**64 - 1, 0, 1]),
    ],
)
def test_seed_examples(seed, mode, alternate, loops, expected):
    assert seeds_of(seed, mode, alternate, loops) == expected


def test_the_oracle_itself_reproduces_the_brief_examples():
    assert NodeSeeds().seeds(0, "increment", True, 8) == [1, 2, 1, 2, 2, 3, 2, 3]
    assert NodeSeeds().seeds(0, "decrement", False, 3) == [0, -1, -2]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.one_of(
        st.integers(0, 50), st.integers(0, 2**64 - 1), st.integers(2**64 - 20, 2**64 - 1)
    ),
    mode=st.sampled_from(["increment", "decrement", "fixed"]),
    alternate=st.booleans(),
    loops=st.integers(1, 60),
)
def test_seeds_match_the_node_modulo_2_64(seed, mode, alternate, loops):
    expected = [s % 2**64 for s in NodeSeeds().seeds(seed, mode, alternate, loops)]
    assert seeds_of(seed, mode, alternate, loops) == expected


def test_seeds_match_the_node_over_a_long_run():
    for seed in (0, 3, 6, 9, 12):
        for mode in ("increment", "decrement"):
            expected = [s % 2**64 for s in NodeSeeds().seeds(seed, mode, True, 1024)]
            assert seeds_of(seed, mode, True, 1024) == expected


def test_random_mode_is_reproducible_and_in_range():
    a = seeds_of(11, "random", False, 50)
    assert a == seeds_of(11, "random", False, 50)
    assert a[0] == 11
    assert all(0 <= s < 2**64 for s in a)
    assert len(set(a)) == 50
    assert seeds_of(12, "random", False, 50)[1:] != a[1:]


def test_random_mode_with_alternate_values_keeps_the_alternate_seed_on_even_loops():
    seeds = seeds_of(4, "random", True, 10)  # 4 % 3 != 0: even loops keep the base seed
    assert seeds[0::2] == [4] * 5
    assert len(set(seeds[1::2])) == 5


KEYS = [(0, "a"), (4, "b"), (8, "c")]


def test_hold_chains_follow_the_nodes_update_conditioning():
    chains = prompt_chains(KEYS, 10)
    expected = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    assert chains == [((p, 1.0),) for p in expected]


def test_conditioning_slerp_chains():
    chains = prompt_chains(KEYS, 10, slerp_strength=0.3)
    a = (("a", 1.0),)
    ab = (("a", 1.0), ("b", 0.3))
    abc = (*ab, ("c", 0.3))
    assert chains == [a] * 4 + [ab] * 4 + [abc] * 2


def test_conditioning_slerp_strength_edges():
    assert prompt_chains(KEYS, 10, slerp_strength=0.0) == [(("a", 1.0),)] * 10
    assert prompt_chains(KEYS, 10, slerp_strength=1.0) == prompt_chains(KEYS, 10)


@pytest.mark.parametrize("mode", ["linear", "ease"])
def test_interpolated_chains_reach_each_keyframe_exactly(mode):
    chains = prompt_chains(KEYS, 12, interpolation=mode)
    for index, prompt in KEYS:
        assert chains[index] == ((prompt, 1.0),)
    assert chains[9:] == [(("c", 1.0),)] * 3
    weights = [chains[i][1][1] for i in (1, 2, 3)]
    assert [chains[i][1][0] for i in (1, 2, 3)] == ["b"] * 3
    assert all(chains[i][0] == ("a", 1.0) for i in (1, 2, 3))
    if mode == "linear":
        assert weights == [0.25, 0.5, 0.75]
    else:
        assert weights == pytest.approx(
            [(1 - math.cos(math.pi * w)) / 2 for w in (0.25, 0.5, 0.75)]
        )
        assert weights[0] < 0.25 and weights[2] > 0.75
    assert chains[6] == (("b", 1.0), ("c", pytest.approx(0.5)))


def test_slerp_and_interpolation_exclude_each_other():
    with pytest.raises(ValueError):
        prompt_chains(KEYS, 5, slerp_strength=0.5, interpolation="linear")
    with pytest.raises(ValueError, match="cubic"):
        prompt_chains(KEYS, 5, interpolation="cubic")


def evaluate(chain, embeddings):
    cond = embeddings[chain[0][0]]
    for prompt, t in chain[1:]:
        cond = interp.slerp(t, cond, embeddings[prompt])
    return cond


def test_slerp_chains_equal_the_nodes_recurrence_on_tensors():
    torch.manual_seed(0)
    embeddings = {p: torch.randn(1, 5, 16) for _, p in KEYS}
    strength = 0.4
    chains = prompt_chains(KEYS, 12, slerp_strength=strength)
    starts = dict(KEYS)
    used = None
    for i in range(12):
        # The node: scheduled is the keyframe at i, else the previous loop's conditioning.
        scheduled = embeddings[starts[i]] if i in starts else used
        used = scheduled if used is None else interp.slerp(strength, used, scheduled)
        torch.testing.assert_close(evaluate(chains[i], embeddings), used, rtol=1e-5, atol=1e-5)


def test_plan_sequence_without_a_model():
    params = make_params(
        seed=5,
        sequence_loop_count=10,
        positive_seq="0: a\n4: b",
        negative_seq="0: n\n6: m",
        denoise_start=0.9,
        denoise_seq=0.4,
    )
    plans = plan_sequence(params)
    assert [p.index for p in plans] == list(range(10))
    assert [p.seed for p in plans] == seed_sequence(params)
    assert [p.denoise for p in plans] == [0.9] + [0.4] * 9
    assert [p.is_keyframe for p in plans] == [i in (0, 4, 6) for i in range(10)]
    assert plans[5].positive == (("b", 1.0),) and plans[5].negative == (("n", 1.0),)
    assert plans[7].negative == (("m", 1.0),)
    assert all(p.sigmas is None and p.steps == 0 for p in plans)


def test_plan_sequence_uses_the_modes():
    slerped = plan_sequence(
        make_params(positive_seq="0: a\n2: b", use_conditioning_slerp=True, sequence_loop_count=3)
    )
    assert slerped[2].positive == (("a", 1.0), ("b", 0.5))
    eased = plan_sequence(
        make_params(positive_seq="0: a\n2: b", keyframe_interpolation="ease", sequence_loop_count=3)
    )
    assert eased[1].positive == (("a", 1.0), ("b", pytest.approx(0.5)))
    assert eased[2].positive == (("b", 1.0),)


def test_plan_sequence_fills_sigmas_once_per_denoise(monkeypatch):
    from seqwidgets import schedules

    calls = []

    class FakeModelSampling:
        @classmethod
        def from_pipeline(cls, obj):
            calls.append(("from_pipeline", obj))
            return cls()

    def fake_loop_sigmas(model_sampling, scheduler, sampler_name, steps, denoise):
        assert isinstance(model_sampling, FakeModelSampling)
        calls.append((scheduler, sampler_name, steps, denoise))
        return torch.linspace(10.0 * denoise, 0.0, steps + 1)

    monkeypatch.setattr(schedules, "ModelSampling", FakeModelSampling, raising=False)
    monkeypatch.setattr(schedules, "loop_sigmas", fake_loop_sigmas, raising=False)
    params = make_params(steps=6, scheduler="karras", sequence_loop_count=5, denoise_seq=0.5)
    plans = plan_sequence(params, pipe="the pipe")
    assert calls == [
        ("from_pipeline", "the pipe"),
        ("karras", "euler", 6, 1.0),
        ("karras", "euler", 6, 0.5),
    ]
    assert plans[0].sigmas[0] == 10.0 and plans[1].sigmas[0] == 5.0
    assert all(p.steps == 6 for p in plans)

    calls.clear()
    model_sampling = FakeModelSampling()
    plan_sequence(params, pipe=model_sampling)
    assert calls[0][0] == "karras"  # a ModelSampling is used as it is


def test_loop_plan_steps_and_equality():
    plan = LoopPlan(0, 1, (("a", 1.0),), (("", 1.0),), 1.0, torch.zeros(0))
    assert plan.steps == 0
    with_sigmas = LoopPlan(0, 1, (("a", 1.0),), (("", 1.0),), 1.0, torch.ones(5))
    assert with_sigmas.steps == 4
    assert plan == with_sigmas  # sigmas are not compared
    hash(plan)
