"""Jupyter widgets: the `Studio` app, its control panel and its timeline.

Example:
    >>> import seqwidgets as sw
    >>> from seqwidgets.widgets import Studio
    >>> studio = Studio(sw.testing.tiny_pipeline())   # doctest: +SKIP
    >>> studio                                        # doctest: +SKIP
"""

from .colab import enable_custom_widget_manager, in_colab
from .panel import GROUPS, ControlPanel
from .studio import Studio
from .timeline import CanvasTimeline, ImageTimeline, Row, TimelineLayout

__all__ = [
    "GROUPS",
    "CanvasTimeline",
    "ControlPanel",
    "ImageTimeline",
    "Row",
    "Studio",
    "TimelineLayout",
    "enable_custom_widget_manager",
    "in_colab",
]
