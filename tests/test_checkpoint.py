"""Run checkpoints hold tensors and JSON only: reading a planted or broken file never runs its code and never fails
the run (one warning, then a fresh start), and every built-in strategy resumes bit-identically."""

import ast
import dataclasses
import json
import logging
import pickle
import pickletools
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clbench.runners.checkpoint import META
from clbench.runners.loop import run
from clbench.strategies import get_strategy
from clbench.strategies.base import TrainConfig
from clbench.strategies.naive import Naive
from clbench.strategies.registry import BUILTIN_MODULES
from tests.conftest import config

ROOT = Path(__file__).resolve().parents[1]
SGD = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9)
ADAM = TrainConfig(epochs=1, batch_size=32, lr=1e-3, optimizer="adam")

# Small settings that still exercise each strategy's learned state (buffers, Fisher, teacher, masks, ...).
CASES = {
    "naive": ({}, SGD),
    "joint": ({}, SGD),
    "ewc": ({"ewc_lambda": 10.0}, SGD),
    "replay": ({"mem_size": 60, "storage_policy": "class_balanced"}, SGD),
    "lwf": ({}, SGD),
    "gem": ({"patterns_per_exp": 16}, SGD),
    "agem": ({"patterns_per_exp": 16, "sample_size": 8}, SGD),
    "center-loss": ({"mem_size": 40}, SGD),
    "hnet": ({"chunk_size": 2000, "emb_dim": 8, "chunk_emb_dim": 8}, ADAM),
    "supsup": ({}, ADAM),
    "exssnet": ({"kkt": True, "kkt_k": 10}, ADAM),
    "si": ({}, SGD),
    "mas": ({}, SGD),
    "icarl": ({"memory_size": 100}, SGD),
    "der": ({"mem_size": 60}, SGD),
    "er-ace": ({"mem_size": 60}, SGD),
    "gdumb": ({"mem_size": 60}, SGD),
    "separate": ({}, SGD),
}


class Plant:
    """A pickle payload: unpickling it creates the file `target` (a stand-in for arbitrary code)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


class Opaque(Naive):
    """A strategy that declares itself not checkpointable."""

    checkpointable = False


class HoldsAnObject(Naive):
    """A user strategy whose learned state includes an object no checkpoint can store."""

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.thing_ = object()


def interrupt_at(monkeypatch, cls, index):
    """Make `cls` raise KeyboardInterrupt (as a kill would) on reaching experience `index`, once; returns the list of
    experiences it then begins, and a function that stops the interruption."""
    original = cls.before_experience
    calls, armed = [], [True]

    def before_experience(self, exp):
        calls.append(exp.index)
        if armed[0] and exp.index == index:
            armed[0] = False
            raise KeyboardInterrupt
        original(self, exp)

    monkeypatch.setattr(cls, "before_experience", before_experience)
    return calls


def warnings_of(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("clbench")]


@pytest.fixture(scope="module")
def naive_cfg():
    return config("naive", train=SGD)


@pytest.fixture
def uninterrupted(naive_cfg, digits_class):
    return run(naive_cfg, digits_class, progress=False)  # per test: after conftest's single-thread setting


@pytest.fixture
def real_checkpoint(tmp_path, monkeypatch, naive_cfg, digits_class):
    """A checkpoint naive wrote after experience 1, at `tmp_path/run.pt`."""
    path = tmp_path / "run.pt"
    interrupt_at(monkeypatch, Naive, 2)
    with pytest.raises(KeyboardInterrupt):
        run(naive_cfg, digits_class, progress=False, checkpoint=path)
    monkeypatch.undo()
    assert path.exists()
    return path


def rewrite(path, change):
    """Load a checkpoint (safely), let `change(meta, tensors)` edit it (or return the text to store instead of the
    JSON), save it back."""
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload.pop(META))
    text = change(meta, payload)
    torch.save({META: json.dumps(meta) if text is None else text, **payload}, path)


def assert_ignored_and_fresh(path, cfg, stream, reference, caplog):
    with caplog.at_level(logging.WARNING, logger="clbench"):
        result = run(cfg, stream, progress=False, checkpoint=path)
    assert result.status == "ok", result.error
    assert result.evals == reference.evals
    assert [c["train_loss"] for c in result.costs][1:] == [c["train_loss"] for c in reference.costs][1:]
    warned = warnings_of(caplog)
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert str(path) in warned[0].getMessage() and "\n" not in warned[0].getMessage()
    assert not path.exists()
    return warned[0].getMessage()


# -- untrusted files ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_planted_pickle_payload_is_not_executed(tmp_path, writer, naive_cfg, digits_class, uninterrupted, caplog):
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Plant(live)))  # the payload really runs code when unpickled
    assert live.exists()
    path = tmp_path / "checkpoints" / f"{naive_cfg.run_id}.pt"
    path.parent.mkdir()
    target = tmp_path / "pwned"
    payload = {"run_id": naive_cfg.run_id, "next_experience": 2, "strategy": Plant(target)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    message = assert_ignored_and_fresh(path, naive_cfg, digits_class, uninterrupted, caplog)
    assert not target.exists()
    assert "weights_only" in message
    assert "set to `False`" not in message and "likely succeed" not in message  # never advise loading it unsafely


def test_corrupt_bytes_are_ignored(tmp_path, naive_cfg, digits_class, uninterrupted, caplog):
    path = tmp_path / "run.pt"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    assert_ignored_and_fresh(path, naive_cfg, digits_class, uninterrupted, caplog)


def test_a_truncated_checkpoint_is_ignored(real_checkpoint, naive_cfg, digits_class, uninterrupted, caplog):
    data = real_checkpoint.read_bytes()
    real_checkpoint.write_bytes(data[: len(data) // 2])
    assert_ignored_and_fresh(real_checkpoint, naive_cfg, digits_class, uninterrupted, caplog)


def test_another_runs_checkpoint_is_ignored(tmp_path, monkeypatch, naive_cfg, digits_class, uninterrupted, caplog):
    other = config("naive", train=SGD, seed=1)
    path = tmp_path / "run.pt"
    interrupt_at(monkeypatch, Naive, 2)
    with pytest.raises(KeyboardInterrupt):
        run(other, digits_class, progress=False, checkpoint=path)
    monkeypatch.undo()
    message = assert_ignored_and_fresh(path, naive_cfg, digits_class, uninterrupted, caplog)
    assert other.run_id in message


def _model_weight(meta, tensors):
    """Replace the model's first tensor by one of another shape."""
    first = meta["strategy"]["model_"]["$module"]["$dict"][0][1]
    tensors[first["$tensor"]] = torch.zeros(3, 3)


