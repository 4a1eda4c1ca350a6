"""Lifelong-learning metrics of the DARPA L2M framework as pure functions of clbench's records (numpy and pandas).

Definitions: Baker, New et al., "A Domain-Agnostic Approach for Characterization of Lifelong Learning Systems",
Neural Networks 2023 (arXiv 2301.07799), as implemented by its reference library darpa-l2m/l2metrics 3.1.0
(performance_maintenance.py, transfer.py, ste_relative_performance.py, sample_efficiency.py, _localutil.py and the
lifetime aggregation of report.py). docs/L2METRICS.md gives every formula, the mapping below and each difference.

Mapping. l2metrics reads a log of *blocks*: learning blocks (the agent trains on one task) alternating with
evaluation blocks (every task is tested, the block's "terminal performance" is its mean). A clbench stream of T
experiences is the syllabus "evaluate, train 0, evaluate, train 1, ..., train T-1, evaluate" with every experience a
distinct task trained once (no task repetitions):

- the evaluation block before any training is ``b``; the one after training experience i is row ``R[i]``; so the
  evaluation just before experience i was trained is ``P[i] = b`` for i = 0 and ``R[i-1]`` otherwise;
- the learning block of experience j is the learning curve ``curve[(train_exp == j) & (eval_exp == j)]``: the accuracy
  on j while j is trained, one point per logged ``exp_step`` (l2metrics' learning experiences, LXs);
- the single-task expert (STE) of experience j is the ``separate`` baseline's expert: ``expert_R[j, j]`` and its
  curve ``expert_curve[(train_exp == j) & (eval_exp == j)]``.

Conventions (those of clbench.metrics.matrix): inputs are never modified; an entry that was not evaluated is NaN; a
metric is the mean of per-task (or per-pair) terms, a term is skipped when an entry it reads is missing or when it is
undefined (a zero denominator, as l2metrics skips it), and a metric without any term is NaN, never an exception or a
warning. l2metrics' preprocessing (smoothing of learning blocks, outlier clamping, min-max normalisation to [1, 101])
is not applied: these are l2metrics' numbers with ``smoothing_method="none"``, ``normalization_method="none"``,
``maintenance_method="mrlep"``, ``aggregation_method="mean"`` on raw accuracies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "CURVE_COLUMNS",
    "LIFELONG_METRICS",
    "SATURATION_FLOOR",
    "backward_transfer_contrast",
    "backward_transfer_ratio",
    "forward_transfer_contrast",
    "forward_transfer_ratio",
    "learning_curve",
    "lifelong_metrics",
    "moving_average",
    "performance_maintenance",
    "relative_performance",
    "sample_efficiency",
    "saturation",
]

#: Keys of ``lifelong_metrics``, in its order.
LIFELONG_METRICS = ["perf_maintenance", "ft_ratio", "ft_contrast", "bt_ratio", "bt_contrast", "rel_perf", "sample_eff"]

#: The columns of a learning-curve table that these metrics read (the others of clbench's curve table are ignored).
CURVE_COLUMNS = ["train_exp", "exp_step", "eval_exp", "value"]

#: l2metrics' sample-efficiency validity rule: a learner whose saturation value is below this fraction of the expert's
#: (or whose learning curve has a negative slope) gets sample efficiency 0.
SATURATION_FLOOR = 0.2

_NAN = float("nan")


# ---------------------------------------------------------------------------------------------------------- inputs


def _matrix(R, name: str = "R", shape: tuple[int, int] | None = None) -> np.ndarray:
    """A float copy of an accuracy matrix, checked to be a non-empty square matrix (of ``shape`` when given)."""
    a = np.array(R, dtype=float)  # np.array copies: the caller's object is never touched
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square T×T accuracy matrix, got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: an accuracy matrix needs at least one experience (T ≥ 1)")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} must have the shape of R, {shape}, got {a.shape}")
    return a


def _baseline(b, T: int) -> np.ndarray:
    """b as a float vector of length T; None becomes all-NaN (the terms that read it are then skipped)."""
    if b is None:
        return np.full(T, np.nan)
    v = np.array(b, dtype=float)
    if v.ndim != 1 or v.shape[0] != T:
        raise ValueError(f"b must be a vector of length T={T} (one accuracy per experience), got shape {v.shape}")
    return v


def _curve(curve, name: str, T: int | None = None) -> pd.DataFrame | None:
    """The curve table checked for its columns (and experiences in 0..T-1); None when absent or empty."""
    if curve is None:
        return None
    if not isinstance(curve, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame with columns {CURVE_COLUMNS}, got {type(curve).__name__}")
    missing = [c for c in CURVE_COLUMNS if c not in curve.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}; a learning-curve table needs {CURVE_COLUMNS}")
    if curve.empty:
        return None  # nothing was recorded: the same as no curve
    if T is not None:
        for column in ("train_exp", "eval_exp"):
            values = pd.to_numeric(curve[column], errors="coerce")
            outside = curve[column][values.isna() | (values < 0) | (values >= T)]
            if not outside.empty:
                raise ValueError(f"{name}.{column} must be an experience in 0..{T - 1} (T={T} from R), "
                                 f"got {outside.iloc[0]!r}")
    return curve


def _divide(numerator: np.ndarray, denominator: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """numerator / denominator at the valid entries, silently: a quotient that overflows (a denominator of the order
    of 1e-308) becomes inf, which ``_mean`` skips as undefined."""
    with np.errstate(over="ignore"):
        return np.divide(numerator, denominator, out=np.full(valid.shape, np.nan), where=valid)[valid]


def _mean(terms) -> float:
    """Mean of the defined (finite) terms; NaN if there are none."""
    t = np.asarray(terms, dtype=float).ravel()
    t = t[np.isfinite(t)]
    return float(t.mean()) if t.size else _NAN


# ----------------------------------------------------------------------------------------- performance maintenance


def performance_maintenance(R) -> float:
    """Performance maintenance, l2metrics' ``perf_maintenance_mrlep`` (Baker et al. 2023; negative = forgetting).

    For each experience j, the mean over its later evaluation blocks i > j of R[i, j] − R[j, j], the "most recent
    learning evaluation performance" being the evaluation right after j's (single) training, R[j, j]; then the mean
    over the experiences that have such terms (j < T−1):

        PM = mean_{j < T-1} [ mean_{i > j} (R[i, j] − R[j, j]) ]

    A mean of per-task means, as l2metrics aggregates (not a mean over all (i, j) pairs). A term needs R[i, j] and
    R[j, j]; NaN for T = 1.
    """
    a = _matrix(R)
    per_task = [_mean(a[j + 1:, j] - a[j, j]) for j in range(a.shape[0] - 1)]
    return _mean(per_task)


# --------------------------------------------------------------------------------------------------------- transfer


def _transfer(R, b, forward: bool, kind: str) -> float:
    """Mean over l2metrics' valid task pairs of the ratio or contrast of P[i, j] (before) and R[i, j] (after)."""
    a = _matrix(R)
    T = a.shape[0]
    before = np.vstack([_baseline(b, T), a[:-1]])  # before[i] = evaluation block just before experience i is trained
    # Forward: experience i trained before j was ever trained (j > i); backward: after j's training (j < i).
    pairs = np.triu(np.ones((T, T), dtype=bool), k=1) if forward else np.tril(np.ones((T, T), dtype=bool), k=-1)
    pairs &= np.isfinite(a) & np.isfinite(before)
    if kind == "ratio":
        numerator, denominator = a, before
    else:
        numerator, denominator = a - before, a + before
    valid = pairs & (denominator != 0)  # l2metrics skips a pair whose denominator is 0
    return _mean(_divide(numerator, denominator, valid))


