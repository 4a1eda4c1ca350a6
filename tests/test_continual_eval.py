"""Continual evaluation (--eval-period): the curves table, its evaluation points and subsample, and the task-aware
accuracy of class-IL runs."""

import dataclasses
import math
import shutil

import pandas as pd
import pytest
import torch

from clbench.benchmarks import batches_per_pass, make_stream
from clbench.metrics import tables
from clbench.metrics.tables import CURVES_COLUMNS
from clbench.runners import loop
from clbench.runners.cli import main
from tests.conftest import FAST_TRAIN, config


def periodic(strategy="naive", scenario="class", period=4, subset=60, **kw):
    return dataclasses.replace(config(strategy, scenario, **kw), eval_period=period, eval_subset=subset)


def test_evaluation_points_are_the_first_every_period_and_last_step(digits_class):
    result = loop.run(periodic(period=4), digits_class, progress=False)
    assert result.status == "ok", result.error
    curves = pd.DataFrame(result.curves)
    global_step = samples = 0
    for exp in digits_class:
        steps = batches_per_pass(len(exp.train), FAST_TRAIN.batch_size, FAST_TRAIN.drop_last)
        expected = sorted({0, 1, *range(4, steps + 1, 4), steps})
        rows = curves[curves["train_exp"] == exp.index]
        assert sorted(rows["exp_step"].unique()) == expected
        # each point evaluates the seen experiences and the next one, twice in class-IL (accuracy, accuracy_taw)
        evaluated = list(range(min(exp.index + 2, len(digits_class))))
        for _, point in rows.groupby("exp_step"):
            assert sorted(point["eval_exp"].unique()) == evaluated
            assert sorted(point["metric"]) == sorted(["accuracy", "accuracy_taw"] * len(evaluated))
        assert list(rows.groupby("exp_step")["global_step"].first()) == [global_step + s for s in expected]
        last = rows[rows["exp_step"] == steps]["samples_seen"].iloc[0]
        assert last == samples + len(exp.train)  # one epoch: every training sample once
        global_step, samples = global_step + steps, last
    assert len(curves) == sum(len(g) for _, g in curves.groupby(["train_exp", "exp_step", "eval_exp", "metric"]))


def test_the_subsample_is_class_balanced_fixed_by_the_stream_and_shared_by_every_run(digits_class):
    sets = loop.curve_test_sets(digits_class, 60)
    for exp in digits_class:
        counts = torch.bincount(sets[exp.index].y)[list(exp.classes)]
        assert counts.sum() == 60 and counts.max() - counts.min() <= 1  # 60 over 2 classes: 30 each
    again = loop.curve_test_sets(make_stream("split-digits", "class", stream_seed=0), 60)
    assert all(torch.equal(sets[j].x, again[j].x) for j in sets)
    other = loop.curve_test_sets(make_stream("split-digits", "class", stream_seed=1), 60)
    assert not torch.equal(sets[0].y, other[0].y) or not torch.equal(sets[0].x, other[0].x)
    whole = loop.curve_test_sets(digits_class, 10_000)  # larger than a test set: all of it
    assert all(len(whole[e.index]) == len(e.test) for e in digits_class)
    a = loop.run(periodic("naive", seed=0), digits_class, progress=False)
    b = loop.run(periodic("ewc", seed=1), digits_class, progress=False)
    assert {r["n"] for r in a.curves} == {r["n"] for r in b.curves} == {60}


def test_accuracy_taw_is_the_task_il_accuracy_of_the_same_model(digits_class, digits_task):
    """The task-aware accuracy of a class-IL model is what the same model scores when evaluated in task-IL (where
    predict masks the logits to the task's units)."""
    result = loop.run(config("naive", "class"), digits_class, progress=False)
    strategy = loop._fresh_strategy(config("naive", "class"), digits_class, torch.device("cpu"))
    order = torch.Generator().manual_seed(loop.run_seeds(config("naive", "class"))[1])
    for exp in digits_class:  # train the same model again, by hand, to evaluate it both ways
        strategy.begin_experience(exp)
        for _ in strategy.fit_experience(exp, loop.minibatches(strategy.train_data(exp), FAST_TRAIN, order)):
            pass
        strategy.end_experience(exp)
    class_rows = loop.evaluate(strategy, digits_class, 512, "cpu")
    assert digits_task.spec.classes_per_experience == digits_class.spec.classes_per_experience
    strategy.spec_ = digits_task.spec  # the same model, now told it is evaluated in task-IL: predict masks by task
    task_rows = loop.evaluate(strategy, digits_task, 512, "cpu")
    taw = [r["value"] for r in class_rows if r["metric"] == "accuracy_taw"]
    assert taw == [r["value"] for r in task_rows if r["metric"] == "accuracy"]
    final = [r["value"] for r in result.evals if r["step"] == len(digits_class) - 1]
    assert final == [r["value"] for r in class_rows]  # the hand-trained model is the run's model
    tag = [r["value"] for r in class_rows if r["metric"] == "accuracy"]
    assert all(t >= g for t, g in zip(taw, tag, strict=True)) and sum(taw) > sum(tag)  # masking only helps here
    assert not [r for r in task_rows if r["metric"] == "accuracy_taw"]  # task-IL: the accuracy is task-aware


