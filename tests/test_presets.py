"""Paper presets: every preset is a valid sweep whose published numbers name configurations it runs; the comparison
with published numbers on hand-made leaderboards; the wiring end to end on the offline datasets."""

import json
import math

import pandas as pd
import pytest

from clbench.presets import PUBLISHED_COLUMNS, compare, get_preset, list_presets
from clbench.results.store import ResultStore
from clbench.runners.sweep import sweep_from_dict
from tests.test_cli import FMNIST_AVAILABLE, run_cli

PRESETS = {p.name: p for p in list_presets()}
REQUIRED = ["three-scenarios-split-mnist", "gem-mnist-permutations", "gem-mnist-rotations", "hnet-split-mnist",
            "hnet-permuted-mnist"]


def test_the_issue_s_presets_exist():
    assert set(REQUIRED) <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_published_number_names_configurations_the_preset_runs(name):
    preset = PRESETS[name]
    configs = sweep_from_dict(preset.sweep, name).configs
    assert configs and preset.provenance and preset.citation
    for entry in preset.published:
        matching = [c for c in configs if c.scenario == entry["scenario"] and c.strategy == entry["strategy"]
                    and all(c.params.get(k) == v for k, v in entry.get("params", {}).items())]
        assert matching, f"{name}: no run for published {entry}"
        assert 0 <= entry["value"] <= 1


def test_three_scenarios_covers_the_issue_s_methods_in_all_three_scenarios():
    preset = get_preset("preset:three-scenarios-split-mnist")
    configs = sweep_from_dict(preset.sweep, preset.name).configs
    for scenario in ("task", "domain", "class"):
        ran = {(c.strategy, c.params.get("mode")) for c in configs if c.scenario == scenario}
        assert ran == {("naive", None), ("joint", "offline"), ("ewc", "separate"), ("ewc", "online"),
                       ("lwf", None), ("replay", None)}
        published = {(p["strategy"], p.get("params", {}).get("mode")) for p in preset.published
                     if p["scenario"] == scenario}
        assert published == {("naive", None), ("joint", None), ("ewc", "separate"), ("ewc", "online"), ("lwf", None)}
    assert {c.train.iterations for c in configs} == {2000} and {c.train.batch_size for c in configs} == {128}


def test_three_scenarios_follows_the_reference_code_s_protocol():
    preset = get_preset("preset:three-scenarios-split-mnist")
    configs = sweep_from_dict(preset.sweep, preset.name).configs
    assert {(c.train.optimizer, c.train.lr, c.train.optimizer_state, c.train.normalize, c.train.drop_last,
             c.class_order) for c in configs} == {("adam", 0.001, "keep", "none", True, "natural")}
    by = {(c.scenario, c.strategy, c.params.get("mode")): c.params for c in configs}
    for scenario, gamma in (("task", 0.8), ("domain", 0.7), ("class", 0.8)):
        online = by[scenario, "ewc", "online"]
        assert online["gamma_in_penalty"] is True and online["decay_factor"] == gamma
        assert by[scenario, "ewc", "separate"]["gamma_in_penalty"] is False
        replay = by[scenario, "replay", None]
        assert (replay["storage_policy"], replay["per_class"], replay["loss_weighting"], replay["batch_size_mem"]) \
            == ("fixed_per_class", 100, "by_task", 128)
        lwf = by[scenario, "lwf", None]
        expected = ("equal", "all") if scenario == "class" else ("by_task", "old")
        assert (lwf["weighting"], lwf["units"], lwf["temperature"]) == (*expected, 2.0)
    for name in ("Remaining differences", "label order", "Fisher", "without replacement"):  # listed, too
        assert name in preset.provenance.replace("\n", " ")


def test_gem_presets_follow_the_protocol():
    for name in ("gem-mnist-permutations", "gem-mnist-rotations"):
        configs = sweep_from_dict(PRESETS[name].sweep, name).configs
        assert {(c.n_experiences, c.train_subset, c.train.epochs, c.train.batch_size, c.backbone) for c in configs} \
            == {(20, 1000, 1, 10, "mlp100")}
        assert {(c.train.normalize, c.train.optimizer_state, c.train.momentum) for c in configs} \
            == {("none", "keep", 0.0)}
        gem = [c for c in configs if c.strategy == "gem"]
        assert gem and gem[0].params["patterns_per_exp"] == 256 and gem[0].train.lr == 0.1


