"""An output folder of tidy tables, written so that a crash never leaves a half-written file.

    runs.csv      one row per run (the commit record: a run exists once its row is here)
    evals.csv     long: one row per (run, step, evaluated experience, metric)
    costs.csv     long: one row per (run, step): train/eval seconds, peak RSS, strategy memory, mean train loss
    summary.csv   one row per finished run: the metrics of METRICS.md and its costs (derived, rewritten each time)
    leaderboard.csv  mean, SEM and number of seeds per configuration (derived)
    plots/        PNGs (derived)

Every file is replaced atomically (write a temporary file in the same folder, then os.replace). evals and costs are
written before runs.csv, and rows whose run has no runs.csv row are ignored when reading, so a crash between the
writes loses at most the run in flight and never corrupts a table.
"""

from __future__ import annotations

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
    """Reads and appends the tables of one output folder."""

    def __init__(self, root):
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.csv"

    def runs(self) -> pd.DataFrame:
        return read_csv(self._path("runs"), tables.RUNS_COLUMNS)

    def _committed(self, name: str, columns: list[str]) -> pd.DataFrame:
        """Rows of a long table whose run is recorded as finished in runs.csv (orphans of a crash are dropped)."""
        df = read_csv(self._path(name), columns)
        ok = self.runs().query("status == 'ok'")["run_id"]
        return df[df["run_id"].isin(ok)].reset_index(drop=True)

    def evals(self) -> pd.DataFrame:
        return self._committed("evals", tables.EVALS_COLUMNS)

    def costs(self) -> pd.DataFrame:
        return self._committed("costs", STEP_COSTS_COLUMNS)

    def finished_run_ids(self) -> set[str]:
        runs = self.runs()
        return set(runs.loc[runs["status"] == "ok", "run_id"])

    def append(self, result: RunResult, *, versions: dict, device: str) -> None:
        """Add one run; a rerun of a failed run replaces its old row."""
        cfg = result.config
        run_id = cfg.run_id
        keys = {
            "run_id": run_id, "benchmark": cfg.benchmark, "scenario": cfg.scenario,
            "strategy": cfg.strategy, "seed": cfg.seed,
        }  # fmt: skip
        if result.status == "ok":
            evals = pd.DataFrame([{**keys, **row} for row in result.evals], columns=tables.EVALS_COLUMNS)
            costs = pd.DataFrame([{**keys, **row} for row in result.costs], columns=STEP_COSTS_COLUMNS)
            self._append_rows("evals", evals, tables.EVALS_COLUMNS, run_id)
            self._append_rows("costs", costs, STEP_COSTS_COLUMNS, run_id)
        run_row = {
            **keys,
            "config_id": cfg.config_id,
            "stream_seed": cfg.stream_seed,
            "params": to_json(cfg.params),
            "train_config": to_json(cfg.settings()),
            "versions": to_json(versions),
            "device": device,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "duration_s": result.duration_s,
            "status": result.status,
            "error": result.error,
        }
        self._append_rows("runs", pd.DataFrame([run_row], columns=tables.RUNS_COLUMNS), tables.RUNS_COLUMNS, run_id)

    def _append_rows(self, name: str, rows: pd.DataFrame, columns: list[str], run_id: str) -> None:
        old = read_csv(self._path(name), columns)
        old = old[old["run_id"] != run_id]  # orphans of a crashed attempt, or the failed row being replaced
        parts = [df for df in (old, rows) if len(df)]
        write_csv(pd.concat(parts, ignore_index=True) if parts else rows, self._path(name))

    # derived tables ---------------------------------------------------------------------------------------------------
    def run_costs(self) -> pd.DataFrame:
        """Per run: total train and eval seconds, peak RSS, strategy memory at the end."""
        costs = self.costs()
        if costs.empty:
            return pd.DataFrame(columns=["run_id", "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb"])
        last = costs.sort_values("step").groupby("run_id").tail(1).set_index("run_id")["strategy_mem_mb"]
        per_run = costs.groupby("run_id").agg(train_s=("train_s", "sum"), eval_s=("eval_s", "sum"),
                                              peak_rss_mb=("peak_rss_mb", "max"))
        return per_run.assign(strategy_mem_mb=last).reset_index()

    def summary(self) -> pd.DataFrame:
        return tables.summarize(self.evals(), self.runs(), self.run_costs())

    def write_derived(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rewrite summary.csv and leaderboard.csv from the raw tables; return both."""
        summary = self.summary()
        board = tables.leaderboard(summary)
        write_csv(summary, self._path("summary"))
        write_csv(board, self._path("leaderboard"))
        return summary, board
