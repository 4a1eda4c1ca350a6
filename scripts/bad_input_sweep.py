"""Acceptance measurement of the command line's promise on bad input.

Runs the installed CLI (`python -m clbench`, one subprocess per case, each in a fresh temporary folder holding only
the inputs the case prepares, with every output path pointing inside it) over a list of bad inputs to `run`,
`sweep`, `leaderboard`, `report`, `plot`, `presets` and `list`, and checks for each that it ended as promised:

  - exit code 2;
  - stderr is exactly one line starting with `clbench: error:` (naming the bad value where the case says which).
    Errors that argparse itself finds (an unknown option, a value of the wrong type, a missing argument) may be
    preceded by argparse's standard usage text for that command and nothing else: exactly what the command's
    parser.format_usage() prints (at COLUMNS=100, the width every case runs at), which wraps over several lines for
    `run`. This is what argparse tools print; the usage is kept because it shows the valid options;
  - no `Traceback` anywhere in stderr;
  - no file or folder created in the temporary folder beside the case's own inputs, and none changed away.

Every case must fail before any training, so the whole sweep costs the imports (~3 s a process) and takes a few
minutes on two cores. It prints one row per case, then `N bad inputs, M ended as promised`, and exits with 1 if any
case did not.

Usage: python scripts/bad_input_sweep.py [--jobs 2] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = "100"
os.environ["COLUMNS"] = COLUMNS  # before any parser formats its usage (argparse reads the width from here)

LONG = "a" * 300  # a name component longer than the file system's 255 bytes
SWEEP = """seeds = [0]
benchmarks = ["split-digits"]
scenarios = ["class"]

[settings]
epochs = 1
train_subset = 20
test_subset = 20

