"""The runner-facing strategy interface and the SGD template most methods build on.

The runner only ever calls, in order:

    setup(spec, model, train=..., seed=..., device=...)   once, before the random-init evaluation
    for each experience:
        before_experience(exp)
        experience_train(exp)      -> this experience's budget (TrainConfig), or None: not trained, not evaluated
        train_data(exp)            -> the samples to cut mini-batches from (joint widens it; a list: equal shares)
        fit_experience(exp, batches) -> yields one loss per step; by default one train_step(batch) per mini-batch
        after_experience(exp)
    predict(x, task_id or None)    -> logits, under torch.no_grad() (task inference may enable grad locally)
    state_bytes()                  -> memory the method keeps beyond the model (buffers, Fisher, masks)

Following scikit-learn, the constructor only stores hyperparameters (its signature, with type annotations and
defaults, *is* the hyperparameter list that `clbench list` prints and `--set` checks); learned state is created in
`setup` and named with a trailing underscore.

Checkpoints (a long run resumed after a kill) store that learned state as tensors and plain values, never as pickled
objects: `checkpoint_state()` encodes every trailing-underscore attribute and `load_checkpoint_state(state)` writes it
back into a strategy freshly built and `setup` exactly as the run first did, in place (see those methods).
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

from clbench.benchmarks.backbones import NORMALIZE
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
    # Protocol choices that move numbers (van de Ven & Tolias's code keeps one Adam across contexts, feeds pixels in
    # [0, 1] and drops the last short batch of each pass; Mammoth resets the optimizer per task). The defaults are
    # clbench's original behaviour, so earlier run ids stay valid.
    optimizer_state: Literal["reset", "keep"] = "reset"  # a new optimizer at every experience, or one for the run
    normalize: Literal["standardize", "none"] = "standardize"  # backbone input: dataset mean/std, or raw pixels
    drop_last: bool = False  # drop each pass's last incomplete mini-batch (unless the data is less than one batch)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "iterations"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        import math  # local: this method is the only user

        # NaN fails no `<` test, so each range says what a value must satisfy, finiteness included.
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"lr must be positive and finite, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"weight-decay must be finite and >= 0, got {self.weight_decay}")
        for name, choices in (("optimizer", ("adam", "sgd")), ("optimizer_state", ("keep", "reset")),
                              ("normalize", tuple(sorted(NORMALIZE)))):
            if getattr(self, name) not in choices:
                raise UsageError(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; "
                                 f"valid choices: {', '.join(choices)}")
        if not isinstance(self.drop_last, bool):
            raise UsageError(f"drop-last must be true or false, got {self.drop_last!r}")


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
    # False for a strategy whose state cannot be written as tensors and plain values (one wrapping a foreign
    # object): its runs save no checkpoint and restart from the beginning after a kill.
    checkpointable: ClassVar[bool] = True
    # Learned attributes that `setup` rebuilds identically from the run's settings: not saved.
    checkpoint_exclude: ClassVar[frozenset[str]] = frozenset({"spec_", "train_config_", "device_", "unit_mask_"})

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

    # Runner settings a method can honour only some values of: {TrainConfig field: valid values}.
    train_choices: ClassVar[dict[str, tuple]] = {}

    @classmethod
    def check_train(cls, train: TrainConfig) -> None:
        """Reject runner settings the method cannot honour (called before any run starts)."""
        for name, valid in cls.train_choices.items():
            value = getattr(train, name)
            if value not in valid:
                raise UsageError(f"strategy {cls.name!r} cannot train with {name.replace('_', '-')}={value!r}; "
                                 f"valid choices: {', '.join(map(str, valid))}")

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

    def experience_train(self, exp: Experience) -> TrainConfig | None:
        """The optimisation budget for `exp`: the run's settings by default. A method may train longer or shorter
        (offline joint: T times the budget, once, at the last experience) or return None to skip training on `exp`
        altogether; the runner then records no accuracy row after it (those rows of R stay NaN)."""
        return self.train_config_

    def train_data(self, exp: Experience) -> TensorData | list[TensorData]:
        """The samples to cut mini-batches from. A list of sources makes every mini-batch draw an equal share from
        each of them (`clbench.runners.loop.minibatches`)."""
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

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """The learned state as a nested structure of tensors and JSON values only: {attribute: encoded value} for
        every trailing-underscore attribute not in `checkpoint_exclude`.

        Tensors, nn.Modules (their state_dict and train/eval flags), optimizers (state_dict), torch.Generators
        (state), TensorData, lists, tuples and dicts of these, and None/bool/int/float/str are encoded; anything
        else raises NotCheckpointable (a strategy holding such state overrides this pair of methods, or sets
        `checkpointable = False`). Attributes without the trailing underscore (hyperparameters, caches such as
        `_cache`) are not saved.
        """
        return {
            name: _encode(value, name)
            for name, value in vars(self).items()
            if name.endswith("_") and not name.startswith("_") and name not in self.checkpoint_exclude
        }

    def load_checkpoint_state(self, state: dict) -> None:
        """Write `checkpoint_state()`'s output back, on a strategy freshly built and `setup` as the run first was.

        In place wherever the fresh object already holds the value: tensors are copied into existing tensors of the
        same shape and dtype, modules and optimizers get `load_state_dict`, generators `set_state`, lists and dicts
        are refilled. So references a strategy keeps between its attributes (a dict of the model's Parameters, a
        head module, an optimizer over its own tensors) stay valid. A tensor whose shape changed since `setup`
        (a buffer that grew) is replaced; a model Parameter is never replaced (a mismatch raises ValueError).
        A module or optimizer the fresh strategy does not have yet (one created in `after_experience`) cannot be
        built from its state: such a strategy creates it first in its override, then calls this method.
        """
        if not isinstance(state, dict):
            raise ValueError(f"strategy state must be a dict of attributes, got {type(state).__name__}")
        for name, saved in state.items():
            if not (isinstance(name, str) and name.isidentifier() and name.endswith("_")
                    and not name.startswith("_")) or name in self.checkpoint_exclude:
                raise ValueError(f"{name!r} is not a learned attribute of {type(self).__name__}")
            setattr(self, name, _restore(getattr(self, name, None), saved, name))

    # -- helpers shared by methods -----------------------------------------------------------------------------------
    def mask_logits(self, logits: torch.Tensor, task: torch.Tensor | int | None) -> torch.Tensor:
        """In task-IL, restrict each sample's logits to the units of its task (a multi-head model in one matrix)."""
        if task is None or self.spec_.scenario != "task":
            return logits
        rows = self.unit_mask_[task] if isinstance(task, torch.Tensor) else self.unit_mask_[task].expand_as(logits)
        return logits.masked_fill(~rows, MASKED_LOGIT)


