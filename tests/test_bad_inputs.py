"""Bad input is refused up front: one `clbench: error:` line naming the value, exit code 2, nothing on disk.

Every case here got past the checks before (a failed run recorded, a traceback, or a file written before the error);
all of them must now fail before any training, so the file runs in seconds.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clbench.runners.cli import main

RUN = ["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--quiet", "--no-plots"]
SWEEP = """seeds = [0]
benchmarks = ["split-digits"]
scenarios = ["class"]

[settings]
epochs = 1

[[strategies]]
name = "naive"
"""
LONG = "a" * 300  # longer than any common file system's 255-byte names


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(tmp_path, capsys, argv, named):
    """Run the CLI; assert exit 2, exactly one error line naming `named`, and no new file under tmp_path."""
    before = listing(tmp_path)
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("clbench: error: ") and named in lines[0], lines[0]
    assert listing(tmp_path) == before
    return lines[0]


def sweep_file(tmp_path, text=SWEEP, name="sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edited(old, new):
    """SWEEP with `old` replaced; old=None puts `new` at the top in place of the [[strategies]] table."""
    if old is None:
        return f"{new}\n{SWEEP.split('[[strategies]]')[0]}"
    assert old in SWEEP
    return SWEEP.replace(old, new)


@pytest.mark.parametrize(("flags", "named"), [
    (["--lr", "nan"], "lr must be positive and finite, got nan"),
    (["--lr", "inf"], "got inf"),
    (["--weight-decay", "nan"], "weight-decay must be finite and >= 0, got nan"),
    (["--weight-decay", "-1"], "got -1.0"),
    (["--weight-decay", "inf"], "got inf"),
    (["--momentum", "nan"], "momentum must be in [0, 1), got nan"),
    (["--seeds", "0", "-1"], "--seeds must be integers >= 0, got -1"),
    (["--stream-seed", "-1"], "--stream-seed must be >= 0, got -1"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
])
def test_run_refuses_non_finite_and_negative_settings(tmp_path, capsys, flags, named):
    refused(tmp_path, capsys, [*RUN, "--out", tmp_path / "out", *flags], named)


@pytest.mark.parametrize(("strategy", "named"), [(":Nope", "':Nope'"), (".relative:Nope", "'.relative:Nope'")])
def test_run_refuses_malformed_strategy_references(tmp_path, capsys, strategy, named):
    argv = [*RUN[:6], strategy, "--out", tmp_path / "out"]
    assert "package.module:Class" in refused(tmp_path, capsys, argv, named)


def test_run_refuses_an_infinite_hyperparameter(tmp_path, capsys):
    argv = [*RUN[:6], "ewc", "--set", "ewc_lambda=1e999", "--out", tmp_path / "out"]
    refused(tmp_path, capsys, argv, "ewc_lambda=inf")


@pytest.mark.parametrize(("old", "new", "named"), [
    ("epochs = 1", "epochs = 1\nlr = nan", "lr must be positive and finite, got nan"),
    ("epochs = 1", "epochs = 1\nlr = inf", "got inf"),
    ("epochs = 1", "epochs = 1\nweight_decay = nan", "weight-decay must be finite and >= 0, got nan"),
    ("epochs = 1", "epochs = 1\nweight_decay = -1", "got -1"),
    ("epochs = 1", "epochs = 1\nmomentum = nan", "momentum must be in [0, 1), got nan"),
    ('name = "naive"', 'name = "naive"\nsettings = { lr = nan }', "'naive': lr must be positive and finite, got nan"),
    ('name = "naive"', 'name = "naive"\nsettings = { weight_decay = -inf }', "'naive': weight-decay"),
    ("seeds = [0]", "seeds = [0, -1]", "seeds must be integers >= 0, got -1"),
    ("epochs = 1", "epochs = 1\nstream_seed = -1", "stream_seed must be >= 0, got -1"),
    ('name = "naive"', 'name = "naive"\nparams = 5', "params must be a table"),
    ('name = "naive"', 'name = "naive"\ngrid = 5', "grid must be a table"),
    ('name = "naive"', 'name = "naive"\nsettings = 5', "settings must be a table, got 5"),
    ('name = "naive"', 'name = "naive"\nscenarios = 5', "'scenarios' must be a non-empty list of str, got 5"),
    (None, "strategies = 5", "'strategies' must be a list of [[strategies]] tables, got 5"),
    (None, "strategies = [5]", "every [[strategies]] entry must be a table with a name, got 5"),
    (None, "strategies = [{ name = 5 }]", "unknown strategy 5"),
    ('name = "naive"', 'name = "ewc"\nparams = { ewc_lambda = nan }', "ewc_lambda=nan"),
])
def test_sweep_files_with_bad_values_or_shapes_are_refused(tmp_path, capsys, old, new, named):
    path = sweep_file(tmp_path, edited(old, new))
    refused(tmp_path, capsys, ["sweep", path, "--out", tmp_path / "out"], named)


@pytest.mark.parametrize(("flags", "named"), [
    (["--setting", "lr=nan"], "lr must be positive and finite, got nan"),
    (["--setting", "weight_decay=-1"], "weight-decay must be finite and >= 0, got -1"),
    (["--setting", "momentum=nan"], "got nan"),
    (["--setting", "stream_seed=-1"], "stream_seed must be >= 0, got -1"),
    (["--seeds", "-1"], "--seeds must be integers >= 0, got -1"),
    (["--setting", "lrr=0.1"], "unknown setting 'lrr' in --setting (did you mean 'lr'?); valid choices: "),
    (["--address", "host:1"], "--address 'host:1' names a Ray cluster; it needs --executor ray"),
])
def test_sweep_command_line_replacements_are_checked(tmp_path, capsys, flags, named):
    path = sweep_file(tmp_path)
    refused(tmp_path, capsys, ["sweep", path, "--out", tmp_path / "out", *flags], named)


@pytest.mark.parametrize(("content", "named"), [
    (b"\xff\xfe\x00seeds = [0]", "is not UTF-8 text"),
    (b"", "is empty"),
    (b"# only a comment\n", "is empty"),
])
def test_unreadable_or_empty_sweep_files_are_refused(tmp_path, capsys, content, named):
    path = tmp_path / "sweep.toml"
    path.write_bytes(content)
    refused(tmp_path, capsys, ["sweep", path, "--out", tmp_path / "out"], named)


def test_a_folder_given_as_the_sweep_file_is_called_a_folder(tmp_path, capsys):
    (tmp_path / "grid.toml").mkdir()
    refused(tmp_path, capsys, ["sweep", tmp_path / "grid.toml", "--out", tmp_path / "out"], "is a folder")


def test_cuda_is_refused_on_a_machine_without_it_by_run_and_sweep_alike(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = "requested but CUDA is not available; valid choices here: cpu"
    refused(tmp_path, capsys, [*RUN, "--out", tmp_path / "out", "--device", "cuda"], f"'cuda' {message}")
    for device in ("cuda", "cuda:0"):
        path = sweep_file(tmp_path, edited("epochs = 1", f'epochs = 1\ndevice = "{device}"'), name=f"{device}.toml")
        refused(tmp_path, capsys, ["sweep", path, "--out", tmp_path / "out"], f"{device!r} {message}")
    path = sweep_file(tmp_path)
    refused(tmp_path, capsys, ["sweep", path, "--out", tmp_path / "out", "--setting", "device=cuda:0"], message)


def test_a_cuda_index_the_machine_lacks_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    refused(tmp_path, capsys, [*RUN, "--out", tmp_path / "out", "--device", "cuda:1"],
            "'cuda:1' requested but this machine has 1 CUDA device(s); valid choices here: cpu, cuda, cuda:0")


def test_output_names_longer_than_the_file_system_allows(tmp_path, capsys):
    results = tmp_path / "res"
    results.mkdir()
    (results / "runs.jsonl").write_text("")  # an (empty) output folder to read
    path = sweep_file(tmp_path)
    fits_but_not_its_temp_copy = "b" * 250 + ".csv"
    for argv in ([*RUN, "--out", tmp_path / LONG],
                 [*RUN, "--out", tmp_path / "new" / LONG / "deeper"],
                 ["sweep", path, "--out", tmp_path / LONG],
                 ["leaderboard", results, "-o", tmp_path / f"{LONG}.csv"],
                 ["leaderboard", results, "-o", tmp_path / "new" / fits_but_not_its_temp_copy],
                 ["report", results, "-o", tmp_path / "new" / f"{LONG}.html"]):
        assert "allows at most" in refused(tmp_path, capsys, argv, f"{argv[-1]}'")


def test_input_folders_the_os_cannot_look_up_and_outputs_over_inputs(tmp_path, capsys):
    results = tmp_path / "res"
    results.mkdir()
    (results / "runs.jsonl").write_text("")
    for argv in (["plot", tmp_path / LONG], ["report", tmp_path / LONG], ["leaderboard", tmp_path / LONG, "-o", "x"]):
        before = listing(tmp_path)
        assert main([str(a) for a in argv]) == 2
        *usage, error = capsys.readouterr().err.strip().splitlines()  # argparse's usage (may wrap) and our line
        assert usage[0].startswith("usage: clbench ") and not any("error" in line for line in usage)
        assert error.startswith("clbench: error: argument DIR: cannot look up")
        assert listing(tmp_path) == before
    for command in ("leaderboard", "report"):
        refused(tmp_path, capsys, [command, results, "-o", results / "runs.jsonl"], "the runs.jsonl that")


@pytest.mark.parametrize("argv", [[*RUN, "--out", ""], ["sweep", "preset:hnet-split-mnist", "--out", ""],
                                  ["leaderboard", "res", "-o", ""], ["plot", ""]])
def test_an_empty_path_is_not_taken_for_the_current_folder(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text("")
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("the path is empty; " + (
        "give a folder written by clbench run or sweep" if argv[0] == "plot" else "give a file or folder name"))
    assert listing(tmp_path) == ["res", "res/runs.jsonl"]


def test_a_preset_whose_data_is_missing_writes_no_published_csv(tmp_path, capsys):
    argv = ["sweep", "preset:gem-mnist-permutations", "--out", tmp_path / "x", "--setting",
            f"data_root={tmp_path / 'nonexistent'}"]
    refused(tmp_path, capsys, argv, "mnist not found")


def test_a_crash_that_used_to_be_a_traceback_is_one_line_in_a_real_process(tmp_path):
    path = sweep_file(tmp_path, edited('name = "naive"', 'name = "naive"\nparams = 5'))
    proc = subprocess.run([sys.executable, "-m", "clbench", "sweep", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"clbench: error: {path}, [[strategies]] 'naive': params must be a table such as params = {{ name = value }}, "
        "got 5"]
    assert listing(tmp_path) == ["sweep.toml"]
