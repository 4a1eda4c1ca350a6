"""A results folder is untrusted input: reading one never imports what it names; and user strategies run wherever
built-ins run (a class with its own name, one registered in the user's module, under worker processes and Ray)."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from clbench.runners.cli import main
from clbench.runners.config import RunConfig
from tests.conftest import FAST_TRAIN

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--benchmark", "split-digits", "--scenario", "class", "--epochs", "1", "--batch-size", "32",
        "--train-subset", "100", "--quiet", "--no-plots"]
PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real folder: naive and EWC λ=3 on split-digits, seed 0."""
    out = tmp_path_factory.mktemp("folder") / "out"
    assert main(["run", *TINY, "--strategy", "naive", "ewc", "--set", "ewc.ewc_lambda=3.0", "--out", str(out)]) == 0
    return out


def _plant(folder: Path, strategy: str, *, keep_labels: bool) -> None:
    """Rewrite every run of the journal to name `strategy` (as a crafted folder would), with or without the labels
    that clbench records (an older folder has none)."""
    lines = []
    for line in (folder / "runs.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for row in [entry["run"], *entry["evals"], *entry["costs"]]:
            row["strategy"] = strategy
        if not keep_labels:
            entry["run"].pop("label"), entry["run"].pop("strategy_ref")
        lines.append(json.dumps(entry))
    (folder / "runs.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("keep_labels", [True, False], ids=["labelled", "older-folder"])
def test_reading_a_crafted_folder_never_imports_the_module_it_names(recorded, tmp_path, keep_labels):
    """`python -m clbench` puts the working directory on sys.path: a .py planted in the folder would run if any
    reading command imported the strategy named in the journal."""
    folder = tmp_path / "shared"
    shutil.copytree(recorded, folder)
    marker = tmp_path / "payload-ran"
    (folder / "planted.py").write_text(PAYLOAD.format(marker=str(marker)))
    _plant(folder, "planted:Evil", keep_labels=keep_labels)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in (["leaderboard", ".", "-o", str(tmp_path / "board.csv")], ["plot", "."],
                    ["report", ".", "-o", str(tmp_path / "report.html")]):
        done = subprocess.run([sys.executable, "-m", "clbench", *command], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert not marker.exists(), f"clbench {command[0]} imported the planted module"
    board = pd.read_csv(tmp_path / "board.csv")
    assert set(board["strategy"]) == {"planted:Evil"}
    expected = {"defaults", "ewc_lambda=3.0"} if keep_labels else None
    if expected:
        assert set(board["label"]) == expected
    else:  # rebuilt from the JSON params alone: every value shown
        assert board["label"].str.contains("ewc_lambda=3.0").sum() == 1


def test_a_standard_library_module_named_in_a_folder_is_not_imported(recorded, tmp_path, capsys):
    """`this:Zen`: importing the module `this` prints the Zen of Python."""
    folder = tmp_path / "zen"
    shutil.copytree(recorded, folder)
    _plant(folder, "this:Zen", keep_labels=False)
    sys.modules.pop("this", None)
    assert main(["leaderboard", str(folder), "-o", str(tmp_path / "board.csv")]) == 0
    assert main(["report", str(folder), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["plot", str(folder)]) == 0
    assert "this" not in sys.modules
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_the_journal_records_the_label_and_the_class_reference(recorded):
    from clbench.strategies.registry import load_strategy

    runs = pd.read_csv(recorded / "runs.csv").set_index("strategy")
    assert runs.at["naive", "label"] == "defaults" and runs.at["ewc", "label"] == "ewc_lambda=3.0"
    assert runs.at["ewc", "strategy_ref"] == "clbench.strategies.ewc:EWC"
    assert load_strategy(runs.at["ewc", "strategy_ref"]).name == "ewc"
    board = pd.read_csv(recorded / "leaderboard.csv")
    assert list(board.columns[:6]) == ["benchmark", "scenario", "strategy", "params", "label", "config_id"]


def test_a_user_class_with_its_own_name_runs_and_shows_that_name(tmp_path):
    """Today's failure: every run ended with "unknown strategy 'self-named'"."""
    out = tmp_path / "out"
    assert main(["run", *TINY, "--strategy", "tests.user_strategies:SelfNamed", "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["ok"] and list(runs["strategy"]) == ["self-named"]
    assert list(runs["strategy_ref"]) == ["tests.user_strategies:SelfNamed"]


def test_a_user_class_named_like_a_built_in_gets_run_ids_of_its_own():
    from clbench.strategies.registry import strategy_ref
    from tests.user_strategies import ShadowsNaive

    mine = RunConfig("split-digits", "class", "naive", strategy_ref=strategy_ref(ShadowsNaive), train=FAST_TRAIN)
    builtin = RunConfig("split-digits", "class", "naive", train=FAST_TRAIN)
    assert builtin.strategy_ref == "clbench.strategies.naive:Naive"
    assert "strategy_ref" not in builtin.canonical()  # run ids from before the field are unchanged
    assert mine.run_id != builtin.run_id


def _readme_strategy_module() -> str:
    """The README's `@register` example, as the user's own module (its class definition, verbatim)."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "@register(" in b)
    definition = block[block.index("@register("):block.index("\nconfig = ")]
    return "from clbench.strategies import SGDStrategy, register\n\n\n" + definition


DRIVER = """
import sys
import mystrategies  # registers "l2-anchor" in the driver only; workers must find it themselves
from clbench.runners.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""

SWEEP = """
seeds = [0, 1]
benchmarks = ["split-digits"]
scenarios = ["task"]

[settings]
epochs = 1
batch_size = 32
lr = 0.05
train_subset = 100

[[strategies]]
name = "l2-anchor"
grid = { strength = [0.01] }

[[strategies]]
name = "tests.user_strategies:SelfNamed"
"""


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_user_strategies_run_in_worker_processes(tmp_path, executor):
    """The README's @register example and a self-named class, with two spawned workers and with Ray tasks: the
    workers import each class from the module path the run config carries."""
    if executor == "ray":
        pytest.importorskip("ray", reason="needs the ray extra")
    user = tmp_path / "user"
    user.mkdir()
    (user / "mystrategies.py").write_text(_readme_strategy_module())
    (user / "driver.py").write_text(textwrap.dedent(DRIVER))
    (user / "sweep.toml").write_text(SWEEP)
    out = tmp_path / "out"
    command = [sys.executable, "driver.py", "sweep", "sweep.toml", "--out", str(out), "--workers", "2",
               "--executor", executor, "--quiet", "--no-plots"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the tests package; mystrategies is found beside the driver
    done = subprocess.run(command, cwd=user, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = pd.read_csv(out / "runs.csv")
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    assert sorted(runs["strategy"]) == ["l2-anchor", "l2-anchor", "self-named", "self-named"]
    assert set(runs["strategy_ref"]) == {"mystrategies:L2Anchor", "tests.user_strategies:SelfNamed"}
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["strategy"]) == {"l2-anchor", "self-named"} and (board["n_seeds"] == 2).all()
