"""SupSup (Wortsman et al. 2020) and the supermask machinery it shares with ExSSNeT."""

import math
import re

import pytest
import torch

from clbench.benchmarks import Batch, build_backbone, stream_from_tensors
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import _supermask as sm
from clbench.strategies import make_strategy
from clbench.strategies.base import TrainConfig
from tests.conftest import config

ADAM = TrainConfig(epochs=3, batch_size=32, lr=1e-3, optimizer="adam")


def train_through(strategy, stream, train=ADAM, seed=0):
    """setup + the runner's lifecycle by hand (so the test can look inside the strategy)."""
    torch.manual_seed(seed)
    model = build_backbone(stream.spec)
    strategy.setup(stream.spec, model, train=train, seed=seed)
    return model


def fit(strategy, exp, epochs=1, batch_size=32):
    strategy.before_experience(exp)
    g = torch.Generator().manual_seed(exp.index)
    for _ in range(epochs):
        order = torch.randperm(len(exp.train), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            strategy.train_step(Batch(exp.train.x[idx], exp.train.y[idx], exp.train.task[idx]))
    strategy.after_experience(exp)


# -- the machinery ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.02, 0.05, 0.5, 1.0])
def test_topk_mask_keeps_the_requested_fraction_of_largest_magnitudes(density):
    scores = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    mask = sm.topk_mask(scores, density)
    kept = int(mask.sum())
    assert kept == sm.kept_count(scores.numel(), density) == 1200 - int((1 - density) * 1200)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # every kept |score| is at least every dropped one
    if kept < scores.numel():
        assert scores.abs()[mask.bool()].min() >= scores.abs()[~mask.bool()].max()


def test_topk_mask_gradient_is_straight_through():
    scores = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    upstream = torch.randn(5, 7, generator=torch.Generator().manual_seed(2))
    (sm.topk_mask(scores, 0.3) * upstream).sum().backward()
    torch.testing.assert_close(scores.grad, upstream * scores.detach().sign())  # identity through |·|
    scores.grad = None
    (sm.topk_mask(scores, 0.3, absolute=False) * upstream).sum().backward()
    torch.testing.assert_close(scores.grad, upstream)


def test_signed_constant_freezes_a_bias_free_network(digits_task):
    torch.manual_seed(0)
    model = build_backbone(digits_task.spec)
    signs = {n: w.detach().sign() for n, w in sm.maskable_weights(model).items()}
    sm.signed_constant_(model)
    for name, w in sm.maskable_weights(model).items():
        sigma = math.sqrt(2.0 / w.shape[1])  # Kaiming-normal std, fan_in of a Linear
        torch.testing.assert_close(w.abs(), torch.full_like(w, sigma))
        assert torch.equal(w.sign(), signs[name])
    for name, p in model.named_parameters():
        assert not p.requires_grad
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0


def test_pack_unpack_and_superposition():
    g = torch.Generator().manual_seed(0)
    masks = [{"w": (torch.rand(13, 7, generator=g) < 0.4).float()} for _ in range(3)]
    for m in masks:
        packed = sm.pack_mask(m["w"])
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(91 / 8)
        assert torch.equal(sm.unpack_mask(packed, (13, 7)), m["w"])
    alphas = torch.tensor([0.2, 0.3, 0.5])
    expected = 0.2 * masks[0]["w"] + 0.3 * masks[1]["w"] + 0.5 * masks[2]["w"]
    torch.testing.assert_close(sm.superimpose(masks, alphas)["w"], expected)


def test_masked_forward_equals_a_model_with_masked_weights(digits_task):
    torch.manual_seed(0)
    model = build_backbone(digits_task.spec)
    sm.signed_constant_(model)
    scores = sm.init_scores(sm.maskable_weights(model), torch.Generator().manual_seed(0))
    masks = {n: m.detach() for n, m in sm.topk_masks(scores, 0.1).items()}
    x = digits_task[0].test.x[:9]
    out = sm.masked_forward(model, masks, x)
    with torch.no_grad():
        for name, w in sm.maskable_weights(model).items():
            w.mul_(masks[name])
        torch.testing.assert_close(out, model(x))


# -- the strategy -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_bad_sparsity_is_rejected(value):
    with pytest.raises(UsageError, match=rf"sparsity.*\(0, 1\].*{re.escape(str(value))}"):
        make_strategy("supsup", {"sparsity": value})
    with pytest.raises(UsageError, match="sparsity"):
        make_strategy("supsup", {"sparsity": "dense"})


def test_a_sparsity_that_keeps_no_weight_of_a_layer_is_rejected(digits_task):
    strategy = make_strategy("supsup", {"sparsity": 1e-17})  # 1 - 1e-17 == 1.0: keeps 0 weights
    with pytest.raises(UsageError, match=r"sparsity=1e-17 keeps no weight of layer features.2.weight"):
        train_through(strategy, digits_task)


def test_backbone_never_changes_and_masks_have_the_requested_density(digits_task):
    strategy = make_strategy("supsup", {"sparsity": 0.05})
    model = train_through(strategy, digits_task)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    for exp in list(digits_task)[:3]:
        fit(strategy, exp)
        strategy.predict(exp.test.x[:5], exp.task_id)
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert strategy.n_learned == 3
    for t in range(3):
        for name, mask in strategy.task_mask(t).items():
            assert int(mask.sum()) == sm.kept_count(mask.numel(), 0.05), name
    # different tasks learned different masks
    assert not torch.equal(strategy.task_mask(0)["features.2.weight"], strategy.task_mask(1)["features.2.weight"])


def test_state_bytes_counts_packed_masks_and_live_scores(digits_task):
    strategy = make_strategy("supsup")
    model = train_through(strategy, digits_task)
    numels = [w.numel() for w in sm.maskable_weights(model).values()]
    assert strategy.state_bytes() == 4 * sum(numels)  # the first task's float32 scores
    for k, exp in enumerate(list(digits_task)[:2], start=1):
        fit(strategy, exp)
        assert strategy.state_bytes() == k * sum(math.ceil(n / 8) for n in numels)  # 1 bit per weight per task
    strategy.before_experience(digits_task[2])
    assert strategy.state_bytes() == 2 * sum(math.ceil(n / 8) for n in numels) + 4 * sum(numels)


def test_task_il_has_exactly_zero_forgetting(digits_task):
    result = loop.run(config("supsup", "task", train=ADAM), digits_task, progress=False)
    assert result.status == "ok", result.error
    R = {(e["step"], e["eval_exp"]): e["value"] for e in result.evals}
    T = len(digits_task)
    for j in range(T):
        assert R[T - 1, j] == R[j, j]
        assert R[j, j] > 0.85  # each mask really learned its task
    assert result.costs[-1]["strategy_mem_mb"] > 0


def test_one_shot_inference_finds_the_task_of_a_batch(digits_domain):
    """The paper's GN setting: permuted inputs, a shared head, no task id at test time."""
    strategy = make_strategy("supsup")
    train_through(strategy, digits_domain)
    for exp in digits_domain:
        fit(strategy, exp, epochs=3)
    right = total = 0
    with torch.no_grad():  # as the runner calls predict
        for exp in digits_domain:
            for start in range(0, len(exp.test), 64):
                right += strategy.infer_task(exp.test.x[start : start + 64]) == exp.task_id
                total += 1
    assert right >= 0.9 * total, (right, total)
    # and prediction without the task id then matches prediction with it on a whole test set
    exp = digits_domain[1]
    with torch.no_grad():
        inferred = strategy.predict(exp.test.x, None)
        given = strategy.predict(exp.test.x, exp.task_id)
    assert not inferred.requires_grad
    assert torch.equal(inferred, given)


def test_class_il_restricts_the_prediction_to_the_inferred_task_units(digits_class):
    strategy = make_strategy("supsup")
    train_through(strategy, digits_class)
    for exp in list(digits_class)[:2]:
        fit(strategy, exp)
    x = digits_class[0].test.x[:50]
    with torch.no_grad():
        task = strategy.infer_task(x)
        predicted = strategy.predict(x, None).argmax(dim=1)
    assert set(predicted.tolist()) <= set(digits_class[task].classes)


def test_batch_norm_statistics_are_kept_per_task():
    """With batch norm, training a new task must not move an old task's predictions (MultitaskNonAffineBN)."""
    g = torch.Generator().manual_seed(0)
    parts = [(torch.rand(24, 3, 16, 16, generator=g) + t, torch.tensor([2 * t, 2 * t + 1] * 12)) for t in range(2)]
    stream = stream_from_tensors(parts, parts, "task", backbone="resnet18-reduced")
    strategy = make_strategy("supsup", {"sparsity": 0.3})
    model = train_through(strategy, stream, train=TrainConfig(batch_size=8, lr=1e-3, optimizer="adam"))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x = stream[0].test.x[:6]
    fit(strategy, stream[0], batch_size=8)
    with torch.no_grad():
        first = strategy.predict(x, 0)
    fit(strategy, stream[1], batch_size=8)
    with torch.no_grad():
        assert torch.equal(strategy.predict(x, 0), first)
        strategy.predict(x, None)  # one-shot inference with batch norm runs and changes nothing either
        assert torch.equal(strategy.predict(x, 0), first)
    assert all(torch.equal(buffers[n], b) for n, b in model.named_buffers())
    means = [bn["features.1.running_mean"] for bn in strategy.bn_stats_]
    assert not torch.equal(means[0], means[1])
