"""The `clbench` command line: list, run, leaderboard, plot.

Every piece of user input is checked before any training starts and before anything is written, so a bad value ends
with one message naming it and the valid choices, exit code 2, no traceback and no output folder.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import platform
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import clbench
from clbench.benchmarks import SCENARIOS, benchmark_info, list_benchmarks, make_stream
from clbench.benchmarks.generators import check_fraction
from clbench.benchmarks.registry import TRAINING_KEYS
from clbench.errors import UsageError, unknown_choice
from clbench.metrics import tables
from clbench.strategies import TrainConfig, get_strategy, strategy_names
from clbench.strategies.base import Strategy
from clbench.strategies.registry import describe_params, params_label, strategy_ref

EXIT_USAGE = 2
EXIT_RUN_FAILED = 1
EXIT_DISK_FULL = 1  # like a failed run: the input was fine, the machine was not


# ---------------------------------------------------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: same shape and exit code as ours
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _output_path(text: str) -> Path:
    """A path to write. An empty one (an unset shell variable) is refused: Path("") is the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("the path is empty; give a file or folder name")
    return Path(text)


def _input_path(text: str) -> Path:
    """A folder to read. One the OS refuses to look up (a name longer than the file system allows, no search
    permission on a folder above) is refused here: pathlib's is_file() raises on it instead of answering False."""
    if not text:
        raise argparse.ArgumentTypeError("the path is empty; give a folder written by clbench run or sweep")
    try:
        os.stat(text)
    except (FileNotFoundError, NotADirectoryError):
        pass  # the command says it is not an output folder
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot look up {text!r}: {err.strerror or err}") from None
    return Path(text)


