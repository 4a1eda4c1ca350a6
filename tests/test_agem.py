"""A-GEM: the projected gradient never opposes the step's reference gradient, is untouched without conflict, and
protects old experiences better than naive fine-tuning."""

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

trained = partial(helpers.trained, "agem")


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_projected_gradient_does_not_oppose_the_reference(scenario, request):
    stream = request.getfixturevalue(f"digits_{scenario}")
    strategy = trained(stream, {"patterns_per_exp": 40, "sample_size": 32}, n_exp=3)
    exp = stream[3]
    conflicts = 0
    for batch in batches(exp.train, size=16, n=10):
        g = backward(strategy, batch)
        before = strategy.n_projections_
        strategy.project_gradients(batch)
        ref = strategy.reference_gradient_.double()
        projected = flat_grad(strategy.model_)
        if g @ ref < 0:
            conflicts += 1
            assert strategy.n_projections_ == before + 1
            assert projected @ ref >= -1e-6
            torch.testing.assert_close(projected, g - (g @ ref) / (ref @ ref) * ref, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(projected, g)
    assert conflicts > 0, "no batch conflicted with the memory: the projection was never exercised"


def test_reference_gradient_is_the_memory_samples_gradient(digits_class):
    """With sample_size ≥ memory size the reference batch is the whole memory (reordered)."""
    strategy = trained(digits_class, {"patterns_per_exp": 20, "sample_size": 1000}, n_exp=2)
    memory = strategy.memory_
    exp = digits_class[2]
    batch = Batch(exp.train.x[:16], exp.train.y[:16], exp.train.task[:16])
    backward(strategy, batch)
    strategy.project_gradients(batch)
    expected = backward(strategy, memory)
    torch.testing.assert_close(strategy.reference_gradient_.double(), expected, rtol=1e-4, atol=1e-6)


def test_no_conflict_leaves_the_gradient_bit_for_bit(digits_class):
    strategy = trained(digits_class, {"patterns_per_exp": 40, "sample_size": 1000}, n_exp=1)
    memory = strategy.memory_
    batch = Batch(memory.x, memory.y, memory.task)  # the memory itself: g = g_ref up to summation order
    g = backward(strategy, batch)
    grads = [p.grad.clone() for p in strategy.model_.parameters()]
    strategy.project_gradients(batch)
    assert strategy.n_projections_ == 0 and strategy.reference_gradient_ is not None
    for p, before in zip(strategy.model_.parameters(), grads, strict=True):
        assert torch.equal(p.grad, before)
    assert torch.equal(flat_grad(strategy.model_), g)


def test_first_experience_is_plain_sgd(digits_class):
    strategy = make_strategy("agem")
    strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=0)
    exp = digits_class[0]
    batch = Batch(exp.train.x[:16], exp.train.y[:16], exp.train.task[:16])
    g = backward(strategy, batch)
    strategy.project_gradients(batch)
    assert strategy.reference_gradient_ is None and torch.equal(flat_grad(strategy.model_), g)


def test_memory_holds_patterns_per_exp_per_experience(digits_task):
    strategy = make_strategy("agem", {"patterns_per_exp": 25})
    strategy.setup(digits_task.spec, build_backbone(digits_task.spec), train=FAST_TRAIN, seed=0)
    for exp in list(digits_task)[:3]:
        strategy.after_experience(exp)
    assert torch.bincount(strategy.memory_.task).tolist() == [25, 25, 25]
    for index, memory in enumerate(strategy.experience_memories()):
        assert (memory.task == index).all() and set(memory.y.tolist()) <= set(digits_task[index].classes)
    assert strategy.state_bytes() > 0


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(UsageError, match="sample_size"):
        make_strategy("agem", {"sample_size": 0})
    with pytest.raises(UsageError, match="patterns_per_exp"):
        make_strategy("agem", {"patterns_per_exp": -1})


def test_agem_beats_naive_in_class_il(digits_class):
    naive = final_accuracy(loop.run(config("naive"), digits_class, progress=False))
    agem = final_accuracy(loop.run(config("agem"), digits_class, progress=False))
    assert agem > naive + 0.05
