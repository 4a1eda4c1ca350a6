"""Sweeps: the product of benchmarks × scenarios × strategies (with hyperparameter grids) × seeds from a TOML file,
run by a local or a Ray executor, recorded in the output folder's journal so that a rerun skips what is done.

    description = "EWC's lambda on Split-FMNIST"   # optional free text, as is `name`
    seeds = [0, 1, 2]
    benchmarks = ["split-fmnist"]
    scenarios = ["class", "task"]

    [settings]              # the runner's settings: clbench run's options, with underscores
    epochs = 1
    batch_size = 128
    lr = 0.01
    momentum = 0.9
    threads = 1             # torch threads per run, the same under every executor (bit-identical tables)
    optimizer_state = "keep"  # protocol choices: "reset" (default) / "keep"; normalize = "standardize" / "none";
    drop_last = true          # drop_last = false (default) / true

    [[strategies]]
    name = "naive"

    [[strategies]]
    name = "ewc"
    params = { mode = "separate" }
    grid = { ewc_lambda = [1.0, 10.0] }     # one run per value (several keys: their product)
    scenarios = ["task"]                    # optional: only some of the sweep's scenarios
    settings = { lr = 0.1 }                 # optional: this method's own optimisation settings

Only the driver writes to the output folder; workers return results.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clbench import _toml
from clbench.benchmarks import SCENARIOS, benchmark_info, make_stream
from clbench.benchmarks.generators import check_fraction
from clbench.benchmarks.registry import check_backbone, check_class_order
from clbench.errors import UsageError, unknown_choice
from clbench.metrics.tables import LOWER_IS_BETTER
from clbench.runners.config import RunConfig
from clbench.runners.progress import RunProgress
from clbench.runners.trackers import check_names
from clbench.strategies import TrainConfig, get_strategy, strategy_names
from clbench.strategies.registry import check_distinct_names, import_root, strategy_ref

TOP_KEYS = {"seeds", "benchmarks", "scenarios", "settings", "strategies", "name", "description", "tune"}
TUNE_KEYS = {"metric", "split", "experiences", "seeds", "trials", "validation_split"}
#: The metrics a [tune] table may select on: the matrix metrics of the validation evaluations, task-aware ones too.
TUNE_METRICS = ("acc", "bwt", "fwt", "forgetting", "la", "aia", "acc_taw", "bwt_taw", "forgetting_taw", "la_taw",
                "aia_taw")
TRIALS_SEED = 0  # the grid sample of a method with more configurations than [tune] trials
SETTINGS = {
    "epochs": int, "iterations": int, "batch_size": int, "lr": float, "momentum": float, "weight_decay": float,
    "optimizer": str, "eval_batch_size": int, "optimizer_state": str, "normalize": str, "drop_last": bool,
    "stream_seed": int, "n_experiences": int, "train_subset": int, "test_subset": int, "eval_every": int,
    "eval_period": int, "eval_subset": int, "validation_split": float, "backbone": str, "class_order": str,
    "threads": int, "device": str,
    "data_root": str, "checkpoint": bool,
    "trackers": list,  # experiment trackers the driver logs every run to (clbench.runners.trackers); --tracker adds
}  # fmt: skip
STREAM_FIELDS = ("benchmark", "scenario", "stream_seed", "n_experiences", "train_subset", "test_subset", "backbone",
                 "class_order", "validation_split", "first_experiences")  # RunConfig fields that make_stream takes
TRAIN_SETTINGS = ("epochs", "iterations", "batch_size", "lr", "momentum", "weight_decay", "optimizer",
                  "eval_batch_size", "optimizer_state", "normalize", "drop_last")  # the settings of the TrainConfig
STRATEGY_KEYS = {"name", "params", "grid", "scenarios", "settings"}
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Tune:
    """A sweep's [tune] table: how each method's configuration is selected without the test set (Chaudhry et al.
    2019's A-GEM protocol when `experiences` is set: tune on the first experiences, report on the whole stream)."""

    metric: str = "acc"
    split: str = "val"
    experiences: int | None = None  # the tuning stream's first experiences (None: all)
    seeds: tuple[int, ...] = (0,)
    trials: int | None = None  # at most this many configurations per method (None: its whole grid)
    validation_split: float = 0.1  # of each experience's training data, held out for the tuning runs

    @property
    def criterion(self) -> str:
        return f"{self.metric} on {self.split}"

    def describe(self, n_trials: int) -> str:
        where = f"first {self.experiences} experiences" if self.experiences else "all experiences"
        return f"{self.criterion}, {where}, {n_trials} trial(s), tuning seeds {' '.join(map(str, self.seeds))}"


@dataclass
class Method:
    """One [[strategies]] entry of a tuned sweep: its candidate hyperparameters and where it runs."""

    cls: type
    candidates: list[dict]
    scenarios: list[str]
    trains: dict  # benchmark name → TrainConfig


@dataclass
class Sweep:
    """The runs of a sweep file and how to build their streams. With a [tune] table, `configs` are the tuning runs
    and final_configs() gives the final ones once each method's configuration is selected (select())."""

    configs: list[RunConfig]
    threads: int = 1
    device: str = "cpu"
    data_root: str | None = None
    checkpoint: bool = False  # save each run's state after every experience (long runs) and resume from it
    trackers: tuple[str, ...] = ()  # tensorboard, wandb, mlflow: where the driver also logs each run
    tune: Tune | None = None
    methods: list[Method] | None = None
    seeds: list[int] | None = None
    benchmarks: list[str] | None = None
    run_options: dict | None = None

    def _config(self, bench: str, scenario: str, method: Method, params: dict, seed: int, **extra) -> RunConfig:
        return RunConfig(benchmark=bench, scenario=scenario, strategy=method.cls.name,
                         strategy_ref=strategy_ref(method.cls), params=params, seed=seed,
                         train=method.trains[bench], **{**self.run_options, **extra})

    def cells(self):
        """(benchmark, scenario, method index, method) of every selection the sweep makes."""
        for bench in self.benchmarks:
            for k, method in enumerate(self.methods):
                for scenario in method.scenarios:
                    yield bench, scenario, k, method

    def tuning_config(self, bench, scenario, method, params, seed) -> RunConfig:
        return self._config(bench, scenario, method, params, seed, phase="tune",
                            validation_split=self.tune.validation_split, first_experiences=self.tune.experiences)

    def final_configs(self, selection: dict) -> list[RunConfig]:
        """The final runs: each selected configuration ((bench, scenario, method index) → params) on every seed."""
        configs = []
        for bench, scenario, k, method in self.cells():
            if (bench, scenario, k) in selection:
                chosen = selection[bench, scenario, k]
                configs += [self._config(bench, scenario, method, chosen, seed,
                                         selected_by=self.tune.describe(len(method.candidates)))
                            for seed in self.seeds]
        return list({c.run_id: c for c in configs}.values())

    def stream_key(self, config: RunConfig) -> tuple:
        """The config's stream arguments of make_stream, as (name, value) pairs: runs with equal keys share a stream."""
        return tuple((name, getattr(config, name)) for name in STREAM_FIELDS)


def load_sweep(path: Path) -> Sweep:
    """Parse and check a sweep file; every error is a UsageError naming the bad value and the valid choices."""
    return sweep_from_dict(read_sweep_file(path), str(path))


def read_sweep_file(path: Path) -> dict:
    """The file's TOML table; a folder, a missing, unreadable, non-UTF-8, invalid or empty file is a UsageError."""
    path = Path(path)
    if os.path.isdir(path):
        raise UsageError(f"sweep file {str(path)!r} is a folder; give a sweep file (TOML) or preset:NAME")
    if not os.path.isfile(path):
        raise UsageError(f"sweep file {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read sweep file {str(path)!r}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")  # TOML is UTF-8; an editor's byte-order mark is harmless
    except UnicodeDecodeError as err:
        raise UsageError(f"sweep file {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}); TOML files "
                         "must be UTF-8") from None
    try:
        spec = _toml.loads(text)
    except _toml.TOMLDecodeError as err:
        raise UsageError(f"sweep file {str(path)!r} is not valid TOML: {err}") from None
    if not spec:
        raise UsageError(f"sweep file {str(path)!r} is empty; it needs seeds, benchmarks, scenarios and "
                         "[[strategies]] (the README's Sweeps section shows one)")
    return spec


def _list(spec: dict, key: str, kind, where: str) -> list:
    value = spec.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                          for v in value):
        raise UsageError(f"{where}: {key!r} must be a non-empty list of {kind.__name__}, got {value!r}")
    return value


