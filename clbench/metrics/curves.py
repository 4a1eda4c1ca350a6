"""Metrics of continual-evaluation curves: accuracy measured *during* training (numpy and pandas, see docs/METRICS.md).

A curve is the rows of one run and one metric of ``curves.csv``: at every evaluation point ``p = (train_exp, exp_step)``
(``exp_step`` optimizer steps done within experience ``train_exp``) the accuracy ``A_j(p)`` on each experience ``j``
seen so far (``j <= train_exp``) and on the next one. ``k = 1 + max(train_exp)`` experiences were trained. Points are
ordered by ``(train_exp, exp_step)``; ``global_step`` and ``samples_seen`` must not decrease along that order.

The timeline. The point ``(e, 0)`` of an experience ``e >= 1`` is taken before its first step, on the model of the last
point of experience ``e - 1`` (same ``global_step``). min-ACC and WF leave it out, so that every other point follows at
least one optimizer step: that is the reference code's schedule (Mattdl/ContinualEvaluation evaluates after training
iterations, and before the first iteration of the stream only) and the paper's "n > |T_i|" (the end of experience i is
not "after it was learned"). LCA reads it as Z_0, the accuracy before training on the experience (A-GEM's b = 0); in
A_AUC it has zero width.

Missing values. A NaN value is a point not evaluated. Within an experience's term, missing points are skipped (the
minimum and the windows run over the evaluations present); a metric that averages terms over experiences is NaN when
any experience's term is undefined, never an average over fewer experiences. Undefined metrics are NaN, never a warning.
Every function takes a DataFrame with at least the columns of ``CURVE_COLUMNS``, in any row order, returns a Python
float, and never modifies its input.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd

__all__ = [
    "CURVE_COLUMNS",
    "CURVE_METRICS",
    "anytime_accuracy",
    "curve_metrics",
    "learning_curve_area",
    "min_acc",
    "wc_acc",
    "windowed_forgetting",
]

CURVE_COLUMNS = ["train_exp", "exp_step", "global_step", "samples_seen", "eval_exp", "value"]
CURVE_METRICS = ["min_acc", "wc_acc", "wf10", "lca", "aauc"]

_NAN = float("nan")
_POINT = ["train_exp", "exp_step"]
_COUNTERS = ["train_exp", "exp_step", "global_step", "samples_seen", "eval_exp"]


class _Curve:
    """A validated curve: ``acc`` has one row per point (in time order) and one column per experience 0..k-1."""

    def __init__(self, curve):
        if not isinstance(curve, pd.DataFrame):
            raise TypeError(f"curve must be a pandas DataFrame, got {type(curve).__name__}")
        missing = [c for c in CURVE_COLUMNS if c not in curve.columns]
        if missing:
            raise ValueError(f"curve lacks the column(s) {', '.join(missing)} (needs {', '.join(CURVE_COLUMNS)})")
        for key in ("run_id", "metric"):
            if key in curve.columns and curve[key].nunique(dropna=False) > 1:
                found = sorted(map(str, curve[key].unique()))
                raise ValueError(f"curve must hold one {key}, got {len(found)}: {', '.join(found[:5])}")
        rows = curve.loc[:, CURVE_COLUMNS].copy()  # every later step works on this copy, never on the caller's frame
        for name in _COUNTERS:
            rows[name] = _counter(rows[name], name)
        rows["value"] = pd.to_numeric(rows["value"], errors="raise").astype(float)
        duplicated = rows.duplicated(["train_exp", "exp_step", "eval_exp"])
        if duplicated.any():
            first = rows.loc[duplicated].iloc[0]
            raise ValueError(
                f"curve has several rows for train_exp={first.train_exp}, exp_step={first.exp_step}, "
                f"eval_exp={first.eval_exp}: pass the rows of one run and one metric"
            )
        points = rows.groupby(_POINT, sort=True)[["global_step", "samples_seen"]]
        if len(rows) and (points.nunique() > 1).any().any():
            raise ValueError(
                "curve has rows of one point (train_exp, exp_step) with different global_step or samples_seen"
            )
        self.points = points.first().reset_index()  # sorted by (train_exp, exp_step)
        for name in ("global_step", "samples_seen"):
            if (np.diff(self.points[name].to_numpy()) < 0).any():
                raise ValueError(f"{name} decreases along the points ordered by (train_exp, exp_step)")
        self.k = int(self.points["train_exp"].max()) + 1 if len(self.points) else 0
        wide = rows.pivot(index=_POINT, columns="eval_exp", values="value")
        # columns 0..k-1 (an experience never evaluated is a column of NaN); rows in the order of self.points
        self.acc = wide.reindex(index=pd.MultiIndex.from_frame(self.points[_POINT]), columns=range(self.k))
        self.train_exp = self.points["train_exp"].to_numpy()
        self.exp_step = self.points["exp_step"].to_numpy()
        # the timeline: every point but (e, 0) for e >= 1, which repeats the model of experience e-1's last point
        self.timeline = ~((self.train_exp >= 1) & (self.exp_step == 0))

    def values(self, eval_exp: int, mask: np.ndarray) -> np.ndarray:
        """A_j at the points selected by mask, in time order, missing evaluations dropped."""
        column = self.acc[eval_exp].to_numpy(dtype=float)[mask]
        return column[~np.isnan(column)]

    def current_accuracy(self) -> float:
        """A_{k-1} at the final point: the experience being trained, at the last point of the stream."""
        if self.k == 0:
            return _NAN
        return float(self.acc[self.k - 1].to_numpy(dtype=float)[-1])


def _counter(column: pd.Series, name: str) -> pd.Series:
    numbers = pd.to_numeric(column, errors="raise")
    if numbers.isna().any() or (numbers < 0).any() or (numbers != np.floor(numbers)).any():
        raise ValueError(f"column {name} must hold non-negative integers")
    return numbers.astype(np.int64)


def _whole_number(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _mean_of_all(terms: list[float]) -> float:
    """Mean over every experience's term; NaN if there is none or any is undefined (see the module docstring)."""
    if not terms or any(np.isnan(terms)):
        return _NAN
    return float(np.mean(terms))


