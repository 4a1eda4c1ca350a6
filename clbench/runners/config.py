"""A run's full configuration and its stable id (a hash of the canonical config)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from clbench.metrics.tables import RECORDED_LATER
from clbench.strategies.base import TrainConfig

# Hyperparameters added after runs were recorded: left out of the canonical config while at these defaults, so the
# ids of earlier runs (which ran with exactly these values) stay valid and a rerun skips them.
LATER_DEFAULTS = {
    "ewc": {"fisher_labels": "true", "gamma_in_penalty": False, "fisher_weighting": "none"},
    "gem": {"memory": "per_experience", "mem_size": None},
    "joint": {"mode": "incremental"},
    "lwf": {"weighting": "equal", "units": "old", "warmup_epochs": 0, "ce_units": "all"},
    "replay": {"loss_weighting": "concat", "per_class": None, "update": "experience"},
}
# Runner settings added later, likewise left out at these defaults (TrainConfig fields); the tables read the same
# defaults into an older folder's settings columns.
LATER_TRAIN_DEFAULTS = {"iterations": None, **RECORDED_LATER}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results. Two runs with equal configs give identical tables on the CPU."""

    benchmark: str
    scenario: str
    strategy: str
    params: dict = field(default_factory=dict)  # every hyperparameter, defaults filled in
    seed: int = 0
    stream_seed: int = 0
    n_experiences: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    train: TrainConfig = TrainConfig()
    eval_every: int = 1  # full rows of R every k training experiences (and at the last); see loop.evaluated
    backbone: str | None = None  # None: the benchmark's reference backbone
    class_order: str = "seeded"  # split benchmarks: "natural" keeps label order
    # Continual evaluation (De Lange et al. 2023): every `eval_period` optimizer steps (and at each experience's first
    # and last step) the seen experiences and the next one, on `eval_subset` test samples each; None: boundaries only.
    eval_period: int | None = None
    eval_subset: int = 1000
    # A class-balanced fraction of each experience's training data held out as its validation set, evaluated beside
    # the test set (evals.csv split "val"); None: train on all of it.
    validation_split: float | None = None
    # Hyperparameter selection (a sweep's [tune]): "tune" runs are evaluated on the validation set only, never on a
    # test set, on the stream's first `first_experiences` experiences (None: all); "final" runs report on test.
    phase: str = "final"
    first_experiences: int | None = None
    # How a final run's configuration was chosen ("acc on val, first 2 experiences, 4 trials"); a record, not part of
    # the run's identity: the same configuration chosen twice is one run.
    selected_by: str = field(default="", compare=False)
    # Where the strategy's class lives ("package.module:Class"; registry.strategy_ref), so that worker processes and
    # Ray tasks import it from there; `strategy` is its display name. None: looked up from `strategy` now.
    strategy_ref: str | None = None

    def __post_init__(self):
        if self.strategy_ref is None:
            from clbench.strategies.registry import get_strategy, strategy_ref

            cls = get_strategy(self.strategy)
            object.__setattr__(self, "strategy_ref", strategy_ref(cls))
            object.__setattr__(self, "strategy", cls.name)  # a module path given: the class's display name

    def strategy_class(self):
        """The strategy's class, imported from `strategy_ref` (a run the user asked for, never a folder's text)."""
        from clbench.strategies.registry import load_strategy

        return load_strategy(self.strategy_ref)

    def canonical(self, *, with_seed: bool = True) -> dict:
        out = dataclasses.asdict(self)
        # The class reference is identity only where it is not what the display name already says (a user's class
        # that calls itself "ewc" must not share the built-in's run ids); run ids from before the field stay valid.
        if _named_after_its_class(self.strategy, self.strategy_ref):
            # a class name identifies nothing alone (two modules may each have an L2Anchor); the module path does,
            # and was the display name of such classes before they showed by class name, so their run ids stay
            out["strategy"] = out.pop("strategy_ref")
        elif not _ref_shadows_builtin(self.strategy, self.strategy_ref):
            out.pop("strategy_ref")
        for name, default in LATER_DEFAULTS.get(self.strategy, {}).items():
            if name in out["params"] and out["params"][name] == default:
                out["params"].pop(name)
        if not with_seed:
            out.pop("seed")
        if self.eval_every == 1:  # the default is left out so that run ids from before the option stay valid
            out.pop("eval_every")
        for name, default in LATER_TRAIN_DEFAULTS.items():  # likewise
            if out["train"][name] == default:
                out["train"].pop(name)
        if self.backbone is None:
            out.pop("backbone")
        if self.class_order == "seeded":
            out.pop("class_order")
        if self.validation_split is None:  # left out, so that run ids from before the option stay valid
            out.pop("validation_split")
        out.pop("selected_by")
        if self.phase == "final":
            out.pop("phase")
        if self.first_experiences is None:
            out.pop("first_experiences")
        if self.eval_period is None:  # boundaries only: the subset size is unused, and older run ids stay valid
            out.pop("eval_period")
            out.pop("eval_subset")
        return out

    def settings(self) -> dict:
        """The runner's settings (optimisation, data sizes, evaluation), without the method and its hyperparameters."""
        return dataclasses.asdict(self.train) | {
            "n_experiences": self.n_experiences, "train_subset": self.train_subset, "test_subset": self.test_subset,
            "eval_every": self.eval_every, "backbone": self.backbone, "class_order": self.class_order,
            "eval_period": self.eval_period, "eval_subset": self.eval_subset if self.eval_period else None,
            "validation_split": self.validation_split, "first_experiences": self.first_experiences,
        }

    @property
    def run_id(self) -> str:
        return _digest(self.canonical())

    @property
    def config_id(self) -> str:
        """The same for every seed of one configuration: what the leaderboard averages over."""
        return _digest(self.canonical(with_seed=False))


def _ref_shadows_builtin(name: str, ref: str) -> bool:
    from clbench.strategies.registry import BUILTIN_MODULES

    return name in BUILTIN_MODULES and ref.partition(":")[0] != BUILTIN_MODULES[name]


def _named_after_its_class(name: str, ref: str) -> bool:
    """True for a class loaded by module path that shows under its class name (registry.display_name)."""
    module, sep, qualname = ref.partition(":")
    return bool(sep) and module != "avalanche" and qualname.rpartition(".")[2] == name


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
