"""Benchmark training defaults that learn, and the warning for a run that learned nothing."""

import json
import math

import pandas as pd
import pytest

from clbench.benchmarks import batches_per_pass, benchmark_info, list_benchmarks, make_stream
from clbench.benchmarks.registry import CIFAR_TRAINING, TRAINING_KEYS
from clbench.runners.cli import main
from clbench.runners.sweep import sweep_from_dict


def run_cli(tmp_path, *flags, out="out", strategy=("naive",), benchmark="split-digits", scenario="class"):
    folder = tmp_path / out
    code = main(["run", "--benchmark", benchmark, "--scenario", scenario, "--strategy", *strategy, "--seeds", "0",
                 "--no-plots", "--quiet", "--out", str(folder), *flags])
    return code, folder


def test_every_benchmark_has_every_training_setting():
    for info in list_benchmarks():
        assert set(info.training) == set(TRAINING_KEYS), info.name
        assert info.training["optimizer"] == "sgd" and info.training["epochs"] >= 1
    assert benchmark_info("split-cifar100").training == CIFAR_TRAINING  # A-GEM's protocol
    assert benchmark_info("split-digits").training_text() == "sgd lr 0.01 momentum 0.9, batch 32, 10 epoch(s)"


@pytest.mark.parametrize(("benchmark", "scenario"), [("split-digits", "class"), ("permuted-digits", "domain"),
                                                     ("split-fmnist", "class")])
def test_without_training_flags_naive_learns_every_experience(benchmark, scenario, tmp_path, capsys):
    code, out = run_cli(tmp_path, benchmark=benchmark, scenario=scenario)
    assert code == 0
    assert "warning" not in capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "la"] >= 0.9  # chance is 0.1
    recorded = json.loads(pd.read_csv(out / "runs.csv").loc[0, "train_config"])
    assert {k: recorded[k] for k in TRAINING_KEYS} == benchmark_info(benchmark).training  # the effective values


def test_given_flags_win_and_another_optimizer_does_not_inherit_sgd_momentum(tmp_path):
    code, out = run_cli(tmp_path, "--lr", "0.05", "--epochs", "2", "--strategy", "naive")
    assert code == 0
    recorded = json.loads(pd.read_csv(out / "runs.csv").loc[0, "train_config"])
    assert (recorded["lr"], recorded["epochs"], recorded["batch_size"], recorded["momentum"]) == (0.05, 2, 32, 0.9)
    code, out = run_cli(tmp_path, "--optimizer", "adam", "--lr", "0.001", "--epochs", "1", out="adam")
    recorded = json.loads(pd.read_csv(out / "runs.csv").loc[0, "train_config"])
    assert code == 0 and recorded["optimizer"] == "adam" and recorded["momentum"] == 0.0


def test_a_run_that_cannot_learn_is_warned_about_in_one_line_and_one_that_learns_is_not(tmp_path, capsys):
    # 1 epoch of batch 128 on ~290 samples: 2-3 steps of plain SGD, the example
    code, _ = run_cli(tmp_path, "--epochs", "1", "--batch-size", "128", "--momentum", "0", strategy=("replay",))
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(lines) == 1
    assert "replay on split-digits/class, seed 0" in lines[0] and "chance 0.100" in lines[0]
    steps = sorted({batches_per_pass(len(e.train), 128, False) for e in make_stream("split-digits", "class")})
    shown = str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
    assert f"with {shown} optimizer steps per experience" in lines[0] and "--epochs or --iterations" in lines[0]
    la = float(lines[0].split("learning accuracy ")[1].split(",")[0])
    assert la <= 0.15
    code, _ = run_cli(tmp_path, strategy=("replay",), out="learns")
    assert code == 0 and "warning" not in capsys.readouterr().err


def test_costs_record_the_steps_of_each_experience(tmp_path):
    code, out = run_cli(tmp_path, "--epochs", "2", "--batch-size", "50")
    costs = pd.read_csv(out / "costs.csv")
    steps = costs.loc[costs["step"] >= 0, "steps"]
    assert code == 0 and (steps >= 2 * 5).all() and (steps <= 2 * 8).all()  # 2 passes over ~290 samples
    assert costs.loc[costs["step"] == -1, "steps"].tolist() == [0]


def test_a_sweep_fills_what_it_does_not_set_from_each_benchmark():
    spec = {"seeds": [0], "benchmarks": ["split-digits", "split-fmnist"], "scenarios": ["class"],
            "settings": {"lr": 0.02}, "strategies": [{"name": "naive"}, {"name": "ewc", "settings": {"epochs": 3}}]}
    by = {(c.benchmark, c.strategy): c.train for c in sweep_from_dict(spec).configs}
    assert (by["split-digits", "naive"].epochs, by["split-digits", "naive"].batch_size) == (10, 32)
    assert (by["split-fmnist", "naive"].epochs, by["split-fmnist", "naive"].batch_size) == (1, 128)
    assert by["split-digits", "naive"].lr == by["split-fmnist", "naive"].lr == 0.02  # the sweep's own setting
    assert by["split-digits", "ewc"].epochs == by["split-fmnist", "ewc"].epochs == 3  # the method's own
    assert all(math.isclose(t.momentum, 0.9) for t in by.values())


def test_list_and_run_help_show_the_training_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "training: sgd lr 0.01 momentum 0.9, batch 32, 10 epoch(s)" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "split-cifar100     sgd lr 0.03, batch 10, 1 epoch(s)" in text
