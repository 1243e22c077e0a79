"""Every notebook in ``notebooks/`` runs top to bottom in a fresh kernel.

Cells tagged ``skip-execution`` (those that need a GPU or the Hugging Face hub, in notebook 06)
are skipped, as nbmake does. Each notebook runs in a temporary working directory, so files it
writes stay out of the repository, with one OpenMP thread (the models are tiny and CI machines
are shared).
"""

import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import make_links  # noqa: E402  (docs/make_links.py writes the install cell)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SKIP_TAG = "skip-execution"
CELL_TIMEOUT_S = 300  # generous: a shared 2-core CI machine can be slow
NOTEBOOK_BUDGET_S = 240  # a teaching notebook on the toy model runs well under a minute


def kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # The kernelspec runs "python": make it this interpreter, with seqwidgets installed.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        skip_cells_with_tag=SKIP_TAG,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.perf_counter()
    client.execute(env=kernel_env())
    elapsed = time.perf_counter() - started
    assert elapsed < NOTEBOOK_BUDGET_S, f"{path.name} took {elapsed:.0f} s"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    """Outputs are stripped; the first code cell is the Colab setup (install + widget manager)."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        assert not cell.get("outputs"), f"{path.name}: a cell has outputs; strip them"
        assert cell.get("execution_count") is None, f"{path.name}: execution counts left in"
    # The first code cell is the same guarded install cell everywhere, with pyproject's address.
    assert code_cells[0].source == make_links.install_cell(make_links.repository_url()), (
        f"{path.name}: the first code cell is not the Colab install cell; "
        "run python docs/make_links.py"
    )


def test_the_install_cell_runs_only_on_colab_and_keeps_what_colab_has():
    cell = make_links.install_cell("https://github.com/someone/seqwidgets")
    lines = cell.splitlines()
    guard = lines.index('if "google.colab" in sys.modules:')
    # Everything that acts (pip, the widget manager) is inside the guard.
    body = [line for line in lines[guard + 1 :] if line.strip()]
    assert all(line.startswith("    ") for line in body)
    assert "pip" in cell and "enable_custom_widget_manager()" in cell
    # pip's default strategy keeps installed requirements (Colab's torch): no upgrade flags,
    # and nothing but seqwidgets named on the command line.
    command = next(line for line in lines if '"pip", "install"' in line)
    package = next(line for line in lines if line.strip().startswith("package = "))
    assert command.endswith('"--quiet", package], check=True)')
    assert package.strip() == 'package = f"seqwidgets{EXTRAS} @ git+{REPO_URL}"'
    for flag in ("--upgrade", "-U", "--force-reinstall", "torch"):
        assert flag not in command
    # Outside Colab the cell only sets REPO_URL.
    namespace: dict = {}
    exec(compile(cell, "install-cell", "exec"), namespace)
    assert namespace["REPO_URL"] == "https://github.com/someone/seqwidgets"
    assert namespace["EXTRAS"] == ""  # the big-model extras only when asked for


def test_gpu_and_hub_cells_are_tagged():
    """A cell that loads a model from the hub or needs CUDA is skipped in CI."""
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "code" or SKIP_TAG in cell.metadata.get("tags", []):
                continue
            source = cell.source
            for needle in (
                'load_pipeline("stable',
                'load_pipeline("stabilityai',
                "from_pretrained(",
                '"cuda"',
            ):
                assert needle not in source, f"{path.name}: untagged cell uses {needle}"
