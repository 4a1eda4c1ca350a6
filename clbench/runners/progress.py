"""How runs and sweeps report progress: the one place that decides between bars and log lines.

- In a terminal (stderr ``isatty()``): tqdm bars, one for the runs and, inside a `clbench run`, one per run over its
  experiences; phase lines and warnings are written above the bars.
- Anywhere else (a SLURM or CI log, a pipe): no bar, no carriage return, no escape sequence; one timestamped line per
  finished run (index/total, benchmark/scenario, strategy, hyperparameter label, seed, status, final average accuracy
  ACC over the last row of R, training seconds) and one per phase (writing tables, plots, the report).
- ``--log FILE``: every line (runs, phases, warnings, failures) also goes to FILE, with or without ``--quiet``.
- ``--quiet``: no bars and no run or phase lines on the console; failed runs and warnings (a run that learned almost
  nothing, loop.learned_nothing) still show.

Everything goes through the standard `logging` module under the logger ``clbench`` (LOGGER); `session()` installs the
handlers for one command and `Session.close()` removes them, so repeated `cli.main()` calls in one process (the tests)
never stack handlers. Without a session (clbench used as a library) nothing is configured: warnings reach Python's
last-resort handler on stderr as before, and info lines are dropped.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

from clbench.errors import UsageError

LOGGER = "clbench"
logger = logging.getLogger(LOGGER)
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"  # ISO 8601, local time: what a job log's reader compares with the clock
LINE_FORMAT = "%(asctime)s %(message)s"
# The files clbench itself writes into an output folder: a --log there would be overwritten or read as a table.
OUTPUT_FILES = ("runs.jsonl", "runs.csv", "evals.csv", "costs.csv", "curves.csv", "summary.csv", "leaderboard.csv",
                "leaderboard.md", "leaderboard.tex", "published.csv", "compare.csv", "report.html")
_RUN_LINE = "clbench_run_line"  # the attribute that marks a record as a per-run line (bars show those in a terminal)


def _tqdm():
    from tqdm.auto import tqdm  # only where a bar is drawn: `clbench --help` and `list` answer without it

    return tqdm


def is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal; False for files, pipes, captured and closed streams."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


# ---------------------------------------------------------------------------------------------------------------------
# handlers


class _ConsoleFormatter(logging.Formatter):
    """Timestamped info lines; warnings and failures as their own text (``warning: ...``, ``run ... failed``), the
    lines users and scripts grep for."""

    def __init__(self):
        super().__init__(LINE_FORMAT, DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING and not getattr(record, _RUN_LINE, False):
            return record.getMessage()
        return super().format(record)


class _ConsoleHandler(logging.StreamHandler):
    """stderr; in a terminal through tqdm.write, which redraws the open bars below the line."""

    def __init__(self, stream, terminal: bool):
        super().__init__(stream)
        self.terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        if not self.terminal:
            super().emit(record)
            return
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own policy: a broken console never stops the run
            self.handleError(record)


class _LogFileHandler(logging.FileHandler):
    """--log FILE: appended to (a resumed sweep continues its log), opened at the first line, so that a command that
    stops at a bad input writes nothing; its folder is created then."""

    def __init__(self, path: Path):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _ConsoleFilter(logging.Filter):
    """In a terminal the bars stand for the finished runs: only the lines of failed ones are printed."""

    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.terminal and getattr(record, _RUN_LINE, False) and record.levelno < logging.WARNING)


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "clbench_file_only", False)


def check_log_file(path: Path, out: Path | None = None) -> None:
    """A --log FILE that can be written and is none of the files clbench writes into the output folder `out`."""
    from clbench.results.store import check_writable

    check_writable(path, file=True, flag="--log")
    if out is not None and os.path.realpath(Path(path).parent) == os.path.realpath(out) and \
            Path(path).name in OUTPUT_FILES:
        raise UsageError(f"--log {str(path)!r} is the {Path(path).name} that clbench writes in --out {str(out)!r}; "
                         f"give another file name (e.g. {str(Path(out) / 'clbench.log')!r})")


class Session:
    """The handlers of one command on the ``clbench`` logger; close() removes them and restores the logger."""

    def __init__(self, *, quiet: bool = False, log_file: Path | None = None, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.terminal = is_terminal(self.stream)
        console = _ConsoleHandler(self.stream, self.terminal)
        console.setLevel(logging.WARNING if quiet else logging.INFO)
        console.setFormatter(_ConsoleFormatter())
        console.addFilter(_ConsoleFilter(self.terminal))
        console.addFilter(_NotFileOnly())
        self.file = _LogFileHandler(Path(log_file)) if log_file is not None else None
        self.handlers = [console, *([self.file] if self.file else [])]
        self._saved = (logger.level, logger.propagate)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the lines are ours to print: an application's root handlers would print them twice
        for handler in self.handlers:
            logger.addHandler(handler)

    def log_file_only(self, message: str, *, if_open: bool = False) -> None:
        """`message` into the --log file only; with if_open, only once the file is open (a bad input stopped the
        command before it logged anything: nothing is written)."""
        if self.file is not None and not (if_open and self.file.stream is None):
            logger.info(message, extra={"clbench_file_only": True})

    def close(self) -> None:
        global _current
        for handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[1]
        if _current is self:
            _current = None


_current: Session | None = None


def session(*, quiet: bool = False, log_file: Path | None = None, out: Path | None = None, stream=None) -> Session:
    """Install the console (and --log file) handlers for one command, closing any session left open before; a bad
    --log FILE is a UsageError, raised before anything is written."""
    global _current
    if log_file is not None:
        check_log_file(log_file, out)
    if _current is not None:  # a command that never reached its close(): its handlers must not stack
        _current.close()
    _current = Session(quiet=quiet, log_file=log_file, stream=stream)
    return _current


def log_file_only(message: str, *, if_open: bool = False) -> None:
    """`message` into the current session's --log file only (the console printed it already); no-op without one."""
    if _current is not None:
        _current.log_file_only(message, if_open=if_open)


