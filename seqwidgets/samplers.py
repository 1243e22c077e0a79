"""k-diffusion style samplers on ComfyUI's sigmas, reproduced on plain torch.

``sample_<name>(model, x, sigmas, ...)``: small functions in the k-diffusion style sharing one
signature, as ComfyUI runs them (``comfy/k_diffusion/sampling.py``), and :func:`sample`, the
dispatcher by ComfyUI name. Which function a name runs and what noise it draws is written once, in
`seqwidgets.choices.SAMPLER_SPECS`. The sigmas come from `seqwidgets.schedules`.

A *model* for the samplers is any callable ``model(x, sigma_batch, **extra_args) -> denoised``
where ``sigma_batch`` has shape ``[B]`` (k-diffusion's denoiser contract). Where ComfyUI reads
more, so do we: ``model.model_sampling`` (a `seqwidgets.schedules.ModelSampling` or
``FlowModelSampling``) for the flow-model branches, ``sample_lcm`` and ``sample_sa_solver``; and
the CFG++ samplers (``*_cfg_pp``) call ``model.denoise_with_uncond(x, sigma_batch)`` for the
unconditional estimate beside the guided one (a model without it counts as its own uncond).

Every sampler computes what ComfyUI a125cd8 computes, in its order of operations (checked bit
for bit against ``comfy/k_diffusion/sampling.py`` on a stand-in model, eps, SD3 and Flux
sampling), with one change taken from later ComfyUI: the CPU noise of ``default_noise_sampler``
is seeded with ``seed + 1``.

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

import math
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

    One ``torchsde.BrownianTree`` over ``[sigma_min, sigma_max]``, seeded with ``seed``
    (``None``: a seed drawn from torch's global generator), built on the CPU (``cpu=True``, what
    the plain SDE samplers ask for) or on ``x``'s device (``cpu=False``: the ``_gpu`` variants;
    on a CPU run the two are the same tree).
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
        cpu: bool = True,
    ) -> None:
        import torchsde  # lazy: only the SDE samplers need it

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self._sign = 1 if t0 < t1 else -1
        if self._sign < 0:
            t0, t1 = t1, t0
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, ()).item()
        self._device = x.device
        self._cpu = cpu
        w0 = torch.zeros_like(x).detach()
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.cpu(), t1.detach().cpu()
        else:
            t0, t1 = t0.to(x.device), t1.to(x.device)
        self._tree = torchsde.BrownianTree(t0, w0, t1, entropy=int(seed))

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        dtype = lo.dtype
        if self._cpu:
            w = self._tree(lo.detach().cpu().float(), hi.detach().cpu().float())
        else:
            w = self._tree(lo.to(self._device), hi.to(self._device))
        # ComfyUI returns w on the sigmas' device; we put it on x's, which is where it is used.
        w = w.to(device=self._device, dtype=dtype) * (self._sign * sign)
        return w / (t1 - t0).abs().sqrt().to(self._device)


def _sde_noise_sampler(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    seed: int | None,
    noise_sampler: NoiseSampler | None,
    cpu_tree: bool = True,
) -> NoiseSampler:
    """The SDE samplers' default: a Brownian tree over the schedule's positive sigma range."""
    if noise_sampler is not None:
        return noise_sampler
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seed, cpu=cpu_tree)


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
    cpu_tree: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE; ComfyUI's ``sample_dpmpp_2m_sde`` (midpoint), and with
    ``solver_type="heun"`` its ``dpmpp_2m_sde_heun``; ``cpu_tree=False``: the ``_gpu`` variants.

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
    noise_sampler = _sde_noise_sampler(x, sigmas, seed, noise_sampler, cpu_tree)
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
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
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
    cpu_tree: bool = True,
) -> torch.Tensor:
    """DPM-Solver++ (stochastic, 2 stages); ComfyUI's ``sample_dpmpp_sde`` (``cpu_tree=False``:
    ``dpmpp_sde_gpu``).

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
    noise_sampler = _sde_noise_sampler(x, sigmas, seed, noise_sampler, cpu_tree)
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


