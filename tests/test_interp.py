import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seqwidgets.interp import (
    LATENT_INTERPOLATIONS,
    blend_latents,
    cosine_interp_latents,
    slerp,
    slerp_latents,
)
from seqwidgets.params import PARAM_SPECS

ALL = [slerp, slerp_latents, blend_latents, cosine_interp_latents]


# The node's two slerps, transcribed (WAS_Extras nodes/sampling/ksampler_sequence.py): the oracle
# for inputs where the node is well defined.
def node_slerp(strength, tensor_from, tensor_to, epsilon=1e-6):
    low_norm = F.normalize(tensor_from, p=2, dim=-1, eps=epsilon)
    high_norm = F.normalize(tensor_to, p=2, dim=-1, eps=epsilon)
    dot_product = torch.clamp((low_norm * high_norm).sum(dim=-1), -1.0, 1.0)
    omega = torch.acos(dot_product)
    so = torch.sin(omega)
    zero_so_mask = torch.isclose(so, torch.tensor([0.0]), atol=epsilon)
    so = torch.where(zero_so_mask, torch.tensor([1.0]), so)
    a = torch.sin((1.0 - strength) * omega) / so
    b = torch.sin(strength * omega) / so
    res = a.unsqueeze(-1) * tensor_from + b.unsqueeze(-1) * tensor_to
    return torch.where(
        zero_so_mask.unsqueeze(-1), tensor_from if strength < 0.5 else tensor_to, res
    )


def node_slerp_latents(val, low, high):
    dims = low.shape
    low = low.reshape(dims[0], -1)
    high = high.reshape(dims[0], -1)
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    omega = torch.acos((low_norm * high_norm).sum(1))
    so = torch.sin(omega)
    res = (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (
        torch.sin(val * omega) / so
    ).unsqueeze(1) * high
    return res.reshape(dims)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 6, 5, generator=g), torch.randn(2, 4, 6, 5, generator=g)


@pytest.mark.parametrize("fn", ALL)
def test_endpoints_are_exact(fn, pair):
    a, b = pair
    assert torch.equal(fn(0.0, a, b), a)
    assert torch.equal(fn(1.0, a, b), b)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.77])
def test_matches_the_node_where_the_node_is_defined(t, pair):
    a, b = pair
    torch.testing.assert_close(slerp(t, a, b), node_slerp(t, a, b))
    torch.testing.assert_close(slerp_latents(t, a, b), node_slerp_latents(t, a, b))
    torch.testing.assert_close(blend_latents(t, a, b), (1 - t) * a + t * b)
    eased = (1 - math.cos(math.pi * t)) / 2
    torch.testing.assert_close(cosine_interp_latents(t, a, b), (1 - eased) * a + eased * b)


def test_direction_strength_zero_keeps_the_previous_result(pair):
    previous, sample = pair
    for fn in LATENT_INTERPOLATIONS.values():
        torch.testing.assert_close(fn(0.001, previous, sample), previous, atol=0.02, rtol=0)
        torch.testing.assert_close(fn(0.999, previous, sample), sample, atol=0.02, rtol=0)


def test_slerp_keeps_the_norm_of_equal_norm_inputs_where_lerp_shrinks_it():
    g = torch.Generator().manual_seed(1)
    a = F.normalize(torch.randn(3, 7, 64, generator=g), dim=-1) * 3.0
    b = F.normalize(torch.randn(3, 7, 64, generator=g), dim=-1) * 3.0
    for t in (0.25, 0.5, 0.9):
        norms = slerp(t, a, b).norm(dim=-1)
        torch.testing.assert_close(norms, torch.full_like(norms, 3.0))
    assert (blend_latents(0.5, a, b).norm(dim=-1) < 2.9).all()
    flat = slerp_latents(0.5, a, b).reshape(3, -1).norm(dim=1)
    torch.testing.assert_close(flat, a.reshape(3, -1).norm(dim=1))


def test_slerp_works_per_vector_and_slerp_latents_per_batch_item(pair):
    a, b = pair
    row = slerp(0.3, a[1, 2, 3], b[1, 2, 3])
    torch.testing.assert_close(slerp(0.3, a, b)[1, 2, 3], row)
    item = slerp_latents(0.3, a[1:2].reshape(1, -1), b[1:2].reshape(1, -1))
    torch.testing.assert_close(slerp_latents(0.3, a, b)[1].reshape(1, -1), item)
    assert not torch.allclose(slerp(0.3, a, b), slerp_latents(0.3, a, b))


def test_identical_inputs_give_the_input_where_the_node_gives_nan(pair):
    a, _ = pair
    assert torch.isnan(node_slerp_latents(0.5, a, a.clone())).all()
    torch.testing.assert_close(slerp_latents(0.5, a, a.clone()), a)
    torch.testing.assert_close(slerp(0.5, a, a.clone()), a)


def test_parallel_inputs_interpolate_linearly():
    a = torch.tensor([[1.0, 2.0, 2.0]])
    torch.testing.assert_close(slerp(0.25, a, 2 * a), 1.25 * a)
    torch.testing.assert_close(slerp_latents(0.25, a, -a), 0.5 * a)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("fn", ALL)
def test_dtype_shape_and_device_are_preserved(fn, dtype, pair):
    a, b = (x.to(dtype) for x in pair)
    out = fn(0.4, a, b)
    assert out.dtype == dtype and out.shape == a.shape and out.device == a.device
    reference = fn(0.4, pair[0].double(), pair[1].double())
    torch.testing.assert_close(out.double(), reference, atol=0.05, rtol=0.05)


def test_mapping_covers_the_node_modes():
    assert tuple(LATENT_INTERPOLATIONS) == PARAM_SPECS["latent_interpolation_mode"].choices
    assert LATENT_INTERPOLATIONS["Slerp"] is slerp_latents


vectors = st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=6, max_size=6).map(
    lambda v: torch.tensor(v).reshape(2, 3)
)


@settings(max_examples=150, deadline=None)
@given(
    a=vectors,
    other=vectors,
    relation=st.sampled_from(["random", "identical", "opposite", "scaled", "zero", "both zero"]),
    t=st.floats(0.0, 1.0),
    fn=st.sampled_from(ALL),
)
def test_never_nan(a, other, relation, t, fn):
    b = {
        "random": other,
        "identical": a.clone(),
        "opposite": -a,
        "scaled": 3.5 * a,
        "zero": torch.zeros_like(a),
        "both zero": torch.zeros_like(a),
    }[relation]
    if relation == "both zero":
        a = torch.zeros_like(a)
    out = fn(t, a, b)
    assert torch.isfinite(out).all()
    if fn in (blend_latents, cosine_interp_latents) or relation != "random":
        # A lerp (and a slerp of parallel, opposite or zero inputs, which falls back to a lerp)
        # stays within the inputs' range. A true slerp of nearly opposite vectors of unequal
        # norms legitimately leaves it (the weights grow as 1 / sin(angle)), so no bound there.
        bound = max(a.abs().max().item(), b.abs().max().item()) + 1e-3
        assert out.abs().max().item() <= bound
