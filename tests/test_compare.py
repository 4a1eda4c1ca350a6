"""`clbench compare`: paired differences, t-intervals, paired tests, Holm and average ranks, checked against scipy on
hand-made summary tables, then end to end on a tiny real folder."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clbench.errors import UsageError
from clbench.results.compare import (
    COMPARE_COLUMNS,
    EXTRA_COLUMNS,
    RANK_COLUMNS,
    average_ranks,
    compare,
    format_comparison,
    holm,
    paired_stats,
    parse_reference,
    ranks_path,
)
from clbench.runners.cli import main


def summary_of(values: dict, benchmark="b", scenario="class", stream_seed=0, train_config=None) -> pd.DataFrame:
    """A summary table: values = {(strategy, label): {seed: acc}} in one (benchmark, scenario)."""
    rows = []
    for (strategy, label), by_seed in values.items():
        config_id = f"{benchmark}-{scenario}-{strategy}-{label}"
        for seed, acc in by_seed.items():
            row = {"run_id": f"{config_id}-{seed}", "config_id": config_id, "benchmark": benchmark,
                   "scenario": scenario, "strategy": strategy, "label": label, "seed": seed,
                   "stream_seed": stream_seed, "acc": acc}
            if train_config is not None:
                row["train_config"] = train_config.get((strategy, label), '{"epochs": 1}')
            rows.append(row)
    return pd.DataFrame(rows)


REF = {0: 0.50, 1: 0.55, 2: 0.52, 3: 0.58, 4: 0.49, 5: 0.51}
BETTER = {s: v + d for (s, v), d in zip(REF.items(), [0.10, 0.12, 0.08, 0.11, 0.09, 0.13], strict=True)}


# ---------------------------------------------------------------------------------------------------------------------
# the statistics against scipy


def test_known_sign_matches_scipy():
    """Better than the reference on every seed: positive difference, CI above 0, p < 0.05 with 6 seeds."""
    table = compare(summary_of({("naive", "defaults"): REF, ("replay", "mem_size=10"): BETTER}), "naive").table
    assert list(table.columns) == [*COMPARE_COLUMNS, *EXTRA_COLUMNS]
    assert COMPARE_COLUMNS == ["benchmark", "scenario", "strategy", "label", "reference", "metric", "n_pairs",
                               "diff_mean", "ci_low", "ci_high", "p_value", "p_holm", "test"]
    (row,) = table.to_dict("records")
    other, ref = np.array(list(BETTER.values())), np.array(list(REF.values()))
    d = other - ref
    assert (row["strategy"], row["label"], row["reference"], row["reference_label"]) == (
        "replay", "mem_size=10", "naive", "defaults")
    assert row["n_pairs"] == 6 and row["n_unpaired"] == 0 and row["test"] == "paired t"
    assert row["diff_mean"] == pytest.approx(d.mean()) and row["diff_mean"] > 0
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert 0 < row["ci_low"] < row["diff_mean"] < row["ci_high"]
    assert row["p_value"] == pytest.approx(stats.ttest_rel(other, ref).pvalue) and row["p_value"] < 0.05
    assert row["p_holm"] == pytest.approx(row["p_value"])  # one comparison: Holm changes nothing
    assert row["significant"]
    # 6 non-zero differences of one sign: the exact Wilcoxon p is its minimum, 2 / 2^6
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(other, ref).pvalue) == pytest.approx(2 / 2**6)
    assert row["mean"] - row["reference_mean"] == pytest.approx(row["diff_mean"])


def test_worse_method_has_negative_difference_and_ci_below_zero():
    worse = {s: v - 0.05 - 0.01 * (s % 2) for s, v in REF.items()}
    (row,) = compare(summary_of({("naive", "defaults"): REF, ("ewc", "defaults"): worse}), "naive").table.to_dict(
        "records")
    assert row["diff_mean"] < 0 and row["ci_high"] < 0 and row["p_value"] < 0.05


def test_no_difference_gives_zero_and_nan_p():
    """Identical values on every seed: d = 0, so s = 0 and the t statistic is 0/0: no p, no interval (documented in
    paired_stats and docs/METRICS.md), and no Wilcoxon test (every difference is zero)."""
    (row,) = compare(summary_of({("naive", "defaults"): REF, ("lwf", "defaults"): dict(REF)}), "naive").table.to_dict(
        "records")
    assert row["diff_mean"] == 0 and row["n_pairs"] == 6
    assert math.isnan(row["p_value"]) and math.isnan(row["p_holm"]) and math.isnan(row["p_wilcoxon"])
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["test"] == "none (zero variance)" and not row["significant"]
    assert math.isnan(stats.ttest_rel(list(REF.values()), list(REF.values())).pvalue)  # scipy agrees


def test_differences_equal_up_to_float_rounding_have_no_t_test():
    """The reference leaderboard's case: 0.1998 − 0.1999 on three seeds is −0.0001 up to rounding (1e-17 apart).
    scipy's t-test would give p ≈ 1e-26 on that noise; one difference, repeated, has no spread to test."""
    other, ref = [0.1998, 0.1998, 0.1998], [0.1999, 0.19990000000000002, 0.1999]
    d = np.subtract(other, ref)
    assert 0 < np.ptp(d) < 1e-15 and stats.ttest_rel(other, ref).pvalue < 1e-10  # what the test would have said
    row = paired_stats(other, ref)
    assert row["test"] == "none (zero variance)" and math.isnan(row["p_value"]) and math.isnan(row["ci_low"])
    assert row["diff_mean"] == pytest.approx(-0.0001)
    spread = paired_stats([0.1998, 0.1997, 0.1998], ref)  # one sample in 10 000 apart is a real spread
    assert spread["test"] == "paired t" and 0 < spread["p_value"] < 1


