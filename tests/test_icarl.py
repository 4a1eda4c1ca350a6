"""iCaRL's defining parts on hand-made cases: herding's greedy mean matching, nearest-mean-of-exemplars prediction,
the fixed memory split over the classes seen, and the sigmoid BCE with distillation targets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clbench.benchmarks import Batch
from clbench.errors import UsageError
from clbench.strategies import get_strategy, make_strategy
from clbench.strategies.base import MASKED_LOGIT
from clbench.strategies.icarl import herding, icarl_loss
from tests.conftest import config
from tests.helpers import ready, train_on


# -- herding -------------------------------------------------------------------------------------------------------
def test_herding_picks_the_greedy_mean_matching_order():
    # C, A, D, B with mean μ = (0.25, 0)
    points = torch.tensor([[1.5, 1.0], [2.0, 1.0], [-0.5, -1.0], [-2.0, -1.0]])
    # k=1: ‖μ − x‖: C 1.60, A 2.02, D 1.25, B 2.46                          -> D (2)
    # k=2: ‖μ − (D + x)/2‖: C ‖(0.5, 0) − μ‖ = 0.25, A 0.5, B 1.80          -> C (0)
    # k=3: ‖μ − (D + C + x)/3‖: A ‖(1, 1/3) − μ‖ = 0.82, B ‖(−1/3, −1/3) − μ‖ = 0.67  -> B (3), though A is nearer μ
    # k=4: A (1)
    assert herding(points, 4).tolist() == [2, 0, 3, 1]
    assert herding(points, 2).tolist() == [2, 0]
    assert herding(points, 9).tolist() == [2, 0, 3, 1]  # at most every sample once


def test_herding_never_repeats_a_sample():
    # the mean is exactly the first point, so a rule allowing repeats would pick it again at k = 2
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    picks = herding(points, 3).tolist()
    assert picks[0] == 0 and sorted(picks) == [0, 1, 2]


# -- nearest mean of exemplars ---------------------------------------------------------------------------------------
class Identity2D(nn.Module):
    """A backbone whose features are its 2-D input."""

    def __init__(self, n_classes):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(2, n_classes)


def _with_means(stream, means):
    strategy = ready("icarl", stream, {"memory_size": 20})
    strategy.model_ = Identity2D(stream.spec.n_classes)
    strategy.class_means_ = torch.zeros(stream.spec.n_classes, 2)
    for cls, mean in means.items():
        strategy.class_means_[cls] = F.normalize(torch.tensor(mean), dim=0)
        strategy.exemplars_[cls] = None  # only the keys (classes with a mean) matter here
    return strategy


def test_predict_returns_the_nearest_class_mean_of_normalised_features(digits_class):
    strategy = _with_means(digits_class, {1: [1.0, 0.0], 4: [0.0, 1.0], 7: [-1.0, -1.0]})
    # (10, 1) is far from (1, 0) in raw distance but nearly on it after normalisation
    x = torch.tensor([[10.0, 1.0], [0.2, 3.0], [-0.1, -2.0], [1.0, 1.2]])
    scores = strategy.predict(x, None)
    assert scores.shape == (4, 10)
    assert scores.argmax(1).tolist() == [1, 4, 7, 4]
    torch.testing.assert_close(scores[0, 1], -torch.dist(F.normalize(x[:1])[0], torch.tensor([1.0, 0.0])))
    unseen = [c for c in range(10) if c not in (1, 4, 7)]
    assert (scores[:, unseen] == MASKED_LOGIT).all()


def test_predict_restricts_the_class_means_to_the_task_units_in_task_il(digits_task):
    units = digits_task.spec.classes_per_experience
    a, b = units[0]
    c = units[1][0]
    strategy = _with_means(digits_task, {a: [1.0, 0.0], b: [0.0, 1.0], c: [1.0, 0.1]})
    x = torch.tensor([[1.0, 0.1]])
    assert strategy.predict(x, None).argmax(1).item() == c  # without a task: every mean
    assert strategy.predict(x, 0).argmax(1).item() == a  # task 0: c is not one of its units
    assert strategy.predict(x, 1).argmax(1).item() == c


def test_predict_falls_back_to_the_head_before_any_mean_and_on_request(digits_class):
    strategy = ready("icarl", digits_class)
    x = digits_class[0].test.x[:5]
    torch.testing.assert_close(strategy.predict(x, None), strategy.model_(x))
    train_on(strategy, digits_class[0], n=2)
    nme = strategy.predict(x, None)
    assert not torch.allclose(nme, strategy.model_(x))
    torch.testing.assert_close(strategy.predict_head(x, None), strategy.model_(x))
    head = ready("icarl", digits_class, {"classifier": "head"})
    train_on(head, digits_class[0], n=2)
    torch.testing.assert_close(head.predict(x, None), head.model_(x))


def test_class_means_are_the_normalised_mean_of_normalised_exemplar_features(digits_class):
    strategy = ready("icarl", digits_class, {"memory_size": 30})
    train_on(strategy, digits_class[0], n=2)
    for cls, samples in strategy.exemplars_.items():
        phi = F.normalize(strategy.model_.features(samples.x), dim=1)
        torch.testing.assert_close(strategy.class_means_[cls], F.normalize(phi.mean(0), dim=0))


# -- memory ------------------------------------------------------------------------------------------------------------
def test_memory_holds_memory_size_over_seen_classes_per_class_and_shrinks_by_prefixes(digits_class):
    strategy = ready("icarl", digits_class, {"memory_size": 30})
    seen, previous = [], {}
    for exp in list(digits_class)[:3]:
        train_on(strategy, exp, n=2)
        seen += list(exp.classes)
        quota = 30 // len(seen)  # 15, 7, 5
        memory = strategy.exemplars_
        assert sorted(memory) == sorted(seen)
        assert all(len(memory[c]) == quota and (memory[c].y == c).all() for c in seen)
        for c, old in previous.items():  # the reduced list is the first m of the previous one
            assert torch.equal(memory[c].x, old.x[:quota])
        for c in exp.classes:  # new classes: herding picks on the final model's normalised features
            members = exp.train.subset(torch.nonzero(exp.train.y == c).flatten())
            phi = F.normalize(strategy.model_.features(members.x), dim=1)
            assert torch.equal(memory[c].x, members.x[herding(phi, quota)])
        previous = dict(memory)
    data = strategy.train_data(digits_class[3])
    assert len(data) == len(digits_class[3].train) + 5 * len(seen)
    assert strategy.state_bytes() >= sum(d.nbytes for d in strategy.exemplars_.values())


def test_memory_size_is_checked(digits_class):
    with pytest.raises(UsageError, match="memory_size must be at least 1"):
        make_strategy("icarl", {"memory_size": 0})
    with pytest.raises(UsageError, match="memory_size=5"):
        ready("icarl", digits_class, {"memory_size": 5})


def test_domain_il_is_rejected():
    with pytest.raises(UsageError, match="domain"):
        get_strategy("icarl").check_scenario("domain")


# -- the loss ---------------------------------------------------------------------------------------------------------
L3, L4 = math.log(3.0), math.log(4.0)  # σ(ln 3) = 3/4; BCE(z, t) = softplus(z) − t·z = ln 4 − t ln 3 at z = ln 3


def test_bce_takes_the_teachers_sigmoid_outputs_on_old_units_and_one_hot_on_the_others():
    logits = torch.zeros(2, 10)
    logits[:, :3] = L3  # units 0, 1, 2 at ln 3; the other seven at 0 (BCE ln 2 whatever the target)
    teacher = torch.zeros(2, 10)
    teacher[:, 0] = L3  # teacher: σ = 3/4 on unit 0, 1/2 on unit 1, and a confident unit 2 that must be ignored
    teacher[:, 2] = 5.0
    old = torch.zeros(10, dtype=torch.bool)
    old[[0, 1]] = True
    y = torch.tensor([2, 0])  # a new-class sample and an exemplar of old class 0
    new_row = (L4 - 0.75 * L3) + (L4 - 0.5 * L3) + (L4 - L3) + 7 * math.log(2)
    exemplar_row = (L4 - 0.75 * L3) + (L4 - 0.5 * L3) + L4 + 7 * math.log(2)  # unit 0: the teacher's 3/4, not 1
    expected = (new_row + exemplar_row) / 20
    assert icarl_loss(logits, y, old, teacher).item() == pytest.approx(expected)
    # without a teacher (the first experience): one-hot everywhere
    plain = ((L4 - L3) + 2 * L4 + 7 * math.log(2)) + ((L4 - L3) + 2 * L4 + 7 * math.log(2))
    assert icarl_loss(logits, y, old, None).item() == pytest.approx(plain / 20)


def test_strategy_loss_distils_from_its_frozen_copy_and_averages_over_task_units(digits_task):
    units = digits_task.spec.classes_per_experience
    strategy = ready("icarl", digits_task, {"memory_size": 20})
    train_on(strategy, digits_task[0], n=2)
    assert strategy.teacher_ is not None and not any(p.requires_grad for p in strategy.teacher_.parameters())
    assert strategy.old_units_.nonzero().flatten().tolist() == sorted(units[0])
    x = torch.cat([digits_task[1].train.x[:1], digits_task[0].train.x[:1]])
    batch = Batch(x, torch.tensor([units[1][0], units[0][0]]), torch.tensor([1, 0]))
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q = torch.sigmoid(strategy.teacher_(x))
    expected = []
    for row, (label, task) in enumerate(zip(batch.y.tolist(), batch.task.tolist(), strict=True)):
        for unit in units[task]:
            target = q[row, unit] if unit in units[0] else float(unit == label)
            expected.append(F.binary_cross_entropy_with_logits(logits[row, unit], torch.as_tensor(target)))
    torch.testing.assert_close(strategy.task_loss(logits, batch), torch.stack(expected).mean())


# -- checkpoints -------------------------------------------------------------------------------------------------------
def test_icarl_resumes_with_the_results_of_an_uninterrupted_run(digits_class, tmp_path, monkeypatch, caplog):
    from tests.test_checkpoint import _resumes_identically

    _resumes_identically(config("icarl", "class", params={"memory_size": 60}), get_strategy("icarl"), digits_class,
                         tmp_path, monkeypatch, caplog)
