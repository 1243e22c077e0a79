"""The studio in a real browser: JupyterLab on 127.0.0.1 driven by the system Chromium.

Opens ``notebooks/01_quickstart.ipynb`` on the tiny random pipeline, runs it, clicks Run, waits
for the thumbnails on the canvas (reading its pixels), clicks a frame, steps with the arrow keys,
branches with other keyframes, clicks frames of each row and reads the keyframe text the panel
shows, reads the metrics strip's pixels (a line per row, in the row's colour), opens the Compare
tab and reads the settings that differ, turns Live on and drags the denoise_seq slider with the
mouse (the DRAFT row's pixels appear, and change with a second drag), edits a field and sees it
highlighted, reloads the page
(Python redraws the canvases: the browser keeps no pixels), and keeps a screenshot (``$SEQWIDGETS_ARTIFACTS`` or pytest's
``tmp_path``).

Needs ``/usr/bin/chromium``, the ``playwright`` wheel (never ``playwright install``: the system
Chromium is used) and ``jupyterlab``; skipped otherwise.

Also a script, for the README screenshot with the toy model::

    python tests/test_browser.py --model toy --loops 14 --out docs/images/studio.png

and ``--live-out PATH`` for a screenshot of a live draft (``docs/images/studio_live.png``: ``--loops 10``,
saved as 256 colours).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 420  # seconds for the whole browser session (about 30 s on two CPU cores)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The quickstart notebook's keyframes, and the branch's (a new prompt from loop 10).
RUN_PROMPTS = "0: a red circle\n6: a blue square\n12: a green triangle"
BRANCH_PROMPTS = "0: a red circle\n6: a green triangle\n10: an orange circle"
# Where the studio's timeline draws (TimelineLayout defaults): gutter, axis, row height, column.
GUTTER, AXIS, THUMB, GAP = 104, 26, 56, 6
COL_W, ROW_H = THUMB + GAP, THUMB + GAP + 4


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    for module in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {module})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, model: str | None):
    """A JupyterLab server on 127.0.0.1 serving ``root``; yields its base URL and token."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = root / ".lab-settings"
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True})
    )
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
        OMP_NUM_THREADS="1",
        # The kernel imports the seqwidgets of this checkout, whatever is installed.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    if model is None:
        env.pop("SEQWIDGETS_MODEL", None)
    else:
        env["SEQWIDGETS_MODEL"] = model
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI runners often run as root
    log = open(root / "jupyterlab.log", "wb")  # noqa: SIM115 (closed in the finally)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "JupyterLab did not start:\n"
                        + (root / "jupyterlab.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


# JavaScript run in the page: statistics of the timeline's thumbnail layer.
_CELL_COLORS = """([x, y, w, h]) => {
  const canvas = document.querySelector('.sw-timeline canvas');
  if (!canvas || canvas.width < x + w || canvas.height < y + h) return -1;
  const data = canvas.getContext('2d').getImageData(x, y, w, h).data;
  const colors = new Set();
  for (let i = 0; i < data.length; i += 4) colors.add((data[i] << 16) | (data[i+1] << 8) | data[i+2]);
  return colors.size;
}"""


# The colours that fill 12 pixels or more of the metrics strip's lines layer, as "#rrggbb"
# (a point is a 4x4 square: the anti-aliased shades of the lines stay out).
_STRIP_COLORS = """() => {
  const canvas = document.querySelector('.sw-metrics-strip canvas');
  if (!canvas || !canvas.width) return [];
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = new Map();
  for (let i = 0; i < data.length; i += 4) {
    const c = '#' + ((1 << 24) | (data[i] << 16) | (data[i+1] << 8) | data[i+2]).toString(16).slice(1);
    counts.set(c, (counts.get(c) || 0) + 1);
  }
  return [...counts].filter(([c, n]) => n >= 12).map(([c, n]) => c);
}"""

# A checksum of a timeline cell's pixels: it changes when the cell shows another picture.
_CELL_SUM = """([x, y, w, h]) => {
  const canvas = document.querySelector('.sw-timeline canvas');
  if (!canvas || canvas.width < x + w || canvas.height < y + h) return -1;
  const data = canvas.getContext('2d').getImageData(x, y, w, h).data;
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum = (sum * 31 + data[i]) % 1000000007;
  return sum;
}"""

# How many of the Compare tab's images show a picture.
_COMPARE_IMAGES = """() => [...document.querySelectorAll('.sw-compare img')]
  .filter(img => img.naturalWidth > 0).length"""


def _tab(page, title: str):
    """The studio's tab titled ``title`` ("Preview" or "Compare")."""
    return page.locator(".sw-studio .lm-TabBar-tab", has_text=title).first


_KERNEL_READY = """() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = widget && widget.sessionContext && widget.sessionContext.session &&
    widget.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""


def _cell(row: int, col: int) -> list[int]:
    return [GUTTER + col * COL_W, AXIS + row * ROW_H + 2, THUMB, THUMB]


def _cell_error(page) -> str:
    """The text of a traceback in the notebook's outputs ('' when there is none)."""
    errors = page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ", .jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']"
    )
    for i in range(errors.count()):
        text = errors.nth(i).inner_text()
        if "Traceback" in text:
            return text[-3000:]
    return ""


