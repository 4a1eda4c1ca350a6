"""Experiment trackers: every run a command records is also logged to TensorBoard, Weights & Biases or MLflow
(`--tracker NAME`, repeatable; a sweep file's setting ``trackers = ["mlflow"]``).

One tracker run per clbench run, named after it, logged by the driver (the process that appends the journal) once
the run has finished, from what the journal records — so trackers never change a result:

- config: run_id, config_id, benchmark, scenario, strategy and its hyperparameters, seeds, the training settings,
  phase, status (and error of a failed run);
- step-indexed scalars, step i = the training experience just finished: ``acc/exp{j}`` (R[i, j]), ``acc/avg`` (the
  mean of R[i, :i+1] where that row is fully evaluated), ``acc_taw/...`` (class-IL's task-aware accuracy),
  ``val_acc/...`` (the validation split), ``train/loss`` (mean training loss of the experience) and ``cost/...``
  (train_s, eval_s, steps, peak_rss_mb, strategy_mem_mb of the experience);
- ``summary/...``: the summary table's metrics of the run (clbench.metrics.tables.summarize: acc, bwt, fwt,
  forgetting, la, aia, their _taw twins, the curve metrics, train_s, eval_s, peak_rss_mb, strategy_mem_mb) plus
  steps and duration_s; ``summary_val/...`` on the validation split.

Where each writes, unless the user configured the tracker: TensorBoard event files in ``OUT/tensorboard/<run_id>/``;
W&B offline runs in ``OUT/wandb/`` (``wandb sync`` uploads them; WANDB_MODE or WANDB_API_KEY in the environment
leave the mode to W&B); MLflow an SQLite store ``OUT/mlruns/mlflow.db`` (MLflow 3 refuses its old file store by
default; MLFLOW_TRACKING_URI wins). The packages are optional extras, imported only when a tracker is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from clbench.errors import UsageError, unknown_choice

#: tracker name → (the package it needs, its display name)
TRACKERS = {"tensorboard": ("tensorboard", "TensorBoard"), "wandb": ("wandb", "Weights & Biases"),
            "mlflow": ("mlflow", "MLflow")}
COST_KEYS = ("train_s", "eval_s", "steps", "peak_rss_mb", "strategy_mem_mb")
#: evals metric → scalar prefix; the validation split's prefixes start with "val_"
PREFIXES = {"accuracy": "acc", "accuracy_taw": "acc_taw"}


def check_names(names, where: str = "--tracker") -> list[str]:
    """The tracker names, each once in the order given; an unknown one (or one that is not a string) is refused."""
    if not isinstance(names, (list, tuple)):
        raise UsageError(f"{where} must be a list of tracker names such as ['mlflow'], got {names!r}")
    for name in names:
        if name not in TRACKERS:
            raise unknown_choice(f"tracker ({where})", name, TRACKERS)
    return list(dict.fromkeys(names))


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent package
        return False


def check_trackers(names, where: str = "--tracker") -> list[str]:
    """check_names, and each tracker's package installed: before any run starts, so that a missing one costs
    nothing. (Finding the package does not import it.)"""
    names = check_names(names, where)
    for name in names:
        package, title = TRACKERS[name]
        if not _installed(package):
            raise UsageError(f"--tracker {name} needs {title}: pip install 'clbench[{name}]'")
    return names


# ---------------------------------------------------------------------------------------------------------------------
# what a run logs (tracker-independent)


@dataclass
class TrackedRun:
    """One finished run as every tracker logs it."""

    run_id: str
    name: str
    status: str
    error: str
    group: str  # the config_id: the seeds of one configuration
    phase: str
    tags: list[str]
    config: dict  # nested: params and train are dicts
    steps: dict[int, dict[str, float]] = field(default_factory=dict)  # step → scalar name → value
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status != "ok"

    def flat_config(self) -> dict:
        """The config with params and train flattened to params.NAME and train.NAME."""
        out = {}
        for key, value in self.config.items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def tracked_run(result, entry: dict) -> TrackedRun:
    """The TrackedRun of a finished `result` (clbench.runners.loop.RunResult) and its journal `entry`
    (clbench.runners.record.journal_entry): the metrics are those of its eval and cost rows, computed by the same
    functions as the output folder's tables."""
    import numpy as np
    import pandas as pd

    from clbench.metrics import matrix, tables
    from clbench.results.store import STEP_COSTS_COLUMNS, _run_costs

    cfg, run = result.config, entry["run"]
    label = run.get("label") or ""
    config = {
        "run_id": cfg.run_id, "config_id": cfg.config_id, "benchmark": cfg.benchmark, "scenario": cfg.scenario,
        "strategy": cfg.strategy, "strategy_ref": cfg.strategy_ref, "label": label, "seed": cfg.seed,
        "stream_seed": cfg.stream_seed, "phase": cfg.phase, "selected_by": cfg.selected_by,
        "params": dict(cfg.params), "train": cfg.settings(), "status": result.status, "error": result.error,
        "duration_s": result.duration_s, "device": run.get("device"),
    }  # fmt: skip
    name = f"{cfg.benchmark}/{cfg.scenario} {cfg.strategy}{' ' + label if label else ''} seed {cfg.seed} [{cfg.run_id}]"
    tracked = TrackedRun(run_id=cfg.run_id, name=name, status=result.status, error=result.error,
                         group=cfg.config_id, phase=cfg.phase, tags=[cfg.benchmark, cfg.scenario, cfg.strategy],
                         config=config)
    if tracked.failed:
        return tracked

    def put(step: int, key: str, value) -> None:
        if _finite(value):
            tracked.steps.setdefault(int(step), {})[key] = float(value)

    evals = pd.DataFrame(entry["evals"], columns=tables.EVALS_COLUMNS)
    evals["split"] = evals["split"].fillna("test")
    for split in tables.SPLITS:
        for metric, prefix in PREFIXES.items():
            if not ((evals["split"] == split) & (evals["metric"] == metric)).any():
                continue
            prefix = prefix if split == "test" else f"val_{prefix}"
            R, _ = tables.matrices_from_evals(evals, cfg.run_id, metric, split)
            for i in range(R.shape[0]):
                for j in range(R.shape[1]):
                    put(i, f"{prefix}/exp{j}", R[i, j])
                seen = R[: i + 1, : i + 1]
                # ACC after experience i; a row evaluated only in part (--eval-every) would average other entries
                if not np.isnan(seen[-1]).any():
                    put(i, f"{prefix}/avg", matrix.accuracy(seen))
    costs = pd.DataFrame(entry["costs"], columns=STEP_COSTS_COLUMNS)
    for row in costs[costs["step"] >= 0].to_dict("records"):
        put(row["step"], "train/loss", row["train_loss"])
        for key in COST_KEYS:
            put(row["step"], f"cost/{key}", row[key])
    tracked.steps = dict(sorted(tracked.steps.items()))

    runs = pd.DataFrame([run], columns=tables.RUNS_COLUMNS)
    curves = pd.DataFrame(entry.get("curves", []), columns=tables.CURVES_COLUMNS)
    for split in tables.SPLITS:
        if split not in set(evals["split"]):
            continue
        summary = tables.summarize(evals, runs, _run_costs(costs), curves, split=split)
        if summary.empty:  # a tuning run has no test summary
            continue
        prefix = "summary" if split == "test" else "summary_val"
        for metric in tables.metrics_of(summary):
            if _finite(summary[metric].iloc[0]):
                tracked.summary[f"{prefix}/{metric}"] = float(summary[metric].iloc[0])
    tracked.summary["summary/steps"] = float(costs["steps"].fillna(0).sum())
    tracked.summary["summary/duration_s"] = float(result.duration_s)
    return tracked


