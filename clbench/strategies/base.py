"""The runner-facing strategy interface and the SGD template most methods build on.

The runner only ever calls, in order:

    setup(spec, model, train=..., seed=..., device=...)   once, before the random-init evaluation
    for each experience:
        before_experience(exp)
        train_data(exp)            -> the samples to cut mini-batches from (joint widens it)
        fit_experience(exp, batches) -> yields one loss per step; by default one train_step(batch) per mini-batch
        after_experience(exp)
    predict(x, task_id or None)    -> logits, under torch.no_grad() (task inference may enable grad locally)
    state_bytes()                  -> memory the method keeps beyond the model (buffers, Fisher, masks)

Following scikit-learn, the constructor only stores hyperparameters (its signature, with type annotations and
defaults, *is* the hyperparameter list that `clbench list` prints and `--set` checks); learned state is created in
`setup` and named with a trailing underscore.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.benchmarks.base import SCENARIOS, Batch, Experience, StreamSpec, TensorData
from clbench.errors import UsageError

# Logits of units a task does not own; finite (not -inf) so that softmax-based penalties never produce 0·inf = NaN.
MASKED_LOGIT = -1e9


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every strategy of a run (the runner's, not a method's, hyperparameters)."""

    epochs: int = 1
    batch_size: int = 128
    # Optimizer steps per experience, reshuffling at each pass; replaces epochs when set (protocols counted in
    # iterations, e.g. van de Ven & Tolias's 2000 per task). Strategies with a loop of their own use epochs.
    iterations: int | None = None
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: Literal["sgd", "adam"] = "sgd"
    eval_batch_size: int = 2048

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "iterations"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}; valid choices: adam, sgd")


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: object  # an annotation: int, float, bool, str, Literal[...], or Optional of those
    default: object

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    def check(self, value, owner: str):
        """Return `value` converted to this hyperparameter's type, or raise UsageError naming what is valid."""
        ok, converted = _coerce(self.type, value)
        if not ok:
            raise UsageError(
                f"hyperparameter {self.name}={value!r} of strategy {owner!r} must be {self.type_name}"
            )
        return converted


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _coerce(annotation, value):
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return (value in typing.get_args(annotation)), value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, converted = _coerce(option, value)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    if origin in (list, tuple, collections.abc.Sequence):  # e.g. Sequence[float]: one value per experience
        args = typing.get_args(annotation)
        ok = isinstance(value, (list, tuple)) and all(_coerce(args[0], v)[0] for v in value) if args else True
        return ok, value
    if origin is not None:
        return isinstance(value, origin), value
    if not isinstance(annotation, type):  # an annotation clbench cannot check (a forward reference, a TypeVar)
        return True, value
    return isinstance(value, annotation), value