def _drop_a_tensor(meta, tensors):
    del tensors[sorted(tensors)[-1]]


def _short_torch_rng(meta, tensors):
    tensors[meta["rng"]["torch"]["$tensor"]] = torch.zeros(7, dtype=torch.uint8)


TAMPERED = {
    "another clbench version": (lambda meta, tensors: meta.update(clbench="0.0.0"), "0.0.0"),
    "another format version": (lambda meta, tensors: meta.update(format=99), "format"),
    "JSON that does not parse": (lambda meta, tensors: "{not json", "JSON"),
    "a missing tensor": (_drop_a_tensor, "tensor"),
    "a tensor of the wrong shape": (_model_weight, "size mismatch"),
    "a strategy attribute it does not have": (lambda meta, tensors: meta["strategy"].update(spec_=1), "spec_"),
    "an experience out of range": (lambda meta, tensors: meta.update(next_experience=99), "99"),
    "a bad generator state": (_short_torch_rng, "RuntimeError"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_ignored(case, real_checkpoint, naive_cfg, digits_class, uninterrupted, caplog):
    change, reason = TAMPERED[case]
    rewrite(real_checkpoint, change)
    python_rng, numpy_rng = random.getstate(), np.random.get_state()
    message = assert_ignored_and_fresh(real_checkpoint, naive_cfg, digits_class, uninterrupted, caplog)
    assert reason in message
    # the global generators are as they were: a rejected state is rolled back, never half applied
    assert random.getstate() == python_rng
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_rng, strict=True))


