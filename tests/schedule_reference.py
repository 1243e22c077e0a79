"""Independent float64 readings of ComfyUI's ``linear_quadratic`` and ``kl_optimal`` schedules.

Written from ``comfy/samplers.py`` (``linear_quadratic_schedule``, ``kl_optimal_scheduler``) with
numpy in float64, for the scheduler tests of every family; nothing here comes from seqwidgets.
"""

from __future__ import annotations

import numpy as np


def ref_linear_quadratic(steps: int, sigma_max: float, threshold_noise: float = 0.025) -> list:
    """``steps + 1`` sigmas: linear for ``steps // 2`` steps, then quadratic down to 0."""
    if steps == 1:
        return [sigma_max, 0.0]
    linear_steps = steps // 2
    quadratic_steps = steps - linear_steps
    # The quadratic q(i) = a i^2 + b i + c meets the linear part at i = linear_steps
    # (value threshold_noise) with its slope, and reaches 1 at i = steps.
    diff = linear_steps - threshold_noise * steps
    a = diff / (linear_steps * quadratic_steps**2)
    b = threshold_noise / linear_steps - 2 * diff / quadratic_steps**2
    c = a * linear_steps**2
    i = np.arange(steps + 1, dtype=np.float64)
    drop = np.where(i < linear_steps, i * threshold_noise / linear_steps, a * i**2 + b * i + c)
    drop[-1] = 1.0
    return list((1.0 - drop) * sigma_max)


def ref_kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> list:
    """``tan`` of ``atan(sigma_max) -> atan(sigma_min)`` in ``steps`` even steps, then 0."""
    if steps == 1:
        return [sigma_max, 0.0]
    t = np.linspace(0.0, 1.0, steps)
    return list(np.tan(t * np.arctan(sigma_min) + (1 - t) * np.arctan(sigma_max))) + [0.0]
