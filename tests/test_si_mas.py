"""Synaptic Intelligence and Memory Aware Synapses, each on hand-made cases: SI's path integral against its closed
form on a quadratic, zero importance for a parameter that never moved; MAS's importance against a per-sample loop,
its independence of the labels and its running average."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import clbench.strategies.mas as mas_module
from clbench.benchmarks import Batch, TensorData, build_backbone
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import get_strategy, make_strategy
from clbench.strategies.base import TrainConfig
from clbench.strategies.mas import MAS
from clbench.strategies.si import SI
from tests.conftest import FAST_TRAIN, config
from tests.helpers import ready, train_on
from tests.test_checkpoint import _resumes_identically


def _batch(data, n=8):
    return Batch(data.x[:n], data.y[:n], data.task[:n])


# -- SI: a parameter that never moved ----------------------------------------------------------------------------
def test_si_importance_of_a_parameter_that_never_moved_is_exactly_zero(digits_class):
    # raw pixels: a pixel that is 0 in every training image gives its first-layer weights no gradient, no step
    train = dataclasses.replace(FAST_TRAIN, normalize="none")
    strategy = make_strategy("si", {"si_lambda": 1e-4})
    torch.manual_seed(0)
    strategy.setup(digits_class.spec, build_backbone(digits_class.spec, normalize="none"), train=train, seed=0)
    first = strategy.model_.features[1]
    name = next(n for n, p in strategy.model_.named_parameters() if p is first.weight)
    initial = first.weight.detach().clone()
    experiences = list(digits_class)[:2]  # the second one trains with the penalty on
    for exp in experiences:
        train_on(strategy, exp)
    pixels = torch.cat([exp.train.x.flatten(1) for exp in experiences])
    never = (pixels == 0).all(0)
    assert 0 < never.sum() < len(never)
    assert torch.equal(first.weight[:, never], initial[:, never])  # they indeed never moved
    importance = strategy.importance_[name]
    assert torch.equal(importance[:, never], torch.zeros_like(importance[:, never]))
    assert (importance[:, ~never] > 0).float().mean() > 0.5  # the weights that moved did get importance


# -- SI: the path integral on a hand-made quadratic ---------------------------------------------------------------
H = np.array([1.0, 3.0, 0.5])  # curvatures of the task loss ½ Σ h (θ − c)²
C1 = np.array([2.0, -1.0, 0.5])  # its minimum in the first experience ...
C2 = np.array([-1.0, 1.0, 3.0])  # ... and in the second
THETA0 = np.array([0.5, 0.25, -1.0])
LR, STEPS, XI, LAMBDA = 0.1, 6, 0.01, 0.2


class QuadraticSI(SI):
    """SI whose task loss is the quadratic ½ Σ h (θ − c)² of a bias-free linear layer's three weights."""

    centre = C1

    def task_loss(self, logits, batch):
        theta = self.model_.weight.flatten()
        h, c = torch.tensor(H), torch.tensor(self.centre)
        return 0.5 * (h * (theta - c).pow(2)).sum()


def _quadratic_si(digits_class):
    strategy = QuadraticSI(si_lambda=LAMBDA, eps=XI)
    strategy.validate()
    model = nn.Linear(3, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(THETA0).view(1, 3))
    strategy.setup(digits_class.spec, model, train=TrainConfig(lr=LR, momentum=0.0), seed=0)
    return strategy


def _steps(strategy, exp):
    batch = Batch(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, dtype=torch.long),
                  torch.zeros(1, dtype=torch.long))
    strategy.before_experience(exp)
    for _ in range(STEPS):
        strategy.train_step(batch)


def _geometric(ratio, n):
    """Σ_{t<n} ratio^t"""
    return (1 - ratio**n) / (1 - ratio)


