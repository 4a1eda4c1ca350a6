"""Run checkpoints that cannot execute code when read.

A results folder is shared between researchers, so `<out>/checkpoints/<run_id>.pt` is untrusted input: reading it must
never unpickle an object. A checkpoint is therefore one file written by `torch.save` of a flat dict that holds only
tensors and one string, and it is read with `torch.load(..., weights_only=True)`, whose unpickler rebuilds tensors and
plain containers and refuses everything else:

    {"meta": "<JSON text>", "t0": tensor, "t1": tensor, ...}

The JSON holds everything that is not a tensor: the format version, the clbench version, the run id, the next
experience to train, the evaluation and cost rows so far, the run's duration, Python's and NumPy's global RNG states,
and the strategy's state (`Strategy.checkpoint_state()`: its learned attributes encoded as JSON values and tagged
dicts). It is Python's JSON, with NaN for the loss of the row before training. Each tensor of that structure (the
strategy's tensors, torch's global RNG state, the data-order generator's state) is replaced in the JSON by a reference
{"$tensor": "t<i>", "device": ..., "grad": ...} to its entry in the dict.
One file, written to a temporary name and moved into place with `os.replace`, keeps the JSON and the tensors
consistent under a kill at any moment (a reader sees the previous checkpoint or the new one, never half of one).

Reading checks, in order: the file loads with weights_only=True as such a dict, the JSON parses, the format version and
the clbench version are this code's, the run id is the run's, every reference resolves and every field has its type.
Any failure, including one while writing the state into the freshly built strategy, is reported as one warning line
(logger `clbench.runners.checkpoint`) naming the file and the reason, and the run starts from the beginning.

Resuming builds the strategy and model exactly as a fresh run does and then loads the saved state into them in place
(`Strategy.load_checkpoint_state`). A strategy with `checkpointable = False` (the Avalanche bridge, which wraps a whole
Avalanche object) saves no checkpoint: after a kill its run restarts from the beginning, and a file found under its
name is never read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import clbench
from clbench.strategies.base import NotCheckpointable

FORMAT_VERSION = 1
META = "meta"
_TENSOR = "$tensor"

logger = logging.getLogger(__name__)


class InvalidCheckpoint(Exception):
    """A checkpoint file that is not a readable checkpoint of this run, in this format."""


@dataclass
class SavedRun:
    """What a checkpoint restores: where the run stopped, its rows so far, and the states to load."""

    next_experience: int
    duration_s: float
    evals: list[dict]
    costs: list[dict]
    curves: list[dict]
    strategy_state: dict
    order_rng: torch.Tensor
    global_rng: dict

    def restore(self, strategy, order_generator: torch.Generator) -> None:
        """Load the saved states into a freshly built strategy and order generator, then into the global generators
        (last, and rolled back on failure, so that a checkpoint that fails to load leaves them untouched)."""
        strategy.restore_checkpoint(self.strategy_state)
        order_generator.set_state(self.order_rng)
        _set_global_rng(self.global_rng)


def save_checkpoint(path: Path, *, run_id: str, strategy, order_generator: torch.Generator, next_experience: int,
                    evals: list[dict], costs: list[dict], duration_s: float, curves: list[dict] = ()) -> None:
    """Write the run's state atomically: a kill while writing leaves the previous checkpoint intact.

    Raises NotCheckpointable (a TypeError) when the strategy's state is not tensors and plain values.
    """
    state = {
        "format": FORMAT_VERSION,
        "clbench": clbench.__version__,
        "run_id": run_id,
        "next_experience": next_experience,
        "duration_s": duration_s,
        "evals": evals,
        "costs": costs,
        "curves": list(curves),
        "rng": {**_global_rng(), "order": order_generator.get_state()},
        "strategy": strategy.checkpoint_state(),
    }
    tensors: dict[str, torch.Tensor] = {}
    meta = json.dumps(_split(state, tensors))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({META: meta, **tensors}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, *, run_id: str, n_experiences: int) -> SavedRun | None:
    """The saved state of run `run_id` at `path`; None when there is no file, or (with one warning) when the file is
    not a valid checkpoint of this run."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return _read(path, run_id, n_experiences)
    except Exception as err:  # whatever is wrong with the file, the run goes on from the beginning
        warn_ignored(path, err)
        return None


def warn_ignored(path: Path, err: BaseException) -> None:
    reason = str(err) if isinstance(err, InvalidCheckpoint) else f"{type(err).__name__}: {err}"
    reason = " ".join(reason.split())[:500]  # one line
    logger.warning("ignoring checkpoint %s: %s; the run starts from the beginning", path, reason)


