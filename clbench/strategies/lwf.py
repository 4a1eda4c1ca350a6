"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), with the settings of Avalanche's LwFPlugin.

After each experience a frozen copy of the model is kept (the teacher; Avalanche's `LearningWithoutForgetting.update`
in after_training_exp). Later experiences are trained with

    loss = task loss + alpha · Σ_g KL( softmax(teacher_g / T) ‖ softmax(model_g / T) )      (batch mean)

where g runs over groups of *old* output units and `model_g` are the logits restricted to them (the softmax is taken
over the group only, as in Avalanche's `_distillation_loss`, which slices before the softmax):
  * class-IL and domain-IL: one group, the units of every finished experience (in domain-IL that is all units);
  * task-IL: one group per finished experience, its own units (multi-head LwF); the groups' terms are *summed*, as
    Avalanche sums over the previous heads of a MultiTaskModule. Every sample of the batch is distilled on every old
    head, whatever its own task.

Two options follow van de Ven & Tolias's code (continual-learning, models/classifier.py, whose LwF is
"replay='current'" with distillation) instead:
  * weighting="by_task": the distillation term is the *mean* over the groups times the number of finished
    experiences, alpha · (t − 1) · mean_g KD_g while training experience t (their `lwf_weighting`, which that code
    applies in task- and domain-IL only: use "equal" in class-IL to follow it). In task-IL this equals the sum;
    in domain-IL it weighs the single term by t − 1.
  * units="all": in class-IL, distil over every output unit (teacher softmax over all of them, the classes not seen
    yet included: their `--active-classes all`) instead of the units of finished experiences. In task- and
    domain-IL the groups are the same either way (each old head; all units).

