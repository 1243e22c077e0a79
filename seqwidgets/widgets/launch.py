"""Open the studio for a newcomer: write a ready notebook, then start JupyterLab (or Voilà) on it.

This backs the ``seqwidgets studio`` command. The notebook is written fresh (the installed
package carries no notebooks), to a folder of the user's choosing, and is never overwritten:
an existing one is opened as it is, with whatever the user changed in it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .. import _io

__all__ = ["launch", "studio_notebook", "voila_available", "write_notebook"]

NOTEBOOK_NAME = "seqwidgets-studio.ipynb"


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def studio_notebook(model: str | None = None, load_options: dict | None = None) -> dict:
    """The notebook (nbformat 4, as a dict): a title cell and one cell that shows the studio.

    Args:
        model: passed to ``seqwidgets.load_pipeline`` (``None``: the shipped toy model).
        load_options: more ``load_pipeline`` arguments, written into the cell as given:
            ``offload``, ``quantize``, ``transformer_file``, ``free_text_encoders``.

    Example:
        >>> cell = studio_notebook("owner/model", {"quantize": "4bit"})["cells"][1]["source"]
        >>> [line.strip() for line in cell if "load_pipeline" in line]
        ["pipe = sw.load_pipeline('owner/model', quantize='4bit')"]
    """
    arguments = "".join(f", {key}={value!r}" for key, value in (load_options or {}).items())
    intro = (
        "# KSampler Sequence studio\n\n"
        "Write keyframe prompts (`loop: prompt`, one per line) and press **Run**: each loop's "
        "frame lands on the timeline as soon as it is done. Click a frame (drag to scrub, arrow "
        "keys to step), change a setting and press **Branch** to continue from that frame "
        "without recomputing what came before; **Re-run** recomputes the selected loop."
    )
    code = (
        "import seqwidgets as sw\n"
        "from seqwidgets.widgets import Studio\n\n"
        f"pipe = sw.load_pipeline({model!r}{arguments})\n"
        "studio = Studio(pipe, params=sw.SequenceParams(\n"
        '    positive_seq="0: a red circle\\n6: a blue square\\n12: a green triangle",\n'
        "    sequence_loop_count=14, steps=8, denoise_seq=0.6,\n"
        "))\n"
        "studio"
    )
    return {
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": _lines(intro)},
            {
                "cell_type": "code",
                "id": "studio",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": _lines(code),
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebook(
    folder: str | Path = ".", model: str | None = None, load_options: dict | None = None
) -> Path:
    """Write ``seqwidgets-studio.ipynb`` into ``folder`` unless it exists; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NOTEBOOK_NAME
    text = json.dumps(studio_notebook(model, load_options), indent=1) + "\n"
    with contextlib.suppress(FileExistsError):  # a user's notebook is kept as it is
        _io.write_bytes(path, text.encode("utf-8"))
    return path


def launch(
    folder: str | Path = ".",
    model: str | None = None,
    *,
    voila: bool = False,
    port: int | None = None,
    dry_run: bool = False,
    load_options: dict | None = None,
) -> list[str]:
    """Write the studio notebook and open it in JupyterLab (or Voilà); return the command.

    Args:
        folder: where the notebook goes (default: the current folder).
        model: the pipeline to load (see `studio_notebook`).
        voila: serve the notebook as an app with Voilà (``pip install voila``) instead.
        port: the server's port (default: the server's own choice).
        dry_run: only write the notebook and return the command (nothing is checked or run).
        load_options: more ``load_pipeline`` arguments for the notebook (`studio_notebook`).

    Raises:
        `RuntimeError`: JupyterLab (or Voilà) is not installed.
        `subprocess.CalledProcessError`: the server exited with a non-zero status (it refused to
            start, e.g. as root without ``--allow-root``; it printed why).
    """
    path = write_notebook(folder, model, load_options)
    tool = "voila" if voila else "jupyterlab"
    if not dry_run and importlib.util.find_spec(tool) is None:
        raise RuntimeError(f"the studio needs {tool}: pip install {tool}")
    if voila:
        command = [sys.executable, "-m", "voila", str(path)]
    else:
        command = [sys.executable, "-m", "jupyterlab", str(path)]
    if port is not None:
        command.append(f"--port={port}")
    if not dry_run:
        subprocess.run(command, check=True)
    return command


def voila_available() -> bool:
    """Whether Voilà is installed (the CLI offers ``--voila`` then)."""
    return importlib.util.find_spec("voila") is not None or shutil.which("voila") is not None
