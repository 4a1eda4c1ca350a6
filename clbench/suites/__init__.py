"""Benchmark suites for `clbench bench`: a fixed protocol to compare a new strategy against tuned baselines.

A suite is a TOML file in this package:

    name = "digits"
    description = "..."
    seeds = [0, 1, 2]             # the final runs' seeds
    [[cells]]                     # the benchmark × scenarios it covers
    benchmark = "split-digits"
    scenarios = ["class", "task"]
    [settings]                    # a sweep's settings (the benchmarks' training defaults fill the rest)
    [tune]                        # a sweep's [tune] table: the protocol and budget every method is tuned with
    [[strategies]]                # the baselines, with the grids they are tuned over (a sweep's entries)

Each cell becomes one tuned sweep (clbench.runners.sweep) of the baselines, and one of the new strategies, tuned with
the same [tune] table (or, `--no-tune`, run with the values given).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clbench import _toml
from clbench.errors import UsageError, unknown_choice

SUITE_KEYS = {"name", "description", "seeds", "cells", "settings", "tune", "strategies"}


@dataclass
class Suite:
    name: str
    description: str
    spec: dict

    @property
    def baselines(self) -> list[str]:
        return [entry["name"] for entry in self.spec["strategies"]]

    def sweep_specs(self, entries: list[dict], *, tune: bool = True) -> list[dict]:
        """One sweep spec per cell, for `entries` ([[strategies]] tables): each entry keeps to the cell's scenarios
        its strategy supports (and is left out of a cell with none); `tune=False` drops the [tune] table."""
        from clbench.runners.sweep import resolve_strategy

        specs = []
        for cell in self.spec["cells"]:
            kept = []
            for entry in entries:
                supported = [s for s in cell["scenarios"] if s in resolve_strategy(entry["name"]).scenarios]
                if supported:
                    kept.append({**entry, "scenarios": supported})
            if not kept:
                continue
            spec = {"seeds": list(self.spec["seeds"]), "benchmarks": [cell["benchmark"]],
                    "scenarios": list(cell["scenarios"]), "settings": dict(self.spec.get("settings", {})),
                    "strategies": kept}
            if tune and "tune" in self.spec:
                spec["tune"] = dict(self.spec["tune"])
            specs.append(spec)
        return specs


def suite_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml").replace("_", "-") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".toml"))


def load_suite(name: str) -> Suite:
    """A shipped suite by name, or a suite file of your own (a path ending in .toml, in the same format)."""
    if name.endswith(".toml"):
        from clbench.runners.sweep import read_sweep_file

        spec, where = read_sweep_file(Path(name)), f"suite file {name!r}"
    elif name in suite_names():
        text = resources.files(__package__).joinpath(f"{name.replace('-', '_')}.toml").read_text(encoding="utf-8")
        spec, where = _toml.loads(text), f"suite {name!r}"
    else:
        raise unknown_choice("suite (--suite)", name, [*suite_names(), "FILE.toml"])
    unknown = set(spec) - SUITE_KEYS
    if unknown:
        raise UsageError(f"{where}: {unknown_choice('key', sorted(unknown)[0], SUITE_KEYS)}")
    for key in ("seeds", "cells", "strategies"):
        if not spec.get(key):
            raise UsageError(f"{where}: needs {key!r}")
    for cell in spec["cells"]:
        if not isinstance(cell, dict) or not isinstance(cell.get("benchmark"), str) or not cell.get("scenarios"):
            raise UsageError(f"{where}: every [[cells]] table needs a benchmark and its scenarios, got {cell!r}")
    return Suite(str(spec.get("name", Path(name).stem)), str(spec.get("description", "")), spec)
