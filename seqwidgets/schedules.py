"""ComfyUI's model sampling and sigma schedules, reproduced on plain torch.

Pure functions of the model's configuration: nothing here calls a model. Together with
`seqwidgets.samplers` this reproduces, value for value, what ComfyUI's ``KSampler`` computes
(``comfy/model_sampling.py``, ``comfy/samplers.py``), so that a sequence rendered here matches the
KSampler Sequence node run inside ComfyUI to fp32 round-off.

* :class:`ModelSampling`: the discrete noise schedule of an SD-style model (ComfyUI's
  ``ModelSamplingDiscrete`` with ``EPS`` or ``V_PREDICTION``): sigma <-> training timestep, the
  UNet input scaling and the denoised estimate.
* :func:`calculate_sigmas` (one named scheduler, ``steps`` steps) and :func:`loop_sigmas`
  (ComfyUI's ``KSampler.set_steps``: denoise and the DPM2 quirk).

Example:
    >>> ms = ModelSampling.from_config({"num_train_timesteps": 1000, "beta_start": 0.00085,
    ...     "beta_end": 0.012, "beta_schedule": "scaled_linear"})
    >>> sigmas = loop_sigmas(ms, "karras", "euler", steps=20, denoise=1.0)
    >>> len(sigmas), float(sigmas[-1])
    (21, 0.0)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .choices import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, check_sampler, check_scheduler

__all__ = [
    "AnyModelSampling",
    "FlowModelSampling",
    "ModelSampling",
    "calculate_sigmas",
    "loop_sigmas",
]

_BETA_SCHEDULES = ("scaled_linear", "linear")
_PREDICTION_TYPES = ("epsilon", "v_prediction")


# --------------------------------------------------------------------------------------------
# 1. The model's discrete noise schedule
# --------------------------------------------------------------------------------------------


class _SigmaTable:
    """What every model sampling shares: a float32 table ``sigmas`` of increasing noise levels."""

    sigmas: torch.Tensor
    #: ComfyUI's ``CONST`` (flow) parameterisation; the samplers branch on it where ComfyUI does.
    is_flow: bool = False

    @property
    def sigma_min(self) -> torch.Tensor:
        """Smallest table sigma (0-d float32 tensor), ``sigmas[0]``."""
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        """Largest table sigma (0-d float32 tensor), ``sigmas[-1]``."""
        return self.sigmas[-1]

    @property
    def num_timesteps(self) -> int:
        """Entries in the sigma table (1,000 for SD and SD3, 10,000 for Flux dev)."""
        return len(self.sigmas)

    def max_denoise(self, sigmas: torch.Tensor) -> bool:
        """Whether a schedule starts at (or above) sigma_max; ComfyUI's ``Sampler.max_denoise``.

        Raises:
            ValueError: for an empty schedule (nothing is sampled; add no noise).

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
            >>> ms.max_denoise(torch.stack([ms.sigma_max, torch.tensor(0.0)]))
            True
        """
        if len(sigmas) == 0:
            raise ValueError("max_denoise needs a non-empty sigma schedule")
        max_sigma, sigma = float(self.sigma_max), float(sigmas[0])
        return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma

    def to(self, device: torch.device | str) -> _SigmaTable:
        """A shallow copy whose tables live on ``device`` (``self`` when they already do)."""
        device = torch.device(device)
        if self.sigmas.device == device:
            return self
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device))
        return moved


class ModelSampling(_SigmaTable):
    """Discrete sigma schedule of an SD-style model; ComfyUI's ``ModelSamplingDiscrete``.

    Combines ComfyUI's ``ModelSamplingDiscrete`` with its ``EPS`` or ``V_PREDICTION`` mixin
    (``comfy/model_sampling.py``, ``sigma_data = 1``). ``alphas_cumprod`` is computed in float64
    from the betas, then ``sigmas`` and ``log_sigmas`` are stored as float32, exactly as
    ComfyUI's ``set_sigmas`` does (the log is taken in float64 before the cast).

    Args:
        betas: the training betas, shape ``[num_train_timesteps]`` (cast to float64).
        prediction_type: ``"epsilon"`` or ``"v_prediction"``.

    Example:
        >>> ms = ModelSampling.from_config({"num_train_timesteps": 1000, "beta_start": 0.00085,
        ...     "beta_end": 0.012, "beta_schedule": "scaled_linear"})
        >>> round(float(ms.sigma_max), 4), int(ms.timestep(ms.sigma_max))
        (14.6146, 999)
    """

    sigma_data: float = 1.0

    def __init__(self, betas: torch.Tensor, prediction_type: str = "epsilon") -> None:
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type {prediction_type!r} is not supported; "
                f"supported: {', '.join(_PREDICTION_TYPES)}"
            )
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must hold at least 2 values, each in (0, 1)")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.prediction_type = prediction_type
        # float32 storage, log taken in float64 first: ComfyUI's set_sigmas.
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSampling:
        """Build from a diffusers scheduler config; ComfyUI's ``make_beta_schedule``.

        diffusers' ``"scaled_linear"`` is ComfyUI's (and LDM's) ``"linear"``:
        ``linspace(sqrt(beta_start), sqrt(beta_end), n, float64) ** 2``; diffusers' ``"linear"`` is
        ComfyUI's ``"sqrt_linear"``: ``linspace(beta_start, beta_end, n, float64)``. A non-empty
        ``trained_betas`` wins over the schedule, as in both libraries.

        Args:
            config: mapping with ``num_train_timesteps`` (default 1000), ``beta_start``,
                ``beta_end``, ``beta_schedule`` (``"scaled_linear"`` or ``"linear"``), optional
                ``trained_betas``, optional ``prediction_type`` (default ``"epsilon"``).

        Raises:
            ValueError: an unsupported schedule, prediction type, or zero-terminal-SNR rescaling.

        Example:
            >>> ms = ModelSampling.from_config({"beta_start": 0.00085, "beta_end": 0.012,
            ...     "beta_schedule": "scaled_linear", "prediction_type": "v_prediction"})
            >>> ms.prediction_type
            'v_prediction'
        """
        if config.get("rescale_betas_zero_snr", False):
            # ComfyUI's zsnr path changes sigma_max to a huge value; not reproduced here.
            raise ValueError("rescale_betas_zero_snr=True is not supported")
        prediction_type = config.get("prediction_type", "epsilon") or "epsilon"
        trained = config.get("trained_betas")
        if trained is not None and len(trained) > 0:
            return cls(torch.tensor(list(trained), dtype=torch.float64), prediction_type)
        schedule = config.get("beta_schedule", "linear")
        n = int(config.get("num_train_timesteps", 1000))
        start = float(config.get("beta_start", 0.0001))
        end = float(config.get("beta_end", 0.02))
        if schedule == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
        elif schedule == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float64)
        else:
            raise ValueError(
                f"beta_schedule {schedule!r} is not supported; "
                f"supported: {', '.join(_BETA_SCHEDULES)}"
            )
        return cls(betas, prediction_type)

    @classmethod
    def from_pipeline(cls, obj: Any) -> ModelSampling:
        """Return the ModelSampling of a diffusers pipeline, a diffusers scheduler, or itself.

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
            >>> ModelSampling.from_pipeline(ms) is ms
            True
        """
        if isinstance(obj, ModelSampling):
            return obj
        scheduler = getattr(obj, "scheduler", None)
        if scheduler is not None and isinstance(getattr(scheduler, "config", None), Mapping):
            return cls.from_config(scheduler.config)
        if isinstance(getattr(obj, "config", None), Mapping):
            return cls.from_config(obj.config)
        raise TypeError(
            "expected a diffusers pipeline, a diffusers scheduler or a ModelSampling, "
            f"got {type(obj).__name__}"
        )

    # -- schedule lookups -----------------------------------------------------------------

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Nearest integer training step by ``|log sigma - log_sigmas|``, as a float tensor.

        ComfyUI's ``ModelSamplingDiscrete.timestep`` followed by the ``.float()`` of
        ``BaseModel._apply_model``: this value is what the UNet receives.

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear",
            ...     "beta_start": 0.00085, "beta_end": 0.012})
            >>> ms.timestep(ms.sigma_min).item()
            0.0
        """
        sigma = _float_tensor(sigma)
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).float().to(sigma.device)

    def sigma(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) training step, interpolating **log** sigma linearly.

        ComfyUI's ``ModelSamplingDiscrete.sigma`` (``t`` clamped to ``[0, n - 1]``).

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
            >>> bool(ms.sigma(torch.tensor(999.0)) == ms.log_sigmas[999].exp())
            True
        """
        timestep = torch.as_tensor(timestep)
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), 0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    # -- denoiser arithmetic --------------------------------------------------------------

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """UNet input ``x / sqrt(sigma^2 + 1)``; ComfyUI's ``EPS.calculate_input``.

        ``sigma`` has shape ``[B]`` (one per batch item) or is 0-d.

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
            >>> ms.calculate_input(torch.tensor([0.0]), torch.ones(1, 4, 2, 2)).mean().item()
            1.0
        """
        sigma = _per_item(sigma, x.ndim)
        return x / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(
        self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor
    ) -> torch.Tensor:
        """Denoised estimate from the UNet output; ComfyUI's ``EPS`` / ``V_PREDICTION``.

        epsilon: ``x - eps * sigma``; v: ``x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)``.
        ``model_input`` is the *unscaled* ``x`` (not ``calculate_input(x)``), as in ComfyUI.

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
            >>> x, eps = torch.ones(1, 1), torch.ones(1, 1)
            >>> ms.calculate_denoised(torch.tensor([1.0]), eps, x).item()
            0.0
        """
        sigma = _per_item(sigma, model_output.ndim)
        if self.prediction_type == "v_prediction":
            sd2 = self.sigma_data**2
            return (
                model_input * sd2 / (sigma**2 + sd2)
                - model_output * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5
            )
        return model_input - model_output * sigma

    def noise_scaling(
        self,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        latent: torch.Tensor,
        max_denoise: bool = False,
    ) -> torch.Tensor:
        """Noised start latent; ComfyUI's ``EPS.noise_scaling``.

        ``latent + noise * sqrt(1 + sigma^2)`` when ``max_denoise`` (the schedule starts at
        sigma_max, see :meth:`max_denoise`), else ``latent + noise * sigma``.

        Example:
            >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear"})
            >>> ms.noise_scaling(torch.tensor(2.0), torch.ones(1), torch.zeros(1)).item()
            2.0
        """
        sigma = torch.as_tensor(sigma)
        if sigma.ndim > 0:
            sigma = _per_item(sigma, noise.ndim)
        scaled = noise * torch.sqrt(1.0 + sigma**2.0) if max_denoise else noise * sigma
        return scaled + latent

    def __repr__(self) -> str:
        return (
            f"ModelSampling(prediction_type={self.prediction_type!r}, "
            f"num_timesteps={self.num_timesteps}, sigma_min={float(self.sigma_min):.6g}, "
            f"sigma_max={float(self.sigma_max):.6g})"
        )


class FlowModelSampling(_SigmaTable):
    """Flow-matching model sampling (SD3, Flux); ComfyUI's flow tables with ``CONST``.

    The model predicts a velocity ``v``; ``x_sigma = sigma * noise + (1 - sigma) * x0`` and
    ``denoised = x - sigma * v``; the model input is ``x`` itself (no scaling). Two tables, as in
    ``comfy/model_sampling.py``:

    * ``kind="discrete"``: ``ModelSamplingDiscreteFlow``, 1,000 entries,
      ``sigma(t) = shift * (t / m) / (1 + (shift - 1) * (t / m))`` for ``t = m/1000 .. m``,
      ``timestep(sigma) = sigma * m`` (``m`` = ``multiplier``). SD3 / SD3.5: shift 3, m 1000;
      Flux schnell: shift 1, m 1.
    * ``kind="flux"``: ``ModelSamplingFlux``, 10,000 entries,
      ``sigma(t) = e^shift / (e^shift + (1 / t - 1))``, ``timestep(sigma) = sigma``. Flux dev:
      shift 1.15.

    The shift is fixed, as in ComfyUI (not diffusers' resolution-dependent dynamic shifting).
    Tables are computed in float32 in ComfyUI's order of operations.

    Example:
        >>> ms = FlowModelSampling("discrete", shift=3.0, multiplier=1000)
        >>> float(ms.sigma_max), round(float(ms.sigma_min), 6), float(ms.timestep(ms.sigma_max))
        (1.0, 0.002994, 1000.0)
        >>> round(float(FlowModelSampling("flux", shift=1.15).sigma_min), 7)
        0.0003158
    """

    is_flow = True
    prediction_type = "flow"
    _KINDS = ("discrete", "flux")

    def __init__(
        self, kind: str = "discrete", shift: float = 1.0, multiplier: float = 1000
    ) -> None:
        if kind not in self._KINDS:
            raise ValueError(f"kind must be one of {', '.join(self._KINDS)}, got {kind!r}")
        if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
            raise ValueError(f"shift must be a positive number, got {shift!r}")
        if not (isinstance(multiplier, (int, float)) and multiplier > 0):
            raise ValueError(f"multiplier must be a positive number, got {multiplier!r}")
        self.kind, self.shift = kind, float(shift)
        self.multiplier = float(multiplier) if kind == "discrete" else 1.0
        if kind == "discrete":
            # ModelSamplingDiscreteFlow.set_parameters: sigma((arange(1, 1001) / 1000) * m).
            self.sigmas = self.sigma((torch.arange(1, 1001, 1) / 1000) * multiplier)
        else:
            # ModelSamplingFlux.set_parameters: sigma(arange(1, 10001) / 10000).
            self.sigmas = self.sigma(torch.arange(1, 10001, 1) / 10000)

    def _shifted(self, t):
        """ComfyUI's ``time_snr_shift`` (discrete) or ``flux_time_shift(shift, 1, t)`` (flux)."""
        if self.kind == "flux":
            return math.exp(self.shift) / (math.exp(self.shift) + (1 / t - 1) ** 1.0)
        if self.shift == 1.0:
            return t
        return self.shift * t / (1 + (self.shift - 1) * t)

    def sigma(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) model timestep; ComfyUI's ``sigma``.

        Example:
            >>> FlowModelSampling("discrete", shift=3.0).sigma(torch.tensor(500.0)).item()
            0.75
        """
        timestep = _float_tensor(timestep)
        if self.kind == "flux":
            return self._shifted(timestep)
        return self._shifted(timestep / self.multiplier)

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The model's timestep: ``sigma * multiplier`` (discrete) or ``sigma`` (flux).

        Example:
            >>> FlowModelSampling("discrete", shift=3.0).timestep(torch.tensor(0.5)).item()
            500.0
        """
        sigma = _float_tensor(sigma)
        return sigma * self.multiplier if self.kind == "discrete" else sigma

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the way through sampling; ComfyUI's ``percent_to_sigma``.

        Example:
            >>> FlowModelSampling("discrete", shift=3.0).percent_to_sigma(0.5)
            0.75
        """
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(self._shifted(1.0 - percent))

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model input: ``x`` unchanged; ComfyUI's ``CONST.calculate_input``."""
        return x

    def calculate_denoised(
        self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor
    ) -> torch.Tensor:
        """``x - sigma * v``; ComfyUI's ``CONST.calculate_denoised``.

        Example:
            >>> ms = FlowModelSampling("discrete", shift=3.0)
            >>> ms.calculate_denoised(torch.tensor([0.5]), torch.ones(1, 1), torch.ones(1, 1))
            tensor([[0.5000]])
        """
        return model_input - model_output * _per_item(sigma, model_output.ndim)

    def noise_scaling(
        self,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        latent: torch.Tensor,
        max_denoise: bool = False,
    ) -> torch.Tensor:
        """``sigma * noise + (1 - sigma) * latent``; ComfyUI's ``CONST.noise_scaling``.

        ``max_denoise`` is accepted for the common signature and, as in ComfyUI, not used.

        Example:
            >>> ms = FlowModelSampling("discrete", shift=3.0)
            >>> ms.noise_scaling(torch.tensor(0.25), torch.ones(1), torch.zeros(1)).item()
            0.25
        """
        sigma = torch.as_tensor(sigma)
        if sigma.ndim > 0:
            sigma = _per_item(sigma, noise.ndim)
        return sigma * noise + (1.0 - sigma) * latent

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``latent / (1 - sigma)``; ComfyUI's ``CONST.inverse_noise_scaling``."""
        return latent / (1.0 - _per_item(torch.as_tensor(sigma), latent.ndim))

    def __repr__(self) -> str:
        return (
            f"FlowModelSampling(kind={self.kind!r}, shift={self.shift:g}, "
            f"multiplier={self.multiplier:g}, num_timesteps={self.num_timesteps})"
        )


#: Either table: what the schedules and samplers accept.
AnyModelSampling = ModelSampling | FlowModelSampling


def _float_tensor(value: torch.Tensor | float) -> torch.Tensor:
    """``value`` as a tensor, float32 unless it already is floating point."""
    value = torch.as_tensor(value)
    return value if value.is_floating_point() else value.float()


def _per_item(sigma: torch.Tensor | float, ndim: int) -> torch.Tensor:
    """View a ``[B]`` sigma as ``[B, 1, ...]`` so it broadcasts over one batch item each."""
    sigma = torch.as_tensor(sigma)
    if sigma.ndim == 0:
        return sigma
    return sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


# --------------------------------------------------------------------------------------------
# 2. Sigma schedules
# --------------------------------------------------------------------------------------------


def _check_steps(steps: int, field: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{field} must be an integer >= 1, got {steps!r}")
    return int(steps)


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _normal_schedule(ms: AnyModelSampling, steps: int, sgm: bool = False) -> torch.Tensor:
    """ComfyUI's ``normal_scheduler`` (and ``sgm_uniform`` with ``sgm=True``).

    Evenly spaced float32 training steps from ``timestep(sigma_max)`` to ``timestep(sigma_min)``
    (``sgm``: over ``steps + 1`` points, last dropped), mapped through :meth:`ModelSampling.sigma`.
    Vectorised; the elementwise float32 arithmetic is the same as ComfyUI's per-step loop.
    """
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    elif math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
        # A table reaching sigma 0 ends on it: one more point, no zero appended (ComfyUI).
        return ms.sigma(torch.linspace(start, end, steps + 1)).float()
    else:
        timesteps = torch.linspace(start, end, steps)
    return _append_zero(ms.sigma(timesteps).float())


def _simple_schedule(ms: AnyModelSampling, steps: int) -> torch.Tensor:
    """ComfyUI's ``simple_scheduler``: ``sigmas[-(1 + int(i * n / steps))]``, then 0."""
    ss = len(ms.sigmas) / steps
    idx = [-(1 + int(i * ss)) for i in range(steps)]
    return _append_zero(ms.sigmas[idx].clone())


def _ddim_uniform_schedule(ms: AnyModelSampling, steps: int) -> torch.Tensor:
    """ComfyUI's ``ddim_scheduler``: every ``n // steps``-th sigma from index 1, reversed, then 0.

    As in ComfyUI the result can hold more than ``steps + 1`` values (e.g. 9 for 7 steps,
    because ``range(1, 1000, 142)`` has 8 members) or fewer (999 steps at most).
    """
    # A table whose second entry is ~0 gets one more step and no appended 0 (ComfyUI).
    ends_at_zero = math.isclose(float(ms.sigmas[1]), 0, abs_tol=0.00001)
    stride = max(len(ms.sigmas) // (steps + 1 if ends_at_zero else steps), 1)
    idx = list(range(1, len(ms.sigmas), stride))[::-1]
    sigmas = ms.sigmas[idx].clone()
    return sigmas if ends_at_zero else _append_zero(sigmas)


def _beta_schedule(
    ms: AnyModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6
) -> torch.Tensor:
    """ComfyUI's ``beta_scheduler``: training steps at Beta(0.6, 0.6) quantiles, deduplicated.

    Uses ``scipy.stats.beta.ppf`` as ComfyUI does (scipy comes with torchsde). Consecutive
    duplicate steps are dropped, so long schedules can have fewer than ``steps`` steps.
    """
    import scipy.stats  # lazy: scipy is only needed here and by lms

    total = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * total)
    idx: list[int] = []
    last = -1.0
    for t in ts:
        if t != last:
            idx.append(int(t))
        last = t
    return _append_zero(ms.sigmas[idx].clone())


def _karras_schedule(
    steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0
) -> torch.Tensor:
    """k-diffusion's ``get_sigmas_karras`` (Karras et al. 2022, rho 7), then 0."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def _exponential_schedule(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """k-diffusion's ``get_sigmas_exponential``: evenly spaced in log sigma, then 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def _linear_quadratic_schedule(
    steps: int, sigma_max: torch.Tensor, threshold_noise: float = 0.025
) -> torch.Tensor:
    """ComfyUI's ``linear_quadratic_schedule`` (from Mochi / genmo), then 0.

    The first ``steps // 2`` steps lower the noise linearly by ``threshold_noise`` in all; the
    rest follow a quadratic down to 0. Computed in Python floats on a ``[1, 0]`` scale, then
    cast to float32 and multiplied by the float32 ``sigma_max``, as ComfyUI does, so on an SD
    table it starts at sigma_max (14.6) just the same.
    """
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [
            quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)
        ]
        fractions = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * sigma_max.cpu()


