"""An output folder: an append-only journal of finished runs, and tidy tables derived from it.

    runs.jsonl    the journal: one line per finished run (its runs row, eval rows and cost rows), appended in one
                  write and fsync'ed. A run exists once its line is complete; a line cut short by a crash (kill -9
                  included) is ignored and trimmed before the next append, so nothing is lost but the run in flight
                  and nothing is ever duplicated or half-read.
    runs.csv      one row per run
    evals.csv     long: one row per (run, step, evaluated experience, metric)
    costs.csv     long: one row per (run, step): train/eval seconds, peak RSS, strategy memory, mean train loss
    summary.csv   one row per finished run: the metrics of METRICS.md and its costs
    leaderboard.csv  mean, SEM and number of seeds per configuration; with published.csv (written when a paper
                  preset runs) also the published value, the difference and reproduced ✓/✗
    plots/        PNGs

The tables are rewritten from the journal at the end of a command (each file replaced atomically), so appending a
run costs the same whatever the number of runs before it. A folder written before the journal existed (tables
only) is read from its tables, and they are carried into a journal at its next append.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from clbench.errors import UsageError
from clbench.metrics import tables
from clbench.runners.config import to_json
from clbench.runners.loop import RunResult

STEP_COSTS_COLUMNS = [
    "run_id", "benchmark", "scenario", "strategy", "seed", "step",
    "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb", "train_loss",
]  # fmt: skip


def check_writable(path: Path) -> None:
    """Fail before any work if `path` (or the nearest existing folder above it) cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"output path {str(path)!r} exists and is not a folder; choose a folder for --out")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {str(path)!r} is not writable (no write permission on {str(probe)!r})")


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path) then move the result into place in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; tables and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: Path) -> None:
    write_atomic(Path(path), lambda tmp: df.to_csv(tmp, index=False))


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not Path(path).exists():
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


