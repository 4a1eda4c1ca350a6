"""A strategy's hyperparameters: its constructor's annotated, defaulted keyword arguments, and the checks that turn
a user's value into one of the annotated type. Free of torch, so that `clbench list` describes strategies without it."""

from __future__ import annotations

import collections.abc
import types
import typing
from dataclasses import dataclass
from typing import Literal

from clbench.errors import UsageError


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: object  # an annotation: int, float, bool, str, Literal[...], or Optional of those
    default: object

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    def check(self, value, owner: str):
        """Return `value` converted to this hyperparameter's type, or raise UsageError naming what is valid."""
        ok, converted = coerce(self.type, value)
        if not ok:
            raise UsageError(
                f"hyperparameter {self.name}={value!r} of strategy {owner!r} must be {self.type_name}"
            )
        return converted


def type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def coerce(annotation, value):
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return (value in typing.get_args(annotation)), value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, converted = coerce(option, value)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    if origin in (list, tuple, collections.abc.Sequence):  # e.g. Sequence[float]: one value per experience
        args = typing.get_args(annotation)
        ok = isinstance(value, (list, tuple)) and all(coerce(args[0], v)[0] for v in value) if args else True
        return ok, value
    if origin is not None:
        return isinstance(value, origin), value
    if not isinstance(annotation, type):  # an annotation clbench cannot check (a forward reference, a TypeVar)
        return True, value
    return isinstance(value, annotation), value
