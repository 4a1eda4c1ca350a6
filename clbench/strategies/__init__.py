"""Continual-learning strategies behind one small interface (see base.py); one file per method."""

from clbench.strategies.base import Hyperparameter, SGDStrategy, Strategy, TrainConfig
from clbench.strategies.registry import get_strategy, make_strategy, register, strategy_names

__all__ = [
    "Hyperparameter",
    "SGDStrategy",
    "Strategy",
    "TrainConfig",
    "get_strategy",
    "make_strategy",
    "register",
    "strategy_names",
]
