"""What a newcomer meets first: the README's commands, the links, the CPU threads, load errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqwidgets import device

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import make_links  # noqa: E402


def _readme_commands() -> dict[str, str]:
    """The README's Quickstart commands by the bold label above each code block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    # A bold label, then text without another bold label, then the bash block.
    label_then_code = r"\*\*([^*]+)\*\*(?:(?!\*\*).)*?```bash\n(.*?)\n```"
    blocks = re.findall(label_then_code, quickstart, re.DOTALL)
    return {label.strip(): code.strip() for label, code in blocks}


# -- the README's commands and CI -----------------------------------------------------------------


def test_ci_runs_the_readmes_test_command_exactly():
    commands = _readme_commands()
    test_command = commands["Run every test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
    assert "--all" in test_command  # CI runs the notebooks, slow and browser tests too
    # The CPU wheel index is for users' machines; CI cannot reach it.
    assert "download.pytorch.org" not in ci
    assert 'if [ "$status" -eq 5 ]' in ci  # no tests collected is a failure


# Stand-ins for the tools .ci/run calls: they log their arguments and exit as told.
CI_STUBS = {
    "python3": 'if [ "$2" = venv ]; then mkdir -p "$3/bin"; '
    'echo "export PATH=$STUBS:\\$PATH" > "$3/bin/activate"; fi',
    "python": 'echo "python $*" >> "$LOG"; if [ "$2" = pytest ]; then exit "$PYTEST_STATUS"; fi',
    "pip": 'echo "pip $*" >> "$LOG"',
    "ruff": 'echo "ruff $*" >> "$LOG"; exit "$RUFF_STATUS"',
    "chromium": "true",
}


@pytest.mark.parametrize(
    ("pytest_status", "ruff_status", "expected"),
    [(0, 0, 0), (5, 0, 1), (1, 0, 1), (0, 1, 1), (2, 1, 2)],
)
def test_ci_fails_when_the_tests_or_the_linters_fail_or_no_test_ran(
    tmp_path, pytest_status, ruff_status, expected
):
    stubs, repo = tmp_path / "stubs", tmp_path / "repo"
    stubs.mkdir()
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    for name, body in CI_STUBS.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    log = tmp_path / "log"
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "STUBS": str(stubs),
        "LOG": str(log),
        "PYTEST_STATUS": str(pytest_status),
        "RUFF_STATUS": str(ruff_status),
    }
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True)
    assert done.returncode == expected, done.stderr
    ran = log.read_text().splitlines()
    # What the README's command runs after creating and activating its virtual environment.
    steps = _readme_commands()["Run every test"].split(". .venv/bin/activate && ", 1)[1]
    assert steps.replace('"', "") == " && ".join(ran[:3])
    if pytest_status != 5:  # (no test collected stops CI at once)
        assert ran[-2:] == ["ruff check .", "ruff format --check ."]


def test_readme_commands_do_the_whole_set_up_and_name_the_cpu_build():
    commands = _readme_commands()
    for label in ("Render a sequence", "Run every test"):
        steps = commands[label].split(" && ")
        assert steps[:3] == [
            "python3 -m venv .venv",
            ". .venv/bin/activate",
            "pip install torch==2.13.0",  # before the package: a bare torch pulls a CUDA build
        ], label
    # On a machine without an NVIDIA GPU: the CPU build from PyTorch's index, pinned the same.
    cpu = commands["Which torch"]
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu


