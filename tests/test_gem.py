"""GEM: the projected gradient satisfies every memory constraint, is untouched without conflict, and protects."""

from functools import partial

import pytest
import torch

from clbench.benchmarks import Batch, build_backbone
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import make_strategy
from tests import helpers
from tests.conftest import FAST_TRAIN, config
from tests.helpers import backward, batches, final_accuracy, flat_grad

trained = partial(helpers.trained, "gem")


def memory_constraints(strategy):
    return torch.stack([backward(strategy, m) for m in strategy.experience_memories()])


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_projected_gradient_satisfies_every_constraint(scenario, request):
    stream = request.getfixturevalue(f"digits_{scenario}")
    strategy = trained(stream, {"patterns_per_exp": 40}, n_exp=3)
    G = memory_constraints(strategy)
    assert G.shape[0] == 3
    exp = stream[3]
    conflicts = 0
    for batch in batches(exp.train, size=16, n=10):
        g = backward(strategy, batch)
        before = strategy.n_projections_
        strategy.project_gradients(batch)
        projected = flat_grad(strategy.model_)
        if (G @ g < 0).any():
            conflicts += 1
            assert strategy.n_projections_ == before + 1  # the QP branch ran
            assert (G @ projected).min() >= -1e-6
            assert not torch.equal(projected, g)
        else:
            assert torch.equal(projected, g)
    assert conflicts > 0, "no batch conflicted with the memory: the QP branch was never exercised"


def test_one_constraint_without_margin_is_the_euclidean_projection(digits_class):
    """With one stored experience and γ = 0 the QP's answer has a closed form: g − (g·G/‖G‖²) G."""
    strategy = trained(digits_class, {"patterns_per_exp": 40, "memory_strength": 0.0}, n_exp=0)
    strategy.after_experience(digits_class[0])  # memory of experience 0 for the untrained model: conflicts are common
    (G,) = memory_constraints(strategy)
    exp = digits_class[1]
    for start in range(0, len(exp.train), 32):  # the first batch of the new experience that conflicts
        part = exp.train.subset(slice(start, start + 32))
        batch = Batch(part.x, part.y, part.task)
        g = backward(strategy, batch)
        if g @ G < 0:
            break
    assert g @ G < 0, "no batch of the next experience conflicts with the memory"
    strategy.project_gradients(batch)
    expected = g - (g @ G) / (G @ G) * G
    torch.testing.assert_close(flat_grad(strategy.model_), expected, rtol=1e-5, atol=1e-7)


def test_no_conflict_leaves_the_gradient_bit_for_bit(digits_class):
    strategy = trained(digits_class, {"patterns_per_exp": 40}, n_exp=1)
    (memory,) = strategy.experience_memories()
    batch = Batch(memory.x, memory.y, memory.task)  # the memory itself: g = G₀, so g·G₀ = ‖G₀‖² > 0
    g = backward(strategy, batch)
    grads = [p.grad.clone() for p in strategy.model_.parameters()]
    strategy.project_gradients(batch)
    assert strategy.n_projections_ == 0
    for p, before in zip(strategy.model_.parameters(), grads, strict=True):
        assert torch.equal(p.grad, before)
    assert torch.equal(flat_grad(strategy.model_), g)


def test_memory_holds_patterns_per_exp_real_samples(digits_task):
    strategy = make_strategy("gem", {"patterns_per_exp": 30})
    strategy.setup(digits_task.spec, build_backbone(digits_task.spec), train=FAST_TRAIN, seed=0)
    assert strategy.state_bytes() == 0 and strategy.experience_memories() == []
    for exp in list(digits_task)[:3]:
        strategy.after_experience(exp)
    memories = strategy.experience_memories()
    assert [len(m) for m in memories] == [30, 30, 30]
    for index, memory in enumerate(memories):
        source = digits_task[index].train
        assert (memory.task == index).all()
        assert set(memory.y.tolist()) <= set(digits_task[index].classes)
        for x, y in zip(memory.x, memory.y, strict=True):
            match = (source.x == x).flatten(1).all(1)
            assert match.any() and bool((source.y[match] == y).all())
    x, y, task = strategy.memory_.x, strategy.memory_.y, strategy.memory_.task
    assert strategy.state_bytes() == sum(t.numel() * t.element_size() for t in (x, y, task))


def test_small_experience_is_stored_whole(digits_class):
    strategy = make_strategy("gem", {"patterns_per_exp": 10_000})
    strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=0)
    strategy.after_experience(digits_class[0])
    assert strategy.memory_sizes_ == [len(digits_class[0].train)]


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(UsageError, match="memory_strength"):
        make_strategy("gem", {"memory_strength": -0.1})
    with pytest.raises(UsageError, match="patterns_per_exp"):
        make_strategy("gem", {"patterns_per_exp": 0})


def test_gem_beats_naive_in_class_il(digits_class):
    naive = final_accuracy(loop.run(config("naive"), digits_class, progress=False))
    gem = final_accuracy(loop.run(config("gem", params={"patterns_per_exp": 50}), digits_class, progress=False))
    assert gem > naive + 0.15
