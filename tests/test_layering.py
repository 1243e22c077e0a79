"""Imports run one way: each module imports only its own layer or the layers below it.

The layers are those of the README's layout section. Every ``import`` and ``from ... import`` in
the package counts, wherever it is: inside functions (a deferred import still ties the modules
together) and under ``if TYPE_CHECKING:`` (a type-only import still says the lower module knows
the higher one). No two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

import seqwidgets

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seqwidgets"

# Lowest first. Names are relative to the package; "x.*" matches x's submodules. A name with no
# module behind it is one the layout plans for (it is placed already, so it lands in its layer).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("_version", "_lazy", "_loading", "_io", "errors", "choices", "device")),
    ("settings", ("keyframes", "params", "comfy", "presets")),
    (
        "numerics",
        (
            "interp",
            "schedules",
            "samplers",
            "uni_pc",
            "dpm_solver",
            "tiny_decoders",
            "families",
            "plan",
        ),
    ),
    (
        "model",
        (
            "frames",
            "conditioning",
            "denoiser",
            "decode",
            "decode_process",
            "metrics",
            "coherence",
            "offload",
            "engine",
        ),
    ),
    ("pipelines", ("testing", "quantize", "models", "models.*")),
    ("session", ("export", "session", "session_io", "plots")),
    ("widgets", ("widgets", "widgets.*")),
    ("entry points", ("cli",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" is the package root


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, source: str) -> set[str]:
    """The package modules ``name`` imports ("" for the package root itself).

    Example:
        >>> sorted(imports_of("session", "from . import export\\nfrom .engine import Frame"))
        ['engine', 'export']
    """
    is_package = name == "" or MODULES.get(name, Path()).name == "__init__.py"
    here = name.split(".") if name else []
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
            found.update(_inside(t) for t in targets if t.split(".")[0] == "seqwidgets")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "seqwidgets":
                target = _inside(node.module)
            else:
                continue
            for alias in node.names:
                # `from . import export` imports the module export; `from . import x` of a
                # plain name imports the module that holds it.
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in MODULES else target)
    found.discard(name)
    return found


def _inside(dotted: str) -> str:
    return dotted.partition(".")[2]


def layer_of(name: str) -> int:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return index
    raise LookupError(name)


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path.read_text("utf-8")) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    unplaced = []
    for name in MODULES:
        if name == "":
            continue
        try:
            layer_of(name)
        except LookupError:
            unplaced.append(name)
    assert not unplaced, f"add these modules to a layer in LAYERS and the README: {unplaced}"


def test_imports_go_down_never_up():
    upward = []
    for name, targets in graph().items():
        if name == "":
            continue  # the package root sits above everything
        for target in targets:
            if target == "":
                upward.append(f"{name} imports the package root (import the module instead)")
            elif layer_of(target) > layer_of(name):
                upward.append(
                    f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                    f"({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = {name: targets - {""} for name, targets in graph().items() if name}
    cycles = [sorted(c) for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import_in_a_function():
    source = "def f():\n    from seqwidgets.session import Session\n"
    assert imports_of("plan", source) == {"session"}
    assert layer_of("session") > layer_of("plan")


def test_the_checker_counts_type_only_imports():
    hidden = "if TYPE_CHECKING:\n    from .engine import Frame\nfrom . import __version__\n"
    assert imports_of("metrics", hidden) == {"engine", ""}


def test_the_checker_sees_a_cycle_through_a_third_module():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [c for c in _strongly_connected(edges) if len(c) > 1] == [{"a", "b", "c"}]


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    # Tarjan's algorithm, iterative enough for a package of this size.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in edges:
        if node not in index:
            visit(node)
    return components


def test_the_readme_layout_names_the_layers_in_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1]
    positions = [layout.find(f"{title}:") for title, _ in LAYERS]
    assert -1 not in positions, [t for (t, _), p in zip(LAYERS, positions, strict=True) if p == -1]
    assert positions == sorted(positions, reverse=True), "the README lists layers top first"


def _readme_layout() -> dict[str, str]:
    """The README layout's modules, each with the layer heading it is listed under."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    titles = {title for title, _ in LAYERS}
    placed: dict[str, str] = {}
    heading = None
    for line in block.splitlines():
        words = line.split()
        if not words or not line.startswith("  ") or line.startswith(" " * 5):
            continue  # the root line, a continuation, or a blank
        first = " ".join(words[:2]) if words[0] == "entry" else words[0]
        if first.rstrip(":") in titles and first.endswith(":"):
            heading = first.rstrip(":")
        elif heading and first.endswith((".py", "/")):
            placed[first.removesuffix(".py").removesuffix("/")] = heading
    return placed


def test_the_readme_lists_each_module_under_its_layer():
    placed = _readme_layout()
    assert placed, "no module found in the README's layout"
    wrong = [
        f"{module} is listed under {heading}, LAYERS puts it in {LAYERS[layer_of(module)][0]}"
        for module, heading in placed.items()
        if module != "__init__" and LAYERS[layer_of(module)][0] != heading
    ]
    assert not wrong, "\n".join(wrong)


# -- what an import costs ------------------------------------------------------------------------

HEAVY = ("torch", "diffusers", "transformers", "ipywidgets", "ipycanvas", "matplotlib")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import seqwidgets",
        "import seqwidgets.params",
        "import seqwidgets.cli",
        "from seqwidgets.cli import build_parser; build_parser().format_help()",
        "import seqwidgets as sw; sw.SequenceParams(seed=3).to_dict()",
        "import seqwidgets.widgets.launch",
    ],
)
def test_settings_and_the_command_line_load_without_torch_or_widgets(statement):
    assert _loaded_after(statement) == set()


def test_the_import_check_sees_torch_when_it_is_loaded():
    # The same check on modules that do need torch and the widgets: it can fail.
    assert "torch" in _loaded_after("import seqwidgets.engine")
    assert "ipywidgets" in _loaded_after("from seqwidgets import Studio")


def test_the_package_root_lists_what_it_loads_lazily():
    exported = set(seqwidgets.__all__) - {"__version__"}
    assert exported == set(seqwidgets._EXPORTS)
    assert exported <= set(dir(seqwidgets))
    for name in sorted(exported):
        assert getattr(seqwidgets, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        seqwidgets.no_such_name  # noqa: B018