def _collected(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return [line for line in done.stdout.splitlines() if "::" in line]


@pytest.mark.slow  # three pytest processes
def test_the_fast_loop_leaves_out_notebooks_and_the_browser_test_and_all_runs_them():
    files = ["tests/test_notebooks.py", "tests/test_browser.py"]
    fast, everything = _collected(*files), _collected(*files, "--all")
    notebooks = len(list((ROOT / "notebooks").glob("*.ipynb")))
    runs = [test for test in everything if "runs_top_to_bottom" in test]
    assert (
        len(runs) == notebooks and "tests/test_browser.py::test_studio_in_jupyterlab" in everything
    )
    assert set(fast) == set(everything) - {
        *runs,
        "tests/test_browser.py::test_studio_in_jupyterlab",
    }
    assert _collected(*files, "-m", "notebook") == runs


# -- links from pyproject.toml --------------------------------------------------------------------


def test_links_are_in_step_with_pyproject():
    assert make_links.out_of_date() == [], "run python docs/make_links.py"


def test_publishing_means_editing_one_line(tmp_path):
    for name in ("README.md", "pyproject.toml", "docs/teaching.md", "notebooks"):
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    pyproject = tmp_path / "pyproject.toml"
    url = make_links.repository_url(pyproject)
    pyproject.write_text(
        pyproject.read_text().replace(url, "https://github.com/someone/seqwidgets")
    )
    stale = make_links.out_of_date(tmp_path)
    assert len(stale) == 2 + len(list((tmp_path / "notebooks").glob("*.ipynb")))
    files = make_links.generated(tmp_path)
    readme = files[tmp_path / "README.md"]
    assert "https://mybinder.org/v2/gh/someone/seqwidgets/HEAD?labpath=notebooks%2F01" in readme
    assert "colab.research.google.com/github/someone/seqwidgets/blob/main/notebooks/01" in readme
    teaching = files[tmp_path / "docs" / "teaching.md"]
    notebooks = len(list((ROOT / "notebooks").glob("*.ipynb")))
    assert teaching.count("colab.research.google.com/github/someone/seqwidgets") == notebooks
    for path, text in files.items():
        if path.suffix == ".ipynb":
            first = next(
                c for c in nbformat.reads(text, as_version=4).cells if c.cell_type == "code"
            )
            assert 'REPO_URL = "https://github.com/someone/seqwidgets"' in first.source
        assert "<org>" not in text


def test_every_notebook_has_a_row_in_the_teaching_table():
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(make_links.table_notebooks()) == notebooks


def test_an_unpublished_address_tells_how_to_open_the_notebooks_locally():
    block = make_links.readme_block("https://github.com/<org>/seqwidgets")
    assert "jupyter lab notebooks/01_quickstart.ipynb" in block
    assert "mybinder.org" not in block and "colab.research" not in block


def test_a_repository_address_that_is_not_github_is_refused():
    with pytest.raises(ValueError, match="Repository"):
        make_links.github_path("https://gitlab.com/someone/seqwidgets")


# -- CPU threads ----------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=512))
def test_default_threads_leave_half_the_cores_free(cores):
    threads = device.cpu_threads(None, environ={}, cores=cores)
    assert 1 <= threads <= max(1, cores // 2)


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=64))
def test_an_explicit_count_beats_the_environment(requested, configured):
    environ = {device.ENV_VAR: str(configured)}
    assert device.cpu_threads(requested, environ=environ) == requested
    assert device.cpu_threads(None, environ=environ) == configured


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_setting_names_the_variable(bad):
    with pytest.raises(ValueError, match=device.ENV_VAR):
        device.cpu_threads(None, environ={device.ENV_VAR: bad})


def test_loading_for_the_cpu_applies_the_default_once(monkeypatch):
    import torch

    import seqwidgets as sw

    before = torch.get_num_threads()
    monkeypatch.setattr(device, "_applied", None)
    monkeypatch.setenv(device.ENV_VAR, "1")
    try:
        torch.set_num_threads(2)
        sw.load_pipeline("tiny-random", device="cpu")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)  # the user's later choice is kept by the next load
        sw.load_pipeline("tiny-random", device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# -- loading errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        ("We couldn't connect to 'https://huggingface.co'", "the hub could not be reached"),
        ("outgoing traffic has been disabled", "the hub could not be reached"),
        ("404 Client Error. Repository Not Found for url", "no such model on the Hugging Face"),
        ("401 Client Error: access to model is restricted (gated)", "accept the model's licence"),
    ],
)
def test_a_hub_model_that_cannot_load_says_why_in_one_line(monkeypatch, raised, expected):
    import diffusers

    import seqwidgets as sw

    def fail(*args, **kwargs):
        raise OSError(raised + ".\nSee the stacktrace above.")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", fail)
    with pytest.raises(OSError) as info:
        sw.load_pipeline("owner/some-model", device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("owner/some-model: ") and expected in message


@pytest.mark.slow
def test_the_readmes_script_example_runs_and_saves_one_png_per_loop(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## In a script\n\n```python\n(.*?)```", text, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md: In a script", "exec"), namespace)
    assert [f.index for f in namespace["frames"]] == list(range(12))
    assert sorted(p.name for p in tmp_path.glob("loop_*.png"))[-1] == "loop_11.png"


@pytest.mark.slow
def test_the_startup_benchmark_measures_each_command_against_a_bare_python(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_startup

    result = bench_startup.main(["--repeats", "1", "--json", str(tmp_path / "startup.json")])
    assert set(result["median_s"]) == set(bench_startup.COMMANDS)
    assert result["ratio_to_python"]["python -c pass"] == 1.0
    assert (tmp_path / "startup.json").exists()
