"""A results folder is untrusted input: a damaged journal stops every command with one message and changes nothing;
a full disk is one line and leaves the journal valid; no temp files are left behind; plots share the tables' mode;
the tables are the same bytes whatever the number of workers."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from clbench.errors import DiskFullError
from clbench.results.store import STALE_TEMP_AGE_S, ResultStore, write_csv
from clbench.runners.cli import main
from tests.test_sweep import SWEEP, write_sweep

TINY = ["--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--train-subset", "100",
        "--epochs", "1", "--batch-size", "32", "--quiet"]  # fmt: skip
TINY_SWEEP = """
seeds = [0, 2]
benchmarks = ["split-digits"]
scenarios = ["class"]

[settings]
epochs = 1
batch_size = 32
train_subset = 100

[[strategies]]
name = "naive"
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A real folder of two runs (journal and tables, no plots), built once; tests work on copies of it."""
    out = tmp_path_factory.mktemp("tiny") / "out"
    assert main(["run", *TINY, "--seeds", "0", "1", "--no-plots", "--out", str(out)]) == 0
    return out


@pytest.fixture
def folder(tiny_folder, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(tiny_folder, copy)
    return copy


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes' hash and its mtime: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("clbench: error: ") and "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------------
# a damaged journal


def _entry_edit(edit):
    """A corruption that replaces line 2 with the JSON of edit(the entry on that line)."""
    def corrupt(lines):
        entry = json.loads(lines[1])
        return [lines[0], json.dumps(edit(entry)).encode()], 2
    return corrupt


def _set(path, value):
    def edit(entry):
        target = entry
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return entry
    return edit


def _drop(path):
    def edit(entry):
        target = entry
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return entry
    return edit


# name → corrupt(the journal's two lines) → (new lines, the number of the bad line)
CORRUPTIONS = {
    "garbage line": lambda lines: ([*lines, b"this is not a run"], 3),
    "truncated JSON then a newline": lambda lines: ([lines[0], lines[1][: len(lines[1]) // 2]], 2),
    "bad line in the middle": lambda lines: ([lines[0], b'{"run": {"run_id": ', lines[1]], 2),
    "non-UTF-8 bytes": lambda lines: ([lines[0], lines[1].replace(b"naive", b"na\xff\xfeve", 1)], 2),
    "zero-filled block": lambda lines: ([lines[0], b"\0" * 512, lines[1]], 2),
    "empty line": lambda lines: ([lines[0], b"", lines[1]], 2),
    "a list, not an object": _entry_edit(lambda entry: [entry["run"], entry["evals"]]),
    "null": _entry_edit(lambda entry: None),
    "no costs": _entry_edit(_drop(["costs"])),
    "run without run_id": _entry_edit(_drop(["run", "run_id"])),
    "run without status": _entry_edit(_drop(["run", "status"])),
    "run a string": _entry_edit(_set(["run"], "naive")),
    "evals an object": _entry_edit(_set(["evals"], {"0": 1})),
    "an eval a number": _entry_edit(_set(["evals", 3], 0.5)),
    "seed a string": _entry_edit(_set(["run", "seed"], "1")),
    "value a string": _entry_edit(_set(["evals", 0, "value"], "high")),
    "step a boolean": _entry_edit(_set(["costs", 2, "step"], True)),
    "an eval of another run": _entry_edit(_set(["evals", 5, "run_id"], "0123456789abcdef")),
}


def _command(name: str, folder: Path, tmp_path: Path) -> list[str]:
    if name == "run":  # seed 2 is new: a run that read past the damage would train and append it
        return ["run", *TINY, "--seeds", "0", "1", "2", "--out", str(folder)]
    if name == "sweep":
        return ["sweep", str(write_sweep(tmp_path, TINY_SWEEP)), "--out", str(folder), "--quiet"]
    return {"leaderboard": ["leaderboard", str(folder), "-o", str(tmp_path / "merged.csv")],
            "plot": ["plot", str(folder)],
            "report": ["report", str(folder)]}[name]  # fmt: skip


def damage(folder: Path, corruption: str) -> int:
    journal = folder / "runs.jsonl"
    lines, bad = CORRUPTIONS[corruption](journal.read_bytes().split(b"\n")[:-1])
    journal.write_bytes(b"".join(line + b"\n" for line in lines))
    return bad


@pytest.mark.parametrize("command", ["leaderboard", "plot", "report", "run", "sweep"])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_damaged_journal_stops_every_command_with_one_message_and_changes_nothing(folder, tmp_path, capsys,
                                                                                   corruption, command):
    bad = damage(folder, corruption)
    before = snapshot(folder)
    capsys.readouterr()
    assert main(_command(command, folder, tmp_path)) == 2
    message = one_error_line(capsys.readouterr().err)
    assert "runs.jsonl" in message and f"line {bad}:" in message
    assert snapshot(folder) == before  # nothing trained, appended, derived, plotted or reported
    assert not (tmp_path / "merged.csv").exists()


@pytest.mark.parametrize(("corruption", "command"), [("garbage line", "leaderboard"), ("non-UTF-8 bytes", "sweep"),
                                                     ("seed a string", "run")])
def test_a_damaged_journal_gives_no_traceback_from_the_real_command(folder, tmp_path, corruption, command):
    bad = damage(folder, corruption)
    before = snapshot(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "clbench.runners.cli", *_command(command, folder, tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    message = one_error_line(done.stderr)
    assert f"runs.jsonl', line {bad}:" in message
    assert snapshot(folder) == before


def test_messages_say_what_is_wrong(folder, capsys):
    for corruption, expected in [("non-UTF-8 bytes", "not UTF-8 text (byte 0xff"),
                                 ("truncated JSON then a newline", "not valid JSON"),
                                 ("no costs", 'the entry lacks "costs"'),
                                 ("seed a string", '"run"."seed" must be an integer, got a string ("1")'),
                                 ("step a boolean", '"costs"[2]."step" must be an integer, got a boolean (true)'),
                                 ("an eval of another run", '"evals"[5] belongs to run "0123456789abcdef"')]:
        journal = folder / "runs.jsonl"
        original = journal.read_bytes()
        damage(folder, corruption)
        assert main(["leaderboard", str(folder), "-o", str(folder.parent / "x.csv")]) == 2
        assert expected in capsys.readouterr().err, corruption
        journal.write_bytes(original)


def test_only_a_torn_last_line_is_passed_over(folder, tmp_path, capsys):
    journal = folder / "runs.jsonl"
    lines = journal.read_bytes().split(b"\n")[:-1]
    for k, tail in enumerate((lines[1][:100], lines[1])):  # cut mid-line, or whole but for its newline: no run yet
        journal.write_bytes(lines[0] + b"\n" + tail)
        assert main(["leaderboard", str(folder), "-o", str(tmp_path / f"board{k}.csv")]) == 0
        assert len(ResultStore(folder).finished_run_ids()) == 1
        journal.write_bytes(lines[0] + b"\n" + b"}{\n" + tail)  # a torn tail does not excuse a bad line before it
        capsys.readouterr()
        assert main(["leaderboard", str(folder), "-o", str(tmp_path / "never.csv")]) == 2
        assert "runs.jsonl', line 2: not valid JSON" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------------------------------
# a full disk


def _journal_fd(fd: int, journal: Path) -> bool:
    return journal.exists() and os.path.samestat(os.fstat(fd), os.stat(journal))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("failure", ["short write, then the error", "fsync after a complete line"])
def test_a_full_disk_during_the_journal_append_is_one_line_and_leaves_the_journal_as_it_was(folder, monkeypatch,
                                                                                            capsys, code, failure):
    journal = folder / "runs.jsonl"
    before = snapshot(folder)
    real_write, real_fsync = os.write, os.fsync
    calls = []

    def write(fd, data):
        if failure.startswith("short") and _journal_fd(fd, journal):
            calls.append(len(data))
            if len(calls) > 1:
                raise OSError(code, os.strerror(code))
            return real_write(fd, bytes(data[: len(data) // 2]))  # a partial line reaches the file
        return real_write(fd, data)

    def fsync(fd):
        if failure.startswith("fsync") and _journal_fd(fd, journal):
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert main(["run", *TINY, "--seeds", "0", "1", "2", "--no-plots", "--out", str(folder)]) == 1
    message = one_error_line(capsys.readouterr().err)
    assert f"cannot write {str(journal)!r}: the disk is full ({os.strerror(code)})" in message
    monkeypatch.undo()
    assert {k: v[0] for k, v in snapshot(folder).items()} == {k: v[0] for k, v in before.items()}
    assert len(ResultStore(folder).finished_run_ids()) == 2  # still a valid journal, the new run not in it
    assert main(["run", *TINY, "--seeds", "0", "1", "2", "--no-plots", "--out", str(folder)]) == 0  # disk freed
    assert len(ResultStore(folder).finished_run_ids()) == 3


def test_a_full_disk_while_plotting_is_one_line_with_exit_1_and_no_litter(folder, monkeypatch, capsys):
    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", savefig)
    capsys.readouterr()
    assert main(["plot", str(folder)]) == 1
    message = one_error_line(capsys.readouterr().err)
    assert f"{folder / 'plots'}/" in message and ".png': the disk is full (No space left on device)" in message
    assert list((folder / "plots").iterdir()) == []  # neither a temp file nor a half PNG


def test_a_full_disk_while_writing_the_report_is_exit_1_not_bad_input(folder, monkeypatch, capsys):
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(".report.html."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    capsys.readouterr()
    assert main(["report", str(folder)]) == 1
    message = one_error_line(capsys.readouterr().err)
    assert f"cannot write {str(folder / 'report.html')!r}: the disk is full" in message
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_disk_full_error_names_the_file_and_pickles():
    import pickle

    err = DiskFullError(Path("/x/runs.jsonl"), errno.EDQUOT)
    assert isinstance(err, OSError) and err.errno == errno.EDQUOT and err.path == Path("/x/runs.jsonl")
    assert str(err) == f"cannot write '/x/runs.jsonl': the disk is full ({os.strerror(errno.EDQUOT)})"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` with a file of zeros, then free ``leave`` bytes (whole pages) of it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    stat = os.statvfs(disk)
    assert stat.f_bavail * stat.f_frsize == leave


def test_a_really_full_disk_fails_the_journal_append_with_one_line(tiny_folder, small_disk, capsys):
    out = small_disk / "out"
    shutil.copytree(tiny_folder, out)
    journal = (out / "runs.jsonl").read_bytes()
    fill(small_disk)
    capsys.readouterr()
    assert main(["run", *TINY, "--seeds", "0", "1", "2", "--no-plots", "--out", str(out)]) == 1
    message = one_error_line(capsys.readouterr().err)
    assert message == (f"clbench: error: cannot write {str(out / 'runs.jsonl')!r}: the disk is full "
                       "(No space left on device)")
    assert (out / "runs.jsonl").read_bytes() == journal  # the part of the line that fitted was cut off again
    assert len(ResultStore(out).finished_run_ids()) == 2


def test_a_really_full_disk_fails_a_plot_with_one_line(tiny_folder, small_disk, capsys):
    out = small_disk / "out"
    shutil.copytree(tiny_folder, out)
    journal = (out / "runs.jsonl").read_bytes()
    assert max(p.stat().st_size for p in out.glob("*.csv")) < 12288  # evals.csv, with its accuracy_taw rows
    fill(small_disk, leave=16384)  # room for the tables' rewrite (one at a time), not for a PNG (over 30 kB)
    capsys.readouterr()
    assert main(["plot", str(out)]) == 1
    message = one_error_line(capsys.readouterr().err)
    assert f"cannot write '{out / 'plots'}/" in message and ".png': the disk is full" in message
    assert list((out / "plots").iterdir()) == []
    assert (out / "runs.jsonl").read_bytes() == journal
    assert len(ResultStore(out).summary()) == 2


# ---------------------------------------------------------------------------------------------------------------------
# temp files and modes


def test_stale_temp_files_of_killed_writers_are_removed_at_the_next_write(folder, capsys):
    plots = folder / "plots"
    plots.mkdir()
    old = time.time() - STALE_TEMP_AGE_S - 60
    stale = [plots / ".3101e0cbed02375b_matrix.png.k3j_h5g6.tmp", folder / ".evals.csv.abcdefgh.tmp"]
    fresh = plots / ".leaderboard_acc.png.z9y8x7w6.tmp"  # a writer still at work
    foreign = [plots / ".notes.txt.abcdefgh.tmp", plots / "mine.tmp", plots / ".x.png.tmp"]
    for path in [*stale, fresh, *foreign]:
        path.write_bytes(b"")
        if path != fresh:
            os.utime(path, (old, old))
    assert main(["plot", str(folder)]) == 0
    capsys.readouterr()
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in foreign)
    fresh_age = time.time() - STALE_TEMP_AGE_S - 1
    os.utime(fresh, (fresh_age, fresh_age))
    write_csv(pd.DataFrame({"a": [1]}), plots / "t.csv")  # any write into the folder cleans it
    assert not fresh.exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_plots_get_the_same_mode_as_the_tables(folder, capsys, umask):
    previous = os.umask(umask)
    try:
        assert main(["plot", str(folder)]) == 0
        assert main(["report", str(folder)]) == 0
    finally:
        os.umask(previous)
    capsys.readouterr()
    files = [*folder.glob("*.csv"), folder / "report.html", *(folder / "plots").glob("*.png")]
    assert len(files) > 6
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}


# ---------------------------------------------------------------------------------------------------------------------
# canonical tables


def _without_clocks(path: Path) -> str:
    """The CSV as text without the wall-clock and memory-peak columns, rows as the file has them."""
    df = pd.read_csv(path)
    clocks = [c for c in df.columns
              if c.endswith("_s") or "_s_" in c or "rss" in c or c in ("started_at", "duration_s")]  # fmt: skip
    return df.drop(columns=clocks).to_csv(index=False)


def test_one_and_two_workers_write_the_same_bytes(tmp_path, capsys):
    text = SWEEP.replace("threads = 1", "threads = 1\ntrain_subset = 200")  # three seeds: summing order matters
    path = write_sweep(tmp_path, text)
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["sweep", str(path), "--out", str(out), "--workers", str(workers), "--quiet", "--no-plots"]) == 0
        assert main(["leaderboard", str(out), "-o", str(tmp_path / f"merged{workers}.csv")]) == 0
    capsys.readouterr()
    for name in ("runs.csv", "evals.csv", "costs.csv", "summary.csv", "leaderboard.csv"):
        assert _without_clocks(tmp_path / "w1" / name) == _without_clocks(tmp_path / "w2" / name), name
    assert _without_clocks(tmp_path / "merged1.csv") == _without_clocks(tmp_path / "merged2.csv")
    summary = pd.read_csv(tmp_path / "w2" / "summary.csv")
    keys = ["benchmark", "scenario", "strategy", "config_id", "seed"]
    assert summary[keys].equals(summary[keys].sort_values(keys, ignore_index=True))


def test_merging_folders_adds_the_missing_runs_and_equals_one_folder_of_them_all(tiny_folder, tmp_path, capsys):
    """scripts/merge_folders.py: seeds {0, 1} (tables only, as an older folder) + {1, 2} gives the tables of one
    folder that ran seeds {0, 1, 2}; the run both held is kept once."""
    dest, other, whole = tmp_path / "dest", tmp_path / "other", tmp_path / "whole"
    shutil.copytree(tiny_folder, dest)
    (dest / ResultStore.JOURNAL).unlink()  # a folder from before the journal: its tables are the record
    assert main(["run", *TINY, "--seeds", "1", "2", "--no-plots", "--out", str(other)]) == 0
    assert main(["run", *TINY, "--seeds", "0", "1", "2", "--no-plots", "--out", str(whole)]) == 0
    script = [sys.executable, str(ROOT / "scripts" / "merge_folders.py")]
    done = subprocess.run([*script, str(dest), str(other)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 runs added") and "holds 3 runs" in done.stdout
    for name in ("runs", "summary", "leaderboard"):
        merged, expected = pd.read_csv(dest / f"{name}.csv"), pd.read_csv(whole / f"{name}.csv")
        keep = [c for c in merged.columns if c not in ("started_at", "duration_s", "train_s", "eval_s",
                                                       "peak_rss_mb") and not c.startswith(("train_s", "eval_s",
                                                                                             "peak_rss_mb"))]
        pd.testing.assert_frame_equal(merged[keep], expected[keep])
    before = snapshot(dest)
    again = subprocess.run([*script, str(dest), str(other)], capture_output=True, text=True, check=False)
    assert again.returncode == 0 and again.stdout.startswith("0 runs added")
    assert {k for k, v in snapshot(dest).items() if before[k][0] != v[0]} == set()  # the same bytes
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([*script, str(dest), str(empty)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "holds no clbench runs" in bad.stderr and "Traceback" not in bad.stderr
