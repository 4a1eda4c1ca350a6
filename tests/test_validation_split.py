"""--validation-split: a class-balanced validation set carved out of each experience's training data, fixed by the
stream seed, never trained on, and evaluated beside the test set."""

import dataclasses

import pandas as pd
import pytest
import torch

from clbench.benchmarks import make_stream
from clbench.benchmarks.generators import with_validation
from clbench.metrics import tables
from clbench.runners import loop
from clbench.runners.cli import main
from clbench.strategies.naive import Naive
from tests.conftest import config


def rows(data) -> set[tuple]:
    return {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(data.x, data.y, strict=True)}


def test_the_split_is_disjoint_complete_class_balanced_and_fixed_by_the_stream_seed():
    whole = make_stream("split-digits", "class")
    split = make_stream("split-digits", "class", validation_split=0.25)
    for full, part in zip(whole, split, strict=True):
        assert len(part.val) == round(0.25 * len(full.train)) and len(part.train) + len(part.val) == len(full.train)
        assert not rows(part.train) & rows(part.val)  # disjoint
        assert rows(part.train) | rows(part.val) == rows(full.train)  # nothing lost
        counts = torch.bincount(part.val.y)[list(full.classes)]
        assert counts.max() - counts.min() <= 1  # class-balanced
        assert torch.equal(part.test.x, full.test.x)  # the test set is untouched
    again = make_stream("split-digits", "class", validation_split=0.25)
    assert all(torch.equal(a.val.x, b.val.x) for a, b in zip(split, again, strict=True))
    other = make_stream("split-digits", "class", validation_split=0.25, stream_seed=1)
    assert any(not torch.equal(a.val.y, b.val.y) or not torch.equal(a.val.x, b.val.x)
               for a, b in zip(split, other, strict=True))
    lazy = with_validation(make_stream("permuted-digits", "domain", n_experiences=2), 0.5)
    assert len(lazy[1].val) + len(lazy[1].train) == len(make_stream("permuted-digits", "domain",
                                                                    n_experiences=2)[1].train)


def test_validation_samples_are_never_trained_on_and_are_evaluated_beside_the_test_set(monkeypatch):
    stream = make_stream("split-digits", "class", validation_split=0.2)
    seen = []
    original = Naive.train_step

    def spy(self, batch):
        seen.extend(tuple(x.flatten().tolist()) for x in batch.x)
        return original(self, batch)

    monkeypatch.setattr(Naive, "train_step", spy)


    result = loop.run(dataclasses.replace(config("naive"), validation_split=0.2), stream, progress=False)
    assert result.status == "ok", result.error
    held_out = {tuple(x.flatten().tolist()) for exp in stream for x in exp.val.x}
    assert seen and not set(seen) & held_out
    evals = pd.DataFrame(result.evals)
    assert set(evals["split"]) == {"test", "val"}
    val = evals[evals["split"] == "val"]
    assert len(val) == len(evals) / 2 and set(val["n"]) == {len(e.val) for e in stream}
    R_val, _ = tables.matrices_from_evals(evals.assign(run_id="r"), "r", split="val")
    R_test, _ = tables.matrices_from_evals(evals.assign(run_id="r"), "r")
    assert R_val.shape == R_test.shape and not (R_val == R_test).all()


def test_the_split_is_the_same_for_every_strategy_and_seed_and_the_leaderboard_reads_either(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "ewc",
                 "--seeds", "0", "1", "--epochs", "2", "--validation-split", "0.2", "--no-plots", "--quiet",
                 "--out", str(out)]) == 0
    evals = pd.read_csv(out / "evals.csv")
    sizes = evals[evals["split"] == "val"].groupby("run_id").apply(
        lambda g: tuple(g.drop_duplicates("eval_exp").sort_values("eval_exp")["n"]), include_groups=False)
    assert sizes.nunique() == 1 and len(sizes) == 4
    summary = pd.read_csv(out / "summary.csv")  # test by default
    test_acc = summary.set_index("run_id")["acc"]
    for run_id, acc in test_acc.items():
        R, _ = tables.matrices_from_evals(evals, run_id)
        assert acc == pytest.approx(R[-1].mean())
    capsys.readouterr()
    assert main(["leaderboard", str(out), "-o", str(tmp_path / "val.csv"), "--split", "val"]) == 0
    assert "validation split" in capsys.readouterr().out
    val_board = pd.read_csv(tmp_path / "val.csv")
    test_board = pd.read_csv(out / "leaderboard.csv")
    assert (val_board["split"] == "val").all() and "split" not in test_board.columns
    assert not (val_board["acc_mean"].to_numpy() == test_board.set_index("config_id").loc[
        val_board["config_id"], "acc_mean"].to_numpy()).all()


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan"])
def test_bad_fractions_are_one_line_and_write_nothing(value, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                 "--validation-split", value, "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "--validation-split must be a fraction in (0, 1)" in err and "Traceback" not in err


def test_a_leaderboard_of_runs_without_validation_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--seeds", "0",
                 "--epochs", "1", "--no-plots", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(out), "-o", str(tmp_path / "v.csv"), "--split", "val"]) == 2
    assert "has validation evaluations" in capsys.readouterr().err and not (tmp_path / "v.csv").exists()
