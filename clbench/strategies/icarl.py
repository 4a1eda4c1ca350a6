"""iCaRL: incremental classifier and representation learning (Rebuffi, Kolesnikov, Sperl & Lampert, CVPR 2017).

Three parts, with the names and settings of Avalanche's `ICaRL` strategy (avalanche/training/supervised/icarl.py:
`_ICaRLPlugin`, `ICaRLLossPlugin`, `NCMClassifier(normalize=True)`) and of the authors' code, where they agree:

  * Memory: a fixed total of `memory_size` exemplars (the paper's K = 2000, its default here; Avalanche has no
    default) split evenly over the classes seen so far, m = memory_size // n_seen per class. After each experience
    the exemplar lists of old classes are cut to their first m entries (the paper's ReduceExemplarSet) and every
    class of the experience gets m exemplars chosen by herding (ConstructExemplarSet).
  * Herding on L2-normalised backbone features φ(x) (the backbone's `features`, i.e. SGDStrategy.forward's first
    output), with μ the mean of the class's normalised features: p_k = argmin_x ‖μ − (φ(x) + Σ_{j<k} φ(p_j)) / k‖
    over the samples not picked yet (the paper's Algorithm 4), one vectorised distance computation per step.
  * Training on the experience's samples ∪ all exemplars (`train_data`) with a binary cross-entropy on sigmoid
    outputs: targets are one-hot on the units of classes not finished yet and, on the units of classes of finished
    experiences, the sigmoid outputs of a frozen copy of the model taken after the previous experience
    (distillation), averaged over samples and output units, as `ICaRLLossPlugin` (BCELoss, mean) and the authors'
    code (a mean over every output unit) do.
  * Prediction by the nearest mean of exemplars: after each experience every class's mean is the mean of its
    exemplars' normalised features, normalised again (as the paper asks for any average of features); `predict`
    returns −‖φ̂(x) − μ_y‖ (Avalanche's NCMClassifier scores), MASKED_LOGIT for classes without a mean. Before the
    first experience is finished there are no means and the network's own logits are returned.
    `classifier="head"` predicts with the network's sigmoid head instead (for comparing NME with it); the head is
    also available as `predict_head`, the NME as `predict_nme`.

Scenarios: class-IL, and task-IL by masking: the BCE is averaged over each sample's own task units only, and the
NME scores (or logits) are restricted to the task's units. Domain-IL is rejected (classes recur in every experience,
so "old classes" distilled and "new classes" learnt one-hot would be the same units).

Differences, on purpose:
  * m = memory_size // n_seen (floor, the paper's K/t and never more than K in total); Avalanche rounds up
    (ceil), which can hold more than `memory_size` exemplars.
  * Herding is the paper's exact greedy rule above. The authors' code (and Avalanche, which follows it) use an
    approximation: a running vector w ← w + μ − φ(p), picking argmax ⟨w, φ(x)⟩ and skipping repeats, for at most
    1000 iterations (so a class can end up with fewer than m exemplars). As there, μ itself is not re-normalised.
  * The class means use the exemplars only, without the authors'/Avalanche's average with horizontally flipped
    images (clbench trains without augmentation, and flipping is not label-preserving on every benchmark).
  * The paper sums the BCE over the units seen so far; the code (Avalanche's and the authors') averages it over all
    output units, those of classes not seen yet included (target 0). This file does the latter.
  * The frozen copy runs in eval mode (batch-norm statistics, no dropout), as clbench's LwF; Avalanche's deep copy
    keeps the model's training mode.
  * Each class is assumed to belong to one experience (as Avalanche's loss assumes); a class that came back would
    get a fresh exemplar set from its new experience's samples.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from clbench.benchmarks.base import TensorData
from clbench.errors import UsageError
from clbench.strategies._teacher import FrozenTeacher
from clbench.strategies.base import MASKED_LOGIT, SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the first `m` herding picks (in order) among the rows of `features` (n, d), which the caller has
    L2-normalised: p_k = argmin_x ‖μ − (x + Σ_{j<k} p_j) / k‖ over rows not yet picked, μ the mean row. Ties go to
    the lowest index. At most n picks.

    Expanded, k²‖μ − (x + S)/k‖² = ‖x‖² − 2k⟨μ, x⟩ + 2⟨S, x⟩ + (terms without x), with S the sum of the picks so far;
    ⟨S, x⟩ for every x grows by one matrix-vector product per pick, so a step costs one pass over the features
    instead of building the n × d differences. The products are taken in the features' dtype and summed in float64,
    so that the sum's rounding does not grow with the number of picks."""
    n = len(features)
    m = min(m, n)
    f = features
    base = f.double().pow(2).sum(1)
    mu_x = f.double() @ f.double().mean(0)
    s_x = torch.zeros(n, dtype=torch.float64, device=f.device)
    free = torch.ones(n, dtype=torch.bool, device=features.device)
    picks = []
    for k in range(1, m + 1):
        score = (base - 2 * k * mu_x + 2 * s_x).masked_fill(~free, float("inf"))
        best = int(torch.argmin(score))
        picks.append(best)
        free[best] = False
        s_x += (f @ f[best]).double()
    return torch.tensor(picks, dtype=torch.long, device=features.device)


