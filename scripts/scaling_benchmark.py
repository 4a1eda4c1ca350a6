"""How a run's cost grows with the stream's length, and what bounding the evaluation saves.

Runs naive (the runner's own cost: any method adds its own) on permuted-fmnist domain-IL for T = 5, 10, 20, 50
experiences (full training sets, MLP 2×400, SGD lr 0.01 momentum 0.9, batch 128, 1 epoch) under three evaluation
plans:

  full       every experience after every training experience: T(T+1) evaluations of 10 000 test samples;
  every-5    `--eval-every 5`: full rows every 5 experiences and at the last, only R[i, i] and R[i, i+1] between;
  subset-1k  `--test-subset 1000`: the full matrix on a fixed, class-balanced 1 000-sample test subset per experience;

and prints training and evaluation seconds (the runner's per-step sums), wall seconds, peak resident memory, and the
final accuracy and BWT each plan reports. Training is identical under every plan (same seed, same steps), so only
evaluation changes.

Usage: python scripts/scaling_benchmark.py [--lengths 5 10 20 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd
import torch

from clbench import metrics
from clbench.benchmarks import make_stream
from clbench.metrics.tables import matrices_from_evals
from clbench.runners.config import RunConfig
from clbench.runners.loop import run
from clbench.strategies.base import TrainConfig

PLANS = {"full": {}, "every-5": {"eval_every": 5}, "subset-1k": {"test_subset": 1000}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train = TrainConfig(epochs=1, batch_size=128, lr=0.01, momentum=0.9)
    rows = []
    for n in args.lengths:
        for plan in args.plans:
            options = PLANS[plan]
            stream = make_stream("permuted-fmnist", "domain", n_experiences=n, test_subset=options.get("test_subset"))
            config = dataclasses.replace(
                RunConfig("permuted-fmnist", "domain", "naive", seed=0, n_experiences=n, train=train),
                **options)
            started = time.perf_counter()
            result = run(config, stream, progress=False)
            wall = time.perf_counter() - started
            evals = pd.DataFrame([{"run_id": "r", **row} for row in result.evals])
            R, _ = matrices_from_evals(evals, "r")
            rows.append({
                "T": n, "plan": plan, "evaluations": len(result.evals),
                "train_s": sum(c["train_s"] for c in result.costs),
                "eval_s": sum(c["eval_s"] for c in result.costs),
                "wall_s": wall,
                "peak_rss_mb": max(c["peak_rss_mb"] for c in result.costs),
                "acc": metrics.accuracy(R), "bwt": metrics.backward_transfer(R),
            })
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
