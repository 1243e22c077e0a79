"""k-diffusion style samplers on ComfyUI's sigmas, reproduced on plain torch.

``sample_<name>(model, x, sigmas, ...)``: small functions in the k-diffusion style sharing one
signature, as ComfyUI runs them (``comfy/k_diffusion/sampling.py``), and :func:`sample`, the
dispatcher by ComfyUI name. Which function a name runs and what noise it draws is written once, in
`seqwidgets.choices.SAMPLER_SPECS`. The sigmas come from `seqwidgets.schedules`.

A *model* for the samplers is any callable ``model(x, sigma_batch, **extra_args) -> denoised``
where ``sigma_batch`` has shape ``[B]`` (k-diffusion's denoiser contract). ``sample_lcm`` also reads
``model.model_sampling`` (a `seqwidgets.schedules.ModelSampling`).

Example:
    >>> from seqwidgets.schedules import ModelSampling, loop_sigmas
    >>> ms = ModelSampling.from_config({"num_train_timesteps": 1000, "beta_start": 0.00085,
    ...     "beta_end": 0.012, "beta_schedule": "scaled_linear"})
    >>> sigmas = loop_sigmas(ms, "karras", "euler", steps=20, denoise=1.0)
    >>> noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> x = ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), ms.max_denoise(sigmas))
    >>> out = sample("euler", lambda x, sigma: torch.zeros_like(x), x, sigmas, seed=0)
    >>> out.abs().max().item() < 1e-6
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from .choices import SAMPLER_SPECS, SAMPLER_SPECS_BY_NAME, check_sampler
from .dpm_solver import sample_dpm_adaptive, sample_dpm_fast  # noqa: F401 (SAMPLER_FUNCTIONS)
from .schedules import _per_item
from .uni_pc import sample_uni_pc, sample_uni_pc_bh2  # noqa: F401 (SAMPLER_FUNCTIONS)

# torchsde rounds the tree's end to its tolerance, so a query at exactly sigma_max lands a hair
# past it; torchsde clamps and warns on every call. The values are ComfyUI's (same torchsde);
# only the repeated warning is silenced, narrowly.
warnings.filterwarnings("ignore", message=r"Should have t[ab][<>]=t[01] but got", module="torchsde")

Callback = Callable[[dict[str, Any]], None]
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Denoiser(Protocol):
    """What the samplers call: ``model(x, sigma_batch, **extra_args) -> denoised``."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------
# 3. Noise sources for stochastic samplers
# --------------------------------------------------------------------------------------------


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """Fresh ``randn`` of ``x``'s shape per call; ComfyUI's ``default_noise_sampler``.

    A ``torch.Generator`` on ``x.device`` seeded with ``seed``; on CPU ComfyUI seeds it with
    ``seed + 1`` (ComfyUI PR #11528) so this noise differs from the CPU initial noise drawn with
    ``seed``. We wrap that modulo 2**64 so the node's largest seed works (ComfyUI would raise).
    ``seed=None`` draws from torch's global generator.

    Example:
        >>> ns = default_noise_sampler(torch.zeros(2), seed=0)
        >>> ns(torch.tensor(1.0), torch.tensor(0.5)).shape
        torch.Size([2])
    """
    generator = None
    if seed is not None:
        if x.device.type == "cpu":
            seed = (int(seed) + 1) % 2**64
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(seed))

    def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(
            x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator
        )

    return noise