def _min_acc(c: _Curve) -> float:
    terms = []
    for old in range(c.k - 1):
        after_learned = c.values(old, c.timeline & (c.train_exp > old))
        terms.append(float(after_learned.min()) if after_learned.size else _NAN)
    return _mean_of_all(terms)


def _wc_acc(c: _Curve) -> float:
    if c.k == 0:
        return _NAN
    if c.k == 1:
        return c.current_accuracy()  # the paper's formula with k = 1: no old experience, weight 1 on the current one
    return (1 / c.k) * c.current_accuracy() + (1 - 1 / c.k) * _min_acc(c)


def _windowed_forgetting(c: _Curve, window: int) -> float:
    if c.timeline.sum() < 2:
        return _NAN  # no optimizer step between two evaluations: nothing could drop
    terms = []
    for exp in range(c.k):
        a = c.values(exp, c.timeline & (c.train_exp >= exp))
        # two points m < n lie in one window of `window` consecutive evaluations iff n - m <= window - 1;
        # the reference code starts its maximum at 0, so one evaluation (no pair) gives 0
        drops = [0.0] + [float(np.max(a[:-lag] - a[lag:])) for lag in range(1, min(window, a.size))]
        terms.append(max(drops) if a.size else _NAN)
    return _mean_of_all(terms)


def _learning_curve_area(c: _Curve, beta: int) -> float:
    terms = []
    for exp in range(c.k):
        own = c.train_exp == exp
        first = np.flatnonzero(own)[: beta + 1]  # Z_0 .. Z_beta: the first beta+1 points of the experience
        z = c.acc[exp].to_numpy(dtype=float)[first]
        terms.append(float(z.mean()) if first.size == beta + 1 and not np.isnan(z).any() else _NAN)
    return _mean_of_all(terms)


def _anytime_accuracy(c: _Curve) -> float:
    if c.k == 0:
        return _NAN
    a = c.acc.to_numpy(dtype=float)
    seen = np.arange(c.k)[None, :] <= c.train_exp[:, None]
    complete = ~(np.isnan(a) & seen).any(axis=1)  # a point's average needs every seen experience
    average = np.where(seen, a, 0.0).sum(axis=1)[complete] / seen.sum(axis=1)[complete]
    samples = c.points["samples_seen"].to_numpy(dtype=float)[complete]
    if samples.size < 2 or samples[-1] <= samples[0]:
        return _NAN
    # Koh et al.: each query's accuracy stands for the samples seen since the previous query (right Riemann sum)
    return float(np.sum(average[1:] * np.diff(samples)) / (samples[-1] - samples[0]))


