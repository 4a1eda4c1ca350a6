"""The `clbench` command line: list, run, leaderboard, plot.

Every piece of user input is checked before any training starts and before anything is written, so a bad value ends
with one message naming it and the valid choices, exit code 2, no traceback and no output folder.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import os
import platform
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import clbench
from clbench.benchmarks.catalog import SCENARIOS, TRAINING_KEYS, benchmark_info, list_benchmarks
from clbench.errors import UsageError, unknown_choice
from clbench.strategies.registry import check_distinct_names, describe_params, params_label, strategy_ref

if TYPE_CHECKING:
    import pandas as pd

    from clbench.strategies.base import Strategy

# torch, pandas and the strategies are imported by the commands that need them: --help, --version and `list` answer
# at once, and the commands that only read a results folder never import torch.

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


def _benchmark_default(key: str) -> str:
    """'default per benchmark: 0.01; split-cifar10, split-cifar100: 0.03': a training setting's defaults (the
    benchmarks' standard settings), the most common value first."""
    by_value: dict = {}
    for info in list_benchmarks():
        by_value.setdefault(info.training[key], []).append(info.name)

    def shown(value) -> str:
        return f"{value:g}" if isinstance(value, (int, float)) else str(value)

    (common, _), *others = sorted(by_value.items(), key=lambda item: -len(item[1]))
    return "default per benchmark: " + "; ".join([shown(common), *(f"{', '.join(names)}: {shown(value)}"
                                                                   for value, names in others)])


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's table as written; wider columns for the option names."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=min(120, shutil.get_terminal_size().columns))


def _add_output(parser, *, bars: str = "bars", out_required: bool = True) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=out_required, type=_output_path, metavar="DIR",
                     help="output folder; finished runs in it are reused and its tables extended"
                          + ("" if out_required else " (required unless --dry-run)"))
    out.add_argument("--no-plots", action="store_true", help="skip writing PNG plots")
    out.add_argument("--quiet", action="store_true", help=f"no progress {bars} or per-run lines; failures and the "
                                                          "final table only")
    out.add_argument("--log", type=_output_path, default=None, metavar="FILE",
                     help="also write the timestamped progress lines (one per finished run, one per phase) to FILE")
    out.add_argument("--tracker", action="append", default=[], dest="trackers", metavar="NAME",
                     help="also log every run to an experiment tracker: tensorboard, wandb or mlflow (repeatable; "
                          "default: none)")


def _add_execution(parser, *, workers: bool) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("execution")
    if workers:
        group.add_argument("--executor", default="local", metavar="local|ray",
                           help="where runs execute: local processes or Ray tasks (default: local)")
        group.add_argument("--workers", type=int, default=1, metavar="N",
                           help="runs at a time (local processes or Ray CPUs; default: 1)")
        group.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    return group