# -- what a checkpoint holds ------------------------------------------------------------------------------------------
def test_a_checkpoint_is_tensors_and_json_only(real_checkpoint, naive_cfg):
    payload = torch.load(real_checkpoint, weights_only=True)
    assert isinstance(payload.pop(META), str)
    assert payload and all(isinstance(t, torch.Tensor) for t in payload.values())
    # the pickle inside names no global beyond torch's tensor rebuilding
    with zipfile.ZipFile(real_checkpoint) as archive:
        (pkl,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        globals_ = {arg for op, arg, _ in pickletools.genops(archive.read(pkl)) if op.name == "GLOBAL"}
    assert globals_ and all(g == "torch._utils _rebuild_tensor_v2" or g == "collections OrderedDict"
                            or (g.startswith("torch ") and g.endswith("Storage")) for g in globals_), globals_
    meta = json.loads(torch.load(real_checkpoint, weights_only=True)[META])
    assert meta["run_id"] == naive_cfg.run_id and meta["next_experience"] == 2


def test_no_code_loads_torch_files_unsafely():
    """Every torch.load in the project passes weights_only=True."""
    unsafe = []
    for path in [*ROOT.glob("clbench/**/*.py"), *ROOT.glob("scripts/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not unsafe


def test_a_strategy_that_is_not_checkpointable_saves_none_and_reads_none(tmp_path, monkeypatch, digits_class,
                                                                           caplog):
    cfg = config("tests.test_checkpoint:Opaque", train=SGD)
    path = tmp_path / "run.pt"
    interrupt_at(monkeypatch, Opaque, 2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, digits_class, progress=False, checkpoint=path)
    assert not path.exists()
    monkeypatch.undo()
    target = tmp_path / "pwned"
    torch.save({"strategy": Plant(target)}, path)  # not even looked at
    with caplog.at_level(logging.WARNING, logger="clbench"):
        result = run(cfg, digits_class, progress=False, checkpoint=path)
    assert result.status == "ok", result.error
    assert not target.exists() and not warnings_of(caplog) and not path.exists()


def test_the_avalanche_bridge_is_not_checkpointable():
    pytest.importorskip("avalanche", reason="needs the avalanche extra")
    from clbench.avalanche.baselines import AvalancheStrategy

    assert AvalancheStrategy.checkpointable is False


def test_state_no_checkpoint_can_hold_stops_checkpoints_with_one_warning(tmp_path, monkeypatch, digits_class,
                                                                         caplog):
    cfg = config("tests.test_checkpoint:HoldsAnObject", train=SGD)
    path = tmp_path / "run.pt"
    calls = interrupt_at(monkeypatch, HoldsAnObject, 3)
    with caplog.at_level(logging.WARNING, logger="clbench"), pytest.raises(KeyboardInterrupt):
        run(cfg, digits_class, progress=False, checkpoint=path)
    assert calls == [0, 1, 2, 3]
    assert not path.exists()
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "thing_" in warned[0].getMessage()


# -- every built-in strategy resumes bit-identically -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILTIN_MODULES))
def test_a_builtin_strategy_resumes_with_the_results_of_an_uninterrupted_run(name, tmp_path, monkeypatch, request,
                                                                            caplog):
    cls = get_strategy(name)
    scenario = "class" if "class" in cls.scenarios else "task"
    stream = request.getfixturevalue(f"digits_{scenario}")
    params, train = CASES[name]  # every registered built-in needs its case here
    _resumes_identically(config(name, scenario, params=params, train=train), cls, stream, tmp_path, monkeypatch,
                         caplog)


# the reference protocol's options, with one optimizer kept across experiences and drop_last
KEEP = dataclasses.replace(ADAM, optimizer_state="keep", drop_last=True, normalize="none")
OPTION_CASES = [
    ("joint", "class", {"mode": "offline"}), ("joint", "task", {"mode": "offline"}),
    ("ewc", "class", {"mode": "online", "decay_factor": 0.8, "gamma_in_penalty": True}),
    ("lwf", "class", {"weighting": "by_task", "units": "all"}),
    ("replay", "task", {"storage_policy": "fixed_per_class", "per_class": 10, "loss_weighting": "by_task"}),
]


@pytest.mark.parametrize(("name", "scenario", "params"), OPTION_CASES)
def test_the_reference_options_resume_with_the_results_of_an_uninterrupted_run(name, scenario, params, tmp_path,
                                                                              monkeypatch, request, caplog):
    cfg = config(name, scenario, params=get_strategy(name).from_params(params).get_params(), train=KEEP)
    _resumes_identically(cfg, get_strategy(name), request.getfixturevalue(f"digits_{scenario}"), tmp_path,
                         monkeypatch, caplog)


def _resumes_identically(cfg, cls, stream, tmp_path, monkeypatch, caplog):
    uninterrupted = run(cfg, stream, progress=False)
    assert uninterrupted.status == "ok", uninterrupted.error

    path = tmp_path / "run.pt"
    calls = interrupt_at(monkeypatch, cls, 2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, stream, progress=False, checkpoint=path)
    torch.load(path, weights_only=True)  # loads safely
    calls.clear()
    with caplog.at_level(logging.WARNING, logger="clbench"):
        resumed = run(cfg, stream, progress=False, checkpoint=path)
    assert resumed.status == "ok", resumed.error
    assert not warnings_of(caplog), [r.getMessage() for r in warnings_of(caplog)]
    assert calls == list(range(2, len(stream)))  # resumed at experience 2, not restarted
    assert resumed.evals == uninterrupted.evals
    # losses bit for bit; NaN where an experience trains nothing (offline joint)
    assert np.array_equal([c["train_loss"] for c in resumed.costs][1:],
                          [c["train_loss"] for c in uninterrupted.costs][1:], equal_nan=True)
    assert not path.exists()


@pytest.mark.parametrize("name", ["naive", "replay"])
def test_a_run_with_continual_evaluation_resumes_with_the_same_curves(name, tmp_path, monkeypatch, digits_class):
    """The curves so far travel in the checkpoint, and the global step and samples seen go on from them."""
    cfg = dataclasses.replace(config(name, "class", train=SGD), eval_period=3, eval_subset=40)
    uninterrupted = run(cfg, digits_class, progress=False)
    path = tmp_path / "run.pt"
    interrupt_at(monkeypatch, get_strategy(name), 2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, digits_class, progress=False, checkpoint=path)
    resumed = run(cfg, digits_class, progress=False, checkpoint=path)
    assert resumed.status == "ok", resumed.error
    assert resumed.curves == uninterrupted.curves and resumed.evals == uninterrupted.evals
    assert {r["train_exp"] for r in resumed.curves} == set(range(len(digits_class)))
