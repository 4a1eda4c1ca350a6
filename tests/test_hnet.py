"""Hypernetworks (von Oswald et al. 2020): the output regulariser, its look-ahead, the generated target network and
task inference by entropy (HNET+ENT)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from clbench.benchmarks import stream_from_tensors
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.strategies import make_strategy
from clbench.strategies.base import MASKED_LOGIT, TrainConfig
from tests import helpers
from tests.conftest import config
from tests.helpers import batches, final_accuracy, final_row

ADAM = TrainConfig(epochs=1, batch_size=32, lr=1e-3, optimizer="adam")


def ready(stream, params=None, train=ADAM, seed=0):
    return helpers.ready("hnet", stream, params, train=train, seed=seed)


def train_on(strategy, exp, epochs=1, n=None, finish=True):
    strategy.before_experience(exp)
    for _ in range(epochs):
        for batch in batches(exp.train, n=n):
            strategy.train_step(batch)
    if finish:
        strategy.after_experience(exp)


def direct_regulariser(strategy, params, ids):
    """Eq. 2's sum, the plain way: generate every old task's weights and compare with the stored targets."""
    embs = torch.stack([strategy.task_embs_[i] for i in ids]).detach()
    return (strategy.hnet_forward(embs, params) - strategy.stored_targets()[ids]).pow(2).sum() / len(ids)


# chunk sizes on the digits MLP (P = 17610 weights): 1000 -> 18 chunks (Gram path, last chunk padded), 5000 -> 4
# chunks (direct differences, padded), 40000 -> one chunk, None -> unchunked with stored targets
@pytest.mark.parametrize("chunk_size", [1000, 5000, 40000, None])
def test_regulariser_equals_the_direct_sum(digits_task, chunk_size):
    strategy = ready(digits_task, {"chunk_size": chunk_size, "hnet_hidden": "12"})
    for exp in list(digits_task)[:3]:
        train_on(strategy, exp, n=2)
    strategy.before_experience(digits_task[3])
    gen = torch.Generator().manual_seed(1)
    params = [(p + 1e-2 * torch.randn(p.shape, generator=gen)).detach().requires_grad_(True)
              for p in strategy.hnet_params_]
    for ids in ([0, 1, 2], [2, 0]):
        fast = strategy.regulariser(params, None if len(ids) == 3 else torch.tensor(ids))
        slow = direct_regulariser(strategy, params, ids)
        assert slow.item() > 0
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
        for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(slow, params), strict=True):
            assert (a - b).norm() <= 1e-4 * b.norm()  # float32 sums over thousands of weights


def test_targets_are_the_outputs_before_the_task(digits_task):
    strategy = ready(digits_task, {"chunk_size": 1000})
    train_on(strategy, digits_task[0], n=3)
    train_on(strategy, digits_task[1], n=3)
    with torch.no_grad():
        expected = strategy.hnet_forward(torch.stack(strategy.task_embs_[:2]))
    torch.testing.assert_close(strategy.stored_targets(), expected, rtol=1e-5, atol=1e-6)
    # ...and the regulariser is zero where the hypernetwork has not moved since
    strategy.before_experience(digits_task[2])
    assert strategy.regulariser().item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("train", [ADAM, TrainConfig(batch_size=32, lr=0.05, momentum=0.9)], ids=["adam", "sgd"])
def test_lookahead_is_the_step_the_optimiser_takes(digits_task, train):
    """ΔΘ_h computed from L_task's gradients equals the change optimizer.step() then applies (state untouched)."""
    strategy = ready(digits_task, train=train)
    strategy.before_experience(digits_task[0])
    for batch in batches(digits_task[0].train, n=3):
        strategy.train_step(batch)  # the optimiser now has momentum / moment estimates
    batch = batches(digits_task[0].train)[3]
    strategy.optimizer_.zero_grad(set_to_none=True)
    strategy.task_loss(batch).backward()
    delta = strategy._lookahead_step()
    before = [p.detach().clone() for p in strategy.hnet_params_]
    strategy.optimizer_.step()
    for d, p, b in zip(delta, strategy.hnet_params_, before, strict=True):
        assert d.abs().max() > 1e-4  # a real step...
        torch.testing.assert_close(p.detach() - b, d, rtol=1e-4, atol=1e-6)  # ...up to float32 rounding of p + d


