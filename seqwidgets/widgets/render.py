"""Pure HTML and text for the studio: what each part of the screen says, with no widget in sight.

Every function here takes plain values (settings, a frame, a job's counters, a time) and returns
a string, so what the studio shows is tested without a front end, a thread or a clock.

Example:
    >>> describe_changes({"denoise_seq": (0.5, 0.3), "positive_seq": ("0: a\\n4: b", "0: a\\n4: c")})
    'denoise_seq 0.5 → 0.3, positive_seq (line 2)'
"""

from __future__ import annotations

from typing import Any

from seqwidgets.params import PARAM_SPECS

__all__ = ["describe_changes", "format_value"]


def format_value(value: Any) -> str:
    """A setting as the panel shows it: ``None`` is "auto", booleans are "on" / "off".

    >>> format_value(None), format_value(True), format_value(0.25), format_value("euler")
    ('auto', 'on', '0.25', 'euler')
    """
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _changed_lines(old: str, new: str) -> list[int]:
    """1-based numbers of the lines that differ between two texts (added or removed count)."""
    a, b = old.splitlines(), new.splitlines()
    return [i + 1 for i in range(max(len(a), len(b))) if a[i : i + 1] != b[i : i + 1]]


def describe_changes(changes: dict[str, tuple[Any, Any]], *, limit: int = 3) -> str:
    """``changes`` (field -> (selected value, edited value)) as one short line.

    A keyframe text names its changed lines rather than repeating the prompts.

    >>> describe_changes({"cfg": (8.0, 3.0), "seed_mode_seq": ("increment", "fixed")})
    'cfg 8 → 3, seed_mode_seq increment → fixed'
    >>> describe_changes({"positive_seq": ("0: a", "0: a\\n3: b\\n5: c\\n7: d\\n9: e")})
    'positive_seq (lines 2, 3, 4, …)'
    >>> describe_changes({})
    ''
    """
    parts = []
    for name, (old, new) in changes.items():
        spec = PARAM_SPECS.get(name)
        if spec is not None and spec.kind == "keyframes" and isinstance(new, str):
            lines = _changed_lines(old or "", new)
            if not lines:
                parts.append(f"{name} (whitespace)")
                continue
            shown = ", ".join(str(n) for n in lines[:limit]) + (", …" if len(lines) > limit else "")
            parts.append(f"{name} (line{'s' if len(lines) > 1 else ''} {shown})")
        else:
            parts.append(f"{name} {format_value(old)} → {format_value(new)}")
    return ", ".join(parts)
