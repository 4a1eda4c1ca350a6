"""Plots of results: per run the accuracy matrix and curves; per benchmark × scenario the figures a paper uses (the
seed-averaged average-accuracy curves with ±SEM bands and the leaderboard bars on a zoomed axis), with failed runs
marked; and the leaderboard overview.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (never pyplot), so no screen is needed, no
global backend is switched and no figure stays registered; each file (PNG, PDF or SVG, by its extension) is written
atomically (temp file + os.replace) by store.write_atomic, the tables' writer.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clbench.metrics import tables
from clbench.metrics.tables import matrices_from_evals
from clbench.results.store import write_atomic

__all__ = [
    "FORMATS",
    "Curve",
    "average_accuracy_by_step",
    "average_accuracy_curves",
    "bar_rows",
    "config_label",
    "plot_accuracy_curves",
    "plot_accuracy_matrix",
    "plot_average_accuracy",
    "plot_leaderboard",
    "plot_output_dir",
    "plot_stability_gap",
    "run_counts",
    "save_figure",
    "save_png",
    "stability_gap_panels",
    "stability_gap_series",
    "zoomed_limits",
]

#: The file formats of `clbench plot --format` (all of them matplotlib savefig formats); the first is the default.
FORMATS = ("png", "pdf", "svg")
DPI = 100
#: No creation date in the file, so that drawing the same results twice gives the same PDF / SVG.
_METADATA = {"png": None, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
#: Metrics that live in [0, 1] and whose bars get a zoomed value axis by default (see zoomed_limits).
BOUNDED_METRICS = {"acc", "la", "aia"}
FAILED_GREY = "0.45"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def format_of(path) -> str:
    """The file format that ``path``'s extension names (png, pdf or svg); ValueError for any other."""
    fmt = Path(path).suffix.lower().removeprefix(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot save a figure as {str(path)!r}: the file name must end in one of "
                         f"{', '.join('.' + f for f in FORMATS)}")
    return fmt


def save_figure(fig: Figure, path, format: str | None = None):  # noqa: A002 (matplotlib's own name)
    """Write ``fig`` to ``path`` in the format its extension names (or ``format``), atomically: a temp file in the
    same folder, then os.replace. ``path`` may also be a binary stream (e.g. io.BytesIO), written as it is (PNG unless
    ``format`` says otherwise), for pages that embed the image instead of linking a file."""
    if hasattr(path, "write"):
        fmt = format or "png"
        try:
            fig.savefig(path, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
        finally:
            fig.clear()
        return path
    path = Path(path)
    fmt = format or format_of(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    try:  # the tables' writer: same temp files, mode, stale-temp cleanup and full-disk error
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA[fmt]))
    finally:
        fig.clear()
    return path


def save_png(fig: Figure, path):
    """save_figure as PNG, whatever ``path``'s extension (a path or a binary stream)."""
    return save_figure(fig, path, format="png")


# ---------------------------------------------------------------------------------------------------------------------
# per run


