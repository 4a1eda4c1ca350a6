"""Dataset loaders on tiny files written in the real on-disk formats (IDX, gzipped IDX, CIFAR's Python 2 pickles)."""

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from clbench.benchmarks import datasets, load_dataset, make_stream
from clbench.errors import UsageError

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# --- writers for the real formats ------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: magic 0x00 0x00 0x08 <ndim> (2049 for labels, 2051 for images), big-endian uint32 sizes, uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first value is their index, so a sample can be traced back to its source row."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = np.arange(n)
    return images


def write_idx_set(folder: Path, n_train=30, n_test=20, gz=False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": fake_images(n_train, (28, 28), 1),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": fake_images(n_test, (28, 28), 2),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, array in data.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return data


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` objects (BINSTRING), as in the CIFAR files made by Python 2's cPickle."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_pickle(path: Path, obj) -> None:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())


def write_cifar10(root: Path, per_batch=4, n_test=10) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = fake_images(5 * per_batch, (3072,), 3)
    labels = np.arange(5 * per_batch) % 10
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        batch = {b"batch_label": b"training batch", b"labels": labels[rows].tolist(), b"data": images[rows]}
        write_py2_pickle(folder / f"data_batch_{b + 1}", batch)
    test = {b"labels": (np.arange(n_test) % 10).tolist(), b"data": fake_images(n_test, (3072,), 4)}
    write_py2_pickle(folder / "test_batch", test)
    write_py2_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return images, labels


def write_cifar100(root: Path, n_train=200, n_test=100) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    images, labels = fake_images(n_train, (3072,), 5), np.arange(n_train) % 100
    for name, x, y in (("train", images, labels), ("test", fake_images(n_test, (3072,), 6), np.arange(n_test) % 100)):
        entry = {b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(), b"data": x}
        write_py2_pickle(folder / name, entry)
    meta = {
        b"fine_label_names": [f"f{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
    }
    write_py2_pickle(folder / "meta", meta)
    return images, labels


def assert_stream_traces_back(stream, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Every training sample equals the source image it came from, and its unit maps back to that image's class."""
    order = torch.tensor(stream.spec.metadata["class_order"])
    for exp in stream:
        source = torch.round(exp.train.x.flatten(1)[:, 0] * 255).long()  # first value = source row (fake_images)
        assert torch.equal(exp.train.x, images[source])
        assert torch.equal(order[exp.train.y], labels[source])
    assert sum(len(e.train) for e in stream) == len(labels)


# --- tests ----------------------------------------------------------------------------------------------------------


def test_digits_shapes_range_and_fixed_split():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.train_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64
    assert len(ds.train_y) + len(ds.test_y) == 1797 and len(ds.test_y) == 540
    assert 0 <= ds.train_x.min() and ds.train_x.max() == 1.0
    # Stratified: every class has about 30% of its samples in the test split.
    fractions = ds.test_y.bincount() / (ds.train_y.bincount() + ds.test_y.bincount())
    assert torch.all((fractions - 0.3).abs() < 0.02)
    assert load_dataset("digits") is ds  # cached


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CLBENCH_DATA", str(tmp_path / "data"))
    assert datasets.default_data_root() == tmp_path / "data"
    monkeypatch.delenv("CLBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert datasets.default_data_root() == tmp_path / "cache" / "clbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets.default_data_root() == Path.home() / ".cache" / "clbench"


def test_read_idx_round_trip(tmp_path):
    array = fake_images(3, (4, 5), 0)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    (tmp_path / "b").write_bytes(idx_bytes(array))
    assert np.array_equal(datasets.read_idx(tmp_path / "a.gz"), array)
    assert np.array_equal(datasets.read_idx(tmp_path / "b"), array)
    (tmp_path / "c").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(UsageError, match="truncated"):
        datasets.read_idx(tmp_path / "c")


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fmnist", "FashionMNIST")])
def test_torchvision_idx_layout(tmp_path, monkeypatch, name, folder):
    monkeypatch.setattr(datasets, "DEBIAN_FMNIST_DIR", tmp_path / "absent")
    written = write_idx_set(tmp_path / folder / "raw")
    ds = load_dataset(name, data_root=tmp_path)
    assert torch.equal(ds.train_x, torch.from_numpy(written["train-images-idx3-ubyte"]).unsqueeze(1) / 255)
    assert torch.equal(ds.test_x, torch.from_numpy(written["t10k-images-idx3-ubyte"]).unsqueeze(1) / 255)
    assert ds.train_y.tolist() == written["train-labels-idx1-ubyte"].tolist()
    assert ds.test_y.tolist() == written["t10k-labels-idx1-ubyte"].tolist()
    stream = make_stream(f"split-{name}", "class", data_root=tmp_path)
    assert_stream_traces_back(stream, ds.train_x, ds.train_y)


def test_fmnist_debian_gz(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FMNIST_DIR", tmp_path / "debian")
    written = write_idx_set(tmp_path / "debian", gz=True)
    ds = load_dataset("fmnist", data_root=tmp_path / "empty-root")
    assert torch.equal(ds.train_x, torch.from_numpy(written["train-images-idx3-ubyte"]).unsqueeze(1) / 255)
    assert ds.test_y.tolist() == written["t10k-labels-idx1-ubyte"].tolist()
    stream = make_stream("rotated-fmnist", "domain", data_root=tmp_path / "empty-root", n_experiences=2)
    assert stream.spec.input_shape == (1, 28, 28) and len(stream[1].train) == len(ds.train_y)


def test_cifar10_pickles(tmp_path):
    images, labels = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_root=tmp_path)  # md5s differ from the real files: presence is enough
    expected = torch.from_numpy(images.reshape(-1, 3, 32, 32)) / 255
    assert ds.train_x.shape == (20, 3, 32, 32) and torch.equal(ds.train_x, expected)
    assert ds.train_y.tolist() == labels.tolist() and len(ds.test_y) == 10 and ds.n_classes == 10
    assert_stream_traces_back(make_stream("split-cifar10", "task", data_root=tmp_path), expected, ds.train_y)


def test_cifar100_pickles(tmp_path):
    images, labels = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", data_root=tmp_path)
    expected = torch.from_numpy(images.reshape(-1, 3, 32, 32)) / 255
    assert torch.equal(ds.train_x, expected) and ds.train_y.tolist() == labels.tolist()  # fine labels
    stream = make_stream("split-cifar100", "class", data_root=tmp_path)
    assert stream.spec.n_classes == 100 and len(stream) == 10
    assert_stream_traces_back(stream, expected, ds.train_y)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_torchvision_dataset_says_how_to_get_it(tmp_path, name):
    with pytest.raises(UsageError) as error:
        load_dataset(name, data_root=tmp_path)
    message = str(error.value)
    folder = {"mnist": "MNIST/raw/", "cifar10": "cifar-10-batches-py/", "cifar100": "cifar-100-python/"}[name]
    assert f"no readable {folder} under the data root {tmp_path}" in message
    assert "--download (Python: download=True)" in message
    assert "use download=True" not in message and "You can" not in message  # not torchvision's own wording


def test_missing_fmnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FMNIST_DIR", tmp_path / "absent")
    with pytest.raises(UsageError) as error:
        make_stream("split-fmnist", "class", data_root=tmp_path)
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message


def test_unknown_dataset():
    with pytest.raises(UsageError, match="cifar10, cifar100, digits, fmnist, mnist"):
        load_dataset("svhn")


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(tmp_path):
    stream = make_stream("split-fmnist", "class", train_subset=200, test_subset=100, data_root=tmp_path)
    assert [len(e.train) for e in stream] == [200] * 5 and [len(e.test) for e in stream] == [100] * 5
    assert stream.spec.input_shape == (1, 28, 28)
    assert all(e.train.y.bincount(minlength=10)[list(e.classes)].tolist() == [100, 100] for e in stream)
    ds = load_dataset("fmnist", data_root=tmp_path)
    assert len(ds.train_y) == 60000 and len(ds.test_y) == 10000 and ds.train_x.max() <= 1
