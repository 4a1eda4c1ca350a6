"""Named benchmarks: a dataset, a generator, the scenarios it supports, a default length and a reference backbone.

`make_stream` validates every argument before it touches the disk, so a typo fails instantly.
"""

from __future__ import annotations

import numbers
import os

from ..errors import UsageError, unknown_choice
from .backbones import BACKBONES
from .base import Stream
from .catalog import (  # noqa: F401 - the catalog's names stay importable from here
    CIFAR_TRAINING,
    CLASS_ORDERS,
    DIGITS_TRAINING,
    MNIST_TRAINING,
    N_CLASSES,
    TRAINING_KEYS,
    BenchmarkInfo,
    benchmark_info,
    check_class_order,
    list_benchmarks,
)
from .datasets import load_dataset
from .generators import (
    check_fraction,
    permuted_stream,
    rotated_stream,
    split_stream,
    with_validation,
)

_GENERATORS = {"split": split_stream, "permuted": permuted_stream, "rotated": rotated_stream}


def _check_int(name: str, value, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_stream(
    name: str,
    scenario: str,
    *,
    stream_seed: int = 0,
    n_experiences: int | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    backbone: str | None = None,
    class_order: str = "seeded",
    validation_split: float | None = None,
    first_experiences: int | None = None,
) -> Stream:
    """Build the named benchmark's stream for a scenario.

    n_experiences defaults to the benchmark's; for split benchmarks it must divide the number of classes.
    train_subset / test_subset cap the samples per experience (balanced over classes, drawn from the stream seed).
    backbone replaces the benchmark's reference backbone (a name from BACKBONES), e.g. a paper's own network.
    class_order "natural" keeps a split benchmark's classes in label order (0/1, 2/3, ...) instead of drawing it from
    the stream seed. validation_split F carves a class-balanced fraction F of each experience's training data into
    its `val` set (generators.with_validation), fixed by the stream seed. first_experiences k keeps the stream's
    first k experiences only (the A-GEM protocol's tuning stream): the same experiences as the whole stream's.
    """
    info = benchmark_info(name)
    info.check_scenario(scenario)
    check_backbone(backbone)
    check_class_order(class_order, info)
    _check_int("stream_seed", stream_seed, minimum=0)
    _check_int("n_experiences", n_experiences, minimum=1, allow_none=True)
    _check_int("train_subset", train_subset, minimum=1, allow_none=True)
    _check_int("test_subset", test_subset, minimum=1, allow_none=True)
    _check_int("first_experiences", first_experiences, minimum=1, allow_none=True)
    n = info.default_n_experiences if n_experiences is None else int(n_experiences)
    if first_experiences is not None and first_experiences > n:
        raise UsageError(f"first_experiences={first_experiences} is more than the {n} experiences of {name}")
    stream_seed = int(stream_seed)  # numpy integers are accepted, but the spec records a plain int
    k = N_CLASSES[info.dataset]
    if info.kind == "split" and k % n:
        valid = ", ".join(str(d) for d in range(1, k + 1) if k % d == 0)
        raise UsageError(f"n_experiences={n} does not divide the {k} classes of {name}; valid choices: {valid}")
    if validation_split is not None:  # before the data is loaded
        check_fraction(validation_split)
    ds = load_dataset(info.dataset, data_root=data_root, download=download)
    stream = _GENERATORS[info.kind](
        ds,
        scenario,
        n,
        stream_seed,
        train_subset=train_subset,
        test_subset=test_subset,
        name=name,
        backbone=backbone or info.backbone,
        **({"class_order": range(k)} if class_order == "natural" else {}),
    )
    if first_experiences is not None:
        stream = stream[: int(first_experiences)]
    return stream if validation_split is None else with_validation(stream, validation_split)


def check_backbone(backbone: str | None) -> None:
    if backbone is not None and backbone not in BACKBONES:
        raise unknown_choice("backbone", backbone, BACKBONES)