class ResultStore:
    """Appends runs to the journal of one output folder and reads its tables."""

    JOURNAL = "runs.jsonl"

    def __init__(self, root):
        self.root = Path(root)
        self._cache: tuple[tuple, dict[str, dict]] | None = None

    @property
    def journal_path(self) -> Path:
        return self.root / self.JOURNAL

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.csv"

    # the journal ---------------------------------------------------------------------------------------------------
    def entries(self) -> dict[str, dict]:
        """run_id → the latest complete journal entry of that run ({"run": row, "evals": [...], "costs": [...]})."""
        # Without a journal, the tables of an older folder are the source (read-only commands leave it untouched).
        source = self.journal_path if self.journal_path.exists() else self._path("runs")
        if not source.exists():
            return {}
        stat = source.stat()
        key = (source.name, stat.st_size, stat.st_mtime_ns)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if source == self.journal_path:
            data = source.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]  # a torn last line (crash mid-append) is not a run
            found = [json.loads(line) for line in complete.splitlines() if line.strip()]
        else:
            found = self._entries_from_tables()
        entries = {e["run"]["run_id"]: e for e in found}  # a rerun of a failed run replaces it
        self._cache = (key, entries)
        return entries

    def append(self, result: RunResult, *, versions: dict, device: str) -> None:
        """Record one finished run (ok or failed) in a single appended line."""
        self.append_entry(journal_entry(result, versions=versions, device=device))

    def append_entry(self, entry: dict) -> None:
        if not self.journal_path.exists() and self._path("runs").exists():
            # A folder from before the journal: carry its runs over first, in one atomic write.
            text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.entries().values())
            write_atomic(self.journal_path, lambda tmp: Path(tmp).write_text(text))
        line = (json.dumps(entry, separators=(",", ":"), allow_nan=True) + "\n").encode()
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _trim_torn_tail(fd)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _entries_from_tables(self) -> list[dict]:
        try:
            runs = read_csv(self._path("runs"), tables.RUNS_COLUMNS)
            evals = read_csv(self._path("evals"), tables.EVALS_COLUMNS)
            costs = read_csv(self._path("costs"), STEP_COSTS_COLUMNS)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UsageError(f"{str(self.root)!r} does not hold readable clbench tables ({err}); pass a folder "
                             "written by `clbench run --out` or `clbench sweep --out`") from None
        missing = [c for c in ("run_id", "status") if c not in runs.columns]
        if missing:
            raise UsageError(f"{str(self.root)!r} does not hold readable clbench tables (runs.csv lacks {missing})")
        entries = []
        for row in runs.to_dict("records"):
            ok = row["status"] == "ok"
            entries.append({
                "run": _plain(row),
                "evals": _records(evals[evals["run_id"] == row["run_id"]]) if ok else [],
                "costs": _records(costs[costs["run_id"] == row["run_id"]]) if ok else [],
            })
        return entries

    # tables ----------------------------------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        rows = [e["run"] for e in self.entries().values()]
        return pd.DataFrame(rows, columns=tables.RUNS_COLUMNS)

    def _long(self, key: str, columns: list[str]) -> pd.DataFrame:
        rows = [r for e in self.entries().values() if e["run"]["status"] == "ok" for r in e[key]]
        return pd.DataFrame(rows, columns=columns)

    def evals(self) -> pd.DataFrame:
        return self._long("evals", tables.EVALS_COLUMNS)

    def costs(self) -> pd.DataFrame:
        return self._long("costs", STEP_COSTS_COLUMNS)

    def finished_run_ids(self) -> set[str]:
        return {run_id for run_id, e in self.entries().items() if e["run"]["status"] == "ok"}

    # derived tables ---------------------------------------------------------------------------------------------------
    def run_costs(self) -> pd.DataFrame:
        return _run_costs(self.costs())

    def summary(self) -> pd.DataFrame:
        return tables.summarize(self.evals(), self.runs(), self.run_costs())

    def published(self) -> pd.DataFrame:
        from clbench.presets import PUBLISHED_COLUMNS

        return read_csv(self.root / "published.csv", PUBLISHED_COLUMNS)

    def add_published(self, rows: pd.DataFrame) -> None:
        """Record a preset's published numbers (replacing earlier rows of the same preset)."""
        if rows.empty:
            return
        old = self.published()
        old = old[~old["preset"].isin(set(rows["preset"]))]
        write_csv(pd.concat([df for df in (old, rows) if not df.empty], ignore_index=True),
                  self.root / "published.csv")

    def leaderboard(self, summary: pd.DataFrame) -> pd.DataFrame:
        """The leaderboard, compared with the folder's published numbers when it has any."""
        from clbench.presets import compare

        return compare(tables.leaderboard(summary), self.published())

    def write_derived(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rewrite every table from the journal (runs.csv last); return the summary and the leaderboard."""
        evals, costs, runs = self.evals(), self.costs(), self.runs()
        summary = tables.summarize(evals, runs, _run_costs(costs))
        board = self.leaderboard(summary)
        write_csv(evals, self._path("evals"))
        write_csv(costs, self._path("costs"))
        write_csv(summary, self._path("summary"))
        write_csv(board, self._path("leaderboard"))
        write_csv(runs, self._path("runs"))
        return summary, board


def _run_costs(costs: pd.DataFrame) -> pd.DataFrame:
    """Per run: total train and eval seconds, peak RSS, strategy memory at the end."""
    if costs.empty:
        return pd.DataFrame(columns=["run_id", "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb"])
    last = costs.sort_values("step").groupby("run_id").tail(1).set_index("run_id")["strategy_mem_mb"]
    per_run = costs.groupby("run_id").agg(train_s=("train_s", "sum"), eval_s=("eval_s", "sum"),
                                          peak_rss_mb=("peak_rss_mb", "max"))
    return per_run.assign(strategy_mem_mb=last).reset_index()


def journal_entry(result: RunResult, *, versions: dict, device: str) -> dict:
    """One run as a journal line: its runs row and, for a finished run, its eval and cost rows."""
    cfg = result.config
    keys = {"run_id": cfg.run_id, "benchmark": cfg.benchmark, "scenario": cfg.scenario, "strategy": cfg.strategy,
            "seed": cfg.seed}
    ok = result.status == "ok"
    run_row = {
        **keys,
        "config_id": cfg.config_id,
        "stream_seed": cfg.stream_seed,
        "params": to_json(cfg.canonical()["params"]),  # as hashed: later-added defaults left out (config.py)
        "train_config": to_json(cfg.settings()),
        "versions": to_json(versions),
        "device": device,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": result.duration_s,
        "status": result.status,
        "error": result.error,
    }
    return {
        "run": run_row,
        "evals": [{**keys, **row} for row in result.evals] if ok else [],
        "costs": [{**keys, **row} for row in result.costs] if ok else [],
    }


def _trim_torn_tail(fd: int) -> None:
    """Cut a last line left without its newline by a crash, so the next line starts on its own."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    os.lseek(fd, size - 1, os.SEEK_SET)
    if os.read(fd, 1) == b"\n":
        return
    block = min(size, 1 << 20)
    while True:
        os.lseek(fd, size - block, os.SEEK_SET)
        chunk = os.read(fd, block)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, size - block + cut + 1)
            return
        if block == size:
            os.ftruncate(fd, 0)
            return
        block = min(size, block * 2)


def _plain(row: dict) -> dict:
    """A CSV row as JSON-ready Python values (numpy scalars to int/float, NaN kept)."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = value
    return out


def _records(df: pd.DataFrame) -> list[dict]:
    return [_plain(r) for r in df.to_dict("records")]