class BrownianTreeNoiseSampler:
    """Brownian-motion increments between two sigmas; ComfyUI's ``BrownianTreeNoiseSampler``.

    One ``torchsde.BrownianTree`` over ``[sigma_min, sigma_max]`` built on the CPU (ComfyUI's
    ``cpu=True``), seeded with ``seed`` (``None``: a seed drawn from torch's global generator).
    A call returns ``W(sigma_next) - W(sigma)`` normalised to unit variance, so two calls over
    the same interval agree: the noise depends on the seed, not on the step count.

    Example:
        >>> ns = BrownianTreeNoiseSampler(torch.zeros(3), torch.tensor(0.1), torch.tensor(10.0), 0)
        >>> ns(torch.tensor(10.0), torch.tensor(5.0)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: torch.Tensor,
        sigma_max: torch.Tensor,
        seed: int | None = None,
    ) -> None:
        import torchsde  # lazy: only the SDE samplers need it

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self._sign = 1 if t0 < t1 else -1
        if self._sign < 0:
            t0, t1 = t1, t0
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, ()).item()
        self._device = x.device
        w0 = torch.zeros_like(x).detach().cpu()
        self._tree = torchsde.BrownianTree(
            t0.detach().cpu(), w0, t1.detach().cpu(), entropy=int(seed)
        )

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        dtype = lo.dtype
        w = self._tree(lo.detach().cpu().float(), hi.detach().cpu().float())
        # ComfyUI returns w on the sigmas' device; we put it on x's, which is where it is used.
        w = w.to(device=self._device, dtype=dtype) * (self._sign * sign)
        return w / (t1 - t0).abs().sqrt().to(self._device)


def _sde_noise_sampler(
    x: torch.Tensor, sigmas: torch.Tensor, seed: int | None, noise_sampler: NoiseSampler | None
) -> NoiseSampler:
    """The SDE samplers' default: a Brownian tree over the schedule's positive sigma range."""
    if noise_sampler is not None:
        return noise_sampler
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seed)


# --------------------------------------------------------------------------------------------
# 4. Samplers (k-diffusion style: model(x, sigma * s_in) -> denoised)
# --------------------------------------------------------------------------------------------


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative ``(x - denoised) / sigma``; k-diffusion's ``to_d``.

    Example:
        >>> to_d(torch.ones(1), torch.tensor(2.0), torch.zeros(1)).item()
        0.5
    """
    return (x - denoised) / _per_item(sigma, x.ndim)


