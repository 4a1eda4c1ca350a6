"""What each named benchmark is, without loading it or importing torch: its dataset, generator kind, scenarios,
default length, reference backbone and standard training settings. `clbench list`, `run --help` and the checks of a
command's input read this; clbench.benchmarks.registry builds the streams."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError, unknown_choice

SCENARIOS = ("task", "domain", "class")
SPLIT_SCENARIOS = ("class", "domain", "task")  # sorted, as unknown_choice lists them
PERMUTED_SCENARIOS = ("domain", "task")
ROTATED_SCENARIOS = PERMUTED_SCENARIOS
_SCENARIOS = {"split": SPLIT_SCENARIOS, "permuted": PERMUTED_SCENARIOS, "rotated": ROTATED_SCENARIOS}
# Class counts are known without touching the disk, so callers can validate a request before loading anything.
N_CLASSES = {"digits": 10, "fmnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}


#: The training settings a benchmark runs with unless the user sets them (CLI flags, a sweep's [settings]); with
#: them naive learns every experience (learning accuracy ≥ 0.9 in class-IL), the point of a default.
TRAINING_KEYS = ("optimizer", "lr", "momentum", "batch_size", "epochs")
#: split-digits has ~290 training samples per experience: 10 epochs of batch 32 are 90 steps (1 epoch of batch 128,
#: 3 steps, learns nothing). Naive class-IL reaches learning accuracy 0.994, replay 0.973 (3 seeds).
DIGITS_TRAINING = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 32, "epochs": 10}
#: The reference leaderboard's settings (results/reference): 94 steps per split experience, 469 per permuted one.
MNIST_TRAINING = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 128, "epochs": 1}
#: A-GEM's CIFAR-100 protocol with the reduced ResNet-18 (Chaudhry et al. 2019): one epoch, batch 10, plain SGD.
CIFAR_TRAINING = {"optimizer": "sgd", "lr": 0.03, "momentum": 0.0, "batch_size": 10, "epochs": 1}
_TRAINING = {"digits": DIGITS_TRAINING, "fmnist": MNIST_TRAINING, "mnist": MNIST_TRAINING,
             "cifar10": CIFAR_TRAINING, "cifar100": CIFAR_TRAINING}


@dataclass(frozen=True)
class BenchmarkInfo:
    """What a named benchmark is, without loading it."""

    name: str
    dataset: str
    kind: str  # "split", "permuted" or "rotated"
    scenarios: tuple[str, ...]
    default_n_experiences: int
    backbone: str
    description: str

    @property
    def training(self) -> dict:
        """The standard training settings (TRAINING_KEYS) of this benchmark: what a setting the user leaves out is."""
        return dict(_TRAINING[self.dataset])

    def training_with(self, given: dict) -> dict:
        """The training settings of a run on this benchmark: `given` over the benchmark's own. A run that picks
        another optimizer than the benchmark's does not inherit its (SGD) momentum unless it sets one."""
        base = self.training
        if given.get("optimizer", base["optimizer"]) != base["optimizer"] and "momentum" not in given:
            base["momentum"] = 0.0
        return {**base, **given}

    def training_text(self) -> str:
        t = self.training
        momentum = f" momentum {t['momentum']:g}" if t["momentum"] else ""
        return f"{t['optimizer']} lr {t['lr']:g}{momentum}, batch {t['batch_size']}, {t['epochs']} epoch(s)"

    def check_scenario(self, scenario: str) -> None:
        """UsageError naming the scenario and this benchmark's valid ones, before any data is touched."""
        if scenario not in self.scenarios:
            raise UsageError(
                f"benchmark {self.name!r} does not support scenario {scenario!r}; "
                f"valid choices: {', '.join(self.scenarios)}"
            )


def _info(name, dataset, kind, n, backbone, description) -> BenchmarkInfo:
    return BenchmarkInfo(name, dataset, kind, _SCENARIOS[kind], n, backbone, description)


_BENCHMARKS = {
    b.name: b
    for b in (
        _info(
            "split-digits",
            "digits",
            "split",
            5,
            "mlp100",
            "scikit-learn 8x8 digits, 5 experiences of 2 classes; offline and tiny, for smoke tests",
        ),
        _info(
            "permuted-digits",
            "digits",
            "permuted",
            5,
            "mlp100",
            "scikit-learn 8x8 digits under a fixed pixel permutation per experience",
        ),
        _info("split-fmnist", "fmnist", "split", 5, "mlp400", "Fashion-MNIST, 5 experiences of 2 classes"),
        _info(
            "permuted-fmnist",
            "fmnist",
            "permuted",
            5,
            "mlp400",
            "Fashion-MNIST under a fixed pixel permutation per experience",
        ),
        _info(
            "rotated-fmnist",
            "fmnist",
            "rotated",
            5,
            "mlp400",
            "Fashion-MNIST rotated by a fixed angle in [0, 180) per experience",
        ),
        _info("split-mnist", "mnist", "split", 5, "mlp400", "MNIST, 5 experiences of 2 classes"),
        _info(
            "permuted-mnist", "mnist", "permuted", 10, "mlp400", "MNIST under a fixed pixel permutation per experience"
        ),
        # GEM used 20 rotations; 10 keeps the in-memory copies (one per experience) under 2 GB.
        _info(
            "rotated-mnist",
            "mnist",
            "rotated",
            10,
            "mlp400",
            "MNIST rotated by a fixed angle in [0, 180) per experience (GEM used 20: pass n_experiences=20)",
        ),
        _info(
            "split-cifar10",
            "cifar10",
            "split",
            5,
            "resnet18-reduced",
            "CIFAR-10, 5 experiences of 2 classes, reduced ResNet-18",
        ),
        _info(
            "split-cifar100",
            "cifar100",
            "split",
            10,
            "resnet18-reduced",
            "CIFAR-100, 10 experiences of 10 classes, reduced ResNet-18",
        ),
    )
}


def list_benchmarks() -> list[BenchmarkInfo]:
    """Every named benchmark, sorted by name."""
    return [_BENCHMARKS[name] for name in sorted(_BENCHMARKS)]


def benchmark_info(name: str) -> BenchmarkInfo:
    """The description of a named benchmark; UsageError listing the valid names if unknown."""
    if name not in _BENCHMARKS:
        raise unknown_choice("benchmark", name, _BENCHMARKS)
    return _BENCHMARKS[name]



CLASS_ORDERS = ("natural", "seeded")


def check_class_order(class_order: str, info: BenchmarkInfo) -> None:
    if class_order not in CLASS_ORDERS:
        raise unknown_choice("class order", class_order, CLASS_ORDERS)
    if class_order == "natural" and info.kind != "split":
        raise UsageError(f"class_order='natural' applies to split benchmarks; {info.name!r} is a {info.kind} "
                         "benchmark (its classes are not split)")