def icarl_loss(logits: torch.Tensor, y: torch.Tensor, old_units: torch.Tensor, teacher_logits: torch.Tensor | None,
               units: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) against one-hot targets of `y`, whose columns `old_units` (bool,
    n_classes) are replaced by sigmoid(teacher_logits) when a teacher is given; averaged over the True entries of
    `units` (bool, N × n_classes: each sample's own units in task-IL), or over every entry when it is None."""
    targets = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    if teacher_logits is not None:
        targets = torch.where(old_units, torch.sigmoid(teacher_logits), targets)
    if units is None:
        return F.binary_cross_entropy_with_logits(logits, targets)
    elementwise = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (elementwise * units).sum() / units.sum()


@register("icarl")
class ICaRL(FrozenTeacher, SGDStrategy):
    """Exemplars chosen by herding within a total of `memory_size`, a sigmoid BCE with distillation from the previous
    model, and nearest-mean-of-exemplars prediction (`classifier` "nme"; "head": the network's own outputs)."""

    scenarios = frozenset({"class", "task"})

    def __init__(self, memory_size: int = 2000, classifier: Literal["nme", "head"] = "nme"):
        self.memory_size = memory_size
        self.classifier = classifier

    def validate(self):
        if self.memory_size < 1:
            raise UsageError(f"memory_size must be at least 1, got {self.memory_size}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        if self.memory_size < spec.n_classes:
            raise UsageError(f"memory_size={self.memory_size} leaves no exemplar for some of the stream's "
                             f"{spec.n_classes} classes; it must be at least {spec.n_classes}")
        self.teacher_: torch.nn.Module | None = None
        # units of the classes of finished experiences: distilled from the teacher, and the classes with exemplars
        self.old_units_ = torch.zeros(spec.n_classes, dtype=torch.bool, device=self.device_)
        self.exemplars_: dict[int, TensorData] = {}  # class -> its exemplars, in herding order
        self.class_means_: torch.Tensor | None = None  # (n_classes, feature dim), normalised; rows of old_units_

    # -- training --------------------------------------------------------------------------------------------------
    def train_data(self, exp):
        if not self.exemplars_:
            return exp.train
        return TensorData.concat([exp.train.to(self.device_), *self.exemplars_.values()])

    @property
    def own_task_loss(self):
        return True

    def task_loss(self, logits, batch):
        teacher_logits = None
        if self.teacher_ is not None:
            with torch.no_grad():
                teacher_logits = self.teacher_(batch.x)
        units = self.unit_mask_[batch.task] if self.spec_.scenario == "task" else None
        return icarl_loss(logits, batch.y, self.old_units_, teacher_logits, units)

    # -- memory and class means ---------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised backbone features φ(x) in eval mode, in chunks of the evaluation batch size."""
        self.model_.eval()
        step = self.train_config_.eval_batch_size
        with torch.no_grad():
            parts = [self.forward(x[s : s + step])[0].flatten(1) for s in range(0, len(x), step)]
        return F.normalize(torch.cat(parts), dim=1)

    def after_experience(self, exp):
        self.teacher_ = self._new_teacher()
        new = torch.tensor(exp.classes, dtype=torch.long, device=self.device_)
        self.old_units_[new] = True
        quota = self.memory_size // int(self.old_units_.sum())
        for cls in list(self.exemplars_):  # ReduceExemplarSet: keep the first m of each herding-ordered list
            self.exemplars_[cls] = self.exemplars_[cls].subset(slice(0, quota))
        data = exp.train.to(self.device_)
        for cls in exp.classes:  # ConstructExemplarSet for the experience's classes
            members = torch.nonzero(data.y == cls).flatten()
            if len(members) == 0:
                continue
            samples = data.subset(members)
            picks = herding(self.embed(samples.x), quota)
            self.exemplars_[int(cls)] = samples.subset(picks)
        self._update_class_means()

    def _update_class_means(self):
        means = None
        for cls, samples in self.exemplars_.items():
            mean = F.normalize(self.embed(samples.x).mean(0), dim=0)
            if means is None:
                means = torch.zeros(self.spec_.n_classes, len(mean), device=self.device_)
            means[cls] = mean
        self.class_means_ = means

    def _has_mean(self) -> torch.Tensor:
        has = torch.zeros(self.spec_.n_classes, dtype=torch.bool, device=self.device_)
        has[list(self.exemplars_)] = True
        return has

    # -- prediction ------------------------------------------------------------------------------------------------
    def predict(self, x, task_id):
        if self.classifier == "head" or self.class_means_ is None:
            return self.predict_head(x, task_id)
        return self.predict_nme(x, task_id)

    def predict_head(self, x, task_id):
        """The network's own outputs (its sigmoid head), masked to the task's units in task-IL."""
        self.model_.eval()
        return self.mask_logits(self.forward(x)[1], task_id)

    def predict_nme(self, x, task_id):
        """−‖φ̂(x) − μ_y‖ for every class y with a mean (MASKED_LOGIT elsewhere), masked to the task's units."""
        scores = -torch.cdist(self.embed(x), self.class_means_)
        scores = scores.masked_fill(~self._has_mean(), MASKED_LOGIT)
        return self.mask_logits(scores, task_id)

    # -- state -------------------------------------------------------------------------------------------------------
    def state_bytes(self):
        held = sum(d.nbytes for d in self.exemplars_.values()) + tensors_nbytes(self.class_means_)
        if self.teacher_ is not None:
            held += tensors_nbytes(*self.teacher_.parameters(), *self.teacher_.buffers())
        return held