def _board(rows):
    base = {"benchmark": "split-mnist", "scenario": "class", "params": "{}", "config_id": "c", "n_seeds": 3,
            "acc_mean": math.nan, "acc_sem": math.nan}
    return pd.DataFrame([{**base, **r} for r in rows])


def _published(rows):
    base = {"preset": "p", "benchmark": "split-mnist", "published_on": "split-mnist", "scenario": "class",
            "match": "{}", "metric": "acc", "published_sem": math.nan, "tolerance": 0.01, "source": "Table 1"}
    return pd.DataFrame([{**base, **r} for r in rows], columns=PUBLISHED_COLUMNS)


def test_compare_marks_reproduced_within_the_tolerance_or_two_standard_errors():
    board = _board([
        {"strategy": "naive", "acc_mean": 0.205, "acc_sem": 0.001},     # diff 0.005 ≤ tolerance 0.01: ✓
        {"strategy": "joint", "acc_mean": 0.950, "acc_sem": 0.001},     # diff −0.029, 2·√(0.001²+0.002²)=0.0045: ✗
        {"strategy": "lwf", "acc_mean": 0.300, "acc_sem": 0.012},       # diff 0.03 ≤ 2·√(0.012²+0.01²)=0.031: ✓
        {"strategy": "replay", "acc_mean": 0.800, "acc_sem": 0.01},     # no published number: empty
    ])
    published = _published([
        {"strategy": "naive", "published": 0.200},
        {"strategy": "joint", "published": 0.979, "published_sem": 0.002},
        {"strategy": "lwf", "published": 0.270, "published_sem": 0.010},
    ])
    out = compare(board, published).set_index("strategy")
    assert out.loc["naive", "reproduced"] == "✓" and out.loc["naive", "diff"] == pytest.approx(0.005)
    assert out.loc["joint", "reproduced"] == "✗" and out.loc["joint", "diff"] == pytest.approx(-0.029)
    assert out.loc["lwf", "reproduced"] == "✓"
    assert out.loc["replay", "reproduced"] == "" and math.isnan(out.loc["replay", "published"])
    assert out.loc["joint", "published_sem"] == 0.002 and out.loc["joint", "source"] == "Table 1"
    assert list(board.columns) == list(out.reset_index()[board.columns].columns)  # board's own columns kept


def test_compare_takes_the_most_specific_number_and_keeps_benchmarks_apart():
    board = _board([
        {"strategy": "ewc", "params": json.dumps({"ewc_lambda": 5.0, "mode": "online"}), "acc_mean": 0.2},
        {"strategy": "ewc", "params": json.dumps({"ewc_lambda": 5.0, "mode": "separate"}), "acc_mean": 0.2},
        {"strategy": "ewc", "params": json.dumps({"mode": "online"}), "benchmark": "split-fmnist", "acc_mean": 0.2},
        {"strategy": "ewc", "params": json.dumps({"mode": "online"}), "scenario": "task", "acc_mean": 0.2},
    ])
    published = _published([
        {"strategy": "ewc", "published": 0.30},
        {"strategy": "ewc", "match": json.dumps({"mode": "online"}), "published": 0.20},
        {"strategy": "ewc", "benchmark": "split-fmnist", "match": json.dumps({"mode": "online"}), "published": 0.25},
    ])
    out = compare(board, published)
    assert out["published"].tolist()[:2] == [0.20, 0.30]  # online matches its own number; separate the general one
    assert out["reproduced"].tolist()[:2] == ["✓", "✗"]
    assert out.loc[2, "published"] == 0.25 and out.loc[2, "reproduced"] == "not comparable (published on split-mnist)"
    assert math.isnan(out.loc[3, "published"])  # another scenario