def get_ancestral_step(
    sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0
) -> tuple[Any, Any]:
    """``(sigma_down, sigma_up)`` of an ancestral step; k-diffusion's ``get_ancestral_step``.

    Example:
        >>> down, up = get_ancestral_step(torch.tensor(2.0), torch.tensor(0.0))
        >>> float(down), float(up)
        (0.0, 0.0)
    """
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _churn(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    noise: Callable[[], NoiseSampler],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras et al.'s optional noise increase before a step (``s_churn``, default off).

    Returns ``(x, sigma_hat)``. ComfyUI draws this noise from the global RNG; we draw it from the
    sampler's seeded noise sampler so a run is reproducible (irrelevant at the default 0).
    """
    if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax:
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1)
    else:
        gamma = 0.0
    sigma_hat = sigmas[i] * (gamma + 1) if s_churn > 0 else sigmas[i]
    if gamma > 0:
        eps = noise()(sigmas[i], sigma_hat) * s_noise
        x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def _lazy_noise(
    x: torch.Tensor, seed: int | None, noise_sampler: NoiseSampler | None
) -> Callable[[], NoiseSampler]:
    """Build the default noise sampler only if churn asks for it (keeps generators untouched)."""
    cache: list[NoiseSampler] = [] if noise_sampler is None else [noise_sampler]

    def get() -> NoiseSampler:
        if not cache:
            cache.append(default_noise_sampler(x, seed))
        return cache[0]

    return get


def _is_flow(model: Denoiser) -> bool:
    """Whether the model uses flow (``CONST``) sampling; ComfyUI branches on the same test."""
    return bool(getattr(getattr(model, "model_sampling", None), "is_flow", False))


def _half_log_snr(sigma: torch.Tensor, flow: bool) -> torch.Tensor:
    """``log(alpha / sigma)``: ``-log sigma`` (alpha = 1), or ``log((1 - sigma) / sigma)`` for
    flow models; ComfyUI's ``sigma_to_half_log_snr``."""
    return sigma.logit().neg() if flow else sigma.log().neg()


def _sigma_of_half_log_snr(lam: torch.Tensor, flow: bool) -> torch.Tensor:
    """Inverse of :func:`_half_log_snr`; ComfyUI's ``half_log_snr_to_sigma``."""
    return lam.neg().sigmoid() if flow else lam.neg().exp()


def _offset_first_sigma(model: Denoiser, sigmas: torch.Tensor, flow: bool) -> torch.Tensor:
    """A flow schedule starting at sigma >= 1 (log-SNR -inf) starts a hair below instead:
    ComfyUI's ``offset_first_sigma_for_snr`` (``percent_to_sigma(1e-4)``)."""
    if flow and len(sigmas) > 1 and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model.model_sampling.percent_to_sigma(1e-4)
    return sigmas


def _report(
    callback: Callback | None,
    x: torch.Tensor,
    i: int,
    sigma: torch.Tensor,
    sigma_hat: torch.Tensor,
    denoised: torch.Tensor,
) -> None:
    """Call the step callback with k-diffusion's keys (once per step, before the update)."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler steps (Karras et al. 2022, Algorithm 2); k-diffusion/ComfyUI ``sample_euler``.

    One model call per step: ``x += (x - denoised) / sigma * (sigma_next - sigma)``. ComfyUI's
    ``ddim`` sampler is this function.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)  # data is the single point 0
        >>> sample_euler(model, torch.ones(1, 2), torch.tensor([2.0, 1.0, 0.0])).tolist()
        [[0.0, 0.0]]
    """
    extra_args = {} if extra_args is None else extra_args
    noise = _lazy_noise(x, seed, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def _rf_down(sigma, sigma_next, eta):
    """``(sigma_down, alpha ratio, renoise coefficient)`` of ComfyUI's rectified-flow ancestral
    step (``sample_euler_ancestral_RF``, ``sample_dpm_2_ancestral_RF``)."""
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def _rf_ancestral_step(x, denoised, sigma, sigma_next, eta, s_noise, noise_sampler):
    """One step of ComfyUI's ``sample_euler_ancestral_RF``."""
    if sigma_next == 0:
        return denoised
    sigma_down, ratio, renoise = _rf_down(sigma, sigma_next, eta)
    down_ratio = sigma_down / sigma
    x = down_ratio * x + (1 - down_ratio) * denoised
    if eta > 0:
        x = ratio * x + noise_sampler(sigma, sigma_next) * s_noise * renoise
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Ancestral Euler; ComfyUI's ``sample_euler_ancestral`` (``_RF`` for flow models).

    Steps down to ``sigma_down`` deterministically, then adds ``sigma_up`` of fresh noise from
    :func:`default_noise_sampler` (seeded with ``seed``). A step to 0 returns ``denoised``. For
    flow models the step and the re-noising follow ``sample_euler_ancestral_RF``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_euler_ancestral(model, torch.ones(1, 2), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0., 0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    flow = _is_flow(model)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if flow:
            _report(callback, x, i, sigmas[i], sigmas[i], denoised)
            x = _rf_ancestral_step(
                x, denoised, sigmas[i], sigmas[i + 1], eta, s_noise, noise_sampler
            )
            continue
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun steps (Karras et al. 2022, Algorithm 2); ComfyUI's ``sample_heun``.

    Two model calls per step, except the last step to 0, which is an Euler step.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_heun(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    noise = _lazy_noise(x, seed, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-2 style midpoint steps in log sigma; ComfyUI's ``sample_dpm_2``.

    Two model calls per step (the second at the geometric midpoint), except the last step to 0.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpm_2(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    noise = _lazy_noise(x, seed, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Ancestral DPM-Solver-2; ComfyUI's ``sample_dpm_2_ancestral`` (``_RF`` for flow models).

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpm_2_ancestral(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    flow = _is_flow(model)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if flow:  # ComfyUI's sample_dpm_2_ancestral_RF
            sigma_down, ratio, sigma_up = _rf_down(sigmas[i], sigmas[i + 1], eta)
        else:
            sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
            ratio = 1.0
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _lms_coeff(order: int, t: np.ndarray, i: int, j: int) -> float:
    """k-diffusion's ``linear_multistep_coeff``: integral of the j-th Lagrange basis polynomial."""
    from scipy import integrate  # lazy: scipy comes with torchsde

    def basis(tau: float) -> float:
        prod = 1.0
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep (order 4) in sigma; ComfyUI's ``sample_lms``.

    The coefficients integrate the Lagrange basis over the float32 sigmas with
    ``scipy.integrate.quad`` like ComfyUI. A step to 0 returns ``denoised``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_lms(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds = [*ds, to_d(x, sigmas[i], denoised)][-order:]
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [_lms_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M); ComfyUI's ``sample_dpmpp_2m``.

    Second-order multistep in ``t = -log sigma``, using the previous step's ``denoised``; the
    first step and the step to 0 are first order.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_2m(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE; ComfyUI's ``sample_dpmpp_2m_sde`` (midpoint).

    For flow models lambda is ``log((1 - sigma) / sigma)`` and a first sigma of 1 starts a hair
    below (ComfyUI's ``offset_first_sigma_for_snr``).

    Noise comes from a :class:`BrownianTreeNoiseSampler` seeded with ``seed`` (ComfyUI's
    ``cpu=True`` tree). A step to 0 returns ``denoised``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_2m_sde(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    if len(sigmas) <= 1:
        return x
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _sde_noise_sampler(x, sigmas, seed, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            # lambda = log(alpha / sigma): -log sigma for eps / v models (alpha = 1)
            lambda_s, lambda_t = _half_log_snr(sigmas[i], flow), _half_log_snr(sigmas[i + 1], flow)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = (
                sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x
                + alpha_t * (-h_eta).expm1().neg() * denoised
            )
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    coeff = (-h_eta).expm1().neg() / (-h_eta) + 1
                    x = x + alpha_t * coeff * (1 / r) * (denoised - old_denoised)
                else:
                    coeff = 0.5 * alpha_t * (-h_eta).expm1().neg()
                    x = x + coeff * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * scale
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 1 / 2,
) -> torch.Tensor:
    """DPM-Solver++ (stochastic, 2 stages); ComfyUI's ``sample_dpmpp_sde``.

    Flow models: lambda as in :func:`sample_dpmpp_2m_sde`, sigma from lambda by a sigmoid.

    Two model calls per step (the second at ``lambda_s + r * h``), except the step to 0, which
    returns ``denoised``. Noise from a :class:`BrownianTreeNoiseSampler` seeded with ``seed``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_sde(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _sde_noise_sampler(x, sigmas, seed, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    fac = 1 / (2 * r)
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        # Half-log-SNR lambda and alpha = sigma * exp(lambda) (1 for eps / v models up to
        # round-off, 1 - sigma for flow), written as ComfyUI writes them so the float32
        # round-off is the same.
        lambda_s, lambda_t = _half_log_snr(sigmas[i], flow), _half_log_snr(sigmas[i + 1], flow)
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        sigma_s_1 = _sigma_of_half_log_snr(lambda_s_1, flow)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        # Stage 1: ancestral step to the intermediate noise level.
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)

        # Stage 2: ancestral step to sigma_next with the blended denoised estimate.
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_lcm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Latent-consistency sampling; ComfyUI's ``sample_lcm``.

    Each step jumps to ``denoised`` and, unless the next sigma is 0, re-noises it to the next
    sigma with ``model.model_sampling.noise_scaling`` (fresh noise from
    :func:`default_noise_sampler`, seeded with ``seed``).

    Example:
        >>> from seqwidgets.schedules import ModelSampling
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> model.model_sampling = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
        >>> sample_lcm(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    model_sampling = getattr(model, "model_sampling", None)
    if model_sampling is None:
        raise ValueError("sample_lcm needs model.model_sampling (a ModelSampling)")
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            x = model_sampling.noise_scaling(sigmas[i + 1], noise, x)
    return x


#: ComfyUI sampler name -> function, from `seqwidgets.choices.SAMPLER_SPECS`.
SAMPLER_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    spec.name: globals()[spec.function] for spec in SAMPLER_SPECS
}


def sample(
    sampler_name: str,
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    seed: int | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Run the named sampler over ``sigmas``; the k-diffusion call inside ComfyUI's ``KSAMPLER``.

    ``x`` is the already-noised latent (see :meth:`ModelSampling.noise_scaling`); ``seed`` seeds
    the ancestral / SDE noise (ComfyUI passes the KSampler's noise seed), unless a
    ``noise_sampler`` is given (see :func:`batch_noise_sampler`). With fewer than two
    sigmas there is no step, and ``x`` is returned unchanged.

    Raises:
        ValueError: an unknown sampler name (listing the supported ones).

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample("euler", model, torch.ones(1, 1), torch.tensor([1.0, 0.0])).item()
        0.0
    """
    fn = SAMPLER_FUNCTIONS[check_sampler(sampler_name)]
    if len(sigmas) <= 1:
        return x
    return fn(
        model,
        x,
        sigmas,
        extra_args=extra_args,
        callback=callback,
        seed=seed,
        noise_sampler=noise_sampler,
    )


def batch_noise_sampler(
    sampler_name: str, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]
) -> NoiseSampler:
    """One seeded noise source per batch item, concatenated.

    A batch of latents sampled together then draws, item by item, exactly the noise that
    separate runs with those seeds would draw, so batching branches changes no result beyond
    float round-off.

    Example:
        >>> x = torch.zeros(2, 1)
        >>> ns = batch_noise_sampler("euler_ancestral", x, torch.tensor([1.0, 0.0]), [7, 8])
        >>> one = default_noise_sampler(x[:1], 8)(torch.tensor(1.0), torch.tensor(0.0))
        >>> bool(torch.equal(ns(torch.tensor(1.0), torch.tensor(0.0))[1:], one))
        True
    """
    if len(seeds) != x.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {x.shape[0]}")
    items = [x[i : i + 1] for i in range(x.shape[0])]
    if SAMPLER_SPECS_BY_NAME[check_sampler(sampler_name)].noise == "brownian":
        sources = [
            _sde_noise_sampler(item, sigmas, seed, None)
            for item, seed in zip(items, seeds, strict=True)
        ]
    else:
        sources = [
            default_noise_sampler(item, seed) for item, seed in zip(items, seeds, strict=True)
        ]

    def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.cat([source(sigma, sigma_next) for source in sources])

    return noise
