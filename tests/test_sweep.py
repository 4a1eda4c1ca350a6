"""Sweeps from TOML files, the append-only journal, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from clbench.errors import UsageError
from clbench.results.store import ResultStore
from clbench.runners.cli import main
from clbench.runners.sweep import load_sweep

SWEEP = """
seeds = [0, 1, 2]
benchmarks = ["split-digits"]
scenarios = ["class", "task"]

[settings]
epochs = 1
batch_size = 32
lr = 0.05
momentum = 0.9
threads = 1

[[strategies]]
name = "naive"

[[strategies]]
name = "ewc"
grid = { ewc_lambda = [1.0, 10.0] }

[[strategies]]
name = "replay"
params = { mem_size = 100 }
"""  # 2 scenarios × (1 + 2 + 1) variants × 3 seeds = 24 runs


def write_sweep(tmp_path, text=SWEEP, name="sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sweep_file_expands_to_the_product(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path))
    assert len(sweep.configs) == 24 and len({c.run_id for c in sweep.configs}) == 24
    lambdas = sorted({c.params["ewc_lambda"] for c in sweep.configs if c.strategy == "ewc"})
    assert lambdas == [1.0, 10.0]
    assert {c.params["mem_size"] for c in sweep.configs if c.strategy == "replay"} == {100}
    assert all(c.train.batch_size == 32 for c in sweep.configs)


@pytest.mark.parametrize(("edit", "message"), [
    (("seeds = [0, 1, 2]", "seeds = []"), "'seeds' must be a non-empty list"),
    (('benchmarks = ["split-digits"]', 'benchmarks = ["split-nope"]'), "unknown benchmark 'split-nope'"),
    (("epochs = 1", "epoch = 1"), r"unknown setting 'epoch' in .*\(did you mean 'epochs'\?\); valid choices: .*epochs"),
    (('name = "naive"', 'name = "naiv"'), "unknown strategy 'naiv'"),
    (("ewc_lambda = [1.0, 10.0]", "ewc_lamda = [1.0]"), "unknown hyperparameter 'ewc_lamda'"),
    (("mem_size = 100", "mem_size = 0"), "mem_size must be at least 1"),
    (("threads = 1", "threads = 0"), "threads must be at least 1"),
    (("[settings]", "[setings]"), "unknown key 'setings'"),
    (('params = { mem_size = 100 }', 'scenarios = ["domain"]'), "scenario of .*'replay'.*'domain'.*class, task"),
    (('params = { mem_size = 100 }', 'settings = { momentum = 0.9, threads = 2 }'),
     "unknown setting 'threads' in .*'replay'.*; valid choices: .*epochs"),
    (('params = { mem_size = 100 }', 'settings = { lr = "fast" }'), "setting lr='fast' must be float"),
    (('params = { mem_size = 100 }', 'settings = { iterations = 0 }'), "iterations must be at least 1, got 0"),
])
def test_bad_sweep_files_exit_2_with_one_message_and_write_nothing(tmp_path, capsys, edit, message):
    import re

    path = write_sweep(tmp_path, SWEEP.replace(*edit))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()
    with pytest.raises(UsageError):
        load_sweep(path)


def test_strategies_can_keep_to_some_scenarios_and_bring_their_own_training_settings(tmp_path):
    text = SWEEP.replace('grid = { ewc_lambda = [1.0, 10.0] }', 'grid = { ewc_lambda = [1.0, 10.0] }\n'
                         'scenarios = ["task"]\nsettings = { lr = 0.1, iterations = 7 }')
    sweep = load_sweep(write_sweep(tmp_path, text))
    assert len(sweep.configs) == 24 - 2 * 3  # EWC's two lambdas run in task-IL only
    ewc = [c for c in sweep.configs if c.strategy == "ewc"]
    assert {c.scenario for c in ewc} == {"task"}
    assert {(c.train.lr, c.train.iterations, c.train.batch_size, c.train.momentum) for c in ewc} == {(0.1, 7, 32, 0.9)}
    others = [c for c in sweep.configs if c.strategy != "ewc"]
    assert {(c.train.lr, c.train.iterations) for c in others} == {(0.05, None)}
    steps = SWEEP.replace('name = "naive"', 'name = "naive"\nsettings = { iterations = 3 }')
    assert load_sweep(write_sweep(tmp_path, steps)).configs[0].train.iterations == 3


def test_dry_run_lists_runs_and_counts_done(tmp_path, capsys):
    path = write_sweep(tmp_path)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "24 runs, 0 done, 24 to run" in capsys.readouterr().out
    small = write_sweep(tmp_path, SWEEP.replace("seeds = [0, 1, 2]", "seeds = [0]"), name="small.toml")
    out = tmp_path / "out"
    assert main(["sweep", str(small), "--out", str(out), "--quiet", "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "24 runs, 8 done, 16 to run" in capsys.readouterr().out


def test_journal_ignores_and_trims_a_torn_last_line(tmp_path):
    path = write_sweep(tmp_path, SWEEP.replace("seeds = [0, 1, 2]", "seeds = [0]").replace('"class", "task"',
                                                                                           '"class"'))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0
    journal = out / "runs.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    journal.write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # a write cut short by a crash
    store = ResultStore(out)
    assert len(store.finished_run_ids()) == 3
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0
    lines = journal.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert len(pd.read_csv(out / "runs.csv")) == 4


def test_kill_minus_9_and_restart_loses_nothing_and_duplicates_nothing(tmp_path):
    """Kill the sweep at a random moment mid-run (SIGKILL, no cleanup), restart it: the grid completes with every run
    exactly once and every table complete."""
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clbench.runners.cli", "sweep", str(path), "--out", str(out), "--quiet",
               "--no-plots"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    journal = out / "runs.jsonl"
    kills = 0
    for target in (3, 11):  # kill twice, once early and once in the middle of the grid
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills == 2
    before_restart = journal.read_bytes().count(b"\n")
    assert 11 <= before_restart < 24
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 24 and runs["run_id"].is_unique and (runs["status"] == "ok").all()
    expected = {c.run_id for c in load_sweep(path).configs}
    assert set(runs["run_id"]) == expected  # none lost
    assert journal.read_bytes().count(b"\n") == 24  # none duplicated in the journal either
    evals = pd.read_csv(out / "evals.csv")
    # every run complete: steps −1..4 × 5 experiences, twice in class-IL (accuracy and accuracy_taw)
    per_run = evals.groupby("run_id").size()
    scenario = evals.drop_duplicates("run_id").set_index("run_id")["scenario"].reindex(per_run.index)
    assert (per_run == (scenario == "class").map({True: 2, False: 1}) * 6 * 5).all()
    assert not evals.duplicated(["run_id", "step", "eval_exp", "metric"]).any()
    costs = pd.read_csv(out / "costs.csv")
    assert (costs.groupby("run_id").size() == 6).all()


def test_local_workers_give_the_same_tables_bit_for_bit(tmp_path):
    path = write_sweep(tmp_path, SWEEP.replace("seeds = [0, 1, 2]", "seeds = [0, 1]"))
    tables = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["sweep", str(path), "--out", str(out), "--workers", str(workers), "--quiet", "--no-plots"]) == 0
        tables[workers] = _comparable(out)
    for name in tables[1]:
        pd.testing.assert_frame_equal(tables[1][name], tables[2][name])


def _comparable(out: Path) -> dict[str, pd.DataFrame]:
    """The tables of a folder, in a canonical row order, without wall-clock columns."""
    evals = pd.read_csv(out / "evals.csv").sort_values(["run_id", "step", "eval_exp"]).reset_index(drop=True)
    summary = pd.read_csv(out / "summary.csv").sort_values("run_id").reset_index(drop=True)
    summary = summary.drop(columns=[c for c in summary.columns if c.endswith("_s") or "rss" in c])
    board = pd.read_csv(out / "leaderboard.csv").sort_values("config_id").reset_index(drop=True)
    board = board[[c for c in board.columns if not (c.startswith(("train_s", "eval_s", "peak_rss")))]]
    return {"evals": evals, "summary": summary, "leaderboard": board}


def test_run_folders_written_before_the_journal_are_read(tmp_path):
    out = tmp_path / "old"
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--seeds", "0",
                 "1", "--epochs", "1", "--batch-size", "32", "--out", str(out), "--quiet", "--no-plots"]) == 0
    (out / "runs.jsonl").unlink()  # as an older clbench left it: tables only
    store = ResultStore(out)
    assert len(store.finished_run_ids()) == 2 and len(store.evals()) == 2 * 6 * 5 * 2  # with accuracy_taw rows
    assert not (out / "runs.jsonl").exists()  # reading leaves the folder as it is
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--seeds", "0",
                 "1", "2", "--epochs", "1", "--batch-size", "32", "--out", str(out), "--quiet", "--no-plots"]) == 0
    assert len(ResultStore(out).finished_run_ids()) == 3  # the two old runs carried into the journal, one new
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3


def test_an_interrupted_long_run_resumes_from_its_last_experience_with_the_same_results(tmp_path, digits_class,
                                                                                        monkeypatch):
    """Checkpoint after every experience; a run killed in experience 3 resumes there and ends bit-identical to a run
    that was never interrupted."""
    from clbench.runners.loop import run
    from tests.conftest import config
    from tests.user_strategies import InterruptOnce

    cfg = config("tests.user_strategies:InterruptOnce", params={"ewc_lambda": 10.0})
    uninterrupted = run(cfg, digits_class, progress=False)
    checkpoint = tmp_path / "run.pt"
    monkeypatch.setattr(InterruptOnce, "interrupt_at", 3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, digits_class, progress=False, checkpoint=checkpoint)
    assert checkpoint.exists()
    monkeypatch.setattr(InterruptOnce, "interrupt_at", None)
    resumed = run(cfg, digits_class, progress=False, checkpoint=checkpoint)
    assert resumed.status == "ok", resumed.error
    assert resumed.evals == uninterrupted.evals
    assert [c["train_loss"] for c in resumed.costs][1:] == [c["train_loss"] for c in uninterrupted.costs][1:]
    assert not checkpoint.exists()  # removed once the run is recorded


@pytest.mark.ray
def test_ray_executor_gives_the_same_tables_bit_for_bit(tmp_path):
    """A real local Ray instance (no mocks): each run is a Ray task, the driver writes; the tables equal the local
    executor's."""
    pytest.importorskip("ray", reason="needs the ray extra")
    path = write_sweep(tmp_path, SWEEP.replace("seeds = [0, 1, 2]", "seeds = [0]"))
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main(["sweep", str(path), "--out", str(local), "--quiet", "--no-plots"]) == 0
    assert main(["sweep", str(path), "--out", str(distributed), "--executor", "ray", "--workers", "2", "--quiet",
                 "--no-plots"]) == 0
    expected, got = _comparable(local), _comparable(distributed)
    for name in expected:
        pd.testing.assert_frame_equal(expected[name], got[name])
    assert len(pd.read_csv(distributed / "runs.csv")) == 8


def test_command_line_replaces_seeds_and_settings_of_a_sweep_file(tmp_path, capsys):
    text = SWEEP.replace('grid = { ewc_lambda = [1.0, 10.0] }',
                         'grid = { ewc_lambda = [1.0, 10.0] }\nsettings = { lr = 0.1 }')
    path = write_sweep(tmp_path, text)
    assert main(["sweep", str(path), "--dry-run", "--seeds", "7", "--setting", "lr=0.2", "iterations=3"]) == 0
    listed = capsys.readouterr().out
    assert "8 runs, 0 done, 8 to run" in listed and listed.count(" seed 7 ") == 8
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--seeds", "7", "--setting", "lr=0.2", "iterations=3",
                 "--quiet", "--no-plots"]) == 0
    configs = pd.read_csv(out / "runs.csv")["train_config"].map(json.loads)
    assert {(c["lr"], c["iterations"]) for c in configs} == {(0.2, 3)}  # EWC's own lr is replaced too
