"""Per-loop measures of a sequence: how far the colours drift, how much each loop changes.

Loopback sampling drifts: colours slide towards magenta or grey, contrast climbs, detail burns in
over tens of loops. This module puts numbers on it, one row per loop, from the decoded images
(and the latent), with numpy only. `MEASURES` documents every column in one line, with what a
teacher would say about it; `Session.metrics(branch)` computes the rows once per decoded frame
and keeps them.

Colour is measured in CIELAB (D65 white, sRGB primaries): ``L*`` is lightness from 0 (black) to
100 (white); ``a*`` runs green (-) to magenta (+), ``b*`` blue (-) to yellow (+). A distance of
about 2.3 between two colours is the smallest difference a viewer notices (a "just noticeable
difference"); 10 is obvious.

Example:
    >>> import numpy as np
    >>> white, red = np.ones((4, 4, 3)), np.zeros((4, 4, 3))
    >>> red[..., 0] = 1.0
    >>> [round(float(v), 2) for v in rgb_to_lab(red)[0, 0]]
    [53.24, 80.09, 67.2]
    >>> round(lab_distance(color_stats(white), color_stats(red)), 1)
    114.5
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import short_repr

if TYPE_CHECKING:
    from PIL import Image

    from seqwidgets.frames import Frame

__all__ = [
    "MEASURES",
    "BranchDiff",
    "FramePair",
    "ColorStats",
    "Measure",
    "MetricsTable",
    "as_rgb",
    "color_stats",
    "difference_map",
    "hist_distance",
    "hsv_to_rgb",
    "lab_distance",
    "lab_to_rgb",
    "loop_metrics",
    "rgb_to_hsv",
    "rgb_to_lab",
    "rmse",
    "spread_distance",
    "ssim",
]


# -- colour spaces -------------------------------------------------------------------------------

# Linear sRGB -> CIE XYZ under D65 (IEC 61966-2-1), and the D65 reference white.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0


def as_rgb(image: Any) -> np.ndarray:
    """An RGB image as float64 ``[H, W, 3]`` in [0, 1].

    Args:
        image: a PIL image (any mode, converted to RGB), a uint8 array ``[H, W, 3]`` or a float
            array ``[H, W, 3]`` already in [0, 1].

    Example:
        >>> as_rgb(np.full((1, 1, 3), 255, dtype=np.uint8)).tolist()
        [[[1.0, 1.0, 1.0]]]
    """
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image: expected an RGB image [H, W, 3], got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"image: expected uint8 or float values, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"image: float values must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]"
        )
    return array


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``[..., 3]`` in [0, 1] -> CIELAB ``[..., 3]`` (``L*`` 0-100, ``a*``, ``b*``), D65.

    Example:
        >>> (rgb_to_lab(np.array([1.0, 1.0, 1.0])).round(3) + 0.0).tolist()  # + 0.0: no -0.0
        [100.0, 0.0, 0.0]
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB ``[..., 3]`` -> sRGB ``[..., 3]``, clipped to [0, 1] (the inverse of `rgb_to_lab`).

    Example:
        >>> rgb = np.array([0.2, 0.5, 0.9])
        >>> bool(np.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb))
        True
    """
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0)) * _WHITE
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(rgb, 0.0, 1.0)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB ``[..., 3]`` in [0, 1] -> HSV ``[..., 3]``, each in [0, 1] (hue 0 = red, 1/3 = green).

    Example:
        >>> rgb_to_hsv(np.array([0.0, 0.5, 0.0])).round(4).tolist()
        [0.3333, 1.0, 0.5]
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v, c, s = _value_chroma_saturation(rgb)
    safe_c = np.where(c > 0, c, 1.0)
    h = np.where(
        v == r,
        ((g - b) / safe_c) % 6.0,
        np.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0),
    )
    h = np.where(c > 0, h / 6.0, 0.0) % 1.0
    return np.stack([h, s, v], axis=-1)