# --------------------------------------------------------------------------------------------
# 5. The rest of ComfyUI's menu (comfy/k_diffusion/sampling.py at a125cd8)
# --------------------------------------------------------------------------------------------


def _denoise_with_uncond(
    model: Denoiser, x: torch.Tensor, sigma: torch.Tensor, extra_args: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(denoised, uncond_denoised)``: what ComfyUI's CFG++ samplers read through
    ``sampler_post_cfg_function``, from one model call.

    A model with ``denoise_with_uncond`` (`seqwidgets.denoiser.CFGDenoiser`) gives both from the
    same batched network call; any other model has no guidance, so its estimate is both.
    """
    with_uncond = getattr(model, "denoise_with_uncond", None)
    if with_uncond is None:
        denoised = model(x, sigma, **extra_args)
        return denoised, denoised
    return with_uncond(x, sigma, **extra_args)


def _percent_to_sigma(model_sampling: Any, percent: float) -> float:
    """Sigma at a fraction of the way through sampling; ComfyUI's ``percent_to_sigma``
    (``ModelSamplingDiscrete``'s when the model sampling has none of its own)."""
    if hasattr(model_sampling, "percent_to_sigma"):
        return float(model_sampling.percent_to_sigma(percent))
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return model_sampling.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


def _model_sampling(model: Denoiser, sampler: str) -> Any:
    model_sampling = getattr(model, "model_sampling", None)
    if model_sampling is None:
        raise ValueError(f"{sampler} needs model.model_sampling (a ModelSampling)")
    return model_sampling


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(
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
    """Ancestral Euler with CFG++; ComfyUI's ``sample_euler_ancestral_cfg_pp``.

    The step re-noises along the *unconditional* estimate: ``x = alpha_t * denoised +
    sigma_down * (x - alpha_s * uncond) / sigma`` (alpha = 1, or 1 - sigma for flow models),
    then adds ``sigma_up`` of fresh noise. With ``eta=0`` and ``s_noise=0`` it is ComfyUI's
    ``euler_cfg_pp`` and draws no noise.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_euler_ancestral_cfg_pp(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0]),
        ...     eta=0.0, s_noise=0.0).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None and eta > 0 and s_noise > 0:
        noise_sampler = default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    flow = _is_flow(model)
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(model, x, sigmas[i] * s_in, extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * _half_log_snr(sigmas[i], flow).exp()
        alpha_t = sigmas[i + 1] * _half_log_snr(sigmas[i + 1], flow).exp()
        d = to_d(x, sigmas[i], alpha_s * uncond)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        sigma_down = alpha_t * sigma_down
        x = alpha_t * denoised + sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heunpp2(
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
    """Heun++ (three estimates per step); ComfyUI's ``sample_heunpp2``.

    Each step averages the derivatives at ``sigma``, the next and the one after, weighted by
    those sigmas over ``3 * sigmas[0]``; the step before the last is Heun (2 calls), the last is
    Euler (1 call). "Last" means the schedule's last sigma, zero or not.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_heunpp2(model, torch.ones(1, 1), torch.tensor([3.0, 2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    noise = _lazy_noise(x, seed, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:  # Euler
            x = x + d * dt
        elif sigmas[i + 2] == s_end:  # Heun, weighted
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            w1 = 1 - w2
            x = x + (d * w1 + d_2 * w2) * dt
        else:  # Heun++
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            denoised_3 = model(x_3, sigmas[i + 2] * s_in, **extra_args)
            d_3 = to_d(x_3, sigmas[i + 2], denoised_3)
            w = 3 * sigmas[0]
            w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
            w1 = 1 - w2 - w3
            x = x + (w1 * d + w2 * d_2 + w3 * d_3) * dt
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
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
    """Ancestral DPM-Solver++(2S); ComfyUI's ``sample_dpmpp_2s_ancestral`` (``_RF`` for flow).

    A second-order step to ``sigma_down`` through the midpoint in log sigma (in log-SNR for flow
    models), then fresh noise up to the next sigma. The step to 0 is one Euler call.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_2s_ancestral(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    flow = _is_flow(model)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if flow:  # ComfyUI's sample_dpmpp_2s_ancestral_RF
            sigma_down, ratio, sigma_up = _rf_down(sigma, sigma_next, eta)
            last = sigma_next == 0
        else:
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta=eta)
            last = sigma_down == 0
        _report(callback, x, i, sigma, sigma, denoised)
        if last:  # Euler
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        elif flow:
            if sigma == 1.0:
                sigma_s = 0.9999
            else:
                # ComfyUI's lambda = log((1 - sigma) / sigma) and its inverse, written as there.
                t_i, t_down = ((1 - sigma) / sigma).log(), ((1 - sigma_down) / sigma_down).log()
                sigma_s = ((t_i + (t_down - t_i) / 2).exp() + 1) ** -1
            ratio_s = sigma_s / sigma
            u = ratio_s * x + (1 - ratio_s) * denoised
            denoised_2 = model(u, sigma_s * s_in, **extra_args)
            ratio_down = sigma_down / sigma
            x = ratio_down * x + (1 - ratio_down) * denoised_2
        else:
            t, t_next = sigma.log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + h / 2
            x_2 = (s.neg().exp() / t.neg().exp()) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, s.neg().exp() * s_in, **extra_args)
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_2
        if flow:
            if sigma_next > 0 and eta > 0:
                x = ratio * x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
        elif sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(
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
    """Ancestral DPM-Solver++(2S) with CFG++; ComfyUI's ``sample_dpmpp_2s_ancestral_cfg_pp``.

    As :func:`sample_dpmpp_2s_ancestral` on eps models, stepping from ``x + denoised - uncond``
    (ComfyUI has no flow branch here, so neither do we).

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_2s_ancestral_cfg_pp(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]),
        ...     seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(model, x, sigmas[i] * s_in, extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + h / 2
            x_2 = (s.neg().exp() / t.neg().exp()) * (x + (denoised - uncond)) - (
                -h / 2
            ).expm1() * denoised
            denoised_2, uncond = _denoise_with_uncond(model, x_2, s.neg().exp() * s_in, extra_args)
            # ComfyUI's post-CFG hook has replaced its uncond with the second call's by now, and
            # the step reads that one: so do we.
            x = (t_next.neg().exp() / t.neg().exp()) * (x + (denoised - uncond)) - (
                -h
            ).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++; ComfyUI's ``sample_dpmpp_2m_cfg_pp``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_2m_cfg_pp(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(model, x, sigmas[i] * s_in, extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (
                denoised - old_uncond
            )
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    cpu_tree: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE; ComfyUI's ``sample_dpmpp_3m_sde`` (``cpu_tree=False``: ``_gpu``).

    Third order from the third step on (second order on the second), lambda as in
    :func:`sample_dpmpp_2m_sde` for flow models, Brownian-tree noise seeded with ``seed``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_dpmpp_3m_sde(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _sde_noise_sampler(x, sigmas, seed, noise_sampler, cpu_tree)
    s_in = x.new_ones([x.shape[0]])
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = _half_log_snr(sigmas[i], flow), _half_log_snr(sigmas[i + 1], flow)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = (
                sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x
                + alpha_t * (-h_eta).expm1().neg() * denoised
            )
            if h_2 is not None:  # third order
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:  # second order
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_ddpm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """The DDPM ancestral step; ComfyUI's ``sample_ddpm`` (``generic_step_sampler``).

    Works in the variance-preserving scale ``x / sqrt(1 + sigma**2)`` with
    ``alpha_cumprod = 1 / (1 + sigma**2)``, on every family (ComfyUI applies the same formula
    to flow models).

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_ddpm(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        _report(callback, x, i, sigma, sigma, denoised)
        eps = (x - denoised) / sigma
        x = x / torch.sqrt(1.0 + sigma**2.0)
        alpha_cumprod = 1 / ((sigma * sigma) + 1)
        alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            std = ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt()
            mu = mu + std * noise_sampler(sigma, sigma_prev)
            mu = mu * torch.sqrt(1.0 + sigma_prev**2.0)
        x = mu
    return x


def _adams_bashforth(dt: torch.Tensor, d_cur: torch.Tensor, history: list[torch.Tensor]):
    """iPNDM's fixed-step Adams-Bashforth step over ``dt`` from ``d_cur`` and up to three older
    ``d`` (multiplied, then divided, in ComfyUI's order)."""
    if not history:
        return dt * d_cur
    if len(history) == 1:
        return dt * (3 * d_cur - history[-1]) / 2
    if len(history) == 2:
        return dt * (23 * d_cur - 16 * history[-1] + 5 * history[-2]) / 12
    return dt * (55 * d_cur - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


def _variable_adams_bashforth(
    dt: torch.Tensor, d_cur: torch.Tensor, history: list[torch.Tensor], sigmas: torch.Tensor, i: int
) -> torch.Tensor:
    """iPNDM-v's Adams-Bashforth step over ``dt`` with coefficients for uneven sigma steps."""
    return dt * _variable_adams_bashforth_blend(d_cur, history, sigmas, i)


def _variable_adams_bashforth_blend(
    d_cur: torch.Tensor, history: list[torch.Tensor], sigmas: torch.Tensor, i: int
) -> torch.Tensor:
    if not history:
        return d_cur
    h_n = sigmas[i + 1] - sigmas[i]
    h_n_1 = sigmas[i] - sigmas[i - 1]
    coeff1 = (2 + (h_n / h_n_1)) / 2
    coeff2 = -(h_n / h_n_1) / 2
    if len(history) == 1:
        return coeff1 * d_cur + coeff2 * history[-1]
    h_n_2 = sigmas[i - 1] - sigmas[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if len(history) == 2:
        coeff1 = coeff1 + temp1
        coeff2 = coeff2 - (1 + h_n_1 / h_n_2) * temp1
        coeff3 = temp1 * h_n_1 / h_n_2
        return coeff1 * d_cur + coeff2 * history[-1] + coeff3 * history[-2]
    h_n_3 = sigmas[i - 2] - sigmas[i - 3]
    temp2 = (
        (
            (1 - h_n / (3 * (h_n + h_n_1))) / 2
            + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))
        )
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
        / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    )
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    coeff1 = (2 + (h_n / h_n_1)) / 2 + temp1 + temp2
    coeff2 = (
        -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + ratio) * temp2
    )
    coeff3 = temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + ratio * (1 + h_n_2 / h_n_3)) * temp2
    coeff4 = -temp2 * ratio * h_n_1 / h_n_2
    return coeff1 * d_cur + coeff2 * history[-1] + coeff3 * history[-2] + coeff4 * history[-3]


def _ipndm(model, x, sigmas, extra_args, callback, max_order, step) -> torch.Tensor:
    """The loop iPNDM and iPNDM-v share: ``step(dt, d, history, i)`` is the Adams-Bashforth
    step from ``d`` and up to ``max_order - 1`` earlier ones; the step to 0 returns
    ``denoised``."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d_cur = (x - denoised) / sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + step(sigmas[i + 1] - sigmas[i], d_cur, history, i)
        history = [*history, d_cur][-(max_order - 1) :]
    return x


@torch.no_grad()
def sample_ipndm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 4,
) -> torch.Tensor:
    """Improved PNDM (Adams-Bashforth in sigma, order up to 4); ComfyUI's ``sample_ipndm``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_ipndm(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    return _ipndm(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        max_order,
        lambda dt, d, h, i: _adams_bashforth(dt, d, h),
    )


@torch.no_grad()
def sample_ipndm_v(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 4,
) -> torch.Tensor:
    """iPNDM with variable-step coefficients; ComfyUI's ``sample_ipndm_v``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_ipndm_v(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    return _ipndm(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        max_order,
        lambda dt, d, h, i: _variable_adams_bashforth(dt, d, h, sigmas, i),
    )


def deis_coefficients(sigmas: torch.Tensor, max_order: int = 3) -> list[list[torch.Tensor]]:
    """DEIS "tab" coefficients per step; ComfyUI's ``deis.get_deis_coeff_list``.

    The sigmas are mapped to a VP time ``t`` (EDM's ``sigma_min=0.002, sigma_max=80``); step
    ``i`` of order ``k > 1`` integrates the Lagrange basis of the last ``k`` times against the
    VP integrand numerically (10,000 points). First-order steps get ``[]``.

    Example:
        >>> [len(c) for c in deis_coefficients(torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0]))]
        [0, 2, 3, 3]
    """
    n = 10000
    epsilon_s, sigma_min, sigma_max = 1e-3, 0.002, 80

    # float32 throughout, and numpy's log as ComfyUI's deis.edm2t takes it (torch's log differs
    # from numpy's in the last bit here).
    def np_log(value: float) -> torch.Tensor:
        return torch.tensor(np.log((torch.tensor(value) ** 2 + 1).numpy()))

    log_min, log_max = np_log(sigma_min), np_log(sigma_max)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    beta_min = log_max - 0.5 * beta_d
    sig = sigmas.detach().cpu()
    t_steps = ((beta_min**2 + 2 * beta_d * (sig**2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    coefficients: list[list[torch.Tensor]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coefficients.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(t_cur, t_next, n)
        dtau = (t_next - t_cur) / n
        prev_t = t_steps[[i - k for k in range(order)]]
        integrand = _deis_integrand(beta_0, beta_1, taus)
        row = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly = poly * ((taus - prev_t[k]) / (prev_t[j] - prev_t[k]))
            row.append(torch.sum(integrand * poly) * dtau)
        coefficients.append(row)
    return coefficients


def _deis_integrand(beta_0: torch.Tensor, beta_1: torch.Tensor, taus: torch.Tensor):
    """``-0.5 * d log(alpha) / dtau / sqrt(alpha (1 - alpha))`` by autograd, as ComfyUI."""
    with torch.inference_mode(mode=False), torch.enable_grad():
        taus = taus.clone().requires_grad_(True)
        alpha = torch.exp(-0.5 * taus**2 * (beta_1.clone() - beta_0.clone()) - taus * beta_0)
        alpha.log().sum().backward()
        d_log_alpha = taus.grad
    return (-0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))).detach()


@torch.no_grad()
def sample_deis(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 3,
) -> torch.Tensor:
    """DEIS multistep (order up to 3, "tab" coefficients); ComfyUI's ``sample_deis``.

    The step to 0 is first order (Euler). See :func:`deis_coefficients`.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_deis(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    coefficients = deis_coefficients(sigmas, max_order)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d_cur = (x - denoised) / sigmas[i]
        if sigmas[i + 1] <= 0 or not history:
            x = x + (sigmas[i + 1] - sigmas[i]) * d_cur
        else:
            coeff_cur, *coeff_prev = coefficients[i]
            x = x + coeff_cur * d_cur  # summed left to right, as ComfyUI writes it
            for coeff, d_old in zip(coeff_prev, reversed(history), strict=False):
                x = x + coeff * d_old
        history = [*history, d_cur][-(max_order - 1) :]
    return x


@torch.no_grad()
def sample_res_multistep(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    cfg_pp: bool = False,
) -> torch.Tensor:
    """RES second-order multistep; ComfyUI's ``res_multistep`` behind its four names.

    ``eta=0``: ``res_multistep`` (deterministic); ``eta=1``: ``res_multistep_ancestral`` (fresh
    noise from :func:`default_noise_sampler` after each step); ``cfg_pp``: the CFG++ variants.
    The first step and the step to 0 are Euler steps.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_res_multistep(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0]),
        ...     eta=0.0).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None and eta:
        noise_sampler = default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    old_sigma_down, old_denoised = None, None
    for i in range(len(sigmas) - 1):
        denoised, uncond = (
            _denoise_with_uncond(model, x, sigmas[i] * s_in, extra_args)
            if cfg_pp
            else (model(x, sigmas[i] * s_in, **extra_args), None)
        )
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:  # Euler
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:  # second-order multistep, arXiv:2308.02157
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            t_old, t_prev = old_sigma_down.log().neg(), sigmas[i - 1].log().neg()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
                x = h.neg().exp() * x + h * (b1 * uncond + b2 * old_denoised)
            else:
                x = h.neg().exp() * x + h * (b1 * denoised + b2 * old_denoised)
        # With eta = 0 ComfyUI adds noise * 0 here; drawing none gives the same result.
        if sigmas[i + 1] > 0 and eta:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


@torch.no_grad()
def sample_gradient_estimation(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    ge_gamma: float = 2.0,
    cfg_pp: bool = False,
) -> torch.Tensor:
    """Euler plus ``(ge_gamma - 1)`` times the change of ``d`` since the previous step;
    ComfyUI's ``sample_gradient_estimation`` (``cfg_pp``: ``gradient_estimation_cfg_pp``).

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_gradient_estimation(model, torch.ones(1, 1),
        ...     torch.tensor([2.0, 1.0, 0.0])).item()
        0.0
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        if cfg_pp:
            denoised, uncond = _denoise_with_uncond(model, x, sigmas[i] * s_in, extra_args)
            d = to_d(x, sigmas[i], uncond)
        else:
            denoised = model(x, sigmas[i] * s_in, **extra_args)
            d = to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def _er_sde_noise_scaler(x: torch.Tensor) -> torch.Tensor:
    """ER-SDE's default noise scaler ``x * (exp(x**0.3) + 10)``."""
    return x * ((x**0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_noise: float = 1.0,
    max_stage: int = 3,
) -> torch.Tensor:
    """Extended reverse-time SDE solver (VP ER-SDE-Solver-3); ComfyUI's ``sample_er_sde``.

    Up to third order in ``lambda = sigma / alpha`` (alpha = 1 - sigma for flow models), the
    integrals by a 200-point sum, fresh noise from :func:`default_noise_sampler` each step.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_er_sde(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    scaler = _er_sde_noise_scaler
    points = 200.0
    point_indice = torch.arange(0, points, dtype=torch.float32, device=x.device)
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    er_lambdas = _half_log_snr(sigmas, flow).neg().exp()  # sigma / alpha
    old_denoised, old_denoised_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s = sigmas[i] / er_lambda_s
            alpha_t = sigmas[i + 1] / er_lambda_t
            r_alpha = alpha_t / alpha_s
            r = scaler(er_lambda_t) / scaler(er_lambda_s)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised  # stage 1: Euler
            if stage >= 2:
                dt = er_lambda_t - er_lambda_s
                step = -dt / points
                lambda_pos = er_lambda_t + point_indice * step
                scaled_pos = scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * step
                denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * scaler(er_lambda_t)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((lambda_pos - er_lambda_s) / scaled_pos) * step
                    denoised_u = (denoised_d - old_denoised_d) / (
                        (er_lambda_s - er_lambdas[i - 2]) / 2
                    )
                    x = x + alpha_t * ((dt**2) / 2 + s_u * scaler(er_lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                scale = (er_lambda_t**2 - er_lambda_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * scale
        old_denoised = denoised
    return x


def _ei_h_phi_1(h: torch.Tensor) -> torch.Tensor:
    """``h * phi_1(h)`` of exponential integrators."""
    return torch.expm1(h)


def _ei_h_phi_2(h: torch.Tensor) -> torch.Tensor:
    """``h * phi_2(h)`` of exponential integrators."""
    return (torch.expm1(h) - h) / h


def _seeds_noise(noise_prev, noise_sampler, sigma_a, sigma_b, segment_factor):
    """SEEDS' correlated noise: carry the previous stage's noise over ``segment_factor`` and add
    a fresh increment between ``sigma_a`` and ``sigma_b``."""
    fresh = segment_factor.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_a, sigma_b)
    return noise_prev * segment_factor.exp() + fresh


@torch.no_grad()
def sample_seeds_2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
) -> torch.Tensor:
    """SEEDS-2 (stochastic exponential, 2 stages); ComfyUI's ``sample_seeds_2``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_seeds_2(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _half_log_snr(sigmas[i], flow), _half_log_snr(sigmas[i + 1], flow)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = _sigma_of_half_log_snr(lambda_s_1, flow)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = (
            sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x
            - alpha_s_1 * _ei_h_phi_1(-r * h_eta) * denoised
        )
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(
                sigmas[i], sigma_s_1
            )
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)

        denoised_d = torch.lerp(denoised, denoised_2, fac)
        x = (
            sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x
            - alpha_t * _ei_h_phi_1(-h_eta) * denoised_d
        )
        if inject_noise:
            segment = (r - 1) * h * eta
            sde_noise = _seeds_noise(sde_noise, noise_sampler, sigma_s_1, sigmas[i + 1], segment)
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_seeds_3(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r_1: float = 1.0 / 3,
    r_2: float = 2.0 / 3,
) -> torch.Tensor:
    """SEEDS-3 (stochastic exponential, 3 stages); ComfyUI's ``sample_seeds_3``.

    Example:
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> sample_seeds_3(model, torch.ones(1, 1), torch.tensor([2.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _half_log_snr(sigmas[i], flow), _half_log_snr(sigmas[i + 1], flow)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r_1)
        lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1 = _sigma_of_half_log_snr(lambda_s_1, flow)
        sigma_s_2 = _sigma_of_half_log_snr(lambda_s_2, flow)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_s_2 = sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = (
            sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x
            - alpha_s_1 * _ei_h_phi_1(-r_1 * h_eta) * denoised
        )
        if inject_noise:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(
                sigmas[i], sigma_s_1
            )
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)

        a3_2 = r_2 / r_1 * _ei_h_phi_2(-r_2 * h_eta)
        a3_1 = _ei_h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (
            a3_1 * denoised + a3_2 * denoised_2
        )
        if inject_noise:
            segment = (r_1 - r_2) * h * eta
            sde_noise = _seeds_noise(sde_noise, noise_sampler, sigma_s_1, sigma_s_2, segment)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2 * s_in, **extra_args)

        b3 = _ei_h_phi_2(-h_eta) / r_2
        b1 = _ei_h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (
            b1 * denoised + b3 * denoised_3
        )
        if inject_noise:
            segment = (r_2 - 1) * h * eta
            sde_noise = _seeds_noise(sde_noise, noise_sampler, sigma_s_2, sigmas[i + 1], segment)
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def _sa_exponential_coeffs(s: torch.Tensor, t: torch.Tensor, order: int, tau: float):
    """SA-Solver's ``(1 + tau^2)`` times the integrals of ``exp((1 + tau^2) x) x^p`` from ``s``
    to ``t``, ``p < order``, with ``exp((1 + tau^2) t)`` factored out; ComfyUI's
    ``sa_solver.compute_exponential_coeffs``."""
    tau_mul = 1 + tau**2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    product_terms = t**p - s**p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    coeff = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        coeff = coeff - (depth * math.log(tau_mul))
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (coeff.exp() * signs).tril() @ product_terms


def sa_solver_coefficients(
    sigma_next: torch.Tensor,
    lambdas: torch.Tensor,
    lambda_s: torch.Tensor,
    lambda_t: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """SA-Solver's ``b_i`` over the Lagrange basis of ``lambdas`` (eqs. 15 and 18); ComfyUI's
    ``sa_solver.compute_stochastic_adams_b_coeffs``.

    Example:
        >>> b = sa_solver_coefficients(torch.tensor(0.5), torch.tensor([0.0]), torch.tensor(0.0),
        ...     torch.tensor(0.5), 0.0)
        >>> round(b.item(), 6)  # first order: alpha_t * (1 - e^-h)
        0.324361
    """
    order = lambdas.shape[0]
    integrals = _sa_exponential_coeffs(lambda_s, lambda_t, order, tau)
    vandermonde_t = torch.vander(lambdas, order, increasing=True).T
    return sigma_next * lambda_t.exp() * torch.linalg.solve(vandermonde_t, integrals)


def _sa_update(ratio, tau_t, h, x: torch.Tensor, preds: list[torch.Tensor], b) -> torch.Tensor:
    """SA-Solver's predictor / corrector update: the decayed state plus the weighted estimates
    (``ratio`` is sigma_next / sigma; the order of operations is ComfyUI's)."""
    stacked = torch.stack(preds, dim=1)
    return ratio * (-(tau_t**2) * h).exp() * x + torch.tensordot(stacked, b, dims=([1], [0]))


@torch.no_grad()
def sample_sa_solver(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_noise: float = 1.0,
    predictor_order: int = 3,
    corrector_order: int = 4,
    use_pece: bool = False,
) -> torch.Tensor:
    """Stochastic Adams predictor-corrector (SA-Solver); ComfyUI's ``sample_sa_solver``.

    Noise (tau = 1) only between 20% and 80% of the way through sampling (ComfyUI's default
    interval, by ``percent_to_sigma``), an ODE step elsewhere; orders drop near the end of a
    schedule ending at 0. ``use_pece``: ``sa_solver_pece``, which evaluates the corrected state
    again (two model calls a step after the first).

    Example:
        >>> from seqwidgets.schedules import ModelSampling
        >>> model = lambda x, s: torch.zeros_like(x)
        >>> model.model_sampling = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
        >>> sample_sa_solver(model, torch.ones(1, 1), torch.tensor([2.0, 1.0, 0.0]), seed=0)
        tensor([[0.]])
    """
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x, seed) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    model_sampling = _model_sampling(model, "sample_sa_solver")
    flow = _is_flow(model)
    sigmas = _offset_first_sigma(model, sigmas, flow)
    lambdas = _half_log_snr(sigmas, flow)
    start_sigma = _percent_to_sigma(model_sampling, 0.2)
    end_sigma = _percent_to_sigma(model_sampling, 0.8)

    def tau_of(sigma: torch.Tensor) -> float:
        return 1.0 if start_sigma >= sigma.item() >= end_sigma else 0.0

    max_used_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau_t, noise = 0.0, 0.0, 0.0
    preds: list[torch.Tensor] = []
    lower_order_to_end = sigmas[-1].item() == 0  # lower the order near the end, for stability
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * s_in, **extra_args)
        _report(callback, x_pred, i, sigmas[i], sigmas[i], denoised)
        preds = [*preds, denoised][-max_used_order:]
        predictor_used = min(predictor_order, len(preds))
        if i == 0 or (sigmas[i + 1] == 0 and not use_pece):
            corrector_used = 0
        else:
            corrector_used = min(corrector_order, len(preds))
        if lower_order_to_end:
            predictor_used = min(predictor_used, len(sigmas) - 2 - i)
            corrector_used = min(corrector_used, len(sigmas) - 1 - i)

        if corrector_used == 0:
            x = x_pred
        else:
            b = sa_solver_coefficients(
                sigmas[i],
                lambdas[i - corrector_used + 1 : i + 1],
                lambdas[i - 1],
                lambdas[i],
                tau_t,
            )
            x = _sa_update(sigmas[i] / sigmas[i - 1], tau_t, h, x, preds[-corrector_used:], b)
            if tau_t > 0 and s_noise > 0:
                x = x + noise  # the previous predictor step's noise
            if use_pece:
                denoised = model(x, sigmas[i] * s_in, **extra_args)
                preds[-1] = denoised

        if sigmas[i + 1] == 0:
            x = denoised
        else:
            tau_t = tau_of(sigmas[i + 1])
            b = sa_solver_coefficients(
                sigmas[i + 1],
                lambdas[i - predictor_used + 1 : i + 1],
                lambdas[i],
                lambdas[i + 1],
                tau_t,
            )
            h = lambdas[i + 1] - lambdas[i]
            x_pred = _sa_update(sigmas[i + 1] / sigmas[i], tau_t, h, x, preds[-predictor_used:], b)
            if tau_t > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                noise = noise * (-2 * tau_t**2 * h).expm1().neg().sqrt() * s_noise
                x_pred = x_pred + noise
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
        **SAMPLER_SPECS_BY_NAME[sampler_name].kwargs,
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
    spec = SAMPLER_SPECS_BY_NAME[check_sampler(sampler_name)]
    if spec.noise == "brownian":
        sources = [
            _sde_noise_sampler(item, sigmas, seed, None, spec.cpu_tree)
            for item, seed in zip(items, seeds, strict=True)
        ]
    else:
        sources = [
            default_noise_sampler(item, seed) for item, seed in zip(items, seeds, strict=True)
        ]

    def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.cat([source(sigma, sigma_next) for source in sources])

    return noise
