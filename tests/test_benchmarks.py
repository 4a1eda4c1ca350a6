"""Stream generators, named benchmarks and reference backbones (on scikit-learn's digits: offline and fast)."""

import pytest
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import TensorDataset

from clbench.benchmarks import (
    MLP,
    BenchmarkInfo,
    ReducedResNet18,
    StreamSpec,
    TransformedTensorData,
    build_backbone,
    generators,
    list_benchmarks,
    load_dataset,
    make_stream,
    permuted_stream,
    rotated_stream,
    split_stream,
    stream_from_datasets,
    stream_from_tensors,
)
from clbench.benchmarks.generators import balanced_subsample, pixel_permutations
from clbench.errors import UsageError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def assert_streams_equal(a, b):
    assert a.spec == b.spec and a.spec.metadata == b.spec.metadata
    for ea, eb in zip(a, b, strict=True):
        assert ea.classes == eb.classes
        for da, db in ((ea.train, eb.train), (ea.test, eb.test)):
            assert torch.equal(da.x, db.x) and torch.equal(da.y, db.y) and torch.equal(da.task, db.task)


# --- split ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_split_units_disjoint_and_covering(scenario):
    stream = make_stream("split-digits", scenario)
    spec = stream.spec
    assert spec.n_classes == 10 and spec.n_experiences == 5 and spec.backbone == "mlp100"
    assert spec.classes_per_experience == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert sorted(spec.metadata["class_order"]) == list(range(10))
    seen = set()
    for t, exp in enumerate(stream):
        assert exp.index == t and exp.task_id == t
        for data in (exp.train, exp.test):
            assert set(data.y.unique().tolist()) == set(exp.classes)  # labels are this experience's units
            assert torch.all(data.task == t)
        assert not seen & set(exp.classes)
        seen |= set(exp.classes)
    assert seen == set(range(10))


def test_split_domain_il_shares_one_head_of_the_position_within_the_pair(digits):
    # van de Ven & Tolias's domain-IL split: "is it the first or the second class of the experience's pair?"
    stream = make_stream("split-digits", "domain", stream_seed=3)
    order = stream.spec.metadata["class_order"]
    assert stream.spec.n_classes == 2 and stream.spec.classes_per_experience == ((0, 1),) * 5
    for t, exp in enumerate(stream):
        for unit in (0, 1):
            x_unit = exp.train.x[exp.train.y == unit]
            assert torch.equal(x_unit, digits.train_x[digits.train_y == order[2 * t + unit]])
    assert sum(len(e.test) for e in stream) == len(digits.test_y)
    # The same samples as the class-IL stream of the same seed, only relabelled.
    class_il = make_stream("split-digits", "class", stream_seed=3)
    for a, b in zip(stream, class_il, strict=True):
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y - 2 * a.index)


def test_split_class_order_maps_units_back_to_original_classes(digits):
    stream = make_stream("split-digits", "class", stream_seed=3)
    order = stream.spec.metadata["class_order"]
    for exp in stream:
        for unit in exp.classes:
            x_unit = exp.train.x[exp.train.y == unit]
            assert torch.equal(x_unit, digits.train_x[digits.train_y == order[unit]])
    assert sum(len(e.test) for e in stream) == len(digits.test_y)


def test_split_seeds(digits):
    a, b = (make_stream("split-digits", "class", stream_seed=7) for _ in range(2))
    assert_streams_equal(a, b)
    orders = {tuple(make_stream("split-digits", "class", stream_seed=s).spec.metadata["class_order"]) for s in range(4)}
    assert len(orders) == 4
    natural = split_stream(digits, "task", 5, class_order=range(10))
    assert natural.spec.metadata["class_order"] == list(range(10))
    assert torch.equal(natural[1].train.y.unique(), torch.tensor([2, 3]))


def test_split_subsets_are_balanced_and_do_not_change_the_order():
    full = make_stream("split-digits", "class", stream_seed=2)
    small = make_stream("split-digits", "class", stream_seed=2, train_subset=10, test_subset=4)
    assert small.spec.metadata["class_order"] == full.spec.metadata["class_order"]
    for exp in small:
        assert exp.train.y.bincount(minlength=10)[list(exp.classes)].tolist() == [5, 5]
        assert len(exp.test) == 4
    assert_streams_equal(small, make_stream("split-digits", "class", stream_seed=2, train_subset=10, test_subset=4))


