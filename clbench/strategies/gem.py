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

Two memories (`memory`):
  * "per_experience" (default): `patterns_per_exp` random samples of each experience, kept unchanged (the paper, its
    code and Avalanche); the memory grows with the stream.
  * "shared": one memory of `mem_size` samples in total, refilled at the end of every experience and class-balanced
    with a quota that shrinks as classes arrive, as Mammoth's GEM (aimagelab/mammoth, models/gem.py, whose end_task
    calls fill_buffer in utils/buffer.py) has done since October 2023. With n the classes seen so far, every class
    keeps q = mem_size // n samples (floor: the remainder stays empty, as there): the stored samples of each earlier
    class are cut to their first q (drawn at random when stored, so what stays is a random subset) and q random
    training samples of each class of the experience are added. The samples of each experience still form one
    constraint, as in Mammoth (one gradient per task label present in the buffer): with 5 experiences of 2 classes
    and mem_size 200, experience 1's constraint has 200 samples while experience 2 trains, 100 while experience 3
    trains, and 40 at the end. `patterns_per_exp` does not apply.
    A class counts once per experience it comes in, so in domain-IL (every experience brings all labels again) n
    grows by the number of labels at each experience, Mammoth's formula (classes per task × tasks); by our reading
    Mammoth's fill_buffer then selects the current task's samples by label range (labels ≥ the past tasks'
    classes), which in domain-IL leaves none from the second task on, so that case has no Mammoth reference.
    Mammoth's GEM at the DER paper's release (tag neurips2020) stored buffer_size // n_tasks samples per task
    instead, i.e. "per_experience" with patterns_per_exp = mem_size // T.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import quadprog
import torch

from clbench.benchmarks.base import TensorData
from clbench.errors import UsageError
from clbench.strategies._episodic import EpisodicGradientStrategy
from clbench.strategies.registry import register

QP_JITTER = 1e-10  # relative to the mean diagonal of G Gᵀ


@register("gem")
class GEM(EpisodicGradientStrategy):
    """GEM with margin `memory_strength` (γ ≥ 0) and a memory of `patterns_per_exp` samples per experience
    (`memory="per_experience"`) or of `mem_size` samples in total, class-balanced and refilled after every experience
    (`memory="shared"`, Mammoth's)."""

    def __init__(self, patterns_per_exp: int = 256, memory_strength: float = 0.5,
                 memory: Literal["per_experience", "shared"] = "per_experience", mem_size: int | None = None):
        self.patterns_per_exp = patterns_per_exp
        self.memory_strength = memory_strength
        self.memory = memory
        self.mem_size = mem_size

    def validate(self):
        super().validate()
        if self.memory_strength < 0:
            raise UsageError(f"memory_strength must be >= 0, got {self.memory_strength}")
        if self.memory == "shared" and (self.mem_size is None or self.mem_size < 1):
            raise UsageError(f"memory='shared' needs mem_size >= 1, got {self.mem_size}")
        if self.memory == "per_experience" and self.mem_size is not None:
            raise UsageError(f"mem_size is only used with memory='shared', not {self.memory!r}; leave it unset "
                             "(patterns_per_exp sets the memory)")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.classes_stored_ = 0  # shared memory: classes seen so far, one per (experience, label) pair

    def after_experience(self, exp):
        if self.memory == "per_experience":
            super().after_experience(exp)
            return
        super(EpisodicGradientStrategy, self).after_experience(exp)  # the template's, without the per-experience store
        self._refill_shared(exp)

    def _refill_shared(self, exp):
        """Cut every stored class to the new quota, then add the experience's classes at that quota."""
        labels = exp.train.y.cpu()
        new_classes = torch.unique(labels)
        self.classes_stored_ += len(new_classes)
        quota = self.mem_size // self.classes_stored_
        blocks = []
        for block in self.experience_memories():
            y = block.y.cpu()
            keep = _cat([torch.nonzero(y == c).flatten()[:quota] for c in torch.unique(y).tolist()])
            blocks.append(block.subset(torch.sort(keep).values.to(block.y.device)))
        picked = []
        for c in new_classes.tolist():
            members = torch.nonzero(labels == c).flatten()
            picked.append(members[torch.randperm(len(members), generator=self.generator_)[:quota]])
        blocks.append(exp.train.subset(_cat(picked).to(exp.train.y.device)).to(self.device_))
        self.memory_ = TensorData.concat(blocks)
        self.memory_sizes_ = [len(b) for b in blocks]

    def project_gradients(self, batch):
        memories = [m for m in self.experience_memories() if len(m)]  # a shared memory may leave one empty
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


def _cat(indices: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(indices) if indices else torch.empty(0, dtype=torch.long)
