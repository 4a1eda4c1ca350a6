"""Center loss regularisation for continual learning (CLR; Olpadkar & Gavas 2021, arXiv:2110.11314), optionally with
experience replay (the paper's best variant).

The model is trained with cross-entropy plus the center loss of Wen et al. (ECCV 2016) on the penultimate features:

    loss = CE + center_lambda · ½ · mean_i ‖f_i − c_{y_i}‖²

with one center per output unit. Centers are not trained by the optimiser but by Wen et al.'s rule (their Algorithm
1), from the batch's detached features, once per step: c_j ← c_j − center_lr · Σ_{i: y_i=j} (c_j − f_i) / (1 + n_j).
So the centers never touch the model, and center_lambda=0 (with mem_size=0, freeze_head=False) is plain fine-tuning.
Centers start at zero.

The continual-learning part (the paper's idea): once an experience is finished, the centers of its units are frozen,
and so (`freeze_head`, the paper's other ablated ingredient) are the classifier rows of those units. Every sample
of a batch is pulled to its own unit's center, so samples of old units — new-domain samples in domain-IL, where
every experience shares the units (the paper's MNIST-variant/Digits/PACS setting: centers and classifier frozen after
the first task), and replayed samples in every scenario — are mapped onto the feature clusters the frozen
classifier already separates, while the current experience's new units get centers and rows of their own. In class-
and task-IL without replay no sample of an old unit is seen, so there the loss only makes the current features
compact.

Replay (`mem_size` > 0, `storage_policy`, `batch_size_mem`) is clbench's Replay, inherited: each mini-batch is
extended with memory samples and the penalty covers them too. mem_size=0 turns replay off at no cost.

Defaults: center_lr=0.5 is Wen et al.'s α (also the centers' SGD learning rate in K. Zhou's common PyTorch port);
center_lambda=0.01 is a small weight of the order of Wen et al.'s (0.003 on faces): larger weights slow the learning
of new experiences once the head is frozen, and with centers starting at zero a weight near 1 collapses the features.
The CL paper's own values were not available when this was written; treat both as starting points.
"""

from __future__ import annotations

from typing import Literal

import torch

from clbench.errors import UsageError
from clbench.strategies.base import classifier_head, tensors_nbytes
from clbench.strategies.registry import register
from clbench.strategies.replay import Replay


@register("center-loss")
class CenterLoss(Replay):
    """CE + `center_lambda` · center loss with the centers (and, with `freeze_head`, the classifier rows) of finished
    experiences frozen; `center_lr` is the centers' update rate; `mem_size` > 0 adds replay."""

    min_mem_size = 0  # 0 turns replay off

    def __init__(
        self,
        center_lambda: float = 0.01,
        center_lr: float = 0.5,
        freeze_head: bool = True,
        mem_size: int = 0,
        storage_policy: Literal["reservoir", "class_balanced"] = "reservoir",
        batch_size_mem: int | None = None,
    ):
        super().__init__(mem_size=mem_size, storage_policy=storage_policy, batch_size_mem=batch_size_mem)
        self.center_lambda = center_lambda
        self.center_lr = center_lr
        self.freeze_head = freeze_head

    def validate(self):
        super().validate()
        if self.center_lambda < 0:
            raise UsageError(f"center_lambda must be >= 0, got {self.center_lambda}")
        if not 0 <= self.center_lr <= 1:
            raise UsageError(f"center_lr must be in [0, 1], got {self.center_lr}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.head_ = classifier_head(model)
        self.centers_ = torch.zeros(spec.n_classes, self.head_.in_features, device=self.device_)
        self.frozen_ = torch.zeros(spec.n_classes, dtype=torch.bool, device=self.device_)  # units of finished exps
        self.frozen_head_: tuple[torch.Tensor, torch.Tensor] | None = None

    def before_experience(self, exp):
        super().before_experience(exp)
        if self.freeze_head and self.frozen_.any():
            head = self.head_
            self.frozen_head_ = (head.weight.detach()[self.frozen_].clone(), head.bias.detach()[self.frozen_].clone())

    def penalty(self, batch, features, logits):
        loss = 0.5 * (features - self.centers_[batch.y]).pow(2).sum(1).mean()
        self.update_centers(features.detach(), batch.y)
        return self.center_lambda * loss

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, y: torch.Tensor) -> None:
        """Wen et al.'s update of the centers present in the batch; frozen centers are left bit-identical."""
        counts = torch.bincount(y, minlength=len(self.centers_)).unsqueeze(1).to(features.dtype)
        sums = torch.zeros_like(self.centers_).index_add_(0, y, features)
        delta = (counts * self.centers_ - sums) / (1 + counts)
        learn = (counts.squeeze(1) > 0) & ~self.frozen_
        self.centers_[learn] -= self.center_lr * delta[learn]

    def after_update(self):
        if self.frozen_head_ is not None:  # undo the step on the old units' rows (exact under momentum/weight decay)
            with torch.no_grad():
                self.head_.weight[self.frozen_] = self.frozen_head_[0]
                self.head_.bias[self.frozen_] = self.frozen_head_[1]

    def after_experience(self, exp):
        if self.mem_size > 0:
            super().after_experience(exp)
        self.frozen_[list(exp.classes)] = True

    def state_bytes(self):
        head = tensors_nbytes(*self.frozen_head_) if self.frozen_head_ is not None else 0
        return super().state_bytes() + tensors_nbytes(self.centers_) + head
