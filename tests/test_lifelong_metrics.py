"""Hand-computed tables, edge cases and properties for clbench.metrics.lifelong (formulas: docs/L2METRICS.md)."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clbench.metrics.lifelong import (
    LIFELONG_METRICS,
    backward_transfer_contrast,
    backward_transfer_ratio,
    forward_transfer_contrast,
    forward_transfer_ratio,
    learning_curve,
    lifelong_metrics,
    moving_average,
    performance_maintenance,
    relative_performance,
    sample_efficiency,
    saturation,
)

# Every call here must be silent: an undefined metric is NaN, never a warning.
pytestmark = pytest.mark.filterwarnings("error")

nan = float("nan")
approx = pytest.approx


def curve_table(*learning_blocks, extra=()):
    """A curve table from (experience, steps, values) learning blocks plus extra (train_exp, step, eval_exp, value)."""
    rows = []
    seen = 0
    for exp, steps, values in learning_blocks:
        for step, value in zip(steps, values, strict=True):
            rows.append({"train_exp": exp, "exp_step": step, "global_step": step, "samples_seen": seen + 32 * step,
                         "eval_exp": exp, "value": value})
        seen += 32 * max(steps)
    for train_exp, step, eval_exp, value in extra:
        rows.append({"train_exp": train_exp, "exp_step": step, "global_step": step, "samples_seen": 32 * step,
                     "eval_exp": eval_exp, "value": value})
    return pd.DataFrame(rows, columns=["train_exp", "exp_step", "global_step", "samples_seen", "eval_exp", "value"])


# R[i, j]: accuracy on j after training i; b: before any training. Used by several tests below.
R3 = np.array([[0.8, 0.3, 0.2],
               [0.6, 0.9, 0.4],
               [0.5, 0.7, 0.6]])
B3 = np.array([0.1, 0.2, 0.25])


# ------------------------------------------------------------------------------------------ performance maintenance

def test_performance_maintenance_hand_computed():
    # task 0: (R10 − R00, R20 − R00) = (0.6 − 0.8, 0.5 − 0.8) = (−0.2, −0.3) → mean −0.25
    # task 1: R21 − R11 = 0.7 − 0.9 = −0.2;  task 2: no later evaluation, no term
    # PM = mean(−0.25, −0.2) = −0.225  (a mean over all three pairs would be −0.7/3 = −0.2333)
    assert performance_maintenance(R3) == approx(-0.225, abs=1e-12)


def test_performance_maintenance_gain_is_positive():
    # task 0: 0.9 − 0.5 = 0.4 → PM = 0.4 (backward transfer improved the old task)
    assert performance_maintenance([[0.5, 0.1], [0.9, 0.7]]) == approx(0.4, abs=1e-12)


def test_performance_maintenance_missing_entries():
    R = [[0.8, 0.3, nan],
         [nan, 0.9, 0.4],
         [0.5, 0.7, 0.6]]
    # task 0: R10 missing, R20 − R00 = −0.3;  task 1: −0.2  → PM = −0.25
    assert performance_maintenance(R) == approx(-0.25, abs=1e-12)
    # no end-of-learning value R00: task 0 has no reference and no term → PM = task 1's −0.2
    R_no_diag = [[nan, 0.3, 0.2], [0.6, 0.9, 0.4], [0.5, 0.7, 0.6]]
    assert performance_maintenance(R_no_diag) == approx(-0.2, abs=1e-12)
    # offline joint: only the last row → nothing before it to maintain
    assert math.isnan(performance_maintenance([[nan, nan], [0.8, 0.9]]))


# --------------------------------------------------------------------------------------------------------- transfer

def test_forward_transfer_hand_computed():
    # before P = [b, R0, R1]; pairs i < j:
    # (0,1): b1 = 0.2  → R01 = 0.3: ratio 1.5,  contrast 0.1/0.5  = 0.2
    # (0,2): b2 = 0.25 → R02 = 0.2: ratio 0.8,  contrast −0.05/0.45 = −1/9
    # (1,2): R02 = 0.2 → R12 = 0.4: ratio 2.0,  contrast 0.2/0.6  = 1/3
    # ratio = 4.3/3;  contrast = (1/5 − 1/9 + 1/3)/3 = (19/45)/3 = 19/135
    assert forward_transfer_ratio(R3, B3) == approx(4.3 / 3, abs=1e-12)
    assert forward_transfer_contrast(R3, B3) == approx(19 / 135, abs=1e-12)


def test_backward_transfer_hand_computed():
    # pairs j < i, before R[i-1, j] → after R[i, j]:
    # (1,0): 0.8 → 0.6: ratio 3/4, contrast −0.2/1.4 = −1/7
    # (2,0): 0.6 → 0.5: ratio 5/6, contrast −0.1/1.1 = −1/11
    # (2,1): 0.9 → 0.7: ratio 7/9, contrast −0.2/1.6 = −1/8
    # ratio = (27 + 30 + 28)/36/3 = 85/108;  contrast = −(1/7 + 1/11 + 1/8)/3 = −(221/616)/3 = −221/1848
    assert backward_transfer_ratio(R3) == approx(85 / 108, abs=1e-12)
    assert backward_transfer_contrast(R3) == approx(-221 / 1848, abs=1e-12)


def test_transfer_zero_denominators_are_skipped():
    R = [[0.9, 0.0, 0.0],
         [0.5, 0.8, 0.3],
         [0.4, 0.6, 0.7]]
    b = [0.1, 0.0, 0.2]
    # FT (0,1): 0 → 0: ratio and contrast skipped (0 / 0)
    #    (0,2): 0.2 → 0: ratio 0, contrast −1
    #    (1,2): 0 → 0.3: ratio skipped (÷ 0), contrast 0.3/0.3 = 1
    # ratio = 0 (one term); contrast = (−1 + 1)/2 = 0
    assert forward_transfer_ratio(R, b) == 0.0
    assert forward_transfer_contrast(R, b) == approx(0.0, abs=1e-12)
    # BT (1,0): 0.9 → 0.5: 5/9, −2/7;  (2,0): 0.5 → 0.4: 4/5, −1/9;  (2,1): 0.8 → 0.6: 3/4, −1/7
    # ratio = (100 + 144 + 135)/180/3 = 379/540;  contrast = −(2/7 + 1/9 + 1/7)/3 = −34/189
    assert backward_transfer_ratio(R) == approx(379 / 540, abs=1e-12)
    assert backward_transfer_contrast(R) == approx(-34 / 189, abs=1e-12)


def test_transfer_all_denominators_zero_is_nan():
    R = [[0.9, 0.0], [0.0, 0.8]]
    # FT (0,1): b1 = 0 → R01 = 0: no term;  BT (1,0): R00 = 0.9 → R10 = 0: ratio 0, contrast −1
    assert math.isnan(forward_transfer_ratio(R, [0.0, 0.0]))
    assert math.isnan(forward_transfer_contrast(R, [0.0, 0.0]))
    assert backward_transfer_ratio(R) == 0.0
    assert backward_transfer_contrast(R) == -1.0
    # BT (1,0): 0 → 0 → nothing defined
    assert math.isnan(backward_transfer_ratio([[0.0, 0.5], [0.0, 0.5]]))
    assert math.isnan(backward_transfer_contrast([[0.0, 0.5], [0.0, 0.5]]))


def test_transfer_overflowing_ratio_is_skipped_silently():
    # b = 2.2e-313 (subnormal): 1/b overflows to inf → no ratio term, and no warning;
    # the contrast (1 − b)/(1 + b) rounds to exactly 1.0
    R = [[1.0, 1.0], [1.0, 1.0]]
    tiny = [2.2e-313, 2.2e-313]
    assert math.isnan(forward_transfer_ratio(R, tiny))
    assert forward_transfer_contrast(R, tiny) == 1.0


def test_forward_transfer_class_il_artefact():
    # class-IL: R01 = 0 (an unseen class is never predicted) → FT reads only the untrained b1 = 0.2:
    # ratio 0/0.2 = 0, contrast (0 − 0.2)/0.2 = −1, whatever the method
    R = [[0.9, 0.0], [0.5, 0.8]]
    assert forward_transfer_ratio(R, [0.1, 0.2]) == 0.0
    assert forward_transfer_contrast(R, [0.1, 0.2]) == -1.0


def test_transfer_missing_entries():
    R = [[0.8, 0.3, nan],
         [nan, 0.9, 0.4],
         [0.5, 0.7, 0.6]]
    # FT (0,1): 0.2 → 0.3: 1.5, 0.2;  (0,2) reads R02 (missing);  (1,2) reads R02 as "before" (missing)
    assert forward_transfer_ratio(R, B3) == approx(1.5, abs=1e-12)
    assert forward_transfer_contrast(R, B3) == approx(0.2, abs=1e-12)
    # BT (1,0) and (2,0) read R10 (missing); (2,1): 0.9 → 0.7: 7/9, −1/8
    assert backward_transfer_ratio(R) == approx(7 / 9, abs=1e-12)
    assert backward_transfer_contrast(R) == approx(-1 / 8, abs=1e-12)


def test_forward_transfer_without_b_uses_only_later_pairs():
    # b unknown: pairs (0,1), (0,2) are skipped; (1,2): 0.2 → 0.4: ratio 2, contrast 1/3
    assert forward_transfer_ratio(R3, None) == approx(2.0, abs=1e-12)
    assert forward_transfer_contrast(R3, None) == approx(1 / 3, abs=1e-12)


# ------------------------------------------------------------------------------------------ relative performance

# Learning blocks on the steps 0, 2, 4, 5 (every 2 steps plus the last):
LEARNER_BLOCKS = [(0, [0, 2, 4, 5], [0.1, 0.5, 0.7, 0.8]), (1, [0, 2, 4, 5], [0.4, 0.6, 0.8, 0.8])]
EXPERT_BLOCKS = [(0, [0, 2, 4, 5], [0.1, 0.6, 0.8, 0.9]), (1, [0, 2, 4, 5], [0.1, 0.5, 0.7, 0.8])]
# rows that are not a learning curve of their own experience (eval_exp ≠ train_exp) must be ignored
NOISE = [(0, 0, 1, 0.99), (0, 5, 1, 0.99), (1, 0, 0, 0.01), (1, 5, 0, 0.01)]


def test_relative_performance_from_curves_hand_computed():
    curve = curve_table(*LEARNER_BLOCKS, extra=NOISE)
    expert_curve = curve_table(*EXPERT_BLOCKS, extra=NOISE)
    # trapezoids over exp_step, widths 2, 2, 1:
    # task 0: learner 2·0.6/2 + 2·1.2/2 + 1·1.5/2 = 0.6 + 1.2 + 0.75 = 2.55
    #         expert  2·0.7/2 + 2·1.4/2 + 1·1.7/2 = 0.7 + 1.4 + 0.85 = 2.95  → 2.55/2.95 = 51/59
    # task 1: learner 1.0 + 1.4 + 0.8 = 3.2;  expert = task 0's learner curve = 2.55  → 3.2/2.55 = 64/51
    # RP = (51/59 + 64/51)/2  (l2metrics' plain sums would give (2.1/2.4 + 2.6/2.1)/2 instead)
    expected = (51 / 59 + 64 / 51) / 2
    assert relative_performance(R3[:2, :2], None, curve, expert_curve) == approx(expected, abs=1e-12)


def test_relative_performance_uses_only_common_steps():
    # the learner also logged step 6 (a longer block): it is cut to the steps the expert has, 0 and 2
    # learner 2·(0.2 + 0.4)/2 = 0.6;  expert 2·(0.2 + 0.6)/2 = 0.8  → 0.75
    curve = curve_table((0, [0, 2, 6], [0.2, 0.4, 1.0]))
    expert_curve = curve_table((0, [0, 2], [0.2, 0.6]))
    assert relative_performance([[0.5]], [[0.5]], curve, expert_curve) == approx(0.75, abs=1e-12)
    # a single common step has no area: no term
    assert math.isnan(relative_performance([[0.5]], [[0.5]], curve, curve_table((0, [2], [0.6]))))


def test_relative_performance_fallback_to_boundary_values():
    expert_R = [[0.9, 0.1, 0.1], [0.9, 0.9, 0.1], [0.9, 0.9, 0.8]]
    # diag(R) / diag(expert_R) = (0.8/0.9, 0.9/0.9, 0.6/0.8) = (32, 36, 27)/36 → mean 95/108
    assert relative_performance(R3, expert_R) == approx(95 / 108, abs=1e-12)
    # one curve alone is not enough: the boundary form is used
    learner_only = curve_table(*LEARNER_BLOCKS)
    assert relative_performance(R3, expert_R, learner_only, None) == approx(95 / 108, abs=1e-12)
    # an empty table counts as no curve
    empty = curve_table()
    assert relative_performance(R3, expert_R, empty, empty) == approx(95 / 108, abs=1e-12)
    # an expert at 0 on experience 1 gives no term: (32/36 + 27/36)/2 = 59/72
    expert_zero = [[0.9, 0.1, 0.1], [0.9, 0.0, 0.1], [0.9, 0.9, 0.8]]
    assert relative_performance(R3, expert_zero) == approx(59 / 72, abs=1e-12)
    # no expert at all
    assert math.isnan(relative_performance(R3, None))


def test_relative_performance_zero_expert_area_is_skipped():
    curve = curve_table((0, [0, 1], [0.5, 0.5]), (1, [0, 1], [0.4, 0.6]))
    expert_curve = curve_table((0, [0, 1], [0.0, 0.0]), (1, [0, 1], [0.5, 0.5]))
    # task 0: expert area 0 → skipped;  task 1: (0.4 + 0.6)/2 / 0.5 = 1.0
    assert relative_performance(np.eye(2), np.eye(2), curve, expert_curve) == approx(1.0, abs=1e-12)


def test_learning_curve_selects_averages_and_drops_nan():
    curve = curve_table((0, [4, 0, 2, 2], [0.9, 0.1, 0.4, 0.6]), extra=[(0, 2, 1, 0.99), (0, 6, 0, nan)])
    got = learning_curve(curve, 0)
    # sorted by exp_step, the two rows at step 2 averaged ((0.4 + 0.6)/2 = 0.5), step 6 (NaN) and eval_exp 1 dropped
    assert got.index.tolist() == [0, 2, 4]
    assert got.to_numpy() == approx([0.1, 0.5, 0.9], abs=1e-12)
    assert learning_curve(curve, 1).empty


# --------------------------------------------------------------------------------------------- sample efficiency

def test_moving_average_follows_l2metrics_window_and_alignment():
    # n = 15 → w = min(⌊0.2·15⌋, 100) = 3, point t averages x[t−2 .. t] (mirrored at the start: x[−1] = x1, x[−2] = x2)
    # t = 0: (2 + 1 + 0)/3 = 1;  t = 1: (1 + 0 + 1)/3 = 2/3;  t ≥ 2: (t−2 + t−1 + t)/3 = t − 1
    x = np.arange(15.0)
    assert moving_average(x) == approx([1.0, 2 / 3, *range(1, 14)], abs=1e-12)
    assert x.tolist() == list(range(15))  # not modified
    # n = 20 → w = 4, point t averages x[t−2 .. t+1]: t = 0: (2+1+0+1)/4 = 1;  t = 1: (1+0+1+2)/4 = 1;
    # t = 2..18: t − 0.5;  t = 19: (17 + 18 + 19 + 18)/4 = 18 (mirrored at the end: x[20] = x18)
    assert moving_average(np.arange(20.0)) == approx([1.0, 1.0, *(t - 0.5 for t in range(2, 19)), 18.0], abs=1e-12)
    # n = 14 → w = 2 < 3: no smoothing
    assert moving_average([0.3, 0.1] * 7) == approx([0.3, 0.1] * 7)


def test_saturation_value_and_step():
    # no smoothing below 15 points: max 0.8 first reached at exp_step 20 (not at the later 0.8)
    assert saturation(pd.Series([0.2, 0.5, 0.8, 0.8], index=[0, 10, 20, 30])) == (0.8, 20.0)
    # 15 points, exp_step = 2·index: smoothed ramp 0..14 (see above) peaks at 13 on its last point, step 28
    assert saturation(pd.Series(np.arange(15.0), index=np.arange(0, 30, 2))) == (approx(13.0, abs=1e-12), 28.0)
    assert all(math.isnan(v) for v in saturation(pd.Series(dtype=float)))


STEPS = [0, 10, 20, 30, 35]  # every 10 steps plus the last one


def test_sample_efficiency_hand_computed():
    curve = curve_table(
        (0, STEPS, [0.2, 0.5, 0.7, 0.8, 0.9]),    # saturation 0.9 at step 35
        (1, STEPS, [0.5, 0.9, 0.6, 0.4, 0.3]),    # falling curve
        (2, STEPS, [0.9, 0.5, 0.6, 0.7, 0.8]),    # saturates at its first point
        (3, STEPS, [0.0, 0.1, 0.15, 0.1, 0.1]),   # saturation 0.15 < 0.2 · 0.9
        (4, STEPS, [0.1, 0.2, 0.3, 0.4, 0.5]),
        (5, STEPS, [0.1, 0.2, 0.3, 0.4, 0.5]),    # has no expert curve
        extra=NOISE)
    expert_curve = curve_table(
        (0, STEPS, [0.1, 0.6, 0.9, 0.9, 0.9]),    # saturation 0.9 first at step 20
        (1, STEPS, [0.1, 0.4, 0.8, 0.8, 0.8]),
        (2, STEPS, [0.1, 0.4, 0.8, 0.8, 0.8]),
        (3, STEPS, [0.1, 0.5, 0.9, 0.9, 0.9]),
        (4, STEPS, [0.9, 0.8, 0.8, 0.8, 0.8]))    # the expert saturates at its first point
    # task 0: (0.9/0.9) · (20/35) = 4/7   (counting points instead of steps would give 2/4)
    # task 1: slope over x = STEPS (x̄ = 19), y (ȳ = 0.54): Σ dx·dy = 0.76 − 3.24 + 0.06 − 1.54 − 3.84 = −7.8 < 0 → 0
    # task 2, 4: saturation at the first point → no term;  task 5: no expert → no term
    # task 3: 0.15 < 0.2 · 0.9 = 0.18 → 0  (its slope, Σ dx·dy = 1.95, is positive)
    # SE = (4/7 + 0 + 0)/3 = 4/21
    assert sample_efficiency(curve, expert_curve) == approx(4 / 21, abs=1e-12)


def test_sample_efficiency_smooths_long_curves():
    steps = list(range(15))
    learner = [t / 14 for t in steps]               # smoothed (w = 3): max (12 + 13 + 14)/3/14 = 13/14 at step 14
    expert = [0.0, 0.2, 0.4, 0.6, 0.8] + [1.0] * 10  # smoothed: t = 5: 0.8, t = 6: 2.8/3, t = 7: 1.0 → step 7
    # SE = (13/14 / 1.0) · (7/14) = 13/28  (unsmoothed it would be 1.0 · 5/14)
    got = sample_efficiency(curve_table((0, steps, learner)), curve_table((0, steps, expert)))
    assert got == approx(13 / 28, abs=1e-12)


def test_sample_efficiency_without_curves_is_nan():
    curve = curve_table(*LEARNER_BLOCKS)
    assert math.isnan(sample_efficiency(None, curve))
    assert math.isnan(sample_efficiency(curve, None))
    assert math.isnan(sample_efficiency(curve, curve_table()))


# ------------------------------------------------------------------------------------------------------------- all

def test_lifelong_metrics_hand_computed_run():
    R = [[0.8, 0.3], [0.7, 0.8]]
    b = [0.1, 0.2]
    expert_R = [[0.9, 0.2], [0.9, 0.8]]
    curve = curve_table(*LEARNER_BLOCKS, extra=NOISE)
    expert_curve = curve_table(*EXPERT_BLOCKS, extra=NOISE)
    got = lifelong_metrics(R, b, curve, expert_R, expert_curve)
    assert list(got) == LIFELONG_METRICS
    assert all(isinstance(v, float) for v in got.values())
    # PM: 0.7 − 0.8 = −0.1;  FT (0,1): 0.2 → 0.3: 1.5, 0.1/0.5 = 0.2;  BT (1,0): 0.8 → 0.7: 0.875, −0.1/1.5 = −1/15
    # RP from the curves (see test_relative_performance_from_curves_hand_computed), not diag ratios (8/9, 1)
    # SE task 0: learner saturates 0.8 at step 5, expert 0.9 at step 5 → 8/9;
    #    task 1: learner 0.8 first at step 4, expert 0.8 at step 5 → 5/4 (slope Σ dx·dy = 1.25 > 0);  SE = 77/72
    expected = {"perf_maintenance": -0.1, "ft_ratio": 1.5, "ft_contrast": 0.2, "bt_ratio": 0.875,
                "bt_contrast": -1 / 15, "rel_perf": (51 / 59 + 64 / 51) / 2, "sample_eff": 77 / 72}
    assert got == approx(expected, abs=1e-12)


def test_lifelong_metrics_without_curves():
    expert_R = [[0.9, 0.1, 0.1], [0.9, 0.9, 0.1], [0.9, 0.9, 0.8]]
    got = lifelong_metrics(R3, B3, None, expert_R, None)
    assert got["perf_maintenance"] == approx(-0.225, abs=1e-12)
    assert got["ft_ratio"] == approx(4.3 / 3, abs=1e-12)
    assert got["bt_contrast"] == approx(-221 / 1848, abs=1e-12)
    assert got["rel_perf"] == approx(95 / 108, abs=1e-12)  # boundary fallback
    assert math.isnan(got["sample_eff"])


def test_single_experience():
    got = lifelong_metrics([[0.7]], [0.1], None, [[0.8]], None)
    # nothing after the only experience: PM, FT, BT undefined;  RP = 0.7/0.8 = 0.875;  SE needs curves
    assert [k for k, v in got.items() if math.isnan(v)] == ["perf_maintenance", "ft_ratio", "ft_contrast",
                                                              "bt_ratio", "bt_contrast", "sample_eff"]
    assert got["rel_perf"] == approx(0.875, abs=1e-12)
    # with curves: RP = (0.2 + 0.6)/2·2 / ((0.2 + 0.8)/2·2) = 0.8;  SE = (0.6/0.8) · (2/2) = 0.75
    with_curves = lifelong_metrics([[0.7]], [0.1], curve_table((0, [0, 2], [0.2, 0.6])), [[0.8]],
                                   curve_table((0, [0, 2], [0.2, 0.8])))
    assert with_curves["rel_perf"] == approx(0.8, abs=1e-12)
    assert with_curves["sample_eff"] == approx(0.75, abs=1e-12)


def test_all_nan_matrix_gives_nan_everywhere():
    R = np.full((3, 3), np.nan)
    got = lifelong_metrics(R, np.full(3, np.nan), None, R, None)
    assert all(math.isnan(v) for v in got.values())


def test_inputs_are_not_modified():
    R, b, expert_R = R3.copy(), B3.copy(), np.eye(3) * 0.9
    curve = curve_table(*LEARNER_BLOCKS, extra=NOISE)
    expert_curve = curve_table(*EXPERT_BLOCKS)
    copies = [R.copy(), b.copy(), expert_R.copy(), curve.copy(), expert_curve.copy()]
    lifelong_metrics(R, b, curve, expert_R, expert_curve)
    np.testing.assert_array_equal(R, copies[0])
    np.testing.assert_array_equal(b, copies[1])
    np.testing.assert_array_equal(expert_R, copies[2])
    pd.testing.assert_frame_equal(curve, copies[3])
    pd.testing.assert_frame_equal(expert_curve, copies[4])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"R": np.zeros((2, 3))}, "R must be a square"),
    ({"R": np.zeros((0, 0))}, "R is empty"),
    ({"b": [0.1, 0.2]}, "b must be a vector of length T=3"),
    ({"expert_R": np.zeros((2, 2))}, "expert_R must have the shape of R"),
    ({"expert_R": np.zeros(3)}, "expert_R must be a square"),
    ({"curve": pd.DataFrame({"train_exp": [0], "exp_step": [0], "value": [0.5]})},
     r"lacks the column\(s\) \['eval_exp'\]"),
    ({"expert_curve": [1, 2]}, "expert_curve must be a pandas DataFrame"),
    ({"curve": curve_table((3, [0, 1], [0.1, 0.2]))}, r"curve.train_exp must be an experience in 0..2"),
    ({"expert_curve": curve_table(extra=[(0, 0, -1, 0.5)])}, r"expert_curve.eval_exp must be an experience"),
])
def test_bad_shapes_raise_value_error_naming_the_argument(kwargs, message):
    args = {"R": R3, "b": B3, "curve": None, "expert_R": np.eye(3), "expert_curve": None} | kwargs
    with pytest.raises(ValueError, match=message):
        lifelong_metrics(**args)


# ------------------------------------------------------------------------------------------------------ properties

unit = st.floats(0.0, 1.0, allow_nan=False)
maybe_missing = st.one_of(unit, st.just(nan))


@settings(max_examples=200, deadline=None)
@given(T=st.integers(1, 6), data=st.data())
def test_learner_that_never_forgets_has_zero_maintenance(T, data):
    R = data.draw(arrays(float, (T, T), elements=unit))
    for j in range(T):
        R[j + 1:, j] = R[j, j]  # every later evaluation equals the end-of-learning one
    value = performance_maintenance(R)
    assert math.isnan(value) if T == 1 else value == 0.0


@settings(max_examples=200, deadline=None)
@given(T=st.integers(1, 6), data=st.data())
def test_contrasts_lie_in_unit_interval_and_ratios_are_nonnegative(T, data):
    R = data.draw(arrays(float, (T, T), elements=maybe_missing))
    b = data.draw(arrays(float, (T,), elements=maybe_missing))
    for value in (forward_transfer_contrast(R, b), backward_transfer_contrast(R)):
        assert math.isnan(value) or -1.0 <= value <= 1.0
    for value in (forward_transfer_ratio(R, b), backward_transfer_ratio(R)):
        assert math.isnan(value) or value >= 0.0


@settings(max_examples=100, deadline=None)
@given(T=st.integers(1, 4), n_points=st.integers(2, 40), data=st.data())
def test_learner_identical_to_expert_scores_one(T, n_points, data):
    blocks = []
    for exp in range(T):
        steps = sorted(data.draw(st.sets(st.integers(0, 500), min_size=n_points, max_size=n_points)))
        values = sorted(data.draw(st.sets(st.floats(0.01, 1.0), min_size=n_points, max_size=n_points)))
        blocks.append((exp, steps, values))  # strictly increasing: positive slope, saturation after the first point
    curve = curve_table(*blocks)
    R = data.draw(arrays(float, (T, T), elements=st.floats(0.01, 1.0)))
    got = lifelong_metrics(R, None, curve, R, curve.copy())
    assert got["rel_perf"] == approx(1.0, abs=1e-12)
    assert got["sample_eff"] == approx(1.0, abs=1e-12)
    assert relative_performance(R, R) == approx(1.0, abs=1e-12)  # the boundary form too
