"""The one training loop. It knows streams, strategies and accuracy — nothing about any method.

For a stream of T experiences it evaluates every experience before training (row b, step −1) and after each training
experience (row i of R, step i), the not-yet-trained experiences included, so every metric of METRICS.md can be read
off the evaluation table afterwards. In class-IL each evaluation also records the task-aware accuracy
(``accuracy_taw``: the argmax over the evaluated experience's own units, from the same logits).

With ``config.eval_period`` it also evaluates *during* training (continual evaluation, De Lange et al. 2023): after
every ``eval_period``-th optimizer step of an experience, before its first step and after its first and last, on a
fixed class-balanced subsample of the test sets of the experiences seen so far and the next one. Those rows are the
run's curves (``RunResult.curves``); they never change training (the model's train/eval modes and the global random
generators are restored after each such evaluation), so R is bit for bit the same with and without them.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clbench.benchmarks import Batch, Experience, Stream, TensorData, batch_slices, batches_per_pass, build_backbone
from clbench.benchmarks.generators import balanced_subsample
from clbench.runners.checkpoint import SavedRun, load_checkpoint, save_checkpoint, warn_ignored
from clbench.runners.config import RunConfig
from clbench.runners.memory import peak_rss_mb, reset_peak_rss
from clbench.runners.progress import ExperienceBar
from clbench.strategies import Strategy
from clbench.strategies.base import NotCheckpointable, TrainConfig

logger = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """The training loss stopped being finite; the run is recorded as failed."""


@dataclass
class RunResult:
    """What one run produced: accuracy rows and per-experience costs (tidy, ready for the tables)."""

    config: RunConfig
    status: str = "ok"
    error: str = ""
    duration_s: float = 0.0
    evals: list[dict] = field(default_factory=list)  # step, eval_exp, metric, value, n
    costs: list[dict] = field(default_factory=list)  # step, train_s, eval_s, peak_rss_mb, strategy_mem_mb, loss
    # train_exp, exp_step, global_step, samples_seen, eval_exp, metric, value, n (with config.eval_period)
    curves: list[dict] = field(default_factory=list)
    chance: float = math.nan  # the accuracy of a uniform guess over the units a prediction chooses among


#: A run whose learning accuracy is at most this far above chance has learned (almost) nothing: warned about.
CHANCE_MARGIN = 0.05


def chance_accuracy(spec) -> float:
    """Mean over experiences of 1/k, k the units an evaluation of that experience chooses among: every unit in
    class- and domain-IL, the experience's own in task-IL."""
    if spec.scenario == "task":
        return float(np.mean([1 / len(c) for c in spec.classes_per_experience]))
    return 1 / spec.n_classes


def learned_nothing(result: RunResult) -> str | None:
    """One warning line when a finished run's learning accuracy (mean of R[i, i]) is within CHANCE_MARGIN of
    chance, naming the run, its optimizer steps per experience and the likely cause; None otherwise."""
    diagonal = [r["value"] for r in result.evals if r["metric"] == "accuracy" and r["step"] == r["eval_exp"]]
    if result.status != "ok" or not diagonal or not math.isfinite(result.chance):
        return None
    la = float(np.mean(diagonal))
    if la > result.chance + CHANCE_MARGIN:
        return None
    steps = sorted({c["steps"] for c in result.costs if c["step"] >= 0 and c.get("steps")})
    shown = "no" if not steps else str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
    cfg = result.config
    cause = ("too few optimizer steps for this learning rate: raise --epochs or --iterations (or lower "
             "--batch-size), or --lr" if not steps or steps[-1] < 50 else
             "the learning rate or the method's hyperparameters: try another --lr or check its --set values")
    return (f"warning: run {cfg.run_id} ({cfg.strategy} on {cfg.benchmark}/{cfg.scenario}, seed {cfg.seed}) learned "
            f"almost nothing: learning accuracy {la:.3f}, chance {result.chance:.3f}, with {shown} optimizer steps "
            f"per experience; likely cause: {cause}")