def test_balanced_subsample():
    y = torch.tensor([0] * 50 + [1] * 5 + [2] * 20)
    index = balanced_subsample(y, 24, torch.Generator().manual_seed(0))
    assert y[index].bincount().tolist() == [10, 5, 9] or y[index].bincount().tolist() == [9, 5, 10]
    assert torch.equal(index, index.unique())  # sorted, no repeats
    assert torch.equal(balanced_subsample(y, None, torch.Generator()), torch.arange(75))


# --- permuted -------------------------------------------------------------------------------------------------------


def test_permuted_fixed_distinct_permutations(digits):
    stream = make_stream("permuted-digits", "domain", stream_seed=1)
    perms = pixel_permutations(64, 5, 1)
    assert not any(torch.equal(perms[0], p) for p in perms[1:]) and not torch.equal(perms[0], torch.arange(64))
    original = digits.train_x.flatten(1)
    for t, exp in enumerate(stream):
        x = exp.train.x.flatten(1)
        assert torch.equal(x, original[:, perms[t]])  # one fixed permutation for every image
        assert torch.equal(x.sort(1).values, original.sort(1).values)  # same pixel multiset per image
        assert torch.equal(exp.train.y, digits.train_y) and exp.classes == tuple(range(10))
    assert stream.spec.n_classes == 10
    assert_streams_equal(stream, make_stream("permuted-digits", "domain", stream_seed=1))
    other = make_stream("permuted-digits", "domain", stream_seed=2)
    assert not torch.equal(other[0].train.x, stream[0].train.x)


def test_long_permuted_streams_share_one_copy_of_the_training_data(digits, monkeypatch):
    assert not isinstance(make_stream("permuted-digits", "domain")[0].train, TransformedTensorData)  # small: stored
    monkeypatch.setattr(generators, "LAZY_TRAIN_ABOVE_BYTES", 50 * len(digits.train_y) * 64 * 4 - 1)
    stream = make_stream("permuted-digits", "domain", n_experiences=50)
    perms = pixel_permutations(64, 50, 0)
    sources = {exp.train.source.data_ptr() for exp in stream}
    assert sources == {digits.train_x.data_ptr()}  # 50 experiences, one stored training set
    exp = stream[7]
    assert isinstance(exp.train, TransformedTensorData) and len(exp.train) == len(digits.train_y)
    expected = digits.train_x.flatten(1)[:, perms[7]].reshape(digits.train_x.shape)
    assert torch.equal(exp.train.x, expected)
    index = torch.tensor([5, 0, 42])
    picked = exp.train.subset(index)
    assert torch.equal(picked.x, expected[index]) and torch.equal(picked.task, torch.full((3,), 7))
    assert torch.equal(exp.train.to("cpu").x, expected) and exp.train.nbytes == exp.train.to("cpu").nbytes
    sliced = stream[7:9]  # re-indexed experiences stay lazy
    assert isinstance(sliced[0].train, TransformedTensorData) and torch.equal(sliced[0].train.x, expected)
    assert torch.all(sliced[0].train.task == 0)


def test_permuted_task_offsets_labels(digits):
    stream = make_stream("permuted-digits", "task", n_experiences=3)
    assert stream.spec.n_classes == 30
    for t, exp in enumerate(stream):
        assert exp.classes == tuple(range(10 * t, 10 * t + 10))
        assert torch.equal(exp.test.y, digits.test_y + 10 * t) and torch.all(exp.test.task == t)
    mask = stream.spec.task_unit_mask()
    assert mask.sum(1).tolist() == [10, 10, 10] and mask.sum(0).tolist() == [1] * 30


# --- rotated --------------------------------------------------------------------------------------------------------


def test_rotated_explicit_angles(digits):
    stream = rotated_stream(digits, "domain", 3, angles=[0, 90, 45])
    assert stream.spec.metadata["angles"] == [0.0, 90.0, 45.0]
    assert torch.equal(stream[0].train.x, digits.train_x)  # 0 degrees: identity
    assert torch.equal(stream[1].train.x, torch.rot90(digits.train_x, 1, (-2, -1)))  # counter-clockwise
    x45 = stream[2].train.x
    assert not torch.equal(x45, digits.train_x) and x45.min() >= 0 and x45.max() <= 1
    with pytest.raises(UsageError, match="angles"):
        rotated_stream(digits, "domain", 3, angles=[0, 90])


