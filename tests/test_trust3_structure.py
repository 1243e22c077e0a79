"""Structure, readability and the studio's edges (issue 22, round 3)."""

from __future__ import annotations

from seqwidgets import comfy
from seqwidgets.params import PARAM_SPECS


def test_the_codec_knows_the_nodes_int_widgets_as_the_settings_do():
    # comfy.py no longer imports params (no cycle): its copy of the node's INT inputs and of
    # the "as the node does" defaults must stay what SequenceParams says.
    ints = tuple(name for name in comfy.NODE_WIDGETS if PARAM_SPECS[name].kind == "int")
    assert ints == comfy.INT_WIDGETS
    for name, (default, _) in comfy.DROPPED.items():
        assert PARAM_SPECS[name].default == default, name