def run_seeds(config: RunConfig) -> tuple[int, int, int]:
    """Independent seeds for model init, data order and the strategy's own randomness, all from the run seed."""
    init, order, strategy = np.random.SeedSequence(config.seed).generate_state(3)
    return int(init), int(order), int(strategy)


def evaluated(step: int, n_experiences: int, eval_every: int) -> list[int]:
    """The experiences evaluated after training experience `step` (−1: before training).

    The full row at step −1 (b), at every `eval_every`-th step and at the last one (ACC); in between only the
    experience just trained and the next one — the entries R[i, i] and R[i, i+1] that learning accuracy, BWT,
    forgetting and FWT read — so a long stream costs O(T²/k) evaluations instead of O(T²), and the metrics skip the
    missing entries term by term (docs/METRICS.md).
    """
    if step < 0 or step == n_experiences - 1 or (step + 1) % eval_every == 0:
        return list(range(n_experiences))
    return [j for j in (step, step + 1) if j < n_experiences]


@torch.no_grad()
def evaluate(strategy: Strategy, stream: Stream, batch_size: int, device, experiences=None,
             test_sets: dict[int, TensorData] | None = None, split: str | None = None) -> list[dict]:
    """Accuracy of the strategy's predictions on the test sets of `experiences` (default all), or on `test_sets[j]`
    where given; task ids only in task-IL. In class-IL also ``accuracy_taw``: the argmax restricted to the evaluated
    experience's units (FACIL's and Mammoth's task-aware accuracy), from the same forward pass. With `split`, every
    row says which data it is ("test", "val")."""
    class_il = stream.spec.scenario == "class"
    rows = []
    for exp in stream if experiences is None else (stream[j] for j in experiences):
        test = exp.test if test_sets is None else test_sets[exp.index]
        task_id = exp.task_id if stream.spec.scenario == "task" else None
        units = torch.tensor(exp.classes, device=device) if class_il else None
        correct = correct_taw = 0
        for start in range(0, len(test), batch_size):
            x = test.x[start : start + batch_size].to(device)
            y = test.y[start : start + batch_size].to(device)
            logits = strategy.predict(x, task_id)
            correct += (logits.argmax(dim=1) == y).sum().item()
            if class_il:
                correct_taw += (units[logits[:, units].argmax(dim=1)] == y).sum().item()
        tag = {} if split is None else {"split": split}
        rows.append({"eval_exp": exp.index, "metric": "accuracy", **tag, "value": correct / len(test),
                     "n": len(test)})
        if class_il:
            rows.append({"eval_exp": exp.index, "metric": "accuracy_taw", **tag, "value": correct_taw / len(test),
                         "n": len(test)})
    return rows


def curve_test_sets(stream: Stream, per_experience: int) -> dict[int, TensorData]:
    """The fixed test subsample of every experience that continual evaluation uses: at most `per_experience`
    samples, class-balanced, drawn from the stream seed and the experience index alone, so every strategy and
    training seed of a stream is evaluated on the same samples (ContinualEvaluation's default is 1000)."""
    out = {}
    for exp in stream:
        seed = int(np.random.SeedSequence([stream.spec.stream_seed, exp.index]).generate_state(1)[0])
        index = balanced_subsample(exp.test.y, per_experience, torch.Generator().manual_seed(seed))
        out[exp.index] = exp.test.subset(index.to(exp.test.y.device))
    return out


class _CountingBatches:
    """Passes mini-batches through, counting the samples drawn (a strategy pulls one batch per step)."""

    def __init__(self, batches: Iterator[Batch]):
        self.batches = batches
        self.samples = 0

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        batch = next(self.batches)
        self.samples += len(batch.y)
        return batch