def test_cli_writes_curves_csv_and_the_curve_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    # batch 16: about 18 steps per experience, so LCA has its first beta + 1 = 11 points at --eval-period 1
    args = ["run", "--benchmark", "split-digits", "--scenario", "class", "task", "--strategy", "naive", "--seeds",
            "0", "--epochs", "1", "--batch-size", "16", "--eval-period", "1", "--eval-subset", "40", "--no-plots",
            "--quiet", "--out", str(out)]
    assert main(args) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == CURVES_COLUMNS
    assert set(curves["scenario"]) == {"class", "task"} and (curves["n"] == 40).all()
    assert set(curves.loc[curves["scenario"] == "task", "metric"]) == {"accuracy"}
    summary = pd.read_csv(out / "summary.csv").set_index("scenario")
    for column in ("min_acc", "wc_acc", "wf10", "lca", "aauc"):
        assert summary[column].notna().all(), column
    assert not math.isnan(summary.at["class", "acc_taw"]) and math.isnan(summary.at["task", "acc_taw"])
    assert summary.at["class", "acc_taw"] > summary.at["class", "acc"]
    assert (summary["eval_period"] == 1).all() and (summary["eval_subset"] == 40).all()
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"min_acc_mean", "wc_acc_mean", "acc_taw_mean"} <= set(board.columns)
    plain = tmp_path / "plain"
    assert main([*args[:-8], "--no-plots", "--quiet", "--out", str(plain)]) == 0
    assert not (plain / "curves.csv").exists()
    assert "min_acc" not in pd.read_csv(plain / "summary.csv").columns
    both = pd.read_csv(out / "evals.csv").merge(pd.read_csv(plain / "evals.csv"), on=["benchmark", "scenario", "step",
                                                                                      "eval_exp", "metric"])
    assert len(both) == len(pd.read_csv(plain / "evals.csv")) and (both["value_x"] == both["value_y"]).all()


@pytest.mark.parametrize("flag", ["--eval-period", "--eval-subset"])
def test_bad_periods_are_rejected_with_one_line(flag, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", flag, "0",
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert f"{flag} must be at least 1, got 0" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def expert_folder(tmp_path_factory):
    """naive and the single-task experts in task-IL, and naive in class-IL, with curves at every step."""
    out = tmp_path_factory.mktemp("experts") / "out"
    common = ["--benchmark", "split-digits", "--seeds", "0", "1", "--epochs", "1", "--batch-size", "16",
              "--eval-period", "1", "--eval-subset", "40", "--no-plots", "--quiet", "--out", str(out)]
    assert main(["run", "--scenario", "task", "--strategy", "naive", "separate", *common]) == 0
    assert main(["run", "--scenario", "class", "--strategy", "naive", *common]) == 0
    return out


def test_leaderboard_l2metrics_pairs_each_run_with_its_experts(expert_folder, tmp_path, capsys):
    from clbench.metrics.lifelong import LIFELONG_METRICS, lifelong_metrics
    from clbench.results.experts import expert_pairs, with_lifelong_metrics
    from clbench.results.store import ResultStore

    store = ResultStore(expert_folder)
    summary, evals, curves = store.summary(), store.evals(), store.curves()
    pairs = expert_pairs(summary)
    by_id = summary.set_index("run_id")
    assert len(pairs) == 4  # naive task-IL and class-IL, two seeds each; separate has no partner of its own
    for run_id, expert_id in pairs.items():
        assert by_id.at[expert_id, "strategy"] == "separate" and by_id.at[expert_id, "scenario"] == "task"
        assert by_id.at[expert_id, "seed"] == by_id.at[run_id, "seed"]
    with_l2, unpaired = with_lifelong_metrics(summary, evals, curves)
    assert unpaired == 0
    run_id = next(r for r in pairs if by_id.at[r, "scenario"] == "task" and by_id.at[r, "seed"] == 0)
    R, b = tables.matrices_from_evals(evals, run_id)
    expert_R, _ = tables.matrices_from_evals(evals, pairs[run_id])
    curve = curves[(curves["run_id"] == run_id) & (curves["metric"] == "accuracy")]
    expert_curve = curves[(curves["run_id"] == pairs[run_id]) & (curves["metric"] == "accuracy")]
    expected = lifelong_metrics(R, b, curve, expert_R, expert_curve)
    row = with_l2.set_index("run_id").loc[run_id]
    assert [row[m] for m in LIFELONG_METRICS] == pytest.approx([expected[m] for m in LIFELONG_METRICS], nan_ok=True)
    assert math.isfinite(row["perf_maintenance"]) and math.isfinite(row["rel_perf"])
    assert with_l2.loc[with_l2["strategy"] == "separate", LIFELONG_METRICS].isna().all().all()

    out = tmp_path / "board.csv"
    assert main(["leaderboard", str(expert_folder), "-o", str(out), "--l2metrics"]) == 0
    board = pd.read_csv(out)
    assert {f"{m}_mean" for m in LIFELONG_METRICS} <= set(board.columns)
    naive_task = board[(board["strategy"] == "naive") & (board["scenario"] == "task")].iloc[0]
    assert naive_task["n_seeds"] == 2 and math.isfinite(naive_task["rel_perf_mean"])
    assert main(["leaderboard", str(expert_folder), "-o", str(tmp_path / "plain.csv")]) == 0
    assert "rel_perf_mean" not in pd.read_csv(tmp_path / "plain.csv").columns


def test_runs_without_experts_are_counted_and_named(expert_folder, tmp_path, capsys):
    lone = tmp_path / "lone"
    assert main(["run", "--benchmark", "split-digits", "--scenario", "task", "--strategy", "naive", "--seeds", "5",
                 "--epochs", "1", "--batch-size", "16", "--no-plots", "--quiet", "--out", str(lone)]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(lone), "-o", str(tmp_path / "b.csv"), "--l2metrics"]) == 0
    out = capsys.readouterr().out
    assert "--l2metrics: 1 run(s) have no `separate` run" in out
    assert pd.read_csv(tmp_path / "b.csv")["rel_perf_mean"].isna().all()


