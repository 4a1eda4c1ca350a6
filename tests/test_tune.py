"""A sweep's [tune]: equal-budget hyperparameter selection on validation sets, never on a test set."""

import dataclasses
import json

import pandas as pd
import pytest

from clbench.benchmarks import make_stream
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.runners import sweep as sweep_module
from clbench.runners.cli import main
from clbench.runners.sweep import select, sweep_from_dict

SPEC = {
    "seeds": [0, 1], "benchmarks": ["split-digits"], "scenarios": ["class"], "settings": {"epochs": 2},
    "tune": {"metric": "acc", "experiences": 2, "seeds": [0, 1], "trials": 2},
    "strategies": [{"name": "naive"}, {"name": "ewc", "grid": {"ewc_lambda": [1.0, 10.0, 100.0, 1000.0]}},
                   {"name": "replay", "grid": {"mem_size": [50, 200]}}],
}


TOML = """seeds = [0, 1]
benchmarks = ["split-digits"]
scenarios = ["class"]

[settings]
epochs = 2

[tune]
metric = "acc"
experiences = 2
seeds = [0, 1]
trials = 2

[[strategies]]
name = "naive"

[[strategies]]
name = "ewc"
grid = { ewc_lambda = [1.0, 10.0, 100.0, 1000.0] }

[[strategies]]
name = "replay"
grid = { mem_size = [50, 200] }
"""  # SPEC as a file


