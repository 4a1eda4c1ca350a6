"""Paired comparisons with a reference configuration and average ranks over benchmarks (`clbench compare`).

Pure functions of a summary table (one row per finished run: run_id, config_id, benchmark, scenario, strategy, label,
seed and the metric; optionally stream_seed and train_config, else taken from the runs table): no torch, no I/O.
docs/METRICS.md ("Comparing methods") gives the formulas.

- **Paired differences.** In every (benchmark, scenario), every configuration is compared with the reference
  configuration on the runs they share a (seed, stream_seed) for: same stream, same initial weights, so the
  difference d = other − reference of a pair removes what the seed does to both. Runs of one side without a partner
  are left out and counted (``n_unpaired``).
- **Test.** ``p_value`` is the two-sided paired t-test (Student 1908; ``scipy.stats.ttest_rel``) and the 95%
  confidence interval of the mean difference is the t-interval (``scipy.stats.t.interval``) on the same differences.
  The Wilcoxon signed-rank test (Wilcoxon 1945; ``scipy.stats.wilcoxon``) is reported beside it as ``p_wilcoxon``
  where it can reach p < 0.05 at all (at least 6 non-zero differences: its smallest two-sided p is 2 / 2^n).
- **Multiple comparisons.** ``p_holm`` is Holm's (1979) step-down correction over every comparison of the table
  (:func:`holm`), which controls the family-wise error rate without assuming independence.
- **Average ranks.** Demšar (2006), "Statistical comparisons of classifiers over multiple data sets", JMLR 7:
  configurations are ranked within each (benchmark, scenario) by their mean metric (1 = best, ties get the average of
  the ranks they span; ``scipy.stats.rankdata``) and the ranks are averaged over the datasets (:func:`average_ranks`).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clbench.errors import UsageError, unknown_choice
from clbench.metrics import tables

__all__ = [
    "COMPARE_COLUMNS",
    "EXTRA_COLUMNS",
    "RANK_COLUMNS",
    "Comparison",
    "average_ranks",
    "compare",
    "format_comparison",
    "holm",
    "metric_columns",
    "paired_stats",
    "parse_reference",
    "ranks_path",
    "with_run_info",
]

COMPARE_COLUMNS = [
    "benchmark", "scenario", "strategy", "label", "reference", "metric", "n_pairs", "diff_mean", "ci_low", "ci_high",
    "p_value", "p_holm", "test",
]  # fmt: skip
#: after COMPARE_COLUMNS: mean / reference_mean are over the paired runs (their difference is diff_mean);
#: settings_diff names the training settings in which the two configurations differ ("" when none);
#: avg_rank / n_datasets are the configuration's average rank (average_ranks), NaN when it is not ranked.
EXTRA_COLUMNS = [
    "n_unpaired", "p_wilcoxon", "significant", "mean", "reference_mean", "reference_label", "settings_diff",
    "avg_rank", "n_datasets", "config_id", "reference_config_id",
]  # fmt: skip
RANK_COLUMNS = ["strategy", "label", "avg_rank", "n_datasets", "missing"]
SUMMARY_KEYS = ["run_id", "config_id", "benchmark", "scenario", "strategy", "label", "seed"]
DATASET = ["benchmark", "scenario"]

CONFIDENCE = 0.95
ALPHA = 0.05  # `significant`: p_holm below it
#: The Wilcoxon signed-rank test is reported from this many non-zero differences on: below it, its smallest possible
#: two-sided p (2 / 2^n, all differences of one sign) is at least 0.0625, so it could never reject at 0.05.
MIN_WILCOXON = 6
#: Recorded settings that do not change a result: left out when two configurations' settings are compared.
IGNORED_SETTINGS = frozenset({"eval_batch_size"})
#: Plain settings columns a summary may carry instead of the runs table's train_config JSON.
SETTINGS_COLUMNS = [c for c in tables.SETTINGS_COLUMNS if c != "stream_seed"]  # stream_seed pairs runs instead


@dataclass
class Comparison:
    """What :func:`compare` returns: the comparison table, the average ranks and the datasets left out."""

    table: pd.DataFrame
    ranks: pd.DataFrame
    reference: str  # the reference as given
    metric: str
    skipped: list[str] = field(default_factory=list)  # "benchmark/scenario" without a reference configuration
    datasets: list[str] = field(default_factory=list)  # the datasets of the comparisons (those with a reference)
    rank_datasets: list[str] = field(default_factory=list)  # those of them where the metric is defined somewhere


# ---------------------------------------------------------------------------------------------------------------------
# the statistics


#: Paired differences closer than this are one difference: far below any metric's resolution (one sample in 10^9),
#: far above float rounding (~1e-16).
SAME_DIFFERENCE_ATOL = 1e-12


def paired_stats(other, reference, confidence: float = CONFIDENCE) -> dict:
    """The paired statistics of two equally long arrays whose i-th entries are a pair (the same seed).

    With d = other − reference and n pairs: ``diff_mean`` = mean(d); ``ci_low``, ``ci_high`` = the t-interval
    d̄ ± t(1 − α/2; n − 1) · s/√n (``scipy.stats.t.interval``, s the standard deviation with ddof = 1); ``p_value`` =
    the two-sided paired t-test's (``scipy.stats.ttest_rel``); ``p_wilcoxon`` = the two-sided Wilcoxon signed-rank
    test's (``scipy.stats.wilcoxon``, zero differences dropped) where at least MIN_WILCOXON differences are non-zero;
    ``test`` = "paired t", or why there is no test:

    - "none (n_pairs < 2)": one pair (or none) has no spread to estimate: CI and p are NaN (diff_mean is NaN with
      no pair, the single difference with one);
    - "none (zero variance)": every difference is the same (identical values included), so s = 0 and the t statistic
      d̄ / (s/√n) is 0/0 or ±∞: no t-distribution describes it, and CI and p are NaN. diff_mean is that difference.
      "The same" allows float rounding (SAME_DIFFERENCE_ATOL): accuracies 0.1998 and 0.1999 of three seeds differ by
      −0.0001 up to 1e-17, and a t-test on that rounding noise would call one test sample in 10 000 significant.
    """
    other = np.asarray(other, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if other.shape != reference.shape or other.ndim != 1:
        raise ValueError(f"paired arrays must be 1-D and equally long, got {other.shape} and {reference.shape}")
    d = other - reference
    n = len(d)
    out = {"n_pairs": n, "diff_mean": float(d.mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "p_value": math.nan, "p_wilcoxon": math.nan}
    if n < 2:
        return out | {"test": "none (n_pairs < 2)"}
    nonzero = int(np.count_nonzero(d))
    if nonzero >= MIN_WILCOXON:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["p_wilcoxon"] = float(stats.wilcoxon(other, reference).pvalue)
    if np.ptp(d) <= SAME_DIFFERENCE_ATOL:
        return out | {"test": "none (zero variance)"}
    sem = float(d.std(ddof=1)) / math.sqrt(n)
    low, high = stats.t.interval(confidence, n - 1, loc=out["diff_mean"], scale=sem)
    with warnings.catch_warnings():  # nearly equal differences: scipy warns about precision, the value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_rel(other, reference).pvalue
    return out | {"ci_low": float(low), "ci_high": float(high), "p_value": float(p), "test": "paired t"}


def holm(p_values) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input's order; NaN entries stay NaN and do not count.

    With the m defined p-values sorted p(1) ≤ ... ≤ p(m): p̃(i) = max over j ≤ i of min(1, (m − j + 1) · p(j)).
    Rejecting where p̃ < α controls the family-wise error rate at α under any dependence between the tests.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    if m == 0:
        return out
    order = defined[np.argsort(p[defined], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def average_ranks(summary: pd.DataFrame, metric: str = "acc", datasets: list[tuple[str, str]] | None = None,
                  ) -> pd.DataFrame:
    """Each configuration's average rank over datasets (Demšar 2006), RANK_COLUMNS, best first.

    A dataset is one (benchmark, scenario) (only those in ``datasets`` when given); a configuration across datasets
    is its (strategy, label). In each dataset the configurations are ranked by their mean metric over seeds (1 = the
    best: the highest, or the lowest for tables.LOWER_IS_BETTER; ties get the average of the ranks they span,
    ``scipy.stats.rankdata``), and avg_rank is the mean of its ranks over the datasets. Demšar's protocol needs every
    configuration in every dataset (a complete block design): only configurations with a defined mean in every
    dataset, and one configuration of that (strategy, label) there, are ranked, and the ranks are taken among them
    alone. The others get avg_rank NaN, n_datasets = the datasets they are in, and ``missing`` names the datasets
    where they are absent (or held by several configurations of that strategy and label, e.g. different epochs).
    A dataset where the metric is undefined (NaN) for every configuration is left out.
    """
    _check_summary(summary, metric)
    means = (summary.groupby([*DATASET, "strategy", "label", "config_id"], sort=True, dropna=False)[metric]
             .mean().dropna().reset_index())
    if datasets is None:
        datasets = sorted(set(zip(means["benchmark"], means["scenario"], strict=True)))
    datasets = [tuple(d) for d in datasets]
    means = means[[(b, s) in set(datasets) for b, s in zip(means["benchmark"], means["scenario"], strict=True)]]
    present = set(zip(means["benchmark"], means["scenario"], strict=True))
    datasets = [ds for ds in datasets if ds in present]  # the metric undefined for all there (FWT in class-IL)
    counts = means.groupby([*DATASET, "strategy", "label"]).size()
    keys = sorted(set(zip(means["strategy"], means["label"], strict=True)))
    ranked = [k for k in keys if all(counts.get((*ds, *k), 0) == 1 for ds in datasets)]
    ranks = {k: [] for k in ranked}
    sign = 1.0 if metric in tables.LOWER_IS_BETTER else -1.0
    for ds in datasets if ranked else []:
        here = means[(means["benchmark"] == ds[0]) & (means["scenario"] == ds[1])].set_index(["strategy", "label"])
        values = np.array([here.loc[k, metric] for k in ranked], dtype=float)
        for k, r in zip(ranked, stats.rankdata(sign * values, method="average"), strict=True):
            ranks[k].append(float(r))
    rows = []
    for k in keys:
        if k in ranks:
            rows.append({"strategy": k[0], "label": k[1], "avg_rank": float(np.mean(ranks[k])),
                         "n_datasets": len(datasets), "missing": ""})
            continue
        gaps = [f"{b}/{s}" + ("" if counts.get((b, s, *k), 0) == 0 else f" ({counts[(b, s, *k)]} configurations)")
                for b, s in datasets if counts.get((b, s, *k), 0) != 1]
        rows.append({"strategy": k[0], "label": k[1], "avg_rank": math.nan,
                     "n_datasets": sum(counts.get((*ds, *k), 0) == 1 for ds in datasets), "missing": "; ".join(gaps)})
    out = pd.DataFrame(rows, columns=RANK_COLUMNS)
    out["n_datasets"] = out["n_datasets"].astype(int)
    return out.sort_values(["avg_rank", "strategy", "label"], na_position="last", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------------
# the table


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """The metrics a summary can be compared on: its numeric columns among the leaderboard's metrics."""
    return [m for m in tables.metrics_of(summary)
            if m in summary.columns and pd.api.types.is_numeric_dtype(summary[m])]


