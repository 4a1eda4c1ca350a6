"""Result-table schema and the pure pandas steps evals → matrices → summary → leaderboard (no torch, no file I/O).

Tables are long (one row per observation) until :func:`leaderboard`, the only wide table. The metric formulas and
their handling of missing (not evaluated) entries live in :mod:`clbench.metrics.matrix`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from clbench.errors import UsageError, unknown_choice
from clbench.metrics.curves import CURVE_METRICS, curve_metrics
from clbench.metrics.lifelong import LIFELONG_METRICS
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
    "SPLITS",
    "LEADERBOARD_KEYS",
    "LEADERBOARD_METRICS",
    "LOWER_IS_BETTER",
    "MATRIX_METRICS",
    "NOT_APPLICABLE",
    "RUNS_COLUMNS",
    "SETTINGS_COLUMNS",
    "SUMMARY_COLUMNS",
    "evals_from_matrices",
    "format_mean_sem",
    "hyperparameter_label",
    "label_from_json",
    "labels_of",
    "recorded_label",
    "leaderboard",
    "matrices_from_evals",
    "mean_sem_str",
    "not_applicable_notes",
    "on_split",
    "phases_of",
    "settings_of",
    "summarize",
]

RUNS_COLUMNS = [
    "run_id", "config_id", "benchmark", "scenario", "strategy", "seed", "stream_seed", "params", "label",
    "strategy_ref", "train_config", "versions", "device", "started_at", "duration_s", "status", "error", "phase",
    "selected_by",
]  # fmt: skip
#: phase: "final" (every run of a folder from before [tune]), or "tune" for a hyperparameter-selection run, which is
#: evaluated on the validation set only (summaries on test leave it out).
PHASES = ("final", "tune")
#: split: "test", or "val" for the validation set of a run with validation_split (older folders: test only).
EVALS_COLUMNS = ["run_id", "benchmark", "scenario", "strategy", "seed", "step", "eval_exp", "metric", "split", "value",
                 "n"]
SPLITS = ("test", "val")
COSTS_COLUMNS = ["run_id", "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb"]
#: Continual evaluation (RunConfig.eval_period): one row per (run, evaluation point within training, evaluated
#: experience, metric). train_exp is the experience being trained, exp_step the optimizer steps done within it (0:
#: before its first), global_step and samples_seen count from the start of the stream.
CURVES_COLUMNS = ["run_id", "benchmark", "scenario", "strategy", "seed", "train_exp", "exp_step", "global_step",
                  "samples_seen", "eval_exp", "metric", "value", "n"]
#: The runner's settings as plain columns of the summary and the leaderboard, so that two configurations that differ
#: only in them (1 vs 5 epochs) are told apart by more than their config_id. All but stream_seed are read from the
#: runs table's train_config JSON (RunConfig.settings); a key an older folder did not record is NaN, except the
#: settings of SETTINGS_RECORDED_LATER.
SETTINGS_COLUMNS = [
    "optimizer", "optimizer_state", "lr", "momentum", "weight_decay", "batch_size", "drop_last", "epochs",
    "iterations", "backbone", "normalize", "class_order", "train_subset", "test_subset", "eval_every",
    "eval_period", "eval_subset", "validation_split", "n_experiences", "stream_seed",
]  # fmt: skip
_STRING_SETTINGS = {"optimizer", "optimizer_state", "backbone", "normalize", "class_order"}
_BOOL_SETTINGS = {"drop_last"}
#: Settings added after runs were recorded, with the value every run recorded before them trained with: a
#: train_config object without the key reads as that value (the run ids of such runs are unchanged, too).
RECORDED_LATER = {"optimizer_state": "reset", "normalize": "standardize", "drop_last": False}
#: The same for the run-level settings of RunConfig.settings (RunConfig.canonical leaves them out at these values).
SETTINGS_RECORDED_LATER = {**RECORDED_LATER, "eval_every": 1, "class_order": "seeded"}
SUMMARY_COLUMNS = [
    "run_id", "config_id", "benchmark", "scenario", "strategy", "params", "label", "seed", *SETTINGS_COLUMNS,
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
#: The metrics where less is better: what ranks, bolds and selects the lowest (everything else: the highest).
LOWER_IS_BETTER = frozenset({"forgetting", "forgetting_taw", "wf10", "train_s", "eval_s", "peak_rss_mb",
                             "strategy_mem_mb"})
#: The task-aware twins of MATRIX_METRICS (acc_taw, ...): the same functions of the ``accuracy_taw`` evals that a
#: class-IL run records beside its task-agnostic ``accuracy`` (FACIL's and Mammoth's TAw / TAg).
TAW_METRICS = [f"{m}_taw" for m in MATRIX_METRICS]
#: Columns that a summary and a leaderboard have only when some run recorded their evals: the task-aware metrics
#: (class-IL runs), the metrics of continual-evaluation curves (clbench.metrics.curves; runs with eval_period) and
#: l2metrics' lifelong-learning metrics (clbench.metrics.lifelong; `clbench leaderboard --l2metrics`).
OPTIONAL_METRICS = [*TAW_METRICS, *CURVE_METRICS, *LIFELONG_METRICS]
LEADERBOARD_KEYS = ["benchmark", "scenario", "strategy", "params", "config_id"]

#: metric → (scenarios where it is structurally uninformative, so the summary leaves it NaN; the footnote of every
#: printed view). FWT in class-IL: after training experience i−1 a single head never predicts the classes of
#: experience i, so R[i−1, i] = 0 for every method and FWT = −mean(b), a property of the initial model.
NOT_APPLICABLE = {
    "fwt": ({"class"}, "n/a in class-IL (a single head cannot predict unseen classes; see docs/METRICS.md)"),
    # l2metrics' forward transfer reads the same entries (clbench.results.experts; docs/L2METRICS.md)
    "ft_ratio": ({"class"}, "n/a in class-IL (as fwt; see docs/L2METRICS.md)"),
    "ft_contrast": ({"class"}, "n/a in class-IL (as fwt; see docs/L2METRICS.md)"),
}
#: A leaderboard row's status: every run finished, some failed, all failed. Also the ranking order (see leaderboard).
STATUS_ORDER = {"ok": 0, "partial": 1, "failed": 2}
FAILURE_CHARS = 80


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
    labels = [recorded_label(lab, text) for lab, text in zip(recorded, runs_df["params"], strict=True)]
    return pd.Series(labels, index=runs_df.index, dtype=object)


def recorded_label(label, params_text) -> str:
    """A row's recorded label, or, where it has none (an older folder), the label of its JSON params."""
    return label if isinstance(label, str) and label else label_from_json(params_text)


