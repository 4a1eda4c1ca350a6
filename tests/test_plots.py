"""Tests for clbench.results.plots: figures are written atomically, readable, one per run plus the ones named by
benchmark × scenario; PNG, PDF and SVG; zoomed bars; failed runs marked; row b in the matrix."""

import io

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from clbench.metrics import evals_from_matrices, leaderboard, summarize
from clbench.metrics.tables import RUNS_COLUMNS
from clbench.results import plots
from clbench.results.plots import (
    average_accuracy_curves,
    average_accuracy_figure,
    bar_rows,
    config_label,
    leaderboard_figure,
    matrix_figure,
    plot_accuracy_curves,
    plot_accuracy_matrix,
    plot_leaderboard,
    plot_output_dir,
    run_counts,
    save_figure,
    save_png,
    zoomed_limits,
)
from clbench.results.report import average_accuracy_by_step
from clbench.runners.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF"
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


NAMED = {f"digits_{scenario}_{kind}" for scenario in ("class", "task") for kind in ("curves", "acc")}


def test_plot_output_dir(tmp_path):
    runs, evals, costs = runs_evals_costs()
    summary = summarize(evals, runs, costs)
    written = plot_output_dir(evals, summary, leaderboard(summary, runs), tmp_path)
    folder = tmp_path / "plots"
    expected = {f"run{k}_{kind}.png" for k in range(4) for kind in ("matrix", "curves")} | {"leaderboard_acc.png"}
    expected |= {f"{name}.png" for name in NAMED}  # per benchmark × scenario: the curves and the acc bars
    assert {p.name for p in written} == expected
    assert {p.name for p in folder.iterdir()} == expected  # nothing for the failed run, no temp files
    for p in written:
        assert p.parent == folder
        assert_png(p)


@pytest.mark.parametrize(("fmt", "magic"), [("svg", (b"<?xml", b"<svg")), ("pdf", (PDF_MAGIC,))])
def test_plot_output_dir_in_other_formats(tmp_path, fmt, magic):
    runs, evals, costs = runs_evals_costs()
    summary = summarize(evals, runs, costs)
    written = plot_output_dir(evals, summary, leaderboard(summary, runs), tmp_path, fmt=fmt)
    assert {p.stem for p in written} >= NAMED | {"leaderboard_acc", "run0_matrix"}
    assert {p.suffix for p in written} == {f".{fmt}"}
    for p in written:
        assert p.read_bytes().lstrip()[:5].startswith(magic)
    assert_no_temp_files(tmp_path / "plots")
    with pytest.raises(ValueError, match="valid choices: png, pdf, svg"):
        plot_output_dir(evals, summary, leaderboard(summary, runs), tmp_path, fmt="jpeg")


def test_save_figure_follows_the_extension_and_save_png_still_writes_png(tmp_path):
    for name, magic in (("f.png", PNG_MAGIC), ("f.PDF", PDF_MAGIC), ("f.svg", b"<?xml")):
        path = save_figure(matrix_figure(R3, "t"), tmp_path / name)
        assert path.read_bytes()[: len(magic)] == magic
    with pytest.raises(ValueError, match=r"\.png, \.pdf, \.svg"):
        save_figure(matrix_figure(R3, "t"), tmp_path / "f.jpg")
    assert save_png(matrix_figure(R3, "t"), tmp_path / "no-extension").read_bytes()[:8] == PNG_MAGIC
    assert save_png(matrix_figure(R3, "t"), io.BytesIO()).getvalue()[:8] == PNG_MAGIC
    assert_no_temp_files(tmp_path)


def test_matrix_has_row_b_and_the_folder_plots_pass_it(tmp_path, monkeypatch):
    fig = matrix_figure(R3, "t", b=B3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "0", "1", "2"]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array())[0], B3)  # the first row drawn is b
    assert [t.get_text() for t in matrix_figure(R3, "t").axes[0].get_yticklabels()] == ["0", "1", "2"]

    seen = []
    real = plots.plot_accuracy_matrix
    monkeypatch.setattr(plots, "plot_accuracy_matrix", lambda R, title, path, b=None: seen.append(b) or real(
        R, title, path, b=b))
    runs, evals, costs = runs_evals_costs()
    summary = summarize(evals, runs, costs)
    plot_output_dir(evals, summary, leaderboard(summary, runs), tmp_path)
    assert len(seen) == 4
    for b in seen:
        np.testing.assert_allclose(b, B3)