def _check_summary(summary: pd.DataFrame, metric: str) -> None:
    missing = [c for c in SUMMARY_KEYS if c not in summary.columns]
    if missing:
        raise UsageError(f"the summary table lacks column(s) {missing}; expected {SUMMARY_KEYS} and the metric")
    valid = metric_columns(summary)
    if metric not in valid:
        raise unknown_choice("metric", metric, valid)


def with_run_info(summary: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """The summary with ``stream_seed`` and ``train_config`` from the runs table (by run_id) where it lacks them."""
    wanted = [c for c in ("stream_seed", "train_config") if c not in summary.columns]
    if runs is None or not wanted:
        return summary
    have = [c for c in wanted if c in runs.columns]
    if not have:
        return summary
    extra = runs.drop_duplicates("run_id", keep="last")[["run_id", *have]]
    return summary.merge(extra, on="run_id", how="left")


def parse_reference(text: str, strategies) -> tuple[str, str | None]:
    """Split ``--reference`` into (strategy, label or None): ``STRATEGY`` or ``STRATEGY:LABEL``.

    A strategy name may hold a colon itself (``avalanche:EWC``): the whole text is a strategy name if it is one of
    ``strategies``, else the longest prefix before a colon that is one; the rest is the label."""
    strategies = sorted(set(strategies))
    if text in strategies:
        return text, None
    prefixes = [text[:i] for i, ch in enumerate(text) if ch == ":" and text[:i] in strategies]
    if not prefixes:
        raise unknown_choice("reference strategy", text, strategies)  # those of the folders
    name = max(prefixes, key=len)
    label = text[len(name) + 1:]
    if not label.strip():
        raise UsageError(f"--reference {text!r}: give a label after {name + ':'!r} (e.g. {name}:defaults)")
    return name, label


def _same_label(a, b) -> bool:
    """Labels are "name=value" words: equal whatever their order."""
    return sorted(str(a).split()) == sorted(str(b).split())


def _settings_of(summary: pd.DataFrame) -> dict[str, dict]:
    """config_id → its training settings (the runs' train_config JSON, or the plain settings columns), without those
    that do not change results; {} where none are recorded."""
    out: dict[str, dict] = {}
    plain = [c for c in SETTINGS_COLUMNS if c in summary.columns]
    first = summary.drop_duplicates("config_id")
    for row in first.to_dict("records"):
        settings: dict = {}
        text = row.get("train_config")
        if isinstance(text, str) and text:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            # a run recorded before a later setting existed trained with its default
            later = tables.SETTINGS_RECORDED_LATER
            settings = {**later, **parsed} if isinstance(parsed, dict) else {"train_config": text}
        elif plain:
            settings = {c: row[c] for c in plain}
        settings = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in settings.items()
                    if k not in IGNORED_SETTINGS}
        out[row["config_id"]] = settings
    return out