# -- reading ---------------------------------------------------------------------------------------------------------
def _read(path: Path, run_id: str, n_experiences: int) -> SavedRun:
    try:
        with warnings.catch_warnings():  # torch's own warnings about the file: the one line below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InvalidCheckpoint(f"it does not load as tensors only (weights_only=True): {_load_error(err)}") from err
    if not isinstance(payload, dict) or not isinstance(payload.get(META), str):
        raise InvalidCheckpoint(f"it is not a dict with a {META!r} string")
    tensors = {k: v for k, v in payload.items() if k != META}
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise InvalidCheckpoint("its entries besides the JSON text are not all tensors")
    try:
        meta = json.loads(payload[META])
    except ValueError as err:
        raise InvalidCheckpoint(f"its JSON text does not parse ({err})") from err
    if not isinstance(meta, dict):
        raise InvalidCheckpoint("its JSON text is not an object")
    if meta.get("format") != FORMAT_VERSION:
        raise InvalidCheckpoint(f"format version {meta.get('format')!r}, this clbench reads {FORMAT_VERSION}")
    if meta.get("clbench") != clbench.__version__:
        raise InvalidCheckpoint(f"written by clbench {meta.get('clbench')!r}, this is clbench {clbench.__version__}")
    if meta.get("run_id") != run_id:
        raise InvalidCheckpoint(f"it belongs to run {meta.get('run_id')!r}, not to run {run_id}")
    used: set[str] = set()
    state = _join(meta, tensors, used)
    if used != set(tensors):
        raise InvalidCheckpoint(f"tensors {sorted(set(tensors) - used)} are not referenced")

    next_experience = _field(state, "next_experience", int)
    if not 1 <= next_experience < n_experiences:
        raise InvalidCheckpoint(f"next experience {next_experience} is outside 1..{n_experiences - 1}")
    duration_s = float(_field(state, "duration_s", (int, float)))
    if not math.isfinite(duration_s) or duration_s < 0:
        raise InvalidCheckpoint(f"duration {duration_s} is not a finite number of seconds")
    rows = {}
    for name in ("evals", "costs", "curves"):
        rows[name] = _field(state, name, list)
        if not all(isinstance(r, dict) and all(isinstance(k, str) for k in r) for r in rows[name]):
            raise InvalidCheckpoint(f"{name} are not all rows of named values")
    rng = _field(state, "rng", dict)
    for name in ("torch", "order"):
        if not isinstance(rng.get(name), torch.Tensor) or rng[name].dtype != torch.uint8:
            raise InvalidCheckpoint(f"the {name} generator state is not a byte tensor")
    return SavedRun(
        next_experience=next_experience,
        duration_s=duration_s,
        evals=rows["evals"],
        costs=rows["costs"],
        curves=rows["curves"],
        strategy_state=_field(state, "strategy", dict),
        order_rng=rng["order"],
        global_rng={"python": _python_rng(rng.get("python")), "numpy": _numpy_rng(rng.get("numpy")),
                    "torch": rng["torch"]},
    )


def _load_error(err: Exception) -> str:
    """The reason in torch's weights_only error, without its advice to load the file unsafely (its paragraphs are the
    advice, the reason, e.g. "unsupported GLOBAL posix.system", and a link to the documentation)."""
    paragraphs = [" ".join(p.split()) for p in str(err).split("\n\n") if p.strip()]
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
    reasons = [p.removeprefix("WeightsUnpickler error: ") for p in paragraphs if not p.startswith(advice)]
    reasons = [p.split(". Please use")[0] for p in reasons]
    return "; ".join(reasons) or f"{type(err).__name__} (not a file of tensors and plain values)"


def _field(state: dict, name: str, kind):
    value = state.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise InvalidCheckpoint(f"field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _python_rng(value) -> tuple:
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[1], list)
            and all(isinstance(v, int) for v in value[1])):
        raise InvalidCheckpoint("the python generator state is malformed")
    return value[0], tuple(value[1]), value[2]


def _numpy_rng(value) -> tuple:
    if not (isinstance(value, list) and len(value) == 5 and isinstance(value[1], list)
            and all(isinstance(v, int) for v in value[1])):
        raise InvalidCheckpoint("the numpy generator state is malformed")
    return value[0], np.array(value[1], dtype=np.uint32), value[2], value[3], value[4]


# -- the structure: tensors out of the JSON and back in ---------------------------------------------------------------
def _split(value, tensors: dict[str, torch.Tensor]):
    """`value` with every tensor moved into `tensors` and replaced by a reference to it."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach()
        return {_TENSOR: key, "device": str(value.device), "grad": value.requires_grad}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotCheckpointable("checkpoint dicts need string keys")
        return {k: _split(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise NotCheckpointable(f"a checkpoint cannot store a {type(value).__name__}")


def _join(value, tensors: dict[str, torch.Tensor], used: set[str]):
    if isinstance(value, dict):
        if _TENSOR in value:
            key, device, grad = value.get(_TENSOR), value.get("device"), value.get("grad")
            if set(value) != {_TENSOR, "device", "grad"} or key not in tensors or key in used \
                    or not isinstance(device, str) or not isinstance(grad, bool):
                raise InvalidCheckpoint(f"malformed tensor reference {value!r}")
            used.add(key)
            tensor = tensors[key].to(torch.device(device))
            return tensor.requires_grad_(True) if grad else tensor
        return {k: _join(v, tensors, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors, used) for v in value]
    return value


# -- the global generators some methods draw from (dropout, Avalanche's loaders and buffers) --------------------------
def _global_rng() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state()}


def _set_global_rng(state: dict) -> None:
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
    except Exception:
        random.setstate(before[0])
        np.random.set_state(before[1])
        torch.set_rng_state(before[2])
        raise
