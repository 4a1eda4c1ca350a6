"""The stability gap of every configuration of an output folder with curves (clbench run --eval-period): for each new
experience i >= 1 and each old experience j < i, the accuracy on j at the boundary (the point before i's first step)
against its minimum over i's first STEPS steps; averaged over (i, j) and seeds, beside acc, min_acc and wc_acc.

Usage: python scripts/stability_gap_summary.py DIR [--steps 50]
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from clbench.results.store import ResultStore


def gap_table(curves: pd.DataFrame, summary: pd.DataFrame, steps: int) -> pd.DataFrame:
    acc = curves[(curves["metric"] == "accuracy") & (curves["eval_exp"] < curves["train_exp"])]
    boundary = acc[acc["exp_step"] == 0].set_index(["run_id", "train_exp", "eval_exp"])["value"]
    early = acc[(acc["exp_step"] >= 1) & (acc["exp_step"] <= steps)]
    lowest = early.groupby(["run_id", "train_exp", "eval_exp"])["value"].min()
    pairs = pd.DataFrame({"boundary": boundary, "min_early": lowest}).dropna().reset_index()
    per_run = pairs.groupby("run_id")[["boundary", "min_early"]].mean()
    per_run["gap"] = per_run["boundary"] - per_run["min_early"]
    keys = ["benchmark", "scenario", "strategy", "label"]
    runs = summary.set_index("run_id")[[*keys, "acc", "min_acc", "wc_acc"]].join(per_run, how="inner")
    out = runs.groupby(keys, sort=True).agg(
        n_seeds=("acc", "size"), boundary=("boundary", "mean"), min_early=("min_early", "mean"), gap=("gap", "mean"),
        acc=("acc", "mean"), min_acc=("min_acc", "mean"), wc_acc=("wc_acc", "mean"))
    return out.reset_index().sort_values(["benchmark", "scenario", "gap"], ascending=[True, True, False])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    store = ResultStore(args.dir)
    curves = store.curves()
    if curves.empty:
        print(f"error: {str(args.dir)!r} has no curves (run with --eval-period)", file=sys.stderr)
        return 2
    table = gap_table(curves, store.summary(), args.steps)
    print(f"old-experience accuracy at the boundary and its minimum within the first {args.steps} steps of each new "
          "experience (mean over old experiences and seeds):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