def test_si_path_integral_matches_its_closed_form_on_a_quadratic(digits_class):
    strategy = _quadratic_si(digits_class)
    exp = digits_class[0]

    # first experience, no penalty: θ_t − c = rᵗ e₀ with r = 1 − ηh, g_t = h rᵗ e₀ and Δθ_t = −η g_t, so
    # ω = η Σ_t g_t² = η h² e₀² Σ_t r^{2t}; the total change is Δ = (r^T − 1) e₀
    e0, r = THETA0 - C1, 1 - LR * H
    omega1 = LR * H**2 * e0**2 * _geometric(r**2, STEPS)
    change1 = (r**STEPS - 1) * e0
    big_omega1 = np.maximum(0, omega1 / (change1**2 + XI))
    _steps(strategy, exp)
    np.testing.assert_allclose(strategy.omega_["weight"].flatten().numpy(), omega1, rtol=1e-12)
    strategy.after_experience(exp)
    np.testing.assert_allclose(strategy.importance_["weight"].flatten().numpy(), big_omega1, rtol=1e-12)
    theta_star = THETA0 + change1
    np.testing.assert_allclose(strategy.anchor_["weight"].flatten().numpy(), theta_star, rtol=1e-12)

    # second experience, penalty λ Ω₁ (θ − θ*)² on: the total gradient h(θ − c₂) + 2λΩ₁(θ − θ*) has curvature
    # k = h + 2λΩ₁ and minimum m, so θ_t − m = ρᵗ d₀ (ρ = 1 − ηk, d₀ = θ* − m) and Δθ_t = −ηk ρᵗ d₀; the path
    # integral takes the *task* gradient g_t = h(θ_t − c₂) = h((m − c₂) + ρᵗ d₀):
    # ω₂ = −Σ g_t Δθ_t = ηhk d₀ [(m − c₂) Σ ρᵗ + d₀ Σ ρ^{2t}]
    k = H + 2 * LAMBDA * big_omega1
    m = (H * C2 + 2 * LAMBDA * big_omega1 * theta_star) / k
    d0, rho = theta_star - m, 1 - LR * k
    omega2 = LR * H * k * d0 * ((m - C2) * _geometric(rho, STEPS) + d0 * _geometric(rho**2, STEPS))
    with_total_gradient = LR * k**2 * d0**2 * _geometric(rho**2, STEPS)  # Avalanche's choice
    assert np.all(np.abs(omega2 - with_total_gradient) > 0.1 * np.abs(with_total_gradient))  # the test can tell
    change2 = (rho**STEPS - 1) * d0
    big_omega2 = np.maximum(0, big_omega1 + omega2 / (change2**2 + XI))

    strategy.centre = C2
    _steps(strategy, digits_class[1])
    np.testing.assert_allclose(strategy.omega_["weight"].flatten().numpy(), omega2, rtol=1e-9)
    strategy.after_experience(digits_class[1])
    np.testing.assert_allclose(strategy.importance_["weight"].flatten().numpy(), big_omega2, rtol=1e-9)


def test_si_importance_is_clipped_at_zero_from_below(digits_class):
    strategy = _quadratic_si(digits_class)
    strategy.before_experience(digits_class[0])
    with torch.no_grad():  # a hand-made path: ω = (−1, 0, 2), Δ = (1, 1, 1)
        strategy.model_.weight.add_(1.0)
    strategy.omega_["weight"].copy_(torch.tensor([[-1.0, 0.0, 2.0]]))
    strategy.after_experience(digits_class[0])
    expected = [0.0, 0.0, 2.0 / (1.0 + XI)]
    assert strategy.importance_["weight"].flatten().tolist() == pytest.approx(expected, rel=1e-12)