class _ContinualEvaluator:
    """Evaluation points within experiences (eval_period), recorded as curve rows; restores everything an evaluation
    could change in training: modules' train/eval flags and the global random generators."""

    def __init__(self, strategy: Strategy, stream: Stream, config: RunConfig, device, result: RunResult):
        self.strategy, self.stream, self.config, self.device, self.result = strategy, stream, config, device, result
        self.period = config.eval_period
        self.test_sets = curve_test_sets(stream, config.eval_subset)
        self.global_step = max((r["global_step"] for r in result.curves), default=0)  # a resumed run goes on
        self.samples_seen = max((r["samples_seen"] for r in result.curves), default=0)
        self.seconds = 0.0

    def due(self, exp_step: int) -> bool:
        return exp_step <= 1 or exp_step % self.period == 0

    def record(self, exp: Experience, exp_step: int, samples: int) -> None:
        t0 = time.perf_counter()
        modes = [(m, m.training) for m in _modules(self.strategy)]
        rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        chosen = [j for j in range(exp.index + 2) if j < len(self.stream)]
        try:
            rows = evaluate(self.strategy, self.stream, self.config.train.eval_batch_size, self.device, chosen,
                            self.test_sets)
        finally:
            for module, training in modes:
                module.training = training
            random.setstate(rng[0])
            np.random.set_state(rng[1])
            torch.set_rng_state(rng[2])
        point = {"train_exp": exp.index, "exp_step": exp_step, "global_step": self.global_step + exp_step,
                 "samples_seen": self.samples_seen + samples}
        self.result.curves.extend({**point, **row} for row in rows)
        self.seconds += time.perf_counter() - t0

    def train(self, exp: Experience, losses: Iterator[float], batches: _CountingBatches) -> Iterator[float]:
        """`losses` (one per step), with the evaluation points of this experience taken in between."""
        self.record(exp, 0, 0)
        steps = 0
        for steps, loss in enumerate(losses, start=1):
            yield loss
            if self.due(steps):
                self.record(exp, steps, batches.samples)
        if not self.due(steps):  # the last step
            self.record(exp, steps, batches.samples)
        self.global_step += steps
        self.samples_seen += batches.samples


def _modules(strategy: Strategy) -> list[torch.nn.Module]:
    """Every module a strategy holds (its model, teachers, hypernetworks), each submodule once."""
    seen: dict[int, torch.nn.Module] = {}
    for value in vars(strategy).values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, torch.nn.Module):
                for module in item.modules():
                    seen.setdefault(id(module), module)
    return list(seen.values())


def minibatches(data: TensorData | list[TensorData], cfg: TrainConfig,
                order_generator: torch.Generator) -> Iterator[Batch]:
    """`cfg.epochs` passes over `data` in seeded random order, cut into mini-batches by tensor indexing; with
    `cfg.iterations`, exactly that many mini-batches, reshuffling at the start of every pass. With `cfg.drop_last`
    each pass's last incomplete mini-batch is skipped (unless it is the pass's only one: data smaller than a batch).

    `data` may be a list of sources (a strategy's `train_data` drawing evenly from several experiences): every
    mini-batch then takes ceil(batch_size / k) samples from each of the k sources, each cycling through passes of
    its own, as van de Ven & Tolias's code composes its task-IL joint batches; an epoch is as many steps as one pass
    over all sources together takes."""
    if isinstance(data, list):
        yield from _stratified_minibatches(data, cfg, order_generator)
        return
    left = cfg.iterations
    for _ in range(cfg.epochs) if left is None else itertools.count():
        order = torch.randperm(len(data), generator=order_generator).to(data.x.device)
        for idx in batch_slices(order, cfg.batch_size, cfg.drop_last):
            if left is not None:
                if left == 0:
                    return
                left -= 1
            yield Batch(data.x[idx], data.y[idx], data.task[idx])