def _add_run_options(run) -> None:
    stream = run.add_argument_group("stream")
    stream.add_argument("--benchmark", nargs="+", required=True, metavar="B",
                        help="one or more named benchmarks (clbench list)")
    stream.add_argument("--scenario", nargs="+", required=True, metavar="S",
                        help=f"one or more of {', '.join(SCENARIOS)}")
    stream.add_argument("--stream-seed", type=int, default=0, metavar="N",
                        help="seed of the class order, permutations, angles and subsets (default: 0)")
    stream.add_argument("--class-order", default="seeded", metavar="seeded|natural",
                        help="split benchmarks: drawn from the stream seed, or 0/1, 2/3, ... (default: seeded)")
    stream.add_argument("--n-experiences", type=int, default=None, metavar="N",
                        help="number of experiences (default: the benchmark's, clbench list)")
    stream.add_argument("--train-subset", type=int, default=None, metavar="N",
                        help="at most N training samples per experience, class-balanced (default: all)")
    stream.add_argument("--test-subset", type=int, default=None, metavar="N",
                        help="at most N test samples per experience, class-balanced (default: all)")
    stream.add_argument("--validation-split", type=float, default=None, metavar="F",
                        help="hold out a class-balanced fraction F of each experience's training data (fixed by the "
                             "stream seed) as a validation set, evaluated beside the test set (evals.csv split "
                             "'val'; default: none)")
    stream.add_argument("--backbone", default=None, metavar="NAME",
                        help="a reference backbone instead of the benchmark's: mlp100, mlp400, mlp1000, "
                             "resnet18-reduced (default: the benchmark's)")
    stream.add_argument("--data-root", default=None, metavar="DIR",
                        help="dataset folder (default: $CLBENCH_DATA or a user cache)")
    stream.add_argument("--download", action="store_true", help="download missing datasets through torchvision")

    method = run.add_argument_group("strategies")
    method.add_argument("--strategy", nargs="+", required=True, metavar="X",
                        help="registered names (clbench list) or package.module:Class")
    method.add_argument("--set", nargs="+", action="append", default=[], metavar="[STRATEGY.]NAME=VALUE",
                        help="hyperparameters as Python literals; prefix with a strategy name to target only it "
                             "(default: each strategy's defaults)")
    method.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="N", help="training seeds (default: 0)")
    method.add_argument("--strict", action="store_true",
                        help="refuse the whole command if a strategy does not support a scenario (default: skip "
                             "those pairs with a notice)")

    # None: the benchmark's standard setting (BenchmarkInfo.training; `clbench list`, the epilog of run --help)
    train = run.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=None, metavar="N",
                       help=f"passes over each experience; {_benchmark_default('epochs')}")
    train.add_argument("--iterations", type=int, default=None, metavar="N",
                       help="optimizer steps per experience instead of epochs, reshuffling at every pass "
                            "(default: epochs)")
    train.add_argument("--batch-size", type=int, default=None, metavar="N", help=_benchmark_default("batch_size"))
    train.add_argument("--lr", type=float, default=None, metavar="F", help=_benchmark_default("lr"))
    train.add_argument("--momentum", type=float, default=None, metavar="F",
                       help=f"SGD momentum; {_benchmark_default('momentum')} (0 with another optimizer than the "
                            "benchmark's)")
    train.add_argument("--weight-decay", type=float, default=0.0, metavar="F", help="L2 weight decay (default: 0)")
    train.add_argument("--optimizer", default=None, metavar="sgd|adam", help=_benchmark_default("optimizer"))
    train.add_argument("--optimizer-state", default="reset", metavar="reset|keep",
                       help="a new optimizer at every experience, or one for the whole run (default: reset)")
    train.add_argument("--normalize", default="standardize", metavar="standardize|none",
                       help="backbone input: standardized with the dataset's mean and std, or raw pixels "
                            "(default: standardize)")
    train.add_argument("--drop-last", action="store_true", help="drop each pass's last incomplete mini-batch")

    evaluation = run.add_argument_group("evaluation")
    evaluation.add_argument("--eval-batch-size", type=int, default=2048, metavar="N",
                            help="mini-batch of the evaluations (default: 2048)")
    evaluation.add_argument("--eval-every", type=int, default=1, metavar="K",
                            help="full accuracy rows every K experiences and after the last; in between only R[i,i] "
                                 "and R[i,i+1] (default: 1)")
    evaluation.add_argument("--eval-period", type=int, default=None, metavar="N",
                            help="continual evaluation: every N optimizer steps (and each experience's first and "
                                 "last) evaluate the seen experiences and the next one on --eval-subset test "
                                 "samples; rows go to curves.csv (default: boundaries only)")
    evaluation.add_argument("--eval-subset", type=int, default=1000, metavar="M",
                            help="test samples per experience (class-balanced, fixed by the stream seed) of the "
                                 "continual evaluation (default: 1000)")

    _add_output(run)
    execution = _add_execution(run, workers=False)
    execution.add_argument("--device", default="cpu", metavar="cpu|cuda|mps",
                           help="where to train (default: cpu)")
    execution.add_argument("--threads", type=int, default=None, metavar="N",
                           help="torch intra-op threads (default: torch's choice)")