def test_rotated_seeded_angles_and_labels(digits):
    a = rotated_stream(digits, "task", 3, stream_seed=5, train_subset=50, test_subset=20)
    angles = a.spec.metadata["angles"]
    assert len(angles) == 3 and len(set(angles)) == 3 and all(0 <= angle < 180 for angle in angles)
    assert_streams_equal(a, rotated_stream(digits, "task", 3, stream_seed=5, train_subset=50, test_subset=20))
    assert rotated_stream(digits, "task", 3, stream_seed=6, train_subset=5).spec.metadata["angles"] != angles
    assert a.spec.n_classes == 30 and torch.equal(a[2].train.y.unique(), torch.arange(20, 30))
    assert [len(e.train) for e in a] == [50] * 3 and [len(e.test) for e in a] == [20] * 3
    domain = rotated_stream(digits, "domain", 2, train_subset=20)
    assert domain.spec.n_classes == 10 and domain[1].classes == tuple(range(10))


# --- errors ---------------------------------------------------------------------------------------------------------


def test_unknown_benchmark_lists_valid_choices():
    with pytest.raises(UsageError) as error:
        make_stream("split-svhn", "class")
    message = str(error.value)
    assert "split-svhn" in message and all(info.name in message for info in list_benchmarks())


@pytest.mark.parametrize(
    "name, scenario",
    [
        ("split-digits", "bogus"),
        ("permuted-digits", "class"),
        ("rotated-fmnist", "class"),
        ("split-cifar100", "bogus"),
    ],
)
def test_unsupported_scenario_fails_before_loading(name, scenario, tmp_path):
    # The data root is empty: the error must be about the scenario, not about missing files.
    with pytest.raises(UsageError, match=f"scenario.*{scenario}.*valid choices"):
        make_stream(name, scenario, data_root=tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_experiences": 3}, "n_experiences=3 does not divide"),
        ({"n_experiences": 0}, "n_experiences"),
        ({"n_experiences": 2.5}, "n_experiences"),
        ({"train_subset": 0}, "train_subset"),
        ({"stream_seed": -1}, "stream_seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(UsageError, match=match):
        make_stream("split-digits", "class", **kwargs)


def test_generator_validation(digits):
    with pytest.raises(UsageError, match="valid choices: class, domain, task"):
        split_stream(digits, "bogus", 5)
    with pytest.raises(UsageError, match="permutation"):
        split_stream(digits, "class", 5, class_order=[0] * 10)
    with pytest.raises(UsageError, match="valid choices: domain, task"):
        permuted_stream(digits, "class", 2)


def test_list_benchmarks():
    infos = list_benchmarks()
    assert all(isinstance(i, BenchmarkInfo) for i in infos)
    names = {i.name: i for i in infos}
    assert {
        "split-digits",
        "permuted-digits",
        "split-fmnist",
        "permuted-fmnist",
        "rotated-fmnist",
        "split-mnist",
        "permuted-mnist",
        "rotated-mnist",
        "split-cifar10",
        "split-cifar100",
    } == set(names)
    cifar100 = names["split-cifar100"]
    assert cifar100.default_n_experiences == 10 and cifar100.backbone == "resnet18-reduced"
    assert names["permuted-mnist"].scenarios == ("domain", "task")
    assert names["split-mnist"].scenarios == ("class", "domain", "task")


# --- streams from user data -----------------------------------------------------------------------------------------


def _parts(n_exp, n=6, shape=(2, 3)):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(n, *shape, generator=g), torch.arange(n) % 2 + 2 * t) for t in range(n_exp)]


def test_stream_from_tensors():
    train, test = _parts(3), _parts(3, n=4)
    stream = stream_from_tensors(train, test, "class", name="mine")
    assert stream.spec.n_classes == 6 and stream.spec.input_shape == (2, 3)
    assert stream.spec.classes_per_experience == ((0, 1), (2, 3), (4, 5))
    assert torch.equal(stream[2].train.x, train[2][0]) and torch.all(stream[2].test.task == 2)
    explicit = stream_from_tensors(train, test, "task", classes_per_experience=[(0, 1), (2, 3), (4, 5, 6)], n_classes=8)
    assert explicit.spec.n_classes == 8 and explicit[2].classes == (4, 5, 6)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda tr, te: (tr, te[:2]), "one train and one test part"),
        (lambda tr, te: ([(tr[0][0], tr[0][1].float())] + tr[1:], te), "integers"),
        (lambda tr, te: ([(tr[0][0], tr[0][1][:3])] + tr[1:], te), "shape"),
        (lambda tr, te: ([(tr[0][0][:, :1], tr[0][1])] + tr[1:], te), "expected"),
        (lambda tr, te: ([tr[0][0]] + tr[1:], te), r"\(x, y\) pair"),
    ],
)
def test_stream_from_tensors_validation(change, match):
    train, test = change(_parts(3), _parts(3))
    with pytest.raises(UsageError, match=match):
        stream_from_tensors(train, test, "class")
    with pytest.raises(UsageError, match="scenario"):
        stream_from_tensors(_parts(3), _parts(3), "online")