def board_rows(**overrides):
    """A hand-made leaderboard of one benchmark × scenario with the failure-accounting columns: ewc complete at 0.99,
    naive complete at 0.90, lwf partial (2/3) at 0.95, gem failed (0/3)."""
    rows = [
        dict(strategy="ewc", label="defaults", acc=0.99, sem=0.003, status="ok", n_ok=3, n_runs=3, n_seeds=3),
        dict(strategy="naive", label="defaults", acc=0.90, sem=0.01, status="ok", n_ok=3, n_runs=3, n_seeds=3),
        dict(strategy="lwf", label="alpha=2", acc=0.95, sem=0.02, status="partial", n_ok=2, n_runs=3, n_seeds=2),
        dict(strategy="gem", label="defaults", acc=np.nan, sem=np.nan, status="failed", n_ok=0, n_runs=3, n_seeds=0),
    ]
    board = pd.DataFrame(rows).rename(columns={"acc": "acc_mean", "sem": "acc_sem"})
    board["n_failed"] = board["n_runs"] - board["n_ok"]
    board["failure"] = ["", "", "DivergedError: loss became nan", "DivergedError: loss became nan in experience 0"]
    board = board.assign(benchmark="split-fmnist", scenario="task", params="{}",
                         config_id=[f"c{k}" for k in range(len(board))])  # fmt: skip
    return board.assign(**overrides)


def test_labels_mark_partial_and_failed_configurations():
    board = board_rows()
    records = board.to_dict("records")
    assert [run_counts(r) for r in records] == [("ok", 3, 3), ("ok", 3, 3), ("partial", 2, 3), ("failed", 0, 3)]
    assert [config_label(r, False) for r in records] == ["ewc", "naive", "lwf (2/3 ok)", "gem (failed, 0/3 ok)"]
    assert config_label(records[2], True) == "lwf (alpha=2) (2/3 ok)"
    assert config_label(next(board.itertuples(index=False)), True) == "ewc (defaults)"  # namedtuples too

    bars = bar_rows(board)  # bottom to top: failed, partial, then the complete ones by value, best on top
    assert [b.strategy for b in bars] == ["gem", "lwf", "naive", "ewc"]
    assert [b.label for b in bars] == ["gem (failed, 0/3 ok)", "lwf (2/3 ok)", "naive (n=3)", "ewc (n=3)"]
    assert [b.hatch for b in bars] == ["", "//", "", ""]
    assert bars[0].note.startswith("failed") and "DivergedError" in bars[0].note and np.isnan(bars[0].value)
    assert [b.note for b in bars[1:]] == ["", "", ""]
    assert [b.strategy for b in bar_rows(board, order="name")] == ["naive", "lwf", "gem", "ewc"]  # ewc on top

    # a leaderboard without failure accounting (only n_seeds) reads as every run ok; derived status without `status`
    old = board.drop(columns=["status", "n_ok", "n_runs", "n_failed", "failure"]).iloc[:2]
    assert [run_counts(r) for r in old.to_dict("records")] == [("ok", 3, 3), ("ok", 3, 3)]
    assert [b.label for b in bar_rows(old)] == ["naive (n=3)", "ewc (n=3)"]
    derived = board.drop(columns=["status"]).to_dict("records")
    assert [run_counts(r)[0] for r in derived] == ["ok", "ok", "partial", "failed"]
    bare = board[["benchmark", "scenario", "strategy", "params", "config_id", "acc_mean", "acc_sem"]]
    assert [b.label for b in bar_rows(bare)] == ["gem", "naive", "lwf", "ewc"]


def test_bars_zoom_the_value_axis_and_draw_failed_slots_empty(tmp_path):
    lo, hi = zoomed_limits([0.9, 0.99])
    assert (lo, hi) == pytest.approx((0.891, 0.999))
    assert zoomed_limits([0.95]) == pytest.approx((0.945, 0.955))  # one value: a minimum span
    assert zoomed_limits([0.99, 0.995], [0.01, 0.01]) == pytest.approx((0.975, 1.0))  # ends ± errors, clipped to 1
    assert zoomed_limits([np.nan]) == (0.0, 1.0)

    board = board_rows()
    fig = leaderboard_figure(board)
    ax = fig.axes[0]
    values = board["acc_mean"].to_numpy()
    errors = board["acc_sem"].to_numpy()
    assert ax.get_xlim() == pytest.approx(zoomed_limits(values, errors))
    assert ax.get_xlim()[0] > 0.85  # 0.90 vs 0.99 fill the axis
    assert "not 0" in ax.get_xlabel() and "hatched" in ax.get_xlabel()
    patches = ax.patches
    assert [p.get_hatch() for p in patches] == [None, "//", None, None]
    assert not patches[0].get_visible() and all(p.get_visible() for p in patches[1:])  # no bar for the failure
    assert any(t.get_text().startswith("failed") for t in ax.texts)
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "gem (failed, 0/3 ok)"

    assert leaderboard_figure(board, zoom=False).axes[0].get_xlim() == (0, 1)
    bwt = board.assign(bwt_mean=[-0.1, -0.3, -0.2, np.nan], bwt_sem=0.01)
    assert "not 0" not in leaderboard_figure(bwt, metric="bwt").axes[0].get_xlabel()  # only [0, 1] metrics zoom
    assert_png(plot_leaderboard(board, tmp_path / "zoom.png"))