def matrix_figure(R, title: str, b=None) -> Figure:
    """The figure of plot_accuracy_matrix (not saved)."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    cells = R if b is None else np.vstack([np.asarray(b, dtype=float), R])
    row_labels = [str(t) for t in range(T)] if b is None else ["b", *(str(t) for t in range(T))]
    side = min(4 + 0.6 * T, 16)
    fig = _figure(side + 1, side + (0.6 if b is not None and T < 20 else 0))
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
    ax.set_ylabel("after training experience i" + (" (b: before training)" if b is not None else ""))
    ax.set_title(title)
    return fig


def plot_accuracy_matrix(R, title: str, path, b=None) -> Path:
    """Heatmap of R with each cell annotated (rows: after training i, columns: evaluated on j); NaN cells blank.
    With ``b``, the accuracies before any training are drawn as a first row labelled "b"."""
    return save_figure(matrix_figure(R, title, b), path)


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
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------------------
# labels and failure marks


def _get(row, key, default=None):
    """A field of a leaderboard row given as a dict, a pandas Series or an itertuples() namedtuple."""
    if hasattr(row, "get"):
        return row.get(key, default)
    return getattr(row, key, default)


def _count(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def run_counts(row) -> tuple[str, int | None, int | None]:
    """(status, n_ok, n_runs) of a leaderboard row. status is "ok" (every run finished), "partial" (some failed) or
    "failed" (all failed): the row's ``status`` column, else derived from ``n_ok`` / ``n_runs``; a leaderboard without
    failure accounting (only ``n_seeds``) reads as every run ok, with n_seeds of n_seeds."""
    n_ok, n_runs = _count(_get(row, "n_ok")), _count(_get(row, "n_runs"))
    if n_ok is None and n_runs is None:
        n_ok = n_runs = _count(_get(row, "n_seeds"))
    status = _get(row, "status")
    if status not in tables.STATUS_ORDER:
        if n_ok is None or n_runs is None:
            status = "ok"
        else:
            status = "ok" if n_ok >= n_runs else ("failed" if n_ok == 0 else "partial")
    return status, n_ok, n_runs


def with_status(base: str, row) -> str:
    """``base`` (a configuration's label) marked with its runs' outcome: unchanged when every run finished,
    "ewc (2/3 ok)" when some failed, "ewc (failed, 0/3 ok)" when all failed."""
    status, n_ok, n_runs = run_counts(row)
    counts = f"{n_ok}/{n_runs} ok" if n_ok is not None and n_runs is not None else ""
    if status == "partial":
        return f"{base} ({counts or 'partial'})"
    if status == "failed":
        return f"{base} (failed{', ' + counts if counts else ''})"
    return base


def config_label(row, with_label: bool) -> str:
    """The name of a configuration in a figure: its strategy, with the short hyperparameter label (the ``label``
    column, see _changed) when ``with_label`` (the strategy has several configurations in the panel), marked by
    with_status."""
    strategy = str(_get(row, "strategy"))
    return with_status(f"{strategy} ({_changed(row)})" if with_label else strategy, row)


def _panel_labels(g: pd.DataFrame) -> list[str]:
    """config_label of every row of one benchmark × scenario; the label part only where a strategy repeats."""
    repeated = g["strategy"].duplicated(keep=False)
    return [config_label(row, r) for row, r in zip(g.to_dict("records"), repeated, strict=True)]


def strategy_colors(strategies) -> dict[str, str]:
    """name → matplotlib colour, by sorted name, so that one strategy (or configuration) has one colour in every
    figure."""
    # tab20's dark shades first, then its light ones: 20 distinct colours (a reference board has 11 strategies and
    # more configurations, and the default 10-colour cycle gave two of them one colour)
    palette = [to_hex(colormaps["tab20"](i)) for i in (*range(0, 20, 2), *range(1, 20, 2))]
    return {s: palette[k % len(palette)] for k, s in enumerate(sorted({str(s) for s in strategies}))}


# ---------------------------------------------------------------------------------------------------------------------
# leaderboard bars


@dataclass
class Bar:
    """One slot of a leaderboard bar chart."""

    label: str  # tick label: config_label, plus "(n=3)" for a complete configuration
    strategy: str
    value: float  # NaN: no bar (failed, or the metric is n/a)
    error: float  # the SEM (0 when undefined)
    status: str  # ok / partial / failed (run_counts)
    hatch: str  # "//" for a partial configuration (its mean is over the surviving seeds only), "" otherwise
    note: str  # text written in an empty slot: "failed" (with the first error) or "n/a"


def bar_rows(g: pd.DataFrame, metric: str = "acc", order: str = "value") -> list[Bar]:
    """The slots of one benchmark × scenario panel, bottom to top. ``order="value"``: as the leaderboard ranks them,
    complete configurations on top by the mean (highest first), then partial ones (means over the surviving seeds
    only), then failed ones and any without a value; ``order="name"``: by strategy and label, the first on top, the
    same order in every panel and every metric."""
    mean, sem = f"{metric}_mean", f"{metric}_sem"
    g = g.reset_index(drop=True)
    labels = _panel_labels(g)
    if order == "value":
        rank = [tables.STATUS_ORDER[run_counts(r)[0]] for r in g.to_dict("records")]
        keys = pd.DataFrame({"rank": rank, "value": g[mean].astype(float)})
        index = keys.sort_values(["rank", "value"], ascending=[False, True], na_position="first", kind="stable").index
    elif order == "name":
        keys = pd.DataFrame({"s": g["strategy"].astype(str), "l": [str(_changed(r)) for r in g.to_dict("records")]})
        index = keys.sort_values(["s", "l"], ascending=False, kind="stable").index
    else:
        raise ValueError(f"unknown bar order {order!r}; valid choices: name, value")
    bars = []
    for k in index:
        row = g.loc[k]
        status, _, _ = run_counts(row)
        label = labels[k]
        if status == "ok" and _count(_get(row, "n_seeds")) is not None:
            label = f"{label} (n={_count(row['n_seeds'])})"
        value = float(row[mean]) if pd.notna(row[mean]) else math.nan
        error = float(row[sem]) if pd.notna(row[sem]) else 0.0
        note = ""
        if math.isnan(value):
            failure = _get(row, "failure")
            failure = failure if isinstance(failure, str) else ""
            note = ("failed" + (f": {textwrap.shorten(failure, 48, placeholder='…')}" if failure else "")
                    if status == "failed" else "n/a")  # fmt: skip
        bars.append(Bar(label=label, strategy=str(row["strategy"]), value=value, error=error, status=status,
                        hatch="//" if status == "partial" else "", note=note))  # fmt: skip
    return bars


def zoomed_limits(values, errors=None, bounds=(0.0, 1.0), margin: float = 0.1, min_span: float = 0.01):
    """The value axis of bars whose differences must be visible (task-IL accuracies of 0.9 vs 0.99): the data range
    (each bar's end ± its error) widened by ``margin`` of itself on each side (by at least ``min_span``/2), clipped to
    ``bounds``, and started at the lower bound when that is within a fifth of the span anyway (class-IL accuracies
    near 0); ``bounds`` itself when no value is finite."""
    values = np.asarray(values, dtype=float)
    errors = np.zeros_like(values) if errors is None else np.nan_to_num(np.asarray(errors, dtype=float))
    ok = np.isfinite(values)
    if not ok.any():
        return tuple(float(x) for x in bounds)
    lo, hi = float(np.min(values[ok] - errors[ok])), float(np.max(values[ok] + errors[ok]))
    pad = max(margin * (hi - lo), min_span / 2)
    lo, hi = max(lo - pad, bounds[0]), min(hi + pad, bounds[1])
    if lo - bounds[0] < 0.2 * (hi - lo):
        lo = bounds[0]
    return float(lo), float(hi)


def leaderboard_figure(leaderboard_df: pd.DataFrame, metric: str = "acc", zoom: bool | None = None,
                       order: str = "value", colors: dict[str, str] | None = None) -> Figure:  # fmt: skip
    """The figure of plot_leaderboard (not saved)."""
    mean, sem = f"{metric}_mean", f"{metric}_sem"
    missing = [c for c in ["benchmark", "scenario", "strategy", mean, sem] if c not in leaderboard_df.columns]
    if missing:
        raise ValueError(f"leaderboard lacks column(s) {missing} needed to plot {metric!r}")
    if leaderboard_df.empty:
        raise ValueError("leaderboard is empty: nothing to plot")
    zoom = metric in BOUNDED_METRICS if zoom is None else zoom
    colors = colors or strategy_colors(leaderboard_df["strategy"])
    panels = []
    for key, g in leaderboard_df.groupby(["benchmark", "scenario"], sort=True):
        bars = bar_rows(g, metric, order)
        for bar in bars:  # long hyperparameter lists are wrapped, so that the labels never squeeze the bars away
            bar.label = textwrap.fill(bar.label, 40)
        panels.append((key, bars))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    lines = max(sum(bar.label.count("\n") + 1 for bar in bars) for _, bars in panels)
    height = max(2.5, 0.3 * lines + 0.1 * max(len(bars) for _, bars in panels) + 1.4)
    fig = _figure(6.5 * ncols, height * nrows)
    for k, ((bench, scen), bars) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        y = np.arange(len(bars))
        values = np.array([bar.value for bar in bars])
        errors = np.array([bar.error for bar in bars])
        drawn = ax.barh(y, np.nan_to_num(values), xerr=np.where(np.isnan(values), 0, errors), capsize=3,
                        color=[colors.get(bar.strategy, "tab:blue") for bar in bars], alpha=0.85)  # fmt: skip
        for patch, bar in zip(drawn.patches, bars, strict=True):
            if math.isnan(bar.value):
                patch.set_visible(False)  # an empty slot, never a bar of length 0 that reads as a result
            elif bar.hatch:
                patch.set_hatch(bar.hatch)
                patch.set_edgecolor("black")
                patch.set_linewidth(0.6)
        xlabel = f"{metric} (mean ± SEM over seeds)"
        if zoom:
            bounds = (0.0, 1.0) if metric in BOUNDED_METRICS else (-np.inf, np.inf)
            lo, hi = zoomed_limits(values, errors, bounds=bounds)
            ax.set_xlim(lo, hi)
            if lo > 0:
                xlabel += f"\naxis zoomed: starts at {lo:.3g}, not 0"
        elif metric in BOUNDED_METRICS:
            ax.set_xlim(0, 1)
        for yk, bar in zip(y, bars, strict=True):
            if bar.note:
                ax.text(0.02, yk, bar.note, transform=ax.get_yaxis_transform(), va="center", ha="left",
                        fontsize="small", color=FAILED_GREY, style="italic")  # fmt: skip
        ax.set_yticks(y, [bar.label for bar in bars], fontsize="small")
        for tick, bar in zip(ax.get_yticklabels(), bars, strict=True):
            if bar.status != "ok":
                tick.set_color("firebrick" if bar.status == "failed" else "darkorange")
        if any(bar.hatch for bar in bars):
            xlabel += "\nhatched: some seeds failed, the mean is over the rest"
        ax.set_xlabel(xlabel)
        ax.set_title(f"{bench} / {scen}")
    return fig


def plot_leaderboard(leaderboard_df: pd.DataFrame, path, metric: str = "acc", zoom: bool | None = None,
                     order: str = "value", colors: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Bars of ``<metric>_mean`` with ``<metric>_sem`` error bars, one panel per (benchmark, scenario).

    ``zoom`` (default: for acc, la and aia) sets the value axis to the data range with a margin (zoomed_limits) and
    says so under the axis; otherwise accuracies span 0..1 and other metrics start at 0. A configuration whose runs
    partly failed is hatched and labelled "(2/3 ok)"; one whose runs all failed is an empty slot reading "failed".
    ``order`` ("value" or "name") and ``colors`` (strategy → colour) are bar_rows' and strategy_colors'.
    """
    return save_figure(leaderboard_figure(leaderboard_df, metric, zoom, order, colors), path)


# ---------------------------------------------------------------------------------------------------------------------
# average-accuracy curves


def average_accuracy_by_step(R) -> np.ndarray:
    """A_i = mean of R[i, 0..i], the accuracy on the experiences seen so far after training experience i; NaN for a
    partly evaluated row, as in average_incremental_accuracy."""
    R = np.asarray(R, dtype=float)
    return np.array([R[i, : i + 1].mean() for i in range(R.shape[0])])


def mean_sem_over_seeds(arrays) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise mean and standard error (ddof=1) of arrays of one length, skipping NaN (not evaluated); the mean
    is NaN where no seed has a value, the SEM where fewer than two have."""
    width = max(len(a) for a in arrays)
    stack = np.full((len(arrays), width), np.nan)
    for k, a in enumerate(arrays):
        stack[k, : len(a)] = a
    present = ~np.isnan(stack)
    n = present.sum(axis=0)
    mean = np.where(present, stack, 0).sum(axis=0) / np.where(n > 0, n, np.nan)
    squares = np.where(present, (stack - mean) ** 2, 0).sum(axis=0)
    sem = np.sqrt(squares / np.where(n > 1, n - 1, np.nan)) / np.sqrt(np.where(n > 1, n, np.nan))
    return mean, sem


@dataclass
class Curve:
    """One configuration's seed-averaged average-accuracy curve (empty for a configuration without a finished run)."""

    label: str  # with_status'd: "ewc (2/3 ok)", "ewc (failed, 0/3 ok)"
    key: str  # what the colour is looked up by
    status: str
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sem: np.ndarray = field(default_factory=lambda: np.zeros(0))


def average_accuracy_curves(board: pd.DataFrame, matrices: dict, runs_of: dict, labels: dict | None = None):
    """Per (benchmark, scenario) of the leaderboard, the Curve of each configuration: the mean and SEM over its
    finished seeds of average_accuracy_by_step. ``matrices``: run_id → R; ``runs_of``: config_id → its finished
    run ids; ``labels``: config_id → the configuration's name (default: its strategy, with the hyperparameter label
    where the strategy has several configurations in the panel). Colours are looked up by that name."""
    out = {}
    for key, g in board.groupby(["benchmark", "scenario"], sort=True):
        g = g.reset_index(drop=True)
        repeated = g["strategy"].duplicated(keep=False)
        curves = []
        for row, rep in zip(g.to_dict("records"), repeated, strict=True):
            base = (labels or {}).get(row["config_id"]) or (
                f"{row['strategy']} ({_changed(row)})" if rep else str(row["strategy"]))
            status, _, _ = run_counts(row)
            curve = Curve(label=with_status(base, row), key=base, status=status)
            run_ids = [r for r in runs_of.get(row["config_id"], []) if r in matrices]
            if run_ids:
                curve.mean, curve.sem = mean_sem_over_seeds([average_accuracy_by_step(matrices[r]) for r in run_ids])
            elif status == "ok":  # a leaderboard row without runs and without failure accounting: a failure
                curve.status, curve.label = "failed", f"{base} (failed)"
            curves.append(curve)
        out[key] = curves
    return out


def average_accuracy_figure(curves: list[Curve], title: str, colors: dict[str, str] | None = None) -> Figure:
    """The figure of plot_average_accuracy (not saved)."""
    colors = colors or strategy_colors(c.key for c in curves)
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    T = max([len(c.mean) for c in curves] + [1])
    for curve in curves:
        if curve.mean.size == 0 or np.isnan(curve.mean).all():
            ax.plot([], [], ls="none", marker="x", color=FAILED_GREY, label=curve.label)  # listed, no curve
            continue
        color = colors.get(curve.key)
        steps = np.arange(len(curve.mean))
        ok = ~np.isnan(curve.mean)
        dashed = "--" if curve.status == "partial" else "-"
        line, = ax.plot(steps[ok], curve.mean[ok], marker="o", ms=4, ls=dashed, color=color, label=curve.label)
        band = ok & ~np.isnan(curve.sem)
        if band.any():
            ax.fill_between(steps[band], (curve.mean - curve.sem)[band], (curve.mean + curve.sem)[band],
                            color=line.get_color(), alpha=0.2, lw=0)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.2, T - 0.8)
    # zoomed like the bars, so that task-IL curves near 1 stay apart; said on the axis when it does not start at 0
    drawn = [(c.mean, np.nan_to_num(c.sem)) for c in curves if c.mean.size]
    lo, hi = zoomed_limits(np.concatenate([m for m, _ in drawn]), np.concatenate([e for _, e in drawn]),
                           margin=0.05, min_span=0.05) if drawn else (0.0, 1.0)  # fmt: skip
    ax.set_ylim(lo - 0.01 * (lo == 0), hi + 0.01 * (hi == 1))
    ax.set_xlabel("after training experience i")
    ax.set_ylabel("average accuracy on experiences 0..i" + (f"\n(axis zoomed: starts at {lo:.3g}, not 0)" if lo > 0
                                                           else ""))  # fmt: skip
    ax.set_title(title)
    outside = len(curves) > 8
    ax.legend(fontsize="small", title="mean ± SEM over seeds", title_fontsize="small",
              **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if outside else {"loc": "best"}))  # fmt: skip
    return fig


