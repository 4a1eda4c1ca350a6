"""Gradient Episodic Memory (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017).

After each experience, `patterns_per_exp` of its training samples (drawn at random, as Avalanche does) are kept.
At every step, with g the mini-batch gradient and G (k × p) the gradients of the loss on each of the k stored
experiences' memories (task-IL masked like the training loss; one forward/backward per experience), GEM asks that
the update not increase any of those losses: G g̃ ≥ 0. When g already satisfies it, g is used unchanged; otherwise
g̃ = g + Gᵀv* with v* the solution of the paper's dual QP

    min_v  ½ vᵀ G Gᵀ v + gᵀ Gᵀ v    s.t.  v ≥ memory_strength,

solved with `quadprog` in float64. A positive `memory_strength` (the paper's γ, applied as a lower bound on v as in
the authors' code and Avalanche) biases the update towards backward transfer.

Defaults follow the paper's experiments (`run_experiments.sh`: `--n_memories 256 --memory_strength 0.5` on MNIST
rotations/permutations and CIFAR-100); Avalanche's GEM has the same `memory_strength=0.5` default and requires
`patterns_per_exp`. One difference on purpose: Avalanche adds 1e-3·I to G Gᵀ, which lets the projected gradient
violate a constraint by up to 1e-3·v_k; clbench adds a jitter relative to the scale of G Gᵀ (1e-10 × its mean
diagonal) — enough for quadprog's Cholesky factorisation when memory gradients are (nearly) linearly dependent, small
enough that G g̃ ≥ 0 holds to floating-point precision.
"""

from __future__ import annotations

import numpy as np
import quadprog
import torch

from clbench.errors import UsageError
from clbench.strategies._episodic import EpisodicGradientStrategy
from clbench.strategies.registry import register

QP_JITTER = 1e-10  # relative to the mean diagonal of G Gᵀ


@register("gem")
class GEM(EpisodicGradientStrategy):
    """GEM with `patterns_per_exp` stored samples per experience and margin `memory_strength` (γ ≥ 0)."""

    def __init__(self, patterns_per_exp: int = 256, memory_strength: float = 0.5):
        self.patterns_per_exp = patterns_per_exp
        self.memory_strength = memory_strength

    def validate(self):
        super().validate()
        if self.memory_strength < 0:
            raise UsageError(f"memory_strength must be >= 0, got {self.memory_strength}")

    def project_gradients(self, batch):
        memories = self.experience_memories()
        if not memories:
            return
        g = self.current_gradient()
        G = torch.stack([self.memory_gradient(m) for m in memories])
        if bool((G @ g < 0).any()):  # solve the QP only when a constraint is violated
            self.set_gradient(solve_dual(G, g, self.memory_strength))
            self.n_projections_ += 1


def solve_dual(G: torch.Tensor, g: torch.Tensor, margin: float) -> torch.Tensor:
    """g̃ = g + Gᵀv*, v* = argmin ½ vᵀ G Gᵀ v + gᵀ Gᵀ v s.t. v ≥ margin; with margin 0 this is the dual of
    min ½‖g̃ − g‖² s.t. G g̃ ≥ 0, and for any margin its KKT conditions give G g̃ ≥ 0."""
    Gd, gd = G.double(), g.double()
    P = (Gd @ Gd.T).cpu().numpy()
    k = len(P)
    P = 0.5 * (P + P.T) + QP_JITTER * max(P.trace() / k, np.finfo(np.float64).tiny) * np.eye(k)
    q = (Gd @ gd).cpu().numpy()
    # quadprog solves min ½ xᵀPx − aᵀx s.t. Cᵀx ≥ b; here a = −G g, C = I, b = margin.
    v = quadprog.solve_qp(P, -q, np.eye(k), np.full(k, float(margin)))[0]
    return (gd + Gd.T @ torch.from_numpy(v).to(Gd.device)).to(g.dtype)