def _stratified_minibatches(sources: list[TensorData], cfg: TrainConfig,
                            order_generator: torch.Generator) -> Iterator[Batch]:
    share = math.ceil(cfg.batch_size / len(sources))
    steps = cfg.iterations
    if steps is None:
        steps = cfg.epochs * batches_per_pass(sum(len(d) for d in sources), cfg.batch_size, cfg.drop_last)
    pending: list[list[torch.Tensor]] = [[] for _ in sources]
    for _ in range(steps):
        parts = []
        for data, queue in zip(sources, pending, strict=True):
            if not queue:  # this source's pass is used up: start a new, reshuffled one
                order = torch.randperm(len(data), generator=order_generator).to(data.x.device)
                queue.extend(reversed(batch_slices(order, share, cfg.drop_last)))
            parts.append(data.subset(queue.pop()))
        batch = TensorData.concat(parts)
        yield Batch(batch.x, batch.y, batch.task)


def run(config: RunConfig, stream: Stream, *, device="cpu", progress: bool = True,
        checkpoint: Path | None = None) -> RunResult:
    """Train `config.strategy` through `stream`; failures (exceptions, NaN loss) are returned, not raised.

    With `checkpoint` (a file path), the run's whole state is saved there after every experience and a run that
    finds one resumes after the last finished experience, with the same results as an uninterrupted run; the file
    is removed when the run ends. The file holds tensors and JSON only (`clbench.runners.checkpoint`); one that is
    not a valid checkpoint of this run is ignored with a warning. Strategies with `checkpointable = False` save none.
    """
    result = RunResult(config, chance=chance_accuracy(stream.spec))
    started = time.perf_counter()
    try:
        _run(config, stream, torch.device(device), result, progress, checkpoint)
    except Exception as err:  # a run's failure must not stop a sweep: record it with its error
        result.status, result.error = "failed", f"{type(err).__name__}: {err}"
    result.duration_s += time.perf_counter() - started
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return result