def _info(page) -> str:
    """The details beside the preview (loop, branch, seed...)."""
    return page.locator(".sw-info").first.inner_text()


def _status(page) -> str:
    """The studio's status chip: idle, running, stopping, stopped or error."""
    return page.locator(".sw-studio .sw-chip").first.inner_text()


def _progress(page) -> str:
    """The progress line under the buttons (it changes as soon as a job starts)."""
    return page.locator(".sw-studio .sw-progress").first.inner_text()


def _prompts(page) -> str:
    """The positive keyframe text the panel shows."""
    return page.locator(".sw-studio .sw-panel textarea").first.input_value()


def _text(page, selector: str) -> str:
    """The text of the studio's first element matching ``selector`` ('' when there is none)."""
    found = page.locator(f".sw-studio {selector}")
    return found.first.inner_text() if found.count() else ""


def _changed(page) -> list[str]:
    """The labels of the fields the panel highlights as edited."""
    rows = page.locator(".sw-studio .sw-panel .sw-changed .sw-label")
    return [rows.nth(i).inner_text() for i in range(rows.count())]


_HIGHLIGHT = """() => {
  const row = document.querySelector('.sw-studio .sw-panel .sw-changed');
  return row ? getComputedStyle(row).backgroundColor : '';
}"""


def _wait_for(page, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def drive_studio(
    root: Path,
    screenshot: Path,
    model: str | None = "tiny-random",
    loops: int = 12,
    branch_positive: str = BRANCH_PROMPTS,
    compare_screenshot: Path | None = None,
    live_screenshot: Path | None = None,
) -> dict:
    """Open the quickstart notebook in JupyterLab, run, click, branch, draft live; save a
    screenshot (and one of the Compare tab and one of a live draft, when their paths are
    given)."""
    from playwright.sync_api import sync_playwright

    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    result: dict = {}
    start = time.monotonic()

    def step(what: str) -> None:
        print(f"[browser {time.monotonic() - start:5.1f} s] {what}", file=sys.stderr, flush=True)

    with jupyterlab(root, model) as (url, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1250})
            page.set_default_timeout(30_000)
            step("JupyterLab and Chromium are up")
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_function(
                "() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000
            )
            # Single-document mode, no side bar: the notebook gets the whole window.
            page.evaluate("""async () => {
                const app = window.jupyterapp;
                await app.commands.execute('application:set-mode', {mode: 'single-document'});
                if (app.commands.hasCommand('application:toggle-left-area')) {
                  const left = document.querySelector('#jp-left-stack');
                  if (left && left.offsetWidth > 0) await app.commands.execute('application:toggle-left-area');
                }
            }""")
            # Wait for the kernel to be connected and idle, then run every cell.
            page.wait_for_function(_KERNEL_READY, timeout=120_000)
            step("kernel idle: running the notebook")
            page.evaluate("void window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_timeout(1000)
            select = page.locator(".jp-Dialog button", has_text="Select")
            if select.count():  # the kernel dialog, should the session still be settling
                select.first.click()
            _wait_for(
                page,
                lambda: page.locator(".sw-studio .sw-timeline canvas").count() or _cell_error(page),
                180,
                "the studio to show",
            )
            error = _cell_error(page)
            assert not error, f"the notebook failed:\n{error}"
            step("studio shown")
            run = page.locator(".sw-studio button", has_text="Run").first
            page.wait_for_timeout(500)
            numbers = page.locator(".sw-studio .sw-panel input[type='number']")
            # The Sampling group's number boxes: sequence_loop_count, steps, cfg.
            numbers.nth(0).fill(str(loops))
            numbers.nth(0).press("Enter")
            before = _progress(page)
            run.click()
            _wait_for(page, lambda: _progress(page) != before, 60, "the run to start")

            # 1. Thumbnails appear on the canvas while the run goes on.
            _wait_for(
                page,
                lambda: page.evaluate(_CELL_COLORS, _cell(0, 0)) > 16,
                180,
                "the first thumbnail on the timeline",
            )
            _wait_for(page, lambda: "idle" in _status(page), 300, "the run to finish")
            step("run finished")
            result["loop0_colors"] = page.evaluate(_CELL_COLORS, _cell(0, 0))
            result["loop3_colors"] = page.evaluate(_CELL_COLORS, _cell(0, 3))

            # 2. Click loop 3: the preview's details follow.
            layers = page.locator(".sw-timeline canvas")
            top = layers.nth(layers.count() - 1)
            x, y, _, _ = _cell(0, 3)
            top.click(position={"x": x + THUMB / 2, "y": y + THUMB / 2})
            _wait_for(
                page,
                lambda: "loop 3" in page.locator(".sw-info").first.inner_text(),
                30,
                "the preview to show loop 3",
            )
            result["info"] = page.locator(".sw-info").first.inner_text()
            # The canvas has keyboard focus after the click: the arrow keys step.
            page.keyboard.press("ArrowRight")
            _wait_for(
                page,
                lambda: "loop 4" in page.locator(".sw-info").first.inner_text(),
                30,
                "ArrowRight to select loop 4",
            )
            page.keyboard.press("ArrowLeft")
            _wait_for(
                page,
                lambda: "loop 3" in page.locator(".sw-info").first.inner_text(),
                30,
                "ArrowLeft to select loop 3 again",
            )
            step("frame selected")

            # 3. Branch from it with another denoise: a second row from loop 4.
            numbers.nth(2).fill("4")  # cfg: the branch continues with another guidance
            numbers.nth(2).press("Enter")
            page.locator(".sw-studio .sw-panel textarea").first.fill(branch_positive)
            page.wait_for_timeout(500)
            branch = page.locator(".sw-studio button", has_text="Branch").first
            before = _progress(page)
            branch.click()
            _wait_for(page, lambda: _progress(page) != before, 60, "the branch to start")
            _wait_for(
                page,
                lambda: page.evaluate(_CELL_COLORS, _cell(1, 4)) > 16,
                180,
                "the branch's first thumbnail",
            )
            _wait_for(page, lambda: "idle" in _status(page), 300, "the branch to finish")
            step("branch finished")
            result["branch_colors"] = page.evaluate(_CELL_COLORS, _cell(1, 4))
            result["empty_colors"] = page.evaluate(_CELL_COLORS, _cell(1, 1))

            # 4. The panel follows the selected frame: a frame of the first row shows the run's
            #    keyframes, an edit is highlighted, a frame of the branch shows the branch's.
            def click(row: int, col: int) -> None:
                x, y, _, _ = _cell(row, col)
                top.click(position={"x": x + THUMB / 2, "y": y + THUMB / 2})

            click(0, 8)
            _wait_for(page, lambda: "loop 8" in _info(page), 30, "loop 8 of the run")
            result["run_prompts"] = _wait_for(
                page,
                lambda: _prompts(page) if "orange" not in _prompts(page) else "",
                30,
                "the run's keyframes in the panel",
            )
            numbers.nth(2).fill("5")  # cfg
            numbers.nth(2).press("Enter")
            # Widget updates reach the page one by one: wait for the whole picture.
            result["changed"], result["changes_line"] = _wait_for(
                page,
                lambda: (
                    (_changed(page), _text(page, ".sw-changes"))
                    if _changed(page) and "Branch will change" in _text(page, ".sw-changes")
                    else None
                ),
                30,
                "cfg highlighted and the edit summed up",
            )
            result["highlight"] = page.evaluate(_HIGHLIGHT)
            click(1, 6)
            _wait_for(
                page,
                lambda: (
                    "orange" in _prompts(page)
                    and "from loop 4" in _text(page, ".sw-editbar")
                    and "loop 6" in _info(page)
                ),
                30,
                "the branch's keyframes and name in the panel",
            )
            # keep my edits is off: the edit goes with the other row's settings.
            _wait_for(page, lambda: not _changed(page), 30, "the highlight to go")
            result["branch_prompts"] = _prompts(page)
            result["changed_after_select"] = _changed(page)
            result["source"] = _text(page, ".sw-editbar")
            result["branch_info"] = _info(page)
            step("the panel followed the selection")

            # 5. The metrics strip under the timeline: a line of points per row, and Compare.
            result["strip_colors"] = _wait_for(
                page, lambda: page.evaluate(_STRIP_COLORS), 30, "the metrics strip drawn"
            )
            _tab(page, "Compare").click()
            result["compare_settings"] = _wait_for(
                page,
                lambda: "differ" in _text(page, ".sw-compare") and _text(page, ".sw-compare"),
                60,
                "the Compare tab to list the settings that differ",
            )
            _wait_for(page, lambda: page.evaluate(_COMPARE_IMAGES) == 3, 60, "both frames, heat")
            result["compare_images"] = page.evaluate(_COMPARE_IMAGES)
            if compare_screenshot is not None:
                compare_screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.locator(".sw-studio").first.screenshot(path=str(compare_screenshot))
            _tab(page, "Preview").click()
            _wait_for(page, lambda: page.locator(".sw-info").first.is_visible(), 30, "the preview")
            step("strip and compare shown")

            # 6. Live: turn it on, select loop 3 of the run, drag denoise_seq with the mouse: a
            #    DRAFT row (the third) fills from loop 4; a second drag redraws its pixels.
            page.locator(".sw-studio .sw-livebar button", has_text="Live").first.click()
            click(0, 3)
            _wait_for(page, lambda: "loop 3" in _info(page), 30, "loop 3 of the run")
            page.locator(".sw-studio .sw-panel").get_by_text("Denoise", exact=True).first.click()
            sliders = page.locator(".sw-studio .sw-panel .widget-slider .noUi-handle:visible")
            _wait_for(page, lambda: sliders.count() == 2, 30, "the Denoise section open")

            def drag_denoise(dx: float) -> None:
                box = sliders.nth(1).bounding_box()  # denoise_start, then denoise_seq
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + dx, y, steps=8)
                page.mouse.up()

            drag_denoise(-50)
            _wait_for(
                page,
                lambda: (
                    "draft ready" in _text(page, ".sw-livebar")
                    and page.evaluate(_CELL_COLORS, _cell(2, 5)) > 16
                ),
                120,
                "the draft's frames on the DRAFT row",
            )
            result["draft_note"] = _text(page, ".sw-livebar")
            result["draft_colors"] = page.evaluate(_CELL_COLORS, _cell(2, 5))
            first = page.evaluate(_CELL_SUM, _cell(2, 5))
            if live_screenshot is not None:
                live_screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.locator(".sw-studio").first.screenshot(path=str(live_screenshot))
            drag_denoise(80)
            result["draft_redrawn"] = bool(
                _wait_for(
                    page,
                    lambda: (
                        page.evaluate(_CELL_SUM, _cell(2, 5)) not in (first, -1)
                        and "draft ready" in _text(page, ".sw-livebar")
                    ),
                    120,
                    "the DRAFT row redrawn after a second drag",
                )
            )
            result["draft_note_2"] = _text(page, ".sw-livebar")
            page.locator(".sw-studio .sw-livebar button", has_text="Live").first.click()
            _wait_for(
                page,
                lambda: page.evaluate(_CELL_COLORS, _cell(2, 5)) in (-1, 0, 1, 2, 3, 4),
                30,
                "the DRAFT row gone with live off",
            )
            page.locator(".sw-studio .sw-panel").get_by_text("Sampling", exact=True).first.click()
            step("live draft drawn and redrawn")
            # An edit left in place for the screenshot: highlighted, summed up above the prompts.
            numbers.nth(2).fill("5")
            numbers.nth(2).press("Enter")
            _wait_for(page, lambda: _changed(page), 30, "cfg highlighted again")
            page.wait_for_timeout(800)
            result["errors"] = page.locator(".sw-errorbox").count()

            # 6. Reload the page: the browser kept no pixels; Python redraws every canvas.
            page.evaluate("void window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1500)
            page.reload()
            page.wait_for_function(_KERNEL_READY, timeout=120_000)
            _wait_for(
                page,
                lambda: page.evaluate(_CELL_COLORS, _cell(1, 4)) > 16,
                120,
                "the timeline redrawn after a reload",
            )
            result["reload_colors"] = page.evaluate(_CELL_COLORS, _cell(0, 0))
            step("redrawn after a reload")
            studio = page.locator(".sw-studio").first
            studio.scroll_into_view_if_needed()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            studio.screenshot(path=str(screenshot))
            result["screenshot"] = screenshot
        except BaseException:
            with contextlib.suppress(Exception):
                failure = screenshot.with_name("failure-" + screenshot.name)
                page.screenshot(path=str(failure), full_page=True)
                step(f"failed; the page is in {failure}")
            raise
        finally:
            browser.close()
    return result


@pytest.mark.slow
@pytest.mark.browser
def test_studio_in_jupyterlab(tmp_path):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    artifacts = Path(os.environ.get("SEQWIDGETS_ARTIFACTS", tmp_path))
    shot = artifacts / "studio-browser.png"
    # In a child process of its own session: a browser or a kernel that hangs is killed with
    # everything it started, instead of hanging the test run.
    command = [sys.executable, __file__, "--out", str(shot), "--root", str(tmp_path)]
    command += ["--compare-out", str(artifacts / "studio-browser-compare.png")]
    command += ["--live-out", str(artifacts / "studio-browser-live.png")]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"the browser test took over {TIMEOUT} s:\n{err[-4000:]}")
    assert child.returncode == 0, f"the browser test failed:\n{err[-6000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    # Real pixels, not the background: random weights give noisy frames with many colours.
    assert result["loop0_colors"] > 16
    assert result["loop3_colors"] > 16
    assert result["branch_colors"] > 16
    # Before its fork a branch row is empty lane: a handful of colours at most.
    assert result["empty_colors"] <= 4
    assert "loop 3" in result["info"]
    # The panel shows the settings of the row whose frame is selected, edits stand out.
    assert result["run_prompts"] == RUN_PROMPTS
    assert result["changed"] == ["cfg"]
    assert "Branch will change: cfg 8 → 5" in result["changes_line"]
    assert result["highlight"] not in ("", "rgba(0, 0, 0, 0)", "transparent")
    assert result["branch_prompts"] == BRANCH_PROMPTS
    assert result["changed_after_select"] == [], "keep my edits is off: the branch's settings"
    assert "run 1 > from loop 4" in result["source"]
    assert "run 1 > from loop 4" in result["branch_info"]
    assert result["errors"] == 0
    assert result["reload_colors"] > 16
    # The strip draws both rows' points in their colours; Compare lists what the branch changed.
    from seqwidgets.widgets.metrics_strip import BRANCH_COLORS

    for branch_id in (1, 2):
        assert BRANCH_COLORS[branch_id % len(BRANCH_COLORS)] in result["strip_colors"]
    assert "cfg" in result["compare_settings"] and "positive_seq" in result["compare_settings"]
    assert result["compare_images"] == 3
    # Live: a drag of denoise_seq drew a draft row; a second drag changed its pixels.
    assert result["draft_colors"] > 16
    assert "draft ready" in result["draft_note"] and "denoise_seq" in result["draft_note"]
    assert result["draft_redrawn"] and result["draft_note"] != result["draft_note_2"]
    assert (artifacts / "studio-browser-live.png").stat().st_size > 10_000
    assert shot.stat().st_size > 10_000
    assert (artifacts / "studio-browser-compare.png").stat().st_size > 10_000


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny-random", help="'toy' for the shipped model")
    parser.add_argument("--out", default="studio.png")
    parser.add_argument("--loops", type=int, default=12)
    parser.add_argument("--root", default=None, help="a folder for the server's files")
    parser.add_argument("--compare-out", default=None, help="a screenshot of the Compare tab")
    parser.add_argument("--live-out", default=None, help="a screenshot of a live draft")
    parser.add_argument(
        "--branch-positive", default=BRANCH_PROMPTS, help="the branch's positive_seq"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.root) as folder:
        model = None if args.model == "toy" else args.model
        compare = Path(args.compare_out).resolve() if args.compare_out else None
        live = Path(args.live_out).resolve() if args.live_out else None
        result = drive_studio(
            Path(folder),
            Path(args.out).resolve(),
            model,
            args.loops,
            args.branch_positive,
            compare,
            live,
        )
    print(json.dumps(result, default=str))
