"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017) and its online variant (Schwarz et al., ICML 2018).

After each experience the diagonal empirical Fisher information F of the parameters is estimated on that
experience's training data and stored with the parameters θ* at that point; later experiences are trained with

    loss = task loss + ewc_lambda · Σ_k Σ_i F_k,i (θ_i − θ*_k,i)²            (mode="separate": one term per experience)
    loss = task loss + ewc_lambda · Σ_i F_i (θ_i − θ*_i)²,  F ← decay_factor·F + F_new, θ* ← latest   (mode="online")

Names and the penalty's scale (no ½) follow Avalanche's EWCPlugin. One difference, on purpose: Avalanche averages
the squared *mini-batch* gradients, while clbench averages squared *per-sample* gradients (the empirical Fisher of
the paper), computed in one vectorised pass with torch.func (vmap over grad). Per-sample squares are larger than
mini-batch squares by about the batch size, so an Avalanche `ewc_lambda` corresponds to a smaller one here.
With gamma_in_penalty=True (online only) the penalty is multiplied by decay_factor once more, γ·λ·Σ F (θ − θ*)²,
as van de Ven & Tolias's code (continual_learner.py: `fisher = gamma * fisher` in the online EWC loss) does; there the
strength is then γλ/2, so their λ maps to clbench's λ/2 with gamma_in_penalty=True.
With fisher_labels="predicted" the log-likelihood is taken at the model's own prediction instead of the true label
(the choice of van de Ven & Tolias's code; the "true Fisher" evaluated at its most likely label).
With fisher_weighting="prob" each sample's squared gradient is weighted by the probability the model gives the label
it is taken at, p(y | x) (the true label by default), under the same (task-masked) softmax as the loss:
F = (1/N) Σ_k p(y_k | x_k) g_k², as Mammoth's online EWC (aimagelab/mammoth, models/ewc_on.py: end_task multiplies
each sample's squared gradient by exp(log p(y | x))). The weight is a constant (no gradient flows through it); it is
applied by scaling sample k's loss by √p_k, which scales its gradient by √p_k, so both per-sample paths below carry it.
Mammoth's arguments map one to one (mode="online", decay_factor = gamma, ewc_lambda = e_lambda: its penalty is
e_lambda · Σ F (θ − θ*)², without ½, as here); Mammoth divides the summed Fisher by (number of batches × batch size),
clbench by the number of samples, equal when the batch size divides it.
The default ewc_lambda=10 trains stably on Split-Fashion-MNIST with SGD lr 0.01 momentum 0.9 in every scenario;
100 diverged there in class-IL for one seed out of three (the separate penalties add up) and 1000 for every seed. The
stable range shrinks as the learning rate grows.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from clbench.errors import UsageError
from clbench.strategies._per_sample import linear_grad_sums, vmap_grad_sums
from clbench.strategies._per_sample import only_linear_layers as _only_linear_layers
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


