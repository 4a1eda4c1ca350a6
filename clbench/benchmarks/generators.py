"""Stream generators: pure functions of a `Dataset` and a stream seed.

All randomness (class order, pixel permutations, angles, subsamples) comes from generators seeded by the stream seed
and a per-purpose tag, never from global RNG, so the same seed gives the same stream in any process, and asking for a
subsample does not change the class order or the permutations.

Labels inside a stream are output units (see base.py):
- split: the seed permutes the classes (seed 0 too); in task- and class-IL experience k owns units [k*c, (k+1)*c) and
  original class `spec.metadata["class_order"][u]` is unit u; in domain-IL every experience shares units [0, c) and
  unit u of experience k is class `class_order[k*c + u]` (van de Ven & Tolias: split MNIST's "first or second digit
  of the pair").
- permuted / rotated: domain-IL keeps the dataset's labels (every experience owns units 0..K-1); task-IL offsets them
  by K*t so experience t owns units [K*t, K*(t+1)).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UsageError, unknown_choice
from .base import SCENARIOS, Experience, Stream, StreamSpec, TensorData, TransformedTensorData
from .catalog import PERMUTED_SCENARIOS, ROTATED_SCENARIOS, SPLIT_SCENARIOS  # noqa: F401 - importable from here
from .datasets import Dataset

# Permuted/rotated streams whose stored training sets would exceed this many bytes transform them when read instead
# (permuted-fmnist: stored up to 11 experiences). Reading costs one transform per use, storing T copies of the data.
LAZY_TRAIN_ABOVE_BYTES = 2 * 2**30

# Distinct tags keep the random streams of different purposes independent of each other.
_CLASS_ORDER, _PERMUTATION, _ANGLES, _TRAIN_SUBSET, _TEST_SUBSET, _VALIDATION = range(6)


def _generator(stream_seed: int, *tags: int) -> torch.Generator:
    """A private torch Generator derived from the stream seed and a purpose tag (SeedSequence mixes them well)."""
    seed = np.random.SeedSequence([int(stream_seed), *tags]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def _check_scenario(scenario: str, valid: Sequence[str], what: str) -> None:
    if scenario not in valid:
        raise unknown_choice(f"scenario for a {what} stream", scenario, valid)


def _check_positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def balanced_subsample(y: torch.Tensor, max_n: int | None, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted) of at most `max_n` samples, drawn round-robin over classes in a random order.

    Every class gets ⌊max_n / n_classes⌋ or one more sample while it has samples left, so small subsets stay
    (nearly) stratified. Returns all indices when `max_n` is None or not smaller than len(y).
    """
    n = len(y)
    if max_n is None or max_n >= n:
        return torch.arange(n)
    order = torch.randperm(n, generator=generator)
    y_shuffled = y[order]
    # Rank of each sample within its class (in the random order): the k-th sample of every class comes in round k.
    sorted_y, by_class = torch.sort(y_shuffled, stable=True)
    counts = torch.bincount(sorted_y - sorted_y.min())
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[by_class] = torch.arange(n) - starts[sorted_y - sorted_y.min()]
    chosen = order[torch.argsort(rank * n + torch.arange(n))[:max_n]]
    return torch.sort(chosen).values


def _tensor_data(x: torch.Tensor, y: torch.Tensor, task: int) -> TensorData:
    return TensorData(x, y, torch.full((len(y),), task, dtype=torch.int64))


