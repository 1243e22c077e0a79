"""seqwidgets: sequential diffusion sampling (ComfyUI's KSampler Sequence) on diffusers.

Example:
    >>> import seqwidgets as sw
    >>> params = sw.SequenceParams(positive_seq="0: a red circle\\n6: a blue square")
    >>> sw.seed_sequence(params)[:4]
    [1, 2, 1, 2]
"""

from . import interp, testing
from .engine import Frame, SequenceSampler
from .keyframes import parse_keyframes
from .models import load_pipeline
from .params import PARAM_SPECS, SequenceParams
from .plan import LoopPlan, plan_sequence, seed_sequence
from .session import Branch, Session
from .widgets import Studio

__version__ = "0.1.0"

__all__ = [
    "PARAM_SPECS",
    "Branch",
    "Frame",
    "LoopPlan",
    "SequenceParams",
    "SequenceSampler",
    "Session",
    "Studio",
    "interp",
    "load_pipeline",
    "parse_keyframes",
    "plan_sequence",
    "seed_sequence",
    "testing",
]
