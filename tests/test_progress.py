"""Progress outside a terminal (issue 18): one timestamped line per finished run and per phase, no bar redraws, the
same lines in a --log file; --quiet keeps failures and the final table; bars only on a terminal."""

import io
import logging
import re

import pandas as pd
import pytest

from clbench.runners import progress
from clbench.runners.cli import main
from clbench.runners.loop import RunResult
from clbench.strategies import get_strategy
from tests.conftest import config

DIVERGING = "tests.user_strategies:Diverging"  # NaN loss after 3 steps: a failed run
DIVERGING_NAME = get_strategy(DIVERGING).name  # what the runs and their lines call it
TINY = ["--train-subset", "100", "--test-subset", "50", "--epochs", "1", "--batch-size", "32", "--threads", "1"]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
RUN_LINE = re.compile(rf"^{STAMP} \[(\d+)/(\d+)\] (?:tune )?(\S+)/(\S+) (\S+) \((.*)\) seed (\d+): (ok|failed), "
                      r"(?:val )?acc (\S+), train (\d+\.\d\d) s")


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def run_lines(text: str) -> list[re.Match]:
    return [m for m in map(RUN_LINE.match, text.splitlines()) if m]


def assert_no_redraws(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, repr(text[:300])


def run_job(out, *extra):
    return main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", DIVERGING,
                 "--seeds", "0", "1", "--out", str(out), "--no-plots", *TINY, *extra])


def test_a_run_job_outside_a_terminal_logs_one_line_per_run_and_the_log_file_gets_the_same(tmp_path, capsys):
    out, log = tmp_path / "res", tmp_path / "logs" / "job.log"
    assert run_job(out, "--log", str(log)) == 1  # the diverging runs failed
    captured = capsys.readouterr()
    assert_no_redraws(captured.err + captured.out)
    lines = run_lines(captured.err)
    assert [(int(m[1]), int(m[2])) for m in lines] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # exactly one per run
    assert sorted((m[5], int(m[7]), m[8]) for m in lines) == sorted(
        [(DIVERGING_NAME, 0, "failed"), (DIVERGING_NAME, 1, "failed"), ("naive", 0, "ok"), ("naive", 1, "ok")])
    assert {(m[3], m[4], m[6]) for m in lines} == {("split-digits", "class", "defaults")}
    summary = pd.read_csv(out / "summary.csv").set_index("seed")
    for m in lines:  # the line's acc is the run's final average accuracy (ACC of summary.csv)
        if m[8] == "ok":
            assert float(m[9]) == pytest.approx(summary.loc[int(m[7]), "acc"], abs=5e-4)
        else:
            assert m[9] == "n/a"
    failed_line = next(line for line in captured.err.splitlines() if "failed, acc n/a" in line)
    assert "DivergedError" in failed_line  # a failure names its error
    assert re.search(rf"^{STAMP} writing tables in ", captured.err, re.M)
    assert "exp/s" not in captured.err  # no per-experience bar outside a terminal

    logged = log.read_text()
    assert_no_redraws(logged)
    assert [m[0] for m in run_lines(logged)] == [m[0] for m in lines]  # the same lines, the same times
    assert re.search(rf"^{STAMP} writing tables in ", logged, re.M)
    assert re.search(rf"^{STAMP} 2 run\(s\) failed", logged, re.M)
    assert all(re.match(STAMP, line) for line in logged.splitlines())


def test_quiet_prints_failures_and_the_table_only_but_the_log_file_gets_everything(tmp_path, capsys):
    out, log = tmp_path / "res", tmp_path / "job.log"
    assert run_job(out, "--quiet", "--log", str(log)) == 1
    captured = capsys.readouterr()
    assert_no_redraws(captured.err + captured.out)
    shown = run_lines(captured.err)
    assert len(shown) == 2 and {m[8] for m in shown} == {"failed"} and {m[5] for m in shown} == {DIVERGING_NAME}
    assert "writing tables" not in captured.err + captured.out and "run(s) to run" not in captured.err
    assert not run_lines(captured.out) and "naive" in captured.out and "leaderboard.csv" in captured.out  # the table
    assert "2 run(s) failed" in captured.err
    logged = log.read_text()
    assert len(run_lines(logged)) == 4 and "writing tables" in logged and "4 run(s) to run" in logged


