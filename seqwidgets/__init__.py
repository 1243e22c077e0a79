"""seqwidgets: sequential diffusion sampling (ComfyUI's KSampler Sequence) on diffusers.

The names below load on first use, so ``import seqwidgets`` is instant and imports neither torch
nor the widget stack: the ``seqwidgets`` command answers ``--help`` without them, and a script
that never builds a `Studio` never imports ipywidgets.

Example:
    >>> import seqwidgets as sw
    >>> params = sw.SequenceParams(positive_seq="0: a red circle\\n6: a blue square")
    >>> sw.seed_sequence(params)[:4]
    [1, 2, 1, 2]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

# Public name -> the module that defines it (or the module itself).
_EXPORTS = {
    "PARAM_SPECS": "seqwidgets.params",
    "SequenceParams": "seqwidgets.params",
    "parse_keyframes": "seqwidgets.keyframes",
    "LoopPlan": "seqwidgets.plan",
    "plan_sequence": "seqwidgets.plan",
    "seed_sequence": "seqwidgets.plan",
    "Frame": "seqwidgets.engine",
    "SequenceSampler": "seqwidgets.engine",
    "Branch": "seqwidgets.session",
    "Session": "seqwidgets.session",
    "load_pipeline": "seqwidgets.models",
    "Studio": "seqwidgets.widgets.studio",
    "interp": "seqwidgets.interp",
    "presets": "seqwidgets.presets",
    "testing": "seqwidgets.testing",
}

__all__ = [  # the names of _EXPORTS, spelled out for linters and `from seqwidgets import *`
    "PARAM_SPECS",
    "Branch",
    "Frame",
    "LoopPlan",
    "SequenceParams",
    "SequenceSampler",
    "Session",
    "Studio",
    "__version__",
    "interp",
    "load_pipeline",
    "parse_keyframes",
    "plan_sequence",
    "presets",
    "seed_sequence",
    "testing",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from . import interp, presets, testing
    from .engine import Frame, SequenceSampler
    from .keyframes import parse_keyframes
    from .models import load_pipeline
    from .params import PARAM_SPECS, SequenceParams
    from .plan import LoopPlan, plan_sequence, seed_sequence
    from .session import Branch, Session
    from .widgets.studio import Studio