def _input_dirs(parser) -> None:
    parser.add_argument("dirs", nargs="+", type=_input_path, metavar="DIR",
                        help="output folders of run, sweep or bench")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clbench", description=clbench.__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"clbench {clbench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs):
        description = help_text.replace("%%", "%")  # help is %-formatted by argparse, a description is not
        return sub.add_parser(name, help=help_text, description=description[0].upper() + description[1:] + ".",
                              formatter_class=_HelpFormatter, **kwargs)

    listing = command("list", "benchmarks (with scenarios and training settings) and strategies (with "
                              "hyperparameters and defaults)")
    listing.add_argument("--strategy", default=None, metavar="X",
                         help="describe one strategy: a registered name or package.module:Class")

    run = command("run", "train strategies through streams and record every accuracy", epilog=_training_epilog())
    _add_run_options(run)

    sweep = command("sweep", "run the product of a sweep file (TOML) or a paper preset; a rerun skips finished runs")
    sweep.add_argument("file", metavar="FILE.toml|preset:NAME", help="a sweep file, or preset:NAME (clbench presets)")
    what = sweep.add_argument_group("sweep")
    what.add_argument("--seeds", nargs="+", type=int, default=None, metavar="N",
                      help="replace the file's seeds (default: the file's)")
    what.add_argument("--setting", nargs="+", action="append", default=[], metavar="NAME=VALUE",
                      help="replace a runner setting everywhere in the file (e.g. iterations=100 train_subset=500)")
    what.add_argument("--benchmark-map", nargs="+", action="append", default=[], metavar="FROM=TO",
                      help="run another benchmark in place of one (e.g. split-mnist=split-fmnist); published numbers "
                           "are then shown but not judged")
    what.add_argument("--dry-run", action="store_true", help="list the runs and how many are done; run nothing")
    _add_output(sweep, bars="bar", out_required=False)
    _add_execution(sweep, workers=True)

    bench = command("bench", "run new strategies through a suite's streams, tuned with its protocol, and compare them "
                             "with its tuned baselines")
    bench.add_argument("strategies", nargs="*", metavar="STRATEGY",
                       help="registered names or package.module:Class; none: build the suite's baselines only")
    protocol = bench.add_argument_group("protocol")
    protocol.add_argument("--suite", required=True, metavar="NAME", help="digits, standard, cifar (clbench/suites) or "
                                                                         "a suite FILE.toml")
    protocol.add_argument("--set", nargs="+", action="append", default=[], metavar="[STRATEGY.]NAME=VALUE",
                          help="fixed hyperparameters of the new strategies (default: their defaults)")
    protocol.add_argument("--grid", nargs="+", action="append", default=[], metavar="[STRATEGY.]NAME=[V1,V2,...]",
                          help="the values the suite's [tune] protocol searches for a new strategy (default: the "
                               "class's `tune_grid`, else nothing to tune)")
    protocol.add_argument("--no-tune", action="store_true", help="run the new strategies with the --set values only")
    protocol.add_argument("--baselines", type=_input_path, default=None, metavar="DIR",
                          help="a folder holding the suite's baseline runs, merged in and reused (default: the "
                               "committed results/<suite>/ of a source checkout, when there is one)")
    _add_output(bench)
    _add_execution(bench, workers=True)

    board = command("leaderboard", "merge output folders into one leaderboard: CSV, or a paper-ready Markdown or LaTeX "
                                   "table")
    _input_dirs(board)
    board.add_argument("-o", "--output", type=_output_path, required=True, metavar="FILE",
                       help="the file to write; its extension (.csv, .md, .markdown, .tex) sets the format")
    board.add_argument("--format", default=None, metavar="csv|markdown|latex",
                       help="csv (every column), or markdown / latex: one row per configuration, one column per "
                            "benchmark × scenario, best in bold (default: from the extension of -o)")
    board.add_argument("--metric", default=None, metavar="M",
                       help="the metric of a markdown or latex table (default: acc)")
    board.add_argument("--phase", default="final", metavar="final|tune",
                       help="final runs (a tuned sweep's rows say how they were selected) or the tuning runs of a "
                            "sweep's [tune] search, on their validation set (default: final)")
    board.add_argument("--split", default="test", metavar="test|val",
                       help="the evaluations the metrics read: test, or val, the validation set of runs made with "
                            "--validation-split (default: test)")
    board.add_argument("--l2metrics", action="store_true",
                       help="pair each run with its `separate` run (same stream, settings and seed) and add "
                            "l2metrics' lifelong-learning metrics (docs/L2METRICS.md)")

    compare = command("compare", "each configuration minus a reference strategy's, paired by seed: 95%% CI, paired "
                                 "t-test, Holm-corrected p; average ranks over benchmarks")
    _input_dirs(compare)
    compare.add_argument("--reference", required=True, metavar="STRATEGY[:LABEL]",
                         help="the strategy every configuration is compared with, per benchmark and scenario; "
                              "STRATEGY:LABEL picks one of its configurations (e.g. replay:mem_size=1000)")
    compare.add_argument("--metric", default="acc", metavar="M", help="a summary metric (default: acc)")
    compare.add_argument("--split", default="test", metavar="test|val",
                         help="the evaluations compared: test, or val (runs made with --validation-split; default: "
                              "test)")
    compare.add_argument("-o", "--output", type=_output_path, default=None, metavar="FILE",
                         help="the comparisons as CSV; the average ranks go beside it as <stem>_ranks.csv "
                              "(default: print only)")

    plot = command("plot", "(re)draw the plots of an output folder into DIR/plots: per run, and per benchmark × "
                           "scenario the average-accuracy curves and the acc bars")
    plot.add_argument("dir", type=_input_path, metavar="DIR")
    plot.add_argument("--format", default="png", metavar="png|pdf|svg",
                      help="file format of the figures (default: png)")

    report = command("report", "one self-contained HTML page of an output folder: sortable leaderboard, accuracy "
                               "matrices and curves, costs")
    report.add_argument("dir", type=_input_path, metavar="DIR")
    report.add_argument("-o", "--output", type=_output_path, default=None, metavar="FILE",
                        help="the HTML file to write (default: DIR/report.html)")

    presets = command("presets", "named sweeps that follow a paper's protocol, with its published numbers")
    presets.add_argument("name", nargs="?", default=None, help="show one preset: protocol, provenance, numbers")

    completion = command("completion", "print a shell completion script: clbench completion bash > "
                                       "~/.local/share/bash-completion/completions/clbench")
    completion.add_argument("shell", metavar="bash|zsh", help="the shell to complete in")
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
                raise unknown_choice("strategy", target, by_name, where="in --set")
            params[target][name] = value
            continue
        owners = [s for s, cls in by_name.items() if name in cls.hyperparameters()]
        if not owners:
            valid = sorted({h for cls in strategies for h in cls.hyperparameters()}) or ["(none)"]
            raise unknown_choice("hyperparameter", name, valid, where=f"for {', '.join(by_name)} in --set")
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
    from clbench.strategies.registry import strategy_names

    if args.strategy is not None:
        _describe_strategy(args.strategy)
        return 0
    print("Benchmarks")
    for info in list_benchmarks():
        print(f"  {info.name:<18} scenarios: {', '.join(info.scenarios):<14} experiences: "
              f"{info.default_n_experiences:<3} backbone: {info.backbone}")
        print(f"  {'':<18} training: {info.training_text()}")
    print("\nStrategies")
    for name in strategy_names():
        entry, _, _ = _strategy_description(name)
        print(f"  {name:<18} scenarios: {', '.join(sorted(entry.scenarios))}")
        for hp in entry.hyperparameters.values():
            print(f"      {hp.name} = {hp.default!r}  ({hp.type_name})")
    print("\nclbench list --strategy NAME (or package.module:Class) describes one")
    return 0


