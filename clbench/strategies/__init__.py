"""Continual-learning strategies behind one small interface (see base.py); one file per method.

The names below are imported on first use (PEP 562), so that `clbench.strategies.catalog` and the registry's names
can describe strategies without importing torch."""

import importlib

_EXPORTS = {
    "Hyperparameter": "clbench.strategies.hyperparameters",
    "SGDStrategy": "clbench.strategies.base",
    "Strategy": "clbench.strategies.base",
    "TrainConfig": "clbench.strategies.base",
    "get_strategy": "clbench.strategies.registry",
    "make_strategy": "clbench.strategies.registry",
    "register": "clbench.strategies.registry",
    "strategy_names": "clbench.strategies.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
