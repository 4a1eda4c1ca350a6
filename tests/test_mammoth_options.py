"""Method options that follow Mammoth's code: GEM's shared class-balanced memory, replay's streaming reservoir,
LwF's head warm-up and seen-class cross-entropy, EWC's probability-weighted Fisher — each on its defining property;
all four validated, resumable from a checkpoint, and absent from the run ids of runs that keep the defaults."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clbench.benchmarks import TensorData
from clbench.errors import UsageError
from clbench.runners.config import RunConfig
from clbench.strategies import get_strategy, make_strategy
from clbench.strategies.base import TrainConfig
from tests.conftest import config
from tests.helpers import batches, ready, train_on
from tests.test_checkpoint import SGD, _resumes_identically


def _rows_in(rows: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """For each row of `rows`, whether it is one of the rows of `source` (compared flattened, exactly)."""
    return (rows.flatten(1)[:, None] == source.flatten(1)[None]).all(2).any(1)


# -- GEM: one shared memory, class-balanced with a shrinking quota -----------------------------------------------------
def test_shared_gem_memory_is_class_balanced_with_a_quota_that_shrinks(digits_class):
    strategy = ready("gem", digits_class, {"memory": "shared", "mem_size": 40})
    previous = None
    for t, exp in enumerate(digits_class):
        strategy.after_experience(exp)
        quota = 40 // (2 * (t + 1))  # 20, 10, 6, 5, 4 per class
        memory = strategy.memory_
        assert len(memory) == quota * 2 * (t + 1) <= 40
        assert strategy.memory_sizes_ == [2 * quota] * (t + 1)  # one block per stored experience
        counts = torch.bincount(memory.y, minlength=10)
        seen = [c for e in list(digits_class)[: t + 1] for c in e.classes]
        assert all(counts[c] == quota for c in seen) and counts.sum() == quota * len(seen)
        for index, block in enumerate(strategy.experience_memories()):
            assert (block.task == index).all() and set(block.y.tolist()) == set(digits_class[index].classes)
            assert _rows_in(block.x, digits_class[index].train.x).all()  # real samples of that experience
        if previous is not None:  # old classes are cut, never redrawn: what stays was stored before
            old = memory.subset(memory.task < t)
            assert _rows_in(old.x, previous.x).all()
        previous = memory
    assert len(strategy.memory_) == 40  # 10 classes × 4: exactly mem_size once it divides evenly
    assert strategy.state_bytes() == memory.nbytes


def test_shared_gem_has_one_constraint_per_stored_experience_and_satisfies_them(digits_class):
    strategy = ready("gem", digits_class, {"memory": "shared", "mem_size": 60, "memory_strength": 0.0})
    for exp in list(digits_class)[:3]:
        train_on(strategy, exp)
    memories = strategy.experience_memories()
    assert [len(m) for m in memories] == [20, 20, 20]  # 60 // 6 classes = 10 per class
    G = torch.stack([strategy.memory_gradient(m) for m in memories])
    calls = []
    original = strategy.memory_gradient
    strategy.memory_gradient = lambda data: calls.append(len(data)) or original(data)
    conflicts = 0
    for batch in batches(digits_class[3].train, size=16, n=8):
        strategy.model_.zero_grad(set_to_none=True)
        F.cross_entropy(strategy.model_(batch.x), batch.y).backward()
        g = strategy.current_gradient()
        calls.clear()
        strategy.project_gradients(batch)
        assert calls == [20, 20, 20]  # one memory gradient per stored experience
        if (G @ g < 0).any():
            conflicts += 1
            assert (G @ strategy.current_gradient()).min() >= -1e-5
    assert conflicts, "no batch conflicted with the memory"


def test_shared_gem_in_domain_il_counts_each_experience_s_classes(digits_domain):
    strategy = ready("gem", digits_domain, {"memory": "shared", "mem_size": 60})
    for exp, quota in zip(digits_domain, (6, 3, 2), strict=True):  # 60 // 10, 60 // 20, 60 // 30
        strategy.after_experience(exp)
        for block in strategy.experience_memories():
            assert torch.equal(torch.bincount(block.y, minlength=10), torch.full((10,), quota))


def test_per_experience_gem_is_unchanged(digits_class):
    strategy = ready("gem", digits_class, {"patterns_per_exp": 30})
    for exp in list(digits_class)[:3]:
        strategy.after_experience(exp)
    assert strategy.memory_sizes_ == [30, 30, 30] and strategy.classes_stored_ == 0


# -- replay: a reservoir updated with every incoming batch -------------------------------------------------------------
def test_stream_reservoir_replays_the_current_experience_and_never_exceeds_mem_size(digits_class):
    strategy = ready("replay", digits_class, {"mem_size": 30, "batch_size_mem": 8, "update": "stream"})
    exp = digits_class[0]
    strategy.before_experience(exp)
    seen = 0
    for step, batch in enumerate(batches(exp.train, size=16)):
        augmented = strategy.augment_batch(batch)
        assert len(augmented.y) == len(batch.y) + (0 if step == 0 else 8)  # replays from the second step on
        strategy.train_step(batch)
        seen += len(batch.y)
        assert len(strategy.buffer_) == min(seen, 30)
        assert (strategy.buffer_.task == 0).all()  # the experience being trained, replayed to itself
        assert _rows_in(strategy.buffer_.x, exp.train.x[:seen]).all()  # only samples that have arrived
    before = strategy.buffer_
    strategy.after_experience(exp)
    assert strategy.buffer_ is before  # nothing more at the boundary


def test_stream_reservoir_keeps_the_smallest_keys_and_includes_each_sample_uniformly(digits_class):
    """20 samples in 4 batches of 5, mem_size 5: the memory is exactly the 5 samples with the smallest of the keys
    drawn for them, so each sample is in it with probability 5/20."""
    samples = TensorData(torch.arange(20.0).reshape(20, 1), torch.zeros(20, dtype=torch.long),
                         torch.zeros(20, dtype=torch.long))
    included = torch.zeros(20)
    trials = 600
    for seed in range(trials):
        strategy = ready("replay", digits_class, {"mem_size": 5, "update": "stream"}, seed=seed)
        drawn = []
        for start in range(0, 20, 5):
            twin = torch.Generator().manual_seed(0)
            twin.set_state(strategy.generator_.get_state())
            drawn.append(torch.rand(5, generator=twin))  # the keys the memory is about to draw
            strategy._store(samples.subset(slice(start, start + 5)))
            assert len(strategy.buffer_) == min(start + 5, 5)
        kept = strategy.buffer_.x.flatten().long()
        assert set(kept.tolist()) == set(torch.argsort(torch.cat(drawn))[:5].tolist())
        included[kept] += 1
    frequency = included / trials
    # binomial SE √(0.25·0.75/600) ≈ 0.018: ±0.08 is 4.5 SE per sample
    assert (frequency - 0.25).abs().max() < 0.08, frequency
    # the first and the last batch alike (an update after each experience would keep the first samples only)
    assert frequency[:5].mean() == pytest.approx(0.25, abs=0.04)
    assert frequency[15:].mean() == pytest.approx(0.25, abs=0.04)


def test_replay_subclasses_keep_the_experience_update():
    assert make_strategy("er-ace").update == "experience"
    assert make_strategy("center-loss", {"mem_size": 10}).update == "experience"
    assert "update" not in get_strategy("er-ace").hyperparameters()


# -- LwF: warm-up of the new head, cross-entropy over the seen classes -------------------------------------------------
def _lwf_after_first(stream, params):
    strategy = ready("lwf", stream, params)
    train_on(strategy, stream[0], n=4)
    return strategy


def test_lwf_warmup_changes_only_the_new_classes_head_rows(digits_class):
    strategy = _lwf_after_first(digits_class, {"warmup_epochs": 1})
    before = {n: p.detach().clone() for n, p in strategy.model_.named_parameters()}
    exp = digits_class[1]
    strategy.before_experience(exp)
    after = dict(strategy.model_.named_parameters())
    new = torch.zeros(10, dtype=torch.bool)
    new[list(exp.classes)] = True
    for name, value in before.items():
        if name.startswith("head."):
            assert torch.equal(after[name][~new], value[~new]), name  # old and unseen units untouched
            assert (after[name][new] != value[new]).any(), name  # the experience's units trained
        else:
            assert torch.equal(after[name], value), name  # the features frozen
    assert strategy.model_.training  # the warm-up's eval mode is undone


def test_lwf_warmup_does_nothing_before_the_first_experience_or_when_off(digits_class):
    for params, exp_index in (({"warmup_epochs": 2}, 0), ({"warmup_epochs": 0}, 1)):
        strategy = _lwf_after_first(digits_class, params) if exp_index else ready("lwf", digits_class, params)
        before = [p.detach().clone() for p in strategy.model_.parameters()]
        state = strategy.generator_.get_state()
        strategy.before_experience(digits_class[exp_index])
        assert all(torch.equal(a, b) for a, b in zip(before, strategy.model_.parameters(), strict=True))
        assert torch.equal(strategy.generator_.get_state(), state)


def _logit_gradient(strategy, exp):
    batch = batches(exp.train, size=16, n=1)[0]
    logits = strategy.model_(batch.x).detach().requires_grad_(True)
    loss = strategy.task_loss(logits, batch) + strategy.penalty(batch, None, logits)
    (grad,) = torch.autograd.grad(loss, logits)
    return grad


def test_lwf_seen_units_give_unseen_classes_no_gradient(digits_class):
    exp = digits_class[1]
    seen = torch.zeros(10, dtype=torch.bool)
    seen[list(digits_class[0].classes) + list(exp.classes)] = True
    strategy = _lwf_after_first(digits_class, {"ce_units": "seen"})
    strategy.before_experience(exp)
    grad = _logit_gradient(strategy, exp)
    assert torch.equal(grad[:, ~seen], torch.zeros_like(grad[:, ~seen]))
    assert (grad[:, seen] != 0).all()
    plain = _lwf_after_first(digits_class, {})
    plain.before_experience(exp)
    assert (_logit_gradient(plain, exp)[:, ~seen] != 0).all()  # the default pushes unseen classes down


def test_lwf_seen_units_change_nothing_in_task_il(digits_task):
    exp = digits_task[1]
    grads = []
    for units in ("all", "seen"):
        strategy = _lwf_after_first(digits_task, {"ce_units": units})
        strategy.before_experience(exp)
        grads.append(_logit_gradient(strategy, exp))
    assert torch.equal(grads[0], grads[1])


# -- EWC: squared gradients weighted by p(y | x) -----------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["class", "task"])
def test_probability_weighted_fisher_matches_the_hand_computed_one(scenario, request):
    """A linear model softmax(W x + b): sample k's gradient is (s_k − e_k) x_kᵀ for W and s_k − e_k for b (s the
    softmax over the sample's units), so F = mean_k s_k[y_k] · (those)², written out without autograd."""
    stream = request.getfixturevalue(f"digits_{scenario}")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    strategy = make_strategy("ewc", {"fisher_weighting": "prob", "fisher_batch_size": 7})
    strategy.setup(stream.spec, model, train=TrainConfig(), seed=0)
    data = stream[1].train.subset(torch.arange(20))
    x = data.x.flatten(1)
    with torch.no_grad():
        s = F.softmax(strategy.mask_logits(model(data.x), data.task), 1)
    delta = s - F.one_hot(data.y, 10).float()
    p = s[torch.arange(20), data.y]
    expected_w = (p[:, None, None] * (delta[:, :, None] * x[:, None, :]).pow(2)).mean(0)
    expected_b = (p[:, None] * delta.pow(2)).mean(0)
    fisher = strategy.empirical_fisher(data)
    torch.testing.assert_close(fisher["1.weight"], expected_w, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(fisher["1.bias"], expected_b, rtol=1e-5, atol=1e-8)
    generic = strategy._squared_grad_sums_vmap(data, strategy.trainable_parameters())  # the torch.func path too
    torch.testing.assert_close(generic["1.weight"] / 20, expected_w, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(generic["1.bias"] / 20, expected_b, rtol=1e-5, atol=1e-8)
    strategy.fisher_weighting = "none"
    unweighted = strategy.empirical_fisher(data)
    torch.testing.assert_close(unweighted["1.bias"], delta.pow(2).mean(0), rtol=1e-5, atol=1e-8)
    assert not torch.allclose(unweighted["1.bias"], expected_b)


# -- every option: validated, resumable, and out of the default run ids ------------------------------------------------
@pytest.mark.parametrize(("name", "params", "message"), [
    ("gem", {"memory": "ring"}, "memory='ring'"),
    ("gem", {"memory": "shared"}, "memory='shared' needs mem_size >= 1, got None"),
    ("gem", {"memory": "shared", "mem_size": 0}, "memory='shared' needs mem_size >= 1, got 0"),
    ("gem", {"mem_size": 200}, "mem_size is only used with memory='shared'"),
    ("replay", {"update": "batch"}, "update='batch'.*one of 'experience', 'stream'"),
    ("replay", {"update": "stream", "loss_weighting": "by_task"}, "loss_weighting='by_task' needs update="),
    ("lwf", {"warmup_epochs": -1}, "warmup_epochs must be >= 0, got -1"),
    ("lwf", {"warmup_epochs": 1.5}, "warmup_epochs=1.5"),
    ("lwf", {"ce_units": "old"}, "ce_units='old'.*one of 'all', 'seen'"),
    ("ewc", {"fisher_weighting": "sqrt"}, "fisher_weighting='sqrt'.*one of 'none', 'prob'"),
])
def test_bad_values_are_rejected(name, params, message):
    with pytest.raises(UsageError, match=message):
        make_strategy(name, params)


MAMMOTH_OPTIONS = [
    ("gem", {"memory": "shared", "mem_size": 40}),
    ("replay", {"mem_size": 40, "update": "stream"}),
    ("lwf", {"warmup_epochs": 1, "ce_units": "seen"}),
    ("ewc", {"mode": "online", "decay_factor": 1.0, "fisher_weighting": "prob"}),
]


@pytest.mark.parametrize(("name", "params"), MAMMOTH_OPTIONS)
def test_the_mammoth_options_resume_with_the_results_of_an_uninterrupted_run(name, params, tmp_path, monkeypatch,
                                                                            digits_class, caplog):
    cfg = config(name, "class", params=get_strategy(name).from_params(params).get_params(), train=SGD)
    _resumes_identically(cfg, get_strategy(name), digits_class, tmp_path, monkeypatch, caplog)


NEW_OPTIONS = {"gem": {"memory", "mem_size"}, "replay": {"update"}, "lwf": {"warmup_epochs", "ce_units"},
               "ewc": {"fisher_weighting"}}


@pytest.mark.parametrize(("name", "params"), MAMMOTH_OPTIONS)
def test_defaults_keep_earlier_run_ids_and_the_options_make_new_ones(name, params):
    defaults = make_strategy(name).get_params()
    assert NEW_OPTIONS[name] <= set(defaults)
    default = RunConfig("split-digits", "class", name, params=defaults)
    assert not NEW_OPTIONS[name] & set(default.canonical()["params"])  # as before the options existed
    chosen = RunConfig("split-digits", "class", name, params=make_strategy(name, params).get_params())
    assert chosen.run_id != default.run_id


# -- the mammoth presets: Mammoth's protocol and best arguments --------------------------------------------------------
def _preset_configs(name):
    from clbench.presets import get_preset
    from clbench.runners.sweep import sweep_from_dict

    preset = get_preset(name)
    return preset, [c for c in sweep_from_dict(preset.sweep, name).configs if c.seed == 0]


def test_the_mammoth_seq_mnist_preset_follows_mammoth_s_protocol_and_best_arguments():
    preset, configs = _preset_configs("mammoth-seq-mnist")
    assert "e75a491c69fd729edeb01431afb753d9157d9a81" in preset.provenance and "utils/best_args.py" in preset.provenance
    assert {(c.benchmark, c.scenario, c.class_order, c.backbone, c.train.normalize, c.train.batch_size,
             c.train.optimizer, c.train.momentum) for c in configs} \
        == {("split-mnist", "class", "natural", "mlp100", "none", 10, "sgd", 0.0)}
    by = {}
    for c in configs:
        by.setdefault(c.strategy, []).append(c)
    assert set(by) == {"naive", "ewc", "si", "lwf", "replay", "gem", "agem", "icarl", "der", "er-ace", "gdumb"}
    assert {(c.params["mem_size"], c.params["update"], c.params["batch_size_mem"], c.train.lr) for c in by["replay"]} \
        == {(200, "stream", 10, 0.01), (500, "stream", 10, 0.1)}
    assert {(c.params["memory"], c.params["mem_size"], c.params["memory_strength"], c.train.lr) for c in by["gem"]} \
        == {("shared", 200, 1.0, 0.01), ("shared", 500, 0.5, 0.03)}
    (lwf,) = by["lwf"]
    assert (lwf.params["warmup_epochs"], lwf.params["ce_units"], lwf.train.weight_decay, lwf.train.lr) \
        == (1, "seen", 0.0005, 0.03)
    (ewc,) = by["ewc"]
    assert (ewc.params["mode"], ewc.params["ewc_lambda"], ewc.params["decay_factor"], ewc.params["fisher_weighting"]) \
        == ("online", 90.0, 1.0, "prob")
    assert {c.params["patterns_per_exp"] for c in by["agem"]} == {40, 100, 10}  # buffer // 5, and Mammoth's effective
    # Mammoth's main.py runs every minibatch_size as the batch size (10) on seq-mnist, whatever best_args.py names
    assert {c.params["sample_size"] for c in by["agem"]} == {10}
    der = {(c.params["mem_size"], c.params["batch_size_mem"], c.params["alpha"], c.params["beta"]) for c in by["der"]}
    assert der == {(200, 10, 0.2, 0.0), (500, 10, 1.0, 0.0), (200, 10, 0.2, 1.0), (500, 10, 1.0, 0.5)}


def test_the_mammoth_perm_mnist_preset_follows_mammoth_s_protocol_and_best_arguments():
    preset, configs = _preset_configs("mammoth-perm-mnist")
    assert "e75a491c69fd729edeb01431afb753d9157d9a81" in preset.provenance
    assert {(c.benchmark, c.scenario, c.n_experiences, c.backbone, c.train.normalize, c.train.batch_size)
            for c in configs} == {("permuted-mnist", "domain", 20, "mlp100", "none", 128)}
    assert {c.strategy for c in configs} == {"naive", "ewc", "si", "replay", "gem", "agem", "der"}
    gem = [c for c in configs if c.strategy == "gem"]
    assert {(c.params["memory"], c.params["patterns_per_exp"]) for c in gem} \
        == {("per_experience", 10), ("per_experience", 25)}  # buffer // 20 tasks, the neurips2020 release's memory
