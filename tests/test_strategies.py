"""The contract every registered strategy honours, and one test per strategy for its defining property."""

import dataclasses
import math

import pytest
import torch

from clbench.benchmarks import Batch, build_backbone
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import get_strategy, make_strategy, strategy_names
from clbench.strategies.base import SGDStrategy, Strategy
from tests.conftest import FAST_TRAIN, config

ALL = strategy_names()


def stream_for(name, request):
    """A small real stream in a scenario the strategy supports (class-IL when it can)."""
    scenarios = get_strategy(name).scenarios
    for scenario, fixture in (("class", "digits_class"), ("task", "digits_task"), ("domain", "digits_domain")):
        if scenario in scenarios:
            return scenario, request.getfixturevalue(fixture)
    raise AssertionError(f"{name} supports no scenario")


def test_registry_has_the_issue_strategies():
    assert {"naive", "joint", "ewc", "replay"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_contract(name, request):
    scenario, stream = stream_for(name, request)
    cls = get_strategy(name)
    # cheap construction with defaults; every hyperparameter is visible to `clbench list` and `--set`
    strategy = cls.from_params({})
    assert set(strategy.get_params()) == set(cls.hyperparameters())

    bench = "permuted-digits" if scenario == "domain" else "split-digits"
    n_exp = 3 if scenario == "domain" else None
    first = loop.run(config(name, scenario, seed=0, benchmark=bench, n_experiences=n_exp), stream, progress=False)
    assert first.status == "ok", first.error
    assert all(math.isfinite(c["train_loss"]) for c in first.costs if c["step"] >= 0)
    T = len(stream)
    accuracy = [e for e in first.evals if e["metric"] == "accuracy"]
    assert len(accuracy) == (T + 1) * T  # row b plus the full matrix R, upper triangle included
    taw = [e for e in first.evals if e["metric"] == "accuracy_taw"]  # class-IL: the task-aware twin of each row
    assert len(taw) == (len(accuracy) if scenario == "class" else 0)
    assert all(0.0 <= e["value"] <= 1.0 for e in first.evals)

    again = loop.run(config(name, scenario, seed=0, benchmark=bench, n_experiences=n_exp), stream, progress=False)
    assert again.evals == first.evals  # same seed: bit-identical accuracies
    other = loop.run(config(name, scenario, seed=1, benchmark=bench, n_experiences=n_exp), stream, progress=False)
    assert other.evals != first.evals


@pytest.mark.parametrize("name", ALL)
def test_predict_shape_under_no_grad(name, request):
    scenario, stream = stream_for(name, request)
    strategy = make_strategy(name)
    torch.manual_seed(0)
    strategy.setup(stream.spec, build_backbone(stream.spec), train=FAST_TRAIN, seed=0)
    exp = stream[0]
    strategy.begin_experience(exp)
    data = strategy.train_data(exp)
    stats = strategy.train_step(Batch(data.x[:16], data.y[:16], data.task[:16]))
    assert math.isfinite(stats["loss"])
    strategy.end_experience(exp)
    # every method but fine-tuning keeps something beyond the model after an experience, and reports it
    kept = strategy.state_bytes()
    assert isinstance(kept, int) and (kept == 0 if name == "naive" else kept > 0)
    with torch.no_grad():
        logits = strategy.predict(stream[1].test.x[:7], 1 if scenario == "task" else None)
    assert logits.shape == (7, stream.spec.n_classes)
    assert not logits.requires_grad


@pytest.mark.parametrize("name", ALL)
def test_unsupported_scenario_is_rejected(name):
    cls = get_strategy(name)
    missing = {"task", "domain", "class"} - set(cls.scenarios)
    strategy = cls.from_params({})
    for scenario in missing:
        with pytest.raises(UsageError, match=scenario):
            strategy.check_scenario(scenario)
    with pytest.raises(UsageError, match="bogus"):
        strategy.check_scenario("bogus")


def test_bad_hyperparameters_name_the_value_and_choices():
    with pytest.raises(UsageError, match=r"unknown hyperparameter 'lambda'.*ewc_lambda"):
        make_strategy("ewc", {"lambda": 1.0})
    with pytest.raises(UsageError, match=r"mem_size='big'.*int"):
        make_strategy("replay", {"mem_size": "big"})
    with pytest.raises(UsageError, match=r"'sideways'.*'separate', 'online'"):
        make_strategy("ewc", {"mode": "sideways"})
    with pytest.raises(UsageError, match="decay_factor"):
        make_strategy("ewc", {"mode": "online"})
    with pytest.raises(UsageError, match=r"unknown strategy 'nope'.*naive"):
        get_strategy("nope")


def test_user_strategy_by_module_path():
    cls = get_strategy("tests.user_strategies:Diverging")
    assert issubclass(cls, Strategy)
    for bad in ("tests.user_strategies:NoSuchClass", "tests.no_such_module:X"):
        with pytest.raises(UsageError, match="cannot load"):
            get_strategy(bad)


def test_a_users_subclass_of_a_builtin_runs_as_itself(digits_class):
    variant = get_strategy("tests.user_strategies:KeepOptimizer")
    assert variant.name == "KeepOptimizer" and get_strategy("agem").name == "agem"
    ours = loop.run(config("tests.user_strategies:KeepOptimizer"), digits_class, progress=False)
    builtin = loop.run(config("agem"), digits_class, progress=False)
    assert ours.status == builtin.status == "ok"
    assert ours.evals != builtin.evals  # the override took effect (momentum carried over)


# -- defining properties ---------------------------------------------------------------------------------------------


def test_ewc_with_zero_lambda_is_naive_bit_for_bit(digits_class):
    naive = loop.run(config("naive"), digits_class, progress=False)
    ewc = loop.run(config("ewc", params={"ewc_lambda": 0.0}), digits_class, progress=False)
    assert naive.status == ewc.status == "ok"
    assert ewc.evals == naive.evals
    assert [c["train_loss"] for c in ewc.costs] == [c["train_loss"] for c in naive.costs]


def test_ewc_penalty_holds_important_weights_near_their_anchor(digits_class):
    """The defining property: training the next experience moves the Fisher-weighted distance from the anchor,
    Σ F (θ − θ*)², far less with a strong penalty than with none (λ = 0 takes the same code path)."""

    def drift(ewc_lambda):
        strategy = make_strategy("ewc", {"ewc_lambda": ewc_lambda})
        torch.manual_seed(0)
        strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=0)
        for exp in list(digits_class)[:2]:
            strategy.begin_experience(exp)
            for start in range(0, len(exp.train), 32):
                part = exp.train.subset(slice(start, start + 32))
                strategy.train_step(Batch(part.x, part.y, part.task))
            if exp.index == 0:
                strategy.end_experience(exp)
        (fisher,), (anchor,) = strategy.importances_, strategy.anchors_
        return sum((fisher[n] * (p - anchor[n]).pow(2)).sum().item() for n, p in strategy.model_.named_parameters())

    free, held = drift(0.0), drift(100.0)
    assert free > 0 and held < 0.2 * free, (free, held)


