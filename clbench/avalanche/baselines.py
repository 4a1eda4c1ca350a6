"""Avalanche's own strategies as clbench strategies: `--strategy avalanche:EWC --set ewc_lambda=...`.

Each Avalanche strategy class (a `SupervisedTemplate` subclass in `avalanche.training`) becomes a clbench strategy
named `avalanche:<ClassName>`. Its hyperparameters are the Avalanche constructor's own arguments, minus those the
runner supplies (model, optimizer, criterion, mini-batch sizes, epochs, device, plugins, evaluator). The runner gives
it the same stream, backbone, initial weights and optimiser settings as clbench's strategies; Avalanche then trains
each experience with its own loop (its data loader, its plugins, its optimizer), and the runner evaluates it like
any other strategy, so its rows land in the same tables and leaderboard. The runner's `optimizer_state` and
`drop_last` reach Avalanche's loop as its own `reset_optimizer_state` and `drop_last` (Avalanche's default keeps the
optimizer's state across experiences; clbench's default, "reset", clears it at every experience as for every other
strategy).

Arguments that Avalanche requires without a default get clbench's default for the same method (`DEFAULTS`), so
`ewc` and `avalanche:EWC` compare like for like unless a value is set.

Task-IL: the model is wrapped in a `MultiTaskModule` that masks the logits to the task's units, i.e. Avalanche
trains and predicts with the same multi-head model as clbench's strategies.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiTaskModule
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from clbench.avalanche.streams import avalanche_task_label, quiet_avalanche, tensor_dataset
from clbench.errors import UsageError, unknown_choice
from clbench.strategies.base import MASKED_LOGIT, Hyperparameter, Strategy, make_optimizer, tensors_nbytes

PREFIX = "avalanche:"

# Constructor arguments the runner provides; they are not hyperparameters.
RUNNER_ARGUMENTS = frozenset({
    "self", "model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
    "plugins", "evaluator", "eval_every", "peval_mode",
})

# clbench's defaults for arguments Avalanche requires without one (same method, same meaning).
DEFAULTS = {
    "EWC": {"ewc_lambda": 10.0},
    "LwF": {"alpha": 1.0, "temperature": 2.0},
    "GEM": {"patterns_per_exp": 256},
    "AGEM": {"patterns_per_exp": 256},
}


def avalanche_strategy_classes() -> dict[str, type]:
    """Every supervised Avalanche strategy class exported by `avalanche.training`, by class name."""
    import avalanche.training as training

    return {
        name: obj for name, obj in vars(training).items()
        if isinstance(obj, type) and issubclass(obj, SupervisedTemplate) and obj is not SupervisedTemplate
    }


def avalanche_strategy(name: str) -> type[Strategy]:
    """The clbench strategy class for `avalanche:<ClassName>`."""
    class_name = name.removeprefix(PREFIX)
    available = avalanche_strategy_classes()
    if class_name not in available:
        raise unknown_choice("Avalanche strategy", name, [PREFIX + n for n in available])
    return type(f"Avalanche{class_name}", (AvalancheStrategy,),
                {"name": PREFIX + class_name, "avalanche_class": available[class_name], "__module__": __name__})


def _annotation(param: inspect.Parameter):
    if param.annotation is not inspect.Parameter.empty:
        return param.annotation
    if param.default is not inspect.Parameter.empty and param.default is not None:
        return type(param.default)
    return object


class AvalancheStrategy(Strategy):
    """Runs an Avalanche strategy class (`avalanche_class`) inside clbench's runner."""

    avalanche_class: ClassVar[type]
    # Its state is a whole Avalanche strategy object (plugins, buffers, loaders), which a checkpoint of tensors and
    # plain values cannot hold: these runs save no checkpoint and restart from the beginning after a kill.
    checkpointable = False

    def __init__(self, **params):
        self.params = params

    @classmethod
    def hyperparameters(cls) -> dict[str, Hyperparameter]:
        defaults = DEFAULTS.get(cls.avalanche_class.__name__, {})
        out = {}
        for p in inspect.signature(cls.avalanche_class.__init__).parameters.values():
            if p.name in RUNNER_ARGUMENTS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = defaults.get(p.name, None if p.default is p.empty else p.default)
            out[p.name] = Hyperparameter(p.name, _annotation(p), default)
        return out

    def validate(self):
        missing = [h.name for h in self.hyperparameters().values() if h.default is None and self.params.get(h.name)
                   is None and _required(self.avalanche_class, h.name)]
        if missing:
            sets = " ".join(f"{self.name}.{m}=VALUE" for m in missing)
            raise UsageError(f"strategy {self.name!r} needs {', '.join(missing)}: add --set {sets}")

    def get_params(self) -> dict:
        return {name: self.params.get(name, h.default) for name, h in self.hyperparameters().items()}

    # -- lifecycle -----------------------------------------------------------------------------------------------
    @classmethod
    def check_train(cls, train):
        super().check_train(train)
        if train.iterations is not None:
            raise UsageError(f"strategy {cls.name!r} trains with Avalanche's own loop, which counts epochs; use "
                             f"epochs instead of iterations={train.iterations}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        # Avalanche draws its randomness (data order, buffer sampling) from the global generators.
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self.net_ = TaskMaskedModel(model, self.unit_mask_) if spec.scenario == "task" else model
        self.losses_: list[float] = []
        with quiet_avalanche():
            self.avalanche_ = self.avalanche_class(
                model=self.net_,
                optimizer=make_optimizer([p for p in model.parameters() if p.requires_grad], train),
                criterion=nn.CrossEntropyLoss(),
                train_mb_size=train.batch_size,
                train_epochs=train.epochs,
                eval_mb_size=train.eval_batch_size,
                device=self.device_,
                plugins=[_LossRecorder(self.losses_)],
                evaluator=None,
                **{k: v for k, v in self.get_params().items() if v is not None or k in self.params},
            )
        self.train_sets_: list = []

    def fit_experience(self, exp, batches) -> Iterator[float]:
        """Avalanche trains the experience with its own loop; the runner's mini-batches are not used."""
        self.train_sets_.append(tensor_dataset(exp.train, avalanche_task_label(self.spec_.scenario, exp.index)))
        benchmark = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=self.train_sets_)))
        self.losses_.clear()
        with quiet_avalanche():
            self.avalanche_.train(benchmark.train_stream[exp.index], eval_streams=[],
                                  reset_optimizer_state=self.train_config_.optimizer_state == "reset",
                                  drop_last=self.train_config_.drop_last)
        yield from self.losses_

    def predict(self, x, task_id):
        self.net_.eval()
        if isinstance(self.net_, MultiTaskModule):
            task = task_id if task_id is not None else 0
            return self.net_(x, torch.full((len(x),), task, dtype=torch.int64, device=x.device))
        return self.net_(x)

    def state_bytes(self):
        """Tensors the Avalanche strategy's plugins hold (importances, snapshots, buffers), each counted once; a
        replay buffer (an Avalanche dataset of the stream's samples) counts as its samples' bytes."""
        sample_bytes = 4 * math.prod(self.spec_.input_shape) + 2 * 8
        seen: dict[int, int] = {}
        for plugin in self.avalanche_.plugins:
            _collect_bytes(vars(plugin), seen, sample_bytes, depth=0)
        return sum(seen.values())


