"""Finding strategies by name: built-ins (imported lazily), `package.module:Class`, and the entry-point group
`clbench.strategies` for strategies shipped in other packages."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clbench.errors import UsageError, unknown_choice

if TYPE_CHECKING:  # torch comes with the first strategy class, not with the names
    from clbench.strategies.base import Strategy

ENTRY_POINT_GROUP = "clbench.strategies"
AVALANCHE_PREFIX = "avalanche:"  # avalanche:EWC runs Avalanche's own EWC in clbench's runner

# name -> module; a module registers its class with @register when imported.
BUILTIN_MODULES = {
    "naive": "clbench.strategies.naive",
    "joint": "clbench.strategies.joint",
    "ewc": "clbench.strategies.ewc",
    "replay": "clbench.strategies.replay",
    "lwf": "clbench.strategies.lwf",
    "gem": "clbench.strategies.gem",
    "agem": "clbench.strategies.agem",
    "center-loss": "clbench.strategies.center_loss",
    "hnet": "clbench.strategies.hnet",
    "supsup": "clbench.strategies.supsup",
    "exssnet": "clbench.strategies.exssnet",
    "si": "clbench.strategies.si",
    "mas": "clbench.strategies.mas",
    "icarl": "clbench.strategies.icarl",
    "der": "clbench.strategies.der",
    "er-ace": "clbench.strategies.er_ace",
    "gdumb": "clbench.strategies.gdumb",
    "separate": "clbench.strategies.separate",
}

_REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str):
    """Class decorator: `@register("ewc")` makes the strategy available under that name."""

    def decorate(cls: type[Strategy]) -> type[Strategy]:
        from clbench.strategies.base import Strategy

        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"@register({name!r}) needs a Strategy subclass, got {cls!r}")
        if name in BUILTIN_MODULES and cls.__module__ != BUILTIN_MODULES[name]:  # the built-ins are never shadowed
            raise TypeError(f"@register({name!r}) on {cls.__module__}.{cls.__qualname__}: {name!r} is a built-in "
                            "strategy; register yours under another name")
        cls.name = name
        cls.hyperparameters()  # fail at import time if the constructor is not a valid hyperparameter list
        _REGISTRY[name] = cls
        return cls

    return decorate


def _plugin_entry_points():
    from importlib.metadata import entry_points  # a tenth of a second: not for --help and --version

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def strategy_names() -> list[str]:
    """Every name `get_strategy` accepts without a module path."""
    return sorted(set(BUILTIN_MODULES) | set(_REGISTRY) | set(_plugin_entry_points()))


def get_strategy(name: str) -> type[Strategy]:
    """Resolve a strategy name or `package.module:Class` to its class."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
        return _REGISTRY[name]
    if name.startswith(AVALANCHE_PREFIX):
        _REGISTRY[name] = _avalanche_strategy(name)
        return _REGISTRY[name]
    if ":" in name:
        return load_strategy(name)
    plugins = _plugin_entry_points()
    if name in plugins:
        cls = plugins[name].load()
        if not cls.__dict__.get("name"):  # a subclass of a built-in must not run under its parent's name
            cls.name = name
        return cls
    raise unknown_choice("strategy", name, strategy_names() + ["package.module:Class", "avalanche:ClassName"])


def strategy_ref(cls: type[Strategy]) -> str:
    """A reference any process can resolve back to `cls` with :func:`load_strategy`: "package.module:Class" (or the
    "avalanche:Class" name of a bridged Avalanche strategy). Worker processes and Ray tasks import the class from it,
    so a strategy registered in the user's own module runs wherever it runs in the driver."""
    name = cls.__dict__.get("name", "")
    if name.startswith(AVALANCHE_PREFIX):
        return name
    return f"{cls.__module__}:{cls.__qualname__}"


def import_root(ref: str) -> str | None:
    """The sys.path folder the module of `ref` was imported from here (None for clbench's own and installed
    modules' that every worker finds anyway, and for refs that are not module paths). Workers that do not share the
    driver's sys.path (Ray tasks) add it before loading the class."""
    module_name = ref.partition(":")[0]
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if ref.startswith(AVALANCHE_PREFIX) or ":" not in ref or not file or module_name.startswith("clbench."):
        return None
    root = Path(file).resolve().parent
    for _ in range(module_name.count(".") + (Path(file).name == "__init__.py")):
        root = root.parent
    return str(root)