def forward_transfer_ratio(R, b) -> float:
    """Forward transfer ratio, l2metrics' ``forward_transfer_ratio`` (Baker et al. 2023; > 1 = positive transfer).

    For every pair (i, j) with i < j (task i learned before task j is first trained), the accuracy on j in the
    evaluation block after training i over the one before it:

        FT_ratio = mean_{i < j} R[i, j] / P[i, j],   P[0] = b, P[i] = R[i-1] for i ≥ 1

    A pair is skipped when an entry is missing or P[i, j] = 0; NaN for T = 1. In class-IL, R[i-1, j] = 0 for j ≥ i,
    so only the pairs i = 0 remain and read the untrained model's b (docs/METRICS.md, "FWT is n/a in class-IL").
    """
    return _transfer(R, b, forward=True, kind="ratio")


def forward_transfer_contrast(R, b) -> float:
    """Forward transfer contrast, l2metrics' ``forward_transfer_contrast`` (Baker et al. 2023), in [−1, 1].

    The pairs of ``forward_transfer_ratio`` with the contrast instead of the ratio:

        FT_contrast = mean_{i < j} (R[i, j] − P[i, j]) / (R[i, j] + P[i, j])

    A pair is skipped when an entry is missing or R[i, j] + P[i, j] = 0; NaN for T = 1.
    """
    return _transfer(R, b, forward=True, kind="contrast")


