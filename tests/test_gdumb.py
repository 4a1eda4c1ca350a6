"""GDumb: the paper's greedy sampler on hand-made label streams (exact memories), a class-balanced memory at capacity,
and a model discarded and freshly initialised from the strategy's own generator before every experience."""

import pytest
import torch
from torch import nn

from clbench.benchmarks import build_backbone
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import make_strategy
from clbench.strategies.base import TrainConfig
from clbench.strategies.gdumb import GDumb, greedy_sample
from tests.conftest import FAST_TRAIN, config
from tests.helpers import ready, train_on


def offer(labels, capacity, memory=(), n_classes=3, uniforms=None, seen=None):
    """greedy_sample offering `labels` to a memory that holds `memory` (labels): (kept pool positions, seen)."""
    seen = torch.zeros(n_classes, dtype=torch.bool) if seen is None else seen
    pool = torch.tensor([*memory, *labels], dtype=torch.long)
    u = torch.zeros(len(labels), dtype=torch.float64) if uniforms is None else torch.tensor(uniforms,
                                                                                          dtype=torch.float64)
    return greedy_sample(pool, len(memory), capacity, seen, u).tolist(), seen


def counts_of(labels, n_classes):
    return torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=n_classes).tolist()


# -- the sampler (the paper's Algorithm 1) ---------------------------------------------------------------------------
def test_the_greedy_rule_on_a_tiny_sequence_matches_the_hand_computed_memory():
    # k = 4. Positions 0-3 fill the memory: counts (3, 1, 0).
    # 4: label 1, |Y| = 2, 1·2 < 4 -> evict member floor(0.5·3) = 1 of class 0 [0, 1, 2]: position 1     (2, 2, 0)
    # 5: label 2, |Y| = 3, 0·3 < 4 -> classes 0 and 1 tie at 2, the lowest label goes: class 0 [0, 2],
    #    floor(0.9·2) = 1: position 2                                                                      (1, 2, 1)
    # 6: label 0, 1·3 < 4 -> class 1 [3, 4] is the largest; floor(0.1·2) = 0: position 3                  (2, 1, 1)
    # 7: label 2, 1·3 < 4 -> class 0 [0, 6]; floor(0.6·2) = 1: position 6                                 (1, 1, 2)
    # 8: label 2, 2·3 = 6, not < 4 -> skipped
    # 9: label 1, 1·3 < 4 -> class 2 [5, 7]; floor(0.0·2) = 0: position 5                                 (1, 2, 1)
    labels = [0, 0, 0, 1, 1, 2, 0, 2, 2, 1]
    uniforms = [0.7, 0.7, 0.7, 0.7, 0.5, 0.9, 0.1, 0.6, 0.3, 0.0]  # the four that fill the memory draw nothing
    kept, seen = offer(labels, 4, uniforms=uniforms)
    assert kept == [0, 4, 7, 9]
    assert seen.tolist() == [True, True, True]


def test_a_class_at_its_share_is_skipped_even_when_another_class_is_larger():
    # k = 6: the fill gives counts (1, 2, 3), |Y| = 3, so k / |Y| = 2.
    # 6: label 1, 2 < 2 is false -> skipped (the rule "fewer than the largest class" would swap it in);
    # 7: label 0, 1 < 2 -> evicts the oldest (u = 0) member of class 2 [0, 1, 2]: position 0.
    kept, _ = offer([2, 2, 2, 1, 1, 0, 1, 0], 6)
    assert kept == [1, 2, 3, 4, 5, 7]


def test_an_imbalanced_stream_ends_balanced_at_capacity_with_the_hand_computed_counts():
    """Labels 0,0,0,0,1,1,2 repeated ten times (40 : 20 : 10), k = 12, so k / |Y| = 4 once all three are seen.
    The fill (positions 0-11) gives (8, 3, 1); then 1 (pos 12) -> (7, 4, 1), 2 (13) -> (6, 4, 2), 2 (20) ->
    (5, 4, 3), 2 (27) -> (4, 4, 4); every later sample is at its share and skipped. With u = 0 the oldest member of
    class 0 goes each time: it keeps the last four of its first eight, positions 7-10."""
    labels = [0, 0, 0, 0, 1, 1, 2] * 10
    kept, _ = offer(labels, 12)
    assert len(kept) == 12
    assert counts_of([labels[p] for p in kept], 3) == [4, 4, 4]
    assert kept == sorted([7, 8, 9, 10] + [4, 5, 11, 12] + [6, 13, 20, 27])


