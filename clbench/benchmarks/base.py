"""The data model every other part of clbench speaks: tensors in memory, experiences, streams.

Labels inside a stream are *output units*: experience k of a split stream owns the units of its classes (after the
stream seed's class order), and in the task-incremental scenario every experience owns units of its own (a permuted
stream in task-IL has T×10 units, ten per task). A scenario then only decides what the model may use at test time:
the task id (task-IL masks the logits to the task's units) or nothing (domain- and class-IL take the argmax over all
units). See METRICS in the docs for the definitions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .catalog import SCENARIOS  # noqa: F401 - the data model's scenarios


@dataclass(frozen=True)
class TensorData:
    """Samples held in memory: x (N, ...) float32, y (N,) int64 output units, task (N,) int64 experience ids."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor

    def __post_init__(self):
        n = len(self.x)
        if len(self.y) != n or len(self.task) != n:
            raise ValueError(f"x, y and task must have the same length, got {n}, {len(self.y)}, {len(self.task)}")

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: torch.Tensor) -> TensorData:
        return TensorData(self.x[index], self.y[index], self.task[index])

    @staticmethod
    def concat(parts: Sequence[TensorData]) -> TensorData:
        return TensorData(
            torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), torch.cat([p.task for p in parts])
        )

    def to(self, device) -> TensorData:
        return TensorData(self.x.to(device), self.y.to(device), self.task.to(device))

    @property
    def nbytes(self) -> int:
        """Bytes of the samples (inputs, labels, task ids) as a method holding them would store them."""
        return sum(t.numel() * t.element_size() for t in (self.x, self.y, self.task))


class TransformedTensorData(TensorData):
    """Samples whose inputs are `transform(source)`, computed when read instead of stored, so that a permuted stream
    of T experiences keeps one copy of the dataset instead of T. Every read of `.x` recomputes it (take it once per
    use); `subset` transforms only the chosen samples (the transform acts per sample), and `to` returns plain data.
    """

    def __init__(self, source: torch.Tensor, transform, y: torch.Tensor, task: torch.Tensor):
        if len(source) != len(y) or len(task) != len(y):
            raise ValueError(f"source, y and task must have the same length, got {len(source)}, {len(y)}, {len(task)}")
        for name, value in (("source", source), ("transform", transform), ("y", y), ("task", task)):
            object.__setattr__(self, name, value)

    @property
    def x(self) -> torch.Tensor:
        return self.transform(self.source)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> TensorData:
        return TensorData(self.transform(self.source[index]), self.y[index], self.task[index])

    @property
    def nbytes(self) -> int:
        per_sample = self.source[:1].numel() * 4 + 2 * 8  # float32 inputs once transformed, int64 label and task
        return len(self) * per_sample


def batch_slices(order: torch.Tensor, size: int, drop_last: bool = False) -> list[torch.Tensor]:
    """One pass's mini-batch indices: consecutive slices of `order`; with `drop_last` the short last one is dropped,
    unless it is the pass's only one (fewer samples than a batch)."""
    stop = len(order) - len(order) % size if drop_last and len(order) >= size else len(order)
    return [order[start : start + size] for start in range(0, stop, size)]


def batches_per_pass(n: int, size: int, drop_last: bool = False) -> int:
    """How many mini-batches `batch_slices` cuts from a pass over `n` samples."""
    return n // size if drop_last and n >= size else math.ceil(n / size)


@dataclass(frozen=True)
class Batch:
    """One mini-batch; `task` is per sample because replayed samples come from earlier experiences."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Experience:
    """One step of a stream: its train and test data and the output units (classes) it owns."""

    index: int
    classes: tuple[int, ...]
    train: TensorData
    test: TensorData
    # A validation set carved out of the experience's training data (generators.with_validation); never trained on.
    val: TensorData | None = None

    @property
    def task_id(self) -> int:
        return self.index


@dataclass(frozen=True)
class StreamSpec:
    """What a strategy may know about a stream before seeing any data."""

    name: str
    scenario: str
    n_experiences: int
    n_classes: int  # total output units
    input_shape: tuple[int, ...]
    classes_per_experience: tuple[tuple[int, ...], ...]
    backbone: str
    stream_seed: int = 0
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def task_unit_mask(self, device=None) -> torch.Tensor:
        """Bool (T, n_classes): row t marks the output units of experience t (used to mask logits in task-IL)."""
        mask = torch.zeros(self.n_experiences, self.n_classes, dtype=torch.bool, device=device)
        for t, classes in enumerate(self.classes_per_experience):
            mask[t, list(classes)] = True
        return mask


class Stream(Sequence):
    """A sliceable sequence of experiences with the spec that describes them."""

    def __init__(self, spec: StreamSpec, experiences: Sequence[Experience]):
        if len(experiences) != spec.n_experiences:
            raise ValueError(f"spec says {spec.n_experiences} experiences, got {len(experiences)}")
        self.spec = spec
        self._experiences = tuple(experiences)

    def __len__(self) -> int:
        return len(self._experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self._experiences)

    def __getitem__(self, item):
        if isinstance(item, slice):
            chosen = self._experiences[item]
            # Re-index so a sliced stream is a valid stream of its own (experience i has task id i).
            experiences = [
                _reindexed(exp, new_index) for new_index, exp in enumerate(chosen)
            ]
            spec = StreamSpec(
                name=self.spec.name,
                scenario=self.spec.scenario,
                n_experiences=len(experiences),
                n_classes=self.spec.n_classes,
                input_shape=self.spec.input_shape,
                classes_per_experience=tuple(e.classes for e in experiences),
                backbone=self.spec.backbone,
                stream_seed=self.spec.stream_seed,
                metadata=dict(self.spec.metadata),
            )
            return Stream(spec, experiences)
        return self._experiences[item]

    def __repr__(self) -> str:
        return f"Stream({self.spec.name!r}, scenario={self.spec.scenario!r}, n_experiences={len(self)})"


def _reindexed(exp: Experience, index: int) -> Experience:
    if exp.index == index:
        return exp

    def retag(d: TensorData) -> TensorData:
        if isinstance(d, TransformedTensorData):
            return TransformedTensorData(d.source, d.transform, d.y, torch.full_like(d.task, index))
        return TensorData(d.x, d.y, torch.full_like(d.task, index))

    return Experience(index=index, classes=exp.classes, train=retag(exp.train), test=retag(exp.test),
                      val=None if exp.val is None else retag(exp.val))
