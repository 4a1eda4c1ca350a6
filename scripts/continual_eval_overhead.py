"""What continual evaluation (`--eval-period`) costs: the same runs with and without it, side by side in one process.

Split-Fashion-MNIST class-IL (MLP 2×400, SGD lr 0.01 momentum 0.9, batch 128, 1 epoch: 94 steps per experience),
for each strategy and seed one run without and one with `--eval-period 10` (1000 test samples per experience),
alternating, and prints per strategy the median over seeds of each plan's wall seconds, training seconds (the
runner's per-experience sums, which leave the periodic evaluations out) and evaluation seconds (which count them),
their ratio, and whether the boundary accuracies agree bit for bit.

Usage: python scripts/continual_eval_overhead.py [--strategies naive ewc replay] [--seeds 0 1 2] [--period 10]
       [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from clbench.benchmarks import make_stream
from clbench.runners.config import RunConfig
from clbench.runners.loop import run
from clbench.strategies.base import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["naive", "ewc", "replay"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--period", type=int, default=10)
    parser.add_argument("--subset", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stream = make_stream("split-fmnist", "class")
    train = TrainConfig(epochs=1, batch_size=128, lr=0.01, momentum=0.9)
    print(f"split-fmnist class-IL, {args.threads} thread(s), seeds {args.seeds}, --eval-period {args.period} "
          f"--eval-subset {args.subset}; medians over seeds, seconds")
    print(f"{'strategy':<10} {'wall off':>9} {'wall on':>9} {'ratio':>6} {'train off':>10} {'train on':>9} "
          f"{'eval off':>9} {'eval on':>8} {'points':>7}  same R")
    for name in args.strategies:
        cells = {"off": [], "on": []}
        same = True
        points = 0
        for seed in args.seeds:
            plain = RunConfig("split-fmnist", "class", name, seed=seed, train=train)
            results = {}
            for plan, config in (("off", plain), ("on", dataclasses.replace(plain, eval_period=args.period,
                                                                          eval_subset=args.subset))):
                started = time.perf_counter()
                result = run(config, stream, progress=False)
                wall = time.perf_counter() - started
                assert result.status == "ok", result.error
                cells[plan].append((wall, sum(c["train_s"] for c in result.costs),
                                    sum(c["eval_s"] for c in result.costs)))
                results[plan] = result
            same &= results["on"].evals == results["off"].evals
            points = len({(r["train_exp"], r["exp_step"]) for r in results["on"].curves})
        med = {plan: [statistics.median(v[i] for v in cells[plan]) for i in range(3)] for plan in cells}
        print(f"{name:<10} {med['off'][0]:>9.2f} {med['on'][0]:>9.2f} {med['on'][0] / med['off'][0]:>6.2f} "
              f"{med['off'][1]:>10.2f} {med['on'][1]:>9.2f} {med['off'][2]:>9.2f} {med['on'][2]:>8.2f} "
              f"{points:>7}  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