def label_from_json(text) -> str:
    """The label of params recorded as JSON text (every value; the text itself if it is not a JSON object)."""
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    return hyperparameter_label(params) if isinstance(params, dict) else str(text)


def settings_of(runs_df: pd.DataFrame) -> pd.DataFrame:
    """SETTINGS_COLUMNS of each row of a runs table, parsed from its ``train_config`` JSON with json alone (no
    strategy or runner is imported). A key the JSON lacks (older folders), a value of the wrong type, or a
    train_config that is not a JSON object gives NaN: a folder is untrusted input and must never crash a table."""
    texts = runs_df["train_config"] if "train_config" in runs_df.columns else [None] * len(runs_df)
    parsed = []
    for text in texts:
        try:
            value = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            value = None
        parsed.append(value if isinstance(value, dict) else {})
    out = pd.DataFrame(index=runs_df.index)
    for name in SETTINGS_COLUMNS:
        if name == "stream_seed":  # a runs column of its own, not part of train_config
            raw = runs_df["stream_seed"].tolist() if name in runs_df.columns else [None] * len(runs_df)
        elif name in SETTINGS_RECORDED_LATER:
            raw = [p.get(name, SETTINGS_RECORDED_LATER[name]) if p else None for p in parsed]
        else:
            raw = [p.get(name) for p in parsed]
        if name in _STRING_SETTINGS:
            out[name] = pd.Series([v if isinstance(v, str) else np.nan for v in raw], index=out.index, dtype=object)
        elif name in _BOOL_SETTINGS:
            out[name] = pd.Series([v if isinstance(v, bool) else np.nan for v in raw], index=out.index, dtype=object)
        else:
            numbers = [v if _is_number(v) else np.nan for v in raw]
            out[name] = pd.to_numeric(pd.Series(numbers, index=out.index, dtype=object))
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


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


def phases_of(runs_df: pd.DataFrame) -> pd.Series:
    """The phase of each run ("final" where an older folder recorded none)."""
    if "phase" not in runs_df.columns:
        return pd.Series("final", index=runs_df.index, dtype=object)
    return runs_df["phase"].where(runs_df["phase"].isin(PHASES), "final")