def test_paired_stats_small_samples():
    one = paired_stats([0.6], [0.5])
    assert one["n_pairs"] == 1 and one["diff_mean"] == pytest.approx(0.1) and one["test"] == "none (n_pairs < 2)"
    assert all(math.isnan(one[k]) for k in ("ci_low", "ci_high", "p_value", "p_wilcoxon"))
    none = paired_stats([], [])
    assert none["n_pairs"] == 0 and math.isnan(none["diff_mean"])
    three = paired_stats([0.6, 0.7, 0.65], [0.5, 0.55, 0.6])
    assert three["p_value"] == pytest.approx(stats.ttest_rel([0.6, 0.7, 0.65], [0.5, 0.55, 0.6]).pvalue)
    assert math.isnan(three["p_wilcoxon"])  # 3 non-zero differences: the test cannot reach 0.05 (2/2^3 = 0.25)
    with pytest.raises(ValueError, match="equally long"):
        paired_stats([1, 2], [1])


def test_unpaired_seeds_are_left_out_and_counted():
    """Seeds 4 and 5 only for the reference, seed 9 only for the other, and seed 3 of the other with another stream:
    the pairs are seeds 0, 1, 2; 4 (seed, stream_seed) keys are found on one side only."""
    ref = summary_of({("naive", "defaults"): REF})
    other = summary_of({("replay", "defaults"): {0: 0.6, 1: 0.66, 2: 0.6, 9: 0.9}})
    other_stream = summary_of({("replay", "defaults"): {3: 0.1}}, stream_seed=7)
    summary = pd.concat([ref, other, other_stream], ignore_index=True)
    (row,) = compare(summary, "naive").table.to_dict("records")
    assert row["n_pairs"] == 3 and row["n_unpaired"] == 5  # ref seeds 3, 4, 5; other (9, 0) and (3, 7)
    d = np.array([0.6, 0.66, 0.6]) - np.array([REF[0], REF[1], REF[2]])
    assert row["diff_mean"] == pytest.approx(d.mean())
    assert row["p_value"] == pytest.approx(stats.ttest_rel([0.6, 0.66, 0.6], [REF[0], REF[1], REF[2]]).pvalue)


def test_stream_seed_comes_from_the_runs_table():
    summary = summary_of({("naive", "defaults"): {0: 0.5, 1: 0.6}, ("replay", "defaults"): {0: 0.7, 1: 0.8}})
    runs = summary[["run_id"]].assign(stream_seed=[0, 0, 0, 3])  # replay's seed 1 ran on another stream
    (row,) = compare(summary.drop(columns="stream_seed"), "naive", runs=runs).table.to_dict("records")
    assert row["n_pairs"] == 1 and row["n_unpaired"] == 2 and row["test"] == "none (n_pairs < 2)"


