"""DPM-Solver on its own time grid: ComfyUI's ``dpm_fast`` and ``dpm_adaptive``.

DPM-Solver (Lu et al. 2022, https://arxiv.org/abs/2206.00927) integrates the diffusion ODE in
``t = -log sigma`` with exponential-integrator steps of order 1, 2 and 3 over the noise
prediction ``eps = (x - denoised) / sigma``. ComfyUI runs k-diffusion's ``DPMSolver`` through a
wrapper in ``comfy/samplers.py`` (``ksampler("dpm_fast")`` / ``ksampler("dpm_adaptive")``) that
keeps only two numbers of the scheduler's sigmas:

* ``sigma_max = sigmas[0]`` and ``sigma_min`` = the last sigma, or the one before it when the
  last is 0 (the ODE in ``t`` cannot reach sigma 0). So both samplers **end at sigma_min**,
  leaving that much noise in the result, exactly as in ComfyUI; the scheduler shapes nothing
  else.
* ``dpm_fast`` spends exactly ``steps = len(sigmas) - 1`` model calls on ``floor(steps/3) + 1``
  steps evenly spaced in ``t`` (orders 3, ..., 3, then 2 and 1 or the remainder).
* ``dpm_adaptive`` (DPM-Solver-23) compares a 2nd- and a 3rd-order step, accepts or rejects it
  with a PID step-size controller, and so chooses its own number of model calls (3 per attempt).

ComfyUI's KSampler passes neither ``eta`` nor ``s_noise``, so these are the deterministic
solvers (eta 0; the noise ComfyUI draws is multiplied by 0). On flow models ComfyUI runs the
same code, which is still a consistent solver: the flow ODE in ``x`` is also
``dx/dsigma = (x - denoised) / sigma``.

Example:
    >>> model = lambda x, sigma: torch.zeros_like(x)  # the data is the single point 0
    >>> sigmas = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.0])
    >>> sample_dpm_fast(model, torch.ones(1, 1, 1, 1), sigmas).item()  # stops at sigma 0.5
    0.125
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .schedules import _per_item

__all__ = ["PIDStepSizeController", "sample_dpm_adaptive", "sample_dpm_fast"]

Callback = Callable[[dict[str, Any]], None]


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma.log()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _sigma_range(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma_min, sigma_max)`` as ComfyUI's wrapper reads them off KSampler's sigmas."""
    sigma_min = sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ValueError(
            f"DPM-Solver needs positive sigmas besides a final 0, got {sigmas.tolist()}"
        )
    return sigma_min, sigmas[0]


class _Eps:
    """The noise prediction at ``(x, t)``; counts model calls. ``t`` is 0-dim or one per item."""

    def __init__(self, model: Callable[..., torch.Tensor], extra_args: dict[str, Any]) -> None:
        self.model, self.extra_args, self.calls = model, extra_args, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = _sigma(t) * x.new_ones([x.shape[0]])
        self.calls += 1
        return (x - self.model(x, sigma, **self.extra_args)) / _per_item(_sigma(t), x.ndim)


# The three steps of k-diffusion's DPMSolver from t to t_next, given eps at (x, t). Times are
# 0-dim (dpm_fast) or one per batch item (dpm_adaptive); ``c`` views a per-item coefficient
# against x. The products keep k-diffusion's order of operations, so float32 rounds the same.


def _dpm_solver_1_step(x, t, t_next, eps):
    c = lambda v: _per_item(v, x.ndim)  # noqa: E731
    h = t_next - t
    return x - c(_sigma(t_next) * h.expm1()) * eps


def _dpm_solver_2_step(eps_fn, x, t, t_next, eps, r1=1 / 2):
    """Second order; returns ``(x_next, eps at the midpoint)``."""
    c = lambda v: _per_item(v, x.ndim)  # noqa: E731
    h = t_next - t
    s1 = t + r1 * h
    u1 = x - c(_sigma(s1) * (r1 * h).expm1()) * eps
    eps_r1 = eps_fn(u1, s1)
    x_2 = (
        x
        - c(_sigma(t_next) * h.expm1()) * eps
        - c(_sigma(t_next) / (2 * r1) * h.expm1()) * (eps_r1 - eps)
    )
    return x_2, eps_r1