def test_reg_batch_size_regularises_random_old_tasks(digits_task):
    strategy = ready(digits_task, {"reg_batch_size": 2})
    for exp in list(digits_task)[:3]:
        train_on(strategy, exp, n=1)
    strategy.before_experience(digits_task[3])
    drawn = [strategy._old_tasks().tolist() for _ in range(30)]
    assert all(len(ids) == 2 and len(set(ids)) == 2 and set(ids) <= {0, 1, 2} for ids in drawn)
    assert len({tuple(sorted(ids)) for ids in drawn}) == 3  # every pair of the three old tasks comes up
    strategy.reg_batch_size = 3
    assert strategy._old_tasks() is None  # as many as there are: all of them, every step


def drift_of_first_task(stream, beta):
    """‖f_h(e_0) − target_0‖ / ‖target_0‖ after training task 1, the target taken before task 1."""
    strategy = ready(stream, {"beta": beta})
    train_on(strategy, stream[0], epochs=3)
    train_on(strategy, stream[1], epochs=3, finish=False)
    stored = strategy.stored_targets()[0]
    with torch.no_grad():
        now = strategy.hnet_forward(strategy.task_embs_[0][None])[0]
    return ((now - stored).norm() / stored.norm()).item()


def test_strong_beta_keeps_the_old_tasks_weights(digits_task):
    """The defining property: with a large β the weights generated for an old embedding barely move while a new task
    is learned; without the regulariser (β = 0, same code path otherwise) they drift far more."""
    free, held = drift_of_first_task(digits_task, 0.0), drift_of_first_task(digits_task, 10.0)
    assert held < 0.02, held
    assert free > 10 * held, (free, held)


def test_only_the_current_embedding_and_the_hypernetwork_train(digits_task):
    strategy = ready(digits_task)
    model_before = copy.deepcopy(strategy.model_.state_dict())
    train_on(strategy, digits_task[0], n=4)
    embs = [e.detach().clone() for e in strategy.task_embs_]
    hnet = [p.detach().clone() for p in strategy.hnet_params_]
    train_on(strategy, digits_task[1], n=4)
    assert torch.equal(strategy.task_embs_[0], embs[0])  # frozen after its task
    assert not torch.equal(strategy.task_embs_[1], embs[1])
    assert all(torch.equal(strategy.task_embs_[t], embs[t]) for t in range(2, len(embs)))  # not started
    assert all(not torch.equal(p, q) for p, q in zip(strategy.hnet_params_, hnet, strict=True))
    for name, value in strategy.model_.state_dict().items():
        assert torch.equal(value, model_before[name])  # the backbone only defines shapes


def test_predictions_run_the_backbone_on_the_generated_weights(digits_task):
    strategy = ready(digits_task, {"chunk_size": 1000})
    train_on(strategy, digits_task[0], n=3)
    x = digits_task[0].test.x[:9]
    with torch.no_grad():
        logits = strategy.predict(x, 0)
        flat = strategy.hnet_forward(strategy.task_embs_[0][None])[0]
        model = copy.deepcopy(strategy.model_)
        torch.nn.utils.vector_to_parameters(flat, model.parameters())
        expected = model(x).masked_fill(~strategy.unit_mask_[0], MASKED_LOGIT)
    torch.testing.assert_close(logits, expected)


def test_task_il_accuracy_well_above_chance(digits_task):
    result = loop.run(config("hnet", "task", train=TrainConfig(epochs=5, batch_size=32, lr=1e-3, optimizer="adam")),
                      digits_task, progress=False)
    final = final_row(result)
    assert min(final) > 0.8 and sum(final) / len(final) > 0.9, final  # two classes per task: chance is 0.5