def test_ewc_folded_penalty_equals_the_sum_of_separate_penalties(digits_class):
    """One folded term A(θ − m)² + K gives the value and gradient of Σ_k F_k (θ − θ*_k)² over the stored
    experiences."""
    from tests.helpers import trained

    strategy = trained("ewc", digits_class, {"ewc_lambda": 3.0}, n_exp=3)
    assert len(strategy.importances_) == 3
    model = strategy.model_
    with torch.no_grad():  # move away from the last anchor so that every term matters
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    logits = model(digits_class[3].train.x[:8])
    folded = strategy.penalty(None, None, logits)
    pairs = list(zip(strategy.importances_, strategy.anchors_, strict=True))
    explicit = 3.0 * sum((f[n] * (p - a[n]).pow(2)).sum() for f, a in pairs for n, p in model.named_parameters())
    torch.testing.assert_close(folded, explicit, rtol=1e-5, atol=1e-7)
    g_folded = torch.autograd.grad(folded, list(model.parameters()))
    g_explicit = torch.autograd.grad(explicit, list(model.parameters()))
    for a, b in zip(g_folded, g_explicit, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_ewc_fisher_matches_per_sample_loop(digits_class):
    """The vmap Fisher equals the mean of squared per-sample gradients computed one sample at a time."""
    strategy = make_strategy("ewc")
    torch.manual_seed(0)
    model = build_backbone(digits_class.spec)
    strategy.setup(digits_class.spec, model, train=FAST_TRAIN, seed=0)
    data = digits_class[0].train.subset(torch.arange(10))
    fisher = strategy.empirical_fisher(data)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(data)):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1])
        loss.backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.pow(2) / len(data)
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-7)
    # the closed form used for MLPs and the generic torch.func path agree with each other too
    params = dict(model.named_parameters())
    closed, generic = strategy._squared_grad_sums_linear(data), strategy._squared_grad_sums_vmap(data, params)
    assert closed is not None and set(closed) == set(generic) == set(params)
    for n in params:
        torch.testing.assert_close(closed[n], generic[n], rtol=1e-4, atol=1e-7)