def _strategy_description(name: str):
    """(StrategyEntry, where the strategy comes from, its tune_grid): a built-in's read from its source (no torch),
    any other strategy's from its class."""
    from clbench.strategies.catalog import StrategyEntry, builtin_entry, first_paragraph
    from clbench.strategies.registry import BUILTIN_MODULES, strategy_ref

    if name in BUILTIN_MODULES:
        return builtin_entry(name), BUILTIN_MODULES[name], None
    from clbench.runners.sweep import resolve_strategy

    cls = resolve_strategy(name)
    summary = first_paragraph(inspect.cleandoc(cls.__dict__.get("__doc__") or ""))  # not a base class's
    entry = StrategyEntry(cls.name, frozenset(cls.scenarios), cls.hyperparameters(), summary)
    return entry, strategy_ref(cls), getattr(cls, "tune_grid", None)


def _describe_strategy(name: str) -> None:
    """One strategy in full: display name, where it comes from, summary, scenarios, hyperparameters, tune grid."""
    entry, ref, grid = _strategy_description(name)
    print(f"{entry.name}  ({ref})")
    if entry.summary:
        print(textwrap.fill(entry.summary, 118, initial_indent="  ", subsequent_indent="  "))
    print(f"  scenarios: {', '.join(sorted(entry.scenarios))}")
    print("  hyperparameters (--set NAME=VALUE):" if entry.hyperparameters else "  hyperparameters: none")
    for hp in entry.hyperparameters.values():
        print(f"    {hp.name} = {hp.default!r}  ({hp.type_name})")
    if grid:
        print(f"  tune_grid (clbench bench searches it): {grid}")


