"""Avalanche both ways, against the real avalanche-lib (no mocks): our strategies as plugins and as an Avalanche
strategy, stream ⇄ benchmark conversion, and Avalanche's strategies in our runner and leaderboard."""

import io
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from clbench.errors import UsageError
from clbench.runners import cli
from clbench.runners.loop import run
from clbench.strategies import get_strategy
from clbench.strategies.base import TrainConfig
from tests.conftest import FAST_TRAIN, config

avalanche = pytest.importorskip("avalanche", reason="needs the avalanche extra")
pytestmark = [pytest.mark.avalanche, pytest.mark.filterwarnings("ignore:No loggers specified")]

from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.logging import TextLogger  # noqa: E402
from avalanche.models import SimpleMLP  # noqa: E402
from avalanche.training import Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from avalanche.training.templates import SupervisedTemplate  # noqa: E402

from clbench.avalanche import ClbenchPlugin, ClbenchStrategy, from_avalanche, to_avalanche  # noqa: E402
from clbench.benchmarks import build_backbone  # noqa: E402


def final_mean_accuracy(result, n_exp):
    finals = [e["value"] for e in result.evals if e["step"] == n_exp - 1]
    return sum(finals) / len(finals)


def stream_accuracy(metrics: dict) -> float:
    return next(v for k, v in metrics.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream"))


# -- conversion ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["digits_class", "digits_task", "digits_domain"])
def test_round_trip_keeps_data_targets_task_labels_and_class_order(fixture, request):
    stream = request.getfixturevalue(fixture)
    benchmark = to_avalanche(stream)
    scenario = stream.spec.scenario
    for exp, av_train, av_test in zip(stream, benchmark.train_stream, benchmark.test_stream, strict=True):
        expected_label = exp.index if scenario == "task" else 0  # Avalanche's convention per scenario
        assert set(av_train.dataset.targets_task_labels.uniques) == {expected_label}
        assert sorted(av_train.classes_in_this_experience) == list(exp.classes)
        assert len(av_test.dataset) == len(exp.test)
    back = from_avalanche(benchmark)
    assert back.spec.scenario == scenario  # inferred from task labels and classes
    assert back.spec.classes_per_experience == stream.spec.classes_per_experience
    assert back.spec.n_classes == stream.spec.n_classes
    for a, b in zip(stream, back, strict=True):
        for kind in ("train", "test"):
            da, db = getattr(a, kind), getattr(b, kind)
            assert torch.equal(da.x, db.x) and torch.equal(da.y, db.y) and torch.equal(da.task, db.task)


def test_a_users_nc_benchmark_becomes_a_stream(digits_class):
    whole_train = torch.utils.data.TensorDataset(
        torch.cat([e.train.x for e in digits_class]), torch.cat([e.train.y for e in digits_class]))
    whole_test = torch.utils.data.TensorDataset(
        torch.cat([e.test.x for e in digits_class]), torch.cat([e.test.y for e in digits_class]))
    for task_labels in (False, True):
        bench = nc_benchmark(whole_train, whole_test, n_experiences=5, task_labels=task_labels, seed=3,
                             class_ids_from_zero_in_each_exp=task_labels)
        stream = from_avalanche(bench)
        assert stream.spec.scenario == ("task" if task_labels else "class")
        for t, exp in enumerate(stream):
            original = sorted(int(c) for c in bench.original_classes_in_exp[t])
            if task_labels:  # labels from zero in every task: each task gets units of its own (2t, 2t+1)
                assert exp.classes == (2 * t, 2 * t + 1)
            else:
                assert exp.classes == tuple(original)
            assert len(exp.train) == sum(int((whole_train.tensors[1] == c).sum()) for c in original)
            assert torch.equal(exp.train.task, torch.full((len(exp.train),), t))
        assert stream.spec.n_classes == 10


def test_avalanches_own_permuted_and_split_mnist_become_streams(tmp_path):
    """Avalanche's PermutedMNIST and SplitMNIST classes on tiny MNIST files in the real on-disk format."""
    from avalanche.benchmarks.classic import PermutedMNIST, SplitMNIST

    from tests.test_datasets import write_idx_set

    raw = write_idx_set(tmp_path / "MNIST" / "raw")
    images = torch.as_tensor(raw["train-images-idx3-ubyte"]).float().div(255).sub(0.1307).div(0.3081)  # Avalanche's
    labels = torch.as_tensor(raw["train-labels-idx1-ubyte"]).long()                                 # normalisation

    domain = from_avalanche(PermutedMNIST(n_experiences=3, seed=0, dataset_root=str(tmp_path)))
    assert domain.spec.scenario == "domain" and domain.spec.n_classes == 10 and len(domain) == 3
    for exp in domain:
        assert len(exp.train) == 30 and len(exp.test) == 20
        assert torch.equal(exp.train.y.sort().values, labels.sort().values)
        # every image is a pixel permutation of one original image
        mine = torch.unique(exp.train.x.flatten(1).sort(1).values, dim=0)
        theirs = torch.unique(images.flatten(1).sort(1).values, dim=0)
        torch.testing.assert_close(mine, theirs)
    assert not torch.equal(domain[0].train.x, domain[1].train.x)

    task = from_avalanche(PermutedMNIST(n_experiences=3, seed=0, dataset_root=str(tmp_path), return_task_id=True))
    assert task.spec.scenario == "task" and task.spec.n_classes == 30
    assert [exp.classes for exp in task] == [tuple(range(10 * t, 10 * t + 10)) for t in range(3)]

    split_bench = SplitMNIST(n_experiences=5, seed=0, dataset_root=str(tmp_path))
    split = from_avalanche(split_bench)
    assert split.spec.scenario == "class"
    assert [exp.classes for exp in split] == [tuple(sorted(int(c) for c in cs))
                                              for cs in split_bench.original_classes_in_exp]
    assert sum(len(exp.train) for exp in split) == 30


def test_from_avalanche_rejects_task_labels_that_are_not_experience_indices(digits_task):
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    from clbench.avalanche.streams import tensor_dataset

    datasets = [tensor_dataset(e.train, 1 - e.index) for e in list(digits_task)[:2]]
    bench = with_task_labels(benchmark_from_datasets(train=datasets, test=datasets))
    with pytest.raises(UsageError, match="experience t to carry task label t"):
        from_avalanche(bench, scenario="task")


# -- our strategies as plugins in avalanche.training.Naive ---------------------------------------------------------
class Probe(avalanche.core.SupervisedPlugin):
    """Records, per training experience, the samples and labels of every mini-batch the model was trained on."""

    def __init__(self):
        super().__init__()
        self.labels: dict[int, list[torch.Tensor]] = {}

    def after_forward(self, strategy, **kwargs):
        self.labels.setdefault(strategy.experience.current_experience, []).append(strategy.mb_y.clone())


def train_with_plugin(benchmark, name, params=None, *, seed=0, epochs=1):
    torch.manual_seed(seed)
    model = SimpleMLP(num_classes=10, input_size=64, hidden_size=100, hidden_layers=2, drop_rate=0)
    plugin = ClbenchPlugin(name, benchmark, params=params, seed=seed) if name else None
    probe = Probe()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                     train_mb_size=32, train_epochs=epochs, eval_mb_size=1000,
                     plugins=[p for p in (plugin, probe) if p is not None],
                     evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
    for exp in benchmark.train_stream:
        strategy.train(exp)
    return plugin, probe, model, stream_accuracy(strategy.eval(benchmark.test_stream))


@pytest.fixture(scope="module")
def digits_benchmark(digits_class):
    return to_avalanche(digits_class)


@pytest.fixture(scope="module")
def naive_baseline(digits_benchmark):
    return train_with_plugin(digits_benchmark, None)


def test_naive_plugin_changes_nothing(digits_benchmark, naive_baseline):
    _, _, plain_model, plain_acc = naive_baseline
    _, _, model, acc = train_with_plugin(digits_benchmark, "naive")
    assert acc == plain_acc
    for a, b in zip(plain_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["ewc", "lwf"])
def test_regulariser_plugins_penalise_from_the_second_experience(digits_benchmark, naive_baseline, name):
    plugin, _, model, acc = train_with_plugin(digits_benchmark, name)
    by_exp = {}
    for exp, value in plugin.penalties:
        by_exp.setdefault(exp, []).append(value)
    assert 0 not in by_exp  # nothing to protect while learning the first experience
    assert sorted(by_exp) == [1, 2, 3, 4]
    assert all(max(values) > 0 for values in by_exp.values())
    # the penalty changes training: different weights from plain Naive
    assert any(not torch.equal(a, b) for a, b in zip(naive_baseline[2].parameters(), model.parameters(), strict=True))


@pytest.mark.parametrize("name", ["gem", "agem"])
def test_episodic_plugins_project_gradients_and_keep_memories(digits_benchmark, naive_baseline, name):
    plugin, _, _, acc = train_with_plugin(digits_benchmark, name, {"patterns_per_exp": 50})
    assert plugin.strategy.n_projections_ > 0
    assert plugin.strategy.memory_sizes_ == [50] * 5
    if name == "gem":  # GEM's constraints keep old classes alive far above fine-tuning (0.10 = last task only)
        assert acc > naive_baseline[3] + 0.2


def test_replay_plugin_mixes_memory_into_every_batch_after_the_first_experience(digits_benchmark, naive_baseline):
    plugin, probe, _, acc = train_with_plugin(digits_benchmark, "replay", {"mem_size": 100})
    first = torch.cat(probe.labels[0])
    assert set(first.tolist()) <= {0, 1}
    for exp in range(1, 5):
        own = set(digits_benchmark.train_stream[exp].classes_in_this_experience)
        for labels in probe.labels[exp]:
            assert len(labels) > 32  # memory samples were appended to the loader's batch (at most 32)
            assert set(labels.tolist()) - own  # ... and they come from earlier experiences
    assert acc > naive_baseline[3]


def test_joint_plugin_trains_on_everything_seen_so_far(digits_benchmark):
    _, probe, _, acc = train_with_plugin(digits_benchmark, "joint")
    for exp in range(5):
        seen = sum(len(digits_benchmark.train_stream[e].dataset) for e in range(exp + 1))
        assert sum(len(labels) for labels in probe.labels[exp]) == seen
    assert acc > 0.5


def test_center_loss_plugin_penalises_and_freezes_old_head_rows(digits_benchmark):
    plugin, _, model, _ = train_with_plugin(digits_benchmark, "center-loss", {"center_lambda": 0.1})
    assert len(plugin.penalties) > 0 and all(v > 0 for _, v in plugin.penalties)
    strategy = plugin.strategy
    assert strategy.frozen_head_ is not None
    before_last = strategy.frozen_.clone()
    before_last[list(digits_benchmark.train_stream[4].classes_in_this_experience)] = False
    assert before_last.sum() == 8
    assert torch.equal(model.classifier.weight[before_last], strategy.frozen_head_[0])  # untouched by exp 4


def test_plugin_rejects_strategies_with_their_own_step(digits_benchmark):
    with pytest.raises(UsageError, match="ClbenchStrategy"):
        ClbenchPlugin("hnet", digits_benchmark)


# -- any clbench strategy as an Avalanche strategy --------------------------------------------------------------
# 5 epochs: with 2, hnet's final accuracy on these tiny tasks still varies from 0.89 to 0.99 between seeds.
ISOLATION_TRAIN = TrainConfig(epochs=5, batch_size=32, lr=1e-3, optimizer="adam")


@pytest.mark.parametrize("name", ["hnet", "supsup"])
def test_clbench_strategy_in_avalanche_matches_our_runner(digits_task, name):
    ours = run(config(name, "task", train=ISOLATION_TRAIN), digits_task, progress=False)
    assert ours.status == "ok", ours.error

    benchmark = to_avalanche(digits_task)
    log = io.StringIO()
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[TextLogger(log)])
    torch.manual_seed(0)
    strategy = ClbenchStrategy(strategy=name, benchmark=benchmark, model=build_backbone(digits_task.spec),
                               train=ISOLATION_TRAIN, evaluator=evaluator)
    assert isinstance(strategy, SupervisedTemplate)
    for exp in benchmark.train_stream:
        strategy.train(exp)
    theirs = stream_accuracy(strategy.eval(benchmark.test_stream))
    # different mini-batch order (Avalanche's loader), same method: within three points of each other
    assert abs(theirs - final_mean_accuracy(ours, len(digits_task))) < 0.03
    assert theirs > 0.9
    assert "Top1_Acc_Stream/eval_phase/test_stream" in log.getvalue()  # Avalanche's logger saw the metrics


