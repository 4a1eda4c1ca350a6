"""Hand-computed tables and properties for clbench.metrics.matrix (formulas: /work/shared/METRICS.md)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clbench.metrics import (
    accuracy,
    avalanche_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    clear_accuracy,
    clear_backward_transfer,
    clear_forward_transfer,
    continuum_backward_transfer,
    forgetting,
    forward_transfer,
    gem_backward_transfer,
    gem_forward_transfer,
    learning_accuracy,
)

nan = float("nan")


def all_metrics(R, b=None):
    return {
        "acc": accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b),
        "forgetting": forgetting(R),
        "la": learning_accuracy(R),
        "aia": average_incremental_accuracy(R),
    }


def check(got: dict, expected: dict):
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert isinstance(got[k], float), k
        if math.isnan(v):
            assert math.isnan(got[k]), (k, got[k])
        else:
            assert got[k] == pytest.approx(v, abs=1e-12), (k, got[k], v)


# --- hand-computed tables -----------------------------------------------------------------------------------------

R3 = [[0.9, 0.1, 0.2],
      [0.6, 0.8, 0.3],
      [0.5, 0.7, 0.95]]  # fmt: skip
B3 = [0.1, 0.2, 0.3]


def test_t3_example():
    check(all_metrics(R3, B3), {
        "acc": (0.5 + 0.7 + 0.95) / 3,                              # 0.71667
        "bwt": ((0.5 - 0.9) + (0.7 - 0.8)) / 2,                     # -0.25
        "fwt": ((0.1 - 0.2) + (0.3 - 0.3)) / 2,                     # R[0,1]-b1, R[1,2]-b2 → -0.05
        "forgetting": ((0.9 - 0.5) + (0.8 - 0.7)) / 2,              # max col0 = 0.9, max col1 = 0.8 → 0.25
        "la": (0.9 + 0.8 + 0.95) / 3,                               # 0.88333
        "aia": (0.9 + (0.6 + 0.8) / 2 + (0.5 + 0.7 + 0.95) / 3) / 3,  # 0.77222
    })  # fmt: skip


# the maximum of column j is NOT on the diagonal here, so forgetting differs from -BWT
R3B = [[0.5, 0.2, 0.1],
       [0.8, 0.9, 0.2],
       [0.6, 0.3, 0.7]]  # fmt: skip
B3B = [0.1, 0.1, 0.1]


def test_t3_max_off_diagonal():
    check(all_metrics(R3B, B3B), {
        "acc": (0.6 + 0.3 + 0.7) / 3,                     # 0.53333
        "bwt": ((0.6 - 0.5) + (0.3 - 0.9)) / 2,           # -0.25
        "fwt": ((0.2 - 0.1) + (0.2 - 0.1)) / 2,           # 0.1
        "forgetting": ((0.8 - 0.6) + (0.9 - 0.3)) / 2,    # max col0 = R[1,0] = 0.8 → 0.4
        "la": (0.5 + 0.9 + 0.7) / 3,                      # 0.7
        "aia": (0.5 + (0.8 + 0.9) / 2 + 1.6 / 3) / 3,     # 0.62778
    })  # fmt: skip


def test_peer_variants_by_hand():
    assert avalanche_forgetting(R3B) == pytest.approx(((0.5 - 0.6) + (0.9 - 0.3)) / 2)  # R[j,j]-R[T-1,j] → 0.25
    assert gem_backward_transfer(R3B) == pytest.approx(((0.6 - 0.5) + (0.3 - 0.9)) / 3)  # /T → -0.16667
    assert gem_forward_transfer(R3B, B3B) == pytest.approx(0.2 / 3)
    # continuum: pairs i>j: (1,0) 0.8-0.5, (2,0) 0.6-0.5, (2,1) 0.3-0.9 → -0.2/3
    assert continuum_backward_transfer(R3B) == pytest.approx((0.3 + 0.1 - 0.6) / 3)
    assert clear_accuracy(R3B) == pytest.approx((0.5 + 0.8 + 0.9 + 0.6 + 0.3 + 0.7) / 6)  # lower incl. diag
    assert clear_backward_transfer(R3B) == pytest.approx((0.8 + 0.6 + 0.3) / 3)  # strict lower
    assert clear_forward_transfer(R3B) == pytest.approx((0.2 + 0.1 + 0.2) / 3)  # strict upper
    for f in (avalanche_forgetting, gem_backward_transfer, continuum_backward_transfer, clear_backward_transfer):
        assert math.isnan(f([[0.7]]))


def test_t2_example():
    R = [[0.8, 0.3],
         [0.6, 0.9]]  # fmt: skip
    check(all_metrics(R, [0.1, 0.5]), {
        "acc": (0.6 + 0.9) / 2,           # 0.75
        "bwt": 0.6 - 0.8,                 # -0.2
        "fwt": 0.3 - 0.5,                 # R[0,1] - b[1] = -0.2
        "forgetting": 0.8 - 0.6,          # 0.2
        "la": (0.8 + 0.9) / 2,            # 0.85
        "aia": (0.8 + (0.6 + 0.9) / 2) / 2,  # 0.775
    })  # fmt: skip


def test_t1_undefined_metrics_are_nan():
    check(all_metrics([[0.7]], [0.1]), {"acc": 0.7, "bwt": nan, "fwt": nan, "forgetting": nan, "la": 0.7, "aia": 0.7})


def test_fwt_without_baseline_is_nan():
    assert math.isnan(forward_transfer(R3))
    assert math.isnan(forward_transfer(R3, None))


def test_identity():
    # learns each experience perfectly, forgets it completely, knows nothing about the future
    check(all_metrics(np.eye(4), np.zeros(4)), {
        "acc": 1 / 4, "bwt": -1.0, "fwt": 0.0, "forgetting": 1.0, "la": 1.0,
        "aia": (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4,  # 25/48
    })  # fmt: skip


def test_constant():
    R = np.full((3, 3), 0.6)
    expected = {"acc": 0.6, "bwt": 0.0, "fwt": 0.6 - 0.2, "forgetting": 0.0, "la": 0.6, "aia": 0.6}
    check(all_metrics(R, np.full(3, 0.2)), expected)


def test_upper_triangular():
    R = np.triu(np.ones((3, 3)))  # [[1,1,1],[0,1,1],[0,0,1]]
    check(all_metrics(R, np.zeros(3)), {
        "acc": 1 / 3, "bwt": -1.0, "fwt": 1.0, "forgetting": 1.0, "la": 1.0,
        "aia": (1 + 1 / 2 + 1 / 3) / 3,  # 11/18
    })  # fmt: skip


def test_lower_triangular_perfect_memory():
    check(all_metrics(np.tril(np.ones((3, 3))), np.zeros(3)),
          {"acc": 1.0, "bwt": 0.0, "fwt": 0.0, "forgetting": 0.0, "la": 1.0, "aia": 1.0})  # fmt: skip


# --- missing entries (NaN = not evaluated) --------------------------------------------------------------------------


def test_missing_row_skips_terms():
    R = np.array(R3)
    R[1] = nan  # step 1 not evaluated (e.g. evaluation every 2 steps)
    check(all_metrics(R, B3), {
        "acc": (0.5 + 0.7 + 0.95) / 3,   # last row complete
        "bwt": 0.5 - 0.9,                # term j=1 needs R[1,1] → skipped
        "fwt": 0.1 - 0.2,                # term j=2 needs R[1,2] → skipped
        "forgetting": 0.9 - 0.5,         # term j=1 needs R[1,1] → skipped; col 0 max over present rows = 0.9
        "la": (0.9 + 0.95) / 2,
        "aia": (0.9 + (0.5 + 0.7 + 0.95) / 3) / 2,
    })  # fmt: skip


def test_missing_single_cells():
    R = np.array(R3B)
    R[0, 1] = nan  # R[0,1]: only FWT and the column-1 max read it
    R[2, 0] = nan  # last row partly missing
    b = [0.1, nan, 0.1]
    check(all_metrics(R, b), {
        "acc": (0.3 + 0.7) / 2,
        "bwt": 0.3 - 0.9,
        "fwt": 0.2 - 0.1,                # j=1 reads R[0,1] and b[1]: both missing
        "forgetting": 0.9 - 0.3,         # col 1: max(R[1,1]) = 0.9; col 0 has no final value
        "la": (0.5 + 0.9 + 0.7) / 3,
        "aia": (0.5 + (0.8 + 0.9) / 2) / 2,  # row 2 is partly evaluated → skipped
    })  # fmt: skip


def test_all_missing_gives_nan_without_warning(recwarn):
    R = np.full((3, 3), nan)
    assert all(math.isnan(v) for v in all_metrics(R, np.full(3, nan)).values())
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("R", [np.zeros((2, 3)), np.zeros(3), np.zeros((2, 2, 2)), np.zeros((0, 0)), []])
@pytest.mark.parametrize(
    "f", [accuracy, backward_transfer, forgetting, learning_accuracy, average_incremental_accuracy, forward_transfer]
)
def test_bad_shapes_raise(f, R):
    with pytest.raises(ValueError, match="R"):
        f(R)


def test_bad_baseline_raises():
    with pytest.raises(ValueError, match="length T=3"):
        forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match="length T=3"):
        forward_transfer(R3, np.zeros((3, 1)))


def test_accepts_lists_and_returns_python_float():
    assert type(accuracy(R3)) is float
    assert type(forward_transfer(np.array(R3, dtype=np.float32), np.array(B3, dtype=np.float32))) is float


# --- properties -----------------------------------------------------------------------------------------------------

unit = st.floats(0, 1, allow_nan=False)


@st.composite
def matrix_and_baseline(draw, min_t=1, max_t=7, missing=False):
    T = draw(st.integers(min_t, max_t))
    R = draw(arrays(float, (T, T), elements=unit))
    b = draw(arrays(float, (T,), elements=unit))
    if missing:
        mask = draw(arrays(bool, (T, T)))
        R[mask] = nan
    return R, b


@settings(max_examples=200, deadline=None)
@given(matrix_and_baseline())
def test_bounds(rb):
    R, b = rb
    m = all_metrics(R, b)
    for k in ("acc", "la", "aia"):
        assert 0 <= m[k] <= 1
    for k in ("bwt", "fwt", "forgetting"):
        assert math.isnan(m[k]) if len(R) == 1 else -1 <= m[k] <= 1


@settings(max_examples=200, deadline=None)
@given(matrix_and_baseline(min_t=2))
def test_forgetting_at_least_minus_bwt(rb):
    # per term: max_{l<=T-2} R[l,j] >= R[j,j] because l = j is in the range (j <= T-2)
    R, _ = rb
    assert forgetting(R) >= -backward_transfer(R) - 1e-12
    assert avalanche_forgetting(R) == pytest.approx(-backward_transfer(R))


@settings(max_examples=200, deadline=None)
@given(matrix_and_baseline(min_t=2, missing=True))
def test_forgetting_at_least_minus_bwt_with_missing_entries(rb):
    # forgetting and BWT use the same terms (both need R[j,j] and R[T-1,j]), so they are NaN together
    R, _ = rb
    f, bwt = forgetting(R), backward_transfer(R)
    assert math.isnan(f) == math.isnan(bwt)
    if not math.isnan(f):
        assert f >= -bwt - 1e-12


@settings(max_examples=200, deadline=None)
@given(matrix_and_baseline(), st.floats(-0.5, 0.5))
def test_shift_invariance(rb, c):
    R, b = rb
    before, after = all_metrics(R, b), all_metrics(R + c, b + c)
    for k in ("bwt", "fwt", "forgetting"):
        assert after[k] == pytest.approx(before[k], abs=1e-9, nan_ok=True)
    for k in ("acc", "la", "aia"):
        assert after[k] == pytest.approx(before[k] + c, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(matrix_and_baseline(missing=True))
def test_inputs_unchanged(rb):
    R, b = rb
    R_copy, b_copy = R.copy(), b.copy()
    all_metrics(R, b)
    for f in (avalanche_forgetting, gem_backward_transfer, continuum_backward_transfer, clear_accuracy,
              clear_backward_transfer, clear_forward_transfer):  # fmt: skip
        f(R)
    gem_forward_transfer(R, b)
    np.testing.assert_array_equal(R, R_copy)
    np.testing.assert_array_equal(b, b_copy)


def test_list_input_unchanged():
    R = [row[:] for row in R3]
    all_metrics(R, B3)
    assert R == R3
