"""Separate networks (single-task experts): each expert starts from the run's initial weights and sees its own
experience only, so nothing is forgotten (R[i, j] = R[j, j] bit for bit), an untrained experience reads the initial
model (R[i, j] = b[j] for j > i), and experience 0's expert is naive's model after experience 0."""

import numpy as np
import pytest
import torch

from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import get_strategy, make_strategy
from clbench.strategies.base import TrainConfig
from tests.conftest import FAST_TRAIN, config
from tests.helpers import ready, train_on

# split-digits' backbone, mlp100 on 8×8 inputs: Standardize mean and std (1 + 1), Linear 64→100 (6400 + 100),
# Linear 100→100 (10000 + 100), head 100→10 (1000 + 10) = 17612 float32 values = 70448 bytes per model copy.
MODEL_BYTES = 17612 * 4


def matrices(result):
    """(b, R) of a finished full-evaluation run: the row before training and the T×T accuracy matrix."""
    assert result.status == "ok", result.error
    T = 1 + max(e["eval_exp"] for e in result.evals)
    table = np.full((T + 1, T), np.nan)
    for e in result.evals:
        table[e["step"] + 1, e["eval_exp"]] = e["value"]
    assert not np.isnan(table).any()
    return table[0], table[1:]


@pytest.fixture(scope="module")
def separate_run(digits_task):
    return loop.run(config("separate", "task"), digits_task, progress=False)


@pytest.fixture(scope="module")
def naive_run(digits_task):
    return loop.run(config("naive", "task"), digits_task, progress=False)


def test_nothing_is_forgotten_bit_for_bit(separate_run, naive_run):
    b, R = matrices(separate_run)
    T = len(b)
    for j in range(T):
        for i in range(j, T):
            assert R[i, j] == R[j, j], (i, j)
    # the experts did learn (two-class tasks: the untrained model is near chance), so the equalities are not those
    # of a model that never changes
    assert (np.diag(R) > 0.9).all() and (np.diag(R) - b > 0.2).all(), (np.diag(R), b)
    # and the property discriminates on this stream: naive, one model fine-tuned on, breaks it somewhere
    _, naive_R = matrices(naive_run)
    assert any(naive_R[i, j] != naive_R[j, j] for j in range(T) for i in range(j + 1, T))


def test_an_untrained_experience_is_read_by_the_initial_model(separate_run, naive_run):
    b, R = matrices(separate_run)
    T = len(b)
    for i in range(T):
        for j in range(i + 1, T):
            assert R[i, j] == b[j], (i, j)
    # b itself is the untrained model's row: the same initial weights as naive's under the same seed
    naive_b, naive_R = matrices(naive_run)
    assert np.array_equal(b, naive_b)
    # naive answers an unseen task with a trained model, which does move those entries off b
    assert any(naive_R[i, j] != naive_b[j] for i in range(T) for j in range(i + 1, T))


def test_experience_0_is_naive_s_experience_0_bit_for_bit(separate_run, naive_run):
    _, R = matrices(separate_run)
    _, naive_R = matrices(naive_run)
    assert R[0, 0] == naive_R[0, 0]
    loss = {c["step"]: c["train_loss"] for c in separate_run.costs}
    naive_loss = {c["step"]: c["train_loss"] for c in naive_run.costs}
    assert loss[0] == naive_loss[0]  # the same initial weights, batches and optimizer steps
    assert loss[1] != naive_loss[1]  # experience 1 starts again from the initial weights, naive does not


def test_every_expert_is_a_fresh_model_trained_on_its_experience_alone(digits_task):
    """Expert j, kept when experience j+1 begins, equals a naive model set up on the same seed (same initial
    weights) and trained on experience j only, with the same batches: bit for bit."""
    strategy = ready("separate", digits_task)
    initial = {k: v.clone() for k, v in strategy.model_.state_dict().items()}
    for exp in list(digits_task)[:3]:
        train_on(strategy, exp)
    strategy.before_experience(digits_task[3])
    assert len(strategy.experts_) == 3 and strategy.live_task_ == 3
    for k, v in strategy.model_.state_dict().items():
        assert torch.equal(v, initial[k])  # the live model restarted from the initial weights
    for j in range(3):
        alone = ready("naive", digits_task)
        train_on(alone, digits_task[j])
        expert = strategy.experts_[j]
        assert expert.keys() == initial.keys()
        for k, v in alone.model_.state_dict().items():
            assert torch.equal(expert[k], v), (j, k)
    assert not torch.equal(strategy.experts_[0]["head.weight"], strategy.experts_[1]["head.weight"])


