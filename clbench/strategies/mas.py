"""Memory Aware Synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, "Memory Aware Synapses: Learning what
(not) to forget", ECCV 2018).

After each experience the importance of every parameter is the mean, over that experience's training samples, of
the absolute gradient of the squared L2 norm of the model's output:

    Ω_new = (1/N) Σ_k | ∂ ‖f(x_k)‖²₂ / ∂θ |

No label enters it (MAS is unsupervised). It is folded into the running importance as Avalanche's MASPlugin does,

    Ω ← Ω_new after the first experience,   Ω ← alpha · Ω + (1 − alpha) · Ω_new after the later ones,

θ* is set to the parameters at that point, and later experiences are trained with

    loss = task loss + mas_lambda · Σ_i Ω_i (θ_i − θ*_i)²                 (no ½, as the paper and Avalanche)

alpha's default 0.5 is Avalanche's (MASPlugin / MAS), which calls the strength `lambda_reg`; clbench calls it
`mas_lambda`, with default 0.1 instead of Avalanche's 1: per-sample importances are larger than Avalanche's (below),
and 1 diverged on split-digits in class-IL for 2 seeds out of 3 with SGD lr 0.05 momentum 0.9, where 0.1 trains
stably in every scenario (and 0.1 and 1 both do with Adam 1e-3). Avalanche's running average comes from FACIL
(mas.py); the authors' code adds the new importances to the old ones instead, Ω ← Ω + Ω_new (it has no alpha).

Where clbench differs from Avalanche, on purpose:
  * Per-sample gradients, as in the paper: Avalanche (and FACIL) backpropagate the *batch mean* of ‖f(x)‖² and take
    the absolute value of that mini-batch gradient, |mean_k g_k| ≤ mean_k |g_k|, so its importances are smaller and
    depend on the batch size. clbench computes mean_k |g_k| exactly: for a model made of nn.Linear layers (the MLPs)
    through the outer-product identity Σ_k |δ_k a_kᵀ| = |δ|ᵀ|a| (one matmul per layer), for any other model with
    torch.func (vmap over grad).
  * The model is in eval mode while importances are computed (no dropout; batch-norm running statistics), as in the
    authors' code, so that a sample's gradient does not depend on the others; Avalanche computes them in train mode.
  * Task-IL: f(x) is the output of the sample's own task head (its task's units; the others are left out of the
    norm), as with Avalanche's multi-head models; class- and domain-IL use every output unit.
`importance_batch_size` only bounds the memory of the importance pass; the result does not depend on it.
"""

from __future__ import annotations

import math

import torch

from clbench.errors import UsageError
from clbench.strategies._per_sample import linear_grad_sums, quadratic_penalty, vmap_grad_sums
from clbench.strategies._per_sample import only_linear_layers as _only_linear_layers
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


@register("mas")
class MAS(SGDStrategy):
    """Memory Aware Synapses: label-free importances from per-sample gradients of ‖f(x)‖²₂, a running average
    weighted by `alpha`, and a quadratic penalty of strength `mas_lambda` (Avalanche's lambda_reg)."""

    def __init__(self, mas_lambda: float = 0.1, alpha: float = 0.5, importance_batch_size: int = 128):
        self.mas_lambda = mas_lambda
        self.alpha = alpha
        self.importance_batch_size = importance_batch_size

    def validate(self):
        if not (math.isfinite(self.mas_lambda) and self.mas_lambda >= 0):
            raise UsageError(f"mas_lambda must be finite and >= 0, got {self.mas_lambda}")
        if not 0 <= self.alpha <= 1:
            raise UsageError(f"alpha must be in [0, 1] (the weight of the previous importance), got {self.alpha}")
        if self.importance_batch_size < 1:
            raise UsageError(f"importance_batch_size must be at least 1, got {self.importance_batch_size}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.importance_: dict[str, torch.Tensor] | None = None  # Ω, after the first experience
        self.anchor_: dict[str, torch.Tensor] | None = None  # θ*

    def penalty(self, batch, features, logits):
        if self.importance_ is None:
            return None
        return self.mas_lambda * quadratic_penalty(self.trainable_parameters(), self.importance_, self.anchor_, logits)

    def after_experience(self, exp):
        new = self.importance(exp.train)
        if self.importance_ is None:
            self.importance_ = new
        else:
            self.importance_ = {name: self.alpha * old + (1 - self.alpha) * new[name]
                                for name, old in self.importance_.items()}
        self.anchor_ = {name: p.detach().clone() for name, p in self.trainable_parameters().items()}

    # -- importance ------------------------------------------------------------------------------------------------
    def output(self, logits: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The outputs whose squared norm is taken: in task-IL the units of each sample's task, else all of them."""
        if self.spec_.scenario != "task":
            return logits
        return torch.where(self.unit_mask_[task], logits, torch.zeros_like(logits))

    def importance(self, data) -> dict[str, torch.Tensor]:
        """mean_k |∂‖f(x_k)‖²/∂θ| over the samples of `data` (labels are never read)."""
        model = self.model_
        was_training = model.training
        model.eval()  # a sample's gradient must not depend on which samples share its chunk
        params = self.trainable_parameters()
        total = {name: torch.zeros_like(p) for name, p in params.items()}
        data = data.to(self.device_)
        exact_for_linear = _only_linear_layers(model, params)
        try:
            for start in range(0, len(data), self.importance_batch_size):
                x = data.x[start:start + self.importance_batch_size]
                task = data.task[start:start + self.importance_batch_size]
                sums = self._abs_grad_sums_linear(x, task) if exact_for_linear else None
                if sums is None:
                    sums = self._abs_grad_sums_vmap(x, task, params)
                for name, value in sums.items():
                    total[name] += value
        finally:
            model.train(was_training)
        return {name: t / len(data) for name, t in total.items()}

    def _abs_grad_sums_vmap(self, x, task, params) -> dict[str, torch.Tensor]:
        """Any model: Σ_k |g_k| from per-sample gradients (torch.func vmap over grad)."""

        def squared_norm(logits, t):
            return self.output(logits, t).pow(2).sum()

        return vmap_grad_sums(self.model_, params, squared_norm, (x, task), torch.abs)

    def _abs_grad_sums_linear(self, x, task) -> dict[str, torch.Tensor] | None:
        """Models made of nn.Linear layers only: Σ_k |δ_k a_kᵀ| = |δ|ᵀ|a|, one matmul per layer
        (`_per_sample.linear_grad_sums`); None where the identity does not hold."""
        return linear_grad_sums(self.model_, x, lambda logits: self.output(logits, task).pow(2).sum(), torch.abs)

    def state_bytes(self):
        if self.importance_ is None:
            return 0
        return tensors_nbytes(*self.importance_.values(), *self.anchor_.values())