def _dpm_solver_3_step(eps_fn, x, t, t_next, eps, eps_r1=None, r1=1 / 3, r2=2 / 3):
    """Third order; reuses ``eps_r1`` at ``t + r1 h`` when the 2nd-order step computed it."""
    c = lambda v: _per_item(v, x.ndim)  # noqa: E731
    h = t_next - t
    s1, s2 = t + r1 * h, t + r2 * h
    if eps_r1 is None:
        u1 = x - c(_sigma(s1) * (r1 * h).expm1()) * eps
        eps_r1 = eps_fn(u1, s1)
    u2 = (
        x
        - c(_sigma(s2) * (r2 * h).expm1()) * eps
        - c(_sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1)) * (eps_r1 - eps)
    )
    eps_r2 = eps_fn(u2, s2)
    return (
        x
        - c(_sigma(t_next) * h.expm1()) * eps
        - c(_sigma(t_next) / r2 * (h.expm1() / h - 1)) * (eps_r2 - eps)
    )


@torch.no_grad()
def sample_dpm_fast(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: Any = None,
    seed: int | None = None,
) -> torch.Tensor:
    """DPM-Solver-Fast; ComfyUI's ``dpm_fast`` (k-diffusion's ``sample_dpm_fast``).

    ``steps = len(sigmas) - 1`` model calls on ``floor(steps / 3) + 1`` steps evenly spaced in
    ``t = -log sigma`` from ``sigmas[0]`` to the last nonzero sigma, where it stops (see the
    module docstring). ``callback`` is called once per solver step with k-diffusion's keys;
    its ``sigma`` is the solver's own (a float), ``i`` counts the solver's steps.
    ``noise_sampler`` and ``seed`` are accepted for the shared signature and not used.

    Example:
        >>> calls = []
        >>> model = lambda x, sigma: calls.append(1) or 0.5 * x
        >>> out = sample_dpm_fast(model, torch.ones(1, 1, 1, 1), torch.linspace(5, 0, 8))
        >>> len(calls)
        7
    """
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _sigma_range(sigmas)
    eps_fn = _Eps(model, {} if extra_args is None else extra_args)
    nfe = len(sigmas) - 1
    t_start, t_end = _t(sigma_max.clone()), _t(sigma_min.clone())
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    # Third-order steps, with the remainder of the call budget in the last step(s).
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    ts_cpu = ts.cpu()  # the callback's sigmas, read without a device sync per step
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        eps = eps_fn(x, t)
        if callback is not None:
            sigma = float(_sigma(ts_cpu[i]))
            denoised = x - _sigma(t) * eps
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if order == 1:
            x = _dpm_solver_1_step(x, t, t_next, eps)
        elif order == 2:
            x, _ = _dpm_solver_2_step(eps_fn, x, t, t_next, eps)
        else:
            x = _dpm_solver_3_step(eps_fn, x, t, t_next, eps)
    return x


class PIDStepSizeController:
    """k-diffusion's PID controller for an adaptive ODE step size (Python floats, as there).

    Example:
        >>> pid = PIDStepSizeController(0.05, 0.0, 1.0, 0.0, order=3)
        >>> pid.propose_step(0.5), round(pid.h, 4)  # error below 1: accept and grow the step
        (True, 0.0627)
    """

    def __init__(
        self,
        h: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        order: float = 1,
        accept_safety: float = 0.81,
        eps: float = 1e-8,
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: float) -> bool:
        """Scale ``h`` by the error (relative to the tolerance); return whether to accept."""
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)  # a soft limiter
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


