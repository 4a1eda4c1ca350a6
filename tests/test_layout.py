"""The package layout the code promises: imports point one way, from producing runs to reading results."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clbench"


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_results_never_import_runners_or_strategies():
    """Reading an output folder needs neither the training code nor any strategy (a folder is untrusted input)."""
    offenders = {
        f"{path.name}: {module}"
        for path in (PACKAGE / "results").glob("*.py")
        for module in _imported_modules(path)
        if module.startswith(("clbench.runners", "clbench.strategies", "clbench.avalanche", "torch"))
    }
    assert not offenders


def test_metrics_are_pure():
    offenders = {
        f"{path.name}: {module}"
        for path in (PACKAGE / "metrics").glob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in ("torch", "clbench") and not module.startswith(("clbench.metrics", "clbench.errors"))
    }
    assert not offenders


def test_reading_a_folder_loads_no_torch():
    """The reading side stands alone: importing it pulls in neither torch nor any strategy."""
    import subprocess
    import sys

    code = ("import sys, clbench.results.store, clbench.results.plots, clbench.results.report; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('clbench.strategies', "
            "'clbench.runners'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_old_import_paths_still_work_for_one_release():
    import importlib
    import warnings

    import clbench.results.store

    for name in ("store", "plots", "report"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = importlib.reload(importlib.import_module(f"clbench.runners.{name}"))
        assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert old.write_report and importlib.import_module("clbench.runners.store").ResultStore is \
        clbench.results.store.ResultStore
