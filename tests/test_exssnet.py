"""ExSSNeT: earlier tasks' weights never change, masks have the requested density, each task trains only weights no
earlier mask uses, task-IL accuracy, KKT's choice of the source task, hyperparameter checks and the memory count."""

import math

import pytest
import torch

from clbench.benchmarks import Batch, build_backbone, stream_from_tensors
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import _supermask as sm
from clbench.strategies import exssnet as exssnet_module
from clbench.strategies import make_strategy
from clbench.strategies.base import TrainConfig
from tests.conftest import FAST_TRAIN, config

ADAM = TrainConfig(epochs=1, batch_size=32, lr=0.001, optimizer="adam")
# SGD with momentum and weight decay: the optimiser would move every weight it is given, not only the trained ones
SGD_DECAY = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.01)


def train_tasks(stream, n_tasks, params=None, train=ADAM, seed=0):
    """Train the first n_tasks experiences; returns the strategy, the maskable weights after each task and each
    task's trainable (exclusive) set."""
    strategy = make_strategy("exssnet", params or {})
    torch.manual_seed(seed)
    strategy.setup(stream.spec, build_backbone(stream.spec), train=train, seed=seed)
    snapshots, trainable = [], []
    for exp in list(stream)[:n_tasks]:
        strategy.before_experience(exp)
        for start in range(0, len(exp.train), train.batch_size):
            part = exp.train.subset(slice(start, start + train.batch_size))
            strategy.train_step(Batch(part.x, part.y, part.task))
        strategy.after_experience(exp)
        snapshots.append({n: w.detach().clone() for n, w in strategy.weights_.items()})
        trainable.append({n: m.clone() for n, m in strategy.trainable_.items()})
    return strategy, snapshots, trainable


def stored_masks(strategy):
    return [{n: sm.unpack_mask(p, strategy.shapes_[n], dtype=torch.bool) for n, p in masks.items()}
            for masks in strategy.masks_]


def union(masks):
    out = {n: torch.zeros_like(m) for n, m in masks[0].items()}
    for m in masks:
        for n in out:
            out[n] |= m[n]
    return out


def earlier_weights_unchanged(strategy, snapshots) -> bool:
    """True when every weight in any mask of tasks < t is bit-identical after training task t, for every t."""
    masks = stored_masks(strategy)
    for t in range(1, len(snapshots)):
        used = union(masks[:t])
        for n, before in snapshots[t - 1].items():
            if not torch.equal(snapshots[t][n][used[n]], before[used[n]]):
                return False
    return True


@pytest.mark.parametrize("train", [ADAM, SGD_DECAY], ids=["adam", "sgd-momentum-decay"])
def test_weights_of_earlier_masks_stay_bit_identical(digits_task, train):
    """The defining property: training task t changes no weight of an earlier task's mask, while it does change
    weights (only ones in its own exclusive set)."""
    strategy, snapshots, trainable = train_tasks(digits_task, 4, {"sparsity": 0.3}, train=train)
    assert earlier_weights_unchanged(strategy, snapshots)
    for t in range(1, 4):
        changed = {n: snapshots[t][n] != snapshots[t - 1][n] for n in snapshots[t]}
        assert sum(int(c.sum()) for c in changed.values()) > 100  # free weights did train
        for n, c in changed.items():
            assert not (c & ~trainable[t][n]).any()  # nothing outside the exclusive set moved


def test_the_frozen_check_fails_without_exclusivity(digits_task, monkeypatch):
    """The check above can fail: training the whole mask M_t (the paper's non-exclusive SSNeT) moves weights that
    earlier tasks use."""
    monkeypatch.setattr(exssnet_module.ExSSNeT, "exclusive_masks", lambda self, mask: mask)
    strategy, snapshots, _ = train_tasks(digits_task, 3, {"sparsity": 0.3})
    assert not earlier_weights_unchanged(strategy, snapshots)


@pytest.mark.parametrize("sparsity", [0.02, 0.1, 0.5])
def test_masks_have_the_requested_density(digits_task, sparsity):
    strategy, _, _ = train_tasks(digits_task, 2, {"sparsity": sparsity, "weight_epochs": 0})
    for masks in stored_masks(strategy):
        assert set(masks) == {"features.2.weight", "features.4.weight", "head.weight"}  # every Linear, head included
        for m in masks.values():
            numel = m.numel()
            assert int(m.sum()) == numel - int((1 - sparsity) * numel)  # the reference's top-k count
            assert abs(m.float().mean().item() - sparsity) <= 1 / numel + 1e-9


