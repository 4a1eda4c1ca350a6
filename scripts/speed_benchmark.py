"""Speed, side by side: clbench's strategies against Avalanche's own on identical work, and the bare-torch floor.

In one process, for each repeat and each strategy, runs clbench's implementation and then Avalanche's (through
clbench's runner as `avalanche:<Class>`: same stream, backbone, initial weights, optimiser settings, epochs and
seed; Avalanche trains each experience with its own loop). Training seconds are the runner's per-experience train
times summed (evaluation excluded, identical for both). Also times the bare-torch floor: the same model and number
of optimizer steps, batches cut from an in-memory tensor by indexing, nothing else. Prints medians over the repeats,
the ratio Avalanche / clbench, both final accuracies (mean over repeats; every repeat uses the same seeds, so they
are equal up to thread-order noise), and naive's ratio to the floor.

joint is compared with Avalanche's `Cumulative`: both train, at experience i, on the union of experiences 0..i (the
same optimizer steps; clbench's joint also restarts from the initial weights). Avalanche's `JointTraining` trains
once on everything and has no per-experience row.

Usage: python scripts/speed_benchmark.py [--repeats 3] [--threads 2] [--strategies naive ewc ...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from clbench.benchmarks import build_backbone, make_stream
from clbench.runners.config import RunConfig
from clbench.runners.loop import run
from clbench.strategies.base import TrainConfig

# clbench strategy -> (Avalanche class, parameters for both sides so that they do the same work)
PAIRS = {
    "naive": ("Naive", {}, {}),
    "joint": ("Cumulative", {}, {}),
    "ewc": ("EWC", {"ewc_lambda": 10.0}, {"ewc_lambda": 10.0}),
    "lwf": ("LwF", {"alpha": 1.0, "temperature": 2.0}, {"alpha": 1.0, "temperature": 2.0}),
    "gem": ("GEM", {"patterns_per_exp": 256, "memory_strength": 0.5}, {"patterns_per_exp": 256,
                                                                       "memory_strength": 0.5}),
    "agem": ("AGEM", {"patterns_per_exp": 256, "sample_size": 64}, {"patterns_per_exp": 256, "sample_size": 64}),
    "replay": ("Replay", {"mem_size": 1000}, {"mem_size": 1000}),
}


def timed_run(strategy: str, params: dict, args, stream) -> tuple[float, float]:
    config = RunConfig(benchmark=args.benchmark, scenario=args.scenario, strategy=strategy, params=params, seed=0,
                       train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                         momentum=args.momentum))
    result = run(config, stream, progress=False)
    if result.status != "ok":
        raise SystemExit(f"{strategy} failed: {result.error}")
    train_s = sum(c["train_s"] for c in result.costs)
    final = [e["value"] for e in result.evals if e["step"] == len(stream) - 1]
    return train_s, sum(final) / len(final)


def bare_torch_floor(args, stream) -> float:
    """Same model, same optimizer steps as naive: index a tensor, forward, cross-entropy, backward, step."""
    torch.manual_seed(0)
    model = build_backbone(stream.spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for exp in stream:
        x, y = exp.train.x, exp.train.y
        for _ in range(args.epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), args.batch_size):
                idx = order[start : start + args.batch_size]
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--benchmark", default="split-fmnist")
    parser.add_argument("--scenario", default="class")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    stream = make_stream(args.benchmark, args.scenario)
    n_steps = sum(math.ceil(len(e.train) / args.batch_size) for e in stream) * args.epochs
    print(f"{args.benchmark} {args.scenario}-IL, {len(stream)} experiences, {n_steps} steps per pass, "
          f"batch {args.batch_size}, {args.epochs} epoch(s), {args.threads} thread(s), {args.repeats} repeats; "
          f"torch {torch.__version__}", flush=True)

    times: dict[tuple[str, str], list[float]] = {}
    accs: dict[tuple[str, str], list[float]] = {}
    floor: list[float] = []
    for repeat in range(args.repeats):
        floor.append(bare_torch_floor(args, stream))
        for name in args.strategies:
            avalanche_class, ours, theirs = PAIRS[name]
            for side, strategy, params in (("clbench", name, ours), ("avalanche", f"avalanche:{avalanche_class}",
                                                                      theirs)):
                seconds, accuracy = timed_run(strategy, params, args, stream)
                times.setdefault((name, side), []).append(seconds)
                accs.setdefault((name, side), []).append(accuracy)
        print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)

    floor_s = statistics.median(floor)
    print(f"\nbare-torch floor (naive's steps, tensor indexing only): {floor_s:.2f} s (median)\n")
    header = f"{'strategy':<8} {'avalanche':>10} {'clbench s':>10} {'speed-up':>9} {'acc ava':>8} {'acc clb':>8} " \
             f"{'diff':>6}"
    print(header)
    print("-" * len(header))
    for name in args.strategies:
        ours, theirs = statistics.median(times[name, "clbench"]), statistics.median(times[name, "avalanche"])
        acc_ours, acc_theirs = statistics.mean(accs[name, "clbench"]), statistics.mean(accs[name, "avalanche"])
        label = f"{name}" if name != "joint" else "joint*"
        print(f"{label:<8} {theirs:>10.2f} {ours:>10.2f} {theirs / ours:>8.2f}x {acc_theirs:>8.3f} {acc_ours:>8.3f} "
              f"{100 * (acc_ours - acc_theirs):>+6.1f}")
    if "naive" in args.strategies:
        print(f"\nnaive / floor: {statistics.median(times['naive', 'clbench']) / floor_s:.2f}x")
    if "joint" in args.strategies:
        print("* joint vs Avalanche's Cumulative (same union-so-far training at every experience)")


if __name__ == "__main__":
    main()
