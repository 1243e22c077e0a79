"""Each model family in one place, and the 2026 families on offline stand-ins.

Expected sigmas are computed here in float64 numpy from ComfyUI's formulas
(``comfy/model_sampling.py``: ``ModelSamplingDiscreteFlow``, ``ModelSamplingFlux``) with each
family's constants from ``comfy/supported_models.py``, never by calling the code under test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import seqwidgets

PACKAGE = Path(seqwidgets.__file__).parent


# -- one place per family ---------------------------------------------------------------------


def _family_name_tests(path: Path) -> list[str]:
    """Comparisons in ``path`` that test a family's name (``family.name == "sdxl"``, ``in``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = [s for s in sides if isinstance(s, ast.Attribute) and s.attr == "name"]
            if names and any(
                isinstance(s, ast.Attribute) and "family" in ast.unparse(s) for s in names
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Subscript) and "TAESD_MODELS[" in ast.unparse(node):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_engine_conditioning_denoiser_and_decode_never_test_a_family_name():
    # Each Family owns its prompt encoding, network call, latent format and previews; the
    # modules that use it ask it and never branch on which family it is.
    for module in ("engine.py", "conditioning.py", "denoiser.py", "decode.py"):
        assert _family_name_tests(PACKAGE / module) == [], module


def test_the_name_test_check_finds_a_name_test(tmp_path):
    # The check above must be able to fail: it finds the branch that engine.py used to have.
    source = 'if self.family.name == "sdxl":\n    pass\nx = family.name in ("a", "b")\n'
    (tmp_path / "m.py").write_text(source)
    assert len(_family_name_tests(tmp_path / "m.py")) == 2
