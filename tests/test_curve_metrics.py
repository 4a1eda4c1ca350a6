"""Hand-computed curves, edge cases and properties for clbench.metrics.curves (formulas: docs/METRICS.md)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clbench.metrics.curves import (
    CURVE_COLUMNS,
    CURVE_METRICS,
    anytime_accuracy,
    curve_metrics,
    learning_curve_area,
    min_acc,
    wc_acc,
    windowed_forgetting,
)

nan = float("nan")


def make_curve(points: dict) -> pd.DataFrame:
    """{(train_exp, exp_step): (global_step, samples_seen, [A_0, A_1, ...])} → the tidy rows of curves.csv."""
    rows = [
        {"run_id": "r", "metric": "accuracy", "train_exp": e, "exp_step": s, "global_step": g, "samples_seen": x,
         "eval_exp": j, "value": v, "n": 100}
        for (e, s), (g, x, values) in points.items()
        for j, v in enumerate(values)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "metric", *CURVE_COLUMNS, "n"])


def check(got: dict, expected: dict):
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert isinstance(got[name], float), name
        if math.isnan(value):
            assert math.isnan(got[name]), (name, got[name])
        else:
            assert got[name] == pytest.approx(value, abs=1e-12), (name, got[name], value)


def all_metrics(curve, window=10, beta=10) -> dict:
    return {
        "min_acc": min_acc(curve),
        "wc_acc": wc_acc(curve),
        "wf": windowed_forgetting(curve, window),
        "lca": learning_curve_area(curve, beta),
        "aauc": anytime_accuracy(curve),
    }


# --- a hand-computed stream: 3 experiences of 2 steps (N = 1), batches of 10 then 5 samples --------------------------
# At each point: the seen experiences and the next one. (1, 0) repeats the model of (0, 2), (2, 0) that of (1, 2).
#   point   global  samples   A_0   A_1   A_2
MAIN = {
    (0, 0): (0, 0, [0.1, 0.1]),
    (0, 1): (1, 10, [0.6, 0.0]),
    (0, 2): (2, 15, [0.8, 0.0]),
    (1, 0): (2, 15, [0.8, 0.0, 0.1]),
    (1, 1): (3, 25, [0.4, 0.1, 0.0]),
    (1, 2): (4, 30, [0.7, 0.2, 0.0]),
    (2, 0): (4, 30, [0.7, 0.2, 0.0]),
    (2, 1): (5, 40, [0.5, 0.3, 0.6]),
    (2, 2): (6, 45, [0.6, 0.8, 0.9]),
}


def test_main_stream_by_hand():
    check(all_metrics(make_curve(MAIN), beta=2), {
        # old experience 0 after it was learned (timeline points with train_exp > 0): 0.4 0.7 0.5 0.6 → min 0.4;
        # experience 1: 0.3 0.8 → 0.3 (its 0.2 at (1, 2) = (2, 0), the end of its own training, does not count)
        "min_acc": (0.4 + 0.3) / 2,                          # 0.35
        "wc_acc": 0.9 / 3 + (1 - 1 / 3) * 0.35,               # A_2 at (2, 2) = 0.9 → 0.53333
        # A_0 on the timeline: 0.1 0.6 0.8 0.4 0.7 0.5 0.6 → largest later drop 0.8 - 0.4; A_1: 0.1 0.2 0.3 0.8 and
        # A_2: 0.6 0.9 never drop
        "wf": (0.4 + 0 + 0) / 3,                              # 0.13333
        # first beta+1 = 3 points of each experience: (0.1+0.6+0.8)/3, (0.0+0.1+0.2)/3, (0.0+0.6+0.9)/3
        "lca": (0.5 + 0.1 + 0.5) / 3,                         # 0.36667
        # averages over the seen experiences and the samples since the previous point:
        # 0.6·10 + 0.8·5 + 0.4·0 + (0.4+0.1)/2·10 + (0.7+0.2)/2·5 + 0.3·0 + (1.4/3)·10 + (2.3/3)·5 = 23.25
        "aauc": 23.25 / 45,                                   # 0.51667
    })  # fmt: skip


def test_main_stream_other_windows_and_betas():
    curve = make_curve(MAIN)
    # lag 1 only: 0.8 → 0.4 is consecutive, so every window finds it
    assert windowed_forgetting(curve, window=2) == pytest.approx(0.4 / 3)
    # beta = 1: (0.1+0.6)/2, (0.0+0.1)/2, (0.0+0.6)/2
    assert learning_curve_area(curve, beta=1) == pytest.approx((0.35 + 0.05 + 0.3) / 3)
    # the default beta = 10 needs 11 points per experience; these have 3
    assert math.isnan(learning_curve_area(curve))
    check(curve_metrics(curve), {"min_acc": 0.35, "wc_acc": 0.9 / 3 + 0.35 * 2 / 3, "wf10": 0.4 / 3, "lca": nan,
                                 "aauc": 23.25 / 45})  # fmt: skip


def test_window_limits_the_drop():
    # one experience declining slowly: 0.9 0.8 0.7 0.6; a window of w points sees drops of at most w - 1 steps
    curve = make_curve({(0, s): (s, 10 * s, [0.9 - 0.1 * s]) for s in range(4)})
    assert windowed_forgetting(curve, window=2) == pytest.approx(0.1)
    assert windowed_forgetting(curve, window=3) == pytest.approx(0.2)
    assert windowed_forgetting(curve, window=4) == pytest.approx(0.3)
    assert windowed_forgetting(curve, window=10) == pytest.approx(0.3)  # a window longer than the curve


def test_min_acc_excludes_the_end_of_its_own_experience():
    # backward transfer: A_0 keeps rising after experience 0; its value at (0, 1) = (1, 0) is not "after learned"
    curve = make_curve({
        (0, 0): (0, 0, [0.0, 0.0]),
        (0, 1): (1, 10, [0.5, 0.0]),
        (1, 0): (1, 10, [0.5, 0.0]),
        (1, 1): (2, 20, [0.6, 0.4]),
        (1, 2): (3, 30, [0.7, 0.8]),
    })  # fmt: skip
    assert min_acc(curve) == pytest.approx(0.6)  # min(0.6, 0.7), not 0.5
    assert wc_acc(curve) == pytest.approx(0.8 / 2 + 0.6 / 2)


def test_windowed_forgetting_starts_an_experience_after_its_first_step():
    # domain-IL: A_1 is 0.5 before training on experience 1 and dips to 0.3 after its first step; (1, 0) is the model of
    # (0, 1), so A_1's sequence is 0.3 0.9 (no forgetting), as in the reference code; A_0: 0.1 0.8 0.8 0.8
    curve = make_curve({
        (0, 0): (0, 0, [0.1, 0.5]),
        (0, 1): (1, 10, [0.8, 0.5]),
        (1, 0): (1, 10, [0.8, 0.5]),
        (1, 1): (2, 20, [0.8, 0.3]),
        (1, 2): (3, 30, [0.8, 0.9]),
    })  # fmt: skip
    assert windowed_forgetting(curve) == 0.0
    # LCA reads (1, 0) as Z_0 of experience 1: beta = 1 → ((0.1 + 0.8)/2 + (0.5 + 0.3)/2) / 2; beta = 2 needs 3 points
    # of each experience and experience 0 has 2 → NaN
    assert learning_curve_area(curve, beta=1) == pytest.approx((0.45 + 0.4) / 2)
    assert math.isnan(learning_curve_area(curve, beta=2))


def test_long_stream_all_five_metrics():
    # 2 experiences of 12 steps, 10 samples each. While learning experience j: A_j(j, s) = s/20 (0, 0.05, ..., 0.6).
    # During experience 1, A_0 falls from 0.6 to 0.3 after the first step and recovers: 0.3 + 0.05(s-1), s = 1..12.
    points = {(0, s): (s, 10 * s, [s / 20, 0.0]) for s in range(13)}
    points[(1, 0)] = (12, 120, [0.6, 0.0])
    points.update({(1, s): (12 + s, 120 + 10 * s, [0.3 + 0.05 * (s - 1), s / 20]) for s in range(1, 13)})
    check(curve_metrics(make_curve(points)), {
        "min_acc": 0.3,                        # A_0 over (1, 1..12)
        "wc_acc": 0.6 / 2 + 0.3 / 2,           # A_1 at (1, 12) = 0.6
        "wf10": (0.3 + 0.0) / 2,               # A_0: 0.6 at (0, 12) → 0.3 at (1, 1); A_1 only rises
        "lca": (0.25 + 0.25) / 2,              # Z_0..Z_10 = 0, 0.05, ..., 0.5 for both → mean 0.25
        # exp 0: Σ_{s=1..12} s/20 · 10 = 39; exp 1: Σ_{s=1..12} (A_0 + A_1)/2 · 10 = Σ (0.125 + 0.05 s) · 10 = 54
        "aauc": (39 + 54) / 240,               # 0.3875
    })  # fmt: skip


# --- edge cases ------------------------------------------------------------------------------------------------------


def test_one_experience():
    # the next experience's values (A_1) are read by nothing when k = 1
    curve = make_curve({(0, 0): (0, 0, [0.2, 0.0]), (0, 1): (1, 10, [0.5, 0.0]), (0, 2): (2, 20, [0.4, 0.1])})
    check(all_metrics(curve, beta=2), {
        "min_acc": nan,                            # no old experience
        "wc_acc": 0.4,                             # (1/1)·A_0 at the final point
        "wf": 0.5 - 0.4,                           # A_0: 0.2 0.5 0.4
        "lca": (0.2 + 0.5 + 0.4) / 3,
        "aauc": (0.5 * 10 + 0.4 * 10) / 20,        # 0.45
    })  # fmt: skip


def test_old_experience_never_reevaluated_after_it_was_learned():
    # the run stops at the start of experience 1: its only point (1, 0) is the model of (0, 2)
    points = {key: MAIN[key] for key in [(0, 0), (0, 1), (0, 2), (1, 0)]}
    check(all_metrics(make_curve(points), beta=2), {
        "min_acc": nan, "wc_acc": nan,         # A_0 has no point after experience 0 was learned
        "wf": nan,                             # A_1 has no timeline point
        "lca": nan,                            # experience 1 has 1 point < beta+1
        "aauc": (0.6 * 10 + 0.8 * 5 + 0.4 * 0) / 15,
    })  # fmt: skip


def test_experience_with_one_evaluation_has_no_windowed_forgetting():
    # the run stops after one step of experience 1: A_1 has one timeline evaluation (0.1 at (1, 1)), so F_1 = 0
    # (as the reference code's maximum started at 0); A_0: 0.1 0.6 0.8 0.4 → F_0 = 0.4
    points = {key: MAIN[key] for key in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]}
    assert windowed_forgetting(make_curve(points)) == pytest.approx((0.4 + 0) / 2)


@pytest.mark.parametrize("how", ["absent rows", "NaN values"])
def test_old_experience_missing_after_learned(how):
    curve = make_curve(MAIN)
    later_a0 = (curve["eval_exp"] == 1) & (curve["train_exp"] == 2)  # A_1 while training experience 2
    curve = curve.loc[~later_a0] if how == "absent rows" else curve.assign(value=curve["value"].mask(later_a0))
    # experience 0's term (0.4) is defined, experience 1's is not: NaN, not the mean over experience 0 alone
    assert math.isnan(min_acc(curve))
    assert math.isnan(wc_acc(curve))
    # A_1 keeps 0.1 0.2 on the timeline (no drop); aauc skips (2, 0..2), which miss A_1:
    # 0.6·10 + 0.8·5 + 0.4·0 + 0.25·10 + 0.45·5 over samples 0..30
    assert windowed_forgetting(curve) == pytest.approx(0.4 / 3)
    assert anytime_accuracy(curve) == pytest.approx(14.75 / 30)


def test_missing_point_in_aauc_is_skipped():
    curve = make_curve(MAIN)
    curve = curve.loc[~((curve["train_exp"] == 2) & (curve["exp_step"] == 1) & (curve["eval_exp"] == 1))]
    # (2, 1) lacks A_1: skipped, so (2, 2)'s average stands for samples 30..45
    assert anytime_accuracy(curve) == pytest.approx((6 + 4 + 2.5 + 2.25 + 2.3 / 3 * 15) / 45)
    # LCA's Z_1 of experience 2 is still present; min-ACC loses A_1 = 0.3 → min over (2, 2) only = 0.8
    assert min_acc(curve) == pytest.approx((0.4 + 0.8) / 2)
    assert learning_curve_area(curve, beta=2) == pytest.approx((0.5 + 0.1 + 0.5) / 3)


def test_missing_lca_point_is_nan_not_shifted():
    curve = make_curve(MAIN)
    curve = curve.loc[~((curve["train_exp"] == 1) & (curve["exp_step"] == 1) & (curve["eval_exp"] == 1))]
    assert math.isnan(learning_curve_area(curve, beta=2))  # Z_1 of experience 1 is missing


def test_single_point():
    check(all_metrics(make_curve({(0, 0): (0, 0, [0.3, 0.1])})), {
        "min_acc": nan, "wc_acc": 0.3,  # k = 1: A_0 at the final (only) point
        "wf": nan, "lca": nan, "aauc": nan,  # one evaluation: no pair, no curve, no sample consumed
    })  # fmt: skip


def test_no_sample_consumed_gives_nan_aauc():
    curve = make_curve({(0, 0): (0, 0, [0.3, 0.1]), (1, 0): (0, 0, [0.3, 0.1, 0.2])})
    assert math.isnan(anytime_accuracy(curve))


def test_empty_curve_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = curve_metrics(make_curve({}))
    check(got, dict.fromkeys(CURVE_METRICS, nan))


def test_all_values_nan_is_nan_without_warnings():
    curve = make_curve(MAIN).assign(value=nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = curve_metrics(curve)
    check(got, dict.fromkeys(CURVE_METRICS, nan))


def test_unsorted_input():
    curve = make_curve(MAIN)
    expected = all_metrics(curve, window=2, beta=2)
    for shuffled in (curve.sample(frac=1, random_state=0), curve.iloc[::-1], curve.sample(frac=1, random_state=1)):
        assert all_metrics(shuffled, window=2, beta=2) == expected


def test_input_not_modified():
    curve = make_curve(MAIN).sample(frac=1, random_state=0)
    curve["exp_step"] = curve["exp_step"].astype(float)  # a dtype the function converts: on its copy only
    before = curve.copy(deep=True)
    all_metrics(curve)
    curve_metrics(curve)
    pd.testing.assert_frame_equal(curve, before)


def test_curve_metrics_keys_and_order():
    assert CURVE_METRICS == ["min_acc", "wc_acc", "wf10", "lca", "aauc"]
    got = curve_metrics(make_curve(MAIN))
    assert list(got) == CURVE_METRICS
    assert all(type(v) is float for v in got.values())


# --- validation ------------------------------------------------------------------------------------------------------


def test_missing_columns_are_named():
    curve = make_curve(MAIN).drop(columns=["samples_seen", "value"])
    for f in (min_acc, wc_acc, windowed_forgetting, learning_curve_area, anytime_accuracy, curve_metrics):
        with pytest.raises(ValueError, match="samples_seen, value"):
            f(curve)


def test_not_a_dataframe():
    with pytest.raises(TypeError, match="DataFrame"):
        curve_metrics([{"train_exp": 0}])


@pytest.mark.parametrize("column, other", [("run_id", "r2"), ("metric", "accuracy_taw")])
def test_one_run_and_one_metric(column, other):
    curve = make_curve(MAIN)
    two = pd.concat([curve, curve.assign(**{column: other})], ignore_index=True)
    with pytest.raises(ValueError, match=f"one {column}"):
        curve_metrics(two)


def test_duplicate_rows_raise():
    curve = make_curve(MAIN)
    with pytest.raises(ValueError, match="several rows"):
        curve_metrics(pd.concat([curve, curve.iloc[[3]]], ignore_index=True).drop(columns=["run_id", "metric"]))


def test_inconsistent_counters_raise():
    curve = make_curve(MAIN)
    decreasing = curve.assign(global_step=curve["global_step"].where(curve["train_exp"] != 2, 0))
    with pytest.raises(ValueError, match="global_step decreases"):
        curve_metrics(decreasing)
    split_point = curve.copy()
    split_point.loc[0, "samples_seen"] = 5  # (0, 0) rows disagree on samples_seen
    with pytest.raises(ValueError, match="different global_step or samples_seen"):
        curve_metrics(split_point)
    for bad in (-1, 0.5, nan):
        with pytest.raises(ValueError, match="train_exp must hold non-negative integers"):
            curve_metrics(curve.assign(train_exp=curve["train_exp"].where(curve.index != 0, bad)))


@pytest.mark.parametrize("window", [1, 0, 2.5, True, "10"])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window"):
        windowed_forgetting(make_curve(MAIN), window)


@pytest.mark.parametrize("beta", [0, -1, 1.5, False])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        learning_curve_area(make_curve(MAIN), beta)


# --- properties ------------------------------------------------------------------------------------------------------


def stream(steps: list[int], model_values: np.ndarray) -> pd.DataFrame:
    """A curve whose experience e has steps[e] >= 1 steps of 7 samples; model m (one per optimizer step, 0 = untrained)
    scores model_values[m, j] on experience j. (e, 0) for e >= 1 is the model of experience e-1's last point."""
    points, model, k = {}, 0, len(steps)
    for e, n_steps in enumerate(steps):
        for s in range(n_steps + 1):
            if s > 0:
                model += 1
            evaluated = range(min(e + 2, k))  # the seen experiences and the next one
            points[(e, s)] = (model, 7 * model, [float(model_values[model, j]) for j in evaluated])
    return make_curve(points)