def _propose_steps(
    pids: list[PIDStepSizeController], scaled: torch.Tensor, running: list[bool]
) -> list[bool]:
    """Each running item's controller judges its own scaled error; whether each step is kept."""
    accepted = [False] * len(pids)
    for i, pid in enumerate(pids):
        if not running[i]:
            continue
        error = torch.linalg.norm(scaled[i]) / scaled[i].numel() ** 0.5
        if not math.isfinite(float(error)):
            raise FloatingPointError(
                "dpm_adaptive: the step error is not finite (NaN or Inf in the model output)"
            )
        accepted[i] = pid.propose_step(error)
    return accepted


@torch.no_grad()
def sample_dpm_adaptive(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: Any = None,
    seed: int | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
) -> torch.Tensor:
    """DPM-Solver-12 / 23 with adaptive steps; ComfyUI's ``dpm_adaptive``.

    Steps from ``sigmas[0]`` to the last nonzero sigma in ``t = -log sigma``; each attempt
    makes ``order`` model calls and is accepted or rejected by a
    :class:`PIDStepSizeController` on ``||x_low - x_high|| / tolerance`` (ComfyUI's defaults).

    Each batch item keeps its own step size and error control, so an item of a batch of
    branches computes what it would alone (ComfyUI measures one error over its whole batch;
    the node runs one latent at a time, which is the same). ``callback`` is called before every
    attempt with k-diffusion's keys, ``sigma`` the solver's own (a float; the largest of the
    batch). ``noise_sampler`` and ``seed`` are accepted for the shared signature and not used.

    Raises:
        ValueError: ``order`` not 2 or 3, or increasing sigmas.
        FloatingPointError: the error estimate is not finite (the step size would never settle;
            ComfyUI loops forever there).

    Example:
        >>> model = lambda x, sigma: torch.zeros_like(x)
        >>> out = sample_dpm_adaptive(model, torch.ones(1, 1, 1, 1), torch.tensor([4.0, 0.5, 0.0]))
        >>> round(out.item(), 4)  # x0 + (0.5 / 4) * (x - x0) with x0 = 0
        0.125
    """
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order!r}")
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _sigma_range(sigmas)
    if sigma_min > sigma_max:
        raise ValueError("dpm_adaptive steps from high to low sigma; got increasing sigmas")
    eps_fn = _Eps(model, {} if extra_args is None else extra_args)
    batch = x.shape[0]
    t_start, t_end = _t(sigma_max.clone()), _t(sigma_min.clone())
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s = t_start.expand(batch).clone()  # each item's current time
    x_prev = x
    pids = [
        PIDStepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, order, accept_safety)
        for _ in range(batch)
    ]
    attempt = 0
    while True:
        running = [bool(s_i < t_end - 1e-5) for s_i in s]
        if not any(running):
            return x
        h = torch.tensor([pid.h for pid in pids], dtype=s.dtype, device=s.device)
        # A finished item takes an unclamped dummy step (a zero step would divide 0 by 0);
        # its result is thrown away below.
        done = torch.tensor([not r for r in running], device=s.device)
        t = torch.where(done, s + h, torch.minimum(t_end, s + h))

        eps = eps_fn(x, s)
        if callback is not None:
            sigma = max(float(_sigma(s_i)) for s_i, r in zip(s, running, strict=True) if r)
            denoised = x - _per_item(_sigma(s), x.ndim) * eps
            callback(
                {"x": x, "i": attempt, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised}
            )
        if order == 2:
            x_low = _dpm_solver_1_step(x, s, t, eps)
            x_high, _ = _dpm_solver_2_step(eps_fn, x, s, t, eps)
        else:
            x_low, eps_r1 = _dpm_solver_2_step(eps_fn, x, s, t, eps, r1=1 / 3)
            x_high = _dpm_solver_3_step(eps_fn, x, s, t, eps, eps_r1)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        accepted = _propose_steps(pids, (x_low - x_high) / delta, running)
        if all(accepted):  # the common case, without a select over the whole latent
            x_prev, x, s = x_low, x_high, t
        elif any(accepted):
            keep = _per_item(torch.tensor(accepted, device=x.device), x.ndim)
            x_prev = torch.where(keep, x_low, x_prev)
            x = torch.where(keep, x_high, x)
            s = torch.where(keep.flatten(), t, s)
        attempt += 1
