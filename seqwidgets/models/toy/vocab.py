"""The toy model's little world: its attributes, their colors, and the caption grammar.

Pure Python (no numpy, no torch), so ``import seqwidgets.models.toy`` stays light.
"""

from __future__ import annotations

import random

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: tuple[str, ...] = ("left", "center", "right")
SIZES: tuple[str, ...] = ("small", "large")

#: Mean RGB of each color name in the dataset (each image jitters around it).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 20),
    "purple": (135, 50, 185),
    "orange": (245, 125, 15),
}

#: Every word the grammar can write, in a fixed order (the tokenizer's vocabulary is built from it).
WORDS: tuple[str, ...] = (
    ("a", "an", "the", "on", "in", "shape", "big", ",") + COLORS + SHAPES + POSITIONS + SIZES
)


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def caption(
    color: str | None = None,
    shape: str | None = None,
    position: str | None = None,
    size: str | None = None,
) -> str:
    """The caption of an image, e.g. ``caption("red", "circle", "left", "small")``.

    Args:
        color (`str`, *optional*): one of `COLORS`; left out of the caption when `None`.
        shape (`str`, *optional*): one of `SHAPES`; `None` writes the neutral noun "shape".
        position (`str`, *optional*): one of `POSITIONS`; left out when `None`.
        size (`str`, *optional*): one of `SIZES`; left out when `None`.

    Returns:
        `str`: "a small red circle on the left", "a red circle", "an orange shape in the center", ...
    """
    for value, allowed, name in (
        (color, COLORS, "color"),
        (shape, SHAPES, "shape"),
        (position, POSITIONS, "position"),
        (size, SIZES, "size"),
    ):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {allowed} or None, got {value!r}")
    words = [w for w in (size, color, shape or "shape") if w is not None]
    text = f"{_article(words[0])} {' '.join(words)}"
    if position == "center":
        text += " in the center"
    elif position is not None:
        text += f" on the {position}"
    return text


def random_caption(
    rng: random.Random,
    color: str,
    shape: str,
    position: str,
    size: str,
    keep: float = 0.7,
) -> str:
    """A training caption of varying detail for an image with these attributes.

    Color and shape are kept with a high probability, position and size with ``keep``, so that a
    plain "a red circle" works as a prompt and the model fills in what the prompt leaves out.
    A few captions use the synonym "big" or a wrong article, as people type them.
    """
    text = caption(
        color if rng.random() < 0.9 else None,
        shape if rng.random() < 0.9 else None,
        position if rng.random() < keep else None,
        size if rng.random() < keep * 0.7 else None,
    )
    if size == "large" and " large " in f" {text} " and rng.random() < 0.2:
        text = text.replace("large", "big")
    if rng.random() < 0.1:
        first, _, rest = text.partition(" ")
        text = f"{'an' if first == 'a' else 'a'} {rest}"
    return text
