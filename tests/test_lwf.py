"""Learning without Forgetting: the distillation term, its frozen teacher, and its effect."""

import math
from functools import partial

import pytest
import torch

from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import make_strategy
from clbench.strategies.base import TrainConfig
from clbench.strategies.lwf import distillation_loss
from tests import helpers
from tests.conftest import config
from tests.helpers import batches

ready = partial(helpers.ready, "lwf")


def test_zero_alpha_is_naive_bit_for_bit(digits_class):
    naive = loop.run(config("naive"), digits_class, progress=False)
    lwf = loop.run(config("lwf", params={"alpha": 0.0}), digits_class, progress=False)
    assert naive.status == lwf.status == "ok"
    assert lwf.evals == naive.evals
    assert [c["train_loss"] for c in lwf.costs] == [c["train_loss"] for c in naive.costs]
    # ...while the distillation path did run: a teacher was kept from the first experience on
    assert all(c["strategy_mem_mb"] > 0 for c in lwf.costs if c["step"] >= 0)


def test_distillation_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.0
    expected = 0.0
    for z, t in zip(logits.tolist(), teacher.tolist(), strict=True):
        p = [math.exp(v / T) / sum(math.exp(u / T) for u in z) for v in z]
        q = [math.exp(v / T) / sum(math.exp(u / T) for u in t) for v in t]
        expected += sum(qk * (math.log(qk) - math.log(pk)) for pk, qk in zip(p, q, strict=True))
    expected /= len(logits)  # batch mean, no T² factor (as Avalanche)
    assert distillation_loss(logits, teacher, T).item() == pytest.approx(expected, rel=1e-6)


def test_penalty_restricts_to_old_units_and_sums_heads_in_task_il(digits_task):
    strategy = ready(digits_task, {"alpha": 0.5})
    for exp in list(digits_task)[:2]:
        strategy.after_experience(exp)
    assert [u.tolist() for u in strategy.old_units_] == [list(digits_task[0].classes), list(digits_task[1].classes)]
    batch = batches(digits_task[2].train, n=1)[0]
    logits = torch.randn(len(batch), digits_task.spec.n_classes)
    with torch.no_grad():
        teacher = strategy.teacher_(batch.x)
    expected = sum(
        distillation_loss(logits[:, list(c)], teacher[:, list(c)], 2.0)
        for c in (digits_task[0].classes, digits_task[1].classes)
    )
    torch.testing.assert_close(strategy.penalty(batch, None, logits), 0.5 * expected)


def test_class_il_distils_the_union_of_old_units(digits_class):
    strategy = ready(digits_class)
    for exp in list(digits_class)[:3]:
        strategy.after_experience(exp)
    assert [u.tolist() for u in strategy.old_units_] == [[0, 1, 2, 3, 4, 5]]


def test_penalty_zero_on_first_experience_positive_after(digits_class):
    strategy = ready(digits_class)
    strategy.before_experience(digits_class[0])
    for batch in batches(digits_class[0].train):
        assert strategy.train_step(batch).get("penalty", 0.0) == 0.0
    strategy.after_experience(digits_class[0])
    strategy.before_experience(digits_class[1])
    stats = [strategy.train_step(batch) for batch in batches(digits_class[1].train)]
    assert stats[0]["penalty"] == pytest.approx(0.0, abs=1e-5)  # the model still equals its teacher
    assert all(s["penalty"] > 0 for s in stats[1:])


def test_teacher_is_frozen_while_the_model_trains(digits_class):
    strategy = ready(digits_class)
    strategy.after_experience(digits_class[0])
    teacher = {k: v.clone() for k, v in strategy.teacher_.state_dict().items()}
    model = {k: v.clone() for k, v in strategy.model_.state_dict().items()}
    assert strategy.state_bytes() == sum(v.numel() * v.element_size() for v in teacher.values())
    strategy.before_experience(digits_class[1])
    for batch in batches(digits_class[1].train, n=4):
        strategy.train_step(batch)
    assert not strategy.teacher_.training
    assert all(not p.requires_grad for p in strategy.teacher_.parameters())
    for k, v in strategy.teacher_.state_dict().items():
        assert torch.equal(v, teacher[k])
    assert any(not torch.equal(v, model[k]) for k, v in strategy.model_.state_dict().items())


def test_lwf_protects_old_tasks_in_task_il(digits_task):
    """With a large alpha, old tasks' accuracy over the stream stays higher than under naive fine-tuning."""
    train = TrainConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9)
    naive = loop.run(config("naive", "task", train=train), digits_task, progress=False)
    lwf = loop.run(config("lwf", "task", params={"alpha": 3.0}, train=train), digits_task, progress=False)

    def old_tasks(result):
        values = [e["value"] for e in result.evals if 0 <= e["eval_exp"] < e["step"]]
        return sum(values) / len(values)

    assert old_tasks(lwf) > old_tasks(naive) + 0.01


@pytest.mark.parametrize("params", [{"alpha": -1.0}, {"temperature": 0.0}])
def test_bad_hyperparameters(params):
    with pytest.raises(UsageError, match=next(iter(params))):
        make_strategy("lwf", params)
