"""Front-end environments: Colab's custom widget manager and the choice of renderer.

ipycanvas is a custom widget: on Colab it renders only once the custom widget manager is on
(``google.colab.output.enable_custom_widget_manager()``, which anywidget also calls on import
there). Background-thread widget updates are unreliable on Colab (colabtools #3373), so the
studio runs on the main thread there unless told otherwise.
"""

from __future__ import annotations

import importlib

__all__ = ["in_colab", "enable_custom_widget_manager", "choose_renderer", "default_threaded"]

_enabled = False


def in_colab() -> bool:
    """Whether this kernel runs in Google Colab (``google.colab.output`` is importable)."""
    try:
        importlib.import_module("google.colab.output")
    except Exception:
        return False
    return True


def enable_custom_widget_manager() -> bool:
    """Turn on Colab's custom widget manager once; return whether it is on.

    Does nothing (and returns ``False``) outside Colab.
    """
    global _enabled
    if _enabled:
        return True
    if not in_colab():
        return False
    try:
        output = importlib.import_module("google.colab.output")
        output.enable_custom_widget_manager()
    except Exception:
        return False
    _enabled = True
    return True


def choose_renderer(renderer: str = "auto") -> str:
    """``"canvas"`` when ipycanvas can be used, else ``"image"``; explicit choices are checked.

    Args:
        renderer: ``"auto"``, ``"canvas"`` or ``"image"``.
    """
    from .timeline import ipycanvas_available

    if renderer not in ("auto", "canvas", "image"):
        raise ValueError(f"renderer: {renderer!r} is unknown; allowed: 'auto', 'canvas', 'image'")
    if renderer == "image":
        return "image"
    available = ipycanvas_available()
    if renderer == "canvas" and not available:
        raise ValueError("renderer='canvas' needs ipycanvas: pip install ipycanvas")
    if not available:
        return "image"
    enable_custom_widget_manager()
    return "canvas"


def default_threaded() -> bool:
    """Run in a background thread, except on Colab (see the module docstring)."""
    return not in_colab()
