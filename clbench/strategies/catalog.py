"""The built-in strategies described from their source, without importing them (and torch with them).

`clbench list`, `clbench presets` and `--help` run in a fraction of a second because they read each built-in's
module as text: the class decorated with `@register("name")`, its `scenarios` and its constructor's annotated,
defaulted arguments (the hyperparameters, as `Strategy.hyperparameters` reads them from the imported class). The
constructor and `scenarios` are followed through base classes imported from other clbench modules. Only clbench's
own modules are read this way; a test checks that every entry equals what the imported class says.
"""

from __future__ import annotations

import ast
import collections.abc
import functools
import importlib.util
import typing
from dataclasses import dataclass
from pathlib import Path

from clbench.benchmarks.catalog import SCENARIOS
from clbench.strategies.hyperparameters import Hyperparameter

_BUILTIN_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}
_GENERIC = {"list": list, "tuple": tuple, "Sequence": collections.abc.Sequence, "dict": dict}


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    scenarios: frozenset[str]
    hyperparameters: dict[str, Hyperparameter]
    summary: str  # the first paragraph of the class docstring, on one line


def builtin_entry(name: str) -> StrategyEntry:
    """The description of a built-in strategy; KeyError for a name that is not one."""
    from clbench.strategies.registry import BUILTIN_MODULES

    return _entry(name, BUILTIN_MODULES[name])


@functools.cache
def _entry(name: str, module: str) -> StrategyEntry:
    tree, _ = _module_tree(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and name in _registered_names(node):
            scenarios = _class_attribute(module, node, "scenarios")
            return StrategyEntry(
                name=name,
                scenarios=_scenarios(scenarios),
                hyperparameters=_hyperparameters(module, node),
                summary=first_paragraph(ast.get_docstring(node)),
            )
    raise LookupError(f"{module} has no class registered as {name!r}")


def first_paragraph(docstring: str | None) -> str:
    return " ".join((docstring or "").strip().split("\n\n")[0].split())


@functools.cache
def _module_tree(module: str) -> tuple[ast.Module, Path]:
    path = Path(importlib.util.find_spec(module).origin)
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), path


def _registered_names(node: ast.ClassDef) -> list[str]:
    return [d.args[0].value for d in node.decorator_list
            if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register" and d.args
            and isinstance(d.args[0], ast.Constant)]


def _bases(module: str, node: ast.ClassDef):
    """(module, ClassDef) of each base class defined in clbench: in the same module or imported from another."""
    tree, _ = _module_tree(module)
    local = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    imported = {alias.asname or alias.name: (n.module, alias.name) for n in tree.body
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("clbench.") for alias in n.names}
    for base in node.bases:
        base_name = getattr(base, "id", None)
        if base_name in local:
            yield module, local[base_name]
        elif base_name in imported:
            other, cls_name = imported[base_name]
            other_tree, _ = _module_tree(other)
            yield from ((other, n) for n in other_tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)


def _inherited(module: str, node: ast.ClassDef, own):
    """`own(class node)` of the class, else of the first base (depth first, as the MRO reads single inheritance)
    that has one; None if none has."""
    found = own(node)
    if found is not None:
        return found
    for base_module, base in _bases(module, node):
        found = _inherited(base_module, base, own)
        if found is not None:
            return found
    return None


def _class_attribute(module: str, node: ast.ClassDef, attribute: str):
    """The value node of `attribute = ...` in the class or the first base that sets it."""

    def own(cls: ast.ClassDef):
        for statement in cls.body:
            if isinstance(statement, (ast.Assign, ast.AnnAssign)):
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                if any(getattr(t, "id", None) == attribute for t in targets) and statement.value is not None:
                    return statement.value
        return None

    return _inherited(module, node, own)


def _scenarios(value: ast.expr | None) -> frozenset[str]:
    """`frozenset({...})` of scenario names; Strategy's own `frozenset(SCENARIOS)` (or nothing) is every one."""
    if value is None or (isinstance(value, ast.Call) and isinstance(value.args[0], ast.Name)
                         and value.args[0].id == "SCENARIOS"):
        return frozenset(SCENARIOS)
    return frozenset(ast.literal_eval(value.args[0]))


def _constructor(module: str, node: ast.ClassDef) -> ast.FunctionDef | None:
    return _inherited(module, node, lambda cls: next(
        (s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None))


def _hyperparameters(module: str, node: ast.ClassDef) -> dict[str, Hyperparameter]:
    init = _constructor(module, node)
    if init is None:
        return {}
    args = init.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return {arg.arg: Hyperparameter(arg.arg, _annotation(arg.annotation), ast.literal_eval(default))
            for arg, default in pairs if arg.arg != "self"}


def _annotation(node: ast.expr):
    """The typing object an annotation's source spells (the forms hyperparameters use); its text otherwise."""
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.Name) and node.id in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return typing.Union[_annotation(node.left), _annotation(node.right)]  # noqa: UP007 - built from parts
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        if node.value.id == "Literal":
            return typing.Literal[ast.literal_eval(node.slice)]
        if node.value.id in _GENERIC:
            return _GENERIC[node.value.id][_annotation(node.slice)]
    return ast.unparse(node)
