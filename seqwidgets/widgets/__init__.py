"""Jupyter widgets: the `Studio` app, its control panel and its timeline.

The names load on first use: ``seqwidgets.widgets.launch`` (behind ``seqwidgets studio``) and
``seqwidgets.widgets.colab`` do not pull in ipywidgets, ipycanvas or torch.

Example:
    >>> import seqwidgets as sw
    >>> from seqwidgets.widgets import Studio
    >>> studio = Studio(sw.testing.tiny_pipeline())   # doctest: +SKIP
    >>> studio                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqwidgets._lazy import lazy_exports

_EXPORTS = {
    "enable_custom_widget_manager": "seqwidgets.widgets.colab",
    "in_colab": "seqwidgets.widgets.colab",
    "GROUPS": "seqwidgets.widgets.panel",
    "ControlPanel": "seqwidgets.widgets.panel",
    "Studio": "seqwidgets.widgets.studio",
    "CanvasTimeline": "seqwidgets.widgets.timeline",
    "ImageTimeline": "seqwidgets.widgets.timeline",
    "Row": "seqwidgets.widgets.timeline",
    "TimelineLayout": "seqwidgets.widgets.timeline",
}

__all__ = [  # the names of _EXPORTS, spelled out for linters and `import *`
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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .colab import enable_custom_widget_manager, in_colab
    from .panel import GROUPS, ControlPanel
    from .studio import Studio
    from .timeline import CanvasTimeline, ImageTimeline, Row, TimelineLayout
