"""DER/DER++ (reservoir of samples with their logits at insertion time) and ER-ACE (incoming cross-entropy restricted
to the classes present, replay over the full head), each on hand-made cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from clbench.benchmarks import Batch
from clbench.runners import loop
from clbench.strategies import get_strategy
from clbench.strategies.der import DER, last_writes, reservoir_slots
from clbench.strategies.er_ace import ERACE
from tests.conftest import config
from tests.helpers import batches, ready, train_on


def _clone(generator):
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    return copy


# -- DER: the reservoir ----------------------------------------------------------------------------------------------
def test_reservoir_rule_on_a_hand_made_stream():
    # mem_size 3; samples 0-2 fill the slots; sample 3 draws floor(0.5·4) = 2, sample 4 floor(0.9·5) = 4 (not kept),
    # sample 5 floor(0.1·6) = 0
    slots = reservoir_slots(0, torch.tensor([0.9, 0.9, 0.9, 0.5, 0.9, 0.1]), 3)
    assert slots.tolist() == [0, 1, 2, 2, -1, 0]
    rows, sources = last_writes(slots, 3)
    assert rows.tolist() == [0, 1, 2] and sources.tolist() == [5, 1, 3]  # the later of two writes to a slot wins
    # later in the stream: sample 6 draws floor(0.42·7) = 2, sample 7 floor(0.5·8) = 4 (not kept)
    assert reservoir_slots(6, torch.tensor([0.42, 0.5]), 3).tolist() == [2, -1]
    rows, sources = last_writes(torch.tensor([-1, -1]), 3)
    assert rows.numel() == sources.numel() == 0


def test_reservoir_keeps_a_uniform_sample():
    """Every sample of a 20-sample stream, offered in batches of 5 to a 5-slot reservoir, ends up in it with
    probability 5/20."""
    generator = torch.Generator().manual_seed(0)
    kept = torch.zeros(20)
    trials = 2000
    for _ in range(trials):
        buffer = torch.full((5,), -1)
        for first in range(0, 20, 5):
            rows, sources = last_writes(reservoir_slots(first, torch.rand(5, generator=generator,
                                                                          dtype=torch.float64), 5), 5)
            buffer[rows] = first + sources
        assert (buffer >= 0).all() and len(set(buffer.tolist())) == 5
        kept[buffer] += 1
    torch.testing.assert_close(kept / trials, torch.full((20,), 0.25), atol=0.04, rtol=0)


def test_der_buffer_is_algorithm_r_over_the_training_stream(digits_class):
    """Offered mini-batches of 7 during training, the buffer holds min(mem_size, seen) samples, exactly those (with
    their labels and task ids) that sample-by-sample reservoir sampling on the same random draws keeps."""
    strategy = ready("der", digits_class, {"mem_size": 20, "alpha": 0.0, "beta": 0.0})
    data = digits_class[0].train
    expected, seen = [None] * 20, 0
    strategy.before_experience(digits_class[0])
    for batch in batches(data, size=7, n=8):
        draws = torch.rand(len(batch), generator=_clone(strategy.generator_), dtype=torch.float64).tolist()
        strategy.train_step(batch)
        for j, u in enumerate(draws):  # the textbook loop, one sample at a time
            slot = seen if seen < 20 else math.floor(u * (seen + 1))
            if slot < 20:
                expected[slot] = (batch.x[j], batch.y[j], batch.task[j])
            seen += 1
        assert strategy.seen_ == seen and strategy.stored == min(20, seen)
        for slot in range(strategy.stored):
            x, y, task = expected[slot]
            assert torch.equal(strategy.buffer_x_[slot], x)
            assert strategy.buffer_y_[slot] == y and strategy.buffer_task_[slot] == task
    assert seen == 56  # the reservoir was full and replacing for most of the stream


def test_der_stores_the_logits_each_sample_had_when_it_arrived(digits_class):
    strategy = ready("der", digits_class, {"mem_size": 100})
    first, *rest = batches(digits_class[0].train, size=32, n=3)
    strategy.before_experience(digits_class[0])
    strategy.model_.train()
    with torch.no_grad():
        before = strategy.model_(first.x)
    strategy.train_step(first)
    assert torch.equal(strategy.buffer_logits_[:32], before)
    assert torch.equal(strategy.buffer_x_[:32], first.x)
    for batch in rest:  # the buffer is not full: the first samples stay, with their logits unchanged
        strategy.train_step(batch)
    assert strategy.stored == 96
    assert torch.equal(strategy.buffer_logits_[:32], before)
    with torch.no_grad():
        assert not torch.allclose(strategy.model_(first.x), before)  # the model has moved on


def test_der_loss_on_a_hand_made_buffer(digits_class):
    """CE(current) + alpha · MSE(logits of one buffer draw, their stored logits) + beta · CE(another draw)."""
    strategy = ready("der", digits_class, {"mem_size": 10, "batch_size_mem": 4, "alpha": 0.3, "beta": 0.7})
    exp = digits_class[0]
    strategy.before_experience(exp)
    stored = exp.train.subset(torch.arange(10))
    strategy.insert(stored.x, torch.randn(10, 10, generator=torch.Generator().manual_seed(1)), stored.y,
                    stored.task)
    batch = batches(exp.train, size=16, n=1)[0]
    model, g = strategy.model_, _clone(strategy.generator_)
    model.train()
    with torch.no_grad():
        r1, r2 = torch.randperm(10, generator=g)[:4], torch.randperm(10, generator=g)[:4]
        assert not torch.equal(r1, r2)
        expected = (F.cross_entropy(model(batch.x), batch.y)
                    + 0.3 * F.mse_loss(model(strategy.buffer_x_[r1]), strategy.buffer_logits_[r1])
                    + 0.7 * F.cross_entropy(model(strategy.buffer_x_[r2]), strategy.buffer_y_[r2]))
    stats = strategy.train_step(batch)
    assert stats["loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_der_mse_in_task_il_compares_the_sample_s_own_task_units(digits_task):
    strategy = ready("der", digits_task)
    task = torch.tensor([0, 2])
    own = strategy.unit_mask_[task]
    target = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    other_units_differ = target + 5.0 * (~own)
    assert strategy.logit_mse(other_units_differ, target, task).item() == 0.0
    own_units_differ = target + 3.0 * own  # 2 own units per sample, each off by 3
    assert strategy.logit_mse(own_units_differ, target, task).item() == pytest.approx(9.0)


def test_der_without_its_terms_is_naive_bit_for_bit(digits_class):
    """alpha = beta = 0: the reservoir still fills (drawing from the strategy's generator) but neither the data order
    nor a single weight changes."""
    naive = loop.run(config("naive"), digits_class, progress=False)
    der = loop.run(config("der", params={"alpha": 0.0, "beta": 0.0}), digits_class, progress=False)
    assert naive.status == der.status == "ok"
    assert der.evals == naive.evals
    assert [c["train_loss"] for c in der.costs] == [c["train_loss"] for c in naive.costs]

    plain = ready("naive", digits_class)
    zero = ready("der", digits_class, {"alpha": 0.0, "beta": 0.0, "mem_size": 50})
    for exp in list(digits_class)[:2]:
        train_on(plain, exp)
        train_on(zero, exp)
    assert zero.stored == 50
    for (name, a), b in zip(plain.model_.state_dict().items(), zero.model_.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_der_resumes_identically(digits_class, tmp_path, monkeypatch, caplog):
    from tests.test_checkpoint import _resumes_identically

    _resumes_identically(config("der", params={"mem_size": 60}), get_strategy("der"), digits_class, tmp_path,
                         monkeypatch, caplog)


# -- ER-ACE ------------------------------------------------------------------------------------------------------------
HAND_LOGITS = torch.tensor([[0.5, 2.0, -1.0, 0.3, 1.5, 0.0, 0.2, -0.4, 0.9, 1.1],
                            [1.0, -0.5, 0.7, 2.2, 0.1, -1.2, 0.4, 0.6, -0.3, 0.8],
                            [-0.2, 0.3, 1.4, 0.0, 0.5, 0.9, -0.7, 1.8, 0.2, -0.1]])


def test_er_ace_incoming_loss_ignores_the_classes_absent_from_the_batch(digits_class):
    strategy = ready("er-ace", digits_class)
    assert isinstance(strategy, ERACE) and get_strategy("der") is DER
    logits = HAND_LOGITS.clone().requires_grad_(True)
    y = torch.tensor([1, 3, 1])
    loss = strategy.incoming_loss(logits, y, torch.zeros(3, dtype=torch.long))
    # the cross-entropy over units 1 and 3 alone
    expected = F.cross_entropy(HAND_LOGITS[:, [1, 3]], torch.tensor([0, 1, 0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    absent = [c for c in range(10) if c not in (1, 3)]
    assert torch.equal(logits.grad[:, absent], torch.zeros(3, 8))  # exactly zero
    assert (logits.grad[:, [1, 3]] != 0).all()


def test_er_ace_replay_loss_uses_the_full_head(digits_class, digits_task):
    strategy = ready("er-ace", digits_class)
    logits = HAND_LOGITS.clone().requires_grad_(True)
    y = torch.tensor([1, 3, 1])
    loss = strategy.replay_loss(logits, y, torch.zeros(3, dtype=torch.long))
    assert loss.item() == pytest.approx(F.cross_entropy(HAND_LOGITS, y).item(), rel=1e-6)
    loss.backward()
    assert (logits.grad != 0).all()  # every unit, the ones of no class in the batch included
    # task-IL: each sample's own task's units
    strategy = ready("er-ace", digits_task)
    logits = HAND_LOGITS.clone().requires_grad_(True)
    task, y = torch.tensor([0, 1, 4]), torch.tensor([0, 3, 8])
    strategy.replay_loss(logits, y, task).backward()
    own = strategy.unit_mask_[task]
    assert (logits.grad[own] != 0).all() and torch.equal(logits.grad[~own], torch.zeros(int((~own).sum())))


def test_er_ace_first_experience_is_the_restricted_cross_entropy(digits_class):
    strategy = ready("er-ace", digits_class)
    exp = digits_class[0]
    strategy.before_experience(exp)
    assert len(strategy.buffer_) == 200 and set(strategy.buffer_.task.tolist()) == {0}  # stored, not replayed
    batch = Batch(exp.train.x[:16], exp.train.y[:16], exp.train.task[:16])
    present = torch.unique(batch.y)
    strategy.model_.train()
    with torch.no_grad():
        logits = strategy.model_(batch.x)
    expected = F.cross_entropy(logits[:, present], torch.searchsorted(present, batch.y))
    state = strategy.generator_.get_state()
    stats = strategy.train_step(batch)
    assert stats["loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert stats["loss"] != pytest.approx(F.cross_entropy(logits, batch.y).item(), rel=1e-3)
    assert torch.equal(strategy.generator_.get_state(), state)  # nothing drawn from the memory


def test_er_ace_replays_from_the_second_experience(digits_class):
    """(restricted CE of the incoming batch + full-head CE of batch_size_mem memory samples) / 2, with a memory that
    already holds the current experience's classes besides the old ones."""
    strategy = ready("er-ace", digits_class, {"mem_size": 40, "batch_size_mem": 6})
    train_on(strategy, digits_class[0], n=2)
    exp = digits_class[1]
    strategy.before_experience(exp)
    assert torch.bincount(strategy.buffer_.y, minlength=10)[:4].tolist() == [10, 10, 10, 10]
    batch = Batch(exp.train.x[:16], exp.train.y[:16], exp.train.task[:16])
    model = strategy.model_
    model.train()
    rows = torch.randperm(40, generator=_clone(strategy.generator_))[:6]
    memory = strategy.buffer_.subset(rows)
    with torch.no_grad():
        logits = model(batch.x)
        present = torch.unique(batch.y)
        incoming = F.cross_entropy(logits[:, present], torch.searchsorted(present, batch.y))
        replayed = F.cross_entropy(model(memory.x), memory.y)
    stats = strategy.train_step(batch)
    assert stats["loss"] == pytest.approx(((incoming + replayed) / 2).item(), rel=1e-6)


def test_er_ace_resumes_identically(digits_class, tmp_path, monkeypatch, caplog):
    from tests.test_checkpoint import _resumes_identically

    _resumes_identically(config("er-ace", params={"mem_size": 60}), get_strategy("er-ace"), digits_class, tmp_path,
                         monkeypatch, caplog)
