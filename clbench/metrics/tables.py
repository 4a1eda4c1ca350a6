"""Result-table schema and the pure pandas steps evals → matrices → summary → leaderboard (no torch, no file I/O).

Tables are long (one row per observation) until :func:`leaderboard`, the only wide table. The metric formulas and
their handling of missing (not evaluated) entries live in :mod:`clbench.metrics.matrix`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from clbench.errors import UsageError
from clbench.metrics.matrix import (
    accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    learning_accuracy,
)

__all__ = [
    "COSTS_COLUMNS",
    "EVALS_COLUMNS",
    "LEADERBOARD_KEYS",
    "LEADERBOARD_METRICS",
    "MATRIX_METRICS",
    "RUNS_COLUMNS",
    "SUMMARY_COLUMNS",
    "evals_from_matrices",
    "format_mean_sem",
    "hyperparameter_label",
    "label_from_json",
    "labels_of",
    "leaderboard",
    "matrices_from_evals",
    "mean_sem_str",
    "summarize",
]

RUNS_COLUMNS = [
    "run_id", "config_id", "benchmark", "scenario", "strategy", "seed", "stream_seed", "params", "label",
    "strategy_ref", "train_config", "versions", "device", "started_at", "duration_s", "status", "error",
]  # fmt: skip
EVALS_COLUMNS = ["run_id", "benchmark", "scenario", "strategy", "seed", "step", "eval_exp", "metric", "value", "n"]
COSTS_COLUMNS = ["run_id", "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb"]
SUMMARY_COLUMNS = [
    "run_id", "config_id", "benchmark", "scenario", "strategy", "params", "label", "seed",
    "acc", "bwt", "fwt", "forgetting", "la", "aia", "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb",
]  # fmt: skip

#: summary column → function of (R, b)
MATRIX_METRICS = {
    "acc": lambda R, b: accuracy(R),
    "bwt": lambda R, b: backward_transfer(R),
    "fwt": forward_transfer,
    "forgetting": lambda R, b: forgetting(R),
    "la": lambda R, b: learning_accuracy(R),
    "aia": lambda R, b: average_incremental_accuracy(R),
}
LEADERBOARD_METRICS = [*MATRIX_METRICS, *COSTS_COLUMNS[1:]]
LEADERBOARD_KEYS = ["benchmark", "scenario", "strategy", "params", "config_id"]


def hyperparameter_label(params: dict, defaults: dict | None = None) -> str:
    """The short label of a configuration's hyperparameters: "name=value ..." of those that differ from `defaults`
    ("defaults" if none). Without `defaults` (a folder recorded before labels were journaled) every value is shown:
    the label is rebuilt from the recorded JSON alone, never by importing the strategy it names."""
    defaults = defaults or {}
    missing = object()
    changed = {k: v for k, v in params.items() if defaults.get(k, missing) != v}
    return " ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "defaults"


def labels_of(runs_df: pd.DataFrame) -> pd.Series:
    """The `label` column of a runs table; rows without one (older folders) get the label of their JSON params."""
    recorded = runs_df["label"] if "label" in runs_df.columns else pd.Series(None, index=runs_df.index, dtype=object)
    labels = [lab if isinstance(lab, str) and lab else label_from_json(text)
              for lab, text in zip(recorded, runs_df["params"], strict=True)]
    return pd.Series(labels, index=runs_df.index, dtype=object)


def label_from_json(text) -> str:
    """The label of params recorded as JSON text (every value; the text itself if it is not a JSON object)."""
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    return hyperparameter_label(params) if isinstance(params, dict) else str(text)


def _require(df: pd.DataFrame, columns, name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UsageError(f"{name} table lacks column(s) {missing}; expected {list(columns)}")


def _matrices(rows: pd.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(R, b) from the eval rows of one run and one metric."""
    step = rows["step"].to_numpy(dtype=int)
    exp = rows["eval_exp"].to_numpy(dtype=int)
    if (step < -1).any() or (exp < 0).any():
        raise ValueError(f"{label}: step must be ≥ -1 and eval_exp ≥ 0")
    if pd.DataFrame({"s": step, "e": exp}).duplicated().any():
        raise ValueError(f"{label}: duplicate (step, eval_exp) rows; each cell must be evaluated once")
    T = int(max(exp.max(), step.max()) + 1)
    values = rows["value"].to_numpy(dtype=float)
    R = np.full((T, T), np.nan)
    trained = step >= 0
    R[step[trained], exp[trained]] = values[trained]
    b = None
    if (~trained).any():
        b = np.full(T, np.nan)
        b[exp[~trained]] = values[~trained]
    return R, b


