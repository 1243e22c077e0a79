"""Which tests run: ``python -m pytest`` is the fast loop; ``python -m pytest --all`` runs all.

The fast loop leaves out the tests marked ``slow`` (seconds each), ``notebook`` (every notebook
top to bottom) and ``browser`` (JupyterLab in Chromium). ``--all`` runs them too, and so does CI
(``.ci/run`` runs the README's test command). ``-m EXPR`` or a test named with ``::`` chooses for
itself.
"""

from __future__ import annotations

HELD_BACK = ("slow", "notebook", "browser")


def pytest_addoption(parser):
    parser.addoption(
        "--all",
        action="store_true",
        default=False,
        help="run every test, also those marked " + ", ".join(HELD_BACK) + " (as CI does)",
    )


def pytest_report_header(config):
    if _fast_loop(config):
        return f"fast loop: tests marked {', '.join(HELD_BACK)} are left out (--all runs them)"
    return None


def pytest_collection_modifyitems(config, items):
    if not _fast_loop(config):
        return
    kept, held_back = [], []
    for item in items:
        slow = any(item.get_closest_marker(name) for name in HELD_BACK)
        (held_back if slow else kept).append(item)
    if held_back:
        config.hook.pytest_deselected(items=held_back)
        items[:] = kept


def _fast_loop(config) -> bool:
    named = any("::" in str(arg) for arg in config.args)
    return not (config.getoption("--all") or config.getoption("markexpr") or named)
