"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017) and its online variant (Schwarz et al., ICML 2018).

After each experience the diagonal empirical Fisher information F of the parameters is estimated on that
experience's training data and stored with the parameters θ* at that point; later experiences are trained with

    loss = task loss + ewc_lambda · Σ_k Σ_i F_k,i (θ_i − θ*_k,i)²            (mode="separate": one term per experience)
    loss = task loss + ewc_lambda · Σ_i F_i (θ_i − θ*_i)²,  F ← decay_factor·F + F_new, θ* ← latest   (mode="online")

Names and the penalty's scale (no ½) follow Avalanche's EWCPlugin. One difference, on purpose: Avalanche averages
the squared *mini-batch* gradients, while clbench averages squared *per-sample* gradients (the empirical Fisher of
the paper), computed in one vectorised pass with torch.func (vmap over grad). Per-sample squares are larger than
mini-batch squares by about the batch size, so an Avalanche `ewc_lambda` corresponds to a smaller one here.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


@register("ewc")
class EWC(SGDStrategy):
    """EWC with a per-sample empirical Fisher; `mode` "separate" keeps one penalty per experience, "online" one
    running penalty decayed by `decay_factor`. `fisher_batch_size` bounds the memory of the vectorised pass."""

    def __init__(
        self,
        ewc_lambda: float = 1.0,
        mode: Literal["separate", "online"] = "separate",
        decay_factor: float | None = None,
        fisher_batch_size: int = 128,
    ):
        self.ewc_lambda = ewc_lambda
        self.mode = mode
        self.decay_factor = decay_factor
        self.fisher_batch_size = fisher_batch_size

    def validate(self):
        if self.ewc_lambda < 0:
            raise UsageError(f"ewc_lambda must be >= 0, got {self.ewc_lambda}")
        if self.mode == "online" and (self.decay_factor is None or not 0 <= self.decay_factor <= 1):
            raise UsageError(f"mode='online' needs decay_factor in [0, 1], got {self.decay_factor}")
        if self.mode == "separate" and self.decay_factor is not None:
            raise UsageError("decay_factor is only used with mode='online'; leave it unset for mode='separate'")
        if self.fisher_batch_size < 1:
            raise UsageError(f"fisher_batch_size must be at least 1, got {self.fisher_batch_size}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        # One (importance, anchor) pair per stored experience; online mode keeps a single pair.
        self.importances_: list[dict[str, torch.Tensor]] = []
        self.anchors_: list[dict[str, torch.Tensor]] = []

    def penalty(self, batch, features, logits):
        if not self.importances_:
            return None
        total = logits.new_zeros(())
        for importance, anchor in zip(self.importances_, self.anchors_, strict=True):
            for name, param in self.model_.named_parameters():
                if name in importance:
                    total = total + (importance[name] * (param - anchor[name]).pow(2)).sum()
        return self.ewc_lambda * total

    def after_experience(self, exp):
        fisher = self.empirical_fisher(exp.train)
        anchor = {name: p.detach().clone() for name, p in self.model_.named_parameters() if p.requires_grad}
        if self.mode == "online" and self.importances_:
            previous = self.importances_[0]
            fisher = {name: self.decay_factor * previous[name] + f for name, f in fisher.items()}
            self.importances_, self.anchors_ = [fisher], [anchor]
        else:
            self.importances_.append(fisher)
            self.anchors_.append(anchor)

    def empirical_fisher(self, data) -> dict[str, torch.Tensor]:
        """Mean over samples of the squared per-sample gradient of the (task-masked) cross-entropy."""
        model = self.model_
        was_training = model.training
        model.eval()  # batch-norm statistics must not depend on which samples share a chunk
        params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        buffers = {name: b.detach() for name, b in model.named_buffers()}

        def sample_loss(p, x, y, task):
            logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
            return F.cross_entropy(self.mask_logits(logits, task.unsqueeze(0)), y.unsqueeze(0))

        per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0, 0))
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        data = data.to(self.device_)
        for start in range(0, len(data), self.fisher_batch_size):
            stop = start + self.fisher_batch_size
            grads = per_sample_grads(params, data.x[start:stop], data.y[start:stop], data.task[start:stop])
            for name, g in grads.items():
                fisher[name] += g.pow(2).sum(0)
        model.train(was_training)
        return {name: f / len(data) for name, f in fisher.items()}

    def state_bytes(self):
        stored = [t for d in self.importances_ + self.anchors_ for t in d.values()]
        return tensors_nbytes(*stored)