def plot_average_accuracy(curves: list[Curve], title: str, path, colors: dict[str, str] | None = None):
    """One line per configuration: the mean over seeds of A_i against the training step i, in a band of ± its SEM
    (none with one seed); points without a value are left out. The accuracy axis spans the data with a margin
    (zoomed_limits), from 0 when the data come near it, and says so when it does not start at 0. A configuration
    whose runs partly failed is dashed and labelled "(2/3 ok)"; one without a finished run is listed in the legend
    as "(failed, 0/3 ok)" with no line. ``colors`` maps Curve.key to matplotlib colours, so that a configuration
    keeps its colour across panels."""
    return save_figure(average_accuracy_figure(curves, title, colors), path)


# ---------------------------------------------------------------------------------------------------------------------
# continual evaluation


def stability_gap_series(curves_df: pd.DataFrame, run_ids: list[str]) -> dict[int, pd.DataFrame]:
    """Per experience j, the accuracy on j from the start of its training to the end of the stream against the
    global step: columns global_step, mean and sem over the runs (seeds) that have the point (ddof=1; NaN with one).
    From the curves' ``accuracy`` rows of ``run_ids`` (points with train_exp ≥ j)."""
    rows = curves_df[curves_df["run_id"].isin(run_ids) & (curves_df["metric"] == "accuracy")
                     & (curves_df["train_exp"] >= curves_df["eval_exp"])]
    out = {}
    for j, g in rows.groupby("eval_exp", sort=True):
        stats = g.groupby("global_step", sort=True)["value"].agg(["mean", "sem", "count"]).reset_index()
        out[int(j)] = stats.assign(sem=stats["sem"].where(stats["count"] > 1))
    return out