Two options follow Mammoth's LwF (aimagelab/mammoth, models/lwf.py) instead:
  * warmup_epochs=E: before each experience but the first, E passes (mini-batches of the run's batch size, in an
    order drawn from the strategy's generator) train the output units of the experience's classes alone: the
    features are computed without gradient, the cross-entropy is taken over those units only, and a plain SGD at
    the run's learning rate (no momentum, no weight decay) steps the head, so only the head's rows (weights and
    biases) of those units change, with the model in eval mode (Mammoth's begin_task: E = its n_epochs, SGD over
    the classifier at args.lr, logits sliced to the current task's classes). The teacher is unaffected: it is the
    copy taken after the previous experience, and the warm-up leaves the old units as they were (Mammoth records
    its teacher's logits after the warm-up, the same values on the old units). In domain-IL the experience's units
    are all units, so the warm-up trains the whole head (Mammoth's LwF has no domain-IL).
  * ce_units="seen": in class-IL the training cross-entropy covers only the units of the classes seen so far (the
    finished experiences' and the current one's); the others are masked out and get no gradient (Mammoth's
    `outputs[:, :n_seen_classes]`). In task-IL the loss is already restricted to the task's units, and in domain-IL
    every unit is seen from the start, so it changes nothing there.
Mammoth's seq-mnist arguments (utils/best_args.py: alpha 1, softmax_temp 2, optim_wd 5e-4) are clbench's alpha,
temperature and the runner's weight_decay; its distillation, a soft cross-entropy between temperature-softened
softmaxes over the past classes, has the gradient of this KL over units="old".

Defaults alpha=1, T=2 are Avalanche's. Like Avalanche (and unlike Hinton et al.'s KD) the term is *not* multiplied
by T². KL and the paper's soft cross-entropy differ by the teacher's entropy, a constant, so gradients are the same.
One difference, on purpose: the teacher runs in eval mode (batch-norm running statistics, no dropout), whereas
Avalanche's deep copy keeps the training mode of the model it copies.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from clbench.errors import UsageError
from clbench.strategies._teacher import FrozenTeacher
from clbench.strategies.base import MASKED_LOGIT, SGDStrategy, classifier_head, tensors_nbytes
from clbench.strategies.registry import register


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) ‖ softmax(logits/T)), summed over units and averaged over the batch (no T² factor)."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    q = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


@register("lwf")
class LwF(FrozenTeacher, SGDStrategy):
    """Distils the previous model's outputs on the old units into the current model (`alpha` weighs the term,
    `temperature` softens both distributions; `weighting` "equal" sums the groups' terms, "by_task" takes their
    mean times the number of finished experiences; `units` "old" or "all" output units in class-IL;
    `warmup_epochs` passes training the new classes' head units alone before each experience but the first, and
    `ce_units` "all" or "seen" units in the class-IL cross-entropy, as Mammoth's LwF)."""

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0,
                 weighting: Literal["equal", "by_task"] = "equal", units: Literal["old", "all"] = "old",
                 warmup_epochs: int = 0, ce_units: Literal["all", "seen"] = "all"):
        self.alpha = alpha
        self.temperature = temperature
        self.weighting = weighting
        self.units = units
        self.warmup_epochs = warmup_epochs
        self.ce_units = ce_units

    def validate(self):
        if self.alpha < 0:
            raise UsageError(f"alpha must be >= 0, got {self.alpha}")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, got {self.temperature}")
        if self.warmup_epochs < 0:
            raise UsageError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.teacher_: torch.nn.Module | None = None
        self.old_units_: list[torch.Tensor] = []  # groups of old units, one distillation term each
        self.finished_ = 0  # experiences trained so far: the teacher's
        self.seen_units_ = torch.zeros(spec.n_classes, dtype=torch.bool, device=self.device_)  # ce_units="seen"

    def before_experience(self, exp):
        super().before_experience(exp)
        self.seen_units_[list(exp.classes)] = True
        if self.warmup_epochs and self.finished_:
            self.warm_up_head(exp)

    def warm_up_head(self, exp):
        """`warmup_epochs` passes of plain SGD on the head's units of `exp`'s classes, the features frozen."""
        head = classifier_head(self.model_)
        units = torch.tensor(exp.classes, device=self.device_)
        position = torch.full((self.spec_.n_classes,), -1, dtype=torch.long, device=self.device_)
        position[units] = torch.arange(len(units), device=self.device_)
        optimizer = torch.optim.SGD(head.parameters(), lr=self.train_config_.lr)
        was_training = self.model_.training
        self.model_.eval()
        data = exp.train
        try:
            for _ in range(self.warmup_epochs):
                order = torch.randperm(len(data), generator=self.generator_)
                for rows in order.split(self.train_config_.batch_size):
                    part = data.subset(rows.to(data.y.device)).to(self.device_)
                    with torch.no_grad():
                        features, _ = self.forward(part.x)
                    loss = F.cross_entropy(head(features)[:, units], position[part.y])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        finally:
            self.model_.train(was_training)

    @property
    def own_task_loss(self) -> bool:
        return self.ce_units == "seen"

    def task_loss(self, logits, batch):
        if self.ce_units == "seen" and self.spec_.scenario == "class":
            logits = logits.masked_fill(~self.seen_units_, MASKED_LOGIT)
        return super().task_loss(logits, batch)

    def penalty(self, batch, features, logits):
        if self.teacher_ is None:
            return None
        with torch.no_grad():
            teacher_logits = self.teacher_(batch.x)
        terms = [distillation_loss(logits[:, units], teacher_logits[:, units], self.temperature)
                 for units in self.old_units_]
        kd = sum(terms) if self.weighting == "equal" else self.finished_ * torch.stack(terms).mean()
        return self.alpha * kd

    def after_experience(self, exp):
        self.teacher_ = self._new_teacher()
        self.finished_ += 1
        units = torch.tensor(exp.classes, device=self.device_)
        if self.spec_.scenario == "task":
            self.old_units_.append(units)
        elif self.units == "all":
            self.old_units_ = [torch.arange(self.spec_.n_classes, device=self.device_)]
        else:
            seen = units if not self.old_units_ else torch.cat([self.old_units_[0], units])
            self.old_units_ = [torch.unique(seen)]

    def state_bytes(self):
        if self.teacher_ is None:
            return 0
        return tensors_nbytes(*self.teacher_.parameters(), *self.teacher_.buffers())