def test_nan_metric_counts_as_absent():
    summary = summary_of({("naive", "defaults"): {0: 0.5, 1: 0.6, 2: 0.55}, ("ewc", "defaults"): {0: 0.6, 1: 0.7,
                                                                                                  2: math.nan}})
    (row,) = compare(summary, "naive").table.to_dict("records")
    assert row["n_pairs"] == 2 and row["n_unpaired"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Holm


def test_holm_hand_computed():
    # m = 4. Sorted: 0.005, 0.01, 0.03, 0.04, multiplied by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; the running maximum
    # makes the last 0.06 (a larger p is never adjusted below a smaller one's): 0.02, 0.03, 0.06, 0.06. Back in the
    # input's order [0.01, 0.04, 0.03, 0.005] → [0.03, 0.06, 0.06, 0.02].
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; NaN stays NaN and does not count in m (m = 2 here: 0.2·2 = 0.4, 0.6·1 → max(0.4, 0.6) = 0.6)
    out = holm([0.6, math.nan, 0.2])
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.4)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5·2 = 1.0, 0.9·1 → max(1.0, 0.9)
    assert holm([]).size == 0 and np.isnan(holm([math.nan])).all()


def test_holm_runs_over_every_row_of_the_table():
    summary = pd.concat([
        summary_of({("naive", "defaults"): REF, ("replay", "defaults"): BETTER, ("ewc", "defaults"):
                    {s: v + 0.01 * (-1) ** s for s, v in REF.items()}}),
        summary_of({("naive", "defaults"): REF, ("replay", "defaults"): BETTER}, scenario="task"),
    ], ignore_index=True)
    table = compare(summary, "naive").table
    assert len(table) == 3
    assert table["p_holm"].to_numpy() == pytest.approx(holm(table["p_value"].to_numpy()))
    assert (table["p_holm"] >= table["p_value"]).all()


# ---------------------------------------------------------------------------------------------------------------------
# average ranks (Demšar 2006)


def test_average_ranks_with_ties_hand_computed():
    # dataset 1: A 0.9, B 0.8, C 0.8 → ranks 1, 2.5, 2.5 (B and C tie for places 2 and 3)
    # dataset 2: A 0.7, B 0.9, C 0.6 → ranks 2, 1, 3
    # average: A (1 + 2)/2 = 1.5, B (2.5 + 1)/2 = 1.75, C (2.5 + 3)/2 = 2.75. D is only in dataset 2: not ranked,
    # and its presence there does not move the others' ranks.
    summary = pd.concat([
        summary_of({("A", "defaults"): {0: 0.9}, ("B", "defaults"): {0: 0.8}, ("C", "x=1"): {0: 0.8}}, "d1"),
        summary_of({("A", "defaults"): {0: 0.7, 1: 0.7}, ("B", "defaults"): {0: 0.9}, ("C", "x=1"): {0: 0.5, 1: 0.7},
                    ("D", "defaults"): {0: 0.99}}, "d2"),
    ], ignore_index=True)
    ranks = average_ranks(summary, "acc")
    assert list(ranks.columns) == RANK_COLUMNS
    got = dict(zip(zip(ranks["strategy"], ranks["label"], strict=True), ranks["avg_rank"], strict=True))
    assert got[("A", "defaults")] == pytest.approx(1.5)
    assert got[("B", "defaults")] == pytest.approx(1.75)
    assert got[("C", "x=1")] == pytest.approx(2.75)
    assert math.isnan(got[("D", "defaults")])
    assert list(ranks["strategy"]) == ["A", "B", "C", "D"]  # best first, the unranked last
    d_row = ranks[ranks["strategy"] == "D"].iloc[0]
    assert d_row["n_datasets"] == 1 and d_row["missing"] == "d1/class"
    # the same as scipy's average ranks per dataset, averaged
    per = [stats.rankdata([-0.9, -0.8, -0.8]), stats.rankdata([-0.7, -0.9, -0.6])]
    assert [got[("A", "defaults")], got[("B", "defaults")], got[("C", "x=1")]] == pytest.approx(np.mean(per, axis=0))


def test_lower_is_better_metrics_rank_the_smallest_first():
    summary = summary_of({("A", "defaults"): {0: 0.9}, ("B", "defaults"): {0: 0.1}}).assign(
        forgetting=[0.3, 0.05])
    ranks = average_ranks(summary, "forgetting")
    assert list(ranks["strategy"]) == ["B", "A"] and list(ranks["avg_rank"]) == [1.0, 2.0]


