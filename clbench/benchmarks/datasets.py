"""Dataset loaders: each returns a `Dataset` record of tensors held in memory, loaded once per process.

Images are float32 (N, C, H, W) scaled to [0, 1] and stay so in the streams, which keeps permutations and rotations
(whose zero fill is "black") exact and easy to check. Standardisation happens inside the reference backbones instead,
with the per-channel statistics of the training set (`Dataset.channel_stats`, carried in the stream's metadata), as
Avalanche and torchvision pipelines normalise their inputs.

Where the files come from:
- `digits`: scikit-learn's bundled copy, always available offline.
- `fmnist`: the data root in torchvision's layout, then Debian's `dataset-fashion-mnist` package, then (only with
  `download=True`) torchvision's download into the data root.
- `mnist`, `cifar10`, `cifar100`: torchvision's classes over the data root; downloading only with `download=True`.

The data root is the `data_root` argument, else `$CLBENCH_DATA`, else `$XDG_CACHE_HOME/clbench` (`~/.cache/clbench`).
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError, unknown_choice
from .catalog import N_CLASSES

DATASETS = tuple(N_CLASSES)

# Where Debian's `dataset-fashion-mnist` package installs the gzipped IDX files; a module constant so tests can
# point it elsewhere.
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# The digits train/test split is part of the dataset, not of a stream: fixed, whatever the stream seed.
DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Dataset:
    """A whole dataset in memory: x float32 (N, C, H, W) in [0, 1], y int64 original class ids."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @functools.cached_property
    def channel_stats(self) -> dict[str, list[float]]:
        """Per-channel mean and standard deviation of the training images, for the backbones' input standardisation
        (the usual constants, e.g. Fashion-MNIST's 0.2860 / 0.3530, computed rather than hard-coded)."""
        x = self.train_x.transpose(0, 1).reshape(self.train_x.shape[1], -1).double()
        return {"input_mean": x.mean(1).tolist(), "input_std": x.std(1).tolist()}


def default_data_root() -> Path:
    """`$CLBENCH_DATA` if set, else the per-user cache folder `$XDG_CACHE_HOME/clbench` (default `~/.cache`)."""
    if os.environ.get("CLBENCH_DATA"):
        return Path(os.environ["CLBENCH_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "clbench"


def load_dataset(name: str, data_root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a dataset by name (one of DATASETS); repeated calls with the same name and root reuse the tensors.

    Callers must not modify the returned tensors in place: they are shared through the cache.
    """
    if name not in N_CLASSES:
        raise unknown_choice("dataset", name, DATASETS)
    if name == "digits":
        return _load_cached(name, None, False)  # bundled with scikit-learn: no root, nothing to download
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    return _load_cached(name, str(root.resolve()), bool(download))


def clear_cache() -> None:
    """Forget every loaded dataset (for tests, or to free memory)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str | None, download: bool) -> Dataset:
    loader = {"digits": _digits, "fmnist": _fmnist, "mnist": _mnist, "cifar10": _cifar, "cifar100": _cifar}[name]
    return loader(name, root, download)


def _images(x, channels_last: bool = False) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) → float32 (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(np.asarray(x).astype(np.float32)).div_(255.0)  # astype copies: read-only buffers are fine
    x = x.permute(0, 3, 1, 2) if channels_last else x.unsqueeze(1)
    return x.contiguous()


def _labels(y) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y).astype(np.int64))


def _digits(name: str, root, download) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # pixel values are 0..16
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, test = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_FRACTION, stratify=bunch.target, random_state=DIGITS_SPLIT_SEED
    )
    train, test = torch.as_tensor(np.sort(train)), torch.as_tensor(np.sort(test))
    return Dataset(name, x[train], y[train], x[test], y[test], N_CLASSES[name])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian magic 0x0000 <dtype> <ndim>, ndim uint32 sizes, data."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UsageError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The four MNIST-style IDX files in `folder`, plain or gzipped, or None if any is missing."""
    found = {}
    for key, stem in _IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def _from_idx(name: str, files: dict[str, Path]) -> Dataset:
    arrays = {key: read_idx(path) for key, path in files.items()}
    return Dataset(
        name,
        _images(arrays["train_x"]),
        _labels(arrays["train_y"]),
        _images(arrays["test_x"]),
        _labels(arrays["test_y"]),
        N_CLASSES[name],
    )