def test_memory_carried_across_experiences_counts_the_labels_seen_before():
    """Three experiences of one label each, k = 10: 30 zeros fill and then are all skipped; five ones take half;
    of twenty twos only the first four enter (n_2·3 < 10 up to n_2 = 3), evicting from the largest class (lowest
    label on ties): (5, 5) -> (4, 5, 1) -> (4, 4, 2) -> (3, 4, 3) -> (3, 3, 4)."""
    seen = torch.zeros(3, dtype=torch.bool)
    kept, _ = offer([0] * 30, 10, seen=seen)
    assert kept == list(range(10))
    memory = [0] * 10
    kept, _ = offer([1] * 5, 10, memory=memory, seen=seen)
    memory = [([0] * 10 + [1] * 5)[p] for p in kept]
    assert counts_of(memory, 3) == [5, 5, 0] and kept[-5:] == list(range(10, 15))  # every 1 entered
    kept, _ = offer([2] * 20, 10, memory=memory, seen=seen)
    assert counts_of([(memory + [2] * 20)[p] for p in kept], 3) == [3, 3, 4]
    assert [p - 10 for p in kept if p >= 10] == [0, 1, 2, 3]  # the first four twos, and no other


# -- the strategy's memory ------------------------------------------------------------------------------------------
def test_memory_is_updated_before_training_and_is_the_only_training_data(digits_class):
    """mem_size 50 through split digits (~127 samples per class per experience): after experience t the memory
    holds 50 samples over 2(t+1) labels, max - min <= 1, so the counts are forced: 25·2; 13·2 + 12·2; 9·2 + 8·4;
    7·2 + 6·6; 5·10."""
    expected = {0: [25, 25], 1: [12, 12, 13, 13], 2: [8, 8, 8, 8, 9, 9], 3: [6] * 6 + [7, 7], 4: [5] * 10}
    strategy = ready("gdumb", digits_class, {"mem_size": 50})
    for exp in digits_class:
        strategy.before_experience(exp)
        data = strategy.train_data(exp)
        assert data is strategy.memory_ and len(data) == 50
        counts = torch.bincount(data.y, minlength=10)
        seen = [c for e in list(digits_class)[: exp.index + 1] for c in e.classes]
        assert sorted(counts[seen].tolist()) == expected[exp.index]
        assert counts.sum() == counts[seen].sum()
        assert strategy.state_bytes() == data.nbytes + strategy.seen_.numel()
        strategy.after_experience(exp)


def test_the_offering_order_comes_from_the_generator(digits_class):
    def memory(seed):
        strategy = ready("gdumb", digits_class, {"mem_size": 40}, seed=seed)
        strategy.before_experience(digits_class[0])
        return strategy.memory_

    a, b, c = memory(0), memory(0), memory(1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert torch.bincount(a.y).tolist() == torch.bincount(c.y).tolist() == [20, 20]  # labels 0, 1: 20 each
    # room for the whole experience: nothing is evicted, and the memory is the experience in a seeded random order
    exp = digits_class[0]
    everything = ready("gdumb", digits_class, {"mem_size": len(exp.train)})
    order = torch.randperm(len(exp.train), generator=torch.Generator().set_state(everything.generator_.get_state()))
    everything.before_experience(exp)
    assert torch.equal(everything.memory_.x, exp.train.x[order]) and not torch.equal(order, torch.sort(order).values)


def test_domain_il_balances_per_label_so_a_full_balanced_memory_skips_later_domains(digits_domain):
    """Ten labels repeat in every domain; mem_size 200 = 20 per label: once full, n_y·10 < 200 never holds again."""
    strategy = ready("gdumb", digits_domain, {"mem_size": 200})
    strategy.before_experience(digits_domain[0])
    first = strategy.memory_
    assert torch.bincount(first.y, minlength=10).tolist() == [20] * 10
    strategy.before_experience(digits_domain[1])
    assert torch.equal(strategy.memory_.x, first.x) and strategy.memory_.task.unique().tolist() == [0]


def test_task_il_keeps_every_task_in_one_balanced_memory(digits_task):
    strategy = ready("gdumb", digits_task, {"mem_size": 60})
    for exp in list(digits_task)[:3]:
        train_on(strategy, exp)
    memory = strategy.memory_
    assert memory.task.unique().tolist() == [0, 1, 2]
    assert sorted(torch.bincount(memory.y, minlength=10)[memory.y.unique()].tolist()) == [10] * 6
    assert torch.equal(strategy.spec_.task_unit_mask()[memory.task, memory.y], torch.ones(60, dtype=torch.bool))


# -- the model is discarded -------------------------------------------------------------------------------------------
def _init_seed(strategy, exp):
    """The seed before_experience(exp) will draw: after the sampler's permutation and uniforms, from a copy of the
    strategy's generator."""
    g = torch.Generator().set_state(strategy.generator_.get_state())
    torch.randperm(len(exp.train), generator=g)
    torch.rand(len(exp.train), generator=g, dtype=torch.float64)
    return int(torch.randint(2**62, (1,), generator=g))


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_before_experience_replaces_the_trained_model_by_a_fresh_initialisation(digits_class):
    strategy = ready("gdumb", digits_class)
    train_on(strategy, digits_class[0])
    trained = _weights(strategy.model_)
    exp = digits_class[1]
    seed = _init_seed(strategy, exp)
    torch.manual_seed(seed)
    fresh = build_backbone(digits_class.spec).state_dict()  # what the runner builds under that seed
    torch.manual_seed(12345)
    global_state = torch.get_rng_state()
    strategy.before_experience(exp)
    assert torch.equal(torch.get_rng_state(), global_state)  # torch's global RNG is left alone
    now = strategy.model_.state_dict()
    assert all(torch.equal(now[k], fresh[k]) for k in fresh)
    assert all(not torch.equal(now[k], trained[k]) for k in trained if k.endswith("weight"))
    # a fresh optimizer over the model's parameters, with no state
    assert strategy.optimizer_.state_dict()["state"] == {}
    assert {id(p) for g in strategy.optimizer_.param_groups for p in g["params"]} == \
        {id(p) for p in strategy.model_.parameters()}


def test_fresh_initialisations_depend_on_the_strategy_seed_only(digits_class):
    def init_after_first_experience(strategy_seed, global_seed):
        strategy = make_strategy("gdumb")
        torch.manual_seed(global_seed)  # the runner's initial model: discarded
        strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=strategy_seed)
        torch.manual_seed(global_seed + 7)
        strategy.before_experience(digits_class[0])
        first = _weights(strategy.model_)
        strategy.before_experience(digits_class[1])
        return first, _weights(strategy.model_)

    a, a_next = init_after_first_experience(3, 0)
    b, b_next = init_after_first_experience(3, 1)
    c, _ = init_after_first_experience(4, 0)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a_next[k], b_next[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))
    assert all(not torch.equal(a[k], a_next[k]) for k in a if k.endswith("weight"))  # a new draw every experience


