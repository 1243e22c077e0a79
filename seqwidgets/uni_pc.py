"""UniPC, the multistep predictor-corrector ComfyUI ships as ``uni_pc`` and ``uni_pc_bh2``.

UniPC (Zhao et al. 2023, https://arxiv.org/abs/2302.04867) is not in k-diffusion: ComfyUI runs
its own copy of the authors' code (``comfy/extra_samplers/uni_pc.py``). This module is that
computation as KSampler configures it, written out for the one configuration it uses:

* **VP coordinates of the k-diffusion sigma** (ComfyUI's ``SigmaConvert``): a sigma ``s`` is the
  time; ``alpha = 1 / sqrt(1 + s**2)``, ``sigma_vp = s * alpha`` and the half log-SNR
  ``lambda = log(alpha / sigma_vp) = -log s``. The solver's state is ``x * alpha``.
* **Data prediction** (``predict_x0=True``) from a noise-prediction wrapper: the denoiser's
  output becomes ``eps = (x - denoised) / s`` and back ``x0 = (x_vp - sigma_vp eps) / alpha``.
* **Multistep**, ``order = min(3, steps - 1)`` with ``lower_order_final``: the first steps warm
  up at orders 1, 2; the last two steps drop to orders 2 and 1; every step but the last runs the
  corrector, whose model call is the next step's model value, so a run makes ``steps`` model
  calls. ``variant`` ``"bh1"`` takes ``B(h) = h``, ``"bh2"`` ``B(h) = e^h - 1``.
* **The final sigma 0** (where lambda is infinite) becomes ``0.001``; the result is divided by
  ``alpha(0.001)`` and then, as ComfyUI's ``KSAMPLER`` does with the schedule's last sigma
  (which ComfyUI's UniPC overwrote in place), inverse-noise-scaled at ``0.001``: ``x / 0.999`` on
  flow models, nothing on eps / v models. So UniPC ends a hair above the data, as in ComfyUI.
* ComfyUI does not branch on the model sampling here: eps, v and flow (``CONST``) models all run
  this code. It stays a consistent solver on flow, whose ODE in ``x`` is also
  ``dx/dsigma = (x - denoised) / sigma``.

The float32 arithmetic follows ComfyUI's operation by operation: at ``sigma = 0.001`` the VP
quantities lose most of their digits in float32 (``1 - exp(2 log alpha)`` is about ``1e-6``), and
matching the node means losing the same ones.

Example:
    >>> model = lambda x, sigma: torch.zeros_like(x)  # the data is the single point 0
    >>> x = torch.ones(1, 1, 1, 1)
    >>> out = sample_uni_pc(model, x, torch.tensor([2.0, 1.0, 0.5, 0.0]))
    >>> 0.0 < out.item() < 1e-3  # ends at sigma 0.001, not 0: x0 + (0.001 / 2) * (x - x0)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .schedules import _per_item

__all__ = ["UNI_PC_FINAL_SIGMA", "sample_uni_pc", "sample_uni_pc_bh2"]

#: What ComfyUI's UniPC puts in place of a final sigma 0 (lambda must stay finite).
UNI_PC_FINAL_SIGMA = 0.001

Callback = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------------
# 1. VP coordinates of a k-diffusion sigma (ComfyUI's SigmaConvert, same float32 operations)
# --------------------------------------------------------------------------------------------


def _log_alpha(sigma: torch.Tensor) -> torch.Tensor:
    """``log alpha = 0.5 log(1 / (1 + sigma**2))``; ``marginal_log_mean_coeff``."""
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(_log_alpha(sigma))


def _sigma_vp(sigma: torch.Tensor) -> torch.Tensor:
    """``sqrt(1 - alpha**2)``; ``marginal_std``."""
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """The half log-SNR ``log alpha - log sigma_vp``; ``marginal_lambda``."""
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


# --------------------------------------------------------------------------------------------
# 2. One UniPC step (ComfyUI's multistep_uni_pc_bh_update with predict_x0=True)
# --------------------------------------------------------------------------------------------


def _uni_pc_step(
    data_prediction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    model_prevs: list[torch.Tensor],
    t_prevs: list[torch.Tensor],
    t: torch.Tensor,
    order: int,
    variant: str,
    use_corrector: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move ``x`` (VP state at ``t_prevs[-1]``) to ``t`` with the last ``order`` model values.

    Returns ``(x_t, model_t)``: ``model_t`` is the data prediction at the *predicted* ``x_t``
    (the corrector's model call, reused as the next step's model value), ``None`` without the
    corrector.
    """
    t_prev_0, model_prev_0 = t_prevs[-1], model_prevs[-1]
    lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
    sigma_prev_0, sigma_t = _sigma_vp(t_prev_0), _sigma_vp(t)
    alpha_t = torch.exp(_log_alpha(t))
    h = lambda_t - lambda_prev_0

    # Earlier model values as scaled differences D1 at relative log-SNR positions rk; the last
    # node (rk = 1) is the point we step to.
    rks, d1s = [], []
    for i in range(1, order):
        rk = ((_lambda(t_prevs[-(i + 1)]) - lambda_prev_0) / h)[0]
        rks.append(rk)
        d1s.append((model_prevs[-(i + 1)] - model_prev_0) / rk)
    rks.append(1.0)
    rks = torch.tensor(rks, device=x.device, dtype=x.dtype)  # ComfyUI: default float32, = x

    # The phi-function coefficients b_i = h phi_{i+1}(h) i! / B(h) and the Vandermonde-like
    # system R rho = b whose solution weights the differences.
    hh = -h[0]  # data prediction integrates in -lambda
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    factorial_i = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    r_matrix = torch.stack(rows)
    b = torch.tensor(b, device=x.device, dtype=x.dtype)

    # The first-order (DPM-Solver++ 1 / DDIM) step both the predictor and the corrector refine.
    x_t_ = (
        _per_item(sigma_t / sigma_prev_0, x.ndim) * x
        - _per_item(alpha_t * h_phi_1, x.ndim) * model_prev_0
    )
    scale = _per_item(alpha_t * b_h, x.ndim)

    # Predictor (UniP): order 2 uses rho = 1/2, higher orders solve the reduced system.
    x_t = x_t_
    if d1s:
        d1s = torch.stack(d1s, dim=1)  # [B, K, ...]
        rhos_p = (
            torch.tensor([0.5], device=b.device, dtype=b.dtype)
            if order == 2
            else torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
        )
        x_t = x_t_ - scale * torch.tensordot(d1s, rhos_p, dims=([1], [0]))
    if not use_corrector:
        return x_t, None

    # Corrector (UniC): one model call at the predicted point, then redo the step with it.
    rhos_c = (
        torch.tensor([0.5], device=b.device, dtype=b.dtype)
        if order == 1
        else torch.linalg.solve(r_matrix, b)
    )
    model_t = data_prediction(x_t, t)
    corr_res = torch.tensordot(d1s, rhos_c[:-1], dims=([1], [0])) if order > 1 else 0
    d1_t = model_t - model_prev_0
    x_t = x_t_ - scale * (corr_res + rhos_c[-1] * d1_t)
    return x_t, model_t