# ---------------------------------------------------------------------------------------------------------------------
# the trackers


def _text(value) -> str | int | float | bool:
    """A config value as trackers that take only scalars store it (None and lists as text)."""
    if value is None or isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


class TensorBoardTracker:
    """Event files in OUT/tensorboard/<run_id>/ (torch.utils.tensorboard): the scalars, the config as text and as
    the HParams dashboard's session, with the summary metrics as its metrics."""

    name = "tensorboard"

    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.root = Path(out) / "tensorboard"
        self._writer, self._hparams = SummaryWriter, hparams

    def log(self, run: TrackedRun) -> None:
        writer = self._writer(log_dir=str(self.root / run.run_id))
        try:
            config = {k: _text(v) for k, v in run.flat_config().items()}
            writer.add_text("config", "```\n" + json.dumps(run.config, indent=2, default=str) + "\n```")
            writer.add_text("status", run.status if not run.failed else f"{run.status}: {run.error}")
            for step, values in run.steps.items():
                for key, value in values.items():
                    writer.add_scalar(key, value, step)
            last = max(run.steps, default=0)
            for key, value in run.summary.items():
                writer.add_scalar(key, value, last)
            # the HParams session in this run's own folder (SummaryWriter.add_hparams would start a sub-run)
            file_writer = writer._get_file_writer()
            for summary in self._hparams(config, dict(run.summary)):
                file_writer.add_summary(summary)
        finally:
            writer.close()

    def close(self) -> None:
        pass