def test_a_sweep_logs_one_line_per_run_and_its_phases_with_the_real_plot_count(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('seeds = [0]\nbenchmarks = ["split-digits"]\nscenarios = ["class"]\n'
                     "[settings]\nepochs = 1\ntrain_subset = 100\ntest_subset = 50\nthreads = 1\n"
                     '[[strategies]]\nname = "naive"\n[[strategies]]\nname = "ewc"\n')
    out, log = tmp_path / "swept", tmp_path / "sweep.log"
    assert main(["sweep", str(sweep), "--out", str(out), "--log", str(log)]) == 0
    err = capsys.readouterr().err
    assert_no_redraws(err)
    lines = run_lines(err)
    assert [(m[1], m[2], m[8]) for m in lines] == [("1", "2", "ok"), ("2", "2", "ok")]
    assert sorted(m[5] for m in lines) == ["ewc", "naive"]
    n_plots = len(list((out / "plots").iterdir()))
    assert n_plots > 0
    for phase in ("sweep: 2 run(s) to run", "writing tables in ", "writing the plots of 2 run(s)",
                  f"wrote {n_plots} plots"):
        assert re.search(rf"^{STAMP} {re.escape(phase)}", err, re.M), phase
    assert len(run_lines(log.read_text())) == 2 and f"wrote {n_plots} plots" in log.read_text()
    assert main(["sweep", str(sweep), "--out", str(out), "--log", str(log), "--quiet", "--no-plots"]) == 0  # rerun
    assert "2 of 2 runs already finished" in capsys.readouterr().out
    assert re.search(rf"^{STAMP} 2 of 2 runs already finished", log.read_text(), re.M)  # appended, with its time


def test_repeated_main_calls_leave_no_handler_behind_and_close_the_log_file(tmp_path, capsys):
    logger = logging.getLogger(progress.LOGGER)
    before = (list(logger.handlers), logger.level, logger.propagate)
    out, log = tmp_path / "res", tmp_path / "job.log"
    for _ in range(2):
        run_job(out, "--log", str(log), "--quiet")
        assert (list(logger.handlers), logger.level, logger.propagate) == before
    assert progress._current is None
    assert len(run_lines(log.read_text())) == 4 + 2  # the second call reran the two failed runs only
    assert main(["list"]) == 0 and list(logger.handlers) == before[0]


@pytest.mark.parametrize(("log_name", "message"), [
    ("res/runs.jsonl", "is the runs.jsonl that clbench writes in --out"),
    ("folder", "is a folder"),
])
def test_a_bad_log_file_is_one_message_and_writes_nothing(tmp_path, capsys, log_name, message):
    (tmp_path / "folder").mkdir()
    assert run_job(tmp_path / "res", "--log", str(tmp_path / log_name)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "res").exists()


def test_a_bad_input_with_a_log_file_creates_no_log_file(tmp_path, capsys):
    log = tmp_path / "job.log"
    assert main(["run", "--benchmark", "split-nope", "--scenario", "class", "--strategy", "naive",
                 "--out", str(tmp_path / "res"), "--log", str(log)]) == 2
    assert "unknown benchmark" in capsys.readouterr().err and not log.exists()


def finished(status="ok", strategy="naive"):
    evals = [{"step": s, "eval_exp": j, "metric": "accuracy", "split": "test", "value": v, "n": 10}
             for s, row in enumerate([[0.9, 0.1], [0.4, 0.8]]) for j, v in enumerate(row)]
    costs = [{"step": 0, "train_s": 1.25}, {"step": 1, "train_s": 0.5}]
    return RunResult(config(strategy), status=status, evals=evals if status == "ok" else [], costs=costs,
                     error="" if status == "ok" else "DivergedError: loss became nan")


def test_the_run_line_reads_acc_from_the_last_row_of_R_and_sums_the_training_seconds():
    line = progress.run_line(finished(), 3, 18)
    assert line == "[3/18] split-digits/class naive (defaults) seed 0: ok, acc 0.600, train 1.75 s"
    assert "failed, acc n/a" in progress.run_line(finished("failed"), 1, 1)


def test_on_a_terminal_bars_are_drawn_and_only_failed_runs_get_a_line():
    terminal = FakeTerminal()
    session = progress.session(stream=terminal)
    try:
        runs = progress.RunProgress(2, stream=terminal)
        assert runs.bars and runs.bar is not None
        runs.started(config())
        runs.finished(finished())
        runs.finished(finished("failed"))
        runs.close()
        bar = progress.ExperienceBar(5, "naive seed 0", stream=terminal)
        for _ in range(3):
            bar.advance(0.5)
        assert bar.bar.n == 3  # the per-experience bar advances (it stayed at 0/5 in the issue)
        bar.close()
    finally:
        session.close()
    text = terminal.getvalue()
    assert "\r" in text and "2/2" in text and "exp" in text  # tqdm's redraws
    assert "[1/2]" not in text and "[2/2] split-digits/class naive (defaults) seed 0: failed" in text


def test_off_a_terminal_or_quiet_there_is_no_bar():
    assert progress.RunProgress(3, stream=io.StringIO()).bar is None
    assert progress.RunProgress(3, quiet=True, stream=FakeTerminal()).bar is None
    assert progress.ExperienceBar(5, "x", stream=io.StringIO()).bar is None
    assert progress.ExperienceBar(5, "x", enabled=False, stream=FakeTerminal()).bar is None
    progress.ExperienceBar(5, "x", stream=io.StringIO()).advance(0.1)  # a no-op, not an error
