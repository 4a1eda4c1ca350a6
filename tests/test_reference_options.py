"""Method options that follow van de Ven & Tolias's code: online EWC's gamma_in_penalty, LwF's weighting and units,
replay's fixed per-class memory and by_task loss weighting — each on a hand-made case."""

import math

import pytest
import torch
from torch import nn

from clbench.benchmarks import Batch
from clbench.errors import UsageError
from clbench.strategies import make_strategy
from tests.helpers import ready, train_on


# -- online EWC: gamma inside the penalty ------------------------------------------------------------------------------
def _ewc_with_fisher(stream, gamma_in_penalty):
    strategy = ready("ewc", stream, {"mode": "online", "decay_factor": 0.25, "ewc_lambda": 3.0,
                                     "gamma_in_penalty": gamma_in_penalty})
    params = dict(strategy.model_.named_parameters())
    # hand-made: F = 2 on the head's bias, 0 elsewhere; every anchor 1 below the current value
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    fisher["head.bias"] = torch.full_like(params["head.bias"], 2.0)
    strategy.importances_ = [fisher]
    strategy.anchors_ = [{n: p.detach() - 1.0 for n, p in params.items()}]
    strategy.folded_ = strategy._fold()
    return strategy, len(params["head.bias"])


def test_gamma_in_penalty_gives_gamma_times_the_plain_online_penalty(digits_class):
    batch = Batch(digits_class[0].train.x[:4], digits_class[0].train.y[:4], digits_class[0].train.task[:4])
    plain, units = _ewc_with_fisher(digits_class, False)
    scaled, _ = _ewc_with_fisher(digits_class, True)
    logits = torch.zeros(4, units)
    # λ Σ F (θ − θ*)² = 3 · 2 · 1² per bias unit
    assert plain.penalty(batch, None, logits).item() == pytest.approx(3.0 * 2.0 * units)
    assert scaled.penalty(batch, None, logits).item() == pytest.approx(0.25 * 3.0 * 2.0 * units)


def test_gamma_in_penalty_needs_online_mode():
    with pytest.raises(UsageError, match="gamma_in_penalty is only used with mode='online'"):
        make_strategy("ewc", {"gamma_in_penalty": True})


# -- LwF: by_task weighting and all units ---------------------------------------------------------------------------
class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(len(x), -1)


# teacher favours unit 0 three to one within the group {0, 1}; the student is uniform: KL = ¾ ln(3/2) + ¼ ln(1/2)
KL_01 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def _lwf(stream, weighting, groups, finished):
    strategy = ready("lwf", stream, {"weighting": weighting, "temperature": 1.0, "alpha": 2.0})
    strategy.teacher_ = FixedLogits(torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0, 5.0, 5.0, 0, 0, 0, 0]]))
    strategy.old_units_ = [torch.tensor(g) for g in groups]
    strategy.finished_ = finished
    return strategy


@pytest.mark.parametrize(("weighting", "groups", "finished", "expected"), [
    ("equal", [[0, 1], [2, 3]], 2, 2.0 * KL_01),  # Σ_g: KL_01 + 0
    ("by_task", [[0, 1], [2, 3]], 2, 2.0 * KL_01),  # task-IL: 2 · mean_g = the sum
    ("equal", [[0, 1]], 3, 2.0 * KL_01),  # one group (domain-IL): weight 1 ...
    ("by_task", [[0, 1]], 3, 2.0 * 3 * KL_01),  # ... or the number of finished experiences
])
def test_lwf_weighting_on_a_hand_made_case(digits_task, weighting, groups, finished, expected):
    strategy = _lwf(digits_task, weighting, groups, finished)
    x = torch.zeros(1, *digits_task.spec.input_shape)
    penalty = strategy.penalty(Batch(x, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
                               None, torch.zeros(1, 10))
    assert penalty.item() == pytest.approx(expected)


def test_lwf_units_all_distils_every_output_unit_in_class_il(digits_class):
    for units, expected in (("old", sorted(digits_class[0].classes)), ("all", list(range(10)))):
        strategy = ready("lwf", digits_class, {"units": units})
        train_on(strategy, digits_class[0], n=2)
        assert [g.tolist() for g in strategy.old_units_] == [expected]


# -- replay: fixed per-class memory, by_task weighting -----------------------------------------------------------------
def _rows(data):
    return {tuple(r.tolist()) for r in data.x.flatten(1)}


def test_fixed_per_class_buffer_holds_exactly_per_class_samples_of_every_class_seen(digits_class):
    strategy = ready("replay", digits_class, {"storage_policy": "fixed_per_class", "per_class": 7})
    seen, first = [], None
    for exp in list(digits_class)[:3]:
        train_on(strategy, exp, n=1)
        seen += list(exp.classes)
        counts = torch.bincount(strategy.buffer_.y, minlength=10)
        assert {c: counts[c].item() for c in seen} == dict.fromkeys(seen, 7) and counts.sum() == 7 * len(seen)
        if first is None:
            first = _rows(strategy.buffer_)
        assert first <= _rows(strategy.buffer_)  # once stored, kept unchanged
    assert strategy.state_bytes() > 0


def test_fixed_per_class_counts_a_class_again_in_every_domain_il_experience(digits_domain):
    strategy = ready("replay", digits_domain, {"storage_policy": "fixed_per_class", "per_class": 3})
    for exp in digits_domain:
        train_on(strategy, exp, n=1)
    buffer = strategy.buffer_
    pairs = torch.stack([buffer.task, buffer.y], 1)
    _, counts = torch.unique(pairs, dim=0, return_counts=True)
    assert len(counts) == 10 * len(digits_domain) and (counts == 3).all()


def test_replay_options_are_checked():
    with pytest.raises(UsageError, match="needs per_class >= 1"):
        make_strategy("replay", {"storage_policy": "fixed_per_class"})
    with pytest.raises(UsageError, match="per_class is only used with storage_policy='fixed_per_class'"):
        make_strategy("replay", {"per_class": 10})


def test_by_task_weighs_current_and_replayed_losses_one_over_t(digits_class):
    strategy = ready("replay", digits_class, {"loss_weighting": "by_task"})
    strategy.experiences_seen_, strategy.n_current_ = 3, 2  # training experience t = 4
    y = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 10)
    logits[2, 2] = logits[3, 3] = math.log(9.0)  # replayed rows: p(label) = 9 / 18, CE = ln 2
    batch = Batch(torch.zeros(4, 1), y, torch.zeros(4, dtype=torch.long))
    loss = strategy.task_loss(logits, batch).item()
    assert loss == pytest.approx(math.log(10) / 4 + 0.75 * math.log(2))
    concat = ready("replay", digits_class)
    concat.n_current_ = 2
    assert concat.task_loss(logits, batch).item() == pytest.approx((2 * math.log(10) + 2 * math.log(2)) / 4)


def test_by_task_in_task_il_splits_the_replay_batch_over_the_earlier_tasks(digits_task):
    strategy = ready("replay", digits_task, {"loss_weighting": "by_task", "storage_policy": "fixed_per_class",
                                             "per_class": 30, "batch_size_mem": 20})
    for exp in list(digits_task)[:3]:
        train_on(strategy, exp, n=1)
    picked = strategy.buffer_.task[strategy._replay_indices()]
    assert torch.bincount(picked).tolist() == [7, 7, 7]  # ceil(20 / 3) from each of the 3 earlier tasks