def stability_gap_figure(panels: list[tuple[str, str, dict, list[int]]], title: str) -> Figure:
    """The figure of plot_stability_gap (not saved). ``panels``: (label, status, series, boundaries) per
    configuration, series as stability_gap_series returns, boundaries the global steps where experiences start."""
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(4.6 * cols, 3.3 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    colors = strategy_colors(f"experience {j}" for j in range(max([len(p[2]) for p in panels] + [1])))
    for ax, (label, status, series, boundaries) in zip(axes.flat, panels, strict=False):
        ax.set_title(label, fontsize="small")
        if not series:
            ax.text(0.5, 0.5, "failed: no curves" if status == "failed" else "no curves", ha="center",
                    va="center", transform=ax.transAxes, color=FAILED_GREY)
            continue
        for x in boundaries:
            ax.axvline(x, color="0.6", lw=0.8, ls=":")
        for j, stats in series.items():
            color = colors.get(f"experience {j}")
            dashed = "--" if status == "partial" else "-"
            ax.plot(stats["global_step"], stats["mean"], ls=dashed, lw=1.2, color=color, label=f"experience {j}")
            band = stats["sem"].notna()
            if band.any():
                ax.fill_between(stats["global_step"][band], (stats["mean"] - stats["sem"])[band],
                                (stats["mean"] + stats["sem"])[band], color=color, alpha=0.2, lw=0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("global step (dotted: a new experience starts)", fontsize="small")
    axes[0][0].set_ylabel("accuracy (mean ± SEM over seeds)")
    first = next((ax for ax, p in zip(axes.flat, panels, strict=False) if p[2]), None)
    if first is not None:
        first.legend(fontsize="x-small", loc="lower left")
    fig.suptitle(title)
    return fig


def plot_stability_gap(panels, title: str, path) -> Path:
    """De Lange et al.'s (2023) stability-gap figure: per configuration, the accuracy on every experience from the
    start of its training on, against the global step, seed-averaged with ±SEM bands, dotted lines where experiences
    start; a configuration whose runs partly failed is dashed and says "(2/3 ok)" in its title, one without a
    finished run is an empty panel saying "failed"."""
    return save_figure(stability_gap_figure(panels, title), path)


def stability_gap_panels(board: pd.DataFrame, curves_df: pd.DataFrame, runs_of: dict) -> dict:
    """Per (benchmark, scenario) of the leaderboard, the panels of plot_stability_gap, in the leaderboard's order."""
    out = {}
    for key, g in board.groupby(["benchmark", "scenario"], sort=True):
        panels = []
        for row, label in zip(g.to_dict("records"), _panel_labels(g), strict=True):
            status, _, _ = run_counts(row)
            run_ids = runs_of.get(row["config_id"], [])
            mine = curves_df[curves_df["run_id"].isin(run_ids)]
            starts = mine[(mine["exp_step"] == 0) & (mine["train_exp"] > 0)]["global_step"]
            panels.append((label, status, stability_gap_series(curves_df, run_ids),
                           sorted(starts.unique().tolist())))
        if any(p[2] for p in panels):
            out[key] = panels
    return out


# ---------------------------------------------------------------------------------------------------------------------
# an output folder


def _slug(text) -> str:
    """A file-name part: runs of anything but letters, digits, '.', '_' and '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"


def plot_output_dir(
    evals_df: pd.DataFrame, summary_df: pd.DataFrame, leaderboard_df: pd.DataFrame, out_dir, fmt: str = "png",
    curves_df: pd.DataFrame | None = None,
) -> list[Path]:
    """Write into ``out_dir``/plots, as ``fmt`` (png, pdf or svg), and return the written paths:

    - ``<run_id>_matrix`` (R with row b on top) and ``<run_id>_curves`` for every run of the summary (the ok runs);
    - per benchmark × scenario of the leaderboard, ``<benchmark>_<scenario>_curves`` (every configuration's
      seed-averaged average accuracy with ±SEM bands, failures marked) and ``<benchmark>_<scenario>_acc`` (the
      leaderboard's acc bars on a zoomed axis, failures marked);
    - ``leaderboard_acc``: those bars, every benchmark × scenario in one figure;
    - with continual-evaluation curves, per benchmark × scenario that has some, ``<benchmark>_<scenario>_stability_gap``
      (plot_stability_gap: one panel per configuration).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    plots = Path(out_dir) / "plots"
    written = []
    matrices = {}
    for run in summary_df.itertuples(index=False):
        R, b = matrices_from_evals(evals_df, run.run_id)
        matrices[run.run_id] = R
        title = f"{run.strategy} on {run.benchmark} ({run.scenario}), seed {run.seed}"
        written.append(plot_accuracy_matrix(R, title, plots / f"{run.run_id}_matrix.{fmt}", b=b))
        written.append(plot_accuracy_curves(R, b, title, plots / f"{run.run_id}_curves.{fmt}"))
    if leaderboard_df.empty:
        return written
    runs_of = summary_df.groupby("config_id")["run_id"].apply(list).to_dict() if len(summary_df) else {}
    colors = strategy_colors(leaderboard_df["strategy"])
    curves = average_accuracy_curves(leaderboard_df, matrices, runs_of)
    # one colour per configuration name in every panel (the strategy's colour when no strategy has several)
    curve_colors = strategy_colors(c.key for panel in curves.values() for c in panel)
    for (bench, scen), panel in curves.items():
        name = f"{_slug(bench)}_{_slug(scen)}"
        written.append(plot_average_accuracy(panel, f"{bench} / {scen}", plots / f"{name}_curves.{fmt}",
                                             curve_colors))
        rows = leaderboard_df[(leaderboard_df["benchmark"] == bench) & (leaderboard_df["scenario"] == scen)]
        written.append(plot_leaderboard(rows, plots / f"{name}_acc.{fmt}", metric="acc", colors=colors))
    written.append(plot_leaderboard(leaderboard_df, plots / f"leaderboard_acc.{fmt}", metric="acc", colors=colors))
    if curves_df is not None and not curves_df.empty:
        for (bench, scen), panels in stability_gap_panels(leaderboard_df, curves_df, runs_of).items():
            path = plots / f"{_slug(bench)}_{_slug(scen)}_stability_gap.{fmt}"
            written.append(plot_stability_gap(panels, f"{bench} / {scen}: accuracy during training", path))
    return written


def _changed(row) -> str:
    """Label text for a strategy shown with several configurations: the hyperparameter label recorded with its runs
    (tables.labels_of), never one computed by importing the strategy a folder names."""
    return tables.recorded_label(_get(row, "label"), _get(row, "params", ""))
