"""Streams ⇄ Avalanche benchmarks.

Avalanche keeps, per sample, an input, a target and a task label; a clbench stream keeps the same three in tensors
plus a `StreamSpec`. The mapping:

  * targets are clbench's output units, unchanged both ways;
  * task labels: in task-IL every experience t carries task label t (Avalanche's `return_task_id=True`); in class-
    and domain-IL every sample carries task label 0, as Avalanche's class-incremental benchmarks do;
  * class order is the experiences' classes, in order (`classes_in_this_experience`).

Reading an Avalanche benchmark materialises each experience once, with its *eval* transforms (no random
augmentation is baked into the tensors).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from torch.utils.data import DataLoader

from clbench.benchmarks.base import SCENARIOS, Experience, Stream, StreamSpec, TensorData
from clbench.benchmarks.generators import stream_from_tensors
from clbench.errors import UsageError, unknown_choice


@contextlib.contextmanager
def quiet_avalanche():
    """Silence Avalanche's own deprecation and 'no loggers' warnings, which a clbench user cannot act on. They are
    recorded rather than filtered because Avalanche's deprecation helper resets the filters itself."""
    with warnings.catch_warnings(record=True):
        yield


def avalanche_task_label(scenario: str, experience_index: int) -> int:
    return experience_index if scenario == "task" else 0


def tensor_dataset(data: TensorData, task_labels: torch.Tensor | int):
    """An Avalanche classification dataset over tensors (no copy), yielding (x, y, task label)."""
    if isinstance(task_labels, int):
        task_labels = torch.full((len(data),), task_labels, dtype=torch.int64)
    x, y = data.x.cpu(), data.y.cpu()
    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=task_labels.cpu().tolist(), targets=y)


def to_avalanche(stream: Stream):
    """An Avalanche benchmark (train_stream, test_stream) holding exactly the stream's samples, units and tasks."""
    scenario = stream.spec.scenario
    train, test = [], []
    for exp in stream:
        label = avalanche_task_label(scenario, exp.index)
        train.append(tensor_dataset(exp.train, label))
        test.append(tensor_dataset(exp.test, label))
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train, test=test)))


def materialise(dataset, what: str = "dataset") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, task labels) of an Avalanche dataset, read once with its eval transforms."""
    if hasattr(dataset, "eval"):
        dataset = dataset.eval()
    if len(dataset) == 0:
        raise UsageError(f"{what} is empty")
    xs, ys, ts = [], [], []
    # A private generator: even an unshuffled loader draws a seed, which must not move the global RNG that
    # Avalanche's own loaders shuffle with.
    for batch in DataLoader(dataset, batch_size=1024, shuffle=False, generator=torch.Generator()):
        if len(batch) < 3 or not isinstance(batch[0], torch.Tensor):
            raise UsageError(f"{what} must yield (x, y, task label) with tensor x (add a ToTensor transform?)")
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
        ts.append(torch.as_tensor(batch[-1]))
    return torch.cat(xs).float(), torch.cat(ys).long(), torch.cat(ts).long()


def experience_classes(av_experience) -> tuple[int, ...]:
    classes = getattr(av_experience, "classes_in_this_experience", None)
    if classes is None:
        classes = av_experience.dataset.targets.uniques
    return tuple(sorted(int(c) for c in classes))


def experience_from_avalanche(av_experience, data: TensorData | None = None) -> Experience:
    """A clbench Experience (train side only) from an Avalanche training experience; task ids are Avalanche's."""
    if data is None:
        x, y, t = materialise(av_experience.dataset, f"experience {av_experience.current_experience}")
        data = TensorData(x, y, t)
    empty = TensorData(data.x[:0], data.y[:0], data.task[:0])
    return Experience(int(av_experience.current_experience), experience_classes(av_experience), data, empty)


def _infer_scenario(task_labels: list[set[int]], classes: list[tuple[int, ...]]) -> str:
    if len(set().union(*task_labels)) > 1:
        return "task"
    return "domain" if all(c == classes[0] for c in classes) else "class"