def _training_epilog() -> str:
    lines = ["training settings a run uses unless its flags set them (the benchmark's standard ones):"]
    lines += [f"  {info.name:<18} {info.training_text()}" for info in list_benchmarks()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clbench", description=clbench.__doc__)
    parser.add_argument("--version", action="version", version=f"clbench {clbench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="benchmarks (with scenarios) and strategies (with hyperparameters and defaults)")

    run = sub.add_parser("run", help="train strategies through streams and record every accuracy",
                         epilog=_training_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--benchmark", nargs="+", required=True, metavar="B", help="one or more named benchmarks")
    run.add_argument("--scenario", nargs="+", required=True, metavar="S", help=f"one or more of {', '.join(SCENARIOS)}")
    run.add_argument("--strategy", nargs="+", required=True, metavar="X",
                     help="registered names or package.module:Class")
    run.add_argument("--set", nargs="+", action="append", default=[], metavar="[STRATEGY.]NAME=VALUE",
                     help="hyperparameters as Python literals; prefix with a strategy name to target only it")
    run.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="N", help="training seeds (default: 0)")
    run.add_argument("--stream-seed", type=int, default=0, help="seed of class order / permutations (default: 0)")
    run.add_argument("--class-order", default="seeded", help="split benchmarks: seeded (drawn from the stream seed, "
                                                              "default) or natural (0/1, 2/3, ...)")
    run.add_argument("--n-experiences", type=int, default=None, help="override the benchmark's number of experiences")
    # None: the benchmark's standard setting (BenchmarkInfo.training; `clbench list`, the epilog of run --help)
    run.add_argument("--epochs", type=int, default=None, help="passes over each experience (default: the "
                                                                "benchmark's, see below)")
    run.add_argument("--iterations", type=int, default=None, metavar="N",
                     help="optimizer steps per experience instead of epochs (reshuffling at every pass)")
    run.add_argument("--batch-size", type=int, default=None, help="default: the benchmark's")
    run.add_argument("--lr", type=float, default=None, help="default: the benchmark's")
    run.add_argument("--momentum", type=float, default=None,
                     help="SGD momentum (default: the benchmark's; 0 with an optimizer other than the benchmark's)")
    run.add_argument("--weight-decay", type=float, default=0.0)
    run.add_argument("--optimizer", default=None, help="sgd or adam (default: the benchmark's)")
    run.add_argument("--optimizer-state", default="reset", help="reset: a new optimizer at every experience "
                                                               "(default); keep: one optimizer for the whole run")
    run.add_argument("--normalize", default="standardize", help="backbone input: standardize with the dataset's "
                                                                "mean and std (default) or none (raw pixels)")
    run.add_argument("--drop-last", action="store_true", help="drop each pass's last incomplete mini-batch")
    run.add_argument("--eval-batch-size", type=int, default=2048)
    run.add_argument("--backbone", default=None, help="a reference backbone instead of the benchmark's "
                                                      "(mlp100, mlp400, mlp1000, resnet18-reduced)")
    run.add_argument("--train-subset", type=int, default=None, metavar="N", help="at most N train samples per exp.")
    run.add_argument("--test-subset", type=int, default=None, metavar="N", help="at most N test samples per exp.")
    run.add_argument("--eval-every", type=int, default=1, metavar="K",
                     help="full accuracy rows every K experiences (and the last); in between only R[i,i], R[i,i+1]")
    run.add_argument("--eval-period", type=int, default=None, metavar="N",
                     help="continual evaluation: every N optimizer steps (and each experience's first and last) "
                          "evaluate the seen experiences and the next one on --eval-subset test samples; rows go to "
                          "curves.csv (default: boundaries only)")
    run.add_argument("--eval-subset", type=int, default=1000, metavar="M",
                     help="test samples per experience (class-balanced, fixed by the stream seed) of the continual "
                          "evaluation (default: 1000)")
    run.add_argument("--validation-split", type=float, default=None, metavar="F",
                     help="hold out a class-balanced fraction F of each experience's training data (fixed by the "
                          "stream seed) as a validation set, evaluated beside the test set (evals.csv split 'val')")
    run.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    run.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    run.add_argument("--data-root", default=None, help="dataset folder (default: $CLBENCH_DATA or a user cache)")
    run.add_argument("--download", action="store_true", help="download missing datasets through torchvision")
    run.add_argument("--out", required=True, type=_output_path, help="output folder; existing tables are extended")
    run.add_argument("--no-plots", action="store_true", help="skip writing PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    board = sub.add_parser("leaderboard", help="merge output folders into one leaderboard: CSV, or a paper-ready "
                                               "Markdown or LaTeX table")
    board.add_argument("dirs", nargs="+", type=_input_path, metavar="DIR")
    board.add_argument("-o", "--output", type=_output_path, required=True, metavar="FILE",
                       help="the file to write; its extension (.csv, .md, .markdown, .tex) sets the format")
    board.add_argument("--format", default=None, metavar="csv|markdown|latex",
                       help="csv (every column), or markdown / latex: one row per configuration, one column per "
                            "benchmark × scenario, best in bold (default: from the extension of -o)")
    board.add_argument("--metric", default=None, metavar="M",
                       help="the metric of a markdown or latex table (default: acc)")
    board.add_argument("--phase", default="final", metavar="final|tune",
                       help="final runs (default; a tuned sweep's rows say how they were selected) or the tuning "
                            "runs of a sweep's [tune] search, on their validation set")
    board.add_argument("--split", default="test", metavar="test|val",
                       help="the evaluations the metrics read: test (default) or val, the validation set of runs "
                            "made with --validation-split")
    board.add_argument("--l2metrics", action="store_true",
                       help="pair each run with its `separate` run (same stream, settings and seed) and add "
                            "l2metrics' lifelong-learning metrics (docs/L2METRICS.md)")

    plot = sub.add_parser("plot", help="(re)draw the plots of an output folder into DIR/plots: per run, and per "
                                       "benchmark × scenario the average-accuracy curves and the acc bars")
    plot.add_argument("dir", type=_input_path, metavar="DIR")
    plot.add_argument("--format", default="png", metavar="png|pdf|svg",
                      help="file format of the figures (default: png)")

    report = sub.add_parser("report", help="one self-contained HTML page of an output folder: sortable leaderboard, "
                                           "accuracy matrices and curves, costs")
    report.add_argument("dir", type=_input_path, metavar="DIR")
    report.add_argument("-o", "--output", type=_output_path, default=None, metavar="FILE",
                        help="the HTML file to write (default: DIR/report.html)")

    sweep = sub.add_parser("sweep", help="run the product of a sweep file (TOML) or a paper preset; a rerun skips "
                                         "finished runs")
    sweep.add_argument("file", metavar="FILE.toml|preset:NAME", help="a sweep file, or preset:NAME (clbench presets)")
    sweep.add_argument("--seeds", nargs="+", type=int, default=None, metavar="N", help="replace the file's seeds")
    sweep.add_argument("--setting", nargs="+", action="append", default=[], metavar="NAME=VALUE",
                       help="replace a runner setting everywhere in the file (e.g. iterations=100 train_subset=500)")
    sweep.add_argument("--benchmark-map", nargs="+", action="append", default=[], metavar="FROM=TO",
                       help="run another benchmark in place of one (e.g. split-mnist=split-fmnist); published "
                            "numbers are then shown but not judged")
    sweep.add_argument("--out", type=_output_path, help="output folder (required unless --dry-run)")
    sweep.add_argument("--executor", default="local", help="local or ray (default: local)")
    sweep.add_argument("--workers", type=int, default=1, help="parallel runs (local processes or Ray CPUs)")
    sweep.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and how many are done; run nothing")
    sweep.add_argument("--no-plots", action="store_true", help="skip writing PNG plots")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    compare = sub.add_parser("compare", help="each configuration minus a reference strategy's, paired by seed: 95% CI, "
                                             "paired t-test, Holm-corrected p; average ranks over benchmarks")
    compare.add_argument("dirs", nargs="+", type=_input_path, metavar="DIR")
    compare.add_argument("--reference", required=True, metavar="STRATEGY[:LABEL]",
                         help="the strategy every configuration is compared with, per benchmark and scenario; "
                              "STRATEGY:LABEL picks one of its configurations (e.g. replay:mem_size=1000)")
    compare.add_argument("--metric", default="acc", help="a summary metric (default: acc)")
    compare.add_argument("--split", default="test", metavar="test|val",
                         help="the evaluations compared: test (default) or val (runs made with --validation-split)")
    compare.add_argument("-o", "--output", type=_output_path, default=None, metavar="FILE",
                         help="the comparisons as CSV; the average ranks go beside it as <stem>_ranks.csv "
                              "(default: print only)")

    bench = sub.add_parser("bench", help="run new strategies through a suite's streams, tuned with its protocol, and "
                                         "compare them with its tuned baselines")
    bench.add_argument("strategies", nargs="*", metavar="STRATEGY",
                       help="registered names or package.module:Class; none: build the suite's baselines only")
    bench.add_argument("--suite", required=True, metavar="NAME", help="digits, standard or cifar (clbench/suites)")
    bench.add_argument("--out", required=True, type=_output_path, help="output folder; finished runs are reused")
    bench.add_argument("--set", nargs="+", action="append", default=[], metavar="[STRATEGY.]NAME=VALUE",
                       help="fixed hyperparameters of the new strategies")
    bench.add_argument("--grid", nargs="+", action="append", default=[], metavar="[STRATEGY.]NAME=[V1,V2,...]",
                       help="the values the suite's [tune] protocol searches for a new strategy (default: the "
                            "class's `tune_grid`, else nothing to tune)")
    bench.add_argument("--no-tune", action="store_true", help="run the new strategies with the --set values only")
    bench.add_argument("--baselines", type=_input_path, default=None, metavar="DIR",
                       help="a folder holding the suite's baseline runs, merged in and reused (default: the "
                            "committed results/<suite>/ of a source checkout, when there is one)")
    bench.add_argument("--workers", type=int, default=1, help="runs at a time in worker processes (default: 1)")
    bench.add_argument("--executor", default="local", help="local (default) or ray")
    bench.add_argument("--address", default=None, help="a Ray cluster's address (with --executor ray)")
    bench.add_argument("--no-plots", action="store_true", help="skip writing PNG plots")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")

    presets = sub.add_parser("presets", help="named sweeps that follow a paper's protocol, with its published numbers")
    presets.add_argument("name", nargs="?", default=None, help="show one preset: protocol, provenance, numbers")
    return parser


def parse_set_items(groups: list[list[str]], strategies: list[type[Strategy]]) -> dict[str, dict]:
    """Turn `--set a=1 replay.mem_size=500` into per-strategy dicts; unprefixed names go to every strategy that has
    such a hyperparameter."""
    by_name = {cls.name: cls for cls in strategies}
    params: dict[str, dict] = {name: {} for name in by_name}
    for item in (item for group in groups for item in group):
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        value = _literal(text)
        target, dot, name = key.rpartition(".")
        if dot:
            if target not in by_name:
                raise unknown_choice("strategy in --set", target, by_name)
            params[target][name] = value
            continue
        owners = [s for s, cls in by_name.items() if name in cls.hyperparameters()]
        if not owners:
            valid = sorted({h for cls in strategies for h in cls.hyperparameters()}) or ["(none)"]
            raise unknown_choice(f"hyperparameter for {', '.join(by_name)}", name, valid)
        for owner in owners:
            params[owner][name] = value
    return params


def _literal(text: str):
    """A Python literal where the text is one (1, 0.5, None, True, 'x'); otherwise the bare word as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ---------------------------------------------------------------------------------------------------------------------
# commands


def cmd_list(args) -> int:
    print("Benchmarks")
    for info in list_benchmarks():
        print(f"  {info.name:<18} scenarios: {', '.join(info.scenarios):<14} experiences: "
              f"{info.default_n_experiences:<3} backbone: {info.backbone}")
        print(f"  {'':<18} training: {info.training_text()}")
    print("\nStrategies")
    for name in strategy_names():
        cls = get_strategy(name)
        print(f"  {name:<18} scenarios: {', '.join(sorted(cls.scenarios))}")
        for hp in cls.hyperparameters().values():
            print(f"      {hp.name} = {hp.default!r}  ({hp.type_name})")
    return 0


def _resolve_run(args):
    """Check every input and build the run configs and streams; raises UsageError before anything is written."""
    from clbench.results.store import check_writable
    from clbench.runners.config import RunConfig
    from clbench.runners.sweep import check_device, check_finite_params, check_seeds, resolve_strategy

    benchmarks = [benchmark_info(name) for name in args.benchmark]
    for scenario in args.scenario:
        if scenario not in SCENARIOS:
            raise unknown_choice("scenario", scenario, SCENARIOS)
    classes = list({cls.name: cls for cls in map(resolve_strategy, args.strategy)}.values())
    raw_params = parse_set_items(args.set, classes)
    params = {cls.name: cls.from_params(raw_params[cls.name]).get_params() for cls in classes}
    for cls in classes:
        check_finite_params(cls.name, params[cls.name])
    check_seeds(args.seeds, "--seeds")
    if args.stream_seed < 0:
        raise UsageError(f"--stream-seed must be >= 0, got {args.stream_seed}")
    given = {key: getattr(args, key) for key in TRAINING_KEYS if getattr(args, key) is not None}
    trains = {
        info.name: TrainConfig(**info.training_with(given), iterations=args.iterations,
                               weight_decay=args.weight_decay, eval_batch_size=args.eval_batch_size,
                               optimizer_state=args.optimizer_state, normalize=args.normalize,
                               drop_last=args.drop_last)
        for info in benchmarks
    }
    for scenario in args.scenario:
        for checker in (*benchmarks, *classes):
            checker.check_scenario(scenario)
    for cls in classes:
        for train in trains.values():
            cls.check_train(train)
    check_device(args.device)
    for flag in ("train_subset", "test_subset", "n_experiences", "threads", "eval_every", "eval_period",
                 "eval_subset"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.validation_split is not None:
        check_fraction(args.validation_split, "--validation-split")
    check_writable(args.out)

    streams = {}
    for bench in args.benchmark:
        for scenario in args.scenario:
            streams[bench, scenario] = make_stream(
                bench, scenario, stream_seed=args.stream_seed, n_experiences=args.n_experiences,
                data_root=args.data_root, download=args.download,
                train_subset=args.train_subset, test_subset=args.test_subset, backbone=args.backbone,
                class_order=args.class_order, validation_split=args.validation_split,
            )
    configs = [
        RunConfig(benchmark=bench, scenario=scenario, strategy=cls.name, strategy_ref=strategy_ref(cls),
                  params=params[cls.name], seed=seed,
                  stream_seed=args.stream_seed, n_experiences=args.n_experiences, train_subset=args.train_subset,
                  test_subset=args.test_subset, train=trains[bench], eval_every=args.eval_every,
                  backbone=args.backbone, class_order=args.class_order, eval_period=args.eval_period,
                  eval_subset=args.eval_subset, validation_split=args.validation_split)
        for bench in args.benchmark for scenario in args.scenario for cls in classes for seed in args.seeds
    ]
    return configs, streams


def format_leaderboard(board: pd.DataFrame) -> str:
    """The leaderboard as a readable table: mean ± SEM of the headline metrics, the label, and for a configuration
    with failed runs its "2/3 ok" status; under it each configuration's first failure and a footnote per metric that
    is n/a in a scenario shown (tables.NOT_APPLICABLE)."""
    if board.empty:
        return "(no finished runs)"
    # format_mean_sem leaves out the metrics the board lacks: acc_taw (class-IL), min_acc and wc_acc (curves)
    view = tables.format_mean_sem(board, metrics=["acc", "acc_taw", "min_acc", "wc_acc", "bwt", "forgetting", "fwt",
                                                  "la", "train_s"])
    # The label recorded with the runs (tables.labels_of): printing a folder's leaderboard never imports a strategy.
    if "label" in board.columns:
        view["params"] = board["label"]
    if {"status", "n_ok", "n_runs"} <= set(board.columns):
        view.insert(view.columns.get_loc("n_seeds"), "status", [
            "ok" if status == "ok" else f"{status}: {ok}/{n} ok"
            for status, ok, n in zip(board["status"], board["n_ok"], board["n_runs"], strict=True)])
    if "published" in board.columns and board["published"].notna().any():
        view["published"] = [f"{v:.3f}" if v == v else "" for v in board["published"]]
        view["diff"] = [f"{v:+.3f}" if v == v else "" for v in board["diff"]]
        view["reproduced"] = board["reproduced"]
    lines = [view.drop(columns=["config_id"]).to_string(index=False)]
    if "failure" in board.columns and (board["failure"].fillna("") != "").any():
        lines.append("\nfailures (first failed run of each configuration):")
        for row in board[board["failure"].fillna("") != ""].itertuples(index=False):
            lines.append(f"  {row.benchmark}/{row.scenario} {row.strategy} {getattr(row, 'label', row.params)}: "
                         f"{row.n_failed}/{row.n_runs} failed, {row.failure}")
    notes = tables.not_applicable_notes(board)
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def versions() -> dict:
    return {"clbench": clbench.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "python": platform.python_version()}


def cmd_run(args) -> int:
    from clbench.results.store import ResultStore
    from clbench.runners import loop

    configs, streams = _resolve_run(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    store = ResultStore(args.out)
    done = store.finished_run_ids()
    todo = [c for c in configs if c.run_id not in done]
    if len(todo) < len(configs):
        print(f"{len(configs) - len(todo)} of {len(configs)} runs already finished in {args.out}; skipping them")
    failed = 0
    bar = tqdm(todo, desc="runs", unit="run", disable=args.quiet)
    for config in bar:
        bar.set_postfix_str(f"{config.benchmark}/{config.scenario}/{config.strategy}/seed {config.seed}")
        result = loop.run(config, streams[config.benchmark, config.scenario], device=args.device,
                          progress=not args.quiet)
        failed += not _record(store, result, args.device)
    return _finish(store, args, failed)


def _record(store, result, device: str) -> bool:
    """Append a finished run to the store; report a failure. True when the run succeeded."""
    from clbench.runners.record import journal_entry

    store.append_entry(journal_entry(result, versions=versions(), device=device))
    from clbench.runners.loop import learned_nothing

    warning = learned_nothing(result)
    if warning:
        tqdm.write(warning, file=sys.stderr)
    if result.status != "ok":
        cfg = result.config
        tqdm.write(f"run {cfg.run_id} ({cfg.strategy}, seed {cfg.seed}) failed: {result.error}")
    return result.status == "ok"


def _finish(store, args, failed: int) -> int:
    """Derive the tables (and plots), print the leaderboard; the exit code says whether any run failed."""
    summary, board = store.write_derived()
    if not args.no_plots:
        _plot(store, summary, board)
    print(format_leaderboard(board))
    print(f"\ntables in {args.out}/: runs.csv evals.csv costs.csv summary.csv leaderboard.csv"
          + ("" if args.no_plots else " plots/"))
    if failed:
        print(f"{failed} run(s) failed; see the error column of runs.csv", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


def _plot(store, summary, board, fmt: str = "png"):
    from clbench.results.plots import plot_output_dir

    return plot_output_dir(store.evals(), summary, board, store.root, fmt=fmt, curves_df=store.curves())


def _existing_store(path: Path):
    from clbench.results.store import ResultStore

    if not (path / "runs.csv").is_file() and not (path / ResultStore.JOURNAL).is_file():
        raise UsageError(f"{str(path)!r} is not a clbench output folder (no runs.jsonl or runs.csv); pass a folder "
                         "written by `clbench run --out` or `clbench sweep --out`")
    return ResultStore(path)


def _phase_summary(stores, split: str, phase: str, dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The merged summary on `split` and the merged runs (failed ones too) of the runs of one phase: final runs, or a
    tuned sweep's search; UsageError for an unknown split or a validation summary with no run."""
    from clbench.results.store import merge_runs, merge_summaries

    if split not in tables.SPLITS:
        raise unknown_choice("split (--split)", split, tables.SPLITS)
    summary = merge_summaries([s.summary(split=split) for s in stores])  # each run once, in canonical row order
    runs = merge_runs([s.runs() for s in stores])
    phases = dict(zip(runs["run_id"], tables.phases_of(runs), strict=True))
    summary = summary[summary["run_id"].map(phases).fillna("final") == phase]
    runs = runs[tables.phases_of(runs) == phase]
    if split == "val" and summary.empty:
        raise UsageError(f"no {phase} run in {', '.join(map(str, dirs))} has validation evaluations; make them with "
                         "`clbench run --validation-split F` (or a sweep's [tune])")
    return summary, runs


def cmd_leaderboard(args) -> int:
    from clbench.results.store import write_csv

    stores = [_existing_store(d) for d in args.dirs]
    _check_output_file(args.output, args.dirs)
    from clbench.presets import compare

    if args.phase not in tables.PHASES:
        raise unknown_choice("phase (--phase)", args.phase, tables.PHASES)
    if args.phase == "tune":  # the search was evaluated on the validation set only
        args.split = "val"
    summary, runs = _phase_summary(stores, args.split, args.phase, args.dirs)
    published = pd.concat([s.published() for s in stores], ignore_index=True).drop_duplicates()
    unpaired = None
    if args.l2metrics:
        from clbench.results.experts import with_lifelong_metrics

        evals = pd.concat([s.evals() for s in stores], ignore_index=True).drop_duplicates(
            ["run_id", "step", "eval_exp", "metric", "split"])
        curves = pd.concat([s.curves() for s in stores], ignore_index=True).drop_duplicates(
            ["run_id", "train_exp", "exp_step", "eval_exp", "metric"])
        summary, unpaired = with_lifelong_metrics(summary, evals, curves)
    if args.split == "val":  # the runs without a validation set are not this leaderboard's
        runs = runs[runs["run_id"].isin(set(summary["run_id"])) | (runs["status"] != "ok")]
    board = tables.with_selected_by(compare(tables.leaderboard(summary, runs), published), runs)
    if args.split == "val":
        board.insert(board.columns.get_loc("status"), "split", "val")
    fmt = _board_format(args)
    if fmt == "csv":
        write_csv(board, args.output)
    else:  # a paper-ready table of one metric
        _write_table(board, fmt, args.metric or "acc", args.output)
    if args.split == "val":
        print("metrics on the validation split (evals.csv split 'val'), not on the test sets")
    print(format_leaderboard(board))
    if unpaired:
        print(f"\n--l2metrics: {unpaired} run(s) have no `separate` run with the same benchmark, stream, settings and "
              "seed; their lifelong-learning columns are empty (run `--strategy separate --scenario task` with the "
              "same settings)")
    return 0


def _board_format(args) -> str:
    """csv, markdown or latex: --format, else what the extension of -o implies (exports.resolve_format)."""
    from clbench.results.exports import resolve_format

    fmt = resolve_format(args.output, args.format)
    if fmt == "csv" and args.metric is not None:
        raise UsageError("--metric chooses the metric of a markdown or latex table; a CSV leaderboard has every metric")
    return fmt


def _write_table(board: pd.DataFrame, fmt: str, metric: str, output: Path) -> None:
    """The leaderboard pivoted into a Markdown or LaTeX table (clbench.results.exports), written in one step."""
    from clbench.results import exports
    from clbench.results.store import write_atomic

    render = exports.to_markdown if fmt == "markdown" else exports.to_latex
    text = render(board, metric=metric)
    write_atomic(output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def cmd_plot(args) -> int:
    from clbench.results.plots import FORMATS

    fmt = args.format.lower().removeprefix(".")
    if fmt not in FORMATS:  # before anything is read or written
        raise unknown_choice("plot format (--format)", args.format, FORMATS)
    store = _existing_store(args.dir)
    summary, board = store.write_derived()
    for path in _plot(store, summary, board, fmt):
        print(path)
    return 0


def cmd_report(args) -> int:
    from clbench.results.report import write_report

    store = _existing_store(args.dir)
    output = args.output or args.dir / "report.html"
    _check_output_file(output, [args.dir])
    print(write_report(store, output))
    return 0


def cmd_compare(args) -> int:
    from clbench.results.compare import compare, format_comparison, ranks_path
    from clbench.results.store import write_csv

    stores = [_existing_store(d) for d in args.dirs]
    outputs = [] if args.output is None else [args.output, ranks_path(args.output)]
    for path in outputs:
        _check_output_file(path, args.dirs)
    summary, runs = _phase_summary(stores, args.split, "final", args.dirs)  # runs: stream seeds and settings
    result = compare(summary, args.reference, metric=args.metric, runs=runs)  # every check before any write
    if outputs:
        write_csv(result.table, outputs[0])
        write_csv(result.ranks, outputs[1])
    print(format_comparison(result))
    if outputs:
        print(f"\nwritten: {outputs[0]} (comparisons), {outputs[1]} (average ranks)")
    return 0


# What an output folder is read from: a leaderboard or report written over one of them would lose runs.
INPUT_FILES = ("runs.jsonl", "runs.csv", "evals.csv", "costs.csv", "summary.csv", "published.csv")


def _check_output_file(output: Path, dirs) -> None:
    """-o of a command that reads `dirs`: a writable file name (not a folder) that is none of their input files."""
    from clbench.results.store import check_writable

    check_writable(output, file=True, flag="-o")
    _check_not_an_input(output, dirs)


def _check_not_an_input(output: Path, dirs) -> None:
    target = os.path.realpath(output)
    for folder in dirs:
        for name in INPUT_FILES:
            if target == os.path.realpath(Path(folder) / name):
                raise UsageError(f"-o {str(output)!r} is the {name} that {str(folder)!r} is read from; give another "
                                 "file name")


def _pairs(groups: list[list[str]], flag: str) -> dict[str, str]:
    out = {}
    for item in (item for group in groups for item in group):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{flag} expects NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _sweep_spec(args):
    """The sweep's spec (a file's or a preset's) with the command line's replacements; and the preset, if any."""
    from clbench.presets import PREFIX, get_preset
    from clbench.runners.sweep import SETTINGS, check_seeds, read_sweep_file

    preset = get_preset(args.file) if args.file.startswith(PREFIX) else None
    spec = copy.deepcopy(preset.sweep) if preset else read_sweep_file(Path(args.file))
    if args.seeds is not None:
        check_seeds(args.seeds, "--seeds")
        spec["seeds"] = args.seeds
    overrides = {}
    for key, text in _pairs(args.setting, "--setting").items():
        if key not in SETTINGS:
            raise unknown_choice("setting in --setting", key, SETTINGS)
        overrides[key] = _setting_value(SETTINGS[key], text)
    if overrides:  # they win over the file's settings and over every strategy's own
        spec["settings"] = {**spec.get("settings", {}), **overrides}
        for entry in spec.get("strategies", []):
            if isinstance(entry, dict) and isinstance(entry.get("settings"), dict):
                entry["settings"] = {k: v for k, v in entry["settings"].items() if k not in overrides}
    benchmark_map = _pairs(args.benchmark_map, "--benchmark-map")
    if benchmark_map:
        benchmarks = spec.get("benchmarks") if isinstance(spec.get("benchmarks"), list) else []
        for source in benchmark_map:
            if source not in benchmarks:
                raise unknown_choice("benchmark to map (the sweep's benchmarks)", source, benchmarks)
        spec["benchmarks"] = [benchmark_map.get(b, b) for b in benchmarks]
    return spec, preset, benchmark_map


def _setting_value(kind: type, text: str):
    """A --setting value read as a Python literal, then as the setting's type reads it: a float setting takes
    float()'s words (nan, inf reach the range checks instead of reading as text), a text setting its text as typed
    (a folder named 123), a flag TOML's true/false."""
    value = _literal(text)
    if kind is float and isinstance(value, str):
        try:
            return float(text)
        except ValueError:
            return value
    if kind is str and not isinstance(value, str):
        return text
    if kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def cmd_sweep(args) -> int:
    import importlib.util

    from clbench.results.store import ResultStore, check_writable
    from clbench.runners.sweep import (
        EXECUTORS,
        build_streams,
        check_device,
        check_importable_by_ray,
        sweep_from_dict,
    )

    spec, preset, benchmark_map = _sweep_spec(args)
    sweep = sweep_from_dict(spec, preset.name if preset else str(args.file))
    if args.executor not in EXECUTORS:
        raise unknown_choice("executor", args.executor, EXECUTORS)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.address is not None and args.executor != "ray":
        raise UsageError(f"--address {args.address!r} names a Ray cluster; it needs --executor ray")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--executor ray needs Ray: pip install 'clbench[ray]'")
    if args.out is None and not args.dry_run:
        raise UsageError("clbench sweep needs --out DIR (or --dry-run)")
    # os.path, not pathlib: an --out the OS refuses to look up (too long a name) answers False instead of raising
    store = ResultStore(args.out) if args.out is not None and os.path.isdir(args.out) else None
    done = store.finished_run_ids() if store else set()
    todo = [c for c in sweep.configs if c.run_id not in done]
    if args.dry_run:
        for c in sweep.configs:
            mark = "done" if c.run_id in done else "todo"
            phase = "tune  " if c.phase == "tune" else ""
            print(f"{mark}  {c.run_id}  {phase}{c.benchmark}/{c.scenario}/{c.strategy} seed {c.seed}  "
                  f"{params_label(c.strategy_class(), c.params)}")
        print(f"{len(sweep.configs)} runs, {len(sweep.configs) - len(todo)} done, {len(todo)} to run")
        if sweep.tune:
            finals = sum(len(sweep.seeds) for _ in sweep.cells())
            print(f"then {finals} final runs: each method's selected configuration on seeds "
                  f"{' '.join(map(str, sweep.seeds))} ({sweep.tune.criterion})")
        return 0
    check_writable(args.out)
    if args.executor == "ray":
        check_importable_by_ray(todo)
    if not (args.executor == "ray" and args.address):  # a Ray cluster's workers bring their own devices and data
        check_device(sweep.device)
        # Every stream the runs read, built before anything is written (missing data leaves no published.csv); the
        # single local worker then runs from them, worker processes build their own.
        build_streams(sweep, todo, keep=args.executor == "local" and args.workers == 1)
    store = ResultStore(args.out)
    if preset:
        store.add_published(preset.published_table(benchmark_map))
    failed = _execute_sweep(sweep, store, args, todo)
    return _finish(store, args, failed)


def _execute_sweep(sweep, store, args, todo) -> int:
    """Run a sweep's `todo` runs into `store` and, for a tuned sweep, select each method's configuration from the
    tuning runs' validation summary and run the final ones; returns how many runs (or selections) failed."""
    from clbench.runners.sweep import build_streams, execute, select

    if len(todo) < len(sweep.configs):
        print(f"{len(sweep.configs) - len(todo)} of {len(sweep.configs)} runs already finished in {args.out}; "
              "skipping them")

    def run_all(configs):
        return execute(sweep, configs, lambda result: _record(store, result, sweep.device), executor=args.executor,
                       workers=args.workers, address=args.address, quiet=args.quiet,
                       checkpoint_dir=args.out / "checkpoints")

    failed = run_all(todo)
    if sweep.tune:  # the tuning runs are in the journal: select, then run the final configurations
        selection, problems = select(sweep, store.summary(split="val"))
        for line in problems:
            print(f"[tune] {line}", file=sys.stderr)
        finals = sweep.final_configs(selection)
        final_todo = [c for c in finals if c.run_id not in store.finished_run_ids()]
        print(f"[tune] selected {len(selection)} configuration(s) ({sweep.tune.criterion}); "
              f"{len(finals)} final runs, {len(finals) - len(final_todo)} already finished")
        if not (args.executor == "ray" and args.address):
            build_streams(sweep, final_todo, keep=args.executor == "local" and args.workers == 1)
        failed += run_all(final_todo) + len(problems)
    return failed


def _parse_grid(items: list[list[str]], classes) -> dict[str, dict]:
    """--grid [STRATEGY.]NAME=[V1, V2] items → per class name its grid (lists of Python literals)."""
    out: dict[str, dict] = {cls.name: dict(getattr(cls, "tune_grid", {}) or {}) for cls in classes}
    for item in (i for group in items for i in group):
        name, sep, text = item.partition("=")
        try:
            values = ast.literal_eval(text) if sep else None
        except (ValueError, SyntaxError):
            values = None
        if not isinstance(values, list) or not values:
            raise UsageError(f"--grid {item!r} must be NAME=[V1, V2, ...], a non-empty list of Python literals")
        target, _, key = name.rpartition(".")
        chosen = [cls for cls in classes if (not target or cls.name == target) and key in cls.hyperparameters()]
        if not chosen:
            known = sorted({h for cls in classes for h in cls.hyperparameters()})
            raise unknown_choice(f"--grid hyperparameter of {', '.join(c.name for c in classes)}", key, known)
        for cls in chosen:
            out[cls.name][key] = values
    return out


def _default_baselines(suite: str) -> Path | None:
    """A source checkout's committed baseline runs of the suite (results/<suite>/), if there are any."""
    folder = Path(clbench.__file__).resolve().parents[1] / "results" / suite
    return folder if (folder / "runs.jsonl").is_file() or (folder / "runs.csv").is_file() else None


def cmd_bench(args) -> int:
    from clbench.results import exports
    from clbench.results.compare import compare, holm
    from clbench.results.report import write_report
    from clbench.results.store import ResultStore, check_writable, write_atomic, write_csv
    from clbench.runners.sweep import build_streams, check_device, resolve_strategy, sweep_from_dict
    from clbench.suites import load_suite

    suite = load_suite(args.suite)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    classes = list({cls.name: cls for cls in map(resolve_strategy, args.strategies)}.values())
    clash = [cls.name for cls in classes if cls.name in suite.baselines]
    if clash:
        raise UsageError(f"{', '.join(clash)} is a baseline of suite {suite.name!r}; bench a strategy of your own "
                         f"(baselines: {', '.join(suite.baselines)})")
    raw = parse_set_items(args.set, classes)
    grids = {} if args.no_tune else _parse_grid(args.grid, classes)
    entries = [{"name": name, "params": raw[cls.name], **({"grid": grids[cls.name]} if grids.get(cls.name) else {})}
               for name, cls in zip(dict.fromkeys(args.strategies), classes, strict=False)]
    baseline_sweeps = [sweep_from_dict(spec, f"suite {suite.name}") for spec in suite.sweep_specs(
        suite.spec["strategies"])]
    own_sweeps = [sweep_from_dict(spec, f"suite {suite.name}, {', '.join(args.strategies)}")
                  for spec in suite.sweep_specs(entries, tune=not args.no_tune)]
    if classes and not own_sweeps:
        raise UsageError(f"{', '.join(args.strategies)} supports none of suite {suite.name!r}'s scenarios")
    baselines = args.baselines or _default_baselines(suite.name)
    check_writable(args.out)
    for sweep in (*baseline_sweeps, *own_sweeps):
        check_device(sweep.device)
        build_streams(sweep, sweep.configs, keep=args.workers == 1)
    store = ResultStore(args.out)
    if baselines is not None and Path(baselines).resolve() != Path(args.out).resolve():
        wanted = set(suite.baselines)  # only the suite's baselines: never another bench's new strategies
        added = store.merge_from(_existing_store(Path(baselines)), keep=lambda run: run["strategy"] in wanted)
        print(f"{added} baseline run(s) reused from {baselines}")
    started = time.perf_counter()
    failed = 0
    for sweep in (*baseline_sweeps, *own_sweeps):
        done = store.finished_run_ids()
        failed += _execute_sweep(sweep, store, args, [c for c in sweep.configs if c.run_id not in done])
    summary, board = store.write_derived()
    names = [cls.name for cls in classes]
    rows = []
    runs = store.runs()
    for baseline in suite.baselines:
        if baseline not in set(summary["strategy"]):
            continue
        table = compare(summary, baseline, runs=runs).table
        rows.append(table[table["strategy"].isin(names)])
    comparison = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if not comparison.empty:  # one family: the new strategies against every baseline
        comparison["p_holm"] = holm(comparison["p_value"].to_numpy())
        comparison["significant"] = comparison["p_holm"] < 0.05
        write_csv(comparison, args.out / "compare.csv")
    for fmt, render in (("md", exports.to_markdown), ("tex", exports.to_latex)):
        text = render(board, metric="acc")
        write_atomic(args.out / f"leaderboard.{fmt}", lambda tmp, text=text: Path(tmp).write_text(text))
    if not args.no_plots:
        _plot(store, summary, board)
    write_report(store, args.out / "report.html")
    print(format_leaderboard(board))
    print(f"\nbench {', '.join(names) or 'the baselines'} on suite {suite.name}: "
          f"{time.perf_counter() - started:.0f} s; tables in {args.out}/: leaderboard.csv leaderboard.md "
          f"leaderboard.tex{' compare.csv' if not comparison.empty else ''} report.html")
    if not comparison.empty:
        better = comparison[comparison["significant"] & (comparison["diff_mean"] > 0)]
        worse = comparison[comparison["significant"] & (comparison["diff_mean"] < 0)]
        for label, part in (("significantly better than", better), ("significantly worse than", worse)):
            for (bench_name, scenario, strategy), g in part.groupby(["benchmark", "scenario", "strategy"]):
                print(f"  {strategy} on {bench_name}/{scenario}: {label} {', '.join(sorted(g['reference']))} "
                      "(paired t-test, Holm over compare.csv)")
    if failed:
        print(f"{failed} run(s) failed; see the error column of runs.csv", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


def cmd_presets(args) -> int:
    from clbench.presets import get_preset, list_presets
    from clbench.runners.sweep import sweep_from_dict

    if args.name is None:
        for preset in list_presets():
            n_runs = len(sweep_from_dict(preset.sweep, preset.name).configs)
            print(f"{preset.name:<30} {n_runs:>4} runs  {len(preset.published):>3} published numbers  {preset.title}")
        print("\nclbench presets NAME shows one; clbench sweep preset:NAME --out DIR runs it")
        return 0
    preset = get_preset(args.name)
    sweep = sweep_from_dict(preset.sweep, preset.name)
    print(f"{preset.name}: {preset.title}\n{preset.citation}\n\n{textwrap.fill(preset.provenance, 118)}\n")
    print(f"{len(sweep.configs)} runs: benchmarks {', '.join(preset.sweep['benchmarks'])}; scenarios "
          f"{', '.join(preset.sweep['scenarios'])}; seeds {preset.sweep['seeds']}; settings {preset.sweep['settings']}")
    for entry in preset.sweep["strategies"]:
        extras = {k: entry[k] for k in ("scenarios", "settings") if k in entry}
        print(f"  {entry['name']:<8} {describe_params(entry['name'], entry.get('params', {}))}  {extras or ''}")
    table = preset.published_table()
    if table.empty:
        print("\nno published numbers")
    else:
        print(f"\npublished (tolerance {preset.tolerance}):")
        print(table[["scenario", "strategy", "match", "metric", "published", "published_sem", "source"]]
              .to_string(index=False))
    return 0


COMMANDS = {
    "list": cmd_list, "run": cmd_run, "leaderboard": cmd_leaderboard, "plot": cmd_plot, "report": cmd_report,
    "sweep": cmd_sweep, "presets": cmd_presets, "compare": cmd_compare, "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    from clbench.errors import DiskFullError

    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"clbench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except DiskFullError as err:  # raised by the writers, which leave the journal as it was: one line, no traceback
        print(f"clbench: error: {err}", file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:
        print("clbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; give it somewhere to go
        return 0


if __name__ == "__main__":
    sys.exit(main())