def test_average_accuracy_curves_have_sem_bands_and_list_failures():
    Ra = np.array([[0.9, 0.0], [0.5, 0.7]])
    Rb = np.array([[0.8, 0.0], [0.3, 0.9]])
    board = board_rows().iloc[[0, 2, 3]]
    curves = average_accuracy_curves(board, {"a": Ra, "b": Rb, "c": Ra}, {"c0": ["a", "b"], "c2": ["c"]})
    (key, panel), = curves.items()
    assert key == ("split-fmnist", "task")
    ewc, lwf, gem = panel
    steps = np.stack([average_accuracy_by_step(Ra), average_accuracy_by_step(Rb)])
    np.testing.assert_allclose(ewc.mean, steps.mean(axis=0))
    np.testing.assert_allclose(ewc.sem, steps.std(axis=0, ddof=1) / np.sqrt(2))
    assert lwf.label == "lwf (2/3 ok)" and np.isnan(lwf.sem).all()  # one finished seed: no band
    assert gem.label == "gem (failed, 0/3 ok)" and gem.status == "failed" and gem.mean.size == 0

    ax = average_accuracy_figure(panel, "t").axes[0]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1  # ewc's band
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["ewc", "lwf (2/3 ok)", "gem (failed, 0/3 ok)"]
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 2, 0]  # the failure is listed, not drawn

    # the accuracy axis is zoomed to curves near 1 (and says so), and starts at 0 for curves that come near it
    high = [plots.Curve("a", "a", "ok", np.array([0.99, 0.97]), np.array([0.005, 0.01])),
            plots.Curve("b", "b", "ok", np.array([0.98, 0.93]), np.array([np.nan, 0.01]))]  # fmt: skip
    ax = average_accuracy_figure(high, "t").axes[0]
    assert 0.85 < ax.get_ylim()[0] < 0.92 and ax.get_ylim()[1] <= 1.02 and "not 0" in ax.get_ylabel()
    low = [plots.Curve("a", "a", "ok", np.array([0.99, 0.2]), np.array([0.005, 0.01]))]
    ax = average_accuracy_figure(low, "t").axes[0]
    assert ax.get_ylim()[0] <= 0 and "not 0" not in ax.get_ylabel()


def test_plot_command_formats_and_failure_marks_end_to_end(tmp_path, capsys):
    """A real folder where every seed of one configuration failed: the named figures, --format pdf / svg, a bad
    --format, and the failed configuration marked in the bars and curves."""
    out = tmp_path / "res"
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                 "tests.user_strategies:Diverging", "--set", "steps_before_nan=0", "--seeds", "0", "1",
                 "--train-subset", "100", "--epochs", "1", "--batch-size", "32", "--quiet", "--out", str(out),
                 "--no-plots"]) == 1  # fmt: skip
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    capsys.readouterr()
    names = {p.name for p in (out / "plots").iterdir()}
    assert {"split-digits_class_curves.png", "split-digits_class_acc.png", "leaderboard_acc.png"} <= names
    for fmt, magic in (("pdf", (PDF_MAGIC,)), ("svg", (b"<?xml", b"<svg"))):
        assert main(["plot", str(out), "--format", fmt]) == 0
        printed = capsys.readouterr().out.split()
        assert printed and all(p.endswith(f".{fmt}") for p in printed)
        for name in ("split-digits_class_curves", "split-digits_class_acc", "leaderboard_acc"):
            assert (out / "plots" / f"{name}.{fmt}").read_bytes()[:5].startswith(magic)

    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["plot", str(out), "--format", "jpeg"]) == 2
    err = capsys.readouterr().err
    assert "'jpeg'" in err and "pdf, png, svg" in err and "Traceback" not in err
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written

    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert {"status", "n_ok", "n_runs"} <= set(board.columns), "leaderboard.csv lacks the failure accounting"
    bars = bar_rows(board)
    failed = [b for b in bars if b.status == "failed"]
    assert len(failed) == 1 and "(failed, 0/2 ok)" in failed[0].label and failed[0].note.startswith("failed")
    ax = leaderboard_figure(board).axes[0]
    assert any("(failed, 0/2 ok)" in t.get_text().replace("\n", " ") for t in ax.get_yticklabels())  # wrapped
    summary = pd.read_csv(out / "summary.csv")
    from clbench.metrics.tables import matrices_from_evals

    evals = pd.read_csv(out / "evals.csv")
    matrices = {r: matrices_from_evals(evals, r)[0] for r in summary["run_id"]}
    panel = average_accuracy_curves(board, matrices, summary.groupby("config_id")["run_id"].apply(list).to_dict())
    legend = [t.get_text() for t in average_accuracy_figure(panel["split-digits", "class"], "t").axes[0]
              .get_legend().get_texts()]  # fmt: skip
    assert "naive" in legend and any(text.endswith("(failed, 0/2 ok)") for text in legend)


def test_no_open_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_accuracy_matrix(R3, "t", tmp_path / "m.png")
    plot_accuracy_curves(R3, B3, "t", tmp_path / "c.png")
    assert plt.get_fignums() == before