def spec_from_avalanche(benchmark, scenario: str | None = None, *, name: str = "avalanche",
                        backbone: str | None = None, own_units: bool = False) -> StreamSpec:
    """What a clbench strategy must know about an Avalanche benchmark, read from its train stream without loading
    inputs beyond the first sample (for the input shape). See `from_avalanche` for the rules; `own_units` gives
    task-IL experiences with overlapping labels units of their own, as `from_avalanche` does to the targets. Without
    it the units are Avalanche's labels, as a model trained inside Avalanche sees them."""
    experiences = list(benchmark.train_stream)
    classes = [experience_classes(e) for e in experiences]
    task_labels = [set(int(t) for t in e.dataset.targets_task_labels.uniques) for e in experiences]
    scenario = _check_scenario(scenario or _infer_scenario(task_labels, classes), task_labels)
    units, n_classes = _units(scenario, classes, own_units)
    first = experiences[0].dataset.eval()[0][0]
    input_shape = tuple(torch.as_tensor(first).shape)
    return StreamSpec(name=name, scenario=scenario, n_experiences=len(experiences), n_classes=n_classes,
                      input_shape=input_shape, classes_per_experience=units,
                      backbone=backbone or _default_backbone(input_shape))


def _check_scenario(scenario: str, task_labels: list[set[int]]) -> str:
    if scenario not in SCENARIOS:
        raise unknown_choice("scenario", scenario, SCENARIOS)
    if scenario == "task":
        for t, labels in enumerate(task_labels):
            if labels != {t}:
                raise UsageError(
                    f"task-IL needs experience t to carry task label t; experience {t} carries {sorted(labels)}"
                )
    return scenario


def _units(scenario: str, classes: list[tuple[int, ...]], own_units: bool) -> tuple[tuple[tuple[int, ...], ...], int]:
    """Output units per experience. Task-IL experiences whose labels overlap (per-task labels from zero, permuted
    streams) get units of their own, offset by t·K; everything else keeps Avalanche's labels."""
    largest = max(c for cs in classes for c in cs)
    overlapping = sum(len(c) for c in classes) > len(set().union(*map(set, classes)))
    if own_units and scenario == "task" and overlapping:
        k = largest + 1
        return tuple(tuple(c + t * k for c in cs) for t, cs in enumerate(classes)), k * len(classes)
    return tuple(classes), largest + 1


def _default_backbone(input_shape: tuple[int, ...]) -> str:
    return "resnet18-reduced" if len(input_shape) == 3 and input_shape[0] == 3 else "mlp400"


def from_avalanche(benchmark, scenario: str | None = None, *, name: str = "avalanche", backbone: str | None = None,
                   standardize: bool = True) -> Stream:
    """A clbench stream with the benchmark's samples, targets and experiences (train_stream and test_stream).

    `scenario` defaults to what the task labels and classes say: several task labels → task-IL (experience t must
    carry task label t); every experience with the same classes → domain-IL; otherwise class-IL. Targets stay as
    they are, except that task-IL experiences with overlapping labels get units of their own (t·K + label).
    `standardize` stores the training inputs' per-channel mean and std, which clbench's backbones use to standardise
    their inputs, as for the built-in benchmarks.
    """
    spec = spec_from_avalanche(benchmark, scenario, name=name, backbone=backbone, own_units=True)
    train_exps, test_exps = list(benchmark.train_stream), list(benchmark.test_stream)
    if len(train_exps) != len(test_exps):
        raise UsageError(f"the benchmark has {len(train_exps)} train but {len(test_exps)} test experiences")
    offsets = [units[0] - classes[0] if units else 0 for units, classes in
               zip(spec.classes_per_experience, map(experience_classes, train_exps), strict=True)]
    parts = {"train": [], "test": []}
    for kind, exps in (("train", train_exps), ("test", test_exps)):
        for t, e in enumerate(exps):
            x, y, _ = materialise(e.dataset, f"{kind} experience {t}")
            parts[kind].append((x, y + offsets[t]))
    stream = stream_from_tensors(parts["train"], parts["test"], spec.scenario, name=name,
                                 classes_per_experience=spec.classes_per_experience, n_classes=spec.n_classes,
                                 backbone=spec.backbone)
    if standardize and len(spec.input_shape) == 3:
        x = torch.cat([e.train.x for e in stream])
        mean = x.mean(dim=(0, 2, 3)).tolist()
        std = [s if s > 0 and math.isfinite(s) else 1.0 for s in x.std(dim=(0, 2, 3)).tolist()]
        stream.spec.metadata.update(input_mean=mean, input_std=std)
    return stream