def _kl_optimal_schedule(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """ComfyUI's ``kl_optimal_scheduler`` (A1111 PR 15608), then 0.

    ``tan`` of a linear blend from ``atan(sigma_max)`` to ``atan(sigma_min)`` over ``steps``
    points, in float32. One difference: for ``steps == 1`` ComfyUI divides 0 by 0 and returns
    ``[nan, 0]``; we return ``[sigma_max, 0]``, the blend's first point for every other count.
    """
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float32)
    fractions = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = fractions.new_zeros(steps + 1)
    blend = fractions * math.atan(sigma_min) + (1 - fractions) * math.atan(sigma_max)
    sigmas[:-1] = blend.tan_()
    return sigmas


def calculate_sigmas(model_sampling: AnyModelSampling, scheduler: str, steps: int) -> torch.Tensor:
    """The ``scheduler`` schedule of ``steps`` steps; ComfyUI's ``calculate_sigmas``.

    Returns a float32 CPU tensor of ``steps + 1`` decreasing sigmas ending in 0 (``ddim_uniform``
    and ``beta`` can differ in length, exactly as in ComfyUI; see their helpers).

    Raises:
        ValueError: unknown scheduler or ``steps < 1``.

    Example:
        >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear",
        ...     "beta_start": 0.00085, "beta_end": 0.012})
        >>> s = calculate_sigmas(ms, "karras", 10)
        >>> len(s), float(s[-1])
        (11, 0.0)
    """
    check_scheduler(scheduler)
    steps = _check_steps(steps)
    if scheduler == "karras":
        return _karras_schedule(
            steps, float(model_sampling.sigma_min), float(model_sampling.sigma_max)
        )
    if scheduler == "exponential":
        return _exponential_schedule(
            steps, float(model_sampling.sigma_min), float(model_sampling.sigma_max)
        )
    if scheduler == "normal":
        return _normal_schedule(model_sampling, steps)
    if scheduler == "sgm_uniform":
        return _normal_schedule(model_sampling, steps, sgm=True)
    if scheduler == "simple":
        return _simple_schedule(model_sampling, steps)
    if scheduler == "ddim_uniform":
        return _ddim_uniform_schedule(model_sampling, steps)
    if scheduler == "linear_quadratic":
        return _linear_quadratic_schedule(steps, model_sampling.sigma_max)
    if scheduler == "kl_optimal":
        return _kl_optimal_schedule(
            steps, float(model_sampling.sigma_min), float(model_sampling.sigma_max)
        )
    return _beta_schedule(model_sampling, steps)