def min_acc(curve: pd.DataFrame) -> float:
    """min-ACC, average minimum accuracy (De Lange, van de Ven & Tuytelaars, ICLR 2023) at the end of the stream.

    min-ACC = 1/(k-1) Σ_{i<k-1} min_{p after i} A_i(p), "p after i" the timeline points with train_exp > i: after at
    least one optimizer step on a later experience (the paper's n > |T_i|, as its code, which updates the minimum of
    every task but the one being trained). NaN for k = 1, or when an old experience has no evaluation after it.
    """
    return _min_acc(_Curve(curve))


def wc_acc(curve: pd.DataFrame) -> float:
    """WC-ACC, worst-case accuracy (De Lange et al., ICLR 2023) at the final point of the stream.

    WC-ACC = (1/k) A_{k-1}(final point) + (1 - 1/k) min-ACC, the formula of the paper and of its code. With k = 1 it
    is A_0 at the final point (weight 0 on the undefined min-ACC, as the code's mean over one value).
    """
    return _wc_acc(_Curve(curve))


def windowed_forgetting(curve: pd.DataFrame, window: int = 10) -> float:
    """WF_w, windowed forgetting (De Lange et al., ICLR 2023), w = window.

    For each experience j, over its evaluations at the timeline points where it is seen (train_exp >= j), in time
    order a_0, a_1, ...: F_j = max(0, max over m < n with n - m <= w - 1 of a_m - a_n), the largest drop inside any
    window of w consecutive evaluations; WF_w = mean over j = 0..k-1 of F_j, as the reference code (a maximum started
    at 0, so F_j = 0 for a single evaluation; averaged over every seen experience). NaN if an experience has no
    evaluation, or the curve fewer than two timeline points (no optimizer step between two evaluations).
    """
    return _windowed_forgetting(_Curve(curve), _whole_number(window, "window", 2))


def learning_curve_area(curve: pd.DataFrame, beta: int = 10) -> float:
    """LCA_beta, learning curve area (Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM",
    ICLR 2019), with the paper's formula.

    Z_b(j) = A_j at the b-th point of experience j (b = 0: exp_step 0, before its first step);
    LCA_beta = 1/k Σ_j 1/(beta+1) Σ_{b=0..beta} Z_b(j). Points are every N steps (N = 1: the paper's mini-batches).
    NaN if an experience has fewer than beta+1 points or misses A_j at one of them. The authors' notebook integrates
    with the trapezoidal rule and divides by beta instead (docs/METRICS.md says why clbench keeps the formula).
    """
    return _learning_curve_area(_Curve(curve), _whole_number(beta, "beta", 1))


def anytime_accuracy(curve: pd.DataFrame) -> float:
    """A_AUC, area under the accuracy curve (Koh, Kim, Ha, Choi & Lee, ICLR 2022, i-Blurry), normalised.

    At each point the average accuracy over the seen experiences ā(p) = mean_{j <= train_exp} A_j(p); with the points
    in order and x = samples_seen, A_AUC = Σ_{q>=1} ā(p_q) (x_q - x_{q-1}) / (x_last - x_first): the paper's
    Σ f(i·Δn)·Δn for uneven Δn, divided by the samples seen, as the authors' code (the mean of evenly spaced queries),
    so a constant accuracy a gives a. Points missing a seen experience are skipped; NaN with under two points left or
    no sample consumed between them.
    """
    return _anytime_accuracy(_Curve(curve))


def curve_metrics(curve: pd.DataFrame) -> dict[str, float]:
    """All metrics of CURVE_METRICS for one run: min-ACC, WC-ACC, WF_10, LCA_10 and A_AUC, in that order."""
    c = _Curve(curve)
    values = {
        "min_acc": _min_acc(c),
        "wc_acc": _wc_acc(c),
        "wf10": _windowed_forgetting(c, 10),
        "lca": _learning_curve_area(c, 10),
        "aauc": _anytime_accuracy(c),
    }
    return {name: values[name] for name in CURVE_METRICS}