class WithBatchNorm(nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def test_batch_norm_statistics_are_reset_too(digits_class):
    strategy = make_strategy("gdumb", {"mem_size": 64})
    strategy.setup(digits_class.spec, WithBatchNorm(10), train=FAST_TRAIN, seed=0)
    train_on(strategy, digits_class[0])
    bn = strategy.model_.features[2]
    assert bn.num_batches_tracked > 0 and not torch.equal(bn.running_mean, torch.zeros(16))
    strategy.before_experience(digits_class[1])
    assert bn.num_batches_tracked == 0
    assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(bn.running_var, torch.ones(16))
    assert torch.equal(bn.weight.detach(), torch.ones(16)) and torch.equal(bn.bias.detach(), torch.zeros(16))


class NoReset(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(x.flatten(1) * self.scale)


def test_a_model_that_cannot_be_reinitialised_is_rejected(digits_class):
    with pytest.raises(UsageError, match=r"NoReset"):
        make_strategy("gdumb").setup(digits_class.spec, NoReset(), train=FAST_TRAIN, seed=0)


# -- settings and runs ----------------------------------------------------------------------------------------------
def test_settings_it_cannot_honour_are_rejected():
    with pytest.raises(UsageError, match="mem_size"):
        make_strategy("gdumb", {"mem_size": 0})
    with pytest.raises(UsageError, match="optimizer-state"):
        GDumb.check_train(TrainConfig(optimizer_state="keep"))


def test_a_run_trains_on_the_memory_only_with_the_runs_budget(digits_class, monkeypatch):
    """With `iterations` the runner's loop cuts exactly that many mini-batches per experience, all of the memory."""
    steps = []
    original = GDumb.train_step

    def train_step(self, batch):
        rows = (batch.x.flatten(1)[:, None, :] == self.memory_.x.flatten(1)[None]).all(-1)
        steps.append((len(batch.y), bool(rows.any(1).all())))
        return original(self, batch)

    monkeypatch.setattr(GDumb, "train_step", train_step)
    train = TrainConfig(iterations=5, batch_size=16, lr=0.05)
    result = loop.run(config("gdumb", params={"mem_size": 40}, train=train), digits_class, progress=False)
    assert result.status == "ok", result.error
    # 40 samples in batches of 16: passes of 16, 16, 8, reshuffled; 5 steps per experience
    assert steps == [(16, True), (16, True), (8, True), (16, True), (16, True)] * len(digits_class)
    assert all(c["strategy_mem_mb"] > 0 for c in result.costs if c["step"] >= 0)


def test_resumes_identically_after_an_interruption(digits_class, tmp_path, monkeypatch, caplog):
    from tests.test_checkpoint import _resumes_identically

    _resumes_identically(config("gdumb", params={"mem_size": 60}), GDumb, digits_class, tmp_path, monkeypatch,
                         caplog)
