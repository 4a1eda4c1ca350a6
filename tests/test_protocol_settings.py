"""The runner's protocol settings (optimizer_state, normalize, drop_last): each changes what it claims and nothing
else, reaches the CLI, sweep files, runs.csv, the run id and the leaderboard, and leaves earlier run ids valid."""

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clbench.benchmarks import TensorData, build_backbone
from clbench.benchmarks.backbones import Standardize
from clbench.errors import UsageError
from clbench.runners.config import RunConfig
from clbench.runners.loop import minibatches, run
from clbench.runners.sweep import sweep_from_dict
from clbench.strategies import get_strategy, make_strategy
from clbench.strategies.base import TrainConfig
from tests.helpers import batches, ready
from tests.test_cli import run_cli

ADAM_KEEP = TrainConfig(batch_size=32, lr=0.001, optimizer="adam", optimizer_state="keep")


def _first_steps(strategy, exp, n=3):
    strategy.begin_experience(exp)
    for batch in batches(exp.train, n=n):
        strategy.train_step(batch)


# -- optimizer_state ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [ADAM_KEEP, TrainConfig(batch_size=32, lr=0.01, momentum=0.9,
                                                           optimizer_state="keep")])
def test_keep_carries_adam_moments_and_momentum_buffers_into_the_next_experience(digits_class, train):
    strategy = ready("naive", digits_class, train=train)
    _first_steps(strategy, digits_class[0])
    optimizer = strategy.optimizer_
    saved = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in optimizer.state.items()}
    assert saved and all(saved.values())
    strategy.begin_experience(digits_class[1])
    assert strategy.optimizer_ is optimizer  # the same optimizer ...
    for p, state in strategy.optimizer_.state.items():  # ... with every moment / momentum buffer as it was
        for key, value in saved[id(p)].items():
            assert torch.equal(state[key], value)


def test_reset_starts_every_experience_with_an_empty_optimizer_state(digits_class):
    strategy = ready("naive", digits_class, train=TrainConfig(batch_size=32, lr=0.001, optimizer="adam"))
    _first_steps(strategy, digits_class[0])
    old = strategy.optimizer_
    strategy.begin_experience(digits_class[1])
    assert strategy.optimizer_ is not old and len(strategy.optimizer_.state) == 0


def test_keep_changes_the_second_experience_and_not_the_first(digits_class):
    def weights_after(train, n_exp):
        strategy = ready("naive", digits_class, train=train)
        for exp in list(digits_class)[:n_exp]:
            _first_steps(strategy, exp)
        return torch.cat([p.detach().flatten() for p in strategy.model_.parameters()])

    reset = TrainConfig(batch_size=32, lr=0.001, optimizer="adam")
    assert torch.equal(weights_after(reset, 1), weights_after(ADAM_KEEP, 1))
    assert not torch.equal(weights_after(reset, 2), weights_after(ADAM_KEEP, 2))


@pytest.mark.parametrize("name", ["hnet", "supsup", "exssnet"])
def test_methods_with_a_new_parameter_set_per_task_refuse_keep(name):
    with pytest.raises(UsageError, match=r"optimizer-state='keep'; valid choices: reset"):
        get_strategy(name).check_train(ADAM_KEEP)


# -- normalize -------------------------------------------------------------------------------------------------------
def _first_layer(model):
    return next(m for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_normalize_none_feeds_raw_pixels_so_an_always_zero_pixel_gets_no_gradient(digits_class):
    data = TensorData.concat([exp.train for exp in digits_class])
    zero = (data.x.flatten(1) == 0).all(0)
    assert zero.any()  # split-digits has pixels that are 0 in every image (its left border)
    for normalize in ("none", "standardize"):
        torch.manual_seed(0)
        model = build_backbone(digits_class.spec, normalize=normalize)
        assert any(isinstance(m, Standardize) for m in model.modules()) == (normalize == "standardize")
        F.cross_entropy(model(data.x[:256]), data.y[:256]).backward()
        grad = _first_layer(model).weight.grad[:, zero]
        if normalize == "none":
            assert torch.count_nonzero(grad) == 0
        else:  # standardised, the background is −mean/std ≠ 0 for the pixels with a nonzero mean
            assert torch.count_nonzero(grad) > 0


def test_normalize_none_changes_the_input_layer_only(digits_class):
    torch.manual_seed(0)
    plain = build_backbone(digits_class.spec, normalize="none")
    torch.manual_seed(0)
    standard = build_backbone(digits_class.spec)
    x = digits_class[0].train.x[:8]
    standardize = next(m for m in standard.modules() if isinstance(m, Standardize))
    assert torch.allclose(plain(standardize(x)), standard(x))  # the same weights behind a different input
    with pytest.raises(UsageError, match="valid choices: none, standardize"):
        build_backbone(digits_class.spec, normalize="unit")


# -- drop_last and minibatches ---------------------------------------------------------------------------------------
def _data(n, task=0):
    return TensorData(torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, dtype=torch.int64),
                      torch.full((n,), task, dtype=torch.int64))