def _value_chroma_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV's value, chroma and saturation of float RGB ``[..., 3]``: what the saturation
    measure needs, without the hue (most of `rgb_to_hsv`'s work)."""
    v = rgb.max(axis=-1)
    c = v - rgb.min(axis=-1)
    return v, c, np.where(v > 0, c / np.where(v > 0, v, 1.0), 0.0)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV ``[..., 3]`` in [0, 1] -> RGB ``[..., 3]`` in [0, 1] (the inverse of `rgb_to_hsv`).

    Example:
        >>> hsv_to_rgb(np.array([1 / 3, 1.0, 0.5])).round(4).tolist()
        [0.0, 0.5, 0.0]
    """
    hsv = np.asarray(hsv, dtype=np.float64)
    h = (hsv[..., 0] % 1.0) * 6.0
    s, v = np.clip(hsv[..., 1], 0, 1), np.clip(hsv[..., 2], 0, 1)
    # The standard closed form: each channel is v minus a clipped triangle wave of the hue.
    k = np.stack([(5.0 + h) % 6.0, (3.0 + h) % 6.0, (1.0 + h) % 6.0], axis=-1)
    wave = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] - (v * s)[..., None] * wave


# -- per-image statistics ------------------------------------------------------------------------

#: Bins of the LAB histograms, and the range of each channel they cover.
#: An odd count over a range centred on 0 puts neutral grey (``a* = b* = 0``) mid-bin, so round-off
#: around 0 never splits one grey between two bins.
HIST_BINS = 33
_HIST_RANGES = ((0.0, 100.0), (-132.0, 132.0), (-132.0, 132.0))


@dataclass(frozen=True)
class ColorStats:
    """The colour summary of one image: what the drift measures compare.

    Attributes:
        lab_mean: mean ``(L*, a*, b*)``.
        lab_std: standard deviation of ``L*``, ``a*``, ``b*`` over the pixels (the spread).
        hist: ``[3, HIST_BINS]`` normalised histograms of ``L*``, ``a*``, ``b*``.
        saturation: mean HSV saturation, 0 (grey) to 1 (pure colours).
    """

    lab_mean: np.ndarray
    lab_std: np.ndarray
    hist: np.ndarray
    saturation: float


def color_stats(image: Any) -> ColorStats:
    """The `ColorStats` of an RGB image (PIL, uint8 or float array, see `as_rgb`).

    Example:
        >>> stats = color_stats(np.zeros((8, 8, 3)))
        >>> stats.lab_mean.tolist(), float(stats.hist[0, 0])
        ([0.0, 0.0, 0.0], 1.0)
    """
    rgb = as_rgb(image)
    lab = rgb_to_lab(rgb).reshape(-1, 3)
    hist = np.stack(
        [
            # Clipped first: round-off puts white a hair above L* = 100, outside the range.
            np.histogram(
                np.clip(lab[:, c], *_HIST_RANGES[c]), bins=HIST_BINS, range=_HIST_RANGES[c]
            )[0]
            / len(lab)
            for c in range(3)
        ]
    )
    return ColorStats(
        lab_mean=lab.mean(axis=0),
        lab_std=lab.std(axis=0),
        hist=hist,
        saturation=float(_value_chroma_saturation(rgb)[2].mean()),
    )


def lab_distance(a: ColorStats, b: ColorStats) -> float:
    """Distance between the mean colours of two images (CIE76 Delta E of the means)."""
    return float(np.linalg.norm(a.lab_mean - b.lab_mean))


def spread_distance(a: ColorStats, b: ColorStats) -> float:
    """Distance between the spreads (standard deviations of ``L*``, ``a*``, ``b*``)."""
    return float(np.linalg.norm(a.lab_std - b.lab_std))


def hist_distance(a: ColorStats, b: ColorStats) -> float:
    """How little two LAB histograms overlap: 0 identical, 1 disjoint (mean total variation).

    Example:
        >>> black, white = color_stats(np.zeros((2, 2, 3))), color_stats(np.ones((2, 2, 3)))
        >>> round(hist_distance(black, black), 6), round(hist_distance(black, white), 6)
        (0.0, 0.333333)
    """
    return float(0.5 * np.abs(a.hist - b.hist).sum(axis=1).mean())


# -- change between two images -------------------------------------------------------------------


def rmse(a: Any, b: Any) -> float:
    """Root mean square difference of two RGB images of one size, in [0, 1] units."""
    x, y = _same_size(a, b)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def _same_size(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_rgb(a), as_rgb(b)
    if x.shape != y.shape:
        raise ValueError(f"images must have one size, got {x.shape[:2]} and {y.shape[:2]}")
    return x, y


def difference_map(a: Any, b: Any) -> np.ndarray:
    """Per-pixel difference of two RGB images of one size: mean absolute RGB difference, ``[H, W]``
    in [0, 1] (0 where they agree), for a heatmap.

    Example:
        >>> difference_map(np.zeros((1, 2, 3)), np.ones((1, 2, 3))).tolist()
        [[1.0, 1.0]]
    """
    x, y = _same_size(a, b)
    return np.abs(x - y).mean(axis=-1)


def _box_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Mean over every ``width x width`` window that fits (an integral image: O(pixels))."""
    c = np.pad(x, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    total = c[width:, width:] - c[:-width, width:] - c[width:, :-width] + c[:-width, :-width]
    return total / (width * width)


def ssim(a: Any, b: Any, *, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two RGB images, on lightness ``L* / 100``.

    1 means the same structure; it falls as edges and textures move or appear. Local means,
    variances and covariance are taken over ``window x window`` squares (shrunk to fit a small
    image), with the usual constants ``(0.01)^2`` and ``(0.03)^2`` for a data range of 1.

    Example:
        >>> gray = np.full((8, 8, 3), 0.5)
        >>> ssim(gray, gray)
        1.0
    """
    x, y = _same_size(a, b)
    x = rgb_to_lab(x)[..., 0] / 100.0
    y = rgb_to_lab(y)[..., 0] / 100.0
    width = max(1, min(window, *x.shape))
    mx, my = _box_mean(x, width), _box_mean(y, width)
    vx = _box_mean(x * x, width) - mx * mx
    vy = _box_mean(y * y, width) - my * my
    cov = _box_mean(x * y, width) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())


# -- one row per loop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One column of `loop_metrics`: a label, a unit, what it measures, what it means."""

    label: str
    unit: str
    help: str
    teacher: str


#: Every measure of a loop, in the order of a row (after ``loop`` and ``keyframe``).
MEASURES: dict[str, Measure] = {
    "drift_lab": Measure(
        "colour drift from loop 0",
        "ΔE",
        "Distance between this loop's mean CIELAB colour and loop 0's (CIE76 ΔE).",
        "Above ~2 you can see the whole picture has shifted colour; loopback drift climbs here.",
    ),
    "drift_spread": Measure(
        "spread drift from loop 0",
        "ΔE",
        "Distance between the spreads (std of L*, a*, b*) of this loop and of loop 0.",
        "Growing spread is contrast and saturation creeping up; falling spread is fading to grey.",
    ),
    "drift_hist": Measure(
        "histogram drift from loop 0",
        "0-1",
        "How little this loop's L*, a*, b* histograms overlap loop 0's (0 same, 1 disjoint).",
        "Catches changes the mean hides, such as a palette that splits in two.",
    ),
    "key_drift_lab": Measure(
        "colour drift from keyframe",
        "ΔE",
        "As drift_lab, against the first loop of the keyframe this loop belongs to.",
        "A new keyframe is meant to change colour; drift within one keyframe is the loop's own.",
    ),
    "key_drift_spread": Measure(
        "spread drift from keyframe",
        "ΔE",
        "As drift_spread, against the first loop of this loop's keyframe.",
        "Contrast that climbs inside one prompt is the feedback loop burning in.",
    ),
    "key_drift_hist": Measure(
        "histogram drift from keyframe",
        "0-1",
        "As drift_hist, against the first loop of this loop's keyframe.",
        "Near 0 while the prompt holds means the palette is stable.",
    ),
    "change_rmse": Measure(
        "change from previous loop",
        "RMSE",
        "Root mean square pixel difference from the previous loop (0-1 units; NaN at loop 0).",
        "How hard each loop repaints: denoise_seq and new keyframes make it jump.",
    ),
    "change_ssim": Measure(
        "structure kept from previous loop",
        "SSIM",
        "Structural similarity of lightness with the previous loop (1 same; NaN at loop 0).",
        "Near 1 keeps the drawing; a dip is a loop that redrew shapes or edges.",
    ),
    "saturation": Measure(
        "saturation",
        "0-1",
        "Mean HSV saturation: 0 all grey, 1 pure colours.",
        "Loopback tends to push this up loop after loop (over-saturated, burnt-in colour).",
    ),
    "contrast": Measure(
        "contrast",
        "L*",
        "RMS contrast: the standard deviation of lightness L* over the pixels.",
        "Climbing contrast is the classic loopback burn; falling is the slide to flat grey.",
    ),
    "L": Measure(
        "lightness L*",
        "L*",
        "Mean lightness L*, 0 black to 100 white.",
        "Darkening loop after loop is a common loopback complaint.",
    ),
    "a": Measure(
        "green-magenta a*",
        "a*",
        "Mean a*: negative green, positive magenta.",
        "A steady climb is the famous slide to magenta.",
    ),
    "b": Measure(
        "blue-yellow b*",
        "b*",
        "Mean b*: negative blue, positive yellow.",
        "A steady slide here is a colour cast (yellowing or cooling).",
    ),
    "latent_rms": Measure(
        "latent norm",
        "RMS",
        "The latent's L2 norm per element (root mean square), in diffusers' scaling.",
        "Near 1 for a healthy SD latent; a steady rise means values are blowing up.",
    ),
}


def loop_metrics(
    image: Any,
    *,
    loop: int,
    keyframe: int,
    first: ColorStats,
    key: ColorStats,
    previous: Any | None = None,
    stats: ColorStats | None = None,
    latent: Any | None = None,
) -> dict[str, float]:
    """The row of one loop: ``loop``, ``keyframe`` and every measure of `MEASURES`.

    Args:
        image: the loop's decoded RGB image (see `as_rgb`).
        loop (`int`): the loop index. keyframe (`int`): the loop where its keyframe starts.
        first (`ColorStats`): loop 0's statistics. key (`ColorStats`): the keyframe start's.
        previous (*optional*): the previous loop's image (``None`` at loop 0: change is NaN).
        stats (`ColorStats`, *optional*): this image's statistics, if already computed.
        latent (*optional*): the loop's latent (torch tensor or array); NaN without one.

    Example:
        >>> gray = np.full((8, 8, 3), 0.5)
        >>> s = color_stats(gray)
        >>> row = loop_metrics(gray, loop=1, keyframe=0, first=s, key=s, previous=gray)
        >>> row["drift_lab"], row["change_rmse"], row["change_ssim"]
        (0.0, 0.0, 1.0)
    """
    stats = color_stats(image) if stats is None else stats
    nan = float("nan")
    if latent is None:
        latent_rms = nan
    else:
        values = np.asarray(latent.detach().float().cpu() if hasattr(latent, "detach") else latent)
        latent_rms = float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))
    return {
        "loop": int(loop),
        "keyframe": int(keyframe),
        "drift_lab": lab_distance(stats, first),
        "drift_spread": spread_distance(stats, first),
        "drift_hist": hist_distance(stats, first),
        "key_drift_lab": lab_distance(stats, key),
        "key_drift_spread": spread_distance(stats, key),
        "key_drift_hist": hist_distance(stats, key),
        "change_rmse": nan if previous is None else rmse(image, previous),
        "change_ssim": nan if previous is None else ssim(image, previous),
        "saturation": stats.saturation,
        "contrast": float(stats.lab_std[0]),
        "L": float(stats.lab_mean[0]),
        "a": float(stats.lab_mean[1]),
        "b": float(stats.lab_mean[2]),
        "latent_rms": latent_rms,
    }


class MetricsTable(list):
    """The rows of `loop_metrics` for a branch, one dict per loop, in loop order.

    A plain list of dicts, with `column` for one measure and `to_pandas` for a DataFrame (when
    pandas is installed; it is not a dependency).

    Example:
        >>> table = MetricsTable([{"loop": 0, "L": 50.0}, {"loop": 1, "L": 48.5}])
        >>> table.column("L")
        [50.0, 48.5]
    """

    def column(self, name: str) -> list[float]:
        """The values of one measure, one per row."""
        if self and name not in self[0]:
            raise ValueError(f"measure: {name!r} is unknown; allowed: {', '.join(self[0])}")
        return [row[name] for row in self]

    def to_pandas(self):
        """A `pandas.DataFrame` indexed by loop (needs ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("MetricsTable.to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(list(self)).set_index("loop")


def check_measure(name: str) -> str:
    """``name`` if it is one of `MEASURES`, else a `ValueError` listing them."""
    if name not in MEASURES:
        raise ValueError(f"measure: {name!r} is unknown; allowed: {', '.join(MEASURES)}")
    return name


# -- two branches side by side ---------------------------------------------------------------------


@dataclass(frozen=True)
class FramePair:
    """Loop ``index`` of two branches (see `Session.diff`).

    Attributes:
        index: the loop index. a, b: the two branches' frames of that loop.
        images: returns the two decoded images (from the session's cache).
    """

    index: int
    a: Frame
    b: Frame
    images: Callable[[], tuple[Image.Image, Image.Image]] = field(repr=False, compare=False)

    @property
    def shared(self) -> bool:
        """Both branches share this frame (it comes before they part): no difference at all."""
        return self.a is self.b

    def difference(self) -> np.ndarray:
        """`difference_map` of the two images (zeros for a shared frame, without decoding)."""
        image_a, image_b = self.images()
        if self.shared:
            return np.zeros(as_rgb(image_a).shape[:2])
        return difference_map(image_a, image_b)

    def rmse(self) -> float:
        """`rmse` between the two images (0 for a shared frame)."""
        return 0.0 if self.shared else rmse(*self.images())


@dataclass(frozen=True)
class BranchDiff:
    """What differs between two branches: settings, and frames loop by loop.

    ``print(diff)`` shows the changed settings and, per loop, the seeds and how far apart the
    two latents are; its ``repr`` is one line. Neither decodes an image nor prints a tensor.

    Attributes:
        settings: ``{field: (value in a, value in b)}`` for every setting that differs.
        pairs: one `FramePair` per loop index both timelines have, in loop order.
        names: the two branches' names, for the printed text.
    """

    settings: dict[str, tuple[Any, Any]]
    pairs: list[FramePair]
    names: tuple[str, str] = ("a", "b")

    #: Loops listed by ``str`` after the shared ones; the rest are counted.
    SHOWN_LOOPS = 12

    @property
    def parted_at(self) -> int | None:
        """The first loop whose frames differ (``None`` if every compared frame is shared)."""
        return next((pair.index for pair in self.pairs if not pair.shared), None)

    def __repr__(self) -> str:
        changed = ", ".join(self.settings) or "no setting"
        parted = "never parted" if self.parted_at is None else f"parted at loop {self.parted_at}"
        a, b = (short_repr(name) for name in self.names)
        return f"<BranchDiff {a} vs {b}: {changed} changed; {len(self.pairs)} loops, {parted}>"

    def __str__(self) -> str:
        a, b = (short_repr(name) for name in self.names)
        lines = [f"{a} vs {b}"]
        if self.settings:
            lines.append("settings that differ:")
            for name, (value_a, value_b) in self.settings.items():
                lines.append(f"  {name}: {short_repr(value_a)} -> {short_repr(value_b)}")
        else:
            lines.append("settings: the same")
        shared = [pair.index for pair in self.pairs if pair.shared]
        parted = [pair for pair in self.pairs if not pair.shared]
        if not self.pairs:
            lines.append("no loop computed in both")
        elif shared:
            span = f"loop {shared[0]}" if len(shared) == 1 else f"loops {shared[0]}..{shared[-1]}"
            lines.append(f"{span}: shared (the same frames)")
        if parted:
            lines.append("loop  seed a  seed b  latent RMS difference")
            for pair in parted[: self.SHOWN_LOOPS]:
                lines.append(
                    f"{pair.index:>4}  {pair.a.seed:>6}  {pair.b.seed:>6}  "
                    f"{latent_rms_difference(pair.a.latent, pair.b.latent):.4f}"
                )
            if len(parted) > self.SHOWN_LOOPS:
                lines.append(f"... {len(parted) - self.SHOWN_LOOPS} more loops")
        return "\n".join(lines)


def latent_rms_difference(a: Any, b: Any) -> float:
    """The root mean square of ``a - b`` for two latents of one shape (tensors or arrays).

    Example:
        >>> latent_rms_difference(np.zeros((4, 2, 2)), np.full((4, 2, 2), 0.5))
        0.5
    """
    a, b = (_as_float64(x) for x in (a, b))
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _as_float64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; numpy has no bfloat16
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