def _required(avalanche_class: type, name: str) -> bool:
    param = inspect.signature(avalanche_class.__init__).parameters[name]
    return param.default is param.empty


def _collect_bytes(obj, seen: dict[int, int], sample_bytes: int, depth: int) -> None:
    if depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        seen[obj.data_ptr()] = tensors_nbytes(obj)
    elif isinstance(obj, nn.Module):
        for t in (*obj.parameters(), *obj.buffers()):
            seen[t.data_ptr()] = tensors_nbytes(t)
    elif isinstance(obj, AvalancheDataset):
        seen[id(obj)] = len(obj) * sample_bytes
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect_bytes(value, seen, sample_bytes, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _collect_bytes(value, seen, sample_bytes, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("avalanche"):
        _collect_bytes(vars(obj), seen, sample_bytes, depth + 1)


class TaskMaskedModel(MultiTaskModule):
    """clbench's multi-head model for Avalanche: one output layer, logits masked to the task's units."""

    def __init__(self, model: nn.Module, unit_mask: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("unit_mask", unit_mask, persistent=False)

    def forward(self, x, task_labels):
        logits = self.model(x)
        if task_labels is None:  # every head seen in training, as a dict (Avalanche's LwF asks for this)
            return {t: logits.masked_fill(~self.unit_mask[t], MASKED_LOGIT) for t in self.known_train_tasks_labels}
        if isinstance(task_labels, int):
            return logits.masked_fill(~self.unit_mask[task_labels], MASKED_LOGIT)
        return logits.masked_fill(~self.unit_mask[task_labels.long()], MASKED_LOGIT)

    def forward_single_task(self, x, task_label):
        return self.forward(x, int(task_label))


class _LossRecorder(SupervisedPlugin):
    """Keeps each training iteration's loss so that the runner can check it and report its mean."""

    def __init__(self, losses: list[float]):
        super().__init__()
        self.losses = losses

    def after_training_iteration(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss.detach()))