def _settings_diff(other: dict, ref: dict) -> str:
    keys = sorted(set(other) | set(ref))
    return "; ".join(f"{k}={other.get(k)} (reference {ref.get(k)})" for k in keys if other.get(k) != ref.get(k))


def _settings_text(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "(no settings recorded)"


def _pick_reference(other: dict, candidates: list[dict], settings: dict, dataset: str, reference: str) -> dict:
    """The reference of one configuration among the candidates of its dataset (the rule of :func:`compare`)."""
    if len(candidates) == 1:
        return candidates[0]
    listing = "; ".join(f"{c['strategy']}:{c['label']} [{_settings_text(settings[c['config_id']])}] "
                        f"(config {c['config_id']})" for c in candidates)
    keys = [json.dumps(settings[c["config_id"]], sort_keys=True, default=str) for c in candidates]
    if len(set(keys)) < len(keys):
        raise UsageError(f"--reference {reference!r} matches {len(candidates)} configurations in {dataset}: "
                         f"{listing}; name one with STRATEGY:LABEL")
    same = [c for c, k in zip(candidates, keys, strict=True)
            if k == json.dumps(settings[other["config_id"]], sort_keys=True, default=str)]
    if not same:
        raise UsageError(f"--reference {reference!r} matches {len(candidates)} configurations in {dataset}, trained "
                         f"with different settings, and none has the settings of {other['strategy']}:"
                         f"{other['label']} (config {other['config_id']}): {listing}; name one with STRATEGY:LABEL "
                         "or compare folders of one setting")
    return same[0]


def _values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """One configuration's metric by (seed, stream_seed), runs with an undefined (NaN) metric left out."""
    runs = runs.dropna(subset=[metric]).drop_duplicates(["seed", "stream_seed"])
    return runs.set_index(["seed", "stream_seed"])[metric].astype(float)


def compare(summary: pd.DataFrame, reference: str, metric: str = "acc", runs: pd.DataFrame | None = None,
            ) -> Comparison:
    """Every configuration against the reference configuration of its (benchmark, scenario), paired by seed.

    ``reference`` is ``STRATEGY`` or ``STRATEGY:LABEL`` (:func:`parse_reference`; labels match whatever the order of
    their words). In each (benchmark, scenario) the candidates are that strategy's configurations (with that label):

    - none: the dataset has no comparison (listed in ``skipped``); none anywhere is a UsageError;
    - one: it is the reference of every other configuration there;
    - several: each configuration is compared with the candidate trained with the same settings (runs' train_config,
      eval_batch_size aside), so a folder of 1-epoch runs merged with one of 5-epoch runs compares like with like;
      several candidates with the same settings, or none with the settings of a configuration, is a UsageError
      listing them (choose one with STRATEGY:LABEL).

    A configuration and its reference are paired on equal (seed, stream_seed): the same stream and the same initial
    weights. Without stream_seed (neither in the summary nor in ``runs``) the pairs are by seed alone. A run without
    a partner, or whose metric is NaN, is left out; ``n_unpaired`` counts the (seed, stream_seed) found on one side
    only. Training settings are not required to match (a method may have its own, e.g. Adam for hnet);
    ``settings_diff`` names those that differ. Statistics: :func:`paired_stats`; ``p_holm``: :func:`holm` over every
    row with a p-value; ``significant``: p_holm < ALPHA. The average ranks (:func:`average_ranks`) are over the
    datasets that have a reference, and each row carries its configuration's ``avg_rank`` and ``n_datasets``.
    """
    if summary.empty:
        raise UsageError("no finished runs to compare: the folders hold no run with status ok")
    summary = with_run_info(summary, runs)
    _check_summary(summary, metric)
    summary = summary.copy()
    if "stream_seed" not in summary.columns:
        summary["stream_seed"] = -1
    summary["stream_seed"] = summary["stream_seed"].fillna(-1)
    strategy, label = parse_reference(reference, summary["strategy"].dropna().astype(str))
    of_strategy = summary[summary["strategy"] == strategy]
    if label is not None and not any(_same_label(lab, label) for lab in of_strategy["label"]):
        raise unknown_choice(f"label of {strategy!r} in --reference", label, of_strategy["label"].unique())
    settings = _settings_of(summary)
    configs = summary.drop_duplicates("config_id")[["config_id", *DATASET, "strategy", "label"]]
    by_config = dict(tuple(summary.groupby("config_id", sort=False)))
    rows, skipped, used = [], [], []
    for (bench, scen), group in configs.groupby(DATASET, sort=True):
        dataset = f"{bench}/{scen}"
        group = group.sort_values(["strategy", "label", "config_id"], kind="stable").to_dict("records")
        candidates = [c for c in group if c["strategy"] == strategy and (label is None or _same_label(c["label"],
                                                                                                     label))]
        if not candidates:
            skipped.append(dataset)
            continue
        used.append((bench, scen))
        for other in group:
            ref = _pick_reference(other, candidates, settings, dataset, reference)
            if ref["config_id"] == other["config_id"]:
                continue
            mine, theirs = _values(by_config[other["config_id"]], metric), _values(by_config[ref["config_id"]], metric)
            common = mine.index.intersection(theirs.index).sort_values()
            result = paired_stats(mine.loc[common].to_numpy(), theirs.loc[common].to_numpy())
            rows.append({
                "benchmark": bench, "scenario": scen, "strategy": other["strategy"], "label": other["label"],
                "reference": ref["strategy"], "metric": metric, **result,
                "n_unpaired": len(mine.index.symmetric_difference(theirs.index)),
                "mean": float(mine.loc[common].mean()) if len(common) else math.nan,
                "reference_mean": float(theirs.loc[common].mean()) if len(common) else math.nan,
                "reference_label": ref["label"],
                "settings_diff": _settings_diff(settings[other["config_id"]], settings[ref["config_id"]]),
                "config_id": other["config_id"], "reference_config_id": ref["config_id"],
            })  # fmt: skip
    if not used:
        raise UsageError(f"--reference {reference!r}: no configuration of it in any benchmark/scenario of the "
                         f"folders ({', '.join(skipped)})")
    table = pd.DataFrame(rows, columns=[c for c in [*COMPARE_COLUMNS, *EXTRA_COLUMNS]
                                        if c not in ("p_holm", "significant", "avg_rank", "n_datasets")])
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"] < ALPHA
    ranks = average_ranks(summary, metric, datasets=used)
    rank_of = ranks.set_index(["strategy", "label"])
    keys = list(zip(table["strategy"], table["label"], strict=True))
    table["avg_rank"] = [float(rank_of.loc[k, "avg_rank"]) if k in rank_of.index else math.nan for k in keys]
    table["n_datasets"] = [int(rank_of.loc[k, "n_datasets"]) if k in rank_of.index else 0 for k in keys]
    table = table[[*COMPARE_COLUMNS, *EXTRA_COLUMNS]]
    table = table.astype({"n_pairs": int, "n_unpaired": int, "n_datasets": int, "significant": bool})
    defined = summary.dropna(subset=[metric])
    ranked_in = [(b, s) for b, s in used if ((defined["benchmark"] == b) & (defined["scenario"] == s)).any()]
    return Comparison(table=table.reset_index(drop=True), ranks=ranks, reference=reference, metric=metric,
                      skipped=skipped, datasets=[f"{b}/{s}" for b, s in used],
                      rank_datasets=[f"{b}/{s}" for b, s in ranked_in])


# ---------------------------------------------------------------------------------------------------------------------
# output


def ranks_path(output: Path) -> Path:
    """Where `clbench compare -o FILE` writes the average ranks: FILE's stem + "_ranks" (compare.csv →
    compare_ranks.csv)."""
    output = Path(output)
    return output.with_name(f"{output.stem}_ranks{output.suffix or '.csv'}")


def _num(value: float, spec: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2e}" if value < 1e-4 else f"{value:.4f}"


def format_comparison(result: Comparison) -> str:
    """The comparison as readable text: diff [95% CI], p, p_holm (``*`` where p_holm < ALPHA), then the ranks."""
    table, lines = result.table, []
    lines.append(f"{result.metric}: other − reference ({result.reference}), paired by (seed, stream_seed); 95% CI "
                 f"(t); p: paired t-test; p_holm: Holm over {int(table['p_value'].notna().sum())} comparison(s); "
                 f"* p_holm < {ALPHA}")
    if table.empty:
        lines.append("(no configuration besides the reference)")
    else:
        view = pd.DataFrame({
            "benchmark": table["benchmark"], "scenario": table["scenario"], "strategy": table["strategy"],
            "label": table["label"], "vs": table["reference"], "n": table["n_pairs"],
            "diff": [_num(v, "+.4f") for v in table["diff_mean"]],
            "95% CI": ["" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
                       for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
            "p": [_p(v) for v in table["p_value"]],
            "p_holm": [_p(v) + (" *" if s else "") for v, s in zip(table["p_holm"], table["significant"],
                                                                   strict=True)],
            "test": table["test"],
        })  # fmt: skip
        if (table["n_unpaired"] > 0).any():
            view.insert(view.columns.get_loc("n") + 1, "unpaired", table["n_unpaired"])
        lines.append(view.to_string(index=False))
        if (table["settings_diff"] != "").any():
            lines.append("trained with other settings than their reference (settings_diff):")
            lines.extend(f"  {r.benchmark}/{r.scenario} {r.strategy}:{r.label}: {r.settings_diff}"
                         for r in table[table["settings_diff"] != ""].itertuples())
    if result.skipped:
        lines.append(f"no {result.reference} configuration, so no comparison, in: {', '.join(result.skipped)}")
    ranks = result.ranks
    lines.append(f"\naverage rank on {result.metric} (Demšar 2006; 1 = best, ties averaged) over "
                 f"{len(result.rank_datasets)} dataset(s): {', '.join(result.rank_datasets)}")
    ranked = ranks[ranks["avg_rank"].notna()]
    if ranked.empty:
        lines.append("(no configuration is in every dataset)")
    else:
        lines.append(pd.DataFrame({"strategy": ranked["strategy"], "label": ranked["label"],
                                   "avg_rank": [f"{v:.2f}" for v in ranked["avg_rank"]]}).to_string(index=False))
    unranked = ranks[ranks["avg_rank"].isna()]
    if not unranked.empty:
        lines.append("not ranked (not in every dataset): " + "; ".join(
            f"{r.strategy}:{r.label} (missing from {r.missing})" for r in unranked.itertuples()))
    return "\n".join(lines)
