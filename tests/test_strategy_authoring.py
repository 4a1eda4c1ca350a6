"""Writing a strategy of one's own (README "Python API"): the hooks need no super() call where clbench's bookkeeping
is at stake (the optimizer reset runs around before_experience, a forgotten super().setup(...) is one clear error),
tables show a class by its display name, and the README's example runs as written.

The classes below are user strategies loaded by module path (`tests.test_strategy_authoring:Class`)."""

import re
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from clbench.benchmarks import build_backbone
from clbench.errors import UsageError
from clbench.runners import loop
from clbench.runners.cli import EXIT_RUN_FAILED, EXIT_USAGE, main
from clbench.runners.config import RunConfig
from clbench.strategies import SGDStrategy, Strategy, TrainConfig, get_strategy, registry
from clbench.strategies.naive import Naive
from tests.helpers import batches

ROOT = Path(__file__).resolve().parents[1]
HERE = __name__  # this module, as a user's module path
TINY = ["--benchmark", "split-digits", "--scenario", "class", "--epochs", "1", "--batch-size", "32",
        "--train-subset", "100", "--quiet", "--no-plots"]
ADAM = TrainConfig(batch_size=32, lr=0.001, optimizer="adam")  # moments: a kept optimizer state is easy to see
MOMENTUM = TrainConfig(batch_size=32, lr=0.05, momentum=0.9)


class HookWithoutSuper(SGDStrategy):
    """Overrides before_experience and after_experience without super(): the README's pattern."""

    def __init__(self):
        pass

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.began_: list[int] = []

    def before_experience(self, exp):
        self.began_.append(exp.index)

    def after_experience(self, exp):
        pass


class HookWithSuper(HookWithoutSuper):
    """The same, calling super() in its hooks as the documentation once required."""

    def before_experience(self, exp):
        super().before_experience(exp)

    def after_experience(self, exp):
        super().after_experience(exp)


class OwnOptimizer(HookWithoutSuper):
    """Builds its optimizer itself in before_experience (plain SGD at a tenth of the run's rate)."""

    def before_experience(self, exp):
        self.optimizer_ = torch.optim.SGD(self.model_.parameters(), lr=self.train_config_.lr / 10)


class SetupWithoutSuper(SGDStrategy):
    """Forgets super().setup(...): nothing of the base setup (model_, optimizer_, ...) exists."""

    def __init__(self, strength: float = 0.01):
        self.strength = strength

    def setup(self, spec, model, *, train, seed, device="cpu"):
        self.anchor_ = None


class ForgetsHyperparameter(SGDStrategy):
    """Takes a hyperparameter and does not store it."""

    def __init__(self, strength: float = 0.01):
        pass


class LoadWithoutSuper(Naive):
    """Overrides load_checkpoint_state (to log, say) and forgets to pass the state on."""

    def load_checkpoint_state(self, state):
        pass


def _set_up(cls, stream, train):
    strategy = cls()
    torch.manual_seed(0)
    strategy.begin_run(stream.spec, build_backbone(stream.spec), train=train, seed=0)
    return strategy


def _train_a_little(strategy, exp, n=3):
    strategy.begin_experience(exp)
    for batch in batches(exp.train, n=n):
        strategy.train_step(batch)
    strategy.end_experience(exp)


# -- the optimizer reset does not depend on super() --------------------------------------------------------------------
@pytest.mark.parametrize("cls", [HookWithoutSuper, HookWithSuper])
def test_a_before_experience_without_super_still_gets_a_fresh_optimizer(digits_class, cls):
    strategy = _set_up(cls, digits_class, ADAM)
    _train_a_little(strategy, digits_class[0])
    used = strategy.optimizer_
    assert used.state  # Adam moments after three steps
    strategy.begin_experience(digits_class[1])
    assert strategy.began_ == [0, 1]  # the user's hook ran ...
    assert strategy.optimizer_ is not used and not strategy.optimizer_.state  # ... and so did the reset
    params = {id(p) for group in strategy.optimizer_.param_groups for p in group["params"]}
    assert params == {id(p) for p in strategy.model_.parameters()}


def test_with_keep_the_optimizer_and_its_moments_carry_over_without_super(digits_class):
    strategy = _set_up(HookWithoutSuper, digits_class, TrainConfig(batch_size=32, lr=0.001, optimizer="adam",
                                                                    optimizer_state="keep"))
    _train_a_little(strategy, digits_class[0])
    used = strategy.optimizer_
    moments = {id(p): s["exp_avg"].clone() for p, s in used.state.items()}
    strategy.begin_experience(digits_class[1])
    assert strategy.optimizer_ is used
    assert all(torch.equal(s["exp_avg"], moments[id(p)]) for p, s in used.state.items())