def backward_transfer_ratio(R) -> float:
    """Backward transfer ratio, l2metrics' ``backward_transfer_ratio`` (Baker et al. 2023; < 1 = forgetting).

    For every pair (i, j) with j < i (task i trained after task j), the accuracy on j after training i over the one
    just before training i:

        BT_ratio = mean_{j < i} R[i, j] / R[i-1, j]

    A pair is skipped when an entry is missing or R[i-1, j] = 0; NaN for T = 1.
    """
    return _transfer(R, None, forward=False, kind="ratio")


def backward_transfer_contrast(R) -> float:
    """Backward transfer contrast, l2metrics' ``backward_transfer_contrast`` (Baker et al. 2023), in [−1, 1].

        BT_contrast = mean_{j < i} (R[i, j] − R[i-1, j]) / (R[i, j] + R[i-1, j])

    A pair is skipped when an entry is missing or the sum is 0; NaN for T = 1.
    """
    return _transfer(R, None, forward=False, kind="contrast")


# ------------------------------------------------------------------------------------------------- learning curves


def learning_curve(curve, experience: int) -> pd.Series:
    """The learning curve of ``experience``: accuracy on it while it is trained, indexed by ``exp_step`` (sorted).

    Rows with ``train_exp == eval_exp == experience`` and a finite value; several rows at one step are averaged (as
    l2metrics averages several values of one learning experience). Empty when there are none.
    """
    frame = _curve(curve, "curve")
    if frame is None:
        return pd.Series(dtype=float, name="value")
    rows = frame[(frame["train_exp"] == experience) & (frame["eval_exp"] == experience)]
    values = pd.to_numeric(rows["value"], errors="coerce")
    rows = rows.assign(value=values)[np.isfinite(values.to_numpy(dtype=float))]
    return rows.groupby("exp_step", sort=True)["value"].mean().astype(float)


def _area(series: pd.Series) -> float:
    """Trapezoidal area under a curve indexed by exp_step (NaN with fewer than two points)."""
    if len(series) < 2:
        return _NAN
    x = series.index.to_numpy(dtype=float)
    y = series.to_numpy(dtype=float)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def relative_performance(R, expert_R, curve=None, expert_curve=None) -> float:
    """Performance relative to the single-task expert, l2metrics' ``ste_rel_perf`` (Baker et al. 2023; 1 = as the STE).

    With both curves: for each experience j, the area under the learner's learning curve of j over the area under
    the expert's, on the exp_steps both logged (l2metrics truncates both to the shorter one), by the trapezoidal rule
    over exp_step (l2metrics sums one value per learning experience; clbench's points are not evenly spaced):

        RP = mean_j  area(learner's curve of j) / area(expert's curve of j)

    Without them (either None or empty), the boundary values stand for the curves:

        RP = mean_j  R[j, j] / expert_R[j, j]

    A term is skipped when the expert's area (or R_ste[j, j]) is 0, when fewer than two common steps exist, or when
    an entry is missing; ``expert_R=None`` leaves only the curve form.
    """
    a = _matrix(R)
    T = a.shape[0]
    expert = None if expert_R is None else _matrix(expert_R, "expert_R", a.shape)
    learner_curves, expert_curves = _curve(curve, "curve", T), _curve(expert_curve, "expert_curve", T)
    if learner_curves is not None and expert_curves is not None:
        terms = []
        for j in range(T):
            own, ste = learning_curve(learner_curves, j), learning_curve(expert_curves, j)
            common = own.index.intersection(ste.index).sort_values()
            own_area, ste_area = _area(own.loc[common]), _area(ste.loc[common])
            terms.append(own_area / ste_area if np.isfinite(ste_area) and ste_area != 0 else _NAN)
        return _mean(terms)
    if expert is None:
        return _NAN
    own, ste = np.diag(a), np.diag(expert)
    valid = np.isfinite(own) & np.isfinite(ste) & (ste != 0)
    return _mean(_divide(own, ste, valid))


# ----------------------------------------------------------------------------------------------- sample efficiency


def moving_average(values) -> np.ndarray:
    """l2metrics' flat moving average of a learning curve (``_localutil.smooth`` with its default window).

    Window w = min(⌊0.2·n⌋, 100) points for a curve of n points, no smoothing when w < 3 (n < 15). The curve is
    mirrored at both ends without repeating the end point (numpy's "reflect"), and point t averages
    values[t − w + ⌊w/2⌋ .. t + ⌊w/2⌋ − 1], l2metrics' alignment (as centred as an even window can be, one point
    behind the centre for odd w). Returns a new array of the same length.
    """
    y = np.array(values, dtype=float).ravel()
    n = y.size
    w = min(int(0.2 * n), 100)
    if w < 3:
        return y
    padded = np.pad(y, w - 1, mode="reflect")
    averaged = np.convolve(padded, np.full(w, 1.0 / w), mode="valid")  # averaged[k] = mean(padded[k .. k+w-1])
    start = w // 2 - 1
    return averaged[start:start + n]