def test_each_task_trains_only_weights_no_earlier_mask_uses(digits_task):
    strategy, _, trainable = train_tasks(digits_task, 4, {"sparsity": 0.3})
    masks = stored_masks(strategy)
    for n in masks[0]:
        assert torch.equal(trainable[0][n], masks[0][n])  # the first task trains its whole mask
    for t in range(1, 4):
        earlier = union(masks[:t])
        for n, m in masks[t].items():
            assert not (trainable[t][n] & earlier[n]).any()  # disjoint from every earlier mask
            assert torch.equal(trainable[t][n], m & ~earlier[n])  # and everything else of its own mask
        overlap = sum(int((masks[t][n] & earlier[n]).sum()) for n in earlier)
        assert overlap > 0  # masks do overlap (else exclusivity would be vacuous here)


def test_task_il_accuracy_and_no_forgetting(digits_task):
    train = TrainConfig(epochs=2, batch_size=32, lr=0.001, optimizer="adam")
    result = loop.run(config("exssnet", "task", train=train), digits_task, progress=False)
    assert result.status == "ok", result.error
    T = len(digits_task)
    acc = {(e["step"], e["eval_exp"]): e["value"] for e in result.evals}
    final = [acc[T - 1, j] for j in range(T)]
    assert sum(final) / T > 0.9, final  # chance is 0.5 (two classes per task)
    for j in range(T):  # zero forgetting, exactly: a task's accuracy never changes after it is learned
        assert {acc[i, j] for i in range(j, T)} == {acc[j, j]}


def test_phase_two_improves_on_fixed_weights(digits_task):
    """weight_epochs=0 is SupSup's mask-only learning; the exclusive weight training lowers the training loss of the
    masked network on the task."""

    def task_loss(weight_epochs):
        params = {"sparsity": 0.1, "weight_epochs": weight_epochs, "weight_lr": 0.01}
        strategy, _, _ = train_tasks(digits_task, 1, params)
        data = digits_task[0].train
        with torch.no_grad():
            logits = strategy.predict(data.x, 0)
        return torch.nn.functional.cross_entropy(logits, data.y).item()

    assert task_loss(5) < 0.5 * task_loss(0)


def test_without_weight_training_it_is_supsup_bit_for_bit(digits_task):
    """weight_epochs=0 leaves only phase 1, which is SupSup's task-IL training (the reference's config with
    weight_epochs: 0); with the shared supermask machinery both give identical evaluations and losses."""
    params = {"sparsity": 0.3}
    ours = loop.run(config("exssnet", "task", params={**params, "weight_epochs": 0}, train=ADAM), digits_task,
                    progress=False)
    supsup = loop.run(config("supsup", "task", params=params, train=ADAM), digits_task, progress=False)
    assert ours.status == supsup.status == "ok"
    assert ours.evals == supsup.evals
    assert [c["train_loss"] for c in ours.costs] == [c["train_loss"] for c in supsup.costs]
    trained = loop.run(config("exssnet", "task", params=params, train=ADAM), digits_task, progress=False)
    assert trained.evals != supsup.evals  # and phase 2 does change the outcome


def test_batch_norm_backbone_keeps_per_task_statistics():
    """With a conv net (non-affine batch norm, one set of statistics per task) task 0's outputs are bit-identical
    after learning task 1."""
    g = torch.Generator().manual_seed(0)
    parts = [(torch.rand(16, 3, 32, 32, generator=g), torch.tensor([2 * t, 2 * t + 1] * 8)) for t in range(2)]
    stream = stream_from_tensors(parts, parts, "task", backbone="resnet18-reduced")
    strategy = make_strategy("exssnet", {"sparsity": 0.2})
    torch.manual_seed(0)
    strategy.setup(stream.spec, build_backbone(stream.spec), train=TrainConfig(batch_size=8, lr=0.01,
                                                                                 optimizer="adam"), seed=0)
    x = stream[0].test.x
    outputs = []
    for exp in stream:
        strategy.before_experience(exp)
        for start in range(0, 16, 8):
            part = exp.train.subset(slice(start, start + 8))
            strategy.train_step(Batch(part.x, part.y, part.task))
        strategy.after_experience(exp)
        with torch.no_grad():
            outputs.append(strategy.predict(x, 0))
    assert torch.equal(outputs[0], outputs[1])
    assert len(strategy.bn_stats_) == 2 and not torch.equal(*(s["features.1.running_mean"]
                                                              for s in strategy.bn_stats_))
    assert all(not p.requires_grad for p in strategy.model_.parameters())


