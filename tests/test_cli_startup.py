"""The command line's first impression: commands that describe or read results start without torch, the help shows
groups and defaults, unknown names get a close match, unsupported pairs are skipped, shell completion works."""

import shutil
import subprocess
import sys
import textwrap

import pytest

from clbench.benchmarks.catalog import list_benchmarks
from clbench.presets import list_presets
from clbench.runners.cli import main
from clbench.strategies import get_strategy
from clbench.strategies.catalog import builtin_entry
from clbench.strategies.registry import BUILTIN_MODULES

TINY = ["--train-subset", "60", "--test-subset", "30", "--epochs", "1", "--threads", "1", "--no-plots", "--quiet"]


def _modules_after(argv: list[str]) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run `clbench ARGV` in a fresh interpreter and return the modules it imported (and the process)."""
    code = textwrap.dedent(f"""
        import sys
        from clbench.runners.cli import main
        try:
            code = main({argv!r})
        except SystemExit as exit:  # --help and --version exit through argparse
            code = exit.code
        print("\\nMODULES " + " ".join(sorted(sys.modules)))
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    modules = set(proc.stdout.rpartition("MODULES ")[2].split())
    return modules, proc


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("startup") / "res"
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "ewc",
                 "--seeds", "0", "1", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], ["run", "--help"], ["list"], ["list", "--strategy", "icarl"], ["presets"],
    ["presets", "three-scenarios-split-mnist"], ["completion", "bash"],
])
def test_describing_commands_do_not_import_torch(argv):
    modules, proc = _modules_after(argv)
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in modules and "clbench.strategies.base" not in modules
    assert "MODULES" in proc.stdout  # the probe itself ran: an empty module list cannot pass the check above


def test_version_and_help_do_not_import_pandas():
    for argv in (["--version"], ["--help"], ["run", "--help"]):
        modules, proc = _modules_after(argv)
        assert proc.returncode == 0 and "pandas" not in modules, argv


@pytest.mark.parametrize("command", ["leaderboard", "compare", "report"])
def test_commands_reading_a_results_folder_do_not_import_torch(command, results_dir, tmp_path):
    argv = {"leaderboard": ["leaderboard", str(results_dir), "-o", str(tmp_path / "board.csv")],
            "compare": ["compare", str(results_dir), "--reference", "naive"],
            "report": ["report", str(results_dir), "-o", str(tmp_path / "report.html")]}[command]
    modules, proc = _modules_after(argv)
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in modules
    assert "pandas" in modules  # it did read the tables


@pytest.mark.parametrize("name", sorted(BUILTIN_MODULES))
def test_catalog_describes_each_builtin_as_its_class_does(name):
    entry, cls = builtin_entry(name), get_strategy(name)
    assert entry.scenarios == frozenset(cls.scenarios)
    live = cls.hyperparameters()
    assert list(entry.hyperparameters) == list(live)
    for key, hp in live.items():
        read = entry.hyperparameters[key]
        assert (read.default, read.type_name) == (hp.default, hp.type_name)
        assert read.check(hp.default, name) == hp.check(hp.default, name)
    assert entry.summary and entry.summary.split()[0] in (cls.__doc__ or "")


def test_catalog_follows_a_constructor_and_scenarios_through_base_classes():
    # center-loss and er-ace inherit from replay; icarl's scenarios are its own
    assert builtin_entry("er-ace").scenarios == frozenset({"class", "domain", "task"})
    assert builtin_entry("icarl").scenarios == frozenset({"class", "task"})
    assert "center_lambda" in builtin_entry("center-loss").hyperparameters


def test_preset_run_counts_match_their_sweeps():
    from clbench.runners.sweep import sweep_from_dict

    for preset in list_presets():
        assert preset.n_runs == len(sweep_from_dict(preset.sweep, preset.name).configs), preset.name


def test_run_help_shows_groups_and_per_benchmark_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for group in ("stream:", "strategies:", "training:", "evaluation:", "output:", "execution:"):
        assert f"\n{group}\n" in out
    flat = " ".join(out.split())
    assert "--eval-batch-size N mini-batch of the evaluations (default: 2048)" in flat
    assert "--weight-decay F L2 weight decay (default: 0)" in flat
    digits = next(b for b in list_benchmarks() if b.name == "split-digits")
    assert f"split-digits: {digits.training['epochs']}" in flat  # --epochs names the benchmarks that differ
    assert "--lr F default per benchmark: 0.01; split-cifar10, split-cifar100: 0.03" in flat