def test_ewc_fisher_on_a_convolutional_backbone_uses_torch_func():
    """A model with convolutions and batch norm takes the vmap path and still matches the per-sample loop."""
    from clbench.benchmarks import stream_from_tensors

    g = torch.Generator().manual_seed(0)
    parts = [(torch.rand(12, 3, 32, 32, generator=g), torch.tensor([2 * t, 2 * t + 1] * 6)) for t in range(2)]
    stream = stream_from_tensors(parts, parts, "class", backbone="resnet18-reduced")
    strategy = make_strategy("ewc", {"fisher_batch_size": 5})
    torch.manual_seed(0)
    model = build_backbone(stream.spec)
    strategy.setup(stream.spec, model, train=FAST_TRAIN, seed=0)
    data = stream[0].train
    fisher = strategy.empirical_fisher(data)
    model.eval()
    for i in range(3):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1]).backward()
    expected = {}
    for i in range(len(data)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] = expected.get(n, 0) + p.grad.pow(2) / len(data)
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-3, atol=1e-8)


def test_online_ewc_keeps_one_decayed_penalty(digits_class):
    strategy = make_strategy("ewc", {"mode": "online", "decay_factor": 0.5})
    torch.manual_seed(0)
    strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=0)
    strategy.end_experience(digits_class[0])
    first = {n: f.clone() for n, f in strategy.importances_[0].items()}
    strategy.end_experience(digits_class[1])
    assert len(strategy.importances_) == 1
    new = strategy.empirical_fisher(digits_class[1].train)
    for n in first:
        torch.testing.assert_close(strategy.importances_[0][n], 0.5 * first[n] + new[n])


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
def test_replay_buffer_size_and_content(digits_class, policy):
    strategy = make_strategy("replay", {"mem_size": 50, "storage_policy": policy})
    torch.manual_seed(0)
    strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=0)
    seen = []
    for exp in list(digits_class)[:3]:
        strategy.end_experience(exp)
        seen.append(exp.train)
        assert len(strategy.buffer_) == 50
    buffer = strategy.buffer_
    # every stored sample is a real sample of an experience seen so far, with its own label and task id
    for x, y, t in zip(buffer.x, buffer.y, buffer.task, strict=True):
        source = seen[int(t)]
        match = (source.x == x).flatten(1).all(1)
        assert match.any() and bool((source.y[match] == y).all())
    counts = torch.bincount(buffer.y, minlength=digits_class.spec.n_classes)[:6]
    if policy == "class_balanced":
        assert sorted(counts.tolist()) == [8, 8, 8, 8, 9, 9]  # 50 slots over 6 seen classes
    assert strategy.state_bytes() > 0


def test_reservoir_is_uniform_over_everything_seen(digits_class):
    """After three equal-size experiences, each holds about a third of the reservoir (sampling is exact)."""
    shares = torch.zeros(3)
    for seed in range(20):
        strategy = make_strategy("replay", {"mem_size": 60})
        strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=seed)
        for exp in list(digits_class)[:3]:
            strategy.end_experience(exp)
        shares += torch.bincount(strategy.buffer_.task, minlength=3)[:3].float()
    sizes = torch.tensor([len(digits_class[i].train) for i in range(3)], dtype=torch.float)
    torch.testing.assert_close(shares / shares.sum(), sizes / sizes.sum(), atol=0.04, rtol=0)


def test_replay_batches_mix_memory(digits_class):
    strategy = make_strategy("replay", {"mem_size": 40, "batch_size_mem": 10})
    strategy.setup(digits_class.spec, build_backbone(digits_class.spec), train=FAST_TRAIN, seed=0)
    exp = digits_class[1]
    batch = Batch(exp.train.x[:8], exp.train.y[:8], exp.train.task[:8])
    assert len(strategy.augment_batch(batch)) == 8  # nothing stored yet
    strategy.end_experience(digits_class[0])
    augmented = strategy.augment_batch(batch)
    assert len(augmented) == 18 and set(augmented.task[8:].tolist()) == {0}