def test_clbench_strategy_runs_sgd_strategies_too(digits_class):
    benchmark = to_avalanche(digits_class)
    strategy = ClbenchStrategy(strategy="replay", params={"mem_size": 200}, benchmark=benchmark, train=FAST_TRAIN,
                               evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
    for exp in benchmark.train_stream:
        strategy.train(exp)
    assert len(strategy.clbench.buffer_) == 200
    assert stream_accuracy(strategy.eval(benchmark.test_stream)) > 0.2


# -- Avalanche's strategies in our runner -----------------------------------------------------------------------
AVALANCHE_BASELINES = [("Naive", {}), ("EWC", {}), ("LwF", {}), ("GEM", {"patterns_per_exp": 50}),
                       ("AGEM", {"patterns_per_exp": 50}), ("Replay", {"mem_size": 100}),
                       ("SynapticIntelligence", {"si_lambda": 1.0})]


@pytest.mark.parametrize(("name", "params"), AVALANCHE_BASELINES)
@pytest.mark.parametrize("scenario", ["class", "task"])
def test_avalanche_strategies_run_in_our_runner(digits_class, digits_task, name, params, scenario):
    stream = digits_class if scenario == "class" else digits_task
    result = run(config(f"avalanche:{name}", scenario, params=params), stream, progress=False)
    assert result.status == "ok", result.error
    steps = {e["step"] for e in result.evals}
    assert steps == set(range(-1, len(stream)))
    assert all(c["train_loss"] > 0 for c in result.costs if c["step"] >= 0)
    if scenario == "task":  # the task-masked multi-head model: far above chance (0.5 per task)
        assert final_mean_accuracy(result, len(stream)) > 0.8


def test_avalanche_strategy_is_bit_reproducible_and_starts_from_our_initial_weights(digits_class):
    first = run(config("avalanche:EWC"), digits_class, progress=False)
    second = run(config("avalanche:EWC"), digits_class, progress=False)
    ours = run(config("ewc"), digits_class, progress=False)
    assert first.evals == second.evals
    random_row = [e for e in first.evals if e["step"] == -1]
    assert random_row == [e for e in ours.evals if e["step"] == -1]  # same stream, same initial model


def test_avalanche_ewc_lands_in_the_leaderboard_next_to_ours(tmp_path):
    code = cli.main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", "ewc",
                     "avalanche:EWC", "--set", "ewc_lambda=5.0", "--seeds", "0", "1", "--epochs", "1",
                     "--batch-size", "32", "--lr", "0.05", "--out", str(tmp_path), "--quiet", "--no-plots"])
    assert code == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert set(board["strategy"]) == {"ewc", "avalanche:EWC"}
    assert (board["n_seeds"] == 2).all()
    assert board["params"].str.contains('"ewc_lambda": 5.0').all()  # the unprefixed --set reached both
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert (runs["status"] == "ok").all() and len(runs) == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["--strategy", "avalanche:Nope"], "valid choices: .*avalanche:EWC"),
    (["--strategy", "avalanche:SynapticIntelligence"], "needs si_lambda"),
    (["--strategy", "avalanche:EWC", "--set", "ewc_lambda=abc"], "must be float"),
    (["--strategy", "avalanche:EWC", "--iterations", "10"], "Avalanche's own loop, which counts epochs"),
])
def test_bad_avalanche_input_exits_2(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = cli.main(["run", "--benchmark", "split-digits", "--scenario", "class", *argv, "--out", str(out)])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_without_avalanche_the_error_names_the_extra(monkeypatch):
    for module in [m for m in sys.modules if m == "avalanche" or m.startswith("avalanche.")]:
        monkeypatch.setitem(sys.modules, module, None)  # importing any of it now raises ImportError
    for module in [m for m in sys.modules if m.startswith("clbench.avalanche")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(UsageError, match=r"clbench\[avalanche\]"):
        get_strategy("avalanche:Naive-not-cached")


def test_readme_avalanche_examples_run(capsys):
    """The README's Avalanche examples are pasted as they are (they must stay true)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Avalanche\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
        strategy = namespace["strategy"]
        metrics = strategy.eval(namespace["benchmark"].test_stream)
        assert stream_accuracy(metrics) > 0.3  # well above the last task alone (0.2 in class-IL)
    assert "Top1_Acc_Stream" in capsys.readouterr().out  # the InteractiveLogger printed Avalanche's metrics