def test_stream_from_tensors_rejects_labels_outside_units():
    with pytest.raises(UsageError, match="outside its units"):
        stream_from_tensors(_parts(2), _parts(2), "task", classes_per_experience=[(0,), (2, 3)])


class _ListDataset(TorchDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_stream_from_datasets():
    train, test = _parts(2), _parts(2, n=3)
    stream = stream_from_datasets([TensorDataset(*p) for p in train], [_ListDataset(*p) for p in test], "class")
    assert torch.equal(stream[1].train.x, train[1][0]) and torch.equal(stream[1].test.y, test[1][1])
    assert stream[1].test.y.dtype == torch.int64 and stream.spec.n_classes == 4


# --- backbones ------------------------------------------------------------------------------------------------------


def _spec(backbone, input_shape, n_classes=10):
    return StreamSpec("s", "class", 1, n_classes, input_shape, (tuple(range(n_classes)),), backbone)


@pytest.mark.parametrize(
    "backbone, input_shape, width",
    [
        ("mlp400", (1, 28, 28), 400),
        ("mlp100", (1, 8, 8), 100),
        ("resnet18-reduced", (3, 32, 32), 160),
        ("resnet18-reduced", (1, 28, 28), 160),
    ],
)
def test_backbone_shapes(backbone, input_shape, width):
    torch.manual_seed(0)
    model = build_backbone(_spec(backbone, input_shape, n_classes=7))
    x = torch.rand(3, *input_shape)
    features = model.features(x)
    assert features.shape == (3, width) and model.feature_dim == width
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7
    assert torch.equal(model(x), model.head(features))


@pytest.mark.parametrize("make", [lambda: MLP((1, 8, 8), 5, hidden=(16, 8)), lambda: ReducedResNet18(5, nf=4)])
def test_backbone_determinism(make):
    torch.manual_seed(1)
    a = make()
    torch.manual_seed(1)
    b = make()
    torch.manual_seed(2)
    c = make()
    for (key, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), key
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_reduced_resnet_matches_gem_widths():
    model = ReducedResNet18(10)
    convs = [m.out_channels for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(convs) == 160 and convs[0] == 20
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_unknown_backbone():
    with pytest.raises(UsageError, match="mlp100, mlp1000, mlp400, resnet18-reduced"):
        build_backbone(_spec("vit", (1, 8, 8)))
    with pytest.raises(UsageError, match="unknown backbone 'vit'"):
        make_stream("split-digits", "class", backbone="vit")


def test_a_paper_s_backbone_replaces_the_reference_one(digits):
    stream = make_stream("split-digits", "class", backbone="mlp1000")
    assert stream.spec.backbone == "mlp1000"
    assert build_backbone(stream.spec).head.in_features == 1000
    assert build_backbone(make_stream("split-digits", "class").spec).head.in_features == 100


def test_digits_stream_trains_with_its_backbone(digits):
    stream = make_stream("split-digits", "class", train_subset=40)
    torch.manual_seed(0)
    model = build_backbone(stream.spec)
    logits = model(stream[0].train.x)
    assert logits.shape == (40, 10)
    torch.nn.functional.cross_entropy(logits, stream[0].train.y).backward()


def test_natural_class_order_keeps_label_order_and_is_for_split_benchmarks_only():
    stream = make_stream("split-digits", "domain", class_order="natural")
    assert stream.spec.metadata["class_order"] == list(range(10))
    assert make_stream("split-digits", "class", stream_seed=5, class_order="natural").spec.metadata["class_order"] \
        == list(range(10))
    with pytest.raises(UsageError, match="unknown class order 'sorted'; valid choices: natural, seeded"):
        make_stream("split-digits", "class", class_order="sorted")
    with pytest.raises(UsageError, match="applies to split benchmarks; 'permuted-digits' is a permuted benchmark"):
        make_stream("permuted-digits", "domain", class_order="natural")
