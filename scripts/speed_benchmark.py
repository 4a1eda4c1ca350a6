"""Speed, side by side: clbench's strategies against Avalanche's own on identical work, and the bare-torch floor.

The stream is Avalanche's own SplitFMNIST (5 experiences, seed 0), and clbench runs on `from_avalanche` of it: the
same samples, class order and normalisation. In one process, for each repeat and each strategy, it runs

  * clbench's implementation in clbench's runner;
  * Avalanche's strategy class on that Avalanche benchmark, as an Avalanche user runs it (its datasets and
    transforms, its data loader, its loop);
  * Avalanche's strategy class inside clbench's runner (`avalanche:<Class>`), i.e. fed clbench's in-memory tensors:
    Avalanche's best case;

each time with the same model, initial weights, optimiser settings, epochs and seed. Times are training seconds
(evaluation excluded): the runner's per-experience train times summed, or the `train()` calls. It also times the
bare-torch floor: the same model and number of optimizer steps, batches cut from an in-memory tensor by indexing,
nothing else. Repeat r uses seed r (model init, data order, the method's sampling) on every side; prints the median
seconds over the repeats, the speed-ups, the final accuracies averaged over the seeds, and naive's ratio to the
floor.

The methods added later (si, mas, der, er-ace, gdumb, icarl) run against Avalanche's SynapticIntelligence, MAS,
DER, ER_ACE, GDumb and ICaRL with the same memory and strengths (SI's λ doubled on Avalanche's side, whose penalty
has a ½); where the two definitions differ (each clbench file's docstring says how), the accuracies are not expected
to agree. ICaRL has no avalanche-tensors side (Avalanche's ICaRL takes the backbone as two modules). With
`--optimizer-state keep` clbench's sides keep one optimizer across experiences, as Avalanche does (GDumb, which
starts a new model at every experience, resets).

joint is compared with Avalanche's `Cumulative`: both train, at experience i, on the union of experiences 0..i (the
same optimizer steps; clbench's joint also restarts from the initial weights). Avalanche's `JointTraining` trains
once on everything and has no per-experience row.

Needs the avalanche extra and Fashion-MNIST (Debian's dataset-fashion-mnist, or the IDX files in the data root).
Usage: python scripts/speed_benchmark.py [--repeats 3] [--threads 2] [--strategies naive ewc ...]
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clbench.benchmarks import build_backbone, datasets
from clbench.runners.config import RunConfig
from clbench.runners.loop import evaluate, run, run_seeds
from clbench.strategies.base import TrainConfig, make_optimizer

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
    # Avalanche's SI penalty has a factor 1/2 (clbench's none): its si_lambda is twice clbench's for the same penalty.
    "si": ("SynapticIntelligence", {"si_lambda": 1e-4, "eps": 1e-7}, {"si_lambda": 2e-4, "eps": 1e-7}),
    "mas": ("MAS", {"mas_lambda": 0.1, "alpha": 0.5}, {"lambda_reg": 0.1, "alpha": 0.5}),
    "der": ("DER", {"mem_size": 500, "alpha": 0.1, "beta": 0.5}, {"mem_size": 500, "alpha": 0.1, "beta": 0.5}),
    "er-ace": ("ER_ACE", {"mem_size": 500, "batch_size_mem": 10}, {"mem_size": 500, "batch_size_mem": 10}),
    "gdumb": ("GDumb", {"mem_size": 500}, {"mem_size": 500}),
    # Avalanche's ICaRL takes the backbone in two parts and has no model argument (see timed_avalanche); it cannot
    # run inside clbench's runner as avalanche:ICaRL, so that side is left out.
    "icarl": ("ICaRL", {"memory_size": 2000}, {"memory_size": 2000, "fixed_memory": True, "buffer_transform": None}),
}
NO_TENSORS_SIDE = {"icarl"}


def train_config(args, strategy: str = "naive") -> TrainConfig:
    """The settings of every side; `--optimizer-state keep` does Avalanche's own work (one optimizer kept across
    experiences) except for methods that cannot keep one (GDumb: a new model per experience)."""
    from clbench.strategies import get_strategy

    state = args.optimizer_state
    if state not in get_strategy(strategy).train_choices.get("optimizer_state", (state,)):
        state = "reset"
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                       optimizer_state=state)


def timed_run(strategy: str, params: dict, args, stream, seed: int) -> tuple[float, float]:
    """clbench's runner: (training seconds, final average accuracy)."""
    config = RunConfig(benchmark=stream.spec.name, scenario=stream.spec.scenario, strategy=strategy, params=params,
                       seed=seed, train=train_config(args, strategy))
    result = run(config, stream, progress=False)
    if result.status != "ok":
        raise SystemExit(f"{strategy} failed: {result.error}")
    train_s = sum(c["train_s"] for c in result.costs)
    final = [e["value"] for e in result.evals if e["step"] == len(stream) - 1]
    return train_s, sum(final) / len(final)


class _Predictor:
    def __init__(self, model):
        self.model = model

    def predict(self, x, task_id):
        self.model.eval()
        return self.model(x)