def test_presets_command_lists_and_shows(capsys):
    assert run_cli("presets") == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in REQUIRED)
    assert run_cli("presets", "three-scenarios-split-mnist") == 0
    shown = capsys.readouterr().out
    assert "arXiv:1904.07734" in shown and "Table 4, Online EWC" in shown and "0.1996" in shown
    assert run_cli("presets", "three-scenarios") == 2
    assert ("unknown preset 'three-scenarios' (did you mean 'three-scenarios-split-mnist'?); valid choices: "
            "gem-mnist-permutations") in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["preset:nope"], "unknown preset 'nope'"),
    (["preset:hnet-split-mnist", "--benchmark-map", "split-cifar10=split-digits"],
     "unknown benchmark to map .*'split-cifar10'; valid choices: split-mnist"),
    (["preset:hnet-split-mnist", "--benchmark-map", "split-mnist"], "--benchmark-map expects NAME=VALUE"),
    (["preset:hnet-split-mnist", "--setting", "iteration=3"], "unknown setting .*'iteration'"),
    (["preset:hnet-split-mnist", "--setting", "iterations=0"], "iterations must be at least 1"),
])
def test_bad_preset_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    import re

    out = tmp_path / "out"
    assert run_cli("sweep", *argv, "--out", out) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


TINY = ["--seeds", "0", "--setting", "iterations=3", "train_subset=60", "test_subset=30", "--quiet", "--no-plots"]
OFFLINE = {
    "three-scenarios-split-mnist": ("split-mnist", "split-digits", []),
    "hnet-split-mnist": ("split-mnist", "split-digits", []),
    "hnet-permuted-mnist": ("permuted-mnist", "permuted-digits", ["n_experiences=3"]),
    "gem-mnist-permutations": ("permuted-mnist", "permuted-digits", ["n_experiences=3"]),
    "gem-mnist-rotations": ("rotated-mnist", "rotated-fmnist", ["n_experiences=3"]),
    "mammoth-seq-mnist": ("split-mnist", "split-digits", []),
    "mammoth-perm-mnist": ("permuted-mnist", "permuted-digits", ["n_experiences=3"]),
}


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_presets_run_on_offline_data_and_the_leaderboard_carries_the_published_numbers(tmp_path, name):
    source, target, extra = OFFLINE[name]
    if target.endswith("fmnist") and not FMNIST_AVAILABLE:
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path / name
    argv = ["sweep", f"preset:{name}", "--benchmark-map", f"{source}={target}", "--out", out, *TINY]
    if extra:
        argv += ["--setting", *extra]
    assert run_cli(*argv) == 0
    preset = get_preset(name)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len([c for c in sweep_from_dict(preset.sweep, name).configs if c.seed == 0])
    assert set(runs["benchmark"]) == {target} and (runs["status"] == "ok").all()
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, na_values=[""])
    if not preset.published:  # nothing to compare with: the plain leaderboard
        assert "published" not in board.columns and not (out / "published.csv").exists()
        return
    assert {"published", "published_sem", "diff", "reproduced", "source"} <= set(board.columns)
    matched = board[board["published"].notna()]
    assert len(matched) == len(preset.published)
    assert (matched["reproduced"] == f"not comparable (published on {source})").all()
    assert (matched["diff"] - (matched["acc_mean"] - matched["published"])).abs().max() < 1e-12


def test_a_number_published_on_the_benchmark_that_ran_is_judged(tmp_path):
    out = tmp_path / "judged"
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "ewc",
                   "--epochs", "1", "--batch-size", "32", "--out", out, "--no-plots", "--quiet") == 0
    store = ResultStore(out)
    store.add_published(_published([
        {"benchmark": "split-digits", "published_on": "split-digits", "strategy": "naive", "published": 0.5,
         "tolerance": 0.5},                                    # |acc − 0.5| ≤ 0.5 for any accuracy: ✓
        {"benchmark": "split-digits", "published_on": "split-digits", "strategy": "ewc", "published": 1.0,
         "tolerance": 0.0},                                    # a class-IL fine-tuned model is far from 1.0: ✗
    ]))
    assert run_cli("plot", out) == 0  # any command that derives the tables
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, na_values=[""]).set_index("strategy")
    assert board.loc["naive", "reproduced"] == "✓" and board.loc["ewc", "reproduced"] == "✗"
    assert board.loc["ewc", "diff"] == pytest.approx(board.loc["ewc", "acc_mean"] - 1.0)
    merged = tmp_path / "merged.csv"
    assert run_cli("leaderboard", out, "-o", merged) == 0
    assert pd.read_csv(merged, keep_default_na=False).set_index("strategy").loc["ewc", "reproduced"] == "✗"
    # The HTML report shows the same columns.
    assert run_cli("report", out) == 0
    page = (out / "report.html").read_text()
    assert 'data-key="reproduced"' in page and 'data-key="published"' in page
    assert "<td>✓</td>" in page and "<td>✗</td>" in page