def test_an_optimizer_the_hook_builds_itself_is_not_replaced(digits_class):
    strategy = _set_up(OwnOptimizer, digits_class, MOMENTUM)
    strategy.begin_experience(digits_class[0])
    assert isinstance(strategy.optimizer_, torch.optim.SGD)
    assert strategy.optimizer_.param_groups[0]["lr"] == pytest.approx(MOMENTUM.lr / 10)


def test_runs_with_and_without_super_are_identical_to_naive(digits_class):
    """Bit for bit, under momentum (which a missed reset would carry from one experience into the next)."""
    results = [loop.run(RunConfig("split-digits", "class", f"{HERE}:{cls.__name__}" if cls else "naive",
                                  train=MOMENTUM), digits_class, progress=False)
               for cls in (None, HookWithoutSuper, HookWithSuper)]
    assert [r.status for r in results] == ["ok"] * 3
    naive, without, with_super = results
    assert without.evals == naive.evals and with_super.evals == naive.evals
    assert [c["train_loss"] for c in without.costs] == [c["train_loss"] for c in naive.costs]


def test_the_runner_facing_methods_cannot_be_overridden():
    with pytest.raises(TypeError, match=r"Mine defines begin_experience.*override before_experience instead"):
        type("Mine", (SGDStrategy,), {"begin_experience": lambda self, exp: None})
    with pytest.raises(TypeError, match="override setup instead"):
        type("Mine", (Strategy,), {"begin_run": lambda self, *a, **k: None})


# -- a forgotten super().setup(...) and other slips are one clear message ---------------------------------------------
def test_a_setup_without_super_is_an_error_naming_the_class(digits_class):
    with pytest.raises(UsageError, match=re.escape(
            "SetupWithoutSuper.setup does not call super().setup(spec, model, train=train, seed=seed, "
            "device=device)")) as caught:
        _set_up(SetupWithoutSuper, digits_class, MOMENTUM)
    assert "model_" in str(caught.value) and "optimizer_" in str(caught.value)
    assert "add that call at the start of SetupWithoutSuper.setup" in str(caught.value)