@pytest.mark.parametrize(("n", "drop_last", "sizes"), [
    (10, False, [4, 4, 2, 4, 4, 2]), (10, True, [4, 4, 4, 4]), (3, True, [3, 3]), (8, True, [4, 4, 4, 4])])
def test_drop_last_drops_each_pass_s_short_batch_unless_it_is_the_only_one(n, drop_last, sizes):
    cfg = TrainConfig(epochs=2, batch_size=4, drop_last=drop_last)
    got = list(minibatches(_data(n), cfg, torch.Generator().manual_seed(0)))
    assert [len(b.y) for b in got] == sizes
    for first_pass in (got[: len(sizes) // 2], got[len(sizes) // 2:]):  # no sample twice within a pass
        values = torch.cat([b.x.flatten() for b in first_pass])
        assert len(values.unique()) == len(values)


def test_drop_last_false_keeps_the_batches_of_earlier_versions():
    # the seeded order of a pass is unchanged: the old loop's slices of one randperm
    cfg = TrainConfig(epochs=1, batch_size=4)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    got = [b.x.flatten().long() for b in minibatches(_data(10), cfg, torch.Generator().manual_seed(3))]
    assert all(torch.equal(g, order[i * 4: i * 4 + 4]) for i, g in enumerate(got))


def test_several_sources_give_every_batch_an_equal_share_of_each():
    sources = [_data(7, task=0), _data(9, task=1), _data(20, task=2)]
    cfg = TrainConfig(batch_size=8, iterations=12, drop_last=True)
    got = list(minibatches(sources, cfg, torch.Generator().manual_seed(0)))
    assert len(got) == 12
    for batch in got:  # ceil(8 / 3) = 3 from each source
        assert torch.bincount(batch.task, minlength=3).tolist() == [3, 3, 3]
    # each source cycles through passes of its own: 7 samples make two chunks of 3 per pass (one dropped)
    first = torch.cat([b.x[b.task == 0].flatten() for b in got[:2]])
    assert len(first.unique()) == 6


# -- offline joint -----------------------------------------------------------------------------------------------------
def _counting(monkeypatch):
    from clbench.strategies.joint import Joint

    seen = []
    original = Joint.train_step

    def step(self, batch):
        seen.append((len(self.seen_), batch.task.clone()))
        return original(self, batch)

    monkeypatch.setattr(Joint, "train_step", step)
    return seen


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_offline_joint_trains_once_for_t_times_the_iterations_at_the_last_experience(monkeypatch, scenario,
                                                                                     digits_class, digits_task):
    stream = digits_class if scenario == "class" else digits_task
    steps = _counting(monkeypatch)
    train = TrainConfig(batch_size=20, lr=0.05, iterations=4, drop_last=True)
    config = RunConfig(benchmark="split-digits", scenario=scenario, strategy="joint", params={"mode": "offline"},
                       train=train)
    result = run(config, stream, progress=False)
    assert result.status == "ok", result.error
    T = len(stream)
    assert len(steps) == T * 4 and {n for n, _ in steps} == {T}  # all T × 4 steps once, when all T were seen
    if scenario == "task":  # ceil(20 / T) = 4 samples of every task in every batch
        assert all(torch.bincount(task, minlength=T).tolist() == [math.ceil(20 / T)] * T for _, task in steps)
    rows = pd.DataFrame(result.evals)
    assert sorted(rows["step"].unique()) == [-1, T - 1]  # no model to evaluate before the last experience
    assert [c["step"] for c in result.costs] == list(range(-1, T))


def test_offline_joint_gives_acc_and_nan_for_metrics_that_need_earlier_rows(digits_class):
    from clbench.metrics import accuracy, backward_transfer, forgetting

    train = TrainConfig(batch_size=32, lr=0.05, iterations=3)
    config = RunConfig(benchmark="split-digits", scenario="class", strategy="joint", params={"mode": "offline"},
                       train=train)
    evals = pd.DataFrame(run(config, digits_class, progress=False).evals).query("metric == 'accuracy'")
    T = len(digits_class)
    R = evals[evals["step"] >= 0].pivot(index="step", columns="eval_exp", values="value").reindex(range(T))
    assert R.iloc[:-1].isna().all().all() and R.iloc[-1].notna().all()
    assert accuracy(R.to_numpy()) == pytest.approx(R.iloc[-1].mean())
    assert math.isnan(backward_transfer(R.to_numpy())) and math.isnan(forgetting(R.to_numpy()))


# -- settings reach every table ----------------------------------------------------------------------------------------
def test_default_run_ids_are_those_recorded_before_the_settings_and_options_existed():
    # computed with the code of the previous release, where none of these settings or options existed
    pinned = {("naive", None): "0442b06ddd99128f", ("naive", 5): "88f6ad97d73ccc10",
              ("joint", None): "fee1712f86985278", ("joint", 5): "d806cec05f78dddd",
              ("ewc", None): "6f0eb87fa79074f9", ("lwf", None): "4b4e92a2c1206b69",
              ("lwf", 5): "7ed79f6ce3049185", ("replay", None): "98736dc38fc3083c",
              ("replay", 5): "d9c8bb74d02bf194", ("center-loss", None): "8caf1f1235926b9d"}
    for (name, iterations), run_id in pinned.items():
        train = TrainConfig() if iterations is None else TrainConfig(iterations=5, optimizer="adam", lr=0.001)
        config = RunConfig(benchmark="split-digits", scenario="class", strategy=name, seed=1, train=train,
                           params=get_strategy(name)().get_params())
        assert config.run_id == run_id, name
    base = RunConfig(benchmark="split-digits", scenario="class", strategy="naive", seed=1)
    ids = {base.run_id}
    for change in ({"optimizer_state": "keep"}, {"normalize": "none"}, {"drop_last": True}):
        ids.add(RunConfig(benchmark="split-digits", scenario="class", strategy="naive", seed=1,
                          train=TrainConfig(**change)).run_id)
    assert len(ids) == 4  # and each setting away from its default is a run of its own


def test_cli_settings_are_recorded_in_runs_csv_and_the_leaderboard(tmp_path):
    out = tmp_path / "res"
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   "--epochs", "1", "--batch-size", "64", "--optimizer", "adam", "--lr", "0.001",
                   "--optimizer-state", "keep", "--normalize", "none", "--drop-last", "--quiet", "--no-plots",
                   "--out", out) == 0
    train = json.loads(pd.read_csv(out / "runs.csv").loc[0, "train_config"])
    assert (train["optimizer_state"], train["normalize"], train["drop_last"]) == ("keep", "none", True)
    board = pd.read_csv(out / "leaderboard.csv")
    assert board.loc[0, ["optimizer_state", "normalize", "drop_last"]].tolist() == ["keep", "none", True]


def test_settings_of_an_older_folder_read_as_the_defaults_it_ran_with():
    from clbench.metrics.tables import settings_of

    runs = pd.DataFrame({"train_config": [json.dumps({"lr": 0.1}), "not json"], "stream_seed": [0, 0]})
    s = settings_of(runs)
    assert s.loc[0, ["optimizer_state", "normalize", "drop_last"]].tolist() == ["reset", "standardize", False]
    assert s.loc[1, ["optimizer_state", "normalize", "drop_last"]].isna().all()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--optimizer-state", "carry", "unknown optimizer-state 'carry'; valid choices: keep, reset"),
    ("--normalize", "unit", "unknown normalize 'unit'; valid choices: none, standardize")])