[[strategies]]
name = "naive"
"""
RUN = ["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive", "--out", "out",
       "--quiet", "--no-plots", "--train-subset", "20", "--test-subset", "20"]
STORE = {"res/runs.jsonl": b""}  # an output folder (with no runs yet): the input of leaderboard, report, plot


@dataclass
class Case:
    name: str
    argv: list[str]
    files: dict[str, bytes | None] = field(default_factory=dict)  # path → content; None: an (empty) folder
    names: str | None = None  # text the error line must hold: the bad value


TOP = object()  # an edit that puts its text at the top in place of the [[strategies]] table


def sweep_text(old=None, new: str = "") -> str:
    """SWEEP with one edit (none when old is None)."""
    if old is TOP:
        return f"{new}\n{SWEEP.split('[[strategies]]')[0]}"
    if old is None:
        return SWEEP
    assert old in SWEEP, old
    return SWEEP.replace(old, new)


def run_case(name, flags, names=None, files=None, base=RUN):
    """A `clbench run` case: `flags` appended to (or, for an option already there, replacing it in) a good run."""
    argv = list(base)
    for flag in [f for f in flags if f.startswith("--") and f in argv]:
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        del argv[i:j]
    return Case(f"run: {name}", [*argv, *flags], files or {}, names)


def sweep_case(name, old=None, new="", names=None, flags=(), text=None):
    """A `clbench sweep` case on sweep.toml: SWEEP with one edit, or `text` as bytes, and extra flags."""
    content = text if text is not None else sweep_text(old, new).encode()
    out = [] if "--out" in flags else ["--out", "out"]
    return Case(f"sweep: {name}", ["sweep", "sweep.toml", *out, "--quiet", *flags], {"sweep.toml": content}, names)


def cases(has_cuda: bool) -> list[Case]:
    out = [
        run_case("unknown benchmark", ["--benchmark", "split-nope"], "'split-nope'"),
        run_case("unknown scenario", ["--scenario", "online"], "'online'"),
        run_case("unknown strategy", ["--strategy", "ewk"], "'ewk'"),
        run_case("empty module in module:Class", ["--strategy", ":Nope"], "':Nope'"),
        run_case("relative module in module:Class", ["--strategy", ".rel:Nope"], "'.rel:Nope'"),
        run_case("module that does not exist", ["--strategy", "no_such_module:Nope"], "no_such_module"),
        run_case("class that is no Strategy", ["--strategy", "os:path"], "'os:path'"),
        run_case("unknown hyperparameter", ["--strategy", "ewc", "--set", "lamda=3"], "'lamda'"),
        run_case("ill-typed hyperparameter", ["--strategy", "replay", "--set", "mem_size=0.5"], "mem_size=0.5"),
        run_case("--set without =", ["--set", "justtext"], "'justtext'"),
        run_case("--set for a strategy not run", ["--set", "ewc.ewc_lambda=1"], "'ewc'"),
        run_case("infinite hyperparameter", ["--strategy", "ewc", "--set", "ewc_lambda=1e999"], "ewc_lambda=inf"),
        run_case("hyperparameter out of range", ["--strategy", "replay", "--set", "mem_size=0"], "0"),
        run_case("unsupported scenario", ["--benchmark", "permuted-digits", "--scenario", "class"], "'class'"),
        run_case("unknown device", ["--device", "tpu"], "'tpu'"),
        run_case("malformed cuda device", ["--device", "cuda:x"], "'cuda:x'"),
        run_case("cuda device this machine lacks", ["--device", "cuda:99"], "'cuda:99'"),
        run_case("--epochs 0", ["--epochs", "0"], "got 0"),
        run_case("--iterations 0", ["--iterations", "0"], "got 0"),
        run_case("--batch-size 0", ["--batch-size", "0"], "got 0"),
        run_case("--eval-batch-size 0", ["--eval-batch-size", "0"], "got 0"),
        run_case("--lr nan", ["--lr", "nan"], "nan"),
        run_case("--lr inf", ["--lr", "inf"], "inf"),
        run_case("--lr 0", ["--lr", "0"], "0.0"),
        run_case("--momentum 1", ["--momentum", "1"], "1.0"),
        run_case("--momentum nan", ["--momentum", "nan"], "nan"),
        run_case("--weight-decay nan", ["--weight-decay", "nan"], "nan"),
        run_case("--weight-decay -1", ["--weight-decay", "-1"], "-1.0"),
        run_case("--weight-decay inf", ["--weight-decay", "inf"], "inf"),
        run_case("unknown optimizer", ["--optimizer", "rmsprop"], "'rmsprop'"),
        run_case("unknown optimizer state", ["--optimizer-state", "carry"], "'carry'"),
        run_case("unknown input normalisation", ["--normalize", "unit"], "'unit'"),
        run_case("optimizer state a method cannot keep", ["--strategy", "supsup", "--optimizer-state", "keep"],
                 "'keep'"),
        run_case("joint mode that does not exist", ["--strategy", "joint", "--set", "mode='online'"], "'online'"),
        run_case("gamma_in_penalty without online EWC", ["--strategy", "ewc", "--set", "gamma_in_penalty=True"],
                 "gamma_in_penalty"),
        run_case("fixed_per_class without per_class",
                 ["--strategy", "replay", "--set", "storage_policy='fixed_per_class'"], "per_class"),
        run_case("per_class with another storage policy", ["--strategy", "replay", "--set", "per_class=10"],
                 "per_class"),
        run_case("unknown LwF weighting", ["--strategy", "lwf", "--set", "weighting='sum'"], "'sum'"),
        run_case("negative seed", ["--seeds", "0", "-1"], "-1"),
        run_case("seed that is no integer", ["--seeds", "x"], "'x'"),
        run_case("--stream-seed -1", ["--stream-seed", "-1"], "-1"),
        run_case("unknown class order", ["--class-order", "bogus"], "'bogus'"),
        run_case("natural class order on a permuted stream",
                 ["--benchmark", "permuted-digits", "--scenario", "domain", "--class-order", "natural"], "natural"),
        run_case("experiences that do not divide the classes", ["--n-experiences", "3"], "n_experiences=3"),
        run_case("--n-experiences 0", ["--n-experiences", "0"], "got 0"),
        run_case("--train-subset 0", ["--train-subset", "0"], "got 0"),
        run_case("--test-subset 0", ["--test-subset", "0"], "got 0"),
        run_case("--eval-every 0", ["--eval-every", "0"], "got 0"),
        run_case("--eval-period 0", ["--eval-period", "0"], "got 0"),
        run_case("--eval-period that is no integer", ["--eval-period", "often"], "'often'"),
        run_case("--eval-subset 0", ["--eval-subset", "0"], "got 0"),
        run_case("--validation-split 0", ["--validation-split", "0"], "got 0"),
        run_case("--validation-split 1.5", ["--validation-split", "1.5"], "got 1.5"),
        run_case("--threads 0", ["--threads", "0"], "got 0"),
        run_case("unknown backbone", ["--backbone", "nope"], "'nope'"),
        run_case("missing dataset", ["--benchmark", "split-cifar10", "--data-root", "nodata"], "nodata"),
        run_case("--out is a file", ["--out", "taken"], "'taken'", {"taken": b"x"}),
        run_case("--out under a file", ["--out", "taken/sub"], "'taken'", {"taken": b"x"}),
        run_case("--out name too long", ["--out", f"out/{LONG}"], LONG),
        run_case("--out folder name too long", ["--out", f"new/{LONG}/deeper"], LONG),
        run_case("empty --out", ["--out", ""], "--out"),
        run_case("missing --out", [], "--out", base=[a for a in RUN if a not in ("--out", "out")]),
        run_case("unknown option", ["--lrr", "0.1"], "--lrr"),

        Case("sweep: file does not exist", ["sweep", "missing.toml", "--out", "out"], names="'missing.toml'"),
        Case("sweep: folder given as the file", ["sweep", "grid.toml", "--out", "out"], {"grid.toml": None},
             "is a folder"),
        sweep_case("empty file", names="is empty", text=b""),
        sweep_case("only comments", names="is empty", text=b"# nothing here\n"),
        sweep_case("not UTF-8", names="not UTF-8", text=b"\xff\xfeseeds = [0]\n"),
        sweep_case("not TOML", names="not valid TOML", text=b"seeds = [0\n"),
        sweep_case("unknown top-level key", "seeds = [0]", "seeds = [0]\nseed = 1", "'seed'"),
        sweep_case("no seeds", "seeds = [0]", "seeds = []", "'seeds'"),
        sweep_case("negative seed", "seeds = [0]", "seeds = [0, -1]", "-1"),
        sweep_case("seed that is no integer", "seeds = [0]", "seeds = [1.5]", "1.5"),
        sweep_case("unknown benchmark", '["split-digits"]', '["split-nope"]', "'split-nope'"),
        sweep_case("scenarios = 5", 'scenarios = ["class"]', "scenarios = 5", "got 5"),
        sweep_case("settings = 5", "[settings]\nepochs = 1\ntrain_subset = 20\ntest_subset = 20\n", "settings = 5\n",
                   "got 5"),
        sweep_case("unknown setting", "epochs = 1", "epoch = 1", "'epoch'"),
        sweep_case("ill-typed setting", "epochs = 1", 'epochs = 1\nlr = "fast"', "'fast'"),
        sweep_case("lr = nan", "epochs = 1", "epochs = 1\nlr = nan", "nan"),
        sweep_case("lr = inf", "epochs = 1", "epochs = 1\nlr = inf", "inf"),
        sweep_case("weight_decay = -1", "epochs = 1", "epochs = 1\nweight_decay = -1", "-1"),
        sweep_case("weight_decay = nan", "epochs = 1", "epochs = 1\nweight_decay = nan", "nan"),
        sweep_case("momentum = nan", "epochs = 1", "epochs = 1\nmomentum = nan", "nan"),
        sweep_case("stream_seed = -1", "epochs = 1", "epochs = 1\nstream_seed = -1", "-1"),
        sweep_case("threads = 0", "epochs = 1", "epochs = 1\nthreads = 0", "got 0"),
        sweep_case("eval_period = 0", "epochs = 1", "epochs = 1\neval_period = 0", "got 0"),
        sweep_case("validation_split = 1", "epochs = 1", "epochs = 1\nvalidation_split = 1", "got 1"),
        sweep_case("[tune] on the test set", "[[strategies]]", '[tune]\nsplit = "test"\n\n[[strategies]]', "'test'"),
        sweep_case("unknown [tune] key", "[[strategies]]", "[tune]\nbudget = 3\n\n[[strategies]]", "'budget'"),
        sweep_case("[tune] trials = 0", "[[strategies]]", "[tune]\ntrials = 0\n\n[[strategies]]", "got 0"),
        sweep_case("eval_subset that is no integer", "epochs = 1", 'epochs = 1\neval_subset = "all"', "'all'"),
        sweep_case("unknown backbone", "epochs = 1", 'epochs = 1\nbackbone = "nope"', "'nope'"),
        sweep_case("unknown optimizer_state", "epochs = 1", 'epochs = 1\noptimizer_state = "carry"', "'carry'"),
        sweep_case("unknown normalize", "epochs = 1", 'epochs = 1\nnormalize = "unit"', "'unit'"),
        sweep_case("drop_last that is no bool", "epochs = 1", 'epochs = 1\ndrop_last = "yes"', "'yes'"),
        sweep_case("unknown device", "epochs = 1", 'epochs = 1\ndevice = "tpu"', "'tpu'"),
        sweep_case("cuda device this machine lacks", "epochs = 1", 'epochs = 1\ndevice = "cuda:99"', "'cuda:99'"),
        sweep_case("experiences that do not divide the classes", "epochs = 1", "epochs = 1\nn_experiences = 3",
                   "n_experiences=3"),
        sweep_case("missing dataset", '["split-digits"]', '["split-cifar10"]', "nodata",
                   flags=("--setting", "data_root=nodata")),
        sweep_case("strategies = 5", TOP, "strategies = 5", "got 5"),
        sweep_case("[[strategies]] entry that is no table", TOP, "strategies = [5]", "got 5"),
        sweep_case("[[strategies]] without a name", 'name = "naive"', "params = {}", "no name"),
        sweep_case("strategy name that is no string", 'name = "naive"', "name = 5", "5"),
        sweep_case("unknown strategy", 'name = "naive"', 'name = "naiv"', "'naiv'"),
        sweep_case("unknown key in [[strategies]]", 'name = "naive"', 'name = "naive"\nparam = {}', "'param'"),
        sweep_case("params = 5", 'name = "naive"', 'name = "naive"\nparams = 5', "got 5"),
        sweep_case("grid = 5", 'name = "naive"', 'name = "naive"\ngrid = 5', "got 5"),
        sweep_case("grid with an empty list", 'name = "naive"', 'name = "ewc"\ngrid = { ewc_lambda = [] }',
                   "ewc_lambda"),
        sweep_case("strategy settings = 5", 'name = "naive"', 'name = "naive"\nsettings = 5', "got 5"),
        sweep_case("strategy settings lr = nan", 'name = "naive"', 'name = "naive"\nsettings = { lr = nan }', "nan"),
        sweep_case("strategy scenarios = 5", 'name = "naive"', 'name = "naive"\nscenarios = 5', "got 5"),
        sweep_case("strategy scenario outside the sweep's", 'name = "naive"', 'name = "naive"\nscenarios = ["task"]',
                   "'task'"),
        sweep_case("hyperparameter nan", 'name = "naive"', 'name = "ewc"\nparams = { ewc_lambda = nan }', "nan"),
        sweep_case("hyperparameter out of range", 'name = "naive"', 'name = "replay"\nparams = { mem_size = 0 }',
                   "got 0"),
        sweep_case("--seeds -1", flags=("--seeds", "-1"), names="-1"),
        sweep_case("--setting lr=nan", flags=("--setting", "lr=nan"), names="nan"),
        sweep_case("--setting weight_decay=-1", flags=("--setting", "weight_decay=-1"), names="-1"),
        sweep_case("--setting stream_seed=-1", flags=("--setting", "stream_seed=-1"), names="-1"),
        sweep_case("--setting of an unknown name", flags=("--setting", "bogus=1"), names="'bogus'"),
        sweep_case("--setting without =", flags=("--setting", "lr"), names="'lr'"),
        sweep_case("--setting device=cuda:99", flags=("--setting", "device=cuda:99"), names="'cuda:99'"),
        sweep_case("--benchmark-map of a benchmark not swept", flags=("--benchmark-map", "split-mnist=split-digits"),
                   names="'split-mnist'"),
        sweep_case("--benchmark-map to an unknown benchmark", flags=("--benchmark-map", "split-digits=nope"),
                   names="'nope'"),
        sweep_case("--benchmark-map without =", flags=("--benchmark-map", "justtext"), names="'justtext'"),
        sweep_case("--workers 0", flags=("--workers", "0"), names="got 0"),
        sweep_case("unknown executor", flags=("--executor", "dask"), names="'dask'"),
        sweep_case("--address without ray", flags=("--address", "host:1"), names="'host:1'"),
        sweep_case("--out name too long", flags=("--out", f"out/{LONG}"), names=LONG),
        sweep_case("empty --out", flags=("--out", ""), names="--out"),
        Case("sweep: no --out", ["sweep", "sweep.toml"], {"sweep.toml": SWEEP.encode()}, "--out"),
        Case("sweep: --out is a file", ["sweep", "sweep.toml", "--out", "taken"],
             {"sweep.toml": SWEEP.encode(), "taken": b"x"}, "'taken'"),
        Case("sweep: unknown preset", ["sweep", "preset:nope", "--out", "out"], names="'nope'"),
        Case("sweep: preset whose data is missing",
             ["sweep", "preset:gem-mnist-permutations", "--out", "out", "--setting", "data_root=nodata"],
             names="nodata"),
        Case("sweep: preset with --setting iterations=0",
             ["sweep", "preset:hnet-split-mnist", "--out", "out", "--setting", "iterations=0"], names="got 0"),

        Case("leaderboard: folder does not exist", ["leaderboard", "nope", "-o", "board.csv"], names="'nope'"),
        Case("leaderboard: folder is no output folder", ["leaderboard", "plain", "-o", "board.csv"],
             {"plain": None}, "'plain'"),
        Case("leaderboard: -o is a folder", ["leaderboard", "res", "-o", "res"], STORE, "'res'"),
        Case("bench: unknown suite", ["bench", "naive", "--suite", "nope", "--out", "out"], names="'nope'"),
        Case("bench: a baseline as the new strategy", ["bench", "ewc", "--suite", "digits", "--out", "out"],
             names="'digits'"),
        Case("leaderboard: unknown --split", ["leaderboard", "res", "-o", "board.csv", "--split", "train"], STORE,
             "'train'"),
        Case("leaderboard: -o under a file", ["leaderboard", "res", "-o", "taken/board.csv"],
             {**STORE, "taken": b"x"}, "'taken'"),
        Case("leaderboard: -o name too long", ["leaderboard", "res", "-o", f"{LONG}.csv"], STORE, LONG),
        Case("leaderboard: -o over an input's journal", ["leaderboard", "res", "-o", "res/runs.jsonl"], STORE,
             "runs.jsonl"),
        Case("leaderboard: folder name too long", ["leaderboard", LONG, "-o", "board.csv"], names=LONG),
        Case("leaderboard: missing -o", ["leaderboard", "res"], STORE, "-o"),
        Case("leaderboard: empty -o", ["leaderboard", "res", "-o", ""], STORE, "empty"),

        Case("report: folder does not exist", ["report", "nope"], names="'nope'"),
        Case("report: -o is a folder", ["report", "res", "-o", "res"], STORE, "'res'"),
        Case("report: -o under a file", ["report", "res", "-o", "taken/r.html"], {**STORE, "taken": b"x"},
             "'taken'"),
        Case("report: -o name too long", ["report", "res", "-o", f"new/{LONG}.html"], STORE, LONG),
        Case("report: -o over an input's table", ["report", "res", "-o", "res/runs.jsonl"], STORE, "runs.jsonl"),
        Case("report: no finished run", ["report", "res", "-o", "r.html"], STORE, "'res'"),
        Case("report: folder name too long", ["report", LONG], names=LONG),

        Case("plot: folder does not exist", ["plot", "nope"], names="'nope'"),
        Case("plot: a file, not a folder", ["plot", "taken"], {"taken": b"x"}, "'taken'"),
        Case("plot: folder name too long", ["plot", LONG], names=LONG),
        Case("plot: empty folder name", ["plot", ""], names="empty"),
        Case("plot: two folders", ["plot", "res", "other"], STORE, "other"),
        Case("plot: unknown --format", ["plot", "res", "--format", "jpg"], STORE, "'jpg'"),

        Case("leaderboard: unknown --format", ["leaderboard", "res", "-o", "b.csv", "--format", "xls"], STORE, "'xls'"),
        Case("leaderboard: unknown extension", ["leaderboard", "res", "-o", "board.xls"], STORE, "board.xls"),
        Case("leaderboard: unknown --metric", ["leaderboard", "res", "-o", "b.md", "--metric", "acc2"], STORE,
             "'acc2'"),
        Case("compare: folder does not exist", ["compare", "nope", "--reference", "naive"], names="'nope'"),
        Case("compare: a folder without finished runs", ["compare", "res", "--reference", "naive"], STORE,
             "no finished runs"),
        Case("compare: missing --reference", ["compare", "res"], STORE, "--reference"),
        Case("compare: -o is a folder", ["compare", "res", "--reference", "naive", "-o", "res"], STORE, "'res'"),

        Case("presets: unknown preset", ["presets", "nope"], names="'nope'"),
        Case("presets: two names", ["presets", "hnet-split-mnist", "extra"], names="extra"),
        Case("list: an argument", ["list", "extra"], names="extra"),
        Case("clbench: no command", [], names="command"),
        Case("clbench: unknown command", ["bogus"], names="'bogus'"),
    ]
    if not has_cuda:  # the plain names are bad input only on a machine without CUDA
        out += [run_case("cuda without CUDA", ["--device", "cuda"], "'cuda'"),
                sweep_case('device = "cuda" without CUDA', "epochs = 1", 'epochs = 1\ndevice = "cuda"', "'cuda'"),
                sweep_case('device = "cuda:0" without CUDA', "epochs = 1", 'epochs = 1\ndevice = "cuda:0"', "'cuda:0'")]
    return out


def usages() -> dict[str | None, str]:
    """argparse's standard usage text of clbench and of each command, at the width the cases run at."""
    from clbench.runners.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {None: parser.format_usage(), **{name: p.format_usage() for name, p in commands.choices.items()}}