def split_stream(
    ds: Dataset,
    scenario: str,
    n_experiences: int,
    stream_seed: int = 0,
    *,
    class_order: Sequence[int] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    name: str | None = None,
    backbone: str = "mlp400",
) -> Stream:
    """Split the classes of `ds` evenly into `n_experiences` experiences (task-, domain- or class-incremental).

    `class_order` (a permutation of the class ids) overrides the seed's order, e.g. to reproduce the natural order.
    `train_subset` / `test_subset` cap the samples per experience (balanced, drawn from the stream seed).
    """
    _check_scenario(scenario, SPLIT_SCENARIOS, "split")
    _check_positive("n_experiences", n_experiences)
    k = ds.n_classes
    if k % n_experiences:
        valid = [d for d in range(1, k + 1) if k % d == 0]
        raise UsageError(f"n_experiences={n_experiences} does not divide the {k} classes of {ds.name}; valid: {valid}")
    if class_order is None:
        order = torch.randperm(k, generator=_generator(stream_seed, _CLASS_ORDER))
    else:
        order = torch.as_tensor(list(class_order), dtype=torch.int64)
        if sorted(order.tolist()) != list(range(k)):
            raise UsageError(f"class_order must be a permutation of 0..{k - 1}, got {list(class_order)}")
    unit_of = torch.empty(k, dtype=torch.int64)
    unit_of[order] = torch.arange(k)  # inverse permutation: original class id → output unit
    c = k // n_experiences
    shared = scenario == "domain"  # one head of c units: the position of the class within its experience
    units = tuple(tuple(range(c) if shared else range(t * c, (t + 1) * c)) for t in range(n_experiences))

    def part(x, y, t, cap, tag):
        y_units = unit_of[y]
        index = torch.nonzero(y_units // c == t).squeeze(1)
        index = index[balanced_subsample(y_units[index], cap, _generator(stream_seed, tag, t))]
        return _tensor_data(x[index], y_units[index] - (t * c if shared else 0), t)

    experiences = [
        Experience(
            t,
            units[t],
            part(ds.train_x, ds.train_y, t, train_subset, _TRAIN_SUBSET),
            part(ds.test_x, ds.test_y, t, test_subset, _TEST_SUBSET),
        )
        for t in range(n_experiences)
    ]
    spec = StreamSpec(
        name=name or f"split-{ds.name}",
        scenario=scenario,
        n_experiences=n_experiences,
        n_classes=c if shared else k,
        input_shape=ds.input_shape,
        classes_per_experience=units,
        backbone=backbone,
        stream_seed=stream_seed,
        metadata={"dataset": ds.name, "class_order": order.tolist(), **ds.channel_stats},
    )
    return Stream(spec, experiences)


def _transformed_stream(
    ds, scenario, n_experiences, stream_seed, transform, *, kind, train_subset, test_subset, name, backbone, metadata
) -> Stream:
    """Shared body of permuted/rotated streams: every experience sees the whole dataset through its own transform."""
    _check_scenario(scenario, PERMUTED_SCENARIOS, kind)
    _check_positive("n_experiences", n_experiences)
    k = ds.n_classes
    offset = scenario == "task"  # task-IL: experience t owns units [k*t, k*(t+1))

    def part(x, y, t, cap, tag, lazy):
        # Subsample before transforming: rotating 60k images per experience only to drop most is wasted work.
        index = balanced_subsample(y, cap, _generator(stream_seed, tag, t))
        labels = y[index] + (k * t if offset else 0)
        if not lazy:
            return _tensor_data(transform(x[index], t), labels, t)
        source = x if len(index) == len(x) else x[index]  # the whole dataset is shared, not copied
        return TransformedTensorData(source, functools.partial(transform, t=t), labels,
                                     torch.full((len(labels),), t, dtype=torch.int64))

    units = tuple(tuple(range(k * t, k * (t + 1)) if offset else range(k)) for t in range(n_experiences))
    # Long streams: training sets (read once or twice per experience) are transformed when read instead of stored,
    # so memory stops growing with T; test sets (read after every experience) are always stored.
    per_experience = min(len(ds.train_y), train_subset or len(ds.train_y)) * ds.train_x[:1].numel() * 4
    lazy_train = n_experiences * per_experience > LAZY_TRAIN_ABOVE_BYTES
    experiences = [
        Experience(
            t,
            units[t],
            part(ds.train_x, ds.train_y, t, train_subset, _TRAIN_SUBSET, lazy=lazy_train),
            part(ds.test_x, ds.test_y, t, test_subset, _TEST_SUBSET, lazy=False),
        )
        for t in range(n_experiences)
    ]
    spec = StreamSpec(
        name=name or f"{kind}-{ds.name}",
        scenario=scenario,
        n_experiences=n_experiences,
        n_classes=k * n_experiences if offset else k,
        input_shape=ds.input_shape,
        classes_per_experience=units,
        backbone=backbone,
        stream_seed=stream_seed,
        metadata={"dataset": ds.name, **metadata, **ds.channel_stats},
    )
    return Stream(spec, experiences)


def pixel_permutations(n_pixels: int, n_experiences: int, stream_seed: int) -> list[torch.Tensor]:
    """One fixed random permutation of the pixel positions per experience (all permuted, the first one too)."""
    return [torch.randperm(n_pixels, generator=_generator(stream_seed, _PERMUTATION, t)) for t in range(n_experiences)]


def permuted_stream(
    ds: Dataset,
    scenario: str,
    n_experiences: int,
    stream_seed: int = 0,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    name: str | None = None,
    backbone: str = "mlp400",
) -> Stream:
    """Permuted-pixel stream: experience t shows the whole dataset under its own fixed pixel permutation.

    Every experience is permuted, the first one included (as in Avalanche's PermutedMNIST); with several channels the
    same permutation moves all channels of a pixel together.
    """
    _check_positive("n_experiences", n_experiences)
    h, w = ds.input_shape[-2:]
    perms = pixel_permutations(h * w, n_experiences, stream_seed)

    def permute(x, t):
        return x.flatten(2)[:, :, perms[t]].reshape(x.shape)

    return _transformed_stream(
        ds,
        scenario,
        n_experiences,
        stream_seed,
        permute,
        kind="permuted",
        train_subset=train_subset,
        test_subset=test_subset,
        name=name,
        backbone=backbone,
        metadata={},
    )


def rotation_angles(n_experiences: int, stream_seed: int) -> list[float]:
    """One angle per experience, uniform in [0, 180) degrees from the stream seed (as in GEM's rotated MNIST)."""
    return (torch.rand(n_experiences, generator=_generator(stream_seed, _ANGLES), dtype=torch.float64) * 180).tolist()


def rotated_stream(
    ds: Dataset,
    scenario: str,
    n_experiences: int,
    stream_seed: int = 0,
    *,
    angles: Sequence[float] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    name: str | None = None,
    backbone: str = "mlp400",
) -> Stream:
    """Rotated stream: experience t shows the whole dataset rotated by angles[t] degrees (counter-clockwise).

    Without `angles`, they are drawn uniformly from [0, 180) with the stream seed. Rotation is bilinear about the
    image centre with black fill, applied to the whole tensor at once.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import rotate

    _check_positive("n_experiences", n_experiences)
    if angles is None:
        angles = rotation_angles(n_experiences, stream_seed)
    angles = [float(a) for a in angles]
    if len(angles) != n_experiences:
        raise UsageError(f"got {len(angles)} angles for {n_experiences} experiences")

    def turn(x, t):
        return rotate(x, angles[t], interpolation=InterpolationMode.BILINEAR).clamp_(0.0, 1.0)

    return _transformed_stream(
        ds,
        scenario,
        n_experiences,
        stream_seed,
        turn,
        kind="rotated",
        train_subset=train_subset,
        test_subset=test_subset,
        name=name,
        backbone=backbone,
        metadata={"angles": angles},
    )


def stream_from_tensors(
    train_parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
    test_parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
    scenario: str,
    *,
    name: str = "custom",
    classes_per_experience: Sequence[Sequence[int]] | None = None,
    n_classes: int | None = None,
    backbone: str = "mlp400",
    stream_seed: int = 0,
) -> Stream:
    """Build a stream from per-experience (x, y) pairs whose labels are already output units.

    `classes_per_experience` defaults to the labels present in each experience (train and test); `n_classes` to one
    more than the largest unit. Every label must belong to its experience's units.
    """
    if scenario not in SCENARIOS:
        raise unknown_choice("scenario", scenario, SCENARIOS)
    if len(train_parts) == 0 or len(train_parts) != len(test_parts):
        raise UsageError(
            f"need one train and one test part per experience, got {len(train_parts)} and {len(test_parts)}"
        )
    parts = [
        (_as_xy(train, f"train part {t}"), _as_xy(test, f"test part {t}"))
        for t, (train, test) in enumerate(zip(train_parts, test_parts, strict=True))
    ]
    input_shape = tuple(parts[0][0][0].shape[1:])
    for t, ((tx, _), (ex, _)) in enumerate(parts):
        for kind, x in (("train", tx), ("test", ex)):
            if tuple(x.shape[1:]) != input_shape:
                raise UsageError(f"{kind} part {t} has inputs of shape {tuple(x.shape[1:])}, expected {input_shape}")
    if classes_per_experience is None:
        classes_per_experience = [torch.unique(torch.cat([ty, ey])).tolist() for (_, ty), (_, ey) in parts]
    if len(classes_per_experience) != len(parts):
        raise UsageError(
            f"classes_per_experience has {len(classes_per_experience)} entries for {len(parts)} experiences"
        )
    classes = tuple(tuple(sorted(int(c) for c in cs)) for cs in classes_per_experience)
    largest = max((c for cs in classes for c in cs), default=-1)
    n_classes = largest + 1 if n_classes is None else n_classes
    if any(c < 0 for cs in classes for c in cs) or largest >= n_classes:
        raise UsageError(f"output units must lie in 0..{n_classes - 1}, got {classes}")
    for t, ((_, ty), (_, ey)) in enumerate(parts):
        stray = set(torch.unique(torch.cat([ty, ey])).tolist()) - set(classes[t])
        if stray:
            raise UsageError(f"experience {t} has labels {sorted(stray)} outside its units {classes[t]}")
    experiences = [
        Experience(t, classes[t], _tensor_data(tx, ty, t), _tensor_data(ex, ey, t))
        for t, ((tx, ty), (ex, ey)) in enumerate(parts)
    ]
    spec = StreamSpec(
        name=name,
        scenario=scenario,
        n_experiences=len(parts),
        n_classes=n_classes,
        input_shape=input_shape,
        classes_per_experience=classes,
        backbone=backbone,
        stream_seed=stream_seed,
    )
    return Stream(spec, experiences)


def _as_xy(part, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one (x, y) pair and convert it to float32 inputs and int64 labels."""
    try:
        x, y = part
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be an (x, y) pair") from None
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise UsageError(
            f"{what}: need x of shape (N, ...) and y of shape (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UsageError(f"{what}: labels must be integers, got dtype {y.dtype}")
    return x.to(torch.float32), y.to(torch.int64)


def stream_from_datasets(
    train_datasets: Sequence[torch.utils.data.Dataset],
    test_datasets: Sequence[torch.utils.data.Dataset],
    scenario: str,
    **kwargs,
) -> Stream:
    """Like `stream_from_tensors`, from one torch Dataset per experience yielding (x, y, ...) with tensor x.

    Each dataset is read once into memory (TensorDatasets are used as they are); extra keyword arguments go to
    `stream_from_tensors`.
    """
    if len(train_datasets) != len(test_datasets):
        raise UsageError(f"need as many train as test datasets, got {len(train_datasets)} and {len(test_datasets)}")
    return stream_from_tensors(
        [_materialise(d, f"train dataset {t}") for t, d in enumerate(train_datasets)],
        [_materialise(d, f"test dataset {t}") for t, d in enumerate(test_datasets)],
        scenario,
        **kwargs,
    )


def _materialise(dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) < 2:
            raise UsageError(f"{what} must yield (x, y) pairs, it holds {len(dataset.tensors)} tensor(s)")
        return dataset.tensors[0], dataset.tensors[1]
    try:
        n = len(dataset)
    except TypeError:
        raise UsageError(f"{what} must be a map-style dataset with a length") from None
    if n == 0:
        raise UsageError(f"{what} is empty")
    xs, ys = [], []
    try:
        for batch in DataLoader(dataset, batch_size=1024, shuffle=False):
            xs.append(batch[0])
            ys.append(torch.as_tensor(batch[1]))
    except (TypeError, IndexError, KeyError) as error:
        raise UsageError(f"{what} must yield (x, y) pairs with tensor x (add a ToTensor transform?): {error}") from None
    return torch.cat(xs), torch.cat(ys)


def check_fraction(value, name: str = "validation_split") -> None:
    """UsageError unless `value` is a number strictly between 0 and 1 (a validation split's fraction); `name` is
    what the message calls it (a flag, a sweep setting)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise UsageError(f"{name} must be a fraction in (0, 1), got {value!r}")


def with_validation(stream: Stream, fraction: float) -> Stream:
    """The stream with a class-balanced validation set carved out of each experience's training data: round(fraction
    × its size) samples (balanced_subsample: every class ⌊n/C⌋ or one more), drawn from the stream seed and the
    experience index alone, so every strategy and training seed of the stream sees the same split. `train` becomes the
    rest (the only samples trained on) and `val` the carved set, in the original sample order."""
    check_fraction(fraction)
    experiences = []
    for exp in stream:
        n_val = round(fraction * len(exp.train))
        if not 1 <= n_val < len(exp.train):
            raise UsageError(f"validation_split={fraction} leaves experience {exp.index} ({len(exp.train)} training "
                             f"samples) with {n_val} validation and {len(exp.train) - n_val} training samples; both "
                             "need at least one")
        chosen = balanced_subsample(exp.train.y.cpu(), n_val, _generator(stream.spec.stream_seed, _VALIDATION,
                                                                          exp.index))
        keep = torch.ones(len(exp.train), dtype=torch.bool)
        keep[chosen] = False
        rest = torch.nonzero(keep).squeeze(1)
        experiences.append(dataclasses.replace(exp, train=_take(exp.train, rest), val=_take(exp.train, chosen)))
    return Stream(stream.spec, experiences)


def _take(data: TensorData, index: torch.Tensor) -> TensorData:
    """`data[index]`, still transformed when read if it was (a long permuted stream keeps its lazy training sets)."""
    if isinstance(data, TransformedTensorData):
        return TransformedTensorData(data.source[index], data.transform, data.y[index], data.task[index])
    return data.subset(index)
