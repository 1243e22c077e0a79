"""Latent-to-RGB preview factors: a least-squares map from each latent pixel to its image patch.

ComfyUI previews SD 1.5 and SDXL latents with a 4x3 matrix (plus a bias for SDXL) applied to every
latent pixel; here the same map is fitted for the toy model, from latents (in diffusers' scaling,
i.e. multiplied by the VAE's ``scaling_factor``, as a sampler holds them) to the images averaged
over each latent pixel's 8x8 patch, in [-1, 1].
"""

from __future__ import annotations

import numpy as np


def patch_means(images: np.ndarray, factor: int = 8) -> np.ndarray:
    """``float [n, 3, H, W]`` -> ``[n, 3, H/factor, W/factor]``: the mean of each patch."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def fit_latent_rgb(latents: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares with a bias: ``targets ~ latents @ factors + bias``, per latent pixel.

    Args:
        latents (`np.ndarray` of shape ``[n, C, h, w]``): scaled latents.
        targets (`np.ndarray` of shape ``[n, 3, h, w]``): the images' patch means in [-1, 1].

    Returns:
        ``(factors [C, 3], bias [3])``, the layout of ComfyUI's ``latent_rgb_factors``.
    """
    c = latents.shape[1]
    x = latents.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    y = targets.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(x1, y, rcond=None)
    return coef[:c], coef[c]


def preview(latents: np.ndarray, factors, bias=None) -> np.ndarray:
    """``[n, C, h, w]`` scaled latents -> ``uint8 [n, h, w, 3]`` preview (ComfyUI's formula)."""
    v = np.einsum("nchw,cr->nhwr", np.asarray(latents, dtype=np.float64), np.asarray(factors))
    if bias is not None:
        v = v + np.asarray(bias)
    return (np.clip((v + 1.0) / 2.0, 0.0, 1.0) * 255).round().astype(np.uint8)