def _settings(table, valid: dict, where: str) -> dict:
    """A settings table checked against `valid` (name → type); ints are accepted where floats are expected."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: settings must be a table, got {table!r}")
    for key, value in table.items():
        if key not in valid:
            raise unknown_choice("setting", key, valid, where=f"in {where}")
        kind = valid[key]
        exact = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        widened = kind is float and isinstance(value, int) and not isinstance(value, bool)
        if not (exact or widened):
            raise UsageError(f"{where}: setting {key}={value!r} must be {kind.__name__}")
    return dict(table)


def _train_config(settings: dict, where: str) -> TrainConfig:
    """The TrainConfig of `settings`; its range errors say which part of the sweep they come from."""
    try:
        return TrainConfig(**{k: v for k, v in settings.items() if k in TRAIN_SETTINGS})
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None


def _table(entry: dict, key: str, where: str) -> dict:
    value = entry.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {key} must be a table such as {key} = {{ name = value }}, got {value!r}")
    return dict(value)


# Checks shared by `clbench run` and sweeps, so that both refuse the same values with the same words.
def check_seeds(seeds, what: str) -> None:
    """Seeds must be integers >= 0: numpy's SeedSequence refuses negatives, deep inside a run."""
    for seed in seeds:
        if seed < 0:
            raise UsageError(f"{what} must be integers >= 0, got {seed}")


