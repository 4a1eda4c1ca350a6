"""clbench bench: a new strategy from a module path, tuned with a suite's protocol, against its tuned baselines."""

import pandas as pd
import pytest

from clbench.runners.cli import main
from clbench.runners.sweep import sweep_from_dict
from clbench.suites import load_suite, suite_names

SUITE = """name = "tiny"
seeds = [0, 1]

[[cells]]
benchmark = "split-digits"
scenarios = ["class", "task"]

[settings]
epochs = 3

[tune]
experiences = 2
seeds = [0]
trials = 2
validation_split = 0.2

[[strategies]]
name = "naive"

[[strategies]]
name = "ewc"
grid = { ewc_lambda = [1.0, 10.0, 100.0] }

[[strategies]]
name = "separate"
"""
MINE = "tests.user_strategies:L2Anchor"


def test_the_shipped_suites_parse_into_tuned_sweeps_of_every_built_in_strategy():
    from clbench.strategies.registry import BUILTIN_MODULES

    assert suite_names() == ["cifar", "digits", "standard"]
    for name in suite_names():
        suite = load_suite(name)
        assert sorted(suite.baselines) == sorted(BUILTIN_MODULES)  # every built-in, whatever else is registered
        for spec in suite.sweep_specs(suite.spec["strategies"]):
            sweep = sweep_from_dict(spec, name)
            assert sweep.tune is not None and all(c.phase == "tune" for c in sweep.configs)
            assert max(len(m.candidates) for m in sweep.methods) <= sweep.tune.trials  # the same budget for all
    assert load_suite("standard").spec["seeds"] == [0, 1, 2, 3, 4]


def test_bench_end_to_end_with_a_user_strategy(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "bench"
    assert main(["bench", MINE, "--suite", str(suite), "--out", str(out), "--no-plots", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bench L2Anchor on suite tiny" in printed or "on suite tiny" in printed
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.tex", "compare.csv", "report.html"):
        assert (out / name).is_file(), name
    runs = pd.read_csv(out / "runs.csv")
    mine = runs[runs["strategy_ref"] == MINE]
    assert set(mine["phase"]) == {"tune", "final"} and (mine["phase"] == "tune").sum() == 2 * 2  # 2 trials × 2 cells
    board = pd.read_csv(out / "leaderboard.csv")
    row = board[board["strategy"] == mine["strategy"].iloc[0]]
    assert len(row) == 2 and row["selected_by"].str.startswith("acc on val, first 2 experiences, 2 trial(s)").all()
    assert set(board.loc[board["scenario"] == "class", "strategy"]) == {"naive", "ewc", mine["strategy"].iloc[0]}
    comparison = pd.read_csv(out / "compare.csv")
    assert set(comparison["strategy"]) == {mine["strategy"].iloc[0]}
    assert set(comparison["reference"]) == {"naive", "ewc", "separate"}  # separate in task-IL only
    assert len(comparison) == 2 + 2 + 1  # naive and ewc in both scenarios, separate in task-IL
    tested = comparison["p_value"].notna()  # a difference without spread has no test (compare's "zero variance")
    assert (comparison.loc[tested, "p_holm"] >= comparison.loc[tested, "p_value"]).all()
    assert comparison.loc[~tested, "p_holm"].isna().all()
    n, n_baselines = len(runs), len(runs) - len(mine)
    assert main(["bench", MINE, "--suite", str(suite), "--out", str(out), "--no-plots", "--quiet"]) == 0
    assert len(pd.read_csv(out / "runs.csv")) == n  # every run reused

    again = tmp_path / "untuned"
    assert main(["bench", MINE, "--suite", str(suite), "--out", str(again), "--no-tune", "--set", "strength=0.05",
                 "--baselines", str(out), "--no-plots", "--quiet"]) == 0
    runs = pd.read_csv(again / "runs.csv")
    mine = runs[runs["strategy_ref"] == MINE]
    assert set(mine["phase"]) == {"final"} and len(mine) == 2 * 2  # 2 cells' scenarios × 2 seeds, no search
    assert len(runs) == n_baselines + 4  # the baselines came from --baselines (not the other bench's runs), none rerun
    assert capsys.readouterr().out.count("baseline run(s) reused") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", MINE, "--suite", "nope"], "'nope'"),
    (["bench", "ewc", "--suite", "digits"], "is a baseline of suite 'digits'"),
    (["bench", MINE, "--suite", "digits", "--grid", "strength=0.1"], "must be NAME=[V1, V2, ...]"),
    (["bench", MINE, "--suite", "digits", "--grid", "power=[1, 2]"], "'power'"),
])
def test_bad_bench_input_is_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2 and not out.exists()
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_reused_baselines_are_taken_as_they_are_failures_included(tmp_path):
    """A committed baseline that diverged would diverge again bit for bit: a bench reuses it (failed) and runs only
    the new strategy."""
    import json

    suite = tmp_path / "tiny.toml"
    suite.write_text("""name = "tiny-failing"
seeds = [0, 1]
[[cells]]
benchmark = "split-digits"
scenarios = ["task"]
[settings]
epochs = 1
train_subset = 60
test_subset = 30
[[strategies]]
name = "naive"
[[strategies]]
name = "ewc"
settings = { lr = 1e12 }
""")
    baselines = tmp_path / "baselines"
    assert main(["bench", "--suite", str(suite), "--out", str(baselines), "--no-plots", "--quiet"]) == 1
    runs = pd.read_csv(baselines / "runs.csv")
    assert set(runs.loc[runs["strategy"] == "ewc", "status"]) == {"failed"}
    out = tmp_path / "bench"
    assert main(["bench", MINE, "--suite", str(suite), "--out", str(out), "--baselines", str(baselines),
                 "--no-tune", "--no-plots", "--quiet"]) == 0  # nothing it ran failed
    entries = [json.loads(line)["run"] for line in (out / "runs.jsonl").read_text().splitlines()]
    ewc_ids = [e["run_id"] for e in entries if e["strategy"] == "ewc"]
    assert len(ewc_ids) == 2 and len(set(ewc_ids)) == 2  # the two failed runs, merged once, not run again
    assert sorted(e["strategy"] for e in entries if e["strategy"] not in ("ewc", "naive")) == ["L2Anchor"] * 2
