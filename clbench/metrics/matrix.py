"""Continual-learning metrics as pure functions of the accuracy matrix (numpy only, see docs/METRICS.md).

``R[i, j]`` is the test accuracy on experience ``j`` right after training on experience ``i``; ``b[j]`` is the
accuracy on experience ``j`` before any training (the row ``step = -1``). Every function takes a T×T ``R`` (and a
length-T ``b``), returns a Python float, and never modifies its inputs.

Missing entries. An entry that was not evaluated is NaN. Each metric is a mean of per-experience *terms*; a term is
defined when every entry it reads is present, undefined terms are skipped, and the metric is the mean of the defined
terms (NaN when none is defined, never a warning). Concretely:

- ACC: term j reads R[T-1, j].                 - LA: term j reads R[j, j].
- BWT: term j reads R[T-1, j] and R[j, j].     - FWT: term j reads R[j-1, j] and b[j].
- AIA: term i reads the whole row prefix R[i, 0..i] (a partly evaluated row is skipped).
- forgetting: term j reads R[T-1, j] and R[j, j]; the max runs over the present entries R[l, j], l ≤ T-2.
  Requiring the diagonal makes BWT and forgetting use the same terms, so forgetting ≥ −BWT holds for any
  missing pattern.

The runner should always evaluate the final row completely; otherwise ACC averages a subset of experiences.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "avalanche_forgetting",
    "average_incremental_accuracy",
    "backward_transfer",
    "clear_accuracy",
    "clear_backward_transfer",
    "clear_forward_transfer",
    "continuum_backward_transfer",
    "forgetting",
    "forward_transfer",
    "gem_backward_transfer",
    "gem_forward_transfer",
    "learning_accuracy",
]

_NAN = float("nan")


def _matrix(R) -> np.ndarray:
    """A float copy of R, checked to be a non-empty square matrix."""
    a = np.array(R, dtype=float)  # np.array copies: the caller's object is never touched
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"R must be a square T×T accuracy matrix, got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("R is empty: an accuracy matrix needs at least one experience (T ≥ 1)")
    return a


def _baseline(b, T: int) -> np.ndarray | None:
    if b is None:
        return None
    v = np.array(b, dtype=float)
    if v.ndim != 1 or v.shape[0] != T:
        raise ValueError(f"b must be a vector of length T={T} (one accuracy per experience), got shape {v.shape}")
    return v


def _mean(terms) -> float:
    """Mean of the defined (non-NaN) terms; NaN if there are none."""
    t = np.asarray(terms, dtype=float)
    t = t[~np.isnan(t)]
    return float(t.mean()) if t.size else _NAN


def accuracy(R) -> float:
    """ACC = (1/T) Σ_j R[T-1, j] — average final accuracy (Lopez-Paz & Ranzato 2017, GEM)."""
    return _mean(_matrix(R)[-1])


def backward_transfer(R) -> float:
    """BWT = 1/(T-1) Σ_{j<T-1} (R[T-1, j] − R[j, j]) (GEM). Negative means forgetting; NaN for T = 1."""
    a = _matrix(R)
    return _mean(a[-1, :-1] - np.diag(a)[:-1])


def forward_transfer(R, b=None) -> float:
    """FWT = 1/(T-1) Σ_{j≥1} (R[j-1, j] − b[j]) (GEM). NaN for T = 1 or without b."""
    a = _matrix(R)
    v = _baseline(b, a.shape[0])
    if v is None:
        return _NAN
    return _mean(np.diagonal(a, 1) - v[1:])


def forgetting(R) -> float:
    """F = 1/(T-1) Σ_{j<T-1} (max_{l≤T-2} R[l, j] − R[T-1, j]) (Chaudhry et al. 2018, RWalk). Positive = forgot.

    A term needs R[j, j] and R[T-1, j]; the max runs over the present entries (see the module docstring).
    """
    a = _matrix(R)
    past = a[:-1, :-1]  # rows l ≤ T-2, columns j ≤ T-2
    best = np.where(np.isnan(past), -np.inf, past).max(axis=0, initial=-np.inf)
    terms = best - a[-1, :-1]
    terms[np.isnan(np.diag(a)[:-1])] = np.nan
    return _mean(terms)


def learning_accuracy(R) -> float:
    """LA = (1/T) Σ_j R[j, j] — accuracy right after learning each experience (Riemer et al. 2019, MER)."""
    return _mean(np.diag(_matrix(R)))


def average_incremental_accuracy(R) -> float:
    """AIA = (1/T) Σ_i (1/(i+1)) Σ_{j≤i} R[i, j] (Rebuffi et al. 2017, iCaRL). A partly evaluated row is skipped."""
    a = _matrix(R)
    return _mean([a[i, : i + 1].mean() for i in range(a.shape[0])])


# --- peers' variants, under their own names (not clbench's defaults) ---------------------------------------------


def avalanche_forgetting(R) -> float:
    """Avalanche's stream forgetting: mean over j < T-1 of (R[j, j] − R[T-1, j]); equals −BWT."""
    return -backward_transfer(R)


def gem_backward_transfer(R) -> float:
    """BWT as printed by the GEM reference code: the same sum divided by T instead of T−1 (NaN for T = 1)."""
    T = _matrix(R).shape[0]
    return backward_transfer(R) * (T - 1) / T


def gem_forward_transfer(R, b=None) -> float:
    """FWT as printed by the GEM reference code: the same sum divided by T instead of T−1 (NaN for T = 1)."""
    T = _matrix(R).shape[0]
    return forward_transfer(R, b) * (T - 1) / T


def continuum_backward_transfer(R) -> float:
    """continuum's BWT: mean of R[i, j] − R[j, j] over all pairs i > j."""
    a = _matrix(R)
    i, j = np.tril_indices(a.shape[0], -1)
    return _mean(a[i, j] - a[j, j])


def clear_accuracy(R) -> float:
    """CLEAR's accuracy: mean of the lower triangle of R, diagonal included."""
    a = _matrix(R)
    return _mean(a[np.tril_indices(a.shape[0])])


def clear_backward_transfer(R) -> float:
    """CLEAR's BWT: mean of the strict lower triangle of R (accuracies on already-trained experiences)."""
    a = _matrix(R)
    return _mean(a[np.tril_indices(a.shape[0], -1)])


def clear_forward_transfer(R) -> float:
    """CLEAR's FWT: mean of the strict upper triangle of R (accuracies on not-yet-trained experiences)."""
    a = _matrix(R)
    return _mean(a[np.triu_indices(a.shape[0], 1)])