def _run(config: RunConfig, stream: Stream, device: torch.device, result: RunResult, progress: bool,
         checkpoint: Path | None) -> None:
    cfg = config.train
    reset_peak_rss()
    strategy, order_generator, saved = _start(config, stream, device, checkpoint)
    first = 0
    if saved is not None:
        first = saved.next_experience
        result.evals, result.costs, result.duration_s = saved.evals, saved.costs, saved.duration_s
        result.curves = saved.curves
    if checkpoint is not None and not strategy.checkpointable:
        logger.info("strategy %s cannot be checkpointed: run %s saves no checkpoint", config.strategy, config.run_id)
        checkpoint = None
    tuning = config.phase == "tune"
    validation = {exp.index: exp.val for exp in stream} if stream[0].val is not None else None
    if tuning and validation is None:
        raise ValueError("a tuning run needs a validation split (validation_split) to be evaluated on")
    # continual evaluation reads test subsamples: not for tuning runs
    periodic = _ContinualEvaluator(strategy, stream, config, device, result) if config.eval_period and not tuning \
        else None

    def record(step: int, train_s: float, loss: float, evaluate_now: bool = True, curve_s: float = 0.0,
               steps: int = 0) -> None:
        t0 = time.perf_counter()
        chosen = evaluated(step, len(stream), config.eval_every) if evaluate_now else []
        # a tuning run never reads a test set: its selection must not depend on the numbers it will be judged by
        for row in [] if tuning else evaluate(strategy, stream, cfg.eval_batch_size, device, chosen, split="test"):
            result.evals.append({"step": step, **row})
        if validation is not None:  # the held-out part of the training data, at the same points
            for row in evaluate(strategy, stream, cfg.eval_batch_size, device, chosen, validation, split="val"):
                result.evals.append({"step": step, **row})
        result.costs.append(
            {
                "step": step,
                "train_s": train_s - curve_s,  # the evaluations within the experience are evaluation time
                "eval_s": time.perf_counter() - t0 + curve_s,
                "peak_rss_mb": peak_rss_mb(),
                "strategy_mem_mb": strategy.state_bytes() / 2**20,
                "train_loss": loss,
                "steps": steps,
            }
        )

    if saved is None:
        record(-1, 0.0, math.nan)
    run_started = time.perf_counter()
    remaining = list(stream)[first:]
    bar = ExperienceBar(len(remaining), f"{config.strategy} seed {config.seed}", enabled=progress)  # terminal only
    for exp in remaining:
        t0 = time.perf_counter()
        strategy.begin_experience(exp)
        # The strategy's budget for this experience: the run's settings, others (offline joint trains once, at the
        # last experience, for all of them), or None: not trained here, so there is no model to evaluate either.
        budget = strategy.experience_train(exp)
        losses = []
        curve_before = periodic.seconds if periodic else 0.0
        if budget is not None:
            data = strategy.train_data(exp)
            data = [d.to(device) for d in data] if isinstance(data, list) else data.to(device)
            batches = _CountingBatches(minibatches(data, budget, order_generator))
            steps = strategy.fit_experience(exp, batches)
            for loss in steps if periodic is None else periodic.train(exp, steps, batches):
                if not math.isfinite(loss):
                    raise DivergedError(f"loss became {loss} in experience {exp.index}")
                losses.append(loss)
        strategy.end_experience(exp)
        mean_loss = float(np.mean(losses)) if losses else math.nan
        bar.advance(mean_loss)
        curve_s = periodic.seconds - curve_before if periodic else 0.0
        record(exp.index, time.perf_counter() - t0, mean_loss, evaluate_now=budget is not None, curve_s=curve_s,
               steps=len(losses))
        if checkpoint is not None and exp.index < len(stream) - 1:
            try:
                save_checkpoint(checkpoint, run_id=config.run_id, strategy=strategy, order_generator=order_generator,
                                next_experience=exp.index + 1, evals=result.evals, costs=result.costs,
                                curves=result.curves,
                                duration_s=result.duration_s + time.perf_counter() - run_started)
            except NotCheckpointable as err:  # a user strategy holding other objects: run on, without checkpoints
                logger.warning("run %s saves no checkpoint: %s", config.run_id, err)
                Path(checkpoint).unlink(missing_ok=True)
                checkpoint = None
    bar.close()


def _fresh_strategy(config: RunConfig, stream: Stream, device: torch.device) -> Strategy:
    """The strategy set up on its seeded initial model, exactly as a fresh run starts (and a resumed one, before its
    saved state is loaded into it)."""
    init_seed, _, strategy_seed = run_seeds(config)
    strategy = config.strategy_class().from_params(config.params)  # setup() rejects an unsupported scenario
    torch.manual_seed(init_seed)
    model = build_backbone(stream.spec, normalize=config.train.normalize).to(device)
    strategy.begin_run(stream.spec, model, train=config.train, seed=strategy_seed, device=device)
    return strategy


def _start(config: RunConfig, stream: Stream, device: torch.device,
           checkpoint: Path | None) -> tuple[Strategy, torch.Generator, SavedRun | None]:
    """(strategy, data-order generator, saved run or None): fresh, or with the checkpoint's state loaded into them.
    A checkpoint that cannot be loaded is ignored with a warning, and the run starts fresh."""
    order_seed = run_seeds(config)[1]
    strategy = _fresh_strategy(config, stream, device)
    order_generator = torch.Generator().manual_seed(order_seed)
    if checkpoint is None or not strategy.checkpointable:
        return strategy, order_generator, None
    saved = load_checkpoint(checkpoint, run_id=config.run_id, n_experiences=len(stream))
    if saved is None:
        return strategy, order_generator, None
    try:
        saved.restore(strategy, order_generator)
    except Exception as err:  # the state does not fit this strategy: start over on untouched objects
        warn_ignored(checkpoint, err)
        return _fresh_strategy(config, stream, device), torch.Generator().manual_seed(order_seed), None
    return strategy, order_generator, saved