class NotCheckpointable(TypeError):
    """A learned attribute holds something `checkpoint_state` cannot write as tensors and plain values."""


# Tags of the encoded structure: every dict in it is one of these (plain dicts become "$dict" pairs, so that their
# keys, which may be ints, never collide with a tag). Tensors stay tensors; the checkpoint writer stores them.
_TUPLE, _DICT, _MODULE, _OPTIMIZER, _GENERATOR, _TENSORDATA = (
    "$tuple", "$dict", "$module", "$optimizer", "$generator", "$tensordata")
_SCALARS = (type(None), bool, int, float, str)


def _encode(value, where: str):
    if isinstance(value, torch.Tensor):
        return value  # as it is: the writer stores its values (and whether it requires grad)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, TensorData):
        return {_TENSORDATA: [value.x, value.y, value.task]}
    if isinstance(value, nn.Module):
        return {_MODULE: _encode(value.state_dict(), where), "training": [m.training for m in value.modules()]}
    if isinstance(value, torch.optim.Optimizer):
        return {_OPTIMIZER: _encode(value.state_dict(), where)}
    if isinstance(value, torch.Generator):
        return {_GENERATOR: value.get_state(), "device": str(value.device)}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if not all(isinstance(k, _SCALARS) for k in value):
            raise NotCheckpointable(f"{where}: dict keys must be plain values")
        return {_DICT: [[k, _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise NotCheckpointable(f"{where} holds a {type(value).__name__}, which a checkpoint cannot store")


def _restore(current, saved, where: str):
    """The value `saved` (from `_encode`, read back) stands for, written into `current` where it fits."""
    for kind, tag in ((nn.Module, _MODULE), (torch.optim.Optimizer, _OPTIMIZER), (torch.Generator, _GENERATOR)):
        if isinstance(current, kind) and saved is not None and not (isinstance(saved, dict) and tag in saved):
            raise ValueError(f"{where}: the saved value is not a {kind.__name__}")
    if isinstance(saved, torch.Tensor):
        if isinstance(current, torch.Tensor) and current.shape == saved.shape and current.dtype == saved.dtype:
            with torch.no_grad():
                current.copy_(saved)
            return current
        if isinstance(current, nn.Parameter):
            raise ValueError(f"{where}: saved {tuple(saved.shape)} {saved.dtype} does not fit the parameter "
                             f"{tuple(current.shape)} {current.dtype}")
        return saved
    if isinstance(saved, _SCALARS):
        return current if type(current) is type(saved) and current == saved else saved
    if isinstance(saved, list):
        old = current if isinstance(current, list) else []
        items = [_restore(old[i] if i < len(old) else None, s, f"{where}[{i}]") for i, s in enumerate(saved)]
        if isinstance(current, list):
            current[:] = items
            return current
        return items
    if not isinstance(saved, dict) or len(saved) not in (1, 2):
        raise ValueError(f"{where}: unexpected entry {type(saved).__name__}")
    tag = next(iter(saved))
    body = saved[tag]
    if tag == _TUPLE and isinstance(body, list):
        fits = isinstance(current, tuple) and len(current) == len(body)
        old = current if fits else (None,) * len(body)
        items = [_restore(c, s, f"{where}[{i}]") for i, (c, s) in enumerate(zip(old, body, strict=True))]
        # an unchanged tuple stays the very object (and type: torch.Size) that setup made
        return current if fits and all(a is b for a, b in zip(items, old, strict=True)) else tuple(items)
    if tag == _DICT and isinstance(body, list):
        if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], _SCALARS) for p in body):
            raise ValueError(f"{where}: malformed dict entry")
        old = current if isinstance(current, dict) else {}
        items = {k: _restore(old.get(k), v, f"{where}[{k!r}]") for k, v in body}
        if isinstance(current, dict):
            current.clear()
            current.update(items)
            return current
        return items
    if tag == _TENSORDATA and isinstance(body, list) and len(body) == 3:
        parts = [_restore(None, t, where) for t in body]
        if not all(isinstance(t, torch.Tensor) for t in parts):
            raise ValueError(f"{where}: TensorData needs three tensors")
        return TensorData(*parts)
    if tag == _MODULE:
        if not isinstance(current, nn.Module):
            raise ValueError(f"{where}: the fresh strategy has no module here to load the saved weights into")
        current.load_state_dict(_restore(None, body, where))
        flags = saved.get("training")
        modules = list(current.modules())
        if not (isinstance(flags, list) and len(flags) == len(modules) and all(isinstance(f, bool) for f in flags)):
            raise ValueError(f"{where}: train/eval flags do not match the module")
        for module, flag in zip(modules, flags, strict=True):
            module.training = flag
        return current
    if tag == _OPTIMIZER:
        if not isinstance(current, torch.optim.Optimizer):
            raise ValueError(f"{where}: the fresh strategy has no optimizer here to load the saved state into")
        current.load_state_dict(_restore(None, body, where))
        return current
    if tag == _GENERATOR and isinstance(body, torch.Tensor) and isinstance(saved.get("device"), str):
        generator = current if isinstance(current, torch.Generator) else torch.Generator(device=saved["device"])
        generator.set_state(body)
        return generator
    raise ValueError(f"{where}: unknown entry {tag!r}")


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

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The model's parameters that train (requires_grad), by name: what the optimizer and the importance-based
        penalties (EWC, MAS, SI) cover."""
        return {name: p for name, p in self.model_.named_parameters() if p.requires_grad}

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(list(self.trainable_parameters().values()), self.train_config_)

    def before_experience(self, exp):
        # optimizer_state="reset": momentum and Adam moments from the previous task must not push the new one;
        # "keep": the one optimizer made in setup carries them on (van de Ven & Tolias's code, Avalanche).
        if self.train_config_.optimizer_state == "reset":
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

    @property
    def own_task_loss(self) -> bool:
        """True where `task_loss` is not the plain (masked) cross-entropy, which an Avalanche plugin cannot carry."""
        return False

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