def load_strategy(ref: str) -> type[Strategy]:
    """The class a :func:`strategy_ref` names (importing its module: only for runs the user asked for, never for
    reading a results folder)."""
    if ref.startswith(AVALANCHE_PREFIX) or ":" not in ref:
        return get_strategy(ref)
    module_name, _, qualname = ref.partition(":")
    try:
        cls = _import_user_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"cannot load strategy {ref!r}: {err}") from None
    from clbench.strategies.base import Strategy

    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise UsageError(f"strategy {ref!r} is not a clbench.strategies.Strategy subclass")
    if not cls.__dict__.get("name"):  # a subclass of a built-in must not run under its parent's name
        cls.name = display_name(cls)
    return cls


def _import_user_module(module_name: str):
    """Import a user's strategy module; one that is not on sys.path but sits in the current folder (mymodule.py, or
    a package mypkg/) is imported from there, as `python -m` would: `clbench bench mymodule:MyStrategy` works where
    the file was written, without PYTHONPATH. Worker processes inherit the extended sys.path (spawn passes it)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        top = module_name.partition(".")[0]
        here = Path.cwd()
        if err.name != top or not ((here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file()):
            raise
        if str(here) not in sys.path:
            sys.path.insert(0, str(here))
        return importlib.import_module(module_name)


def display_name(cls: type[Strategy]) -> str:
    """The name tables show for a class loaded by module path that sets no `name` of its own: its class name
    ("L2Anchor"; the module path is recorded apart, as strategy_ref). Names are case-sensitive, so a class `MAS`
    shows beside the built-in "mas"; a class named exactly like a built-in (`class naive`) shows as its module path,
    so that no table has two rows of one name."""
    return cls.__name__ if cls.__name__ not in BUILTIN_MODULES else strategy_ref(cls)


def check_distinct_names(classes: list[type[Strategy]]) -> None:
    """Reject two different classes that would show under one name in the same tables (UsageError naming both)."""
    seen: dict[str, type[Strategy]] = {}
    for cls in classes:
        other = seen.setdefault(cls.name, cls)
        if other is not cls:
            raise UsageError(f"strategies {strategy_ref(other)} and {strategy_ref(cls)} both show as {cls.name!r} in "
                             "the tables; give one a `name` class attribute of its own")


def describe_params(name: str, params: dict) -> str:
    """The hyperparameters that differ from the strategy's defaults as "name=value ..." ("defaults" if none), for
    labels and printouts of runs about to be made (it imports the strategy); tables keep every value, and commands
    that read a results folder take the label recorded in its journal instead."""
    if name in BUILTIN_MODULES and name not in _REGISTRY:  # read from the source: no torch for `clbench presets`
        from clbench.strategies.catalog import builtin_entry

        defaults = {n: h.default for n, h in builtin_entry(name).hyperparameters.items()}
        return _label(params, defaults)
    try:
        cls = get_strategy(name)
    except UsageError:  # a strategy from a module that is not importable here: show everything
        return _label(params)
    return params_label(cls, params)


def params_label(cls: type[Strategy], params: dict) -> str:
    return _label(params, {n: h.default for n, h in cls.hyperparameters().items()})


def _label(params: dict, defaults: dict | None = None) -> str:
    from clbench.metrics.tables import hyperparameter_label  # pandas: not for --help and --version

    return hyperparameter_label(params, defaults)


def make_strategy(name: str, params: dict | None = None) -> Strategy:
    return get_strategy(name).from_params(params or {})


def _avalanche_strategy(name: str) -> type[Strategy]:
    try:
        from clbench.avalanche.baselines import avalanche_strategy
    except ImportError as err:
        raise UsageError(
            f"strategy {name!r} needs avalanche-lib ({err}); install it with: pip install 'clbench[avalanche]'"
        ) from None
    return avalanche_strategy(name)
