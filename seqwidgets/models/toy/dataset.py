"""The toy model's procedural dataset: 64x64 RGB pictures of one colored shape, with labels.

Pure numpy and PIL, seeded: ``ShapesDataset(seed).sample(n)`` gives the same pictures on every
machine. Each picture: a light background of random tint, one shape of a named color (jittered),
size and horizontal position, drawn at 4x and box-downsampled so the edges are anti-aliased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .vocab import COLOR_RGB, COLORS, POSITIONS, SHAPES, SIZES

IMAGE_SIZE = 64
_SUPER = 4  # draw at 4x, then downsample: anti-aliased edges
_CENTER_X = {"left": 16.0, "center": 32.0, "right": 48.0}
_RADIUS = {"small": (8.0, 11.0), "large": (13.0, 16.0)}  # half the shape's extent, in pixels


@dataclass(frozen=True)
class Labels:
    """Attribute indices of a batch of pictures (into COLORS, SHAPES, POSITIONS, SIZES)."""

    color: np.ndarray
    shape: np.ndarray
    position: np.ndarray
    size: np.ndarray

    def names(self, i: int) -> tuple[str, str, str, str]:
        """(color, shape, position, size) of picture ``i``."""
        return (
            COLORS[self.color[i]],
            SHAPES[self.shape[i]],
            POSITIONS[self.position[i]],
            SIZES[self.size[i]],
        )


def draw(
    color: str,
    shape: str,
    position: str,
    size: str,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One picture as a ``uint8`` array ``[64, 64, 3]``; ``rng`` jitters it (``None``: no jitter)."""
    jitter = rng is not None
    r = rng if jitter else np.random.default_rng(0)
    background = np.full(3, 222.0)
    fill = np.array(COLOR_RGB[color], dtype=np.float64)
    lo, hi = _RADIUS[size]
    radius = r.uniform(lo, hi) if jitter else (lo + hi) / 2
    cx, cy = _CENTER_X[position], 32.0
    if jitter:
        background = background + r.uniform(-22, 18) + r.uniform(-8, 8, size=3)
        fill = fill + r.uniform(-18, 18, size=3)
        cx += r.uniform(-3.0, 3.0)
        cy += r.uniform(-31.0 + radius, 31.0 - radius) * 0.5
    background = np.clip(background, 0, 255)
    fill = np.clip(fill, 0, 255)

    s = _SUPER
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), tuple(int(v) for v in background))
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = (cx - radius) * s, (cy - radius) * s, (cx + radius) * s, (cy + radius) * s
    ink = tuple(int(v) for v in fill)
    if shape == "circle":
        d.ellipse((x0, y0, x1, y1), fill=ink)
    elif shape == "square":
        # a square of the same area as the circle looks the same size
        h = radius * 0.886 * s
        d.rectangle((cx * s - h, cy * s - h, cx * s + h, cy * s + h), fill=ink)
    elif shape == "triangle":
        # equilateral, pointing up, centred on its bounding box
        d.polygon(
            [(cx * s, y0), (x1, y1 - 0.1 * radius * s), (x0, y1 - 0.1 * radius * s)], fill=ink
        )
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.asarray(img, dtype=np.uint8)


class ShapesDataset:
    """An endless, seeded stream of labelled pictures.

    Args:
        seed (`int`, defaults to 0): the stream's seed; two datasets with the same seed draw the
            same pictures in the same order.
    """

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, Labels]:
        """``n`` pictures (``uint8 [n, 64, 64, 3]``) and their labels, attributes uniform."""
        labels = Labels(
            color=self.rng.integers(len(COLORS), size=n),
            shape=self.rng.integers(len(SHAPES), size=n),
            position=self.rng.integers(len(POSITIONS), size=n),
            size=self.rng.integers(len(SIZES), size=n),
        )
        images = np.stack([draw(*labels.names(i), rng=self.rng) for i in range(n)])
        return images, labels


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """``uint8 [n, H, W, 3]`` -> ``float32 [n, 3, H, W]`` in [-1, 1] (the VAE's range)."""
    return images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