def test_compare_ranks_over_the_datasets_with_a_reference():
    summary = pd.concat([
        summary_of({("naive", "defaults"): REF, ("replay", "defaults"): BETTER}, scenario="class"),
        summary_of({("naive", "defaults"): BETTER, ("replay", "defaults"): REF}, scenario="task"),
        summary_of({("hnet", "defaults"): REF}, scenario="domain"),  # no naive here: no comparison, no rank
    ], ignore_index=True)
    result = compare(summary, "naive")
    assert result.skipped == ["b/domain"] and result.datasets == ["b/class", "b/task"]
    assert set(result.table["scenario"]) == {"class", "task"}
    assert (result.table["avg_rank"] == 1.5).all() and (result.table["n_datasets"] == 2).all()
    hnet = result.ranks[result.ranks["strategy"] == "hnet"]
    assert hnet.empty  # only the datasets of the comparison are ranked
    text = format_comparison(result)
    assert "no naive configuration" in text and "b/domain" in text and "average rank" in text


def test_a_metric_undefined_in_a_scenario():
    """FWT left NaN in class-IL: no pairs there (n_pairs 0, no test), and that dataset is left out of the ranks."""
    summary = pd.concat([
        summary_of({("naive", "defaults"): REF, ("replay", "defaults"): BETTER}, scenario="class"),
        summary_of({("naive", "defaults"): REF, ("replay", "defaults"): BETTER}, scenario="task"),
    ], ignore_index=True)
    summary["fwt"] = np.where(summary["scenario"] == "class", np.nan, summary["acc"])
    result = compare(summary, "naive", metric="fwt")
    cls = result.table[result.table["scenario"] == "class"].iloc[0]
    assert cls["n_pairs"] == 0 and cls["n_unpaired"] == 0 and cls["test"] == "none (n_pairs < 2)"
    assert math.isnan(cls["diff_mean"]) and math.isnan(cls["p_holm"])
    assert result.rank_datasets == ["b/task"] and list(result.ranks["avg_rank"]) == [1.0, 2.0]
    assert list(result.ranks["strategy"]) == ["replay", "naive"]


# ---------------------------------------------------------------------------------------------------------------------
# choosing the reference


def test_reference_by_label_and_ambiguity():
    summary = summary_of({("replay", "mem_size=100"): REF, ("replay", "mem_size=500 batch_size_mem=8"): BETTER,
                          ("naive", "defaults"): REF})
    with pytest.raises(UsageError, match="matches 2 configurations.*STRATEGY:LABEL"):
        compare(summary, "replay")
    table = compare(summary, "replay:batch_size_mem=8 mem_size=500").table  # words in any order
    assert set(table["reference_label"]) == {"mem_size=500 batch_size_mem=8"}  # as recorded
    assert sorted(table["label"]) == ["defaults", "mem_size=100"]
    with pytest.raises(UsageError, match="unknown label of 'replay'.*mem_size=100"):
        compare(summary, "replay:mem_size=7")
    with pytest.raises(UsageError, match="unknown reference strategy.*naive, replay"):
        compare(summary, "ewc")
    with pytest.raises(UsageError, match="unknown metric 'accuracy'.*acc"):
        compare(summary, "naive", metric="accuracy")


def test_parse_reference_with_colons_in_the_name():
    names = ["avalanche:EWC", "naive"]
    assert parse_reference("avalanche:EWC", names) == ("avalanche:EWC", None)
    assert parse_reference("avalanche:EWC:ewc_lambda=1", names) == ("avalanche:EWC", "ewc_lambda=1")
    assert parse_reference("naive:defaults", names) == ("naive", "defaults")
    with pytest.raises(UsageError, match="give a label"):
        parse_reference("naive:", names)


def test_several_references_are_matched_by_training_settings():
    """Two folders merged, one trained 1 epoch and one 5: each configuration is compared with the naive run of its
    own setting; a naive pair with equal settings is ambiguous."""
    one = '{"epochs": 1, "eval_batch_size": 2048}'
    five = '{"epochs": 5, "eval_batch_size": 512}'  # eval_batch_size does not change results: ignored
    summary = pd.concat([
        summary_of({("naive", "defaults"): REF, ("replay", "defaults"): BETTER}, train_config={}).assign(
            train_config=one),
        summary_of({("naive", "defaults"): BETTER, ("replay", "defaults"): REF}, train_config={}).assign(
            train_config=five, config_id=lambda df: df["config_id"] + "-5", run_id=lambda df: df["run_id"] + "-5"),
    ], ignore_index=True)
    table = compare(summary, "naive").table
    assert len(table) == 2 and set(table["settings_diff"]) == {""}
    by_config = dict(zip(table["config_id"], table["reference_config_id"], strict=True))
    assert by_config == {"b-class-replay-defaults": "b-class-naive-defaults",
                         "b-class-replay-defaults-5": "b-class-naive-defaults-5"}
    same = summary.assign(train_config=one)
    with pytest.raises(UsageError, match="matches 2 configurations in b/class"):
        compare(same, "naive")