@st.composite
def streams(draw, monotone=False, constant=None):
    steps = draw(st.lists(st.integers(1, 12), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).integers(0, 101, size=(sum(steps) + 1, len(steps))) / 100
    if monotone:
        values = np.maximum.accumulate(values, axis=0)  # accuracy on every experience never decreases
    if constant is not None:
        values = np.full_like(values, constant)
    return steps, values, stream(steps, values)


@settings(max_examples=150, deadline=None)
@given(streams())
def test_properties_of_random_streams(drawn):
    steps, values, curve = drawn
    k, final = len(steps), sum(steps)
    got = all_metrics(curve)
    current = values[final, k - 1]
    if k == 1:
        assert math.isnan(got["min_acc"])
        assert got["wc_acc"] == pytest.approx(current)
    else:
        # the final point is after every old experience was learned: min-ACC ≤ their mean final accuracy
        assert got["min_acc"] <= values[final, : k - 1].mean() + 1e-12
        low, high = sorted([got["min_acc"], current])
        assert low - 1e-12 <= got["wc_acc"] <= high + 1e-12
    assert got["wf"] >= 0
    wf = [windowed_forgetting(curve, w) for w in (2, 3, 5, 10, 100)]
    assert wf == sorted(wf)  # a larger window can only find larger drops
    # A_AUC is a weighted mean of the averages over the seen experiences at the points after the first
    points = curve.groupby(["train_exp", "exp_step"])["global_step"].first()
    averages = [values[model, : e + 1].mean() for (e, _), model in points.items()][1:]
    assert min(averages) - 1e-12 <= got["aauc"] <= max(averages) + 1e-12
    if min(steps) >= 10:
        assert 0 <= got["lca"] <= 1
    else:
        assert math.isnan(got["lca"])
    shuffled = all_metrics(curve.sample(frac=1, random_state=0))
    assert all(
        a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(shuffled.values(), got.values(), strict=True)
    )


@settings(max_examples=60, deadline=None)
@given(streams(monotone=True))
def test_a_model_that_never_forgets_has_no_windowed_forgetting(drawn):
    _, _, curve = drawn
    for window in (2, 10, 100):
        assert windowed_forgetting(curve, window) == 0.0


@settings(max_examples=60, deadline=None)
@given(streams(constant=0.63))
def test_constant_curve(drawn):
    steps, _, curve = drawn
    got = curve_metrics(curve)
    assert got["aauc"] == pytest.approx(0.63)
    assert got["wc_acc"] == pytest.approx(0.63)
    assert got["wf10"] == 0.0
    if len(steps) > 1:
        assert got["min_acc"] == pytest.approx(0.63)
    if min(steps) >= 10:
        assert got["lca"] == pytest.approx(0.63)
