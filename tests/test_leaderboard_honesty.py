"""The leaderboard's honest core (issue 13): failed runs counted and ranked last, the settings in every row, 95%
confidence intervals, and FWT marked n/a where it cannot inform (single-head class-IL)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clbench.metrics import forward_transfer
from clbench.metrics.tables import (
    LEADERBOARD_METRICS,
    RUNS_COLUMNS,
    SETTINGS_COLUMNS,
    SUMMARY_COLUMNS,
    evals_from_matrices,
    leaderboard,
    not_applicable_notes,
    settings_of,
    summarize,
)
from clbench.results.store import merge_runs
from clbench.runners.cli import format_leaderboard, main

FOOTNOTE = "fwt: n/a in class-IL (a single head cannot predict unseen classes; see docs/METRICS.md)"
TRAIN = {"epochs": 1, "batch_size": 32, "iterations": None, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0,
         "optimizer": "sgd", "eval_batch_size": 2048, "n_experiences": None, "train_subset": 100,
         "test_subset": None, "eval_every": 1, "backbone": None, "class_order": "seeded"}


def run_row(config, seed, status="ok", error="", scenario="task", train=None):
    row = dict.fromkeys(RUNS_COLUMNS)
    row.update(run_id=f"{config}-{seed}", config_id=config, benchmark="digits", scenario=scenario, strategy=config,
               seed=seed, stream_seed=0, params="{}", label="defaults", status=status, error=error,
               train_config=json.dumps(train or TRAIN))
    return row


def hand_tables():
    """Three configurations: "ewc" 1 of 3 seeds failed (its survivors score best), "lwf" every run failed, "naive"
    every run ok. Summary rows exist only for the ok runs, as summarize makes them."""
    long_error = "DivergedError: loss became nan in experience 2 " + "x" * 100
    runs = pd.DataFrame([
        run_row("naive", 0), run_row("naive", 1), run_row("naive", 2),
        run_row("ewc", 0), run_row("ewc", 1, "failed", long_error), run_row("ewc", 2),
        run_row("lwf", 1, "failed", "RuntimeError: second"), run_row("lwf", 0, "failed", "RuntimeError: first"),
    ])  # fmt: skip
    acc = {"naive-0": 0.1, "naive-1": 0.2, "naive-2": 0.3, "ewc-0": 0.9, "ewc-2": 0.8}
    ok = runs[runs["status"] == "ok"]
    summary = pd.concat([ok[["run_id", "config_id", "benchmark", "scenario", "strategy", "params", "label", "seed"]]
                         .reset_index(drop=True), settings_of(ok).reset_index(drop=True)], axis=1)
    for m in LEADERBOARD_METRICS:
        summary[m] = np.nan
    summary["acc"] = summary["run_id"].map(acc)
    return summary[SUMMARY_COLUMNS], runs


def test_failed_runs_are_counted_and_ranked_after_complete_configurations():
    summary, runs = hand_tables()
    board = leaderboard(summary, runs).set_index("strategy", drop=False)
    # ewc's two survivors (0.85) beat naive (0.2), but a configuration with a failed seed is not ranked as complete
    assert board["strategy"].tolist() == ["naive", "ewc", "lwf"]
    assert board["status"].tolist() == ["ok", "partial", "failed"]
    assert board["n_runs"].tolist() == [3, 3, 2]
    assert board["n_ok"].tolist() == [3, 2, 0]
    assert board["n_failed"].tolist() == [0, 1, 2]
    assert board["n_seeds"].tolist() == [3, 2, 0]
    assert board.at["naive", "failure"] == ""
    failure = board.at["ewc", "failure"]
    assert failure.startswith("DivergedError: loss became nan in experience 2 ") and len(failure) == 80
    assert failure.endswith("…")
    assert board.at["lwf", "failure"] == "RuntimeError: first"  # the first failed run by seed, not by record order
    assert board.at["ewc", "acc_mean"] == pytest.approx(0.85)  # over the survivors, marked partial
    for m in LEADERBOARD_METRICS:  # a configuration whose every run failed: NaN metrics, still a row
        for stat in ("mean", "sem", "ci95"):
            assert math.isnan(board.at["lwf", f"{m}_{stat}"])
    assert board.at["lwf", "lr"] == 0.05 and board.at["lwf", "label"] == "defaults"  # settings of failed runs too


def test_without_a_runs_table_every_summary_row_is_an_ok_run():
    summary, _ = hand_tables()
    board = leaderboard(summary)
    assert board["strategy"].tolist() == ["ewc", "naive"]  # by acc_mean: nothing is known to have failed
    assert (board["status"] == "ok").all() and (board["n_failed"] == 0).all()
    assert board["n_runs"].tolist() == board["n_ok"].tolist() == board["n_seeds"].tolist() == [2, 3]


def test_ci95_is_the_t_half_width_over_seeds():
    summary, runs = hand_tables()
    board = leaderboard(summary, runs).set_index("strategy")
    sem = 0.1 / math.sqrt(3)  # values 0.1, 0.2, 0.3: std 0.1
    assert board.at["naive", "acc_sem"] == pytest.approx(sem) == pytest.approx(0.0577350269)
    assert board.at["naive", "acc_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * sem)
    assert board.at["naive", "acc_ci95"] == pytest.approx(0.2484138)
    assert board.at["ewc", "acc_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * 0.05)
    one = leaderboard(summary[summary["run_id"] == "naive-0"])
    assert math.isnan(one.at[0, "acc_sem"]) and math.isnan(one.at[0, "acc_ci95"])  # one seed: no interval
    columns = list(board.columns)
    for m in LEADERBOARD_METRICS:
        i = columns.index(f"{m}_mean")
        assert columns[i + 1: i + 3] == [f"{m}_sem", f"{m}_ci95"]


def test_settings_are_parsed_from_train_config_and_damaged_ones_give_nan():
    # runs "b" were recorded before eval_every and class_order existed: they read as the values they trained with
    old = {k: v for k, v in TRAIN.items() if k not in ("iterations", "eval_every", "backbone", "class_order")}
    runs = pd.DataFrame([run_row("a", 0), run_row("b", 0, train=old), run_row("c", 0), run_row("d", 0)])
    runs.loc[2, "train_config"] = "not json {"
    runs.loc[3, "train_config"] = "[1, 2]"
    s = settings_of(runs)
    assert list(s.columns) == SETTINGS_COLUMNS
    assert s.loc[0, ["optimizer", "lr", "momentum", "batch_size", "epochs", "train_subset", "class_order"]].tolist() \
        == ["sgd", 0.05, 0.9, 32, 1, 100, "seeded"]
    assert math.isnan(s.loc[0, "iterations"]) and pd.isna(s.loc[0, "backbone"]) and s.loc[0, "eval_every"] == 1
    assert s.loc[1, "epochs"] == 1 and s.loc[1, "eval_every"] == 1 and s.loc[1, "class_order"] == "seeded"
    assert math.isnan(s.loc[1, "iterations"]) and pd.isna(s.loc[1, "backbone"])
    for i in (2, 3):  # not JSON, not an object: every setting NaN, except stream_seed (a runs column)
        assert s.loc[i, SETTINGS_COLUMNS[:-1]].isna().all() and s.loc[i, "stream_seed"] == 0
    board = leaderboard(pd.DataFrame(columns=SUMMARY_COLUMNS), runs.assign(status="failed"))
    assert len(board) == 4 and (board["status"] == "failed").all()


def test_fwt_is_nan_in_class_il_and_a_number_in_task_il():
    R = np.array([[0.9, 0.0, 0.0], [0.5, 0.8, 0.0], [0.4, 0.6, 0.9]])
    b = np.array([0.1, 0.2, 0.3])
    assert forward_transfer(R, b) == pytest.approx(-0.25)  # the formula itself is unchanged: −mean(b[1:])
    runs = pd.DataFrame([run_row("c", 0, scenario="class"), run_row("t", 0, scenario="task")])
    evals = pd.concat([evals_from_matrices({"run_id": rid, "benchmark": "digits", "scenario": sc, "strategy": rid,
                                            "seed": 0}, R, b, n=[1, 1, 1])
                       for rid, sc in (("c-0", "class"), ("t-0", "task"))])
    summary = summarize(evals, runs, None).set_index("scenario")
    assert math.isnan(summary.at["class", "fwt"]) and summary.at["task", "fwt"] == pytest.approx(-0.25)
    assert summary.at["class", "acc"] == summary.at["task", "acc"]  # only fwt is n/a
    assert not_applicable_notes(summary.reset_index()) == [FOOTNOTE]
    assert not_applicable_notes(summary.reset_index().query("scenario == 'task'")) == []


def test_printed_view_marks_partial_and_failed_configurations_and_the_footnote():
    summary, runs = hand_tables()
    summary["scenario"], runs["scenario"] = "class", "class"
    text = format_leaderboard(leaderboard(summary, runs))
    assert "partial: 2/3 ok" in text and "failed: 0/2 ok" in text
    assert "lwf defaults: 2/2 failed, RuntimeError: first" in text
    assert text.splitlines()[-1] == FOOTNOTE
    summary["scenario"], runs["scenario"] = "task", "task"
    assert FOOTNOTE not in format_leaderboard(leaderboard(summary, runs))


def test_merge_runs_keeps_each_run_once_and_prefers_its_ok_record():
    failed = pd.DataFrame([run_row("x", 0, "failed", "RuntimeError: flaky"), run_row("y", 0)])
    ok = pd.DataFrame([run_row("x", 0), run_row("a", 0)])
    merged = merge_runs([failed, ok])
    assert merged["run_id"].tolist() == ["a-0", "x-0", "y-0"]  # canonical order
    assert (merged["status"] == "ok").all()


QUICK = ["--benchmark", "split-digits", "--epochs", "1", "--batch-size", "32", "--train-subset", "100", "--quiet",
         "--no-plots"]


def test_a_folder_where_some_seeds_fail_and_folders_that_differ_only_in_epochs(tmp_path, capsys):
    a = tmp_path / "a"
    code = main(["run", *QUICK, "--scenario", "task", "--strategy", "naive", "tests.user_strategies:FailsForSeed",
                 "tests.user_strategies:Diverging", "--set", "fail_seed=1", "steps_before_nan=0",
                 "--seeds", "0", "1", "2", "--out", str(a)])
    assert code == 1  # some runs failed
    board = pd.read_csv(a / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert board["strategy"].tolist() == ["naive", "FailsForSeed", "Diverging"]
    assert board["status"].tolist() == ["ok", "partial", "failed"]
    assert board[["n_runs", "n_ok", "n_failed", "n_seeds"]].values.tolist() == [[3, 3, 0, 3], [3, 2, 1, 2],
                                                                                   [3, 0, 3, 0]]
    assert board["failure"].fillna("").tolist() == ["", "RuntimeError: planned failure of run seed 1",
                                                    "DivergedError: loss became nan in experience 0"]
    assert board.loc[2, [f"{m}_mean" for m in LEADERBOARD_METRICS]].isna().all()
    assert board.loc[0, "fwt_mean"] == board.loc[0, "fwt_mean"]  # task-IL: a number
    summary = pd.read_csv(a / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 5  # ok runs only

    for epochs in ("1", "2"):
        assert main(["run", *QUICK, "--scenario", "class", "--strategy", "naive", "--out", str(tmp_path / epochs),
                     "--epochs", epochs]) == 0
    capsys.readouterr()
    merged = tmp_path / "x.csv"
    assert main(["leaderboard", str(a), str(tmp_path / "1"), str(tmp_path / "2"), "-o", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "partial: 2/3 ok" in out and "failed: 0/3 ok" in out and out.rstrip().splitlines()[-1] == FOOTNOTE
    board = pd.read_csv(merged, keep_default_na=False, na_values=[""])
    classil = board[board["scenario"] == "class"]
    assert len(classil) == 2 and sorted(classil["epochs"]) == [1, 2]
    assert classil["label"].nunique() == 1  # the label alone cannot tell them apart; the epochs column does
    others = [c for c in SETTINGS_COLUMNS if c != "epochs"]
    assert classil[others].nunique(dropna=False).eq(1).all()  # and nothing else differs
    assert classil["fwt_mean"].isna().all()
    assert len(board) == 5 and board.loc[board["scenario"] == "task", "status"].tolist() == ["ok", "partial", "failed"]
