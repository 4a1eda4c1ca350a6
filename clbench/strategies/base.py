"""The runner-facing strategy interface and the SGD template most methods build on.

A strategy's lifecycle, as the runner (clbench.runners.loop) drives it:

    setup(spec, model, *, train, seed, device)   once, before the random-init evaluation
    for each experience exp:
        before_experience(exp)
        experience_train(exp)      -> this experience's budget (TrainConfig), or None: not trained, not evaluated
        train_data(exp)            -> the samples to cut mini-batches from (joint widens it; a list: equal shares)
        fit_experience(exp, batches) -> yields one loss per step; by default one train_step(batch) per mini-batch
        after_experience(exp)
    predict(x, task_id or None)    -> logits, under torch.no_grad() (task inference may enable grad locally)
    state_bytes()                  -> memory the method keeps beyond the model (buffers, Fisher, masks)

The runner does not call the hooks directly but through methods a strategy cannot override (RUNNER_METHODS), which
do clbench's bookkeeping around them: `begin_run` calls `setup` and then checks that the override reached
`Strategy.setup` (a forgotten `super().setup(...)` is an error naming the class, not a missing attribute later);
`begin_experience` calls `before_experience` and then, with TrainConfig.optimizer_state="reset", gives an
SGDStrategy a fresh optimizer (unless the hook built one itself); `end_experience` calls `after_experience`;
`restore_checkpoint` calls `load_checkpoint_state` and checks that the saved state was written back. So the base
versions of `before_experience` and `after_experience` are empty: an override needs no `super()` call (one that
subclasses a built-in method calls super() to keep that method's own hooks).

Following scikit-learn, the constructor only stores hyperparameters (its signature, with type annotations and
defaults, *is* the hyperparameter list that `clbench list` prints and `--set` checks); learned state is created in
`setup` and named with a trailing underscore.

Checkpoints (a long run resumed after a kill) store that learned state as tensors and plain values, never as pickled
objects: `checkpoint_state()` encodes every trailing-underscore attribute and `load_checkpoint_state(state)` writes it
back into a strategy freshly built and `setup` exactly as the run first did, in place (see those methods).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.benchmarks.backbones import NORMALIZE
from clbench.benchmarks.base import SCENARIOS, Batch, Experience, StreamSpec, TensorData
from clbench.errors import UsageError, unknown_choice
from clbench.strategies.hyperparameters import Hyperparameter

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


# The methods the runner calls, each with the hook it wraps: a subclass overrides the hook, never these (defining one
# is a TypeError when the class is created), so no override can skip clbench's bookkeeping around the hooks.
RUNNER_METHODS = {"begin_run": "setup", "begin_experience": "before_experience", "end_experience": "after_experience",
                  "restore_checkpoint": "load_checkpoint_state"}
_SET_UP = "_clbench_set_up"  # set by Strategy.setup; no trailing underscore, so never part of a checkpoint
_LOADED = "_clbench_loaded"  # set by Strategy.load_checkpoint_state


class Strategy:
    """Base of every continual-learning method.

    A subclass defines:

    * `__init__(self, strength: float = 0.01, ...)`: the hyperparameters, one annotated, defaulted argument each,
      stored under its own name (`self.strength = strength`) and nothing else; `validate()` checks their relations.
    * class attributes: `name`, the display name in every table (default: `@register`'s name, else the class name;
      the class's module path is recorded apart, as `strategy_ref`, to re-run it); `scenarios`, the scenarios it
      supports; `tune_grid`, {hyperparameter: [values]} that `clbench bench` searches without `--grid`;
      `train_choices`, the runner settings it can honour only some values of.
    * the lifecycle (see the module docstring), each an override of a method here: `setup` (must call
      `super().setup(spec, model, train=train, seed=seed, device=device)` first; it sets `spec_`, `model_`,
      `train_config_`, `device_`, `generator_` and `unit_mask_`), `before_experience(exp)` and `after_experience(exp)`
      (empty here: no super() call needed), `experience_train(exp)`, `train_data(exp)`, `fit_experience(exp,
      batches)` or `train_step(batch)`, `predict(x, task_id)`, `state_bytes()`; and, only for learned state that is
      not tensors and plain values, `checkpoint_state()` / `load_checkpoint_state(state)`.
    """

    name: ClassVar[str] = ""
    scenarios: ClassVar[frozenset[str]] = frozenset(SCENARIOS)
    # {hyperparameter: [values]}: the grid `clbench bench` tunes over when no --grid is given (empty: nothing to tune)
    tune_grid: ClassVar[dict[str, list]] = {}
    # False for a strategy whose state cannot be written as tensors and plain values (one wrapping a foreign
    # object): its runs save no checkpoint and restart from the beginning after a kill.
    checkpointable: ClassVar[bool] = True
    # Learned attributes that `setup` rebuilds identically from the run's settings: not saved.
    checkpoint_exclude: ClassVar[frozenset[str]] = frozenset({"spec_", "train_config_", "device_", "unit_mask_"})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        overridden = [name for name in RUNNER_METHODS if name in cls.__dict__]
        if overridden:
            hooks = ", ".join(RUNNER_METHODS[name] for name in overridden)
            raise TypeError(f"{cls.__qualname__} defines {', '.join(overridden)}, which the runner calls to do "
                            f"clbench's bookkeeping around the strategy's hooks; override {hooks} instead")

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
                raise unknown_choice("hyperparameter", key, known or ["(none: this strategy has no hyperparameters)"],
                                     where=f"for strategy {cls.name!r}")
            checked[key] = known[key].check(value, cls.name)
        strategy = cls(**checked)
        strategy.validate()
        return strategy

    def validate(self) -> None:
        """Check relations between hyperparameters (ranges, combinations); raise UsageError naming the bad value."""

    def get_params(self) -> dict:
        missing = [name for name in self.hyperparameters() if not hasattr(self, name)]
        if missing:  # else an AttributeError far from its cause
            raise UsageError(f"{type(self).__qualname__}.__init__ must store each hyperparameter under its own name: "
                             + ", ".join(f"self.{name} = {name}" for name in missing))
        return {name: getattr(self, name) for name in self.hyperparameters()}

    # -- what the runner calls (not to be overridden: see RUNNER_METHODS) -------------------------------------------
    def begin_run(self, spec: StreamSpec, model: nn.Module, *, train: TrainConfig, seed: int, device="cpu") -> None:
        """`setup`, then a check that the override reached `Strategy.setup` (UsageError naming the class if not)."""
        self.__dict__.pop(_SET_UP, None)
        self.setup(spec, model, train=train, seed=seed, device=device)
        self._require_set_up()

    def begin_experience(self, exp: Experience) -> None:
        """`before_experience(exp)`, then the framework's part: with optimizer_state="reset", an SGDStrategy gets a
        fresh optimizer from `make_optimizer()` (after the hook, so it covers the parameters as the hook left them),
        unless the hook assigned `optimizer_` itself."""
        self._require_set_up()
        optimizer = getattr(self, "optimizer_", None)
        self.before_experience(exp)
        if getattr(self, "optimizer_", None) is optimizer:
            self._reset_optimizer()

    def end_experience(self, exp: Experience) -> None:
        """`after_experience(exp)` (kept beside `begin_experience` so that bookkeeping can go here, not in a hook)."""
        self.after_experience(exp)

    def restore_checkpoint(self, state: dict) -> None:
        """`load_checkpoint_state(state)`, then a check that the saved attributes were written back: an override that
        forgot `super().load_checkpoint_state(state)` would resume from the fresh state (the runner then warns and
        starts the run over). A strategy that overrides `checkpoint_state` too encodes its state its own way and
        is not checked."""
        self.__dict__.pop(_LOADED, None)
        self.load_checkpoint_state(state)
        if type(self).checkpoint_state is Strategy.checkpoint_state and not self.__dict__.get(_LOADED):
            owners = _overrides(type(self), "load_checkpoint_state")
            raise ValueError(f"{_one_of(owners)} does not call super().load_checkpoint_state(state), so the saved "
                             "state was not loaded; add that call")

    def _require_set_up(self) -> None:
        if self.__dict__.get(_SET_UP):
            return
        owners = _overrides(type(self), "setup")
        if not owners:
            raise UsageError(f"strategy {self.name!r} was not set up: call begin_run(spec, model, train=..., "
                             "seed=..., device=...) before its first experience")
        made = "spec_, model_, train_config_, device_, generator_, unit_mask_"
        if isinstance(self, SGDStrategy):
            made += ", optimizer_"
        raise UsageError(f"strategy {self.name!r}: {_one_of(owners)} does not call super().setup(spec, model, "
                         f"train=train, seed=seed, device=device), so the base setup never ran (it sets {made}); "
                         f"add that call at the start of {owners[0] if len(owners) == 1 else 'the one lacking it'}")

    def _reset_optimizer(self) -> None:
        """The per-experience optimizer reset of `begin_experience`; only SGDStrategy has an optimizer to reset."""

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
        setattr(self, _SET_UP, True)

    def before_experience(self, exp: Experience) -> None:
        """A hook, before this experience's training (empty here: an override needs no super() call). The optimizer
        reset of optimizer_state="reset" comes after it (see `begin_experience`)."""

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
        """A hook, after this experience's training (empty here: an override needs no super() call); consolidation
        (Fisher, anchors, teachers, buffers) goes here."""

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
        setattr(self, _LOADED, True)

    # -- helpers shared by methods -----------------------------------------------------------------------------------
    def mask_logits(self, logits: torch.Tensor, task: torch.Tensor | int | None) -> torch.Tensor:
        """In task-IL, restrict each sample's logits to the units of its task (a multi-head model in one matrix)."""
        if task is None or self.spec_.scenario != "task":
            return logits
        rows = self.unit_mask_[task] if isinstance(task, torch.Tensor) else self.unit_mask_[task].expand_as(logits)
        return logits.masked_fill(~rows, MASKED_LOGIT)


def _overrides(cls: type, method: str) -> list[str]:
    """"Class.method" for the classes of `cls`'s MRO that define `method` below clbench's two base classes, the
    user's own first (a built-in's override is tested; the user's is the one likely to lack the super() call)."""
    owners = [c for c in cls.__mro__ if method in c.__dict__ and c not in (Strategy, SGDStrategy)]
    users = [c for c in owners if not c.__module__.startswith("clbench.")]
    return [f"{c.__qualname__}.{method}" for c in users or owners]


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


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

    `train_step(batch)` runs them around one optimizer step on `task_loss` (masked cross-entropy) + `penalty`;
    `predict` is the model's masked logits. The optimizer, `optimizer_`, comes from `make_optimizer()` (the run's
    TrainConfig over `trainable_parameters()`; override it for other parameter groups or optimizers): once in
    `setup`, and with optimizer_state="reset" again after every `before_experience` (by `begin_experience`, so an
    override of the hook cannot lose it) unless the hook assigned `optimizer_` itself.
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

    def _reset_optimizer(self):
        # optimizer_state="reset": momentum and Adam moments from the previous task must not push the new one;
        # "keep": the one optimizer made in setup carries them on (van de Ven & Tolias's code, Avalanche).
        if self.train_config_.optimizer_state == "reset" or getattr(self, "optimizer_", None) is None:
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
