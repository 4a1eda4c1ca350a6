"""Averaged GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM", ICLR 2019).

Like GEM, after each experience `patterns_per_exp` of its training samples (drawn at random) are kept. A-GEM replaces
GEM's one constraint per experience by a single one on the *average* memory loss: at every step the reference
gradient g_ref is the gradient of the loss (task-IL masked like the training loss) on `sample_size` samples drawn
uniformly from the whole memory, and when the mini-batch gradient conflicts with it (g·g_ref < 0) it is projected

    g̃ = g − (g·g_ref / g_ref·g_ref) g_ref,

so that g̃·g_ref = 0; otherwise g is used unchanged. Both dot products are taken in float64.

Hyperparameters are Avalanche's AGEM's: `patterns_per_exp` (required there; 256 here, GEM's per-task memory) and
`sample_size=64` (Avalanche's default). Avalanche draws the reference batch group-balanced (sample_size // k per
experience); clbench draws it uniformly from the memory, which holds the same number of samples per experience, so it
is balanced in expectation — the paper's "random subset of the episodic memory".

Mammoth (aimagelab/mammoth, models/agem.py) computes `buffer_size // n_tasks` samples per task but, since its commit
0d727a7 (January 2022), stores only the task's last mini-batch (`samples_per_task` is never used): with its seq-mnist
best arguments (buffer 500, batch 10) that is 10 samples per experience, not 100. That is a defect of that code, not
a protocol, and clbench does not copy it; the `mammoth-seq-mnist` preset runs A-GEM at 100 per experience (the
protocol) and at 10 (`patterns_per_exp=10`, Mammoth's effective memory) to show how much of the gap it explains.
The neurips2020 version of Mammoth, which produced the DER paper's A-GEM numbers, stored the full per-task share.
"""

from __future__ import annotations

import torch

from clbench.errors import UsageError
from clbench.strategies._episodic import EpisodicGradientStrategy
from clbench.strategies.registry import register


@register("agem")
class AGEM(EpisodicGradientStrategy):
    """A-GEM with `patterns_per_exp` stored samples per experience and `sample_size` memory samples per step."""

    def __init__(self, patterns_per_exp: int = 256, sample_size: int = 64):
        self.patterns_per_exp = patterns_per_exp
        self.sample_size = sample_size

    def validate(self):
        super().validate()
        if self.sample_size < 1:
            raise UsageError(f"sample_size must be at least 1, got {self.sample_size}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.reference_gradient_: torch.Tensor | None = None  # g_ref of the latest step, kept for inspection

    def project_gradients(self, batch):
        if self.memory_ is None:
            return
        picked = torch.randperm(len(self.memory_), generator=self.generator_)[: self.sample_size]
        ref = self.memory_gradient(self.memory_.subset(picked.to(self.device_)))
        self.reference_gradient_ = ref
        g = self.current_gradient()
        gd, refd = g.double(), ref.double()
        dot = gd @ refd
        if dot < 0:
            self.set_gradient((gd - (dot / (refd @ refd)) * refd).to(g.dtype))
            self.n_projections_ += 1
