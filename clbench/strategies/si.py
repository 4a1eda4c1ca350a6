"""Synaptic Intelligence (Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence", ICML 2017).

Each parameter θ_i keeps the path integral of its contribution to the drop of the task loss over the optimizer steps
of the experience being trained,

    ω_i = − Σ_steps g_i · Δθ_i          g: gradient of the *task* loss at the step,  Δθ: the change the step made,

and at the end of the experience this is turned into an importance and added to the running one,

    Ω_i ← max(0, Ω_i + ω_i / (Δ_i² + eps))      Δ_i: the parameter's total change over the experience,

after which θ* is set to the parameters at that point. Later experiences are trained with

    loss = task loss + si_lambda · Σ_i Ω_i (θ_i − θ*_i)²

Names follow Avalanche's SynapticIntelligence / SynapticIntelligencePlugin: `si_lambda` (the paper's c) and `eps`
(the paper's damping ξ) with Avalanche's default 1e-7; the authors' code (ganguli-lab/pathint) uses ξ = 1e-3 on
split MNIST (c = 1) and ξ = 0.1 on permuted MNIST. Avalanche requires si_lambda without a default. With eps = 1e-7
the importances have a heavy tail: a parameter that wanders and comes back (Δ ≈ 0) gets Ω ≈ ω / eps, up to ~3·10⁴
on split- and permuted-digits, and SGD with momentum β and learning rate η diverges once 2·si_lambda·Ω > 2(1 + β)/η
somewhere. clbench's default si_lambda = 1e-4 trains stably on split-digits (class-, task-IL) and permuted-digits
(domain-IL) with SGD lr 0.05 momentum 0.9, batch 32, one epoch, for 3 seeds each, where 1e-3 diverged in domain-IL
for 2 seeds out of 3.
The authors' damping, `eps=0.001 si_lambda=0.1`, was stable there too and regularises far more (permuted-digits
ACC 0.54 → 0.67 over naive, against 0.55 with the default).

Where clbench differs from Avalanche, on purpose:
  * g is the gradient of the unregularised task loss, as in the paper and the authors' code (pathint's
    `unreg_grads`); Avalanche reads `param.grad` after the backward pass of the *total* loss, so from the second
    experience on its path integral also credits the SI penalty itself. clbench's template backpropagates the total
    loss once; the task gradient is recovered (up to rounding) as p.grad minus the penalty's closed-form gradient
    2·si_lambda·Ω·(θ − θ*) at the pre-step parameters, so SI costs no second backward pass.
  * The penalty has no ½, as the paper's c·Σ Ω (θ̃ − θ)² and clbench's EWC and MAS; Avalanche's is
    (si_lambda / 2)·Σ Ω (θ − θ*)², so Avalanche's si_lambda corresponds to half of it here.
  * Avalanche clips the importance at 0.001 from above (a constant of its code, not an argument); clbench does not
    clip it from above but, as the authors' code (a ReLU on the accumulated Ω), clips it at 0 from below: a
    negative Ω would reward moving away from θ* and can drive the loss to −∞.
  * Batch-norm parameters are regularised like every other trainable parameter (Avalanche excludes them).
Δθ is the whole change an optimizer step makes (momentum, Adam's scaling and weight decay included), as in the
authors' code and Avalanche.
"""

from __future__ import annotations

import math

import torch

from clbench.errors import UsageError
from clbench.strategies._per_sample import quadratic_penalty
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


@register("si")
class SI(SGDStrategy):
    """Synaptic Intelligence: path-integral importances Ω (damping `eps`), quadratic penalty of strength
    `si_lambda` around the parameters at the end of the previous experience."""

    def __init__(self, si_lambda: float = 1e-4, eps: float = 1e-7):
        self.si_lambda = si_lambda
        self.eps = eps

    def validate(self):
        if not (math.isfinite(self.si_lambda) and self.si_lambda >= 0):
            raise UsageError(f"si_lambda must be finite and >= 0, got {self.si_lambda}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise UsageError(f"eps must be finite and positive (the damping of Ω's denominator), got {self.eps}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.importance_: dict[str, torch.Tensor] | None = None  # Ω, after the first experience
        self.anchor_: dict[str, torch.Tensor] = self._snapshot()  # θ*: the parameters at the experience's start
        self.omega_: dict[str, torch.Tensor] = {n: torch.zeros_like(p) for n, p in self.anchor_.items()}  # ω
        self.previous_: dict[str, torch.Tensor] = self._snapshot()  # the parameters before the coming step

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.trainable_parameters().items()}

    def before_experience(self, exp):
        with torch.no_grad():
            for name, p in self.trainable_parameters().items():
                self.anchor_[name].copy_(p)
                self.previous_[name].copy_(p)
                self.omega_[name].zero_()

    def penalty(self, batch, features, logits):
        if self.importance_ is None:
            return None
        return self.si_lambda * quadratic_penalty(self.trainable_parameters(), self.importance_, self.anchor_, logits)

    @torch.no_grad()
    def after_update(self):
        """ω −= g·Δθ for the step just taken, g the task loss's gradient at the parameters before it."""
        for name, p in self.trainable_parameters().items():
            before = self.previous_[name]
            if p.grad is not None:
                grad = p.grad
                if self.importance_ is not None:  # remove the penalty's share of the backward pass
                    grad = grad - 2.0 * self.si_lambda * self.importance_[name] * (before - self.anchor_[name])
                self.omega_[name].sub_(grad * (p - before))
            before.copy_(p)

    @torch.no_grad()
    def after_experience(self, exp):
        params = self.trainable_parameters()
        if self.importance_ is None:
            self.importance_ = {name: torch.zeros_like(p) for name, p in params.items()}
        for name, p in params.items():
            change = p - self.anchor_[name]
            updated = self.importance_[name] + self.omega_[name] / (change.pow(2) + self.eps)
            self.importance_[name] = updated.clamp_(min=0.0)
            self.anchor_[name].copy_(p)  # θ*: the parameters the penalty pulls towards from now on

    def state_bytes(self):
        kept = [*self.anchor_.values(), *self.omega_.values(), *self.previous_.values()]
        if self.importance_ is not None:
            kept += list(self.importance_.values())
        return tensors_nbytes(*kept)