@pytest.mark.parametrize("argv, expected", [
    (["--strategy", "ewcc"], "unknown strategy 'ewcc' (did you mean 'ewc'?); valid choices: agem,"),
    (["--strategy", "naive", "ewc", "--set", "mem_size=3"],
     "unknown hyperparameter 'mem_size' for naive, ewc in --set; valid choices: decay_factor, ewc_lambda"),
    (["--strategy", "ewc", "--set", "ewc_lamda=3"], "unknown hyperparameter 'ewc_lamda' for ewc in --set (did you "
                                                   "mean 'ewc_lambda'?)"),
    (["--benchmark", "split-digtis"], "unknown benchmark 'split-digtis' (did you mean 'split-digits'?)"),
    (["--strategy", "qqqq"], "unknown strategy 'qqqq'; valid choices"),  # nothing close: no suggestion
])
def test_unknown_names_get_the_closest_valid_name(argv, expected, tmp_path, capsys):
    base = {"--benchmark": ["split-digits"], "--scenario": ["class"], "--strategy": ["naive"]}
    given = dict(base)
    key = None
    for item in argv:
        if item.startswith("--"):
            key, given[item] = item, []
        else:
            given[key].append(item)
    args = ["run", *(x for k, v in given.items() for x in (k, *v)), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unsupported_pairs_are_skipped_with_one_notice(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "res"
    code = main(["run", "--benchmark", "split-digits", "--scenario", "class", "task", "--strategy", "naive",
                 "exssnet", "--out", str(out), *TINY])
    assert code == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("skipping unsupported pairs")]
    assert notices == ["skipping unsupported pairs (--strict refuses them): exssnet × class"]
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(zip(runs["strategy"], runs["scenario"], strict=True)) == [
        ("exssnet", "task"), ("naive", "class"), ("naive", "task")]


def test_strict_or_nothing_left_refuses_unsupported_pairs(tmp_path, capsys):
    common = ["run", "--benchmark", "split-digits", "--scenario", "class", "--out", str(tmp_path / "out"), *TINY]
    assert main([*common, "--strategy", "naive", "exssnet", "--strict"]) == 2
    assert "strategy 'exssnet' does not support scenario 'class'; valid choices: task" in capsys.readouterr().err
    assert main([*common, "--strategy", "exssnet"]) == 2
    assert "does not support scenario 'class'" in capsys.readouterr().err
    assert main(["run", "--benchmark", "permuted-digits", "--scenario", "class", "--strategy", "naive", "exssnet",
                 "--out", str(tmp_path / "out"), *TINY]) == 2
    assert "no benchmark × scenario × strategy combination is supported" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mps_is_refused_clearly_where_torch_has_none(tmp_path, capsys):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--device",
                 "mps", "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "device 'mps' requested but" in err and "valid choices here: cpu" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_list_describes_a_user_strategy_by_module_path(capsys):
    assert main(["list", "--strategy", "tests.user_strategies:L2Anchor"]) == 0
    out = capsys.readouterr().out
    assert "(tests.user_strategies:L2Anchor)" in out
    assert "strength = 0.01  (float)" in out and "tune_grid" in out and "pull the weights" in out
    assert main(["list", "--strategy", "nope:Missing"]) == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_and_names(tmp_path, capsys):
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "clbench.bash"
    script.write_text(capsys.readouterr().out)

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        probe = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
                 f"COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; _shtab_clbench; "
                 "printf '%s\\n' \"${COMPREPLY[@]}\"")
        proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
        return proc.stdout.split()

    assert "bench" in complete("clbench be")
    assert complete("clbench run --benchmark split-d") == ["split-digits"]
    assert "ewc" in complete("clbench run --strategy ew")
    assert "--eval-period" in complete("clbench run --eval-p")
    assert main(["completion", "fish"]) == 2


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh")
def test_zsh_completion_is_valid_zsh(tmp_path, capsys):
    assert main(["completion", "zsh"]) == 0
    script = tmp_path / "_clbench"
    script.write_text(capsys.readouterr().out)
    proc = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "split-digits" in script.read_text()


def test_a_strategy_module_in_the_current_folder_runs_without_pythonpath(tmp_path):
    """`clbench bench mymodule:MyStrategy` where mymodule.py was written: imported from the current folder, also by
    the sweep's worker processes (spawned, they inherit the extended sys.path)."""
    (tmp_path / "mymod.py").write_text(textwrap.dedent('''
        from clbench.strategies import SGDStrategy


        class Mine(SGDStrategy):
            """Plain SGD under another name."""

            def __init__(self, k: float = 1.0):
                self.k = k
    '''))
    (tmp_path / "sweep.toml").write_text(textwrap.dedent('''
        seeds = [0, 1]
        benchmarks = ["split-digits"]
        scenarios = ["class"]
        [settings]
        train_subset = 60
        test_subset = 30
        epochs = 1
        [[strategies]]
        name = "mymod:Mine"
    '''))
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    clbench = [sys.executable, "-c", "import sys; from clbench.runners.cli import main; sys.exit(main())"]
    shown = subprocess.run([*clbench, "list", "--strategy", "mymod:Mine"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Mine  (mymod:Mine)") and "k = 1.0  (float)" in shown.stdout
    swept = subprocess.run([*clbench, "sweep", "sweep.toml", "--out", "res", "--workers", "2", "--no-plots",
                            "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert swept.returncode == 0, swept.stderr
    import pandas as pd

    runs = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert list(runs["strategy"]) == ["Mine", "Mine"] and set(runs["status"]) == {"ok"}