def prepare(root: Path, files: dict[str, bytes | None]) -> None:
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (hidden ones included) with a file's content."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = Path(path).read_bytes()
    return out


def check(case: Case, usage: dict) -> tuple[int, str, str]:
    """Run one case in a fresh folder; (exit code, "" or why it broke the promise, stderr's last line)."""
    with tempfile.TemporaryDirectory(prefix="clbench-bad-input-") as tmp:
        root = Path(tmp)
        prepare(root, case.files)
        before = snapshot(root)
        env = {**os.environ, "COLUMNS": COLUMNS}
        try:
            proc = subprocess.run([sys.executable, "-m", "clbench", *case.argv], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return -1, "timed out after 300 s (it did not fail up front)", ""
        after = snapshot(root)
        why = []
        if proc.returncode != 2:
            why.append(f"exit code {proc.returncode}")
        if "Traceback" in proc.stderr:
            why.append("traceback")
        lines = proc.stderr.splitlines()
        last = lines[-1] if lines else ""
        if not last.startswith("clbench: error: "):
            why.append(f"last stderr line is {last[:60]!r}")
        elif case.names and case.names not in last:
            why.append(f"error does not name {shorten(case.names)!r}")
        head = proc.stderr[: len(proc.stderr) - len(proc.stderr.splitlines(keepends=True)[-1])] if lines else ""
        command = case.argv[0] if case.argv and case.argv[0] in usage else None
        if head and head not in (usage[None], usage.get(command)):
            why.append(f"{len(head.splitlines())} stderr line(s) before the error that are not argparse's usage")
        created = sorted(set(after) - set(before))
        changed = sorted(k for k in before if k in after and after[k] != before[k])
        gone = sorted(set(before) - set(after))
        for label, paths in (("wrote", created), ("changed", changed), ("removed", gone)):
            if paths:
                why.append(f"{label} {', '.join(shorten(p) for p in paths[:4])}")
        return proc.returncode, "; ".join(why), last


def shorten(text: str) -> str:
    """Long runs of one character (the over-long names) as 'a×300'."""
    return re.sub(r"(.)\1{29,}", lambda m: f"{m.group(1)}×{len(m.group(0))}", text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time (default: 2)")
    parser.add_argument("--only", default=None, metavar="TEXT", help="only the cases whose name holds TEXT")
    parser.add_argument("--messages", action="store_true", help="print each case's error line under its row")
    args = parser.parse_args(argv)

    import torch

    todo = [c for c in cases(torch.cuda.is_available()) if args.only is None or args.only in c.name]
    assert len({c.name for c in todo}) == len(todo), "case names must be distinct"
    usage = usages()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        results = list(pool.map(lambda c: check(c, usage), todo))
    width = max(len(c.name) for c in todo)
    print(f"{'case':<{width}}  exit  result   command")
    for case, (code, why, message) in zip(todo, results, strict=True):
        command = shorten(" ".join(["clbench", *case.argv]))
        print(f"{case.name:<{width}}  {code:>4}  {'ok' if not why else 'FAILED':<7}  {command[:90]}")
        if why:
            print(f"{'':<{width}}        why: {why}")
        if args.messages:
            print(f"{'':<{width}}        {shorten(message)[:160]}")
    ok = sum(not why for _, why, _ in results)
    print(f"\n({time.perf_counter() - start:.0f} s, {args.jobs} at a time)")
    print(f"{len(todo)} bad inputs, {ok} ended as promised")
    return 0 if ok == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