def saturation(series: pd.Series) -> tuple[float, float]:
    """Saturation value and the exp_step that reaches it, l2metrics' ``get_block_saturation_perf``.

    The saturation value is the maximum of the curve's ``moving_average``; the step is the exp_step of the first
    point where the smoothed curve attains it (l2metrics counts learning experiences to it, here optimizer steps).
    (NaN, NaN) for an empty curve.
    """
    if len(series) == 0:
        return _NAN, _NAN
    smoothed = moving_average(series.to_numpy(dtype=float))
    first = int(np.argmax(smoothed))  # argmax returns the first maximum
    return float(smoothed[first]), float(series.index[first])


def _slope(series: pd.Series) -> float:
    """Least-squares slope of value over exp_step (l2metrics' np.polyfit of degree 1), without numpy's warnings."""
    x = series.index.to_numpy(dtype=float)
    y = series.to_numpy(dtype=float)
    dx = x - x.mean()
    spread = float(np.sum(dx * dx))
    return float(np.sum(dx * (y - y.mean())) / spread) if spread > 0 else _NAN


def _task_sample_efficiency(own: pd.Series, ste: pd.Series) -> float:
    if len(own) == 0 or len(ste) == 0:
        return _NAN
    own_value, own_step = saturation(own)
    ste_value, ste_step = saturation(ste)
    # l2metrics: saturation at the first point (0 experiences to saturation) is "saturation not achieved".
    if own_step == own.index[0] or ste_step == ste.index[0] or not (own_step > 0 and ste_value > 0):
        return _NAN
    if own_value < SATURATION_FLOOR * ste_value or _slope(own) < 0:
        return 0.0  # l2metrics: the learning curve violates the metric's assumptions
    return (own_value / ste_value) * (ste_step / own_step)


def sample_efficiency(curve, expert_curve) -> float:
    """Sample efficiency relative to the single-task expert, l2metrics' ``sample_efficiency`` (Baker et al. 2023).

    For each experience j of the learner's curve, with (s, k) = ``saturation`` of its learning curve (saturation
    value, steps to it) and (s_ste, k_ste) of the expert's:

        SE_j = (s / s_ste) · (k_ste / k)

    SE_j = 0 when s < 0.2 · s_ste or the learner's curve has a negative least-squares slope; SE_j is skipped when
    either curve saturates at its first point or the expert has no curve of j. SE = mean_j SE_j. NaN when either
    curve is absent (a single boundary value has no saturation to find).
    """
    learner_curves, expert_curves = _curve(curve, "curve"), _curve(expert_curve, "expert_curve")
    if learner_curves is None or expert_curves is None:
        return _NAN
    experiences = sorted(set(learner_curves.loc[learner_curves["train_exp"] == learner_curves["eval_exp"],
                                                 "train_exp"]))
    return _mean([_task_sample_efficiency(learning_curve(learner_curves, j), learning_curve(expert_curves, j))
                  for j in experiences])


# ---------------------------------------------------------------------------------------------------------- all


def lifelong_metrics(R, b, curve, expert_R, expert_curve) -> dict[str, float]:
    """All the L2M lifelong-learning metrics of one run, keyed by ``LIFELONG_METRICS`` in that order.

    ``R`` (T×T) and ``b`` (length T) are the run's boundary accuracies, ``curve`` its learning-curve table or None;
    ``expert_R`` (T×T) and ``expert_curve`` those of the single-task expert run (clbench's ``separate`` on the same
    stream, settings and seed). ``b`` and ``expert_R`` may be None: the terms that read them are skipped. Shapes are
    checked (ValueError naming the argument); a metric that is undefined is NaN.
    """
    a = _matrix(R)
    T = a.shape[0]
    b = _baseline(b, T)
    expert = None if expert_R is None else _matrix(expert_R, "expert_R", a.shape)
    curve, expert_curve = _curve(curve, "curve", T), _curve(expert_curve, "expert_curve", T)
    values = {
        "perf_maintenance": performance_maintenance(a),
        "ft_ratio": forward_transfer_ratio(a, b),
        "ft_contrast": forward_transfer_contrast(a, b),
        "bt_ratio": backward_transfer_ratio(a),
        "bt_contrast": backward_transfer_contrast(a),
        "rel_perf": relative_performance(a, expert, curve, expert_curve),
        "sample_eff": sample_efficiency(curve, expert_curve),
    }
    return {name: values[name] for name in LIFELONG_METRICS}
