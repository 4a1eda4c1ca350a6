"""Paper presets: named sweeps that follow a published protocol and carry the published numbers.

A preset is a TOML file in this package:

    name = "three-scenarios-split-mnist"
    title = "..."                 # the paper and the table
    citation = "..."
    provenance = "..."            # where the protocol and the numbers were read, and what differs here
    tolerance = 0.01              # |ours − published| within which a result counts as reproduced (see `compare`)

    [sweep]                       # an ordinary sweep file's content (benchmarks, scenarios, seeds, settings, ...)
    ...

    [[published]]                 # one published number
    scenario = "class"
    strategy = "ewc"
    params = { mode = "online" }  # optional: hyperparameters a configuration must have (a subset of its params)
    value = 0.1996                # fraction, like clbench's own metrics
    sem = 0.0007                  # optional: the paper's standard error
    source = "Table 4"

Running one (`clbench sweep preset:NAME --out DIR`) writes the published numbers to DIR/published.csv; from then on
the folder's leaderboard.csv carries, for each matching configuration, the published value, the difference and a
reproduced ✓/✗ column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources

import pandas as pd

from clbench import _toml
from clbench.errors import UsageError, unknown_choice

PREFIX = "preset:"
PUBLISHED_COLUMNS = ["preset", "benchmark", "published_on", "scenario", "strategy", "match", "metric", "published",
                     "published_sem", "tolerance", "source"]
REPRODUCED, NOT_REPRODUCED = "✓", "✗"


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    citation: str
    provenance: str
    tolerance: float
    sweep: dict
    published: list[dict] = field(default_factory=list)

    @property
    def n_runs(self) -> int:
        """The number of runs of the preset's sweep (the product clbench.runners.sweep builds from it), counted
        without importing a strategy: `clbench presets` lists presets without torch."""
        spec = self.sweep
        per_benchmark_and_seed = sum(
            len(entry.get("scenarios", spec["scenarios"])) * math.prod(len(v) for v in entry.get("grid", {}).values())
            for entry in spec["strategies"])
        return per_benchmark_and_seed * len(spec["benchmarks"]) * len(spec["seeds"])

    def published_table(self, benchmark_map: dict[str, str] | None = None) -> pd.DataFrame:
        """The published numbers as rows of published.csv. With a benchmark map (a paper's MNIST run on an offline
        dataset), rows keep the benchmark the number was published on in `published_on`, and `compare` marks
        them as not comparable instead of judging them."""
        benchmark_map = benchmark_map or {}
        rows = []
        for entry in self.published:
            on = entry.get("benchmark", self.sweep["benchmarks"][0])
            rows.append({
                "preset": self.name, "benchmark": benchmark_map.get(on, on), "published_on": on,
                "scenario": entry["scenario"], "strategy": entry["strategy"],
                "match": json.dumps(entry.get("params", {}), sort_keys=True), "metric": entry.get("metric", "acc"),
                "published": float(entry["value"]), "published_sem": float(entry.get("sem", math.nan)),
                "tolerance": float(entry.get("tolerance", self.tolerance)), "source": entry.get("source", ""),
            })
        return pd.DataFrame(rows, columns=PUBLISHED_COLUMNS)


PRESET_KEYS = {"name", "title", "citation", "provenance", "tolerance", "sweep", "published"}
PUBLISHED_KEYS = {"benchmark", "scenario", "strategy", "params", "metric", "value", "sem", "tolerance", "source"}


def _parse(text: str, where: str) -> Preset:
    spec = _toml.loads(text)
    unknown = set(spec) - PRESET_KEYS
    if unknown:
        raise UsageError(f"{where}: {unknown_choice('key', sorted(unknown)[0], PRESET_KEYS)}")
    for entry in spec.get("published", []):
        unknown = set(entry) - PUBLISHED_KEYS
        if unknown:
            error = unknown_choice("key", sorted(unknown)[0], PUBLISHED_KEYS, where="in [[published]]")
            raise UsageError(f"{where}: {error}")
        if not 0 <= entry["value"] <= 1:
            raise UsageError(f"{where}: published value {entry['value']!r} is not a fraction in [0, 1]")
    return Preset(name=spec["name"], title=spec["title"], citation=spec["citation"], provenance=spec["provenance"],
                  tolerance=float(spec.get("tolerance", 0.01)), sweep=spec["sweep"],
                  published=list(spec.get("published", [])))


def list_presets() -> list[Preset]:
    files = sorted(f for f in resources.files(__name__).iterdir() if f.name.endswith(".toml"))
    return [_parse(f.read_text(encoding="utf-8"), f.name) for f in files]


def get_preset(name: str) -> Preset:
    name = name.removeprefix(PREFIX)
    presets = {p.name: p for p in list_presets()}
    if name not in presets:
        raise unknown_choice("preset", name, presets)
    return presets[name]


def compare(board: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with published, published_sem, diff, reproduced and source columns for the configurations a
    published number matches (same benchmark, scenario and strategy, and the number's params among theirs); the
    leaderboard as it is when there are no published numbers (a folder no preset ran in).

    Reproduced (✓) when |diff| ≤ max(tolerance, 2·√(sem_ours² + sem_published²)), a missing SEM counting as 0;
    "not comparable" when the number was published on another benchmark than the one run.
    """
    if published.empty:
        return board
    out = board.copy()
    for column in ("published", "published_sem", "diff"):
        out[column] = math.nan
    out["reproduced"], out["source"] = "", ""
    required = published.assign(match=[json.loads(m) for m in published["match"]])
    for i, row in board.iterrows():
        params = json.loads(row["params"]) if isinstance(row["params"], str) else {}
        candidates = required[(required["benchmark"] == row["benchmark"]) & (required["scenario"] == row["scenario"])
                              & (required["strategy"] == row["strategy"])]
        matches = [p for p in candidates.itertuples(index=False)
                   if all(params.get(k) == v for k, v in p.match.items())]
        if not matches:
            continue
        best = max(matches, key=lambda p: len(p.match))  # the most specific number
        ours, ours_sem = row.get(f"{best.metric}_mean", math.nan), row.get(f"{best.metric}_sem", math.nan)
        diff = ours - best.published
        out.loc[i, ["published", "published_sem", "diff"]] = [best.published, best.published_sem, diff]
        out.loc[i, "source"] = best.source if isinstance(best.source, str) else ""
        if best.published_on != row["benchmark"]:
            out.loc[i, "reproduced"] = f"not comparable (published on {best.published_on})"
        elif not math.isnan(diff):
            spread = 2 * math.hypot(_zero_if_nan(ours_sem), _zero_if_nan(best.published_sem))
            out.loc[i, "reproduced"] = REPRODUCED if abs(diff) <= max(best.tolerance, spread) else NOT_REPRODUCED
    return out


def _zero_if_nan(value) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)