def on_split(evals_df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The eval rows of one split; a table without a split column (an older folder) is all test rows."""
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS)
    if "split" not in evals_df.columns:
        return evals_df if split == "test" else evals_df.iloc[0:0]
    return evals_df[evals_df["split"].fillna("test") == split]


def matrices_from_evals(
    evals_df: pd.DataFrame, run_id, metric: str = "accuracy", split: str = "test"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Accuracy matrix ``R[step, eval_exp]`` (rows with step ≥ 0) and baseline ``b`` (step = −1, else None) of one run
    on one split (test, or val with a validation split).

    T = 1 + the largest step or eval_exp seen. Cells that were not evaluated are NaN (the metrics skip them).
    """
    _require(evals_df, ["run_id", "step", "eval_exp", "metric", "value"], "evals")
    evals_df = on_split(evals_df, split)
    rows = evals_df[(evals_df["run_id"] == run_id) & (evals_df["metric"] == metric)]
    if rows.empty:
        known = sorted(evals_df.loc[evals_df["run_id"] == run_id, "metric"].unique())
        raise UsageError(f"no {metric!r} {split} evals for run {run_id!r}; metrics recorded for this run: {known}")
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
        "split": "test",
        "value": full[step, exp],
        "n": np.asarray(n, dtype=int)[exp],
    })  # fmt: skip
    return df[EVALS_COLUMNS]


def summarize(evals_df: pd.DataFrame, runs_df: pd.DataFrame, costs_df: pd.DataFrame | None,
              curves_df: pd.DataFrame | None = None, split: str = "test") -> pd.DataFrame:
    """One row per run with status "ok" (SUMMARY_COLUMNS): its settings (:func:`settings_of`), the matrix metrics of
    its accuracy evals on `split` (test; val for the validation set of runs with validation_split) and its costs;
    then, where some run has them, TAW_METRICS (from its ``accuracy_taw`` evals) and CURVE_METRICS (from its
    ``accuracy`` rows of ``curves_df``), NaN for the runs without. On val, a run without validation evals is left out.

    Costs come from ``costs_df`` (run_id, train_s, eval_s, peak_rss_mb, strategy_mem_mb); a run without a costs row
    gets NaN costs. An ok run without accuracy evals is an error. A metric is NaN in the scenarios where
    NOT_APPLICABLE says it is structurally uninformative (FWT in class-IL); the formula itself is unchanged.
    """
    _require(runs_df, ["run_id", "config_id", "benchmark", "scenario", "strategy", "params", "seed", "status"], "runs")
    _require(evals_df, ["run_id", "step", "eval_exp", "metric", "value"], "evals")
    ok = runs_df[runs_df["status"] == "ok"].drop_duplicates("run_id", keep="last")
    evals_df = on_split(evals_df, split)
    if split == "test":  # tuning runs are never evaluated on a test set
        ok = ok[phases_of(ok) != "tune"]
    else:
        ok = ok[ok["run_id"].isin(set(evals_df["run_id"]))]
    groups = dict(tuple(evals_df[evals_df["metric"] == "accuracy"].groupby("run_id", sort=False)))
    taw = dict(tuple(evals_df[evals_df["metric"] == "accuracy_taw"].groupby("run_id", sort=False)))
    curves = {}
    if curves_df is not None and not curves_df.empty:
        _require(curves_df, CURVES_COLUMNS, "curves")
        curves = dict(tuple(curves_df[curves_df["metric"] == "accuracy"].groupby("run_id", sort=False)))
    optional = [*(TAW_METRICS if taw else []), *(CURVE_METRICS if curves else [])]
    records = []
    for run in ok.itertuples(index=False):
        if run.run_id not in groups:
            raise UsageError(f"run {run.run_id!r} has status 'ok' but no 'accuracy' rows in evals")
        R, b = _matrices(groups[run.run_id], f"run {run.run_id!r}")
        values = {m: f(R, b) for m, f in MATRIX_METRICS.items()}
        for m, (scenarios, _) in NOT_APPLICABLE.items():
            if run.scenario in scenarios:
                values[m] = math.nan
        if run.run_id in taw:  # task-aware: every unit of the evaluated experience is known, so FWT is defined
            R_taw, b_taw = _matrices(taw[run.run_id], f"run {run.run_id!r}, metric 'accuracy_taw'")
            values |= {f"{m}_taw": f(R_taw, b_taw) for m, f in MATRIX_METRICS.items()}
        if run.run_id in curves:
            values |= curve_metrics(curves[run.run_id])
        records.append({"run_id": run.run_id, **values})
    metrics = pd.DataFrame(records, columns=["run_id", *MATRIX_METRICS, *optional])
    ok = pd.concat([ok.assign(label=labels_of(ok)).drop(columns=SETTINGS_COLUMNS, errors="ignore"),
                    settings_of(ok)], axis=1)
    out = ok[["run_id", "config_id", "benchmark", "scenario", "strategy", "params", "label", "seed",
              *SETTINGS_COLUMNS]].merge(metrics, on="run_id")
    if costs_df is None:
        costs_df = pd.DataFrame(columns=COSTS_COLUMNS)
    _require(costs_df, COSTS_COLUMNS, "costs")
    if costs_df["run_id"].duplicated().any():
        raise ValueError("costs table has several rows for one run_id")
    out = out.merge(costs_df[COSTS_COLUMNS], on="run_id", how="left")
    out[COSTS_COLUMNS[1:]] = out[COSTS_COLUMNS[1:]].astype(float)
    out[optional] = out[optional].astype(float)
    return out[[*SUMMARY_COLUMNS, *optional]].reset_index(drop=True)