class WandbTracker:
    """One W&B run per clbench run under OUT/wandb/: offline unless WANDB_MODE or WANDB_API_KEY says otherwise;
    the project is WANDB_PROJECT or "clbench", the group the config_id, the job type the phase."""

    name = "wandb"

    def __init__(self, out: Path):
        import wandb

        self.wandb, self.dir = wandb, Path(out).resolve()
        configured = "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ
        self.mode = None if configured else "offline"  # never the network unless the user set it up
        # console off: the command's own output (bars, tables) stays where it is; no system-metrics sampling, since
        # a tracker run lasts the moment it takes to log a finished run; offline, no lines per run (the README says
        # how to sync), online W&B's own (the run's address)
        self.settings = wandb.Settings(console="off", x_disable_stats=True, silent=self.mode == "offline")

    def log(self, run: TrackedRun) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        wb = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "clbench"), name=run.name, dir=str(self.dir),
                             mode=self.mode, config=run.config, group=run.group, job_type=run.phase, tags=run.tags,
                             settings=self.settings)
        try:
            for step, values in run.steps.items():
                wb.log(values, step=step)
            wb.summary.update({**run.summary, "status": run.status, **({"error": run.error} if run.failed else {})})
        finally:
            wb.finish(exit_code=1 if run.failed else 0)

    def close(self) -> None:
        self.wandb.teardown()  # ends W&B's service process


class MlflowTracker:
    """One MLflow run per clbench run, in the experiment MLFLOW_EXPERIMENT_NAME or "clbench": the flat config as
    params, run_id, status and error as tags, the scalars as metric histories and the summary as metrics; status
    FINISHED or FAILED. The store is MLFLOW_TRACKING_URI or sqlite at OUT/mlruns/mlflow.db."""

    name = "mlflow"
    BATCH = 100  # MLflow's log_batch takes at most 100 params (and 1000 metrics) at a time

    def __init__(self, out: Path):
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self.Metric, self.Param = Metric, Param
        # "Creating initial MLflow database tables..." at a new store's first use: not this command's news
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        store = Path(out).resolve() / "mlruns"
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "clbench")
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:  # artifacts beside the store, not in the current folder's ./mlruns
            artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (store / "artifacts").as_uri()
            self.experiment_id = self.client.create_experiment(name, artifact_location=artifacts)

    def log(self, run: TrackedRun) -> None:
        tags = {"clbench.run_id": run.run_id, "clbench.config_id": run.group, "clbench.status": run.status,
                "clbench.phase": run.phase}
        if run.failed:
            tags["clbench.error"] = run.error[:5000]
        created = self.client.create_run(self.experiment_id, run_name=run.name, tags=tags)
        run_id = created.info.run_id
        try:
            now = int(time.time() * 1000)
            params = [self.Param(k, str(_text(v))[:5000]) for k, v in run.flat_config().items()
                      if k not in ("status", "error")]
            metrics = [self.Metric(k, v, now, step) for step, values in run.steps.items() for k, v in values.items()]
            last = max(run.steps, default=0)
            metrics += [self.Metric(k, v, now, last) for k, v in run.summary.items()]
            for start in range(0, max(len(params), len(metrics)), self.BATCH):
                self.client.log_batch(run_id, metrics=metrics[start:start + self.BATCH],
                                      params=params[start:start + self.BATCH])
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FAILED" if run.failed else "FINISHED")

    def close(self) -> None:
        pass


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers:
    """The trackers of one command (none: every call does nothing and nothing is imported); a context manager.

    A tracker that fails to log a run is reported on stderr and the command goes on: the journal already holds
    the run, and a tracker is a copy of it."""

    def __init__(self, names, out: Path):
        self.names = check_trackers(names)
        self.out = Path(out)
        self._open: dict[str, object] = {}

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __bool__(self) -> bool:
        return bool(self.names)

    def _tracker(self, name: str):
        if name not in self._open:  # opened at the first run: a command with nothing to run imports nothing
            self._open[name] = TRACKER_CLASSES[name](self.out)
        return self._open[name]

    def log(self, result, entry: dict) -> None:
        """Log one recorded run (its RunResult and journal entry) to every tracker."""
        if not self.names:
            return
        run = tracked_run(result, entry)
        for name in self.names:
            try:
                self._tracker(name).log(run)
            except Exception as err:  # noqa: BLE001 - a tracker's failure must not stop the command
                print(f"clbench: warning: tracker {name} could not log run {run.run_id}: {err}", file=sys.stderr)

    def close(self) -> None:
        for name, tracker in list(self._open.items()):
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001
                print(f"clbench: warning: tracker {name} did not close cleanly: {err}", file=sys.stderr)
        self._open.clear()