def test_settings_diff_names_what_differs():
    summary = summary_of({("naive", "defaults"): REF, ("hnet", "defaults"): BETTER}, train_config={
        ("naive", "defaults"): '{"lr": 0.01, "optimizer": "sgd"}', ("hnet", "defaults"): '{"lr": 0.001, '
                                                                                         '"optimizer": "adam"}'})
    (row,) = compare(summary, "naive").table.to_dict("records")
    assert row["settings_diff"] == "lr=0.001 (reference 0.01); optimizer=adam (reference sgd)"


def test_ranks_path():
    from pathlib import Path

    assert ranks_path(Path("out/compare.csv")) == Path("out/compare_ranks.csv")
    assert ranks_path(Path("table")) == Path("table_ranks.csv")


# ---------------------------------------------------------------------------------------------------------------------
# end to end


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "res"
    code = main(["run", "--benchmark", "split-digits", "--scenario", "class", "task", "--strategy", "naive", "replay",
                 "--seeds", "0", "1", "2", "--epochs", "1", "--batch-size", "32", "--train-subset", "200", "--quiet",
                 "--no-plots", "--out", str(out)])
    assert code == 0
    return out


def test_compare_end_to_end(folder, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "out.csv"
    assert main(["compare", str(folder), "--reference", "naive", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(table.columns) == [*COMPARE_COLUMNS, *EXTRA_COLUMNS]
    assert len(table) == 2  # one row per (scenario, other configuration): replay in class and in task
    assert sorted(table["scenario"]) == ["class", "task"] and set(table["strategy"]) == {"replay"}
    assert set(table["reference"]) == {"naive"} and set(table["metric"]) == {"acc"}
    assert (table["n_pairs"] == 3).all() and (table["n_unpaired"] == 0).all()
    assert (table["settings_diff"].isna()).all()  # the same run settings: nothing differs
    summary = pd.read_csv(folder / "summary.csv")
    for row in table.itertuples():
        pick = summary[summary["scenario"] == row.scenario].sort_values("seed")
        d = pick.loc[pick.strategy == "replay", "acc"].to_numpy() - pick.loc[pick.strategy == "naive", "acc"].to_numpy()
        assert row.diff_mean == pytest.approx(d.mean())
        if row.test == "paired t":
            assert row.p_value == pytest.approx(stats.ttest_rel(d, np.zeros(3)).pvalue)
    ranks = pd.read_csv(tmp_path / "out_ranks.csv", keep_default_na=False, na_values=[""])
    assert list(ranks.columns) == RANK_COLUMNS and set(ranks["strategy"]) == {"naive", "replay"}
    assert set(ranks["n_datasets"]) == {2} and ranks["avg_rank"].sum() == pytest.approx(3.0)  # 1 + 2 per dataset
    assert "p_holm" in printed and "average rank" in printed and "replay" in printed
    # the bare command prints and writes nothing
    assert main(["compare", str(folder), "--reference", "naive", "--metric", "bwt"]) == 0
    assert "bwt" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--reference", "ewc"], "unknown reference strategy 'ewc'; valid choices: naive, replay"),
    (["--reference", "naive", "--metric", "accuracy"], "unknown metric 'accuracy'; valid choices: "),
    (["--reference", "replay:mem_size=1"], "unknown label of 'replay'"),
])
def test_compare_bad_inputs(folder, tmp_path, capsys, argv, message):
    out = tmp_path / "out.csv"
    capsys.readouterr()
    assert main(["compare", str(folder), *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out_ranks.csv").exists()
    if "metric" in argv:
        assert "acc, aia, bwt" in err


def test_compare_bad_folders_and_outputs(folder, tmp_path, capsys):
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "nothing"), "--reference", "naive", "-o", str(tmp_path / "o.csv")]) == 2
    assert "not a clbench output folder" in capsys.readouterr().err
    assert main(["compare", "--reference", "naive"]) == 2  # no folder at all
    assert "DIR" in capsys.readouterr().err
    assert main(["compare", str(folder), "--reference", "naive", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and err.count("\n") == 1
    assert main(["compare", str(folder), "--reference", "naive", "-o", str(folder / "summary.csv")]) == 2
    assert "read from" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.csv"))