@register("ewc")
class EWC(SGDStrategy):
    """EWC with a per-sample Fisher; `mode` "separate" keeps one penalty per experience, "online" one running
    penalty decayed by `decay_factor`; `fisher_labels` "true" (empirical Fisher) or "predicted" (the model's own
    prediction as the label); `gamma_in_penalty` applies decay_factor once more inside the online penalty (van de Ven
    & Tolias's convention); `fisher_weighting` "none" or "prob" (each squared gradient weighted by p(y | x), as
    Mammoth's ewc_on). `fisher_batch_size` bounds the memory of the vectorised pass."""

    def __init__(
        self,
        ewc_lambda: float = 10.0,
        mode: Literal["separate", "online"] = "separate",
        decay_factor: float | None = None,
        fisher_batch_size: int = 128,
        fisher_labels: Literal["true", "predicted"] = "true",
        gamma_in_penalty: bool = False,
        fisher_weighting: Literal["none", "prob"] = "none",
    ):
        self.ewc_lambda = ewc_lambda
        self.mode = mode
        self.decay_factor = decay_factor
        self.fisher_batch_size = fisher_batch_size
        self.fisher_labels = fisher_labels
        self.gamma_in_penalty = gamma_in_penalty
        self.fisher_weighting = fisher_weighting

    def validate(self):
        if self.ewc_lambda < 0:
            raise UsageError(f"ewc_lambda must be >= 0, got {self.ewc_lambda}")
        if self.mode == "online" and (self.decay_factor is None or not 0 <= self.decay_factor <= 1):
            raise UsageError(f"mode='online' needs decay_factor in [0, 1], got {self.decay_factor}")
        if self.mode == "separate" and self.decay_factor is not None:
            raise UsageError("decay_factor is only used with mode='online'; leave it unset for mode='separate'")
        if self.gamma_in_penalty and self.mode != "online":
            raise UsageError("gamma_in_penalty is only used with mode='online'; leave it false for mode='separate'")
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
        weight, centre, offset = self.folded_
        total = logits.new_zeros(())
        for name, param in self.model_.named_parameters():
            if name in weight:
                total = total + (weight[name] * (param - centre[name]).pow(2)).sum()
        # van de Ven & Tolias's online EWC multiplies the running Fisher by gamma once more inside the penalty
        strength = self.ewc_lambda * (self.decay_factor if self.gamma_in_penalty else 1.0)
        return strength * (total + offset)

    def after_experience(self, exp):
        fisher = self.empirical_fisher(exp.train)
        anchor = {name: p.detach().clone() for name, p in self.trainable_parameters().items()}
        if self.mode == "online" and self.importances_:
            previous = self.importances_[0]
            fisher = {name: self.decay_factor * previous[name] + f for name, f in fisher.items()}
            self.importances_, self.anchors_ = [fisher], [anchor]
        else:
            self.importances_.append(fisher)
            self.anchors_.append(anchor)
        self.folded_ = self._fold()

    def _fold(self):
        """The separate penalties as one: Σ_k F_k (θ − θ*_k)² = A (θ − m)² + K with A = Σ_k F_k,
        m = Σ_k F_k θ*_k / A and K = Σ_k Σ_i F_k (θ*_k − m)², so a step costs the same after 50 experiences as
        after 2, with the same value and gradient (computed in float64; m is taken as θ*_0 where A = 0)."""
        weight, centre, offset = {}, {}, 0.0
        for name in self.importances_[0]:
            fs = [imp[name].double() for imp in self.importances_]
            anchors = [anc[name].double() for anc in self.anchors_]
            total = sum(fs)
            weighted = sum(f * a for f, a in zip(fs, anchors, strict=True))
            m = torch.where(total > 0, weighted / torch.where(total > 0, total, 1.0), anchors[0])
            offset += float(sum((f * (a - m).pow(2)).sum() for f, a in zip(fs, anchors, strict=True)))
            weight[name] = total.to(self.importances_[0][name].dtype)
            centre[name] = m.to(self.anchors_[0][name].dtype)
        return weight, centre, offset

    def empirical_fisher(self, data) -> dict[str, torch.Tensor]:
        """Mean over samples of the squared per-sample gradient of the (task-masked) cross-entropy, at the true
        labels or, with fisher_labels="predicted", at the model's predictions; with fisher_weighting="prob" each
        sample's square weighted by the model's probability of that label."""
        model = self.model_
        was_training = model.training
        model.eval()  # batch-norm statistics must not depend on which samples share a chunk
        params = self.trainable_parameters()
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        data = data.to(self.device_)
        exact_for_linear = _only_linear_layers(model, params)
        try:
            for start in range(0, len(data), self.fisher_batch_size):
                chunk = data.subset(slice(start, start + self.fisher_batch_size))
                sums = self._squared_grad_sums_linear(chunk) if exact_for_linear else None
                if sums is None:
                    sums = self._squared_grad_sums_vmap(chunk, params)
                for name, value in sums.items():
                    fisher[name] += value
        finally:
            model.train(was_training)
        return {name: f / len(data) for name, f in fisher.items()}

    def _squared_grad_sums_vmap(self, chunk, params) -> dict[str, torch.Tensor]:
        """Any model: per-sample gradients with torch.func (vmap over grad), squared and summed."""
        labels = self._fisher_targets(chunk)
        if self.fisher_weighting == "prob":
            with torch.no_grad():
                masked = self.mask_logits(self.model_(chunk.x), chunk.task)
                root_p = _root_probability(F.cross_entropy(masked, labels, reduction="none"))

            def weighted_loss(logits, y, task, root):
                return F.cross_entropy(self.mask_logits(logits, task), y) * root[0]

            inputs = (chunk.x, labels, chunk.task, root_p)
            return vmap_grad_sums(self.model_, params, weighted_loss, inputs, torch.square)

        def sample_loss(logits, y, task):
            return F.cross_entropy(self.mask_logits(logits, task), y)

        return vmap_grad_sums(self.model_, params, sample_loss, (chunk.x, labels, chunk.task), torch.square)

    def _squared_grad_sums_linear(self, chunk) -> dict[str, torch.Tensor] | None:
        """Models made of nn.Linear layers only (the MLPs): Σ_i (δ_i a_iᵀ)² = (δ²)ᵀ(a²), one matmul per layer
        (`_per_sample.linear_grad_sums`); None where the identity does not hold."""

        def summed_loss(logits):
            masked = self.mask_logits(logits, chunk.task)
            labels = masked.detach().argmax(1) if self.fisher_labels == "predicted" else chunk.y
            if self.fisher_weighting == "prob":
                losses = F.cross_entropy(masked, labels, reduction="none")
                return (losses * _root_probability(losses.detach())).sum()
            return F.cross_entropy(masked, labels, reduction="sum")

        return linear_grad_sums(self.model_, chunk.x, summed_loss, torch.square)

    def _fisher_targets(self, chunk) -> torch.Tensor:
        if self.fisher_labels == "true":
            return chunk.y
        with torch.no_grad():
            return self.mask_logits(self.model_(chunk.x), chunk.task).argmax(1)

    def state_bytes(self):
        stored = [t for d in self.importances_ + self.anchors_ for t in d.values()]
        folded = [t for d in self.folded_[:2] for t in d.values()] if self.importances_ else []
        return tensors_nbytes(*stored, *folded)


def _root_probability(losses: torch.Tensor) -> torch.Tensor:
    """√p(y | x) from the per-sample cross-entropies −log p(y | x): the loss scale that weighs a squared gradient
    by p."""
    return torch.exp(-0.5 * losses)