class Strategy:
    """Base of every continual-learning method. Subclasses set `name`, `scenarios` and define `__init__` with
    annotated, defaulted keyword arguments (the hyperparameters), then override the lifecycle methods they need."""

    name: ClassVar[str] = ""
    scenarios: ClassVar[frozenset[str]] = frozenset(SCENARIOS)

    # -- hyperparameters -------------------------------------------------------------------------------------------
    @classmethod
    def hyperparameters(cls) -> dict[str, Hyperparameter]:
        hints = typing.get_type_hints(cls.__init__)
        out = {}
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is p.empty or p.name not in hints:
                raise TypeError(f"{cls.__name__}.__init__ argument {p.name!r} needs a type annotation and a default")
            out[p.name] = Hyperparameter(p.name, hints[p.name], p.default)
        return out

    @classmethod
    def from_params(cls, params: dict) -> Strategy:
        """Build from user-given values, checking names and types (UsageError on anything wrong)."""
        known = cls.hyperparameters()
        checked = {}
        for key, value in params.items():
            if key not in known:
                valid = ", ".join(sorted(known)) or "(none: this strategy has no hyperparameters)"
                raise UsageError(f"unknown hyperparameter {key!r} for strategy {cls.name!r}; valid choices: {valid}")
            checked[key] = known[key].check(value, cls.name)
        strategy = cls(**checked)
        strategy.validate()
        return strategy

    def validate(self) -> None:
        """Check relations between hyperparameters (ranges, combinations); raise UsageError naming the bad value."""

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self.hyperparameters()}

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    @classmethod
    def check_scenario(cls, scenario: str) -> None:
        if scenario not in cls.scenarios:
            raise UsageError(
                f"strategy {cls.name!r} does not support scenario {scenario!r}; "
                f"valid choices: {', '.join(sorted(cls.scenarios))}"
            )

    @classmethod
    def check_train(cls, train: TrainConfig) -> None:
        """Reject runner settings the method cannot honour (called before any run starts)."""

    def setup(self, spec: StreamSpec, model: nn.Module, *, train: TrainConfig, seed: int, device="cpu") -> None:
        self.check_scenario(spec.scenario)
        self.check_train(train)
        self.spec_ = spec
        self.model_ = model
        self.train_config_ = train
        self.device_ = torch.device(device)
        # Each strategy draws its own randomness (replay sampling, ...) from its own generator.
        self.generator_ = torch.Generator(device="cpu").manual_seed(seed)
        self.unit_mask_ = spec.task_unit_mask(self.device_)

    def before_experience(self, exp: Experience) -> None:
        pass

    def train_data(self, exp: Experience) -> TensorData:
        return exp.train

    def fit_experience(self, exp: Experience, batches: Iterator[Batch]) -> Iterator[float]:
        """Train on one experience, yielding each step's loss (the runner stops a run whose loss is not finite).

        `batches` are the runner's seeded mini-batches of `train_data(exp)`, drawn lazily. Methods override
        `train_step`; only a strategy that brings its own training loop (an Avalanche strategy) overrides this.
        """
        for batch in batches:
            yield self.train_step(batch)["loss"]

    def train_step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def after_experience(self, exp: Experience) -> None:
        pass

    def predict(self, x: torch.Tensor, task_id: int | None) -> torch.Tensor:
        raise NotImplementedError

    def state_bytes(self) -> int:
        """Bytes of learned state kept besides the model's own weights (buffers, importances, snapshots)."""
        return 0

    # -- helpers shared by methods -----------------------------------------------------------------------------------
    def mask_logits(self, logits: torch.Tensor, task: torch.Tensor | int | None) -> torch.Tensor:
        """In task-IL, restrict each sample's logits to the units of its task (a multi-head model in one matrix)."""
        if task is None or self.spec_.scenario != "task":
            return logits
        rows = self.unit_mask_[task] if isinstance(task, torch.Tensor) else self.unit_mask_[task].expand_as(logits)
        return logits.masked_fill(~rows, MASKED_LOGIT)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def classifier_head(model: nn.Module) -> nn.Linear:
    """The output layer: clbench backbones' `head`, Avalanche models' `classifier`, else the last nn.Linear."""
    for name in ("head", "classifier"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError(f"cannot find the output layer of {type(model).__name__}: it has no nn.Linear")
    return linears[-1]


def tensors_nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class SGDStrategy(Strategy):
    """A gradient-descent step with four hooks — exactly what an Avalanche plugin can carry
    (`clbench.avalanche.ClbenchPlugin` maps them one to one):

    augment_batch(batch)              -> batch       (replay: add memory samples)        ~ before_forward
    penalty(batch, features, logits)  -> tensor      (EWC, LwF, center loss)             ~ before_backward
    project_gradients(batch)          -> None        (GEM, A-GEM edit .grad in place)    ~ after_backward
    after_update()                    -> None        (center loss: restore frozen rows)  ~ after_update
    """

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.optimizer_ = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer([p for p in self.model_.parameters() if p.requires_grad], self.train_config_)

    def before_experience(self, exp):
        # A fresh optimizer per experience: momentum from the previous task must not push the new one.
        self.optimizer_ = self.make_optimizer()

    # hooks -----------------------------------------------------------------------------------------------------------
    def augment_batch(self, batch: Batch) -> Batch:
        return batch

    def penalty(self, batch: Batch, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        return None

    def project_gradients(self, batch: Batch) -> None:
        pass

    def after_update(self) -> None:
        pass

    # the step ---------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features, logits): split at `features`/`head` for clbench backbones, read off the output
        layer's input for any other model (e.g. an Avalanche SimpleMLP)."""
        model = self.model_
        if isinstance(getattr(model, "head", None), nn.Module) and isinstance(getattr(model, "features", None),
                                                                                nn.Module):
            features = model.features(x)
            return features, model.head(features)
        captured = []
        handle = classifier_head(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            logits = model(x)
        finally:
            handle.remove()
        return captured[-1], logits

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.mask_logits(logits, batch.task), batch.y)

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.model_.train()
        batch = self.augment_batch(batch)
        self.optimizer_.zero_grad(set_to_none=True)
        features, logits = self.forward(batch.x)
        loss = self.task_loss(logits, batch)
        penalty = self.penalty(batch, features, logits)
        total = loss if penalty is None else loss + penalty
        total.backward()
        self.project_gradients(batch)
        self.optimizer_.step()
        self.after_update()
        stats = {"loss": total.item()}
        if penalty is not None:
            stats["penalty"] = penalty.item()
        return stats

    def predict(self, x, task_id):
        self.model_.eval()
        return self.mask_logits(self.model_(x), task_id)