# -- both: the penalty --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), [("si", {"si_lambda": 3.0}), ("mas", {"mas_lambda": 3.0})])
def test_penalty_is_zero_at_the_anchor_and_lambda_omega_d_squared_off_it(name, params, digits_class):
    strategy = ready(name, digits_class, params)
    assert strategy.penalty(_batch(digits_class[0].train), None, torch.zeros(8, 10)) is None  # nothing learned yet
    train_on(strategy, digits_class[0], n=3)
    strategy.before_experience(digits_class[1])
    batch = _batch(digits_class[1].train)
    features, logits = strategy.forward(batch.x)
    at_anchor = strategy.penalty(batch, features, logits)
    assert at_anchor.item() == 0.0 and at_anchor.requires_grad
    # hand-made: Ω = 2 on the head's bias, 0 elsewhere; every anchor 1 below the parameter
    params_ = dict(strategy.model_.named_parameters())
    strategy.importance_ = {n: torch.zeros_like(p) for n, p in params_.items()}
    strategy.importance_["head.bias"] = torch.full_like(params_["head.bias"], 2.0)
    strategy.anchor_ = {n: p.detach() - 1.0 for n, p in params_.items()}
    assert strategy.penalty(batch, features, logits).item() == pytest.approx(3.0 * 2.0 * 1.0 * 10)


# -- MAS: importance ----------------------------------------------------------------------------------------------
def _double_mas(stream, params=None):
    strategy = make_strategy("mas", params)
    torch.manual_seed(0)
    strategy.setup(stream.spec, build_backbone(stream.spec).double(), train=FAST_TRAIN, seed=0)
    train_on(strategy, dataclasses.replace(stream[0], train=_double(stream[0].train)), n=3)  # not at the init
    return strategy


def _double(data, n=None):
    return TensorData(data.x[:n].double(), data.y[:n], data.task[:n])


def _per_sample_loop(strategy, data):
    """mean_k |∂‖f(x_k)‖²/∂θ|, one backward pass per sample; in task-IL f is the sample's own task's units."""
    model = strategy.model_.eval()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for k in range(len(data)):
        model.zero_grad(set_to_none=True)
        out = model(data.x[k : k + 1])
        if strategy.spec_.scenario == "task":
            out = out[:, strategy.spec_.task_unit_mask()[data.task[k]]]
        out.pow(2).sum().backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.abs()
    return {n: t / len(data) for n, t in total.items()}


@pytest.mark.parametrize("path", ["linear", "vmap"])
@pytest.mark.parametrize("scenario", ["class", "task"])
def test_mas_importance_matches_a_per_sample_loop(scenario, path, request, monkeypatch):
    stream = request.getfixturevalue(f"digits_{scenario}")
    strategy = _double_mas(stream, {"importance_batch_size": 16})
    if path == "vmap":  # the general path, which any model that is not all nn.Linear takes
        monkeypatch.setattr(mas_module, "_only_linear_layers", lambda model, params: False)
    monkeypatch.setattr(MAS, "_abs_grad_sums_vmap" if path == "linear" else "_abs_grad_sums_linear",
                        lambda *args: pytest.fail(f"the {path} path was not taken"))
    data = _double(stream[1].train, 40)  # 16 + 16 + 8: the last chunk is short
    got = strategy.importance(data)
    expected = _per_sample_loop(strategy, data)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-15)
    if scenario == "task":  # the other tasks' head rows never enter the norm
        other = ~stream.spec.task_unit_mask()[1]
        for part in ("head.weight", "head.bias"):
            assert torch.equal(got[part][other], torch.zeros_like(got[part][other]))
        assert (got["head.bias"][~other] > 0).all()


def test_mas_importance_is_label_free(digits_class):
    strategy = _double_mas(digits_class)
    data = _double(digits_class[1].train)
    shuffled = TensorData(data.x, data.y[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))],
                          data.task)
    assert not torch.equal(shuffled.y, data.y)
    strategy.model_.train()
    before, after = strategy.importance(data), strategy.importance(shuffled)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert strategy.model_.training  # the importance pass puts the model back in the mode it found