def announce(message: str) -> None:
    """A line of the command's own output (stdout, --quiet too: what a rerun skips, what [tune] selected), also
    written to the --log file with its time."""
    print(message)
    log_file_only(message)


def phase(message: str) -> None:
    """One line for a phase of the command (writing tables, plots, the report)."""
    logger.info(message)


def warn(message: str) -> None:
    """A warning everyone should see, --quiet too (a run that learned nothing, a method without a selection)."""
    logger.warning(message)


# ---------------------------------------------------------------------------------------------------------------------
# runs


def final_accuracy(result) -> tuple[str, float]:
    """(split, ACC) of a finished run: the mean of R's last row (every experience is seen by then, docs/METRICS.md),
    on the test split, or on the validation split for a tuning run (which never reads a test set); NaN if none."""
    import pandas as pd

    from clbench.metrics.matrix import accuracy
    from clbench.metrics.tables import matrices_from_evals

    if result.status != "ok" or not result.evals:
        return "test", math.nan
    evals = pd.DataFrame(result.evals).assign(run_id=result.config.run_id)
    splits = set(evals["split"].fillna("test")) if "split" in evals.columns else {"test"}
    split = "test" if "test" in splits else "val"
    try:
        R, _ = matrices_from_evals(evals, result.config.run_id, split=split)
    except (UsageError, ValueError):  # no accuracy rows on that split
        return split, math.nan
    return split, accuracy(R)


def train_seconds(result) -> float:
    """The run's training seconds: the per-experience train_s of its cost rows (continual evaluation left out)."""
    return float(sum(c.get("train_s", 0.0) for c in result.costs if c.get("step", -1) >= 0))


def run_line(result, index: int, total: int) -> str:
    """``[3/18] split-digits/class ewc (ewc_lambda=100) seed 0: ok, acc 0.512, train 2.3 s``"""
    from clbench.strategies.registry import params_label

    cfg = result.config
    try:
        label = params_label(cfg.strategy_class(), cfg.params)
    except Exception:  # a user's class that cannot be imported here any more: its raw parameters
        from clbench.metrics.tables import hyperparameter_label

        label = hyperparameter_label(cfg.params)
    split, acc = final_accuracy(result)
    name = "acc" if split == "test" else f"{split} acc"
    shown = f"{acc:.3f}" if math.isfinite(acc) else "n/a"
    phase_note = "tune " if cfg.phase == "tune" else ""
    line = (f"[{index}/{total}] {phase_note}{cfg.benchmark}/{cfg.scenario} {cfg.strategy} ({label}) seed {cfg.seed}: "
            f"{result.status}, {name} {shown}, train {train_seconds(result):.2f} s")
    if result.status != "ok":
        line += f" ({cfg.run_id}: {result.error})"
    return line


class RunProgress:
    """The progress of a list of runs: a tqdm bar in a terminal (not with quiet), one log line per finished run.

    `stream` is where a bar would go (default stderr); the log lines go to the ``clbench`` logger's handlers. A failed
    run's line is a warning, so --quiet still shows it."""

    def __init__(self, total: int, *, quiet: bool = False, desc: str = "runs", stream=None):
        self.total, self.done, self.running, self.failed = total, 0, 0, 0
        if total:
            logger.info("%s%d run(s) to run", "" if desc == "runs" else f"{desc}: ", total)
        stream = sys.stderr if stream is None else stream
        self.bars = not quiet and is_terminal(stream)
        self.bar = _tqdm()(total=total, desc=desc, unit="run", file=stream, dynamic_ncols=True) if self.bars else None
        self._current = ""  # the run in progress, when runs go one at a time

    def started(self, config=None, n: int = 1) -> None:
        """`n` runs started; a config names the run on the bar (one run at a time), else the bar counts them."""
        self.running += n
        if config is not None:
            self._current = f"{config.benchmark}/{config.scenario}/{config.strategy}/seed {config.seed}"
        self._show()

    def finished(self, result) -> None:
        self.running = max(self.running - 1, 0)
        self.done += 1
        ok = result.status == "ok"
        self.failed += not ok
        logger.log(logging.INFO if ok else logging.WARNING, "%s", run_line(result, self.done, self.total),
                   extra={_RUN_LINE: True})
        if self.bar is not None:
            self.bar.update(1)
            self._show()

    def _show(self) -> None:
        if self.bar is None:
            return
        if self._current:
            self.bar.set_postfix_str(self._current + (f", {self.failed} failed" if self.failed else ""))
        else:
            self.bar.set_postfix(running=self.running, failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ExperienceBar:
    """A run's bar over its experiences, in a terminal only (elsewhere nothing). Advanced by hand after each
    experience, with no minimum interval: iterating a tqdm bar only stores its count at a redraw, so the loss shown
    through set_postfix came with a stale count (the bar stayed at 0/5 in the issue)."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream=None):
        stream = sys.stderr if stream is None else stream
        self.bar = _tqdm()(total=total, desc=desc, unit="exp", leave=False, file=stream, mininterval=0,
                        dynamic_ncols=True) if enabled and is_terminal(stream) else None

    def advance(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
