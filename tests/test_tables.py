"""Tests for clbench.metrics.tables: evals ↔ matrices, summary, leaderboard, formatting."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clbench.errors import UsageError
from clbench.metrics import (
    EVALS_COLUMNS,
    LEADERBOARD_METRICS,
    RUNS_COLUMNS,
    SUMMARY_COLUMNS,
    evals_from_matrices,
    format_mean_sem,
    leaderboard,
    matrices_from_evals,
    mean_sem_str,
    summarize,
)
from clbench.metrics.tables import SETTINGS_COLUMNS

R3 = np.array([[0.9, 0.1, 0.2],
               [0.6, 0.8, 0.3],
               [0.5, 0.7, 0.95]])  # fmt: skip
B3 = np.array([0.1, 0.2, 0.3])
META = {"run_id": "r1", "benchmark": "digits", "scenario": "class", "strategy": "naive", "seed": 0}


def test_schema_constants():
    assert RUNS_COLUMNS == ["run_id", "config_id", "benchmark", "scenario", "strategy", "seed", "stream_seed",
                            "params", "label", "strategy_ref", "train_config", "versions", "device", "started_at",
                            "duration_s", "status", "error", "phase", "selected_by"]  # fmt: skip
    assert EVALS_COLUMNS == ["run_id", "benchmark", "scenario", "strategy", "seed", "step", "eval_exp", "metric",
                             "split", "value", "n"]  # fmt: skip
    assert SUMMARY_COLUMNS[:8] == ["run_id", "config_id", "benchmark", "scenario", "strategy", "params", "label",
                                   "seed"]
    assert SUMMARY_COLUMNS[8:28] == SETTINGS_COLUMNS == [
        "optimizer", "optimizer_state", "lr", "momentum", "weight_decay", "batch_size", "drop_last", "epochs",
        "iterations", "backbone", "normalize", "class_order", "train_subset", "test_subset", "eval_every",
        "eval_period", "eval_subset", "validation_split", "n_experiences", "stream_seed"]  # fmt: skip
    assert SUMMARY_COLUMNS[28:] == ["acc", "bwt", "fwt", "forgetting", "la", "aia", "train_s", "eval_s",
                                    "peak_rss_mb", "strategy_mem_mb"]  # fmt: skip


def test_evals_from_matrices_rows():
    df = evals_from_matrices(META, R3, B3, n=[10, 20, 30])
    assert list(df.columns) == EVALS_COLUMNS
    assert len(df) == 3 + 9
    assert (df["metric"] == "accuracy").all() and (df["run_id"] == "r1").all() and (df["seed"] == 0).all()
    base = df[df["step"] == -1].sort_values("eval_exp")
    assert base["value"].tolist() == [0.1, 0.2, 0.3]
    cell = df[(df["step"] == 1) & (df["eval_exp"] == 2)]
    assert cell["value"].item() == 0.3 and cell["n"].item() == 30


def test_round_trip():
    df = evals_from_matrices(META, R3, B3, n=[10, 20, 30])
    R, b = matrices_from_evals(df.sample(frac=1, random_state=0), "r1")  # row order must not matter
    np.testing.assert_array_equal(R, R3)
    np.testing.assert_array_equal(b, B3)


def test_round_trip_without_baseline_and_with_missing_cells():
    R = R3.copy()
    R[1] = np.nan
    df = evals_from_matrices(META, R, None, n=[1, 1, 1])
    assert len(df) == 6 and -1 not in df["step"].tolist()
    R2, b2 = matrices_from_evals(df, "r1")
    assert b2 is None
    np.testing.assert_array_equal(R2, R)  # NaN cells compare equal in assert_array_equal


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6).flatmap(lambda T: st.tuples(
    arrays(float, (T, T), elements=st.floats(0, 1)), arrays(float, (T,), elements=st.floats(0, 1)),
    arrays(bool, (T, T)), st.booleans())))  # fmt: skip
def test_round_trip_property(args):
    R, b, mask, with_b = args
    T = len(R)
    R[mask] = np.nan
    R[-1, -1] = 0.5  # keeps T recoverable: the last step and last experience appear
    df = evals_from_matrices(META, R, b if with_b else None, n=list(range(1, T + 1)))
    R2, b2 = matrices_from_evals(df, "r1")
    np.testing.assert_array_equal(R2, R)
    if with_b:
        np.testing.assert_array_equal(b2, b)
    else:
        assert b2 is None


def test_matrices_from_evals_selects_run_and_metric():
    df = pd.concat([
        evals_from_matrices(META, R3, B3, n=[1, 1, 1]),
        evals_from_matrices({**META, "run_id": "r2"}, np.eye(2), None, n=[1, 1]),
        evals_from_matrices(META, np.zeros((3, 3)), None, n=[1, 1, 1], metric="loss"),
    ])  # fmt: skip
    R, _ = matrices_from_evals(df, "r2")
    np.testing.assert_array_equal(R, np.eye(2))
    R, b = matrices_from_evals(df, "r1", metric="loss")
    np.testing.assert_array_equal(R, np.zeros((3, 3)))
    assert b is None
    with pytest.raises(UsageError, match="'nope'"):
        matrices_from_evals(df, "nope")


def test_matrices_from_evals_rejects_duplicates():
    df = evals_from_matrices(META, R3, B3, n=[1, 1, 1])
    with pytest.raises(ValueError, match="duplicate"):
        matrices_from_evals(pd.concat([df, df.iloc[[4]]]), "r1")


def test_evals_from_matrices_validates():
    with pytest.raises(ValueError, match="n must"):
        evals_from_matrices(META, R3, B3, n=[1, 1])
    with pytest.raises(ValueError, match="run_meta lacks"):
        evals_from_matrices({"run_id": "x"}, R3, B3, n=[1, 1, 1])
    with pytest.raises(ValueError, match="square"):
        evals_from_matrices(META, np.zeros((2, 3)), None, n=[1, 1])


# --- summarize ------------------------------------------------------------------------------------------------------


def make_run(run_id, status="ok", strategy="naive", seed=0, params="{}", scenario="class"):
    row = dict.fromkeys(RUNS_COLUMNS)
    row.update(run_id=run_id, config_id=f"c-{strategy}-{params}", benchmark="digits", scenario=scenario,
               strategy=strategy, seed=seed, params=params, status=status)  # fmt: skip
    return row


def test_summarize():
    # task-IL: FWT is a number there (in class-IL it is n/a, test_leaderboard_honesty.py)
    runs = pd.DataFrame([make_run("a", scenario="task"), make_run("b", seed=1, scenario="task"),
                         make_run("c", status="failed", seed=2, scenario="task")])
    evals = pd.concat([
        evals_from_matrices({**META, "run_id": "a"}, R3, B3, n=[1, 1, 1]),
        evals_from_matrices({**META, "run_id": "b", "seed": 1}, np.eye(2), None, n=[1, 1]),
    ])  # fmt: skip
    costs = pd.DataFrame({"run_id": ["a"], "train_s": [1.5], "eval_s": [0.5], "peak_rss_mb": [100.0],
                          "strategy_mem_mb": [2.0]})  # fmt: skip
    s = summarize(evals, runs, costs)
    assert list(s.columns) == SUMMARY_COLUMNS
    assert s["run_id"].tolist() == ["a", "b"]  # the failed run is left out
    a, b = s.iloc[0], s.iloc[1]
    assert a["acc"] == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert a["bwt"] == pytest.approx(-0.25)
    assert a["fwt"] == pytest.approx(-0.05)
    assert a["forgetting"] == pytest.approx(0.25)
    assert a["la"] == pytest.approx(2.65 / 3)
    assert a["aia"] == pytest.approx((0.9 + 0.7 + 2.15 / 3) / 3)
    assert (a["train_s"], a["eval_s"], a["peak_rss_mb"], a["strategy_mem_mb"]) == (1.5, 0.5, 100.0, 2.0)
    assert b["acc"] == 0.5 and b["bwt"] == -1.0 and math.isnan(b["fwt"])  # no baseline → FWT NaN
    assert math.isnan(b["train_s"])  # no costs row


def test_summarize_ok_run_without_evals_raises():
    runs = pd.DataFrame([make_run("a")])
    evals = evals_from_matrices({**META, "run_id": "other"}, R3, B3, n=[1, 1, 1])
    with pytest.raises(UsageError, match="'a'"):
        summarize(evals, runs, None)


def test_summarize_empty():
    s = summarize(pd.DataFrame(columns=EVALS_COLUMNS), pd.DataFrame(columns=RUNS_COLUMNS), None)
    assert list(s.columns) == SUMMARY_COLUMNS and s.empty


# --- leaderboard ----------------------------------------------------------------------------------------------------


def make_summary():
    rows = []
    for seed, acc in enumerate([0.80, 0.82, 0.87]):  # naive, params {}: 3 seeds
        rows.append({"strategy": "naive", "params": "{}", "seed": seed, "acc": acc, "train_s": 10.0 + seed})
    for seed, acc in enumerate([0.90, 0.94]):  # ewc lambda=1: 2 seeds
        rows.append({"strategy": "ewc", "params": '{"lambda": 1}', "seed": seed, "acc": acc, "train_s": 20.0})
    rows.append({"strategy": "ewc", "params": '{"lambda": 100}', "seed": 0, "acc": 0.85, "train_s": 30.0})
    df = pd.DataFrame(rows)
    df["run_id"] = [f"r{i}" for i in range(len(df))]
    df["config_id"] = df["strategy"] + df["params"]
    df["benchmark"], df["scenario"] = "digits", "class"
    for m in SUMMARY_COLUMNS:
        if m not in df.columns:
            df[m] = np.nan
    return df[SUMMARY_COLUMNS]


def test_leaderboard_mean_sem_nseeds():
    lb = leaderboard(make_summary())
    assert lb["strategy"].tolist() == ["ewc", "ewc", "naive"]  # sorted by acc_mean descending
    assert lb["params"].tolist() == ['{"lambda": 1}', '{"lambda": 100}', "{}"]  # params are separate groups
    assert lb["n_seeds"].tolist() == [2, 1, 3]
    naive = lb.iloc[2]
    # mean = (0.80+0.82+0.87)/3 = 0.83; deviations -0.03, -0.01, 0.04 → sum sq = 0.0026;
    # var (ddof=1) = 0.0013; SEM = sqrt(0.0013/3)
    assert naive["acc_mean"] == pytest.approx(0.83)
    assert naive["acc_sem"] == pytest.approx(math.sqrt(0.0013 / 3))
    assert naive["train_s_mean"] == pytest.approx(11.0)
    assert naive["train_s_sem"] == pytest.approx(math.sqrt(1.0 / 3))  # 10, 11, 12: var 1
    ewc1 = lb.iloc[0]
    assert ewc1["acc_mean"] == pytest.approx(0.92)
    assert ewc1["acc_sem"] == pytest.approx(0.02)  # |0.94-0.90|/2: std = 0.02*sqrt(2), /sqrt(2)
    assert math.isnan(lb.iloc[1]["acc_sem"])  # single seed
    assert math.isnan(naive["fwt_mean"]) and math.isnan(naive["fwt_sem"])  # all-NaN metric stays NaN
    for m in LEADERBOARD_METRICS:
        assert f"{m}_mean" in lb.columns and f"{m}_sem" in lb.columns


def test_leaderboard_sorted_by_benchmark_scenario():
    s = make_summary()
    s.loc[s["strategy"] == "naive", "benchmark"] = "a_first"
    lb = leaderboard(s)
    assert lb["benchmark"].tolist() == ["a_first", "digits", "digits"]


def test_leaderboard_does_not_mix_configs():
    s = make_summary()
    s.loc[0, "config_id"] = "other"  # same strategy/params but a different config → own group
    lb = leaderboard(s)
    assert sorted(lb["n_seeds"].tolist()) == [1, 1, 2, 2]


def test_format_mean_sem():
    assert mean_sem_str(0.8123, 0.0041) == "0.812 ± 0.004"
    assert mean_sem_str(0.8123, float("nan")) == "0.812"
    assert mean_sem_str(float("nan"), float("nan")) == "n/a"
    view = format_mean_sem(leaderboard(make_summary()), metrics=["acc", "fwt"])
    assert list(view.columns) == ["benchmark", "scenario", "strategy", "params", "config_id", "n_seeds", "acc", "fwt"]
    assert view["acc"].tolist() == ["0.920 ± 0.020", "0.850", f"0.830 ± {math.sqrt(0.0013 / 3):.3f}"]
    assert view["fwt"].tolist() == ["n/a"] * 3
