"""Folding sections of plain widgets, for where ``ipywidgets.Accordion`` does not render.

Colab's custom widget manager (which ipycanvas needs there) is reported to break
``ipywidgets.Accordion`` (googlecolab/colabtools #3571). `ToggleSections` folds the same way with
widgets that render everywhere: a ``ToggleButton`` header over each section's box, whose
``layout.display`` toggles. `make_sections` picks it on Colab and the Accordion elsewhere.

Example:
    >>> import ipywidgets as W
    >>> sections = ToggleSections([W.Label("a"), W.Label("b")], ["First", "Second"])
    >>> sections.selected_index = 1
    >>> [box.layout.display for box in sections.boxes]
    ['none', None]
    >>> sections.headers[1].value = False      # a click on the open header folds it
    >>> sections.selected_index, sections.boxes[1].layout.display
    (None, 'none')
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as W
import traitlets

from . import colab

__all__ = ["ToggleSections", "make_sections"]


class ToggleSections(W.VBox):
    """Sections that fold like an ``ipywidgets.Accordion``, made of a ``ToggleButton`` header and
    a box per section: one section open at a time, the same ``titles`` and ``selected_index``.

    Args:
        children: one widget per section.
        titles: one header text per section.

    Attributes:
        headers (`list[ToggleButton]`): the headers, pressed while their section is open.
        boxes (`list[Widget]`): the sections' widgets (``children`` as given).
    """

    titles = traitlets.Tuple()
    selected_index = traitlets.Int(None, allow_none=True)

    def __init__(self, children: Sequence[W.Widget], titles: Sequence[str], **kwargs):
        if len(children) != len(titles):
            raise ValueError(f"got {len(titles)} titles for {len(children)} sections")
        self.boxes = list(children)
        self.headers = [
            W.ToggleButton(value=False, description=title, layout=W.Layout(width="100%"))
            for title in titles
        ]
        paired = [widget for pair in zip(self.headers, self.boxes, strict=True) for widget in pair]
        super().__init__(children=paired, **kwargs)
        self.add_class("sw-sections")
        for i, header in enumerate(self.headers):
            header.add_class("sw-section-header")
            header.observe(lambda change, i=i: self._on_header(i, change["new"]), "value")
        self.titles = tuple(titles)
        self._show()

    @traitlets.validate("selected_index")
    def _check_index(self, proposal):
        index = proposal["value"]
        if index is not None and not 0 <= index < len(self.boxes):
            raise traitlets.TraitError(
                f"selected_index: {index} is not a section; allowed: 0 to {len(self.boxes) - 1} "
                "or None"
            )
        return index

    @traitlets.observe("titles")
    def _retitle(self, change) -> None:
        for header, title in zip(self.headers, change["new"], strict=True):
            header.description = title

    @traitlets.observe("selected_index")
    def _show(self, change=None) -> None:
        for i, (header, box) in enumerate(zip(self.headers, self.boxes, strict=True)):
            shown = i == self.selected_index
            header.value = shown  # no loop: _on_header then finds nothing to change
            header.icon = "chevron-down" if shown else "chevron-right"
            box.layout.display = None if shown else "none"

    def _on_header(self, index: int, pressed: bool) -> None:
        if pressed:
            self.selected_index = index
        elif self.selected_index == index:
            self.selected_index = None


def make_sections(children: Sequence[W.Widget], titles: Sequence[str]) -> W.Box:
    """Folding sections: `ToggleSections` on Colab (see the module docstring), an
    ``ipywidgets.Accordion`` elsewhere; both take ``titles`` and ``selected_index``."""
    if colab.in_colab():
        return ToggleSections(children, titles)
    return W.Accordion(children=list(children), titles=tuple(titles))