def matrices_from_evals(
    evals_df: pd.DataFrame, run_id, metric: str = "accuracy"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Accuracy matrix ``R[step, eval_exp]`` (rows with step ≥ 0) and baseline ``b`` (step = −1, else None) of one run.

    T = 1 + the largest step or eval_exp seen. Cells that were not evaluated are NaN (the metrics skip them).
    """
    _require(evals_df, ["run_id", "step", "eval_exp", "metric", "value"], "evals")
    rows = evals_df[(evals_df["run_id"] == run_id) & (evals_df["metric"] == metric)]
    if rows.empty:
        known = sorted(evals_df.loc[evals_df["run_id"] == run_id, "metric"].unique())
        raise UsageError(f"no {metric!r} evals for run {run_id!r}; metrics recorded for this run: {known}")
    return _matrices(rows, f"run {run_id!r}, metric {metric!r}")


def evals_from_matrices(run_meta: dict, R, b, n: list, metric: str = "accuracy") -> pd.DataFrame:
    """The inverse of :func:`matrices_from_evals`: tidy eval rows (EVALS_COLUMNS) of one run.

    ``run_meta`` gives run_id, benchmark, scenario, strategy, seed; ``n[j]`` is the test size of experience j.
    NaN cells of R (and b) are treated as not evaluated and produce no row.
    """
    meta_keys = ["run_id", "benchmark", "scenario", "strategy", "seed"]
    missing = [k for k in meta_keys if k not in run_meta]
    if missing:
        raise ValueError(f"run_meta lacks {missing}; it needs {meta_keys}")
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.size == 0:
        raise ValueError(f"R must be a non-empty square T×T matrix, got shape {R.shape}")
    T = R.shape[0]
    if len(n) != T:
        raise ValueError(f"n must give one test size per experience (T={T}), got {len(n)}")
    full = R if b is None else np.vstack([np.asarray(b, dtype=float).reshape(1, T), R])
    first = 0 if b is None else -1
    step, exp = np.nonzero(~np.isnan(full))
    df = pd.DataFrame({
        **{k: run_meta[k] for k in meta_keys},
        "step": step + first,
        "eval_exp": exp,
        "metric": metric,
        "value": full[step, exp],
        "n": np.asarray(n, dtype=int)[exp],
    })  # fmt: skip
    return df[EVALS_COLUMNS]


def summarize(evals_df: pd.DataFrame, runs_df: pd.DataFrame, costs_df: pd.DataFrame | None) -> pd.DataFrame:
    """One row per run with status "ok" (SUMMARY_COLUMNS): the matrix metrics of its accuracy evals plus its costs.

    Costs come from ``costs_df`` (run_id, train_s, eval_s, peak_rss_mb, strategy_mem_mb); a run without a costs row
    gets NaN costs. An ok run without accuracy evals is an error.
    """
    _require(runs_df, ["run_id", "config_id", "benchmark", "scenario", "strategy", "params", "seed", "status"], "runs")
    _require(evals_df, ["run_id", "step", "eval_exp", "metric", "value"], "evals")
    ok = runs_df[runs_df["status"] == "ok"].drop_duplicates("run_id", keep="last")
    groups = dict(tuple(evals_df[evals_df["metric"] == "accuracy"].groupby("run_id", sort=False)))
    records = []
    for run in ok.itertuples(index=False):
        if run.run_id not in groups:
            raise UsageError(f"run {run.run_id!r} has status 'ok' but no 'accuracy' rows in evals")
        R, b = _matrices(groups[run.run_id], f"run {run.run_id!r}")
        records.append({"run_id": run.run_id, **{m: f(R, b) for m, f in MATRIX_METRICS.items()}})
    metrics = pd.DataFrame(records, columns=["run_id", *MATRIX_METRICS])
    ok = ok.assign(label=labels_of(ok))
    out = ok[["run_id", "config_id", "benchmark", "scenario", "strategy", "params", "label", "seed"]].merge(
        metrics, on="run_id")
    if costs_df is None:
        costs_df = pd.DataFrame(columns=COSTS_COLUMNS)
    _require(costs_df, COSTS_COLUMNS, "costs")
    if costs_df["run_id"].duplicated().any():
        raise ValueError("costs table has several rows for one run_id")
    out = out.merge(costs_df[COSTS_COLUMNS], on="run_id", how="left")
    out[COSTS_COLUMNS[1:]] = out[COSTS_COLUMNS[1:]].astype(float)
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


def leaderboard(summary_df: pd.DataFrame) -> pd.DataFrame:
    """Seeds aggregated per (benchmark, scenario, strategy, params, config_id): ``label`` (the short hyperparameter
    label, when the summary has one), ``n_seeds`` and, per metric,
    ``<m>_mean`` and ``<m>_sem`` (standard error of the mean, ddof=1, over the seeds where the metric is defined;
    NaN with a single seed). Sorted by benchmark, scenario, then acc_mean descending. The only wide table.
    """
    _require(summary_df, [*LEADERBOARD_KEYS, "seed", *LEADERBOARD_METRICS], "summary")
    grouped = summary_df.groupby(LEADERBOARD_KEYS, dropna=False, sort=False)
    out = grouped.size().rename("n_seeds").to_frame()
    if "label" in summary_df.columns:  # one label per configuration: its params decide it
        out["label"] = grouped["label"].first()
    for m in LEADERBOARD_METRICS:
        values = grouped[m]
        out[f"{m}_mean"] = values.mean().astype(float)
        out[f"{m}_sem"] = values.sem(ddof=1).astype(float)
    out = out.reset_index()
    if "label" in out.columns:  # beside the params it abbreviates
        out.insert(out.columns.get_loc("params") + 1, "label", out.pop("label"))
    out = out.sort_values(["benchmark", "scenario", "acc_mean"], ascending=[True, True, False], kind="stable")
    return out.reset_index(drop=True)


def mean_sem_str(mean: float, sem: float, digits: int = 3) -> str:
    """Format as "0.812 ± 0.004"; just "0.812" when the SEM is undefined (one seed), "n/a" without a mean."""
    if mean is None or math.isnan(mean):
        return "n/a"
    if sem is None or math.isnan(sem):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


def format_mean_sem(leaderboard_df: pd.DataFrame, metrics=None, digits: int = 3) -> pd.DataFrame:
    """Human-readable view of a leaderboard: the keys, n_seeds and one "mean ± sem" string column per metric."""
    metrics = [m for m in (metrics or LEADERBOARD_METRICS) if f"{m}_mean" in leaderboard_df.columns]
    keys = [c for c in [*LEADERBOARD_KEYS, "n_seeds"] if c in leaderboard_df.columns]
    out = leaderboard_df[keys].copy()
    for m in metrics:
        pairs = zip(leaderboard_df[f"{m}_mean"], leaderboard_df[f"{m}_sem"], strict=True)
        out[m] = [mean_sem_str(a, s, digits) for a, s in pairs]
    return out