def test_a_bad_setting_is_one_message_exit_2_and_nothing_written(tmp_path, capsys, flag, value, message):
    out = tmp_path / "res"
    code = run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "naive",
                   flag, value, "--quiet", "--out", out)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()


def test_sweep_files_take_the_settings_and_check_their_types():
    spec = {"seeds": [0], "benchmarks": ["split-digits"], "scenarios": ["class"],
            "settings": {"optimizer_state": "keep", "normalize": "none", "drop_last": True},
            "strategies": [{"name": "naive"}]}
    train = sweep_from_dict(spec, "t").configs[0].train
    assert (train.optimizer_state, train.normalize, train.drop_last) == ("keep", "none", True)
    with pytest.raises(UsageError, match="drop_last='yes' must be bool"):
        sweep_from_dict({**spec, "settings": {"drop_last": "yes"}}, "t")
    with pytest.raises(UsageError, match="valid choices: keep, reset"):
        sweep_from_dict({**spec, "settings": {"optimizer_state": "carry"}}, "t")


def test_avalanche_plugin_refuses_what_its_loop_cannot_follow(digits_class):
    pytest.importorskip("avalanche")
    from clbench.avalanche import ClbenchPlugin
    from clbench.avalanche.plugin import avalanche_train_data

    with pytest.raises(UsageError, match="computes its own task loss"):
        ClbenchPlugin(make_strategy("replay", {"loss_weighting": "by_task"}), spec=digits_class.spec)
    for mode in ("incremental", "offline"):
        joint = ready("joint", digits_class, {"mode": mode})
        joint.before_experience(digits_class[0])
        if mode == "offline":  # its budget (none now, T times later) is not one Avalanche's loop can follow
            with pytest.raises(UsageError, match="training budget of its own"):
                avalanche_train_data(joint, digits_class[0])
        else:
            assert len(avalanche_train_data(joint, digits_class[0])) == len(digits_class[0].train)
