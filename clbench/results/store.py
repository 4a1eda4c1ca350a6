"""An output folder: an append-only journal of finished runs, and tidy tables derived from it.

    runs.jsonl    the journal: one line per finished run (its runs row, eval rows and cost rows), appended in one
                  write and fsync'ed. A run exists once its line is complete; a line cut short by a crash (kill -9
                  included) is ignored and trimmed before the next append, so nothing is lost but the run in flight
                  and nothing is ever duplicated or half-read. Any other bad line (not JSON, not an entry's shape)
                  stops every command that reads the folder with one message naming the line, before anything is
                  written.
    runs.csv      one row per run
    evals.csv     long: one row per (run, step, evaluated experience, metric)
    costs.csv     long: one row per (run, step): train/eval seconds, peak RSS, strategy memory, mean train loss
    curves.csv    long, with `--eval-period`: one row per (run, evaluation point within training, evaluated
                  experience, metric); written when some run has curves
    summary.csv   one row per finished run: the metrics of METRICS.md and its costs
    leaderboard.csv  per configuration: runs ok/failed, settings, mean, SEM and 95% CI over seeds; with published.csv
                  (written when a paper preset runs) also the published value, the difference and reproduced ✓/✗
    plots/        figures (png, or pdf/svg with `clbench plot --format`)

The tables are rewritten from the journal at the end of a command (each file replaced atomically), so appending a
run costs the same whatever the number of runs before it. A folder written before the journal existed (tables
only) is read from its tables, and they are carried into a journal at its next append.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pandas as pd

from clbench.errors import DISK_FULL_ERRNOS, DiskFullError, UsageError
from clbench.metrics import tables

STEP_COSTS_COLUMNS = [
    "run_id", "benchmark", "scenario", "strategy", "seed", "step",
    "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb", "train_loss", "steps",
]  # fmt: skip


def check_writable(path: Path, *, file: bool = False, flag: str = "--out") -> None:
    """Fail before any work unless `path` can be written: a folder (by default) or, with file=True, a file written
    through a temporary sibling (write_atomic). The nearest existing folder above it must be writable, and every name
    still to be created must fit the file system: mkdir and mkstemp would otherwise fail midway with ENAMETOOLONG,
    after creating the folders above. `flag` names the option in the messages.

    os.path's tests are used, not pathlib's: they answer False for a name the OS refuses to look up."""
    path = Path(path)
    if file and os.path.isdir(path):
        raise UsageError(f"{flag} {str(path)!r} is a folder; give a file name")
    if not file and os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"output path {str(path)!r} exists and is not a folder; choose a folder for {flag}")
    # a file is replaced through its folder, which is what must exist (or be creatable) and be writable
    probe, missing = (path.parent if file and os.path.lexists(path) else path), []
    while not os.path.lexists(probe) and probe.parent != probe:  # "." itself may be gone: stop there
        missing.append(probe.name)
        probe = probe.parent
    if not os.path.isdir(probe):
        raise UsageError(f"{flag} {str(path)!r} cannot be created: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {str(path)!r} is not writable (no write permission on {str(probe)!r})")
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no answer for this file system
        name_max = -1
    name_max = name_max if name_max > 0 else 255
    # write_atomic's temporary ".<name>.XXXXXXXX.tmp" beside a file is 14 bytes longer than the file's own name.
    folders = missing[1:] if file and missing else missing
    needs = [(name, len(os.fsencode(name)), "") for name in reversed(folders)]
    if file:
        needs.append((path.name, len(os.fsencode(path.name)) + 14, " with its temporary copy's 14 more"))
    for name, size, note in needs:
        if size > name_max:
            shown = name if len(name) <= 40 else f"{name[:20]}...{name[-12:]}"
            raise UsageError(f"{flag} {str(path)!r}: the name {shown!r} is {size} bytes long{note}; the file system "
                             f"under {str(probe)!r} allows at most {name_max} per name")


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path) then move the result into place in one step.

    Every file of an output folder but the journal's appends goes through here (tables, report, plots), so all share
    one mode (0666 & ~umask, what a plain open() gives: results are meant to be shared; mkstemp alone gives 0600),
    one temp-file name (``.<name>.XXXXXXXX.tmp``, cleaned up by :func:`remove_stale_temps`) and one way of reporting
    a full disk (:class:`DiskFullError` naming ``path``).
    """
    path = Path(path)
    with _naming_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _naming_full_disk(path: Path):
    """Turn an OSError of a full disk (or quota) inside the block into DiskFullError(path); others pass as they are."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(path, err.errno) from err
        raise


#: A temp file of write_atomic older than this belongs to a writer that died (see remove_stale_temps).
STALE_TEMP_AGE_S = 600.0
# mkstemp's names: ".<name>.<8 random chars>.tmp", <name> one of the kinds of file clbench writes into a folder.
_TEMP_NAME = re.compile(r"\..+\.(?:csv|png|pdf|svg|html|md|markdown|tex|jsonl)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(folder: Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the temp files that writers killed mid-write (kill -9, power loss) left in ``folder``; return them.

    The rule is age, not pid: a temp file untouched for ``max_age_s`` (10 minutes). A live writer touches its temp
    file from creation to rename, which takes well under a second for any file clbench writes, so only a dead writer
    leaves one that old; and unlike a pid, age means the same to every machine or container sharing the folder.
    Only names of the shape write_atomic makes are touched; anything that cannot be read or removed is left alone.
    """
    removed = []
    cutoff = time.time() - max_age_s
    with contextlib.suppress(OSError), os.scandir(folder) as found:
        for entry in found:
            if not _TEMP_NAME.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):  # gone meanwhile (another cleaner), or not ours to remove
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: Path) -> None:
    write_atomic(Path(path), lambda tmp: df.to_csv(tmp, index=False))


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not Path(path).exists():
        return pd.DataFrame(columns=columns)
    # ids are hex digests: read as text even when one happens to be all digits
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"run_id": str, "config_id": str})


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
        """run_id → the latest complete journal entry of that run ({"run": row, "evals": [...], "costs": [...],
        "curves": [...]}; "curves" may be absent in an older entry)."""
        # Without a journal, the tables of an older folder are the source (read-only commands leave it untouched).
        source = self.journal_path if self.journal_path.exists() else self._path("runs")
        if not source.exists():
            return {}
        stat = source.stat()
        key = (source.name, stat.st_size, stat.st_mtime_ns)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if source == self.journal_path:
            found = read_journal(source)
        else:
            found = self._entries_from_tables()
        entries = {e["run"]["run_id"]: e for e in found}  # a rerun of a failed run replaces it
        self._cache = (key, entries)
        return entries

    def append_entry(self, entry: dict) -> None:
        """Record one finished run (ok or failed; clbench.runners.record.journal_entry) in a single appended line."""
        if not self.journal_path.exists() and self._path("runs").exists():
            # A folder from before the journal: carry its runs over first, in one atomic write.
            text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.entries().values())
            write_atomic(self.journal_path, lambda tmp: Path(tmp).write_text(text))
        line = (json.dumps(entry, separators=(",", ":"), allow_nan=True) + "\n").encode()
        with _naming_full_disk(self.journal_path):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                _trim_torn_tail(fd)
                before = os.fstat(fd).st_size
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:
                    # Not recorded unless it all reached the disk: a full disk can fail the fsync after a complete
                    # line was written, which would then read as a run. A failed cut leaves at worst a torn tail.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, before)
                        os.fsync(fd)
                    raise
            finally:
                os.close(fd)

    def merge_from(self, other: ResultStore, keep=None) -> int:
        """Append the runs of another output folder that this one lacks (or holds only as failed while the other
        finished them), as journal entries read with json alone; return how many. `keep(run_row)` limits which runs
        are taken. Call write_derived after."""
        mine = self.entries()
        added = 0
        for run_id, entry in other.entries().items():
            if keep is not None and not keep(entry["run"]):
                continue
            held = mine.get(run_id)
            if held is None or (held["run"]["status"] != "ok" and entry["run"]["status"] == "ok"):
                self.append_entry(entry)
                added += 1
        return added

    def _entries_from_tables(self) -> list[dict]:
        try:
            runs = read_csv(self._path("runs"), tables.RUNS_COLUMNS)
            evals = read_csv(self._path("evals"), tables.EVALS_COLUMNS)
            costs = read_csv(self._path("costs"), STEP_COSTS_COLUMNS)
            curves = read_csv(self._path("curves"), tables.CURVES_COLUMNS)
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
                "curves": _records(curves[curves["run_id"] == row["run_id"]]) if ok and not curves.empty else [],
            })
        return entries

    # tables ----------------------------------------------------------------------------------------------------
    # Every table comes out in canonical row order (see canonical_order), whatever order the runs finished in.
    def runs(self) -> pd.DataFrame:
        rows = [e["run"] for e in self.entries().values()]
        return canonical_order(pd.DataFrame(rows, columns=tables.RUNS_COLUMNS), RUN_ORDER)

    def _long(self, key: str, columns: list[str], order: list[str]) -> pd.DataFrame:
        rows = [r for e in self.entries().values() if e["run"]["status"] == "ok" for r in e.get(key, [])]
        return canonical_order(pd.DataFrame(rows, columns=columns), order)

    def evals(self) -> pd.DataFrame:
        evals = self._long("evals", tables.EVALS_COLUMNS, EVAL_ORDER)
        if evals["split"].isna().any():  # rows recorded before validation splits existed are test rows
            evals = canonical_order(evals.assign(split=evals["split"].fillna("test")), EVAL_ORDER)
        return evals

    def costs(self) -> pd.DataFrame:
        return self._long("costs", STEP_COSTS_COLUMNS, COST_ORDER)

    def curves(self) -> pd.DataFrame:
        return self._long("curves", tables.CURVES_COLUMNS, CURVE_ORDER)

    def finished_run_ids(self) -> set[str]:
        return {run_id for run_id, e in self.entries().items() if e["run"]["status"] == "ok"}

    # derived tables ---------------------------------------------------------------------------------------------------
    def run_costs(self) -> pd.DataFrame:
        return _run_costs(self.costs())

    def summary(self, split: str = "test") -> pd.DataFrame:
        return canonical_order(tables.summarize(self.evals(), self.runs(), self.run_costs(), self.curves(),
                                                split=split), RUN_ORDER)

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

    def leaderboard(self, summary: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
        """The leaderboard of every recorded run (failed ones counted; ``runs`` defaults to this folder's runs
        table), compared with the folder's published numbers when it has any."""
        from clbench.presets import compare

        runs = self.runs() if runs is None else runs
        runs = runs[tables.phases_of(runs) == "final"]  # a tuned sweep's search: `clbench leaderboard --phase tune`
        return tables.with_selected_by(compare(tables.leaderboard(summary, runs), self.published()), runs)

    def write_derived(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rewrite every table from the journal (runs.csv last); return the summary and the leaderboard."""
        evals, costs, runs, curves = self.evals(), self.costs(), self.runs(), self.curves()
        # sorted before the leaderboard aggregates it, so that each configuration's seeds are summed in one order
        summary = canonical_order(tables.summarize(evals, runs, _run_costs(costs), curves), RUN_ORDER)
        board = self.leaderboard(summary, runs)
        write_csv(evals, self._path("evals"))
        write_csv(costs, self._path("costs"))
        if not curves.empty or self._path("curves").exists():
            write_csv(curves, self._path("curves"))
        write_csv(summary, self._path("summary"))
        write_csv(board, self._path("leaderboard"))
        write_csv(runs, self._path("runs"))
        return summary, board


# Canonical row orders: a run by what it is (then its seed), a long row by its run and position in the run.
RUN_ORDER = ["benchmark", "scenario", "strategy", "config_id", "seed", "run_id"]
EVAL_ORDER = ["run_id", "split", "step", "eval_exp", "metric"]
COST_ORDER = ["run_id", "step"]
CURVE_ORDER = ["run_id", "global_step", "train_exp", "exp_step", "eval_exp", "metric"]


def canonical_order(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``df`` sorted by ``keys`` (those it has), with a fresh index.

    Runs finish in any order (workers, Ray, reruns), and pandas sums a group in row order, so without this the
    tables' row order and the last bit of a mean or SEM would depend on the number of workers.
    """
    keys = [k for k in keys if k in df.columns]
    if df.empty or not keys:
        return df.reset_index(drop=True)
    return df.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


def merge_summaries(summaries: list[pd.DataFrame]) -> pd.DataFrame:
    """The summaries of several folders as one: a run found in several folders once (the first folder's), in
    canonical order, so a merged leaderboard does not depend on the order its folders' runs finished in."""
    merged = pd.concat(summaries, ignore_index=True).drop_duplicates("run_id")
    return canonical_order(merged, RUN_ORDER)


def merge_runs(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """The runs tables of several folders as one, for the leaderboard's failure accounting: a run found in several
    folders once, in canonical order. Its ok record wins over a failed one (a folder that reran it successfully), so
    the merged runs agree with merge_summaries; among records of one status, the first folder's."""
    if not runs:
        return pd.DataFrame(columns=tables.RUNS_COLUMNS)
    merged = pd.concat([df for df in runs if not df.empty] or runs[:1], ignore_index=True)
    if merged.empty:
        return canonical_order(merged, RUN_ORDER)
    failed_last = merged.assign(_failed=merged["status"] != "ok").sort_values("_failed", kind="stable")
    return canonical_order(failed_last.drop_duplicates("run_id").drop(columns="_failed"), RUN_ORDER)


def _run_costs(costs: pd.DataFrame) -> pd.DataFrame:
    """Per run: total train and eval seconds, peak RSS, strategy memory at the end."""
    if costs.empty:
        return pd.DataFrame(columns=["run_id", "train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb"])
    last = costs.sort_values("step").groupby("run_id").tail(1).set_index("run_id")["strategy_mem_mb"]
    per_run = costs.groupby("run_id").agg(train_s=("train_s", "sum"), eval_s=("eval_s", "sum"),
                                          peak_rss_mb=("peak_rss_mb", "max"))
    return per_run.assign(strategy_mem_mb=last).reset_index()


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


# reading the journal ------------------------------------------------------------------------------------------------
# A results folder is untrusted input: every complete line of the journal must be one well-formed entry, else the
# command stops with one message naming the line (nothing is skipped, nothing written). Only a last line without its
# newline is passed over: that is an append cut short by a crash, and the next append trims it.


class _Damaged(Exception):
    """What is wrong with one journal line."""


_TEXT, _INT, _NUMBER = ((str,), "a string"), ((int,), "an integer"), ((int, float), "a number")
#: The fields that the tables are derived from, and their JSON types; an entry may hold more.
RUN_FIELDS = {"run_id": _TEXT, "status": _TEXT, "config_id": _TEXT, "benchmark": _TEXT, "scenario": _TEXT,
              "strategy": _TEXT, "params": _TEXT, "seed": _INT}
EVAL_FIELDS = {"run_id": _TEXT, "step": _INT, "eval_exp": _INT, "metric": _TEXT, "value": _NUMBER}
CURVE_FIELDS = {"run_id": _TEXT, "train_exp": _INT, "exp_step": _INT, "global_step": _INT, "samples_seen": _INT,
                "eval_exp": _INT, "metric": _TEXT, "value": _NUMBER}
COST_FIELDS = {"run_id": _TEXT, "step": _INT, "train_s": _NUMBER, "eval_s": _NUMBER, "peak_rss_mb": _NUMBER,
               "strategy_mem_mb": _NUMBER}


def read_journal(path: Path) -> list[dict]:
    """The entries of the journal's complete lines, in file order; UsageError naming the first damaged line."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line (crash mid-append) is not a run
    entries = []
    for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
        try:
            entries.append(_parse_entry(line))
        except _Damaged as err:
            raise UsageError(f"damaged journal {str(path)!r}, line {number}: {err}; nothing was changed: repair or "
                             "delete that line (a deleted run is run again)") from None
    return entries


def _parse_entry(line: bytes) -> dict:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Damaged(f"not UTF-8 text (byte 0x{line[err.start]:02x} at byte {err.start + 1})") from None
    if not text.strip():
        raise _Damaged("empty line (each line is one run)")
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Damaged(f"not valid JSON ({err.msg} at column {err.colno})") from None
    _check_entry(entry)
    return entry


def _check_entry(entry) -> None:
    """Raise _Damaged unless ``entry`` has the shape journal_entry writes: {"run": {...}, "evals": [...], "costs":
    [...]}, with the fields the tables need, of the right types, and rows that belong to the entry's run."""
    if not isinstance(entry, dict):
        raise _Damaged(f"expected a JSON object, got {_json_kind(entry)}")
    missing = [key for key in ("run", "evals", "costs") if key not in entry]
    if missing:
        raise _Damaged(f"the entry lacks {', '.join(map(json.dumps, missing))}")
    _check_fields(entry["run"], RUN_FIELDS, '"run"')
    run_id = entry["run"]["run_id"]
    if not run_id:
        raise _Damaged('"run"."run_id" is empty')
    for key, fields in (("evals", EVAL_FIELDS), ("costs", COST_FIELDS), ("curves", CURVE_FIELDS)):
        rows = entry.get(key, [])  # "curves" is absent in entries from before continual evaluation
        if not isinstance(rows, list):
            raise _Damaged(f'"{key}" must be a list, got {_json_kind(rows)}')
        for i, row in enumerate(rows):
            where = f'"{key}"[{i}]'
            _check_fields(row, fields, where)
            if row["run_id"] != run_id:
                raise _Damaged(f'{where} belongs to run {json.dumps(row["run_id"])}, not to this line\'s run '
                               f"{json.dumps(run_id)}")


def _check_fields(obj, fields: dict, where: str) -> None:
    if not isinstance(obj, dict):
        raise _Damaged(f"{where} must be an object, got {_json_kind(obj)}")
    for name, (types, kind) in fields.items():
        if name not in obj:
            raise _Damaged(f'{where} lacks "{name}"')
        if type(obj[name]) not in types:  # exact types: JSON true/false are not numbers here
            raise _Damaged(f'{where}."{name}" must be {kind}, got {_json_kind(obj[name])}')


def _json_kind(value) -> str:
    """A JSON value's type and (the start of) its text, for messages: 'a string ("zero")'."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    text = json.dumps(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return kinds.get(type(value), type(value).__name__) + ("" if value is None else f" ({text})")


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