def test_mas_running_average_with_alpha_on_hand_made_importances(digits_class, monkeypatch):
    strategy = ready("mas", digits_class, {"alpha": 0.25})
    values = iter([2.0, 6.0, 10.0])  # each experience's new importance, the same for every parameter

    def hand_made(data):
        value = next(values)
        return {n: torch.full_like(p, value) for n, p in strategy.model_.named_parameters()}

    monkeypatch.setattr(strategy, "importance", hand_made)
    expected = iter([2.0, 0.25 * 2.0 + 0.75 * 6.0, 0.25 * 5.0 + 0.75 * 10.0])  # the first is taken as it is
    for exp in list(digits_class)[:3]:
        strategy.after_experience(exp)
        value = next(expected)
        assert all(torch.equal(imp, torch.full_like(imp, value)) for imp in strategy.importance_.values())
        assert all(torch.equal(strategy.anchor_[n], p.detach()) for n, p in strategy.model_.named_parameters())
    assert value == 8.75


# -- both: settings, scenarios, checkpoints --------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params", "message"), [
    ("si", {"si_lambda": -1.0}, "si_lambda must be finite and >= 0"),
    ("si", {"si_lambda": math.nan}, "si_lambda must be finite and >= 0"),
    ("si", {"eps": 0.0}, "eps must be finite and positive"),
    ("si", {"eps": -1e-3}, "eps must be finite and positive"),
    ("mas", {"mas_lambda": -0.5}, "mas_lambda must be finite and >= 0"),
    ("mas", {"mas_lambda": math.inf}, "mas_lambda must be finite and >= 0"),
    ("mas", {"alpha": 1.5}, "alpha must be in"),
    ("mas", {"alpha": -0.1}, "alpha must be in"),
    ("mas", {"importance_batch_size": 0}, "importance_batch_size must be at least 1"),
])
def test_hyperparameters_are_checked(name, params, message):
    with pytest.raises(UsageError, match=message):
        make_strategy(name, params)


def test_defaults_and_names():
    assert SI().get_params() == {"si_lambda": 1e-4, "eps": 1e-7}
    assert MAS().get_params() == {"mas_lambda": 0.1, "alpha": 0.5, "importance_batch_size": 128}
    assert get_strategy("si") is SI and get_strategy("mas") is MAS


@pytest.mark.parametrize("name", ["si", "mas"])
@pytest.mark.parametrize(("scenario", "benchmark", "n_exp"), [("task", "split-digits", None),
                                                             ("domain", "permuted-digits", 3)])
def test_runs_in_task_and_domain_il(name, scenario, benchmark, n_exp, request):
    stream = request.getfixturevalue(f"digits_{scenario}")
    result = loop.run(config(name, scenario, benchmark=benchmark, n_experiences=n_exp), stream, progress=False)
    assert result.status == "ok", result.error
    assert all(math.isfinite(c["train_loss"]) for c in result.costs if c["step"] >= 0)


@pytest.mark.parametrize(("name", "scenario"), [("si", "class"), ("mas", "task")])
def test_resumes_identically_after_an_interruption(name, scenario, tmp_path, monkeypatch, request, caplog):
    _resumes_identically(config(name, scenario), get_strategy(name), request.getfixturevalue(f"digits_{scenario}"),
                         tmp_path, monkeypatch, caplog)


def test_state_bytes_count_the_kept_tensors(digits_class):
    si, mas = ready("si", digits_class), ready("mas", digits_class)
    n_params = sum(p.numel() for p in si.model_.parameters())
    assert mas.state_bytes() == 0
    assert si.state_bytes() == 3 * 4 * n_params  # θ*, ω and the pre-step parameters
    for strategy in (si, mas):
        train_on(strategy, digits_class[0], n=2)
    assert si.state_bytes() == 4 * 4 * n_params and mas.state_bytes() == 2 * 4 * n_params  # + Ω; Ω and θ*


@pytest.mark.parametrize(("name", "params"), [("si", {"si_lambda": 0.0}), ("mas", {"mas_lambda": 0.0})])
def test_zero_strength_trains_exactly_as_naive(name, params, digits_class):
    naive = loop.run(config("naive"), digits_class, progress=False)
    plain = loop.run(config(name, params=params), digits_class, progress=False)
    assert plain.status == naive.status == "ok"
    assert plain.evals == naive.evals