def test_entropy_picks_the_most_confident_task(digits_class):
    strategy = ready(digits_class)
    for exp in list(digits_class)[:3]:
        train_on(strategy, exp, n=4)
    x = torch.cat([digits_class[t].test.x[:5] for t in range(3)])
    with torch.no_grad():
        logits = strategy.predict(x, None)
        per_task = torch.stack([strategy.task_logits(x, t) for t in range(3)])  # only learned tasks compete
    log_p = F.log_softmax(per_task, dim=2)
    chosen = (-(log_p.exp() * log_p).sum(2)).argmin(0)
    torch.testing.assert_close(logits, per_task[chosen, torch.arange(len(x))])
    units = torch.tensor([list(digits_class.spec.classes_per_experience[t]) for t in range(3)])
    assert all(int(a) in units[int(t)].tolist() for a, t in zip(logits.argmax(1), chosen, strict=True))


def test_hnet_ent_beats_naive_in_class_il(digits_class):
    train = TrainConfig(epochs=10, batch_size=32, lr=1e-3, optimizer="adam")

    def acc(name):
        return final_accuracy(loop.run(config(name, "class", train=train), digits_class, progress=False))

    naive, hnet = acc("naive"), acc("hnet")
    assert hnet > naive + 0.05, (naive, hnet)


def test_state_bytes_counts_what_is_kept(digits_task):
    strategy = ready(digits_task, {"chunk_size": 1000})
    hnet = sum(p.numel() for p in strategy.hnet_params_) * 4
    embs = len(digits_task) * strategy.emb_dim * 4
    assert strategy.state_bytes() == hnet + embs
    train_on(strategy, digits_task[0], n=1)
    train_on(strategy, digits_task[1], n=1)
    out_layer, width = strategy.hnet_params_[-1].numel(), strategy.hnet_params_[-1].shape[0]  # A*ᵀ = [W* b*]ᵀ
    features = 2 * strategy.n_chunks_ * width  # ĥ* of the two learned tasks
    assert strategy.state_bytes() == hnet + embs + 4 * (out_layer + 2 * width**2 + features)  # and A*ᵀA* (2 parts)
    unchunked = ready(digits_task, {"chunk_size": None})
    train_on(unchunked, digits_task[0], n=1)
    base = sum(p.numel() for p in unchunked.hnet_params_) * 4 + embs
    assert unchunked.state_bytes() == base + 4 * unchunked.n_target_  # one stored target per learned task


def test_batch_norm_statistics_are_kept_per_task():
    g = torch.Generator().manual_seed(0)
    parts = [(torch.rand(16, 3, 12, 12, generator=g) + t, torch.tensor([2 * t, 2 * t + 1] * 8)) for t in range(2)]
    stream = stream_from_tensors(parts, parts, "task", backbone="resnet18-reduced")
    strategy = ready(stream, {"chunk_size": 50000}, train=TrainConfig(batch_size=8, lr=1e-3, optimizer="adam"))
    assert strategy.stat_names_ and all("running" in n or "num_batches" in n for n in strategy.stat_names_)
    train_on(strategy, stream[0], n=2)
    first = {n: b.clone() for n, b in strategy.task_stats_[0].items()}
    assert any(not torch.equal(first[n], strategy.initial_stats_[n]) for n in first)
    train_on(strategy, stream[1], n=2)
    assert all(torch.equal(strategy.task_stats_[0][n], first[n]) for n in first)
    assert any(not torch.equal(strategy.task_stats_[1][n], first[n]) for n in first)
    with torch.no_grad():
        assert strategy.predict(stream[0].test.x[:4], 0).shape == (4, stream.spec.n_classes)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"beta": -0.1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"emb_dim": 0}, "emb_dim"),
        ({"chunk_emb_dim": 0}, "chunk_emb_dim"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"hnet_hidden": "10,x"}, "hnet_hidden"),
        ({"hnet_hidden": "10,0"}, "hnet_hidden"),
        ({"hnet_hidden": 10}, "hnet_hidden"),
        ({"hnet_act": "tanh"}, "relu"),
        ({"reg_batch_size": 0}, "reg_batch_size"),
        ({"lookahead": "yes"}, "lookahead"),
    ],
)
def test_bad_hyperparameters(params, match):
    with pytest.raises(UsageError, match=match):
        make_strategy("hnet", params)


def test_domain_il_is_not_offered():
    with pytest.raises(UsageError, match="domain"):
        make_strategy("hnet").check_scenario("domain")