def test_knn_accuracy_matches_a_hand_example():
    train_x = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1]])
    train_y = torch.tensor([0, 0, 0, 1, 1])
    test_x, test_y = torch.tensor([[0.05], [5.05], [4.0]]), torch.tensor([0, 1, 0])
    assert exssnet_module.knn_accuracy(train_x, train_y, test_x, test_y, k=1) == pytest.approx(2 / 3)
    assert exssnet_module.knn_accuracy(train_x, train_y, test_x, test_y, k=5) == pytest.approx(2 / 3)  # majority 0
    assert exssnet_module.knn_accuracy(train_x, train_y, test_x, test_y, k=50) == pytest.approx(2 / 3)  # k clamped


def fake_accuracies(values):
    it = iter(values)
    return lambda *args, **kwargs: next(it)


def test_kkt_copies_the_scores_of_the_best_earlier_task_above_chance(digits_task, monkeypatch):
    """KKT on a task that repeats task 0's data (relabelled to its own units) starts from task 0's scores; the
    choice is the argmax of the KNN accuracies, and none when no task beats chance."""
    first = digits_task[0]
    parts = [(first.train.x, first.train.y + 2 * t) for t in range(2)]
    tests = [(first.test.x, first.test.y + 2 * t) for t in range(2)]
    stream = stream_from_tensors(parts, tests, "task", backbone="mlp100")
    strategy, _, _ = train_tasks(stream, 1, {"kkt": True, "kkt_k": 5, "weight_epochs": 0})
    strategy.before_experience(stream[1])
    assert strategy.kkt_sources_ == [None, 0] and strategy.kkt_accuracies_[0] > 0.9
    for n, s in strategy.scores_.items():
        assert torch.equal(s.detach(), strategy.scores_history_[0][n])
    # task 0's packed mask and float scores (kept for KKT), plus the scores of task 1 being learned
    assert strategy.state_bytes() == sum(math.ceil(w.numel() / 8) + 8 * w.numel() for w in strategy.weights_.values())

    strategy, _, _ = train_tasks(digits_task, 3, {"kkt": True, "weight_epochs": 0})
    for fake, expected in (([0.55, 0.9, 0.7], 1), ([0.5, 0.4, 0.45], None)):
        monkeypatch.setattr(exssnet_module, "knn_accuracy", fake_accuracies(fake))
        assert strategy.knn_source_task(digits_task[3]) == expected


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sparsity": 0.0}, r"sparsity.*\(0, 1\].*0\.0"),
        ({"sparsity": 1.5}, r"sparsity.*1\.5"),
        ({"sparsity": -0.1}, r"sparsity.*-0\.1"),
        ({"sparsity": "dense"}, r"sparsity='dense'.*float"),
        ({"weight_epochs": -1}, r"weight_epochs.*-1"),
        ({"weight_lr": 0.0}, r"weight_lr.*positive.*0\.0"),
        ({"weight_lr": float("nan")}, r"weight_lr.*nan"),
        ({"kkt_k": 0}, r"kkt_k.*at least 1.*0"),
        ({"density": 0.1}, r"unknown hyperparameter 'density'.*sparsity"),
    ],
)
def test_bad_hyperparameters_are_rejected(params, message):
    with pytest.raises(UsageError, match=message):
        make_strategy("exssnet", params)


def test_only_task_incremental_and_task_ids_required(digits_task):
    strategy = make_strategy("exssnet")
    for scenario in ("class", "domain"):
        with pytest.raises(UsageError, match=scenario):
            strategy.check_scenario(scenario)
    strategy.setup(digits_task.spec, build_backbone(digits_task.spec), train=FAST_TRAIN, seed=0)
    with pytest.raises(UsageError, match="task id"):
        strategy.predict(digits_task[0].test.x[:3], None)


def test_state_bytes_counts_the_stored_masks(digits_task):
    strategy, _, _ = train_tasks(digits_task, 3, {"weight_epochs": 0})
    per_task = sum(math.ceil(w.numel() / 8) for w in strategy.weights_.values())  # 1 bit per maskable weight
    assert per_task > 0 and strategy.state_bytes() == 3 * per_task
    strategy.masks_.pop()
    assert strategy.state_bytes() == 2 * per_task
