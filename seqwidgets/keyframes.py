"""Keyframe texts: the ``index: prompt`` syntax of WAS_Extras' ``CLIPTextEncodeSequence``.

One keyframe per line; the prompt is everything after the first colon, stripped::

    0: A portrait of a rosebud
    5: A portrait of a blooming rosebud

Blank lines and lines starting with ``#`` are ignored. The node silently skips any other line
without an ``N:`` prefix; we reject it, together with duplicate indices (the node would use the
first) and texts without a keyframe at loop 0 (the node would have no conditioning for loop 0).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from seqwidgets.errors import ParamError

__all__ = ["Keyframes", "format_keyframes", "keyframe_at", "parse_keyframes"]

Keyframes = list[tuple[int, str]]

_KEYFRAME_LINE = re.compile(r"\s*(\d+)\s*:")


def parse_keyframes(text: str, *, field: str = "keyframes") -> Keyframes:
    """Parse a keyframe text into ``[(index, prompt), ...]`` sorted by index.

    Args:
        text (`str`): one ``index: prompt`` per line.
        field (`str`, defaults to ``"keyframes"``): the name used in error messages, e.g.
            ``"positive_seq"``.

    Returns:
        `list[tuple[int, str]]`: the keyframes sorted by index. A text that is empty or holds only
        blank and comment lines gives ``[(0, "")]``: the empty prompt from loop 0 on.

    Raises:
        `ValueError`: naming ``field`` and the 1-based line number, for a line without an ``N:``
        prefix or with an index already used; naming ``field`` when no keyframe starts at loop 0.
    """
    if not isinstance(text, str):
        raise ParamError(field, f"{field}: expected a str of 'index: prompt' lines, got {text!r}")
    keyframes: dict[int, str] = {}
    first_line: dict[int, int] = {}
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEYFRAME_LINE.match(line)
        if match is None:
            raise ParamError(
                field,
                f"{field}, line {lineno}: expected 'index: prompt' (e.g. '0: a red circle'), "
                f"got {line!r}",
            )
        try:
            index = int(match.group(1))
        except ValueError:  # thousands of digits: more than int() converts
            raise ParamError(
                field,
                f"{field}, line {lineno}: keyframe index too large ({len(match.group(1))} digits)",
            ) from None
        if index in keyframes:
            raise ParamError(
                field,
                f"{field}, line {lineno}: keyframe index {index} already used on line "
                f"{first_line[index]}: {line!r}",
            )
        keyframes[index] = line.split(":", 1)[1].strip()
        first_line[index] = lineno
    if not keyframes:
        return [(0, "")]
    if 0 not in keyframes:
        first = min(keyframes)
        lineno = first_line[first]
        raise ParamError(
            field,
            f"{field}, line {lineno}: the first keyframe is at loop {first}, but a keyframe at "
            f"loop 0 is required (e.g. '0: a red circle'): {lines[lineno - 1]!r}",
        )
    return sorted(keyframes.items())


def format_keyframes(keyframes: Iterable[tuple[int, str]]) -> str:
    """The inverse of `parse_keyframes`: ``"index:prompt"`` lines in index order.

    ``parse_keyframes(format_keyframes(k)) == k`` for any parsed ``k`` whose prompts hold no line
    break and have no surrounding whitespace.
    """
    return "\n".join(f"{index}:{prompt}" for index, prompt in sorted(keyframes))


def keyframe_at(keyframes: Sequence[tuple[int, str]], loop: int) -> str:
    """The prompt loop ``loop`` uses: the last keyframe whose index is at most ``loop``.

    This is the node's rule "the keyframe whose index is the loop, else the one the previous loop
    used", given keyframes that start at loop 0.
    """
    prompt = None
    for index, text in sorted(keyframes):
        if index > loop:
            break
        prompt = text
    if prompt is None:
        raise ValueError(f"no keyframe at or before loop {loop}")
    return prompt
