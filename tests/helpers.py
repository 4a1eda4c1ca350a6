"""Driving a strategy by hand in tests: set it up on a fresh backbone, cut batches, train through experiences,
and read gradients as flat vectors independently of any strategy's own helpers."""

import torch
import torch.nn.functional as F

from clbench.benchmarks import Batch, build_backbone
from clbench.strategies import make_strategy
from tests.conftest import FAST_TRAIN


def batches(data, size=32, n=None):
    """Consecutive mini-batches of `data` (the first `n` of them when given)."""
    starts = list(range(0, len(data), size))[:n]
    return [Batch(data.x[s : s + size], data.y[s : s + size], data.task[s : s + size]) for s in starts]


def ready(name, stream, params=None, train=FAST_TRAIN, seed=0):
    """Strategy `name` set up on the stream's backbone, initialised from `seed`."""
    strategy = make_strategy(name, params)
    torch.manual_seed(seed)
    strategy.begin_run(stream.spec, build_backbone(stream.spec), train=train, seed=seed)
    return strategy


def train_on(strategy, exp, n=None):
    """One epoch (or its first `n` batches) on an experience, with the hooks around it (as the runner calls them,
    optimizer reset included); the step statistics."""
    strategy.begin_experience(exp)
    stats = [strategy.train_step(batch) for batch in batches(strategy.train_data(exp), n=n)]
    strategy.end_experience(exp)
    return stats


def trained(name, stream, params, n_exp, seed=0):
    """Strategy `name` trained through the first `n_exp` experiences."""
    strategy = ready(name, stream, params, seed=seed)
    for exp in list(stream)[:n_exp]:
        train_on(strategy, exp)
    return strategy


def flat_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()


def backward(strategy, data):
    """Plain .backward of the task-masked cross-entropy on `data`; returns the flat gradient."""
    model = strategy.model_
    model.zero_grad(set_to_none=True)
    F.cross_entropy(strategy.mask_logits(model(data.x), data.task), data.y).backward()
    return flat_grad(model)


def final_row(result):
    """Accuracies on every experience after the last one was trained (row T−1 of R) of a finished run."""
    assert result.status == "ok", result.error
    accuracy = [e for e in result.evals if e["metric"] == "accuracy"]  # class-IL runs also have accuracy_taw
    last = max(e["step"] for e in accuracy)
    return [e["value"] for e in accuracy if e["step"] == last]


def final_accuracy(result):
    """ACC: the mean of the final row."""
    row = final_row(result)
    return sum(row) / len(row)