def _sampler_sigmas(
    model_sampling: AnyModelSampling, scheduler: str, sampler_name: str, steps: int
) -> torch.Tensor:
    """ComfyUI's ``KSampler.calculate_sigmas``: DPM2 computes one more step, drops the penultimate.

    Why: DPM2's last step to 0 is an Euler step, so ComfyUI spends the extra step elsewhere.
    """
    if sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        sigmas = calculate_sigmas(model_sampling, scheduler, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return calculate_sigmas(model_sampling, scheduler, steps)


def loop_sigmas(
    model_sampling: AnyModelSampling,
    scheduler: str,
    sampler_name: str,
    steps: int,
    denoise: float,
) -> torch.Tensor:
    """Sigmas one KSampler call walks at ``denoise``; ComfyUI's ``KSampler.set_steps``.

    * ``denoise > 0.9999``: the full ``steps`` schedule;
    * ``denoise <= 0``: an empty tensor (the caller returns its input unchanged);
    * otherwise the last ``steps + 1`` sigmas of the ``int(steps / denoise)``-step schedule, so
      exactly ``steps`` model steps start part-way down the noise levels.

    Raises:
        ValueError: unknown names, ``steps < 1``, or ``denoise`` outside ``[0, 1]``.

    Example:
        >>> ms = ModelSampling.from_config({"beta_schedule": "scaled_linear",
        ...     "beta_start": 0.00085, "beta_end": 0.012})
        >>> s = loop_sigmas(ms, "normal", "euler", steps=10, denoise=0.5)
        >>> bool((s == calculate_sigmas(ms, "normal", 20)[-11:]).all())
        True
    """
    check_sampler(sampler_name)
    check_scheduler(scheduler)
    steps = _check_steps(steps)
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float, np.floating)):
        raise ValueError(f"denoise must be a number in [0, 1], got {denoise!r}")
    denoise = float(denoise)
    if not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise must be in [0, 1], got {denoise!r}")
    if denoise > 0.9999:
        return _sampler_sigmas(model_sampling, scheduler, sampler_name, steps)
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    new_steps = int(steps / denoise)
    sigmas = _sampler_sigmas(model_sampling, scheduler, sampler_name, new_steps)
    return sigmas[-(steps + 1) :]