def test_predictions_use_the_expert_of_the_task(digits_task):
    strategy = ready("separate", digits_task)
    untrained = ready("naive", digits_task)  # the same initial weights
    x = digits_task[2].test.x[:9]
    predict = torch.no_grad()(strategy.predict)
    before = predict(x, 2)
    assert torch.equal(before, untrained.predict(x, 2))
    train_on(strategy, digits_task[0])
    after_0 = predict(x, 0)
    assert not torch.equal(after_0, untrained.predict(x, 0))
    assert torch.equal(predict(x, 2), before)  # task 2 is not trained yet: the initial model
    train_on(strategy, digits_task[1])
    assert torch.equal(predict(x, 0), after_0)  # expert 0 kept, now read from its stored weights
    assert torch.equal(predict(x, 2), before)
    assert not torch.equal(predict(x, 1), untrained.predict(x, 1))
    with pytest.raises(UsageError, match="needs the task id"):
        predict(x, None)


def test_state_bytes_count_the_kept_experts_and_the_initial_weights(digits_task):
    strategy = ready("separate", digits_task)
    assert strategy.state_bytes() == MODEL_BYTES  # the initial copy only
    train_on(strategy, digits_task[0])
    assert strategy.state_bytes() == MODEL_BYTES  # expert 0 is the live model, not a copy yet
    strategy.before_experience(digits_task[1])
    strategy.before_experience(digits_task[2])  # experts 0 and 1 kept, beside the initial copy: 3 × 70448
    assert strategy.state_bytes() == 3 * MODEL_BYTES == 211344


def test_class_and_domain_scenarios_are_rejected(digits_class, digits_domain):
    cls = get_strategy("separate")
    assert cls.scenarios == frozenset({"task"})
    for scenario in ("class", "domain"):
        with pytest.raises(UsageError, match=rf"strategy 'separate' does not support scenario '{scenario}'; "
                                             r"valid choices: task$"):
            cls.check_scenario(scenario)
    for stream in (digits_class, digits_domain):
        with pytest.raises(UsageError, match="does not support scenario"):
            ready("separate", stream)
    failed = loop.run(config("separate", "class"), digits_class, progress=False)
    assert failed.status == "failed" and "does not support scenario 'class'" in failed.error


def test_keeping_the_optimizer_is_refused(digits_task):
    keep = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9, optimizer_state="keep")
    with pytest.raises(UsageError, match=r"'separate' cannot train with optimizer-state='keep'; valid choices: reset"):
        get_strategy("separate").check_train(keep)
    with pytest.raises(UsageError, match="optimizer-state"):
        ready("separate", digits_task, train=keep)
    get_strategy("separate").check_train(FAST_TRAIN)  # reset, the default, is accepted


def test_a_checkpoint_holds_the_experts_and_not_the_initial_weights(digits_task):
    """The initial weights come back from setup on the run's seeded model; the experts come from the state."""
    strategy = ready("separate", digits_task)
    for exp in list(digits_task)[:2]:
        train_on(strategy, exp)
    strategy.before_experience(digits_task[2])
    state = strategy.checkpoint_state()
    assert "initial_state_" not in state and state["live_task_"] == 2
    fresh = ready("separate", digits_task)
    fresh.load_checkpoint_state(state)
    assert fresh.live_task_ == 2 and len(fresh.experts_) == 2
    x = digits_task[0].test.x[:9]
    with torch.no_grad():
        for task in range(4):
            assert torch.equal(fresh.predict(x, task), strategy.predict(x, task)), task
    with pytest.raises(ValueError, match="initial_state_"):
        fresh.load_checkpoint_state({"initial_state_": {}})


def test_it_has_no_hyperparameters():
    assert get_strategy("separate").hyperparameters() == {}
    assert make_strategy("separate").get_params() == {}