def write(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(TOML)
    return path


def test_the_tuning_runs_are_the_same_budget_for_every_method_on_the_first_experiences_with_a_validation_split():
    sweep = sweep_from_dict(SPEC)
    assert [len(m.candidates) for m in sweep.methods] == [1, 2, 2]  # naive has one; ewc's 4 are cut to 2 trials
    again = sweep_from_dict(SPEC)
    assert [m.candidates for m in again.methods] == [m.candidates for m in sweep.methods]  # a fixed draw
    assert len(sweep.configs) == (1 + 2 + 2) * 2  # candidates × tuning seeds
    for c in sweep.configs:
        assert c.phase == "tune" and c.first_experiences == 2 and c.validation_split == 0.1
    finals = sweep.final_configs({("split-digits", "class", k): m.candidates[0] for k, m in enumerate(sweep.methods)})
    assert len(finals) == 3 * 2 and all(c.phase == "final" and c.first_experiences is None for c in finals)
    assert all(c.validation_split is None and "2 trial(s)" in c.selected_by for c in finals if c.strategy == "ewc")
    plain = dataclasses.replace(finals[0], selected_by="")
    assert plain.run_id == finals[0].run_id  # how it was chosen is a record, not the run's identity


class _NoTestSet:
    """A test set that fails the run if anything reads it."""

    def __len__(self):
        raise AssertionError("a tuning run read a test set")

    def __getattr__(self, name):
        raise AssertionError(f"a tuning run read a test set ({name})")


def test_a_tuning_run_never_reads_a_test_set():
    sweep = sweep_from_dict(SPEC)
    config = next(c for c in sweep.configs if c.strategy == "replay")
    stream = make_stream("split-digits", "class", validation_split=0.1, first_experiences=2)
    poisoned = type(stream)(stream.spec, [dataclasses.replace(e, test=_NoTestSet()) for e in stream])
    result = loop.run(dataclasses.replace(config, eval_period=2), poisoned, progress=False)
    assert result.status == "ok", result.error
    assert {r["split"] for r in result.evals} == {"val"} and result.curves == []
    assert {r["eval_exp"] for r in result.evals} == {0, 1}  # the first two experiences only
    failed = loop.run(dataclasses.replace(config, validation_split=None), make_stream("split-digits", "class",
                                                                                    first_experiences=2),
                      progress=False)
    assert failed.status == "failed" and "validation split" in failed.error


def summary_of(sweep, scores: dict) -> pd.DataFrame:
    """A hand-made validation summary: (method index, candidate index) → one acc per tuning seed (None: failed)."""
    rows = []
    for (k, i), values in scores.items():
        method = sweep.methods[k]
        for seed, value in zip(sweep.tune.seeds, values, strict=True):
            if value is None:
                continue
            cfg = sweep.tuning_config("split-digits", "class", method, method.candidates[i], seed)
            rows.append({"run_id": cfg.run_id, "config_id": cfg.config_id, "acc": value, "forgetting": 1 - value})
    return pd.DataFrame(rows)


def test_selection_takes_the_best_mean_over_complete_tuning_seeds_first_on_ties():
    sweep = sweep_from_dict(SPEC)
    naive, ewc, replay = sweep.methods
    summary = summary_of(sweep, {(0, 0): [0.5, 0.5],
                                 (1, 0): [0.9, 0.95], (1, 1): [0.99, None],  # the better one lost a seed
                                 (2, 0): [0.6, 0.8], (2, 1): [0.7, 0.7]})  # a tie: the first in grid order
    selection, problems = select(sweep, summary)
    assert problems == []
    assert selection["split-digits", "class", 1] == ewc.candidates[0]
    assert selection["split-digits", "class", 2] == replay.candidates[0]
    lower = dataclasses.replace(sweep.tune, metric="forgetting")
    selection, _ = select(dataclasses.replace(sweep, tune=lower), summary)
    assert selection["split-digits", "class", 2] == replay.candidates[0]  # forgetting 0.3 mean vs 0.3: first
    selection, problems = select(sweep, summary_of(sweep, {(0, 0): [0.5, None], (1, 0): [0.9, 0.9],
                                                           (2, 1): [0.4, 0.6]}))
    assert ("split-digits", "class", 0) not in selection and len(problems) == 1
    assert problems[0].startswith("naive on split-digits/class: no configuration finished all 2 tuning seed(s)")
    assert selection["split-digits", "class", 2] == replay.candidates[1]


def test_a_tuned_sweep_end_to_end_and_resumed_after_an_interruption(tmp_path, monkeypatch, capsys):
    path, out = write(tmp_path), tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between the search and the final runs

    monkeypatch.setattr(sweep_module, "select", interrupted)
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--no-plots"]) != 0
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.undo()
    journal = (out / "runs.jsonl").read_text().splitlines()
    assert len(journal) == 10 and all(json.loads(line)["run"]["phase"] == "tune" for line in journal)
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "10 of 10 runs already finished" in printed and "6 final runs, 0 already finished" in printed
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 16 and runs["run_id"].is_unique and runs["phase"].value_counts().to_dict() == {
        "tune": 10, "final": 6}
    evals = pd.read_csv(out / "evals.csv").merge(runs[["run_id", "phase"]], on="run_id")
    assert set(evals.loc[evals["phase"] == "tune", "split"]) == {"val"}  # the search never saw a test set
    assert set(evals.loc[evals["phase"] == "final", "split"]) == {"test"}
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 3 and board["selected_by"].str.startswith("acc on val, first 2 experiences").all()
    assert main(["leaderboard", str(out), "-o", str(tmp_path / "tune.csv"), "--phase", "tune"]) == 0
    search = pd.read_csv(tmp_path / "tune.csv")
    assert len(search) == 5 and (search["n_seeds"] == 2).all() and "selected_by" not in search.columns
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0  # nothing left to run
    assert len((out / "runs.jsonl").read_text().splitlines()) == 16


@pytest.mark.parametrize(("tune", "message"), [
    ({"split": "test"}, "split must be 'val'"),
    ({"metric": "train_s"}, "'train_s'"),
    ({"experiences": 9}, "experiences=9 is more than the 5 experiences of split-digits"),
    ({"trials": 0}, "trials must be a positive integer, got 0"),
    ({"validation_split": 1.0}, "validation_split must be a fraction in (0, 1), got 1.0"),
    ({"seed": [0]}, "unknown key 'seed' in [tune]"),
])
def test_bad_tune_tables_name_the_value(tune, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        sweep_from_dict({**SPEC, "tune": tune})