def metrics_of(table: pd.DataFrame) -> list[str]:
    """The leaderboard metrics a summary (or, by their ``_mean`` columns, a leaderboard) has: LEADERBOARD_METRICS,
    then those of OPTIONAL_METRICS it holds."""
    present = set(table.columns)
    return [*LEADERBOARD_METRICS, *(m for m in OPTIONAL_METRICS if m in present or f"{m}_mean" in present)]


def leaderboard(summary_df: pd.DataFrame, runs_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration (benchmark, scenario, strategy, params, config_id) of every recorded run; the only
    wide table. Columns, in order:

    - the keys, with ``label`` (the short hyperparameter label) beside ``params``;
    - ``status``: "ok" (every run finished), "partial" (some failed), "failed" (all failed); ``n_runs``, ``n_ok``,
      ``n_failed`` (runs_df's count) and ``n_seeds`` (the finished seeds the metrics average);
    - SETTINGS_COLUMNS (the first value recorded for the configuration);
    - per metric ``<m>_mean``, ``<m>_sem`` (standard error of the mean, ddof=1) and ``<m>_ci95`` (half-width of
      the 95% t-interval, t(0.975, n−1)·sem), over the seeds where the metric is defined, NaN with a single seed;
      NaN for a configuration whose every run failed;
    - ``failure``: the first failed run's error (by seed), cut to FAILURE_CHARS characters; "" when none failed.

    Without ``runs_df`` every summary row counts as an ok run (as before failures were counted). Sorted by benchmark
    and scenario, then complete configurations first by acc_mean descending, then partial ones (their means are over
    the survivors only, so they must not rank among complete ones), then fully failed ones.
    """
    _require(summary_df, [*LEADERBOARD_KEYS, "seed", *LEADERBOARD_METRICS], "summary")
    from scipy import stats  # here, not at import: the CLI imports this module for every command

    attempts = _attempts(summary_df, runs_df)
    by_config = attempts.groupby(LEADERBOARD_KEYS, dropna=False, sort=False)
    out = by_config["label"].first().to_frame()
    out["n_runs"] = by_config.size()
    out["n_ok"] = by_config["ok"].sum().astype(int)
    out["n_failed"] = out["n_runs"] - out["n_ok"]
    out["status"] = np.where(out["n_failed"] == 0, "ok", np.where(out["n_ok"] == 0, "failed", "partial"))
    out["failure"] = by_config["failure"].agg(lambda errors: next((e for e in errors if e), ""))
    settings = by_config[SETTINGS_COLUMNS].first()  # first() skips NaN: an older folder's missing key
    grouped = summary_df.groupby(LEADERBOARD_KEYS, dropna=False, sort=False)
    metrics = grouped.size().rename("n_seeds").to_frame()
    names = metrics_of(summary_df)
    for m in names:
        values = grouped[m]
        n = values.count().to_numpy()
        metrics[f"{m}_mean"] = values.mean().astype(float)
        metrics[f"{m}_sem"] = values.sem(ddof=1).astype(float)
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * metrics[f"{m}_sem"].to_numpy()
        metrics[f"{m}_ci95"] = np.where(n >= 2, half, np.nan)
    out = out.join(settings).join(metrics)  # a configuration without a finished run: NaN metrics
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    out = out.reset_index()
    if out.empty:  # an aggregate of no rows is numeric: keep the text columns text
        out["failure"], out["status"] = out["failure"].astype(object), out["status"].astype(object)
    rank = out["status"].map(STATUS_ORDER)
    order = out.assign(_rank=rank).sort_values(
        ["benchmark", "scenario", "_rank", "acc_mean", "strategy", "config_id"],
        ascending=[True, True, True, False, True, True], kind="stable", na_position="last").index
    columns = [*LEADERBOARD_KEYS[:4], "label", "config_id", "status", "n_runs", "n_ok", "n_failed", "n_seeds",
               *SETTINGS_COLUMNS, *(f"{m}_{s}" for m in names for s in ("mean", "sem", "ci95")),
               "failure"]
    return out.loc[order, columns].reset_index(drop=True)


def with_selected_by(board: pd.DataFrame, runs_df: pd.DataFrame | None) -> pd.DataFrame:
    """The leaderboard with a `selected_by` column (how a tuned sweep chose each configuration: metric, split,
    experiences, trials) beside its label, where some run recorded one; unchanged otherwise."""
    if runs_df is None or "selected_by" not in runs_df.columns:
        return board
    recorded = runs_df[[isinstance(v, str) and v != "" for v in runs_df["selected_by"]]]
    if recorded.empty or "config_id" not in board.columns:
        return board
    chosen = recorded.drop_duplicates("config_id").set_index("config_id")["selected_by"]
    out = board.copy()
    out.insert(out.columns.get_loc("label") + 1, "selected_by", out["config_id"].map(chosen).fillna(""))
    return out


def _attempts(summary_df: pd.DataFrame, runs_df: pd.DataFrame | None) -> pd.DataFrame:
    """One row per recorded run: the keys, label, settings, whether it finished (ok) and its short failure text.

    A run is ok when the summary has it (the summary holds exactly the ok runs) or the runs table says so; a summary
    row that the runs table lacks still counts, so a leaderboard never has fewer runs than its summary."""
    columns = [*LEADERBOARD_KEYS, "run_id", "seed", "label", *SETTINGS_COLUMNS, "ok", "failure"]
    done = summary_df.copy()
    if "label" not in done.columns or done["label"].isna().any():
        done["label"] = labels_of(done)
    for name in SETTINGS_COLUMNS:
        if name not in done.columns:
            done[name] = np.nan
    done = done.assign(ok=True, failure="")
    if runs_df is None or runs_df.empty:
        return done[columns]
    _require(runs_df, [*LEADERBOARD_KEYS, "run_id", "seed", "status"], "runs")
    runs = runs_df.drop_duplicates("run_id", keep="last")  # a rerun replaces the run, as in summarize
    runs = runs[~runs["run_id"].isin(set(done["run_id"]))]
    errors = runs["error"] if "error" in runs.columns else pd.Series("", index=runs.index)
    runs = pd.concat([runs[[*LEADERBOARD_KEYS, "run_id", "seed", "status"]], settings_of(runs)], axis=1).assign(
        label=labels_of(runs), ok=runs["status"] == "ok")
    runs["failure"] = [_short_error(e) if not ok else "" for e, ok in zip(errors, runs["ok"], strict=True)]
    both = pd.concat([df for df in (done[columns], runs[columns]) if not df.empty], ignore_index=True)
    if both.empty:
        return done[columns]
    # in seed order, so that "the first failed run" does not depend on the order the runs finished in
    return both.sort_values(["seed", "run_id"], kind="stable", na_position="last").reset_index(drop=True)


def _short_error(error) -> str:
    """A failed run's error on one line of at most FAILURE_CHARS characters (an older folder may lack the text)."""
    text = " ".join(str(error).split()) if isinstance(error, str) and error.strip() else "failed (no error recorded)"
    return text if len(text) <= FAILURE_CHARS else text[: FAILURE_CHARS - 1] + "…"


def not_applicable_notes(board: pd.DataFrame) -> list[str]:
    """The footnotes a printed view of ``board`` (a summary or a leaderboard) needs: one line per metric that
    NOT_APPLICABLE leaves NaN in a scenario the table has, e.g. "fwt: n/a in class-IL (...)"."""
    if "scenario" not in board.columns:
        return []
    present = set(board["scenario"].dropna())
    return [f"{m}: {note}" for m, (scenarios, note) in NOT_APPLICABLE.items()
            if present & scenarios and (m in board.columns or f"{m}_mean" in board.columns)]


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