# --------------------------------------------------------------------------------------------
# 3. The sampler (ComfyUI's sample_unipc, UniPC.sample with method="multistep")
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_uni_pc(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: Any = None,
    seed: int | None = None,
    variant: str = "bh1",
) -> torch.Tensor:
    """UniPC-bh1 over ``sigmas``; ComfyUI's ``uni_pc`` (``sample_unipc``).

    Args:
        model: a k-diffusion denoiser ``model(x, sigma_batch, **extra_args) -> denoised``; if it
            has ``model_sampling`` with ``inverse_noise_scaling`` (flow models), that is applied
            at the last sigma as ComfyUI's ``KSAMPLER`` does.
        x: the noised latent at ``sigmas[0]`` (k-diffusion scaling).
        sigmas: the loop's sigmas, ending in 0 as KSampler gives them (``uni_pc`` is in
            ComfyUI's discard-penultimate set: see `seqwidgets.schedules.loop_sigmas`).
        extra_args: passed to every model call.
        callback: called once per step ``i`` with k-diffusion's keys ``x``, ``i``, ``sigma``,
            ``sigma_hat`` and ``denoised``: the model's data prediction at ``sigmas[i]`` and the
            state there (ComfyUI reports the same ``denoised``; its ``x`` is the VP state after
            the step).
        noise_sampler, seed: accepted for the samplers' shared signature; UniPC draws no noise.
        variant: ``"bh1"`` (ComfyUI's ``uni_pc``) or ``"bh2"`` (``uni_pc_bh2``).

    ``steps = len(sigmas) - 1`` model calls; with a single step ComfyUI's loop never moves ``x``
    (order ``min(3, steps - 1)`` is 0), and neither do we: the result is ``x`` rescaled by
    ``alpha(sigmas[0]) / alpha(0.001)``.

    Example:
        >>> model = lambda x, sigma: torch.full_like(x, 0.5)
        >>> out = sample_uni_pc(model, torch.ones(1, 1, 2, 2), torch.tensor([1.0, 0.5, 0.0]))
        >>> round(out.mean().item(), 3)  # 0.5 + (0.001 / 1) * (1 - 0.5)
        0.5
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    timesteps = sigmas.clone()  # ComfyUI edits the caller's sigmas in place; we keep them
    final_zero = bool(timesteps[-1] == 0)
    if final_zero:
        timesteps[-1] = UNI_PC_FINAL_SIGMA
    steps = len(timesteps) - 1
    order = min(3, steps - 1)
    batch = x.shape[0]

    def data_prediction(x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # The noise-prediction wrapper ComfyUI puts around the denoiser (predict_eps_sigma),
        # then UniPC's own conversion to a data prediction, in ComfyUI's order of operations.
        sigma = _per_item(t, x_vp.ndim)
        x_k = x_vp * ((sigma**2 + 1.0) ** 0.5)
        eps = (x_k - model(x_k, t, **extra_args)) / sigma
        return (x_vp - _per_item(_sigma_vp(t), x_vp.ndim) * eps) / _per_item(_alpha(t), x_vp.ndim)

    def report(i: int, x_vp: torch.Tensor, denoised: torch.Tensor) -> None:
        if callback is not None:
            sigma = sigmas[i]
            x_k = x_vp * ((sigma**2 + 1.0) ** 0.5)
            callback({"x": x_k, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})

    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)  # k-diffusion x -> VP state
    t = timesteps[0].expand(batch)
    model_prevs, t_prevs = [data_prediction(x, t)], [t]
    report(0, x, model_prevs[-1])
    for i in range(1, steps):
        # Warm up at orders 1, 2, ...; then full order, lowered again near the end.
        step_order = i if i < order else min(order, steps + 1 - i)
        t = timesteps[i].expand(batch)
        x, model_x = _uni_pc_step(
            data_prediction, x, model_prevs, t_prevs, t, step_order, variant, use_corrector=True
        )
        model_prevs, t_prevs = [*model_prevs, model_x][-order:], [*t_prevs, t][-order:]
        report(i, x, model_x)
    if steps > 1:
        # The last step: first order, no corrector, no model call at the final sigma.
        t = timesteps[-1].expand(batch)
        x, _ = _uni_pc_step(
            data_prediction, x, model_prevs, t_prevs, t, 1, variant, use_corrector=False
        )
    x = x / _alpha(timesteps[-1])
    inverse = getattr(getattr(model, "model_sampling", None), "inverse_noise_scaling", None)
    if final_zero and inverse is not None:
        x = inverse(timesteps[-1], x)
    return x


def sample_uni_pc_bh2(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: Any = None,
    seed: int | None = None,
) -> torch.Tensor:
    """UniPC with ``B(h) = e^h - 1``; ComfyUI's ``uni_pc_bh2``. See :func:`sample_uni_pc`.

    Example:
        >>> model = lambda x, sigma: 0.9 * x
        >>> sigmas = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0])
        >>> bh1 = sample_uni_pc(model, torch.ones(1, 1, 1, 1), sigmas)
        >>> bh2 = sample_uni_pc_bh2(model, torch.ones(1, 1, 1, 1), sigmas)
        >>> bool(bh1 != bh2)
        True
    """
    return sample_uni_pc(model, x, sigmas, extra_args, callback, noise_sampler, seed, "bh2")