def _resolve_run(args):
    """Check every input and build the run configs and streams; raises UsageError before anything is written."""
    from clbench.benchmarks import make_stream
    from clbench.benchmarks.generators import check_fraction
    from clbench.results.store import check_writable
    from clbench.runners.config import RunConfig
    from clbench.runners.sweep import check_device, check_finite_params, check_seeds, resolve_strategy
    from clbench.strategies import TrainConfig

    benchmarks = [benchmark_info(name) for name in args.benchmark]
    for scenario in args.scenario:
        if scenario not in SCENARIOS:
            raise unknown_choice("scenario", scenario, SCENARIOS)
    resolved = [resolve_strategy(name) for name in args.strategy]
    check_distinct_names(resolved)
    classes = list({cls.name: cls for cls in resolved}.values())
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
    combos, skipped = _supported_combinations(benchmarks, args.scenario, classes, strict=args.strict)
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

    if skipped:  # printed once every input has passed: a refused command says only what is wrong
        print(f"skipping unsupported pairs (--strict refuses them): {'; '.join(skipped)}", file=sys.stderr)
    streams = {}
    for bench, scenario in dict.fromkeys((bench, scenario) for bench, scenario, _ in combos):
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
        for bench, scenario, cls in combos for seed in args.seeds
    ]
    return configs, streams


def _supported_combinations(benchmarks, scenarios, classes, *, strict: bool):
    """The (benchmark, scenario, strategy class) triples to run and a line per unsupported pair left out. With
    `strict`, or when nothing is left, an unsupported pair is refused with its own message (UsageError)."""
    refusals = []
    bench_ok = []
    for info in benchmarks:
        for scenario in scenarios:
            try:
                info.check_scenario(scenario)
                bench_ok.append((info.name, scenario))
            except UsageError as err:
                refusals.append((f"{info.name} × {scenario}", err))
    strategy_ok = {}
    for cls in classes:
        for scenario in scenarios:
            try:
                cls.check_scenario(scenario)
                strategy_ok[cls.name, scenario] = True
            except UsageError as err:
                refusals.append((f"{cls.name} × {scenario}", err))
    combos = [(bench, scenario, cls) for bench, scenario in bench_ok for cls in classes
              if strategy_ok.get((cls.name, scenario))]
    if refusals and (strict or not combos):
        raise refusals[0][1] if strict or len(refusals) == 1 else UsageError(
            "no benchmark × scenario × strategy combination is supported: "
            + "; ".join(str(err) for _, err in refusals))
    return combos, [pair for pair, _ in refusals]


def format_leaderboard(board: pd.DataFrame) -> str:
    """The leaderboard as a readable table: mean ± SEM of the headline metrics, the label, and for a configuration
    with failed runs its "2/3 ok" status; under it each configuration's first failure and a footnote per metric that
    is n/a in a scenario shown (tables.NOT_APPLICABLE)."""
    from clbench.metrics import tables

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
    import numpy as np
    import pandas as pd
    import torch
    return {"clbench": clbench.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "python": platform.python_version()}


