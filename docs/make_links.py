"""Write every link to the repository from its one address, ``[project.urls] Repository`` in
``pyproject.toml``: the README's Binder / Colab badges, docs/teaching.md's notebook table and the
first code cell of every notebook (the guarded Colab install cell, which holds ``REPO_URL``).

    python docs/make_links.py           # rewrite what is out of date, name each file written
    python docs/make_links.py --check   # change nothing; exit 1 naming the files out of date

While the address still holds the ``<org>`` placeholder the repository is not public yet: the
README then tells readers how to open the notebooks locally instead of showing badges that lead
nowhere, and the tables have no Colab column.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
START = "<!-- links: written by docs/make_links.py from pyproject.toml; edit the address there -->"
END = "<!-- /links -->"

INSTALL_CELL = """\
# On Colab: install seqwidgets (torch and everything else Colab already has stay as they are)
# and turn on the custom widget manager the studio's canvas needs. Anywhere else (Binder, your
# own Jupyter) this cell does nothing. REPO_URL is the seqwidgets repository: change it if you
# work from a fork.
import sys

REPO_URL = "{url}"
# "[quant]" adds 4-bit / 8-bit quantization and GGUF transformers, for the big models of
# notebook 06 on a T4 (15 GB) or L4 (24 GB); see docs/big_models.md.
EXTRAS = ""

if "google.colab" in sys.modules:
    import subprocess

    package = f"seqwidgets{{EXTRAS}} @ git+{{REPO_URL}}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)
    from google.colab import output

    output.enable_custom_widget_manager()"""

# A row of docs/teaching.md's notebook table: its title links the notebook, then what it teaches.
# The rows are written by hand; this script writes only the header and the Colab column.
TABLE_ROW = re.compile(
    r"^\| \[(?P<title>[^\]]+)\]\(\.\./notebooks/(?P<notebook>[^)]+\.ipynb)\) \| (?P<what>[^|]*?) \|"
)


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` of ``pyproject``.

    Example:
        >>> repository_url().endswith("/seqwidgets")
        True
    """
    urls = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("urls", {})
    if "Repository" not in urls:
        raise ValueError(f"{pyproject}: [project.urls] needs a Repository address")
    return urls["Repository"]


def is_published(url: str) -> bool:
    """False while the address holds a placeholder such as ``<org>``.

    Example:
        >>> is_published("https://github.com/<org>/seqwidgets"), is_published("https://github.com/a/b")
        (False, True)
    """
    return "<" not in url


def github_path(url: str) -> str:
    """``owner/name`` of a GitHub address.

    Example:
        >>> github_path("https://github.com/someone/seqwidgets.git")
        'someone/seqwidgets'
    """
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", url)
    if match is None:
        raise ValueError(f"Repository: {url!r} is not a https://github.com/owner/name address")
    return match.group(1)


def colab_url(url: str, notebook: str) -> str:
    return f"https://colab.research.google.com/github/{github_path(url)}/blob/main/notebooks/{notebook}"


def binder_url(url: str, notebook: str) -> str:
    return f"https://mybinder.org/v2/gh/{github_path(url)}/HEAD?labpath=notebooks%2F{notebook}"


def readme_block(url: str) -> str:
    """The README's lines between the markers: badges, or how to open the notebooks locally."""
    first = "01_quickstart.ipynb"
    if is_published(url):
        return (
            f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url(url, first)})\n"
            "[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(url, first)})"
        )
    return (
        "**The notebooks** open locally: after the Quickstart's install, `pip install jupyterlab "
        "&& jupyter lab notebooks/01_quickstart.ipynb`, or `seqwidgets studio` for a ready studio "
        "notebook. They are set up for Binder (`binder/`) and Colab (the first cell), whose "
        "badges appear here once the repository has a public address."
    )


def teaching_block(url: str, current: str) -> str:
    """docs/teaching.md's table of notebooks: the rows of ``current`` (the block as it is), with
    a Colab link per notebook once the repository is published.

    Example:
        >>> row = "| [01 · Quickstart](../notebooks/01_quickstart.ipynb) | the studio |"
        >>> print(teaching_block("https://github.com/a/b", row).splitlines()[-1])
        | [01 · Quickstart](../notebooks/01_quickstart.ipynb) | the studio | [Colab](https://colab.research.google.com/github/a/b/blob/main/notebooks/01_quickstart.ipynb) |
    """
    published = is_published(url)
    lines = [
        "| notebook | what you learn |" + (" |" if published else ""),
        "|---|---|" + ("---|" if published else ""),
    ]
    for line in current.splitlines():
        row = TABLE_ROW.match(line)
        if row is None:
            continue  # the header, or the separator
        title, notebook, what = row.group("title", "notebook", "what")
        text = f"| [{title}](../notebooks/{notebook}) | {what} |"
        if published:
            text += f" [Colab]({colab_url(url, notebook)}) |"
        lines.append(text)
    return "\n".join(lines)


def table_notebooks(root: Path = ROOT) -> list[str]:
    """The notebooks docs/teaching.md's table lists, in order."""
    text = (root / "docs" / "teaching.md").read_text(encoding="utf-8")
    return [m.group("notebook") for m in map(TABLE_ROW.match, text.splitlines()) if m]


def install_cell(url: str) -> str:
    """The first code cell of every notebook."""
    return INSTALL_CELL.format(url=url)


_BLOCK = re.compile(re.escape(START) + r"\n(.*?)\n" + re.escape(END), re.DOTALL)


def _block(text: str, where: Path) -> str:
    found = _BLOCK.search(text)
    if found is None:
        raise ValueError(f"{where}: no {START!r} ... {END!r} block to fill")
    return found.group(1)


def _with_block(text: str, block: str, where: Path) -> str:
    _block(text, where)  # it must be there
    return _BLOCK.sub(lambda _: f"{START}\n{block}\n{END}", text, count=1)


def _notebook_text(path: Path, url: str) -> str:
    notebook = nbformat.read(path, as_version=4)
    cell = install_cell(url)
    code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    if code and "google.colab" in notebook.cells[code[0]].source:
        notebook.cells[code[0]].source = cell
    else:  # no install cell yet: it goes first, after the title cell if there is one
        at = 1 if notebook.cells and notebook.cells[0].cell_type == "markdown" else 0
        new = nbformat.v4.new_code_cell(cell)
        new.id = f"install-{path.stem[:2]}"
        notebook.cells.insert(at, new)
    return nbformat.writes(notebook) + "\n"


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every file this script writes, with the text it should hold."""
    url = repository_url(root / "pyproject.toml")
    readme, teaching = root / "README.md", root / "docs" / "teaching.md"
    readme_text = readme.read_text(encoding="utf-8")
    teaching_text = teaching.read_text(encoding="utf-8")
    table = teaching_block(url, _block(teaching_text, teaching))
    files = {
        readme: _with_block(readme_text, readme_block(url), readme),
        teaching: _with_block(teaching_text, table, teaching),
    }
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        files[path] = _notebook_text(path, url)
    return files


def out_of_date(root: Path = ROOT) -> list[Path]:
    """The files whose links differ from what ``pyproject.toml`` says."""
    return [p for p, text in generated(root).items() if p.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = out_of_date()
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run python docs/make_links.py)")
        return 1 if stale else 0
    for path, text in generated().items():
        if path in stale:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