def _from_mnist_class(name: str, cls, root: str, download: bool) -> Dataset:
    train, test = (_open_torchvision(name, cls, root, download, train=t) for t in (True, False))
    return Dataset(
        name, _images(train.data), _labels(train.targets), _images(test.data), _labels(test.targets), N_CLASSES[name]
    )


def _fmnist(name: str, root: str, download: bool) -> Dataset:
    raw = Path(root) / "FashionMNIST" / "raw"
    # (1) torchvision's layout under the data root: its own reader handles the uncompressed files.
    if all((raw / stem).is_file() for stem in _IDX_FILES.values()):
        return _from_mnist_class(name, _torchvision_dataset("FashionMNIST"), root, download=False)
    # (2) gzipped files in that folder, or Debian's package: read with our IDX reader.
    for folder in (raw, Path(DEBIAN_FMNIST_DIR)):
        files = _find_idx(folder)
        if files is not None:
            return _from_idx(name, files)
    # (3) download only when asked.
    if download:
        return _from_mnist_class(name, _torchvision_dataset("FashionMNIST"), root, download=True)
    raise UsageError(
        f"Fashion-MNIST not found in {raw} nor in {DEBIAN_FMNIST_DIR}. Get it with "
        "`apt-get install dataset-fashion-mnist`, or fetch it into the data root with --download (Python: "
        f"download=True), or put the four IDX files (train-images-idx3-ubyte, ...; plain or .gz) under {raw}"
    )


def _mnist(name: str, root: str, download: bool) -> Dataset:
    return _from_mnist_class(name, _torchvision_dataset("MNIST"), root, download)


def _cifar(name: str, root: str, download: bool) -> Dataset:
    cls = _torchvision_dataset({"cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name])
    if not download:
        # torchvision checks the md5 of every file at every load; that only protects a fresh download, and reading
        # the whole dataset twice is wasted time, so existing files need only be present (md5=None = presence check).
        cls = type(
            f"Present{cls.__name__}",
            (cls,),
            {
                "train_list": [[f, None] for f, _ in cls.train_list],
                "test_list": [[f, None] for f, _ in cls.test_list],
                "meta": {**cls.meta, "md5": None},
            },
        )
    train, test = (_open_torchvision(name, cls, root, download, train=t) for t in (True, False))
    return Dataset(
        name,
        _images(train.data, channels_last=True),
        _labels(train.targets),
        _images(test.data, channels_last=True),
        _labels(test.targets),
        N_CLASSES[name],
    )


def _torchvision_dataset(class_name: str):
    """A torchvision dataset class, imported on demand (importing torchvision.datasets takes seconds)."""
    import torchvision.datasets

    return getattr(torchvision.datasets, class_name)


def _open_torchvision(name: str, cls, root: str, download: bool, train: bool):
    """Instantiate a torchvision dataset class, turning its 'not found' / download failures into a UsageError."""
    try:
        return cls(root, train=train, download=download)
    except (RuntimeError, OSError) as error:  # missing files (RuntimeError) or a failed download (URLError ⊂ OSError)
        if download:
            raise UsageError(f"could not download {name} into {root}: {error}") from error
        # torchvision's own wording ("use download=True") is for its API; say what clbench's user can do
        raise UsageError(
            f"{name} not found: no readable {_torchvision_folder(cls)} under the data root {root}. Fetch it with "
            f"--download (Python: download=True), or point --data-root or $CLBENCH_DATA at a folder that holds it"
        ) from error


def _torchvision_folder(cls) -> str:
    """The folder a torchvision dataset class reads under its root: cifar-10-batches-py/, MNIST/raw/, ..."""
    base = getattr(cls, "base_folder", None)
    if base:
        return f"{base}/"
    name = next(c.__name__ for c in cls.__mro__ if not c.__name__.startswith("Present"))
    return f"{name}/raw/"