def cmd_run(args) -> int:
    import torch

    from clbench.results.store import ResultStore
    from clbench.runners import loop
    from clbench.runners.progress import RunProgress, announce
    from clbench.runners.trackers import Trackers, check_trackers

    check_trackers(args.trackers)
    configs, streams = _resolve_run(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    store = ResultStore(args.out)
    done = store.finished_run_ids()
    todo = [c for c in configs if c.run_id not in done]
    if len(todo) < len(configs):
        announce(f"{len(configs) - len(todo)} of {len(configs)} runs already finished in {args.out}; skipping them")
    failed = 0
    with Trackers(args.trackers, args.out) as trackers, \
            RunProgress(len(todo), quiet=args.quiet) as progress:  # bars in a terminal, else one line per finished run
        for config in todo:
            progress.started(config)
            result = loop.run(config, streams[config.benchmark, config.scenario], device=args.device,
                              progress=not args.quiet)
            failed += not _record(store, result, args.device, trackers)
            progress.finished(result)
    return _finish(store, args, failed)


def _record(store, result, device: str, trackers=None) -> bool:
    """Append a finished run to the store; warn about a run that learned nothing (a failure is told by the run's
    progress line, progress.RunProgress). True when the run succeeded."""
    from clbench.runners.loop import learned_nothing
    from clbench.runners.progress import warn
    from clbench.runners.record import journal_entry

    store.append_entry(entry := journal_entry(result, versions=versions(), device=device))
    if trackers:  # --tracker / the sweep setting trackers: the driver logs what it recorded
        trackers.log(result, entry)
    warning = learned_nothing(result)
    if warning:
        warn(warning)
    return result.status == "ok"


def _finish(store, args, failed: int) -> int:
    """Derive the tables (and plots), print the leaderboard; the exit code says whether any run failed."""
    from clbench.runners.progress import log_file_only, phase

    phase(f"writing tables in {args.out}")
    summary, board = store.write_derived()
    if not args.no_plots:
        phase(f"writing the plots of {len(summary)} run(s) into {args.out / 'plots'}")
        phase(f"wrote {len(_plot(store, summary, board))} plots")
    print(format_leaderboard(board))
    print(f"\ntables in {args.out}/: runs.csv evals.csv costs.csv summary.csv leaderboard.csv"
          + ("" if args.no_plots else " plots/"))
    log_file_only(f"done: tables in {args.out}/")
    if failed:
        print(f"{failed} run(s) failed; see the error column of runs.csv", file=sys.stderr)
        log_file_only(f"{failed} run(s) failed; see the error column of runs.csv")
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
    from clbench.metrics import tables
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
    import pandas as pd

    from clbench.metrics import tables
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
            raise unknown_choice("setting", key, SETTINGS, where="in --setting")
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
    from clbench.runners.trackers import Trackers, check_trackers

    spec, preset, benchmark_map = _sweep_spec(args)
    sweep = sweep_from_dict(spec, preset.name if preset else str(args.file))
    tracker_names = check_trackers([*sweep.trackers, *args.trackers])  # the sweep's setting, then --tracker
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
    with Trackers(tracker_names, args.out) as trackers:
        failed = _execute_sweep(sweep, store, args, todo, trackers)
    return _finish(store, args, failed)


def _execute_sweep(sweep, store, args, todo, trackers=None, settled: frozenset = frozenset()) -> int:
    """Run a sweep's `todo` runs into `store` and, for a tuned sweep, select each method's configuration from the
    tuning runs' validation summary and run the final ones; returns how many runs (or selections) failed. Final runs
    in `settled` (a bench's reused baselines, failures included) are not run again."""
    from clbench.runners.progress import announce, warn
    from clbench.runners.sweep import build_streams, execute, select

    if len(todo) < len(sweep.configs):
        announce(f"{len(sweep.configs) - len(todo)} of {len(sweep.configs)} runs already finished in {args.out}; "
                 "skipping them")

    def run_all(configs):
        return execute(sweep, configs, lambda result: _record(store, result, sweep.device, trackers),
                       executor=args.executor,
                       workers=args.workers, address=args.address, quiet=args.quiet,
                       checkpoint_dir=args.out / "checkpoints")

    failed = run_all(todo)
    if sweep.tune:  # the tuning runs are in the journal: select, then run the final configurations
        selection, problems = select(sweep, store.summary(split="val"))
        for line in problems:
            warn(f"[tune] {line}")
        finals = sweep.final_configs(selection)
        final_todo = [c for c in finals if c.run_id not in store.finished_run_ids() | settled]
        announce(f"[tune] selected {len(selection)} configuration(s) ({sweep.tune.criterion}); "
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
            raise unknown_choice("hyperparameter", key, known,
                                 where=f"for {', '.join(c.name for c in classes)} in --grid")
        for cls in chosen:
            out[cls.name][key] = values
    return out


def _default_baselines(suite: str) -> Path | None:
    """A source checkout's committed baseline runs of the suite (results/<suite>/), if there are any."""
    folder = Path(clbench.__file__).resolve().parents[1] / "results" / suite
    return folder if (folder / "runs.jsonl").is_file() or (folder / "runs.csv").is_file() else None


def cmd_bench(args) -> int:
    import pandas as pd

    from clbench.results import exports
    from clbench.results.compare import compare, holm
    from clbench.results.report import write_report
    from clbench.results.store import ResultStore, check_writable, write_atomic, write_csv
    from clbench.runners.sweep import build_streams, check_device, resolve_strategy, sweep_from_dict
    from clbench.runners.trackers import Trackers, check_trackers
    from clbench.suites import load_suite

    suite = load_suite(args.suite)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    resolved = [resolve_strategy(name) for name in args.strategies]
    check_distinct_names(resolved)
    classes = list({cls.name: cls for cls in resolved}.values())
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
    tracker_names = check_trackers([*(t for s in (*baseline_sweeps, *own_sweeps) for t in s.trackers), *args.trackers])
    check_writable(args.out)
    for sweep in (*baseline_sweeps, *own_sweeps):
        check_device(sweep.device)
        build_streams(sweep, sweep.configs, keep=args.workers == 1)
    store = ResultStore(args.out)
    settled: frozenset = frozenset()
    if baselines is not None and Path(baselines).resolve() != Path(args.out).resolve():
        wanted = set(suite.baselines)  # only the suite's baselines: never another bench's new strategies
        reused_store = _existing_store(Path(baselines))
        added = store.merge_from(reused_store, keep=lambda run: run["strategy"] in wanted)
        # a committed baseline that failed (a diverging selected configuration) fails again, bit for bit: it is the
        # protocol's outcome, reused as it is; `clbench bench --suite NAME --out DIR` rebuilds baselines
        settled = frozenset(run_id for run_id, entry in reused_store.entries().items()
                            if entry["run"]["strategy"] in wanted)
        print(f"{added} baseline run(s) reused from {baselines}")
    started = time.perf_counter()
    failed = 0
    with Trackers(tracker_names, args.out) as trackers:
        for sweep, reused in [*((s, settled) for s in baseline_sweeps), *((s, frozenset()) for s in own_sweeps)]:
            skip = store.finished_run_ids() | reused
            failed += _execute_sweep(sweep, store, args, [c for c in sweep.configs if c.run_id not in skip], trackers,
                                     settled=reused)
    from clbench.runners.progress import log_file_only, phase

    phase(f"writing tables in {args.out}")
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
    phase("writing compare.csv, leaderboard.md and leaderboard.tex")
    if not comparison.empty:  # one family: the new strategies against every baseline
        comparison["p_holm"] = holm(comparison["p_value"].to_numpy())
        comparison["significant"] = comparison["p_holm"] < 0.05
        write_csv(comparison, args.out / "compare.csv")
    for fmt, render in (("md", exports.to_markdown), ("tex", exports.to_latex)):
        text = render(board, metric="acc")
        write_atomic(args.out / f"leaderboard.{fmt}", lambda tmp, text=text: Path(tmp).write_text(text))
    if not args.no_plots:
        phase(f"writing the plots of {len(summary)} run(s) into {args.out / 'plots'}")
        phase(f"wrote {len(_plot(store, summary, board))} plots")
    phase(f"writing the report {args.out / 'report.html'}")
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
    log_file_only(f"done: tables in {args.out}/")
    if failed:
        print(f"{failed} run(s) failed; see the error column of runs.csv", file=sys.stderr)
        log_file_only(f"{failed} run(s) failed; see the error column of runs.csv")
        return EXIT_RUN_FAILED
    return 0


def cmd_presets(args) -> int:
    from clbench.presets import get_preset, list_presets

    if args.name is None:
        for preset in list_presets():
            print(f"{preset.name:<30} {preset.n_runs:>4} runs  {len(preset.published):>3} published numbers  "
                  f"{preset.title}")
        print("\nclbench presets NAME shows one; clbench sweep preset:NAME --out DIR runs it")
        return 0
    preset = get_preset(args.name)
    print(f"{preset.name}: {preset.title}\n{preset.citation}\n\n{textwrap.fill(preset.provenance, 118)}\n")
    print(f"{preset.n_runs} runs: benchmarks {', '.join(preset.sweep['benchmarks'])}; scenarios "
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


def cmd_completion(args) -> int:
    """A bash or zsh completion script (shtab) with the names clbench knows: benchmarks, scenarios, strategies."""
    import shtab

    from clbench.strategies.registry import strategy_names
    from clbench.suites import suite_names

    shells = ("bash", "zsh")
    if args.shell not in shells:
        raise unknown_choice("shell", args.shell, shells)
    words = {"benchmark": [b.name for b in list_benchmarks()], "scenario": list(SCENARIOS),
             "strategy": strategy_names(), "suite": suite_names()}
    # bash calls a function with the word being completed; zsh takes the list itself
    preamble = {"bash": "\n".join(f'_clbench_{kind}() {{ compgen -W "{" ".join(names)}" -- "$1"; }}'
                                  for kind, names in words.items())}
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    kinds = {"benchmark": "benchmark", "scenario": "scenario", "strategy": "strategy", "strategies": "strategy",
             "suite": "suite"}  # an option's dest -> the names it takes
    for command_parser in subparsers.choices.values():
        for action in command_parser._actions:
            kind = kinds.get(action.dest)
            if kind:
                action.complete = {"bash": f"_clbench_{kind}", "zsh": f"({' '.join(words[kind])})"}
            elif action.dest in ("out", "output", "log", "file"):
                action.complete = shtab.FILE
            elif action.dest in ("dirs", "dir", "data_root", "baselines"):
                action.complete = shtab.DIRECTORY
    print(shtab.complete(parser, shell=args.shell, preamble=preamble))
    return 0


COMMANDS = {
    "list": cmd_list, "run": cmd_run, "leaderboard": cmd_leaderboard, "plot": cmd_plot, "report": cmd_report,
    "sweep": cmd_sweep, "presets": cmd_presets, "compare": cmd_compare, "bench": cmd_bench,
    "completion": cmd_completion,
}


def main(argv: list[str] | None = None) -> int:
    from clbench.errors import DiskFullError
    from clbench.runners import progress

    def fail(message: str, code: int, *, if_open: bool = False) -> int:
        print(message, file=sys.stderr)
        progress.log_file_only(message, if_open=if_open)  # a bad input before any work writes no --log file
        return code

    session = None
    try:
        args = build_parser().parse_args(argv)
        # this command's logging (console, --log FILE), removed again below: repeated main() calls never stack it
        session = progress.session(quiet=getattr(args, "quiet", False), log_file=getattr(args, "log", None),
                                   out=getattr(args, "out", None))
        return COMMANDS[args.command](args)
    except UsageError as err:
        return fail(f"clbench: error: {err}", EXIT_USAGE, if_open=True)
    except DiskFullError as err:  # raised by the writers, which leave the journal as it was: one line, no traceback
        return fail(f"clbench: error: {err}", EXIT_DISK_FULL)
    except KeyboardInterrupt:
        return fail("clbench: interrupted", 130)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; give it somewhere to go
        return 0
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    sys.exit(main())
