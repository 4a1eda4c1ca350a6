"""PNG plots of results: per-run accuracy matrix and curves, and the leaderboard.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (never pyplot), so no screen is needed, no
global backend is switched and no figure stays registered; each PNG is written atomically (temp file + os.replace)
by store.write_atomic, the tables' writer.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clbench.metrics import tables
from clbench.metrics.tables import matrices_from_evals
from clbench.results.store import write_atomic

__all__ = ["plot_accuracy_curves", "plot_accuracy_matrix", "plot_leaderboard", "plot_output_dir", "save_png"]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path):
    """Write ``fig`` to ``path`` atomically: a temp file in the same folder, then os.replace. ``path`` may also be a
    binary stream (e.g. io.BytesIO), written as it is, for pages that embed the image instead of linking a file."""
    if hasattr(path, "write"):
        try:
            fig.savefig(path, format="png", dpi=100)
        finally:
            fig.clear()
        return path
    path = Path(path)
    try:  # the tables' writer: same temp files, mode, stale-temp cleanup and full-disk error
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        fig.clear()
    return path


def plot_accuracy_matrix(R, title: str, path, b=None) -> Path:
    """Heatmap of R with each cell annotated (rows: after training i, columns: evaluated on j); NaN cells blank.
    With ``b``, the accuracies before any training are drawn as a first row labelled "b"."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    cells = R if b is None else np.vstack([np.asarray(b, dtype=float), R])
    row_labels = [str(t) for t in range(T)] if b is None else ["b", *(str(t) for t in range(T))]
    side = min(4 + 0.6 * T, 16)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(cells), vmin=0, vmax=1, cmap="viridis")
    fig.colorbar(im, ax=ax, label="accuracy")
    if T <= 25:
        for (i, j), v in np.ndenumerate(cells):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=max(5, 10 - T // 4),
                        color="black" if v > 0.6 else "white")  # fmt: skip
    if b is not None:
        ax.axhline(0.5, color="white", lw=2)  # the untrained model is not a row of R
    ax.set_xticks(range(T), [str(t) for t in range(T)])
    ax.set_yticks(range(len(cells)), row_labels)
    ax.set_xlabel("evaluated on experience j")
    ax.set_ylabel("after training experience i")
    ax.set_title(title)
    return save_png(fig, path)


def plot_accuracy_curves(R, b, title: str, path) -> Path:
    """Accuracy on each experience j across training steps; b (if given) is drawn at step −1."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    steps = np.arange(-1 if b is not None else 0, T)
    table = R if b is None else np.vstack([np.asarray(b, dtype=float), R])
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    colors = [colormaps["viridis"](0.9 * j / max(T - 1, 1)) for j in range(T)]
    for j in range(T):
        ok = ~np.isnan(table[:, j])
        ax.plot(steps[ok], table[ok, j], marker="o", ms=3, color=colors[j], label=f"exp {j}")
        if not np.isnan(R[j, j]):
            ax.plot([j], [R[j, j]], marker="*", ms=9, color=colors[j])  # the step that trained experience j
    if b is not None:
        ax.axvline(-0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(steps)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("after training experience (−1 = before training)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    if T <= 12:
        ax.legend(fontsize="small", ncols=2 if T > 6 else 1, loc="best")
    return save_png(fig, path)


def plot_leaderboard(leaderboard_df: pd.DataFrame, path, metric: str = "acc") -> Path:
    """Bars of ``<metric>_mean`` with ``<metric>_sem`` error bars, one panel per (benchmark, scenario)."""
    mean, sem = f"{metric}_mean", f"{metric}_sem"
    missing = [c for c in ["benchmark", "scenario", "strategy", mean, sem] if c not in leaderboard_df.columns]
    if missing:
        raise ValueError(f"leaderboard lacks column(s) {missing} needed to plot {metric!r}")
    if leaderboard_df.empty:
        raise ValueError("leaderboard is empty: nothing to plot")
    panels = []
    for key, g in leaderboard_df.groupby(["benchmark", "scenario"], sort=True):
        g = g.sort_values(mean, ascending=True, na_position="first")
        repeated = g["strategy"].duplicated(keep=False)
        rows = zip(g["strategy"], g.to_dict("records"), repeated, strict=True)
        labels = [f"{s} ({_changed(row)})" if r else s for s, row, r in rows]
        if "n_seeds" in g.columns:
            labels = [f"{label} (n={n})" for label, n in zip(labels, g["n_seeds"], strict=True)]
        # Long hyperparameter lists are wrapped, so that the labels never squeeze the bars away.
        panels.append((key, g, [textwrap.fill(label, 40) for label in labels]))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    lines = max(sum(label.count("\n") + 1 for label in labels) for _, _, labels in panels)
    height = max(2.5, 0.3 * lines + 0.1 * max(len(g) for _, g, _ in panels) + 1.2)
    fig = _figure(6 * ncols, height * nrows)
    for k, ((bench, scen), g, labels) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        y = np.arange(len(g))
        ax.barh(y, g[mean].fillna(0), xerr=g[sem].fillna(0), capsize=3, color="tab:blue", alpha=0.8)
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_xlabel(f"{metric} (mean ± SEM over seeds)")
        ax.set_title(f"{bench} / {scen}")
        if metric in {"acc", "la", "aia"}:
            ax.set_xlim(0, 1)
    return save_png(fig, path)


def plot_output_dir(
    evals_df: pd.DataFrame, summary_df: pd.DataFrame, leaderboard_df: pd.DataFrame, out_dir
) -> list[Path]:
    """Write plots/<run_id>_matrix.png and plots/<run_id>_curves.png for every run of the summary (the ok runs),
    and plots/leaderboard_acc.png when the leaderboard is not empty. Returns the written paths.
    """
    plots = Path(out_dir) / "plots"
    written = []
    for run in summary_df.itertuples(index=False):
        R, b = matrices_from_evals(evals_df, run.run_id)
        title = f"{run.strategy} on {run.benchmark} ({run.scenario}), seed {run.seed}"
        written.append(plot_accuracy_matrix(R, title, plots / f"{run.run_id}_matrix.png"))
        written.append(plot_accuracy_curves(R, b, title, plots / f"{run.run_id}_curves.png"))
    if not leaderboard_df.empty:
        written.append(plot_leaderboard(leaderboard_df, plots / "leaderboard_acc.png", metric="acc"))
    return written


def _changed(row) -> str:
    """Label text for a strategy shown with several configurations: the hyperparameter label recorded with its runs
    (tables.labels_of), never one computed by importing the strategy a folder names."""
    label = row.get("label") if hasattr(row, "get") else getattr(row, "label", None)
    if isinstance(label, str) and label:
        return label
    return tables.label_from_json(row.get("params") if hasattr(row, "get") else getattr(row, "params", ""))
