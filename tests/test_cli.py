"""The command line end to end on tiny real data, and its handling of bad input."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from clbench.metrics import tables
from clbench.runners.cli import main, parse_set_items
from clbench.strategies import TrainConfig, get_strategy
from tests.conftest import config

FMNIST_AVAILABLE = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
QUICK = ["--epochs", "1", "--batch-size", "32", "--lr", "0.05", "--momentum", "0.9", "--quiet"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_list_shows_benchmarks_scenarios_and_hyperparameters(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    for text in ("split-fmnist", "permuted-mnist", "split-cifar100", "ewc_lambda = 10.0", "mem_size = 200", "joint"):
        assert text in out


def test_run_writes_schema_valid_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "res"
    code = run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "task", "--strategy", "naive",
                   "replay", "--set", "mem_size=100", "--seeds", "0", "1", "--out", out, *QUICK)
    assert code == 0
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == tables.RUNS_COLUMNS
    assert len(runs) == 2 * 2 * 2 and set(runs["status"]) == {"ok"}
    assert json.loads(runs.loc[runs.strategy == "replay", "params"].iloc[0])["mem_size"] == 100
    evals = pd.read_csv(out / "evals.csv")
    assert list(evals.columns) == tables.EVALS_COLUMNS
    # per run: steps -1..4 × 5 evaluated experiences, twice in class-IL (accuracy and the task-aware accuracy_taw)
    assert len(evals) == 4 * 6 * 5 * 2 + 4 * 6 * 5
    assert set(evals["step"]) == {-1, 0, 1, 2, 3, 4}
    assert set(evals.loc[evals["scenario"] == "class", "metric"]) == {"accuracy", "accuracy_taw"}
    assert set(evals.loc[evals["scenario"] == "task", "metric"]) == {"accuracy"}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == [*tables.SUMMARY_COLUMNS, *tables.TAW_METRICS] and len(summary) == 8
    assert summary.loc[summary.scenario == "class", "acc_taw"].notna().all()
    assert summary.loc[summary.scenario == "task", "acc_taw"].isna().all()
    assert (summary["train_s"] > 0).all() and (summary["peak_rss_mb"] > 0).all()
    assert (summary.loc[summary.strategy == "replay", "strategy_mem_mb"] > 0).all()
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 4 and set(board["n_seeds"]) == {2}
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    # the overview, two per run (matrix, curves), two per benchmark × scenario (curves with bands, zoomed bars)
    assert "leaderboard_acc.png" in pngs and len(pngs) == 1 + 2 * 8 + 2 * 2
    assert {"split-digits_class_curves.png", "split-digits_task_acc.png"} <= set(pngs)
    assert "naive" in capsys.readouterr().out

    # running again into the same folder skips finished runs and adds only the new seed
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   "--seeds", "0", "2", "--out", out, *QUICK) == 0
    runs_after = pd.read_csv(out / "runs.csv")
    assert len(runs_after) == 9 and runs_after["run_id"].is_unique
    assert pd.read_csv(out / "evals.csv").merge(runs, on="run_id").shape[0] == len(evals)


def test_same_seed_same_tables_bit_for_bit(tmp_path):
    for name in ("a", "b"):
        assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "ewc",
                       "--seeds", "3", "--out", tmp_path / name, "--no-plots", *QUICK) == 0
    a, b = (pd.read_csv(tmp_path / n / "evals.csv") for n in ("a", "b"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_diverging_run_is_recorded_as_failed_and_the_rest_goes_on(tmp_path, capsys):
    out = tmp_path / "res"
    code = run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy",
                   "tests.user_strategies:Diverging", "naive", "--seeds", "0", "1", "--out", out, "--no-plots", *QUICK)
    assert code == 1
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    failed = runs[runs.strategy == "Diverging"]  # the class name; its module path is strategy_ref
    assert set(failed["status"]) == {"failed"} and failed["error"].str.contains("nan").all()
    assert set(runs.loc[runs.strategy == "naive", "status"]) == {"ok"}
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["strategy"]) == {"naive"}  # failed runs have no metrics
    assert "failed" in capsys.readouterr().err


BAD_INPUTS = [
    (["--benchmark", "split-nope"], "unknown benchmark 'split-nope'", "split-fmnist"),
    (["--scenario", "online"], "unknown scenario 'online'", "domain"),
    (["--strategy", "ewk"], "unknown strategy 'ewk'", "ewc"),
    (["--set", "lamda=3"], "lamda", "mem_size"),
    (["--set", "mem_size=0.5"], "mem_size=0.5", "int"),
    (["--set", "replay.storage_policy=fifo"], "'fifo'", "'reservoir', 'class_balanced'"),
    (["--set", "justtext"], "NAME=VALUE", "justtext"),
    (["--benchmark", "permuted-digits", "--scenario", "class"], "does not support scenario 'class'", "domain, task"),
    (["--device", "tpu"], "unknown device 'tpu'", "cpu"),
    (["--epochs", "0"], "epochs must be at least 1", "0"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'", "adam, sgd"),
    (["--eval-every", "0"], "--eval-every must be at least 1", "0"),
]


@pytest.mark.parametrize("override,message,choice", BAD_INPUTS)
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(tmp_path, capsys, override, message, choice):
    args = {"--benchmark": ["split-digits"], "--scenario": ["class"], "--strategy": ["replay"]}
    extra = []
    if override[0] in args:
        args[override[0]] = override[1:]
    else:
        extra = override
    argv = ["run", *[x for k, v in args.items() for x in (k, *v)], "--out", tmp_path / "out", *QUICK, *extra]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and choice in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_and_missing_data(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   "--out", blocker, *QUICK) == 2
    assert "not a folder" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):  # root may write anywhere; the check is only meaningful for other users
        assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                       "--out", locked / "out", *QUICK) == 2
        assert "not writable" in capsys.readouterr().err
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path / "empty"))
    assert run_cli("run", "--benchmark", "split-cifar10", "--scenario", "class", "--strategy", "naive",
                   "--out", tmp_path / "out", *QUICK) == 2
    err = capsys.readouterr().err
    assert "cifar" in err.lower() and "--download" in err
    assert not (tmp_path / "out").exists()


def test_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "clbench", "run", "--benchmark", "nope", "--scenario", "class",
                           "--strategy", "naive", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "clbench: error: unknown benchmark 'nope'; valid choices: " + proc.stderr.split("valid choices: ")[1].strip()
    ]
    assert "Traceback" not in proc.stderr


def test_set_accepts_several_pairs_and_repeats():
    classes = [get_strategy("ewc"), get_strategy("replay")]
    params = parse_set_items([["ewc_lambda=2", "mode='online'"], ["decay_factor=0.9", "replay.mem_size=10"]], classes)
    assert params == {"ewc": {"ewc_lambda": 2, "mode": "online", "decay_factor": 0.9}, "replay": {"mem_size": 10}}


def test_leaderboard_and_plot_commands_merge_folders(tmp_path, capsys):
    for seed in ("0", "1"):
        assert run_cli("run", "--benchmark", "split-digits", "--scenario", "task", "--strategy", "naive",
                       "--seeds", seed, "--out", tmp_path / f"s{seed}", "--no-plots", *QUICK) == 0
    assert run_cli("leaderboard", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "board.csv") == 0
    board = pd.read_csv(tmp_path / "board.csv")
    assert len(board) == 1 and board["n_seeds"].iloc[0] == 2
    assert run_cli("plot", tmp_path / "s0") == 0
    assert (tmp_path / "s0" / "plots" / "leaderboard_acc.png").exists()
    assert run_cli("leaderboard", tmp_path / "nothing", "-o", tmp_path / "x.csv") == 2
    assert "not a clbench output folder" in capsys.readouterr().err


@pytest.mark.skipif(not FMNIST_AVAILABLE, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_subset_end_to_end(tmp_path):
    out = tmp_path / "fm"
    assert run_cli("run", "--benchmark", "split-fmnist", "permuted-fmnist", "--scenario", "task", "--strategy",
                   "naive", "ewc", "--train-subset", "200", "--test-subset", "100", "--n-experiences", "5",
                   "--out", out, "--no-plots", *QUICK) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    # task-IL on split Fashion-MNIST is easy: even 200 samples per task are far above chance (0.5)
    split = summary[summary.benchmark == "split-fmnist"]
    assert (split["acc"] > 0.7).all()


def test_eval_every_bounds_evaluation_and_keeps_the_exact_metrics(digits_class):
    from clbench.runners.loop import run

    full = run(config("ewc"), digits_class, progress=False)
    sparse_config = dataclasses.replace(config("ewc"), eval_every=3)
    sparse = run(sparse_config, digits_class, progress=False)
    assert sparse_config.run_id != config("ewc").run_id and "eval_every" not in config("ewc").canonical()
    evaluated = {}
    for row in (r for r in sparse.evals if r["metric"] == "accuracy"):
        evaluated.setdefault(row["step"], []).append(row["eval_exp"])
    # T=5, k=3: full rows at −1, 2 (every third) and 4 (last); in between the diagonal and the next experience
    assert evaluated == {-1: [0, 1, 2, 3, 4], 0: [0, 1], 1: [1, 2], 2: [0, 1, 2, 3, 4], 3: [3, 4], 4: [0, 1, 2, 3, 4]}
    assert len(sparse.evals) == 2 * 21 < len(full.evals) == 2 * 30  # accuracy and accuracy_taw (class-IL)

    def summary(result):
        df = pd.DataFrame([{"run_id": "r", **row} for row in result.evals])
        R, b = tables.matrices_from_evals(df, "r")
        return _metrics(R, b)

    exact, bounded = summary(full), summary(sparse)
    for name in ("acc", "bwt", "fwt", "la"):  # these read only entries that are always evaluated
        assert bounded[name] == exact[name]
    assert bounded["forgetting"] <= exact["forgetting"]  # the max runs over fewer rows


def _metrics(R, b):
    from clbench import metrics

    return {"acc": metrics.accuracy(R), "bwt": metrics.backward_transfer(R), "fwt": metrics.forward_transfer(R, b),
            "la": metrics.learning_accuracy(R), "forgetting": metrics.forgetting(R)}


def test_iterations_counts_optimizer_steps_across_reshuffled_passes(tmp_path):
    from clbench.benchmarks import TensorData
    from clbench.runners.loop import minibatches

    data = TensorData(torch.arange(10.0).unsqueeze(1), torch.arange(10), torch.zeros(10, dtype=torch.int64))
    cfg = TrainConfig(batch_size=4, iterations=7, epochs=50)  # epochs is ignored when iterations is set
    batches = list(minibatches(data, cfg, torch.Generator().manual_seed(0)))
    assert [len(b.y) for b in batches] == [4, 4, 2] * 2 + [4]
    for start in (0, 3):  # every pass is a fresh permutation of all samples
        assert sorted(torch.cat([b.y for b in batches[start:start + 3]]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat([b.y for b in batches[:3]]), torch.cat([b.y for b in batches[3:6]]))
    # Run ids from before the option are unchanged; setting it changes the id.
    assert "iterations" not in config("ewc").canonical()["train"]
    stepped = dataclasses.replace(config("ewc"), train=dataclasses.replace(config("ewc").train, iterations=5))
    assert stepped.run_id != config("ewc").run_id
    out = tmp_path / "it"
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "domain", "--strategy", "naive",
                   "--iterations", "3", "--batch-size", "8", "--out", out, "--no-plots", "--quiet") == 0
    assert json.loads(pd.read_csv(out / "runs.csv")["train_config"][0])["iterations"] == 3
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   "--iterations", "0", "--out", tmp_path / "bad") == 2
    assert not (tmp_path / "bad").exists()


def test_backbone_option_is_recorded_and_checked(tmp_path, capsys):
    out = tmp_path / "bb"
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   "--backbone", "mlp400", "--class-order", "natural", "--out", out, "--no-plots", *QUICK) == 0
    runs = pd.read_csv(out / "runs.csv")
    recorded = json.loads(runs["train_config"][0])
    assert recorded["backbone"] == "mlp400" and recorded["class_order"] == "natural"
    canonical = config("naive").canonical()
    assert "backbone" not in canonical and "class_order" not in canonical  # earlier run ids are unchanged
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   "--backbone", "vit", "--out", tmp_path / "bad") == 2
    assert "unknown backbone 'vit'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