def check_device(device, *, here: bool = True) -> None:
    """A device name clbench runs on (cpu, cuda, cuda:N, mps); with here=True, one this machine has."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise unknown_choice("device", device, ["cpu", "cuda", "cuda:N", "mps"])
    if not here or device == "cpu":
        return
    if device == "mps":  # Apple-silicon GPUs: torch builds for macOS only
        if not torch.backends.mps.is_available():
            built = torch.backends.mps.is_built()
            raise UsageError("device 'mps' requested but " + (
                "this machine has no usable MPS device (it needs Apple silicon and macOS 12.3 or later)" if built
                else "this torch build has no MPS support (only torch for macOS has it)") + "; valid choices here: "
                + ", ".join(["cpu", *(["cuda"] if torch.cuda.is_available() else [])]))
        return
    if not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available; valid choices here: cpu")
    count = torch.cuda.device_count()
    if int(device.partition(":")[2] or 0) >= count:
        valid = ", ".join(["cpu", "cuda", *(f"cuda:{i}" for i in range(count))])
        raise UsageError(f"device {device!r} requested but this machine has {count} CUDA device(s); valid choices "
                         f"here: {valid}")


def resolve_strategy(name):
    """get_strategy, for a name that is a string and, when it holds a ':', a well-formed package.module:Class (an
    empty or relative module name would otherwise end in importlib's ValueError or TypeError)."""
    malformed = not isinstance(name, str)
    if not malformed and ":" in name and not name.startswith("avalanche:"):
        module, _, attr = name.partition(":")
        malformed = not (all(part.isidentifier() for part in module.split(".")) and attr.isidentifier())
    if malformed:
        raise unknown_choice("strategy", name, strategy_names() + ["package.module:Class", "avalanche:ClassName"])
    return get_strategy(name)


def check_finite_params(strategy: str, params: dict) -> None:
    """NaN or infinite hyperparameter values pass the type checks but only make a run diverge."""
    for key, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UsageError(f"hyperparameter {key}={value!r} of strategy {strategy!r} must be finite")


def sweep_from_dict(spec: dict, where: str = "sweep") -> Sweep:
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise UsageError(f"{where}: {unknown_choice('key', sorted(unknown)[0], TOP_KEYS)}")
    seeds = _list(spec, "seeds", int, where)
    check_seeds(seeds, f"{where}: seeds")
    benchmarks = [benchmark_info(b) for b in _list(spec, "benchmarks", str, where)]
    scenarios = _list(spec, "scenarios", str, where)
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            raise unknown_choice("scenario", scenario, SCENARIOS)
    settings = _settings(spec.get("settings", {}), SETTINGS, where)
    for key in ("n_experiences", "train_subset", "test_subset", "eval_every", "eval_period", "eval_subset",
                "threads"):
        if key in settings and settings[key] < 1:
            raise UsageError(f"{where}: setting {key} must be at least 1, got {settings[key]}")
    if settings.get("stream_seed", 0) < 0:
        raise UsageError(f"{where}: setting stream_seed must be >= 0, got {settings['stream_seed']}")
    if "validation_split" in settings:
        check_fraction(settings["validation_split"], f"{where}: setting validation_split")
    device = settings.get("device", "cpu")
    check_device(device, here=False)  # whether this machine has it is for the command that runs here to say

    _train_config(settings, where)  # the sweep's own settings, named as such before any method's are merged in

    entries = spec.get("strategies")
    if entries is None or entries == []:
        raise UsageError(f"{where}: needs at least one [[strategies]] table with a name")
    if not isinstance(entries, list):
        raise UsageError(f"{where}: 'strategies' must be a list of [[strategies]] tables, got {entries!r}")
    # (class, params, scenarios, trains, entry index): one per grid point of every [[strategies]] entry
    variants: list[tuple[type, dict, list[str], dict[str, TrainConfig], int]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: every [[strategies]] entry must be a table with a name, got {entry!r}")
        unknown = set(entry) - STRATEGY_KEYS
        if unknown:
            error = unknown_choice("key", sorted(unknown)[0], STRATEGY_KEYS, where="in [[strategies]]")
            raise UsageError(f"{where}: {error}")
        if "name" not in entry:
            raise UsageError(f"{where}: a [[strategies]] table has no name")
        cls = resolve_strategy(entry["name"])
        label = f"{where}, [[strategies]] {entry['name']!r}"
        own_scenarios = _list(entry, "scenarios", str, label) if "scenarios" in entry else scenarios
        for scenario in own_scenarios:
            if scenario not in scenarios:
                raise unknown_choice(f"scenario of [[strategies]] {entry['name']!r} (the sweep's scenarios)", scenario,
                                     scenarios)
        # Per-method optimisation settings (papers tune the learning rate per method), over the sweep's own.
        own = _settings(entry.get("settings", {}), {k: SETTINGS[k] for k in TRAIN_SETTINGS}, label)
        # a setting neither gives is the benchmark's standard one (BenchmarkInfo.training)
        trains = {bench.name: _train_config(bench.training_with({**settings, **own}), label) for bench in benchmarks}
        for train in trains.values():
            cls.check_train(train)
        fixed, grid = _table(entry, "params", label), _table(entry, "grid", label)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise UsageError(f"{where}: grid {key} of {entry['name']!r} must be a non-empty list, got {values!r}")
        for combo in itertools.product(*grid.values()):
            params = cls.from_params({**fixed, **dict(zip(grid, combo, strict=True))}).get_params()
            check_finite_params(cls.name, params)
            variants.append((cls, params, own_scenarios, trains, index))
    check_distinct_names([cls for cls, *_ in variants])
    for scenario in scenarios:
        for bench in benchmarks:
            bench.check_scenario(scenario)
    for cls, _, own_scenarios, _, _ in variants:
        for scenario in own_scenarios:
            cls.check_scenario(scenario)

    check_backbone(settings.get("backbone"))
    for bench in benchmarks:
        check_class_order(settings.get("class_order", "seeded"), bench)
    run_options = {k: settings[k] for k in ("stream_seed", "n_experiences", "train_subset", "test_subset",
                                            "eval_every", "eval_period", "eval_subset", "backbone", "class_order",
                                            "validation_split")
                   if k in settings}
    configs = [
        RunConfig(benchmark=bench.name, scenario=scenario, strategy=cls.name, strategy_ref=strategy_ref(cls),
                  params=params, seed=seed, train=trains[bench.name], **run_options)
        for bench in benchmarks for scenario in scenarios for cls, params, own_scenarios, trains, _ in variants
        if scenario in own_scenarios for seed in seeds
    ]
    unique = list({c.run_id: c for c in configs}.values())  # the same run listed twice runs once
    sweep = Sweep(unique, threads=settings.get("threads", 1), device=device, data_root=settings.get("data_root"),
                  checkpoint=settings.get("checkpoint", False),
                  trackers=tuple(check_names(settings.get("trackers", []), f"{where}: setting trackers")))
    if "tune" in spec:
        _tuned(sweep, _tune(spec["tune"], where), variants, benchmarks, seeds, run_options, where)
    return sweep


def _tune(table, where: str) -> Tune:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: tune must be a table such as [tune] with metric, experiences, seeds, trials; got "
                         f"{table!r}")
    unknown = set(table) - TUNE_KEYS
    if unknown:
        raise UsageError(f"{where}: {unknown_choice('key', sorted(unknown)[0], TUNE_KEYS, where='in [tune]')}")
    metric = table.get("metric", "acc")
    if metric not in TUNE_METRICS:
        raise unknown_choice("[tune] metric", metric, TUNE_METRICS)
    split = table.get("split", "val")
    if split != "val":  # tuning on the test set is what [tune] exists to prevent
        raise UsageError(f"{where}: [tune] split must be 'val' (the validation set), got {split!r}: selecting on the "
                         "test set would report a number the selection has seen")
    seeds = _list(table, "seeds", int, f"{where}: [tune]") if "seeds" in table else [0]
    check_seeds(seeds, f"{where}: [tune] seeds")
    out = {}
    for key in ("experiences", "trials"):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{where}: [tune] {key} must be a positive integer, got {value!r}")
        out[key] = value
    fraction = table.get("validation_split", 0.1)
    check_fraction(fraction, f"{where}: [tune] validation_split")
    return Tune(metric=metric, split=split, seeds=tuple(seeds), validation_split=float(fraction), **out)


def _tuned(sweep: Sweep, tune: Tune, variants, benchmarks, seeds, run_options, where: str) -> None:
    """Turn `sweep` into a tuned one: per [[strategies]] entry its candidates (the grid, or `trials` of it drawn with
    TRIALS_SEED: the same budget for every method), and the tuning runs as its configs."""
    methods: dict[int, Method] = {}
    for cls, params, own_scenarios, trains, index in variants:
        if index in methods:
            methods[index].candidates.append(params)
        else:
            methods[index] = Method(cls, [params], own_scenarios, trains)
    methods = list(methods.values())
    for method in methods:
        if tune.trials is not None and len(method.candidates) > tune.trials:
            rng = np.random.default_rng(TRIALS_SEED)
            chosen = sorted(rng.choice(len(method.candidates), size=tune.trials, replace=False).tolist())
            method.candidates = [method.candidates[i] for i in chosen]
    if tune.experiences is not None:
        for bench in benchmarks:
            if tune.experiences > run_options.get("n_experiences", bench.default_n_experiences):
                raise UsageError(f"{where}: [tune] experiences={tune.experiences} is more than the "
                                 f"{run_options.get('n_experiences', bench.default_n_experiences)} experiences of "
                                 f"{bench.name}")
    sweep.tune, sweep.methods, sweep.seeds = tune, methods, list(seeds)
    sweep.benchmarks, sweep.run_options = [b.name for b in benchmarks], dict(run_options)
    configs = [sweep.tuning_config(bench, scenario, method, params, seed)
               for bench, scenario, _, method in sweep.cells() for params in method.candidates for seed in tune.seeds]
    sweep.configs = list({c.run_id: c for c in configs}.values())


def select(sweep: Sweep, val_summary) -> tuple[dict, list[str]]:
    """Each method's configuration with the best mean `[tune] metric` over the tuning seeds, per benchmark and
    scenario, from the validation summary of the tuning runs (a candidate counts only when every tuning seed
    finished; ties go to the first candidate in grid order). Returns (selection, one line per method that had no
    complete candidate)."""
    tune = sweep.tune
    by_config = {}
    if len(val_summary):
        by_config = val_summary.groupby("config_id")[tune.metric].agg(["mean", "count"]).to_dict("index")
    selection, problems = {}, []
    for bench, scenario, k, method in sweep.cells():
        best = None
        for params in method.candidates:
            config_id = sweep.tuning_config(bench, scenario, method, params, tune.seeds[0]).config_id
            found = by_config.get(config_id)
            if found is None or found["count"] < len(tune.seeds) or math.isnan(found["mean"]):
                continue
            score = -found["mean"] if tune.metric in LOWER_IS_BETTER else found["mean"]  # forgetting: the lowest
            if best is None or score > best[0]:
                best = (score, params)
        if best is None:
            problems.append(f"{method.cls.name} on {bench}/{scenario}: no configuration finished all "
                            f"{len(tune.seeds)} tuning seed(s); it has no final runs")
        else:
            selection[bench, scenario, k] = best[1]
    return selection, problems


def build_streams(sweep: Sweep, configs: list[RunConfig], *, keep: bool = True) -> None:
    """Build, in this process, every stream that `configs` read, before the caller writes anything: missing data or
    a stream the settings cannot make fails here as one UsageError, not inside the first run with published.csv
    already written. The in-process executor reuses them from the cache; keep=False drops them again (worker
    processes build their own)."""
    keys = list(dict.fromkeys(sweep.stream_key(c) for c in configs))
    for key in keys:
        _stream(key, sweep.data_root)
    if not keep:
        for key in keys:
            _STREAMS.pop(key, None)


# -- executors ----------------------------------------------------------------------------------------------------
_STREAMS: dict[tuple, object] = {}


def _stream(sweep_key: tuple, data_root: str | None):
    """Streams are built once per process (workers keep their own cache)."""
    if sweep_key not in _STREAMS:
        kwargs = dict(sweep_key)
        _STREAMS[sweep_key] = make_stream(kwargs.pop("benchmark"), data_root=data_root, **kwargs)
    return _STREAMS[sweep_key]


def run_one(config: RunConfig, stream_key: tuple, threads: int, device: str, data_root: str | None,
            checkpoint_dir: str | None, strategy_root: str | None = None):
    """Run one config in this process, with `threads` torch threads (what every executor does for every run).

    `strategy_root` is the folder the driver imported a user's strategy module from: a worker that does not share
    the driver's sys.path (a Ray task) imports the class from there (RunConfig.strategy_ref).
    """
    from clbench.runners.loop import run

    if strategy_root is not None and strategy_root not in sys.path:
        sys.path.append(strategy_root)
    torch.set_num_threads(threads)
    checkpoint = Path(checkpoint_dir) / f"{config.run_id}.pt" if checkpoint_dir else None
    return run(config, _stream(stream_key, data_root), device=device, progress=False, checkpoint=checkpoint)


def execute(sweep: Sweep, todo: list[RunConfig], record, *, executor: str = "local", workers: int = 1,
            address: str | None = None, quiet: bool = False, checkpoint_dir: Path | None = None) -> int:
    """Run `todo`, calling record(result) in this (the driver's) process as each run finishes; returns the number
    of failed runs."""
    if executor not in EXECUTORS:
        raise unknown_choice("executor", executor, EXECUTORS)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    progress = RunProgress(len(todo), quiet=quiet, desc="sweep")  # a bar in a terminal, else one line per run
    checkpoints = str(checkpoint_dir) if sweep.checkpoint and checkpoint_dir is not None else None
    if executor == "ray":
        check_importable_by_ray(todo)
    args = [(c, sweep.stream_key(c), sweep.threads, sweep.device, sweep.data_root, checkpoints,
             import_root(c.strategy_ref)) for c in todo]
    failed = 0

    def done(result):
        nonlocal failed
        record(result)
        failed += result.status != "ok"
        progress.finished(result)

    try:
        if executor == "ray":
            _execute_ray(args, done, progress, workers, address, sweep.device)
        elif workers == 1:
            for a in args:
                progress.started(a[0])
                done(run_one(*a))
        else:
            _execute_pool(args, done, progress, workers)
    finally:
        progress.close()
    return failed


def _execute_pool(args, done, progress, workers):
    import multiprocessing

    # spawn: workers start clean (no inherited torch thread pools or open files of the driver)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = set()
        queue = list(args)
        while queue or pending:
            while queue and len(pending) < workers:
                pending.add(pool.submit(run_one, *queue.pop(0)))
                progress.started()
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done(future.result())


def check_importable_by_ray(configs: list[RunConfig]) -> None:
    """Ray tasks import a strategy by its module path; a class defined in the driver's script has none."""
    for config in configs:
        if config.strategy_ref.startswith("__main__:"):
            raise UsageError(f"strategy {config.strategy!r} is defined in the running script ({config.strategy_ref}); "
                             "Ray workers cannot import it: move it into a module and pass module:Class, or use "
                             "--executor local")


def _execute_ray(args, done, progress, workers, address, device):
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'clbench[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        init = {"address": address} if address else {"num_cpus": max(workers, 1), "include_dashboard": False}
        ray.init(**init, log_to_driver=False, configure_logging=False)
    try:
        resources = {"num_gpus": 1} if device.startswith("cuda") else {"num_cpus": 1}
        remote = ray.remote(**resources)(run_one)
        pending = [remote.remote(*a) for a in args]
        progress.started(n=len(pending))
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                done(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()
