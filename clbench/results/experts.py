"""Pair each run with its single-task experts (the `separate` baseline) and add l2metrics' lifelong-learning metrics
(clbench.metrics.lifelong; docs/L2METRICS.md) to a summary: `clbench leaderboard DIR --l2metrics`.

A run's experts are the `separate` run of the same benchmark, stream seed, training seed and settings (every column
of tables.SETTINGS_COLUMNS, the continual evaluation's period included, so that the learning curves compare point
for point), in the run's own scenario when one was recorded there and in task-IL otherwise: `separate` is task-IL
only (one model per experience, chosen by the task id), and on a split benchmark its experts see exactly the data of
the class-IL run's experiences. Runs without such a partner, and the `separate` runs themselves, get NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clbench.metrics import tables
from clbench.metrics.lifelong import LIFELONG_METRICS, lifelong_metrics

EXPERT = "separate"
PAIR_KEYS = ["benchmark", "stream_seed", "seed", *(c for c in tables.SETTINGS_COLUMNS if c != "stream_seed")]


def _key(row, columns) -> tuple:
    """A hashable pairing key in which NaN equals NaN (an unset setting) and 1 equals 1.0."""
    out = []
    for c in columns:
        v = row[c]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
            out.append(float(v))
        else:
            out.append(v)
    return tuple(out)


def expert_pairs(summary: pd.DataFrame) -> dict[str, str]:
    """run_id → the run_id of its `separate` partner, for every run of the summary that has one."""
    keys = [c for c in PAIR_KEYS if c in summary.columns]
    experts = {}
    for row in summary[summary["strategy"] == EXPERT].to_dict("records"):
        experts.setdefault((row["scenario"], *_key(row, keys)), row["run_id"])
    pairs = {}
    for row in summary[summary["strategy"] != EXPERT].to_dict("records"):
        key = _key(row, keys)
        partner = experts.get((row["scenario"], *key)) or experts.get(("task", *key))
        if partner is not None:
            pairs[row["run_id"]] = partner
    return pairs


def with_lifelong_metrics(summary: pd.DataFrame, evals: pd.DataFrame,
                          curves: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """(the summary with LIFELONG_METRICS columns, the number of runs that found no expert). Read from the tables
    alone: nothing is imported or retrained."""
    pairs = expert_pairs(summary)
    accuracy = curves[curves["metric"] == "accuracy"] if curves is not None and not curves.empty else None
    by_run = dict(tuple(accuracy.groupby("run_id", sort=False))) if accuracy is not None else {}
    scenario_of = dict(zip(summary["run_id"], summary["scenario"], strict=True))
    values = {}
    for run_id, expert_id in pairs.items():
        R, b = tables.matrices_from_evals(evals, run_id)
        expert_R, _ = tables.matrices_from_evals(evals, expert_id)
        if expert_R.shape != R.shape:  # a stream cut to another length cannot be compared experience by experience
            continue
        values[run_id] = lifelong_metrics(R, b, by_run.get(run_id), expert_R, by_run.get(expert_id))
        for m, (scenarios, _) in tables.NOT_APPLICABLE.items():
            if m in values[run_id] and scenario_of[run_id] in scenarios:  # structurally uninformative, as in summarize
                values[run_id][m] = np.nan
    out = summary.copy()
    for m in LIFELONG_METRICS:
        out[m] = [values.get(r, {}).get(m, np.nan) for r in out["run_id"]]
    unpaired = int(((out["strategy"] != EXPERT) & ~out["run_id"].isin(list(values))).sum())
    return out, unpaired