def timed_avalanche(class_name: str, params: dict, args, benchmark, stream, seed: int) -> tuple[float, float]:
    """Avalanche's strategy on its own benchmark, the way its users run it: (training seconds, final accuracy)."""
    import avalanche.training

    # the seeds depend on the run seed only: those of clbench's run with this seed
    init_seed, _, strategy_seed = run_seeds(RunConfig(stream.spec.name, stream.spec.scenario, "naive", seed=seed))
    torch.manual_seed(init_seed)
    model = build_backbone(stream.spec)
    torch.manual_seed(strategy_seed)
    random.seed(strategy_seed)
    np.random.seed(strategy_seed % 2**32)
    cfg = train_config(args)
    parts = ({"feature_extractor": model.features, "classifier": model.head} if class_name == "ICaRL"
             else {"model": model, "criterion": torch.nn.CrossEntropyLoss()})
    strategy = getattr(avalanche.training, class_name)(
        **parts, optimizer=make_optimizer(model.parameters(), cfg), train_mb_size=cfg.batch_size,
        train_epochs=cfg.epochs, eval_mb_size=cfg.eval_batch_size, evaluator=None, **params)
    seconds = 0.0
    for experience in benchmark.train_stream:
        started = time.perf_counter()
        strategy.train(experience, eval_streams=[])
        seconds += time.perf_counter() - started
    rows = evaluate(_Predictor(strategy.model), stream, cfg.eval_batch_size, "cpu")  # ICaRL's: with its NCM head
    return seconds, sum(r["value"] for r in rows) / len(rows)


def avalanche_split_fmnist(root: Path):
    """Avalanche's SplitFMNIST over the local Fashion-MNIST files (unpacked into torchvision's layout under root)."""
    from avalanche.benchmarks.classic import SplitFMNIST

    files = datasets._find_idx(Path(datasets.default_data_root()) / "FashionMNIST" / "raw") or datasets._find_idx(
        datasets.DEBIAN_FMNIST_DIR)
    if files is None:
        raise SystemExit("Fashion-MNIST not found (apt-get install dataset-fashion-mnist)")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in files.values():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(raw / path.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return SplitFMNIST(n_experiences=5, seed=0, return_task_id=False, dataset_root=str(root))


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
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--optimizer-state", default="reset", choices=["reset", "keep"],
                        help="clbench's sides: reset (a new optimizer per experience) or keep (Avalanche's default)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    from clbench.avalanche import from_avalanche
    from clbench.avalanche.streams import quiet_avalanche

    with tempfile.TemporaryDirectory() as tmp, quiet_avalanche():
        benchmark = avalanche_split_fmnist(Path(tmp))
        stream = from_avalanche(benchmark, name="avalanche-split-fmnist")
        n_steps = sum(math.ceil(len(e.train) / args.batch_size) for e in stream) * args.epochs
        print(f"Avalanche SplitFMNIST (seed 0) class-IL, {len(stream)} experiences, {n_steps} steps per pass, batch "
              f"{args.batch_size}, {args.epochs} epoch(s), optimizer state {args.optimizer_state}, {args.threads} "
              f"thread(s), {args.repeats} repeats; torch "
              f"{torch.__version__}", flush=True)
        sides = ("clbench", "avalanche", "avalanche-tensors")
        times: dict[tuple[str, str], list[float]] = {}
        accs: dict[tuple[str, str], list[float]] = {}
        floor: list[float] = []
        for repeat in range(args.repeats):
            floor.append(bare_torch_floor(args, stream))
            for name in args.strategies:
                avalanche_class, ours, theirs = PAIRS[name]
                for side in sides:
                    if side == "avalanche-tensors" and name in NO_TENSORS_SIDE:
                        continue
                    if side == "clbench":
                        seconds, accuracy = timed_run(name, ours, args, stream, repeat)
                    elif side == "avalanche":
                        seconds, accuracy = timed_avalanche(avalanche_class, theirs, args, benchmark, stream, repeat)
                    else:
                        seconds, accuracy = timed_run(f"avalanche:{avalanche_class}", theirs, args, stream, repeat)
                    times.setdefault((name, side), []).append(seconds)
                    accs.setdefault((name, side), []).append(accuracy)
            print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)

    floor_s = statistics.median(floor)
    print(f"\nbare-torch floor (naive's steps, tensor indexing only): {floor_s:.2f} s (median)\n")
    header = (f"{'strategy':<8} {'clbench s':>9} {'avalanche s':>11} {'speed-up':>8} {'ava-tensors s':>13} "
              f"{'speed-up':>8} {'acc clb':>7} {'acc ava':>7} {'diff':>5}")
    print(header)
    print("-" * len(header))
    for name in args.strategies:
        ours, theirs, tensors = (statistics.median(times.get((name, side), [math.nan])) for side in sides)
        acc_ours, acc_theirs = statistics.mean(accs[name, "clbench"]), statistics.mean(accs[name, "avalanche"])
        label = name if name != "joint" else "joint*"
        print(f"{label:<8} {ours:>9.2f} {theirs:>11.2f} {theirs / ours:>7.2f}x {tensors:>13.2f} "
              f"{tensors / ours:>7.2f}x {acc_ours:>7.3f} {acc_theirs:>7.3f} {100 * (acc_ours - acc_theirs):>+5.1f}")
    if "naive" in args.strategies:
        print(f"\nnaive / floor: {statistics.median(times['naive', 'clbench']) / floor_s:.2f}x")
    if "joint" in args.strategies:
        print("* joint vs Avalanche's Cumulative (same union-so-far training at every experience)")


if __name__ == "__main__":
    main()