def test_stability_gap_figure_for_every_configuration_failures_included(expert_folder, tmp_path):
    from clbench.results.plots import stability_gap_panels, stability_gap_series
    from clbench.results.store import ResultStore

    store = ResultStore(expert_folder)
    summary, curves = store.summary(), store.curves()
    run_ids = summary.loc[(summary["strategy"] == "naive") & (summary["scenario"] == "task"), "run_id"].tolist()
    series = stability_gap_series(curves, run_ids)
    assert sorted(series) == [0, 1, 2, 3, 4]
    first = series[0]
    own = curves[curves["run_id"].isin(run_ids) & (curves["eval_exp"] == 0) & (curves["metric"] == "accuracy")]
    assert first["global_step"].tolist() == sorted(own["global_step"].unique())  # from its training to the end
    at = own[own["global_step"] == first["global_step"].iloc[-1]]["value"]
    assert first["mean"].iloc[-1] == pytest.approx(at.mean()) and first["sem"].iloc[-1] == pytest.approx(at.sem())
    board = tables.leaderboard(summary, store.runs())
    failed = board[board["scenario"] == "task"].iloc[[0]].assign(
        config_id="gone", status="failed", n_ok=0, n_runs=2, n_failed=2, strategy="diverging")
    panels = stability_gap_panels(pd.concat([board, failed], ignore_index=True), curves,
                                  summary.groupby("config_id")["run_id"].apply(list).to_dict())
    task = panels["split-digits", "task"]
    assert [p[0] for p in task][-1].startswith("diverging (failed") and task[-1][2] == {}
    boundaries = task[0][3]
    assert len(boundaries) == 4 and boundaries == sorted(boundaries)  # where experiences 1..4 start
    copy = tmp_path / "copy"
    shutil.copytree(expert_folder, copy)
    (copy / "runs.jsonl").unlink()  # a folder of tables only: curves.csv is read back as the journal's rows were
    pd.testing.assert_frame_equal(ResultStore(copy).curves(), curves)
    assert main(["plot", str(copy)]) == 0
    assert {"split-digits_task_stability_gap.png", "split-digits_class_stability_gap.png"} <= {
        p.name for p in (copy / "plots").iterdir()}


def test_a_sweep_setting_eval_period_writes_curves(tmp_path):
    from tests.test_folder_integrity import TINY_SWEEP
    from tests.test_sweep import write_sweep

    # the tiny sweep of the folder tests, with continual evaluation
    text = TINY_SWEEP.replace("seeds = [0, 2]", "seeds = [0]").replace(
        "train_subset = 100", "train_subset = 100\neval_period = 2\neval_subset = 30")
    path = write_sweep(tmp_path, text)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["n"]) == {30} and curves["train_exp"].nunique() == 5
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "eval_period"] == 2 and math.isfinite(summary.loc[0, "min_acc"])
