"""The docs tell one story: generated tables in step with their sources, figures that come from
the results they cite, and a README whose first screen holds the two commands and where to go."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_tables = _load("make_tables")


def test_generated_tables_are_in_step_with_code_and_results():
    stale = [
        path.relative_to(ROOT)
        for path, text in make_tables.generated().items()
        if path.read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run python docs/make_tables.py"


def test_every_performance_row_comes_from_a_result_that_is_there():
    table = make_tables.performance_table()
    assert "Not measured yet" not in table, table.splitlines()[-1]
    cited = set(re.findall(r"`(\w+\.json)` \|$", table, flags=re.M))
    assert cited == {f"{name}.json" for name in make_tables._PERFORMANCE_ROWS}
    for name in cited:
        json.loads((ROOT / "benchmarks" / "results" / name).read_text(encoding="utf-8"))


def test_a_changed_result_changes_the_table(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    source = json.loads((ROOT / "benchmarks/results/toy.json").read_text(encoding="utf-8"))
    source["median_s"]["euler"] = 1.234
    (results / "toy.json").write_text(json.dumps(source), encoding="utf-8")
    table = make_tables.performance_table(results)
    assert "**1.23 s**" in table
    assert "Not measured yet: batched_branches" in table


def test_a_missing_block_is_named():
    with pytest.raises(ValueError, match="no block for table 'inputs'"):
        make_tables.with_table("no markers here", "inputs", "x", "docs/reference.md")


def test_the_readme_first_screen_has_both_commands_and_where_to_go_next():
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:50])
    assert "**Render a sequence**" in first_screen
    assert "**Run every test**" in first_screen
    assert "docs/images/studio.png" in first_screen
    assert "**Where next:**" in first_screen


def test_binder_and_colab_are_one_story():
    # The links block is the one place that says where the notebooks open; no other page may
    # claim they run on Binder or Colab today.
    claims = re.compile(r"(works|runs?|opens?) on Binder|on Binder or Colab")
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        text = re.sub(r"<!-- links:.*?<!-- /links -->", "", text, flags=re.S)
        assert not claims.search(text), f"{page.name}: {claims.search(text).group(0)!r}"


def test_doc_links_point_at_files_that_exist():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
