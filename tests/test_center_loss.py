"""Center loss regularisation: frozen old centers (and head rows), moving current centers, optional replay."""

from functools import partial

import pytest
import torch

from clbench.benchmarks import Batch
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import make_strategy
from clbench.strategies.base import tensors_nbytes
from tests import helpers
from tests.conftest import config
from tests.helpers import batches, train_on

ready = partial(helpers.ready, "center-loss")


@pytest.mark.parametrize("mem_size", [0, 60])
def test_finished_centers_and_head_rows_stay_put_current_ones_move(digits_class, mem_size):
    strategy = ready(digits_class, {"mem_size": mem_size})
    train_on(strategy, digits_class[0])
    old = list(digits_class[0].classes)
    centers = strategy.centers_.clone()
    head = strategy.model_.head.weight.detach().clone(), strategy.model_.head.bias.detach().clone()
    assert centers[old].abs().sum() > 0  # learnt during their own experience

    train_on(strategy, digits_class[1])
    new = list(digits_class[1].classes)
    assert torch.equal(strategy.centers_[old], centers[old])  # bit-identical
    assert not torch.equal(strategy.centers_[new], centers[new])
    assert torch.equal(strategy.model_.head.weight[old], head[0][old])
    assert torch.equal(strategy.model_.head.bias[old], head[1][old])
    assert not torch.equal(strategy.model_.head.weight[new], head[0][new])


def test_domain_il_freezes_every_center_after_the_first_experience(digits_domain):
    """Every experience shares the units, so from the second one on no center moves: the paper's own setting."""
    strategy = ready(digits_domain)
    train_on(strategy, digits_domain[0])
    centers = strategy.centers_.clone()
    stats = train_on(strategy, digits_domain[1], n=5)
    assert torch.equal(strategy.centers_, centers)
    assert all(s["penalty"] > 0 for s in stats)


def test_center_update_is_wen_et_al_rule(digits_class):
    strategy = ready(digits_class, {"center_lr": 0.5})
    strategy.frozen_[1] = True
    strategy.centers_[1] = 3.0
    features = torch.tensor([[1.0] * 100, [3.0] * 100, [5.0] * 100])
    strategy.update_centers(features, torch.tensor([0, 0, 1]))
    # c_0 = 0: Δ = (2·0 − (1 + 3)) / (1 + 2) = −4/3, c_0 ← 0 − 0.5·Δ = 2/3; c_1 is frozen; absent centers stay
    torch.testing.assert_close(strategy.centers_[0], torch.full((100,), 2 / 3))
    assert torch.equal(strategy.centers_[1], torch.full((100,), 3.0))
    assert strategy.centers_[2:].abs().sum() == 0


def test_penalty_is_half_mean_squared_distance(digits_class):
    strategy = ready(digits_class, {"center_lambda": 0.3})
    strategy.centers_[:] = torch.arange(10.0).unsqueeze(1)
    features = torch.ones(2, strategy.centers_.shape[1])
    batch = Batch(torch.zeros(2, 1), torch.tensor([0, 3]), torch.zeros(2, dtype=torch.long))
    dim = features.shape[1]
    expected = 0.3 * 0.5 * (dim * 1.0 + dim * 4.0) / 2
    assert strategy.penalty(batch, features, None).item() == pytest.approx(expected)


def test_zero_lambda_without_replay_and_head_freezing_is_naive_bit_for_bit(digits_class):
    naive = loop.run(config("naive"), digits_class, progress=False)
    params = {"center_lambda": 0.0, "mem_size": 0, "freeze_head": False}
    clr = loop.run(config("center-loss", params=params), digits_class, progress=False)
    assert naive.status == clr.status == "ok"
    assert clr.evals == naive.evals
    assert [c["train_loss"] for c in clr.costs] == [c["train_loss"] for c in naive.costs]


def test_zero_lambda_with_replay_is_replay_bit_for_bit(digits_class):
    """The replay part is clbench's Replay itself: same buffer, same batches."""
    replay = loop.run(config("replay", params={"mem_size": 80}), digits_class, progress=False)
    params = {"center_lambda": 0.0, "mem_size": 80, "freeze_head": False}
    clr = loop.run(config("center-loss", params=params), digits_class, progress=False)
    assert clr.evals == replay.evals
    assert [c["train_loss"] for c in clr.costs] == [c["train_loss"] for c in replay.costs]


def test_replay_buffer_is_used_and_counted(digits_class):
    strategy = ready(digits_class, {"mem_size": 40, "batch_size_mem": 10})
    train_on(strategy, digits_class[0], n=2)
    assert len(strategy.buffer_) == 40
    batch = batches(digits_class[1].train, size=8, n=1)[0]
    augmented = strategy.augment_batch(batch)
    assert len(augmented) == 18 and set(augmented.task[8:].tolist()) == {0}
    buffer = tensors_nbytes(strategy.buffer_.x, strategy.buffer_.y, strategy.buffer_.task, strategy.keys_)
    centers = tensors_nbytes(strategy.centers_)
    assert strategy.state_bytes() == buffer + centers
    strategy.before_experience(digits_class[1])  # snapshots the two frozen head rows
    assert strategy.state_bytes() == buffer + centers + 2 * (strategy.model_.feature_dim + 1) * 4


def test_no_replay_keeps_no_buffer(digits_class):
    strategy = ready(digits_class)
    train_on(strategy, digits_class[0], n=2)
    assert strategy.buffer_ is None
    assert strategy.state_bytes() == strategy.centers_.numel() * 4


@pytest.mark.parametrize(
    "params, name",
    [
        ({"center_lambda": -0.1}, "center_lambda"),
        ({"center_lr": 1.5}, "center_lr"),
        ({"center_lr": -0.1}, "center_lr"),
        ({"mem_size": -1}, "mem_size"),
        ({"batch_size_mem": 0}, "batch_size_mem"),
        ({"storage_policy": "fifo"}, "storage_policy"),
        ({"freeze_head": 1}, "freeze_head"),
    ],
)
def test_bad_hyperparameters(params, name):
    with pytest.raises(UsageError, match=name):
        make_strategy("center-loss", params)
