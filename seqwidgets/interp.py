"""Interpolation of conditionings and latents: the KSampler Sequence node's math.

All functions take ``(t, a, b)`` in the node's order and return ``a`` at ``t = 0`` and ``b`` at
``t = 1``. The node calls them as ``mix(strength, previous, new)``:

* conditioning slerp: ``slerp(cond_slerp_strength, used_by_previous_loop, scheduled_keyframe)``;
* latent interpolation: ``mix(latent_interp_strength, previous_result, sample)``, so strength 0
  keeps the previous loop's result (the new sample is discarded), strength 1 keeps the new sample
  unchanged (no interpolation), and the default 0.5 is halfway.

Where the node would return NaN (its latent slerp of identical inputs, or a dot product that
rounds past 1), these never do; the results are otherwise the node's, to round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "LATENT_INTERPOLATIONS",
    "blend_latents",
    "cosine_interp_latents",
    "slerp",
    "slerp_latents",
]


def slerp(t: float, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation along the last dimension (each token embedding, or each pooled
    vector, on its own), as the node's ``slerp`` for conditionings.

    The angle comes from the normalised dot product, clamped to ``[-1, 1]``. Where the two vectors
    are parallel or opposite (``|sin(angle)| <= eps``) the slerp formula divides by zero; there we
    return the linear interpolation ``(1 - t) * a + t * b``, which is the limit of slerp for
    parallel vectors (so ``slerp(t, a, a) == a``) and finite for opposite ones. (The node returns
    ``a`` for ``t < 0.5`` and ``b`` otherwise there; the two agree for identical vectors.) A zero
    vector has no direction: it is treated as orthogonal to anything, as in the node.

    Args:
        t (`float`): 0 gives ``a``, 1 gives ``b``.
        a, b (`torch.Tensor`): same shape, e.g. ``[batch, tokens, dim]`` or ``[batch, dim]``.
        eps (`float`, defaults to 1e-6): the node's epsilon, for normalising and for the guard.

    Returns:
        `torch.Tensor`: shape, dtype and device of ``a``.
    """
    return _slerp_last_dim(float(t), a, b, eps)


def slerp_latents(t: float, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation of latents, each batch item flattened to one vector, as the node's
    ``slerp_latents``.

    The node's version returns NaN for identical inputs (``0 / sin(0)``) and when rounding puts
    the dot product above 1; this one clamps and falls back to a linear interpolation where the
    items are parallel or opposite, like `slerp`.

    Args:
        t (`float`): 0 gives ``a``, 1 gives ``b``.
        a, b (`torch.Tensor`): same shape ``[batch, ...]``.
        eps (`float`, defaults to 1e-6): threshold of the parallel guard.

    Returns:
        `torch.Tensor`: shape, dtype and device of ``a``.
    """
    shape = a.shape
    flat_a = a.reshape(shape[0], -1)
    flat_b = b.reshape(shape[0], -1)
    return _slerp_last_dim(float(t), flat_a, flat_b, eps).reshape(shape)


def blend_latents(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear interpolation ``(1 - t) * a + t * b``, as the node's ``blend_latents`` ("Blend").

    As in the node, ``t`` becomes a tensor of ``a``'s dtype before the arithmetic.
    """
    alpha = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    return (1 - alpha) * a + alpha * b


def cosine_interp_latents(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear interpolation with an eased factor ``(1 - cos(pi * t)) / 2``, as the node's
    ``cosine_interp_latents`` ("Cosine Interp"). It is slower than `blend_latents` near both ends
    and equal to it at ``t = 0.5``."""
    val = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    eased = (1 - torch.cos(val * math.pi)) / 2
    return (1 - eased) * a + eased * b


#: ``latent_interpolation_mode`` (`seqwidgets.choices.LATENT_INTERPOLATION_MODES`) -> function ``(t, previous_result, sample) -> latent``.
LATENT_INTERPOLATIONS: dict[str, Callable[[float, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Blend": blend_latents,
    "Slerp": slerp_latents,
    "Cosine Interp": cosine_interp_latents,
}


def _slerp_last_dim(t: float, a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = a.dtype
    # acos/sin are poor (or missing on CPU) in half precision: compute in float32 at least.
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    a = a.to(compute)
    b = b.to(compute)
    dot = (F.normalize(a, dim=-1, eps=eps) * F.normalize(b, dim=-1, eps=eps)).sum(dim=-1)
    omega = torch.acos(dot.clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    parallel = sin_omega.abs() <= eps
    safe_sin = torch.where(parallel, torch.ones_like(sin_omega), sin_omega)
    weight_a = torch.where(parallel, 1.0 - t, torch.sin((1.0 - t) * omega) / safe_sin)
    weight_b = torch.where(parallel, t, torch.sin(t * omega) / safe_sin)
    return (weight_a.unsqueeze(-1) * a + weight_b.unsqueeze(-1) * b).to(dtype)
