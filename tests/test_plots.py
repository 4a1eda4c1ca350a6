"""Tests for clbench.results.plots: PNG files are written atomically, readable, one per run plus the leaderboard."""

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from clbench.metrics import evals_from_matrices, leaderboard, summarize
from clbench.metrics.tables import RUNS_COLUMNS
from clbench.results.plots import plot_accuracy_curves, plot_accuracy_matrix, plot_leaderboard, plot_output_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
R3 = np.array([[0.9, 0.1, 0.2], [0.6, 0.8, 0.3], [0.5, 0.7, 0.95]])
B3 = np.array([0.1, 0.2, 0.3])


def assert_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def assert_no_temp_files(folder):
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_plot_accuracy_matrix(tmp_path):
    path = plot_accuracy_matrix(R3, "naive on digits", tmp_path / "sub" / "m.png")
    assert path == tmp_path / "sub" / "m.png"
    assert_png(path)
    assert_no_temp_files(path.parent)


def test_plot_accuracy_curves_with_and_without_baseline_and_missing(tmp_path):
    R = R3.copy()
    R[1] = np.nan
    assert_png(plot_accuracy_curves(R3, B3, "t", tmp_path / "c1.png"))
    assert_png(plot_accuracy_curves(R, None, "t", tmp_path / "c2.png"))
    assert_png(plot_accuracy_matrix(R, "t", tmp_path / "m.png"))
    assert_png(plot_accuracy_curves(np.array([[0.7]]), [0.1], "T=1", tmp_path / "c3.png"))
    assert_no_temp_files(tmp_path)


def test_overwrite_is_atomic_replace(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"old")
    plot_accuracy_matrix(R3, "t", path)
    assert_png(path)
    assert_no_temp_files(tmp_path)


def test_failed_save_leaves_no_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_accuracy_matrix(R3, "t", tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


def runs_evals_costs():
    runs, evals = [], []
    for k, (strategy, scenario, seed) in enumerate(
        [("naive", "class", 0), ("naive", "class", 1), ("ewc", "class", 0), ("naive", "task", 0)]
    ):
        run_id = f"run{k}"
        row = dict.fromkeys(RUNS_COLUMNS)
        row.update(run_id=run_id, config_id=f"{strategy}-{scenario}", benchmark="digits", scenario=scenario,
                   strategy=strategy, seed=seed, params="{}", status="ok")  # fmt: skip
        runs.append(row)
        meta = {"run_id": run_id, "benchmark": "digits", "scenario": scenario, "strategy": strategy, "seed": seed}
        evals.append(evals_from_matrices(meta, np.clip(R3 + 0.01 * k, 0, 1), B3, n=[5, 5, 5]))
    runs.append({**runs[0], "run_id": "dead", "status": "failed"})
    return pd.DataFrame(runs), pd.concat(evals, ignore_index=True), None


def test_plot_leaderboard_panels(tmp_path):
    runs, evals, costs = runs_evals_costs()
    lb = leaderboard(summarize(evals, runs, costs))
    assert_png(plot_leaderboard(lb, tmp_path / "lb.png"))
    assert_png(plot_leaderboard(lb, tmp_path / "lb_bwt.png", metric="bwt"))
    with pytest.raises(ValueError, match="nope"):
        plot_leaderboard(lb, tmp_path / "x.png", metric="nope")
    with pytest.raises(ValueError, match="empty"):
        plot_leaderboard(lb.iloc[:0], tmp_path / "x.png")


def test_plot_output_dir(tmp_path):
    runs, evals, costs = runs_evals_costs()
    summary = summarize(evals, runs, costs)
    written = plot_output_dir(evals, summary, leaderboard(summary), tmp_path)
    plots = tmp_path / "plots"
    expected = {f"run{k}_{kind}.png" for k in range(4) for kind in ("matrix", "curves")} | {"leaderboard_acc.png"}
    assert {p.name for p in written} == expected
    assert {p.name for p in plots.iterdir()} == expected  # nothing for the failed run, no temp files
    for p in written:
        assert p.parent == plots
        assert_png(p)


def test_no_open_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_accuracy_matrix(R3, "t", tmp_path / "m.png")
    plot_accuracy_curves(R3, B3, "t", tmp_path / "c.png")
    assert plt.get_fignums() == before