def test_a_setup_without_super_fails_its_runs_with_one_line_through_the_cli(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", *TINY, "--strategy", f"{HERE}:SetupWithoutSuper", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == EXIT_RUN_FAILED
    assert "Traceback" not in printed.out + printed.err
    failures = [line for line in (printed.out + printed.err).splitlines() if "does not call super().setup" in line]
    assert len(failures) == 1 and "failed" in failures[0] and "add that call at the start of" in failures[0]
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["failed"] and runs["error"].str.contains("SetupWithoutSuper.setup").all()


def test_a_hyperparameter_not_stored_is_a_usage_error_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", *TINY, "--strategy", f"{HERE}:ForgetsHyperparameter", "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "ForgetsHyperparameter.__init__ must store each hyperparameter" in err and "self.strength = strength" in err
    assert "Traceback" not in err and not out.exists()


def test_a_load_checkpoint_state_without_super_is_caught_on_resume(digits_class):
    strategy = _set_up(LoadWithoutSuper, digits_class, MOMENTUM)
    _train_a_little(strategy, digits_class[0])
    fresh = _set_up(LoadWithoutSuper, digits_class, MOMENTUM)
    with pytest.raises(ValueError, match=r"LoadWithoutSuper.load_checkpoint_state does not call super\(\)"):
        fresh.restore_checkpoint(strategy.checkpoint_state())
    resumed = _set_up(Naive, digits_class, MOMENTUM)  # the built-in passes the check and gets the trained weights
    resumed.restore_checkpoint(strategy.checkpoint_state())
    assert all(torch.equal(a, b) for a, b in zip(resumed.model_.parameters(), strategy.model_.parameters(),
                                                 strict=True))


# -- display names -----------------------------------------------------------------------------------------------------
def test_tables_show_a_module_path_strategy_by_its_name_and_record_the_path(tmp_path):
    out = tmp_path / "out"
    assert main(["run", *TINY, "--strategy", "tests.user_strategies:L2Anchor", "tests.user_strategies:SelfNamed",
                 "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv").sort_values("strategy")
    assert list(runs["strategy"]) == ["L2Anchor", "self-named"]  # the class name; its own `name`
    assert list(runs["strategy_ref"]) == ["tests.user_strategies:L2Anchor", "tests.user_strategies:SelfNamed"]
    assert set(pd.read_csv(out / "leaderboard.csv")["strategy"]) == {"L2Anchor", "self-named"}
    assert main(["run", *TINY, "--strategy", "tests.user_strategies:L2Anchor", "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "runs.csv")) == 2  # re-run from the recorded path: found finished, skipped


def test_a_class_name_keeps_the_run_id_its_module_path_gave():
    config = RunConfig("split-digits", "class", "tests.user_strategies:L2Anchor")
    assert (config.strategy, config.strategy_ref) == ("L2Anchor", "tests.user_strategies:L2Anchor")
    assert config.canonical()["strategy"] == "tests.user_strategies:L2Anchor" and "strategy_ref" not in \
        config.canonical()


@pytest.fixture
def lookalikes(tmp_path, monkeypatch):
    """Two user modules with a class of the same name, a class `MAS` and one named exactly like a built-in."""
    source = textwrap.dedent("""
        from clbench.strategies import SGDStrategy


        class L2Anchor(SGDStrategy):
            def __init__(self):
                pass


        class MAS(L2Anchor):
            pass


        class naive(L2Anchor):  # noqa: N801
            pass
        """)
    names = ["authoring_lab_a", "authoring_lab_b"]
    for name in names:
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield names
    for name in names:
        sys.modules.pop(name, None)


def test_same_named_classes_of_two_modules_are_told_apart(lookalikes, tmp_path, capsys):
    a, b = (f"{module}:L2Anchor" for module in lookalikes)
    assert get_strategy(a).name == get_strategy(b).name == "L2Anchor"
    assert RunConfig("split-digits", "class", a).run_id != RunConfig("split-digits", "class", b).run_id
    out = tmp_path / "out"
    assert main(["run", *TINY, "--strategy", a, b, "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"strategies {a} and {b} both show as 'L2Anchor'" in err and "`name`" in err and not out.exists()


def test_a_class_named_like_a_built_in_never_shadows_it(lookalikes):
    module = lookalikes[0]
    assert get_strategy(f"{module}:MAS").name == "MAS" and get_strategy("mas").name == "mas"  # case-sensitive
    assert get_strategy(f"{module}:naive").name == f"{module}:naive"  # shown by its path beside the built-in
    assert get_strategy("naive") is Naive
    with pytest.raises(TypeError, match="'naive' is a built-in strategy; register yours under another name"):
        registry.register("naive")(get_strategy(f"{module}:L2Anchor"))
    assert get_strategy("naive") is Naive


# -- the README's example ---------------------------------------------------------------------------------------------
def _readme_api_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Python API"):readme.index("## Avalanche")]


def test_the_readme_example_strategy_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's code block, verbatim, as the user's module (split-digits task-IL, one epoch: seconds)."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", _readme_api_section(), re.S) if "@register(" in b)
    (tmp_path / "readme_example.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # its "l2-anchor" leaves with the test
    monkeypatch.delitem(sys.modules, "readme_example", raising=False)
    try:
        import readme_example
    finally:
        sys.modules.pop("readme_example", None)
    printed = capsys.readouterr().out
    assert readme_example.result.status == "ok", readme_example.result.error
    assert readme_example.result.config.strategy == "l2-anchor"
    acc = float(re.search(r"^ok ACC (\d\.\d+)", printed, re.M).group(1))
    assert acc > 0.9  # task-IL split-digits: near the joint bound
    # the anchor is learned state: set in after_experience, kept in checkpoints
    strategy = readme_example.L2Anchor()
    strategy.begin_run(readme_example.stream.spec, build_backbone(readme_example.stream.spec), train=MOMENTUM,
                       seed=0)
    assert strategy.penalty(None, None, None) is None
    strategy.end_experience(readme_example.stream[0])
    assert len(strategy.checkpoint_state()["anchor_"]) == len(list(strategy.model_.parameters()))


def test_the_readme_lifecycle_table_matches_the_signatures():
    """Every `method(args)` the README's lifecycle table names exists with those parameters."""
    rows = [line for line in _readme_api_section().splitlines() if line.startswith("| `")]
    documented = [m for row in rows for m in re.findall(r"`(\w+)\(([^)]*)\)", row.split("|")[1])]
    assert {name for name, _ in documented} >= {"setup", "before_experience", "experience_train", "train_data",
                                                 "fit_experience", "train_step", "after_experience", "predict",
                                                 "state_bytes", "checkpoint_state", "load_checkpoint_state"}
    import inspect

    for name, args in documented:
        actual = [p for p in inspect.signature(getattr(SGDStrategy, name)).parameters if p != "self"]
        assert [a.split("=")[0].strip() for a in args.split(",") if a.strip() not in ("", "*")] == actual, name