def test_joint_row_i_is_trained_on_the_union_from_scratch(digits_class):
    strategy = make_strategy("joint")
    torch.manual_seed(0)
    model = build_backbone(digits_class.spec)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    strategy.setup(digits_class.spec, model, train=FAST_TRAIN, seed=0)
    strategy.begin_experience(digits_class[0])
    strategy.train_step(Batch(digits_class[0].train.x[:8], digits_class[0].train.y[:8], digits_class[0].train.task[:8]))
    strategy.begin_experience(digits_class[1])
    for k, v in model.state_dict().items():
        assert torch.equal(v, initial[k])  # restarted from the run's initial weights
    union = strategy.train_data(digits_class[1])
    assert len(union) == len(digits_class[0].train) + len(digits_class[1].train)


def test_task_il_masks_logits_to_the_task_units(digits_task):
    strategy = make_strategy("naive")
    strategy.setup(digits_task.spec, build_backbone(digits_task.spec), train=FAST_TRAIN, seed=0)
    with torch.no_grad():
        logits = strategy.predict(digits_task[2].test.x[:5], 2)
    allowed = list(digits_task.spec.classes_per_experience[2])
    assert set(logits.argmax(1).tolist()) <= set(allowed)


def test_sgd_template_is_the_base_of_the_template_strategies():
    for name in ("naive", "joint", "ewc", "replay"):
        assert issubclass(get_strategy(name), SGDStrategy)


def test_packaged_strategy_through_the_entry_point_group(tmp_path, monkeypatch):
    """A distribution that declares `[clbench.strategies] name = module:Class` is found by name, without imports."""
    dist = tmp_path / "clbench_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clbench-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clbench.strategies]\ndemo-diverging = tests.user_strategies:Diverging\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "demo-diverging" in strategy_names()
    cls = get_strategy("demo-diverging")
    assert cls.__name__ == "Diverging" and "steps_before_nan" in cls.hyperparameters()


def test_ewc_fisher_at_predicted_labels_is_the_fisher_of_the_model_s_own_predictions(digits_class):
    """fisher_labels="predicted" (van de Ven & Tolias's choice) equals the empirical Fisher of data relabelled with
    the model's predictions, on the MLP closed form and on the generic torch.func path alike."""
    from clbench.benchmarks import TensorData
    from clbench.runners.config import RunConfig

    strategy = make_strategy("ewc", {"fisher_labels": "predicted", "fisher_batch_size": 4})
    torch.manual_seed(0)
    model = build_backbone(digits_class.spec)
    strategy.setup(digits_class.spec, model, train=FAST_TRAIN, seed=0)
    data = digits_class[0].train.subset(torch.arange(10))
    params = dict(model.named_parameters())
    predicted = model(data.x).argmax(1)
    assert not torch.equal(predicted, data.y)  # an untrained model: the two Fishers differ
    fisher, generic = strategy.empirical_fisher(data), strategy._squared_grad_sums_vmap(data, params)
    strategy.fisher_labels = "true"
    relabelled = TensorData(data.x, predicted, data.task)
    expected = strategy.empirical_fisher(relabelled)
    at_true_labels = strategy.empirical_fisher(data)
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n])
        torch.testing.assert_close(generic[n] / len(data), expected[n], rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(fisher[n], at_true_labels[n]) for n in fisher)
    # Run ids recorded before the option existed stay valid; the new value gives a new id.
    default = RunConfig("split-digits", "class", "ewc", params=make_strategy("ewc").get_params())
    assert "fisher_labels" not in default.canonical()["params"]
    assert RunConfig("split-digits", "class", "ewc", params={**default.params, "fisher_labels": "predicted"}).run_id \
        != default.run_id


@pytest.mark.parametrize("name", ALL)
def test_continual_evaluation_does_not_change_training(name, request):
    """De Lange et al.'s periodic evaluation runs in the middle of training (every 3 steps here): the boundary rows
    must be bit for bit those of the run without it, for every strategy (its own loops, teachers and caches too)."""
    scenario, stream = stream_for(name, request)
    bench = "permuted-digits" if scenario == "domain" else "split-digits"
    n_exp = 3 if scenario == "domain" else None
    plain = loop.run(config(name, scenario, benchmark=bench, n_experiences=n_exp), stream, progress=False)
    periodic = loop.run(dataclasses.replace(config(name, scenario, benchmark=bench, n_experiences=n_exp),
                                            eval_period=3, eval_subset=50), stream, progress=False)
    assert plain.status == periodic.status == "ok", periodic.error
    assert periodic.evals == plain.evals
    assert [c["train_loss"] for c in periodic.costs] == [c["train_loss"] for c in plain.costs]
    assert plain.curves == [] and periodic.curves
    trained = {r["train_exp"] for r in periodic.curves}
    assert trained <= set(range(len(stream))) and len(stream) - 1 in trained
