"""ExSSNeT, Exclusive Supermask SubNEtwork Training (Yadav & Bansal, "Exclusive Supermask Subnetwork Training for
Continual Learning", Findings of ACL 2023, arXiv:2210.10209), following the authors' code (prateeky2806/exessnet:
`main_vision.py`, `trainers/weights.py`, `utils/my_utils.py`, `configs/transfer/config/vision.yaml`, README commands).

The network starts as SupSup's random network (shared machinery in `_supermask.py`): every Linear/Conv2d weight a
signed constant ±sqrt(2)/sqrt(fan_in), biases 0 and batch norm non-affine (the reference's bias-free layers and
`MultitaskNonAffineBN`, with one set of running statistics per task). For each task t:

  1. mask learning (edge-popup, as SupSup): real-valued scores S_t, initialised like a default layer
     (kaiming_uniform, a=√5), define the mask M_t = top-`sparsity` fraction of |S_t| in every masked layer; the
     scores are trained through the straight-through top-k with the weights fixed;
  2. exclusive weight training: with M_t fixed, the weights are trained on the task, but only those in
     M_t ∧ ¬(M_1 ∨ … ∨ M_{t−1}) — the gradient is multiplied by that mask (`trainers/weights.py`,
     weight_mask_type="exclusive"). Weights in any earlier mask never change, so earlier tasks do not forget;
  3. M_t is stored (1 bit per weight). Task t predicts with W ⊙ M_t on the current weights W (task-IL).

`sparsity` is named and meant as in the paper and its code: the fraction of each layer's weights a mask *keeps*
(0.1 = 10% of the weights active; the paper's "sparse masks that activate 2-10% of the parameters" are 0.02-0.1).

How the method fits clbench's single loop (no special case in the runner): the runner's `epochs` of `train_step`
calls are phase 1 (mask learning, optimiser from the runner's TrainConfig: kind, lr, momentum, weight decay);
`after_experience` runs phase 2 itself for `weight_epochs` epochs (None: as many as the runner's epochs — the authors'
commands use --epochs = --weight-epochs) over the experience's training set, in mini-batches of the runner's batch size
shuffled with the strategy's own generator, with a fresh optimiser of the runner's kind and lr `weight_lr` (None: the
runner's lr). The reference optimises both phases with Adam, weight decay 0; its README runs ExSSNeT on vision with
--train-weight-lr=0.001, and (`get_optim_and_scheduler`) that lr is then used for the mask phase too, so the faithful
setting is `--optimizer adam --lr 0.001` with the defaults here. The runner's train_s includes both phases; its
train_loss is phase 1's. With weight_epochs=0 only phase 1 remains, which is SupSup's task-IL training (the reference
config's default, weight_epochs: 0); it then gives the same evaluations as clbench's `supsup`, bit for bit.

KNN-based Knowledge Transfer (KKT, `kkt=True`; off by default, because the authors' README commands for ExSSNeT do not
enable it (--sim-init defaults to "") and the abstract presents it as a further module on top of exclusive training;
`kkt_k` = 200 is the code's --num-topk default): before learning
the mask of task t>0, a random 20% of its training samples is embedded (the backbone's `features`, i.e. the
penultimate layer) by every earlier task's subnetwork; a `kkt_k`-nearest-neighbour classifier (L2, majority vote)
fitted on the first 2/3 of those embeddings is scored on the last 1/3; if the best task's accuracy beats chance
(1/number of the task's classes) the new task's scores start as a copy of that task's scores ("knn_best" in the
code). This needs every task's float scores, which are then kept (and counted in state_bytes).

Deliberate deviations from the reference code:
  * no validation split, best-epoch checkpointing or learning-rate schedulers (ReduceLROnPlateau + cosine): clbench's
    runner trains a fixed number of epochs at a constant lr, and phase 2 does the same;
  * after each optimiser step the weights outside M_t ∧ ¬(earlier masks) are restored to their values before the
    step; with the reference's setting (Adam, weight decay 0) masking the gradient already leaves them bit-identical
    (Adam's update is exactly 0 for entries whose gradient has always been 0), the restore makes it hold for any
    optimiser and weight decay of the runner as well (the reference asserts it after each step);
  * KKT embeds with the backbone's penultimate features (the reference's LeNet returns its second layer's output)
    and uses min(kkt_k, number of fitting samples) neighbours, so that small tasks work;
  * a task whose mask is not learned yet has no mask; it is answered with the most recent learned mask, or before
    any with the first task's initial random mask (as clbench's SupSup). This only affects the readings of tasks not
    trained yet (forward transfer).
Only the task-incremental scenario (the paper's) is supported: prediction needs the task id to pick the mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clbench.benchmarks.base import batch_slices
from clbench.errors import UsageError
from clbench.strategies import _supermask as sm
from clbench.strategies.base import Strategy, tensors_nbytes
from clbench.strategies.registry import register


def _make_optimizer(params, kind: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int) -> float:
    """Accuracy of a k-nearest-neighbour classifier (Euclidean distance, majority vote, ties to the smallest label)."""
    k = min(k, len(train_x))
    nearest = torch.cdist(test_x, train_x).topk(k, dim=1, largest=False).indices
    votes = train_y[nearest]
    return (torch.mode(votes, dim=1).values == test_y).float().mean().item()


@register("exssnet")
class ExSSNeT(Strategy):
    """Per task: learn a top-`sparsity` supermask over the current weights, then train only the weights of that mask
    no earlier mask uses, for `weight_epochs` epochs at `weight_lr`; `kkt` starts the mask from the most similar
    earlier task's (KNN with `kkt_k` neighbours)."""

    scenarios = frozenset({"task"})
    # each task trains fresh mask scores, so no optimizer state can carry over
    train_choices = {"optimizer_state": ("reset",)}

    def __init__(
        self,
        sparsity: float = 0.1,
        weight_epochs: int | None = None,
        weight_lr: float | None = None,
        kkt: bool = False,
        kkt_k: int = 200,
    ):
        self.sparsity = sparsity
        self.weight_epochs = weight_epochs
        self.weight_lr = weight_lr
        self.kkt = kkt
        self.kkt_k = kkt_k

    def validate(self):
        if not 0.0 < self.sparsity <= 1.0:
            raise UsageError(f"sparsity (fraction of weights a mask keeps) must be in (0, 1], got {self.sparsity}")
        if self.weight_epochs is not None and self.weight_epochs < 0:
            raise UsageError(f"weight_epochs must be >= 0 (or None: the runner's epochs), got {self.weight_epochs}")
        if self.weight_lr is not None and not (self.weight_lr > 0 and math.isfinite(self.weight_lr)):
            raise UsageError(f"weight_lr must be positive (or None: the runner's lr), got {self.weight_lr}")
        if self.kkt_k < 1:
            raise UsageError(f"kkt_k must be at least 1, got {self.kkt_k}")

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        sm.signed_constant_(model)  # signs from the runner-seeded initial weights; every parameter frozen
        self.weights_ = sm.maskable_weights(model)
        self._check_only_supported_parameters(model)
        self.shapes_ = {name: w.shape for name, w in self.weights_.items()}
        self.masks_: list[dict[str, torch.Tensor]] = []  # per finished task: {name: 1-bit packed mask}
        self.scores_history_: list[dict[str, torch.Tensor]] = []  # per finished task, kept only when kkt
        self.bn_stats_: list[dict[str, torch.Tensor]] = []  # per finished task's batch-norm running statistics
        self.kkt_sources_: list[int | None] = []  # per task: the earlier task its scores were copied from
        # the scores of the task being learned; the first task's are drawn now (they also answer for untrained tasks)
        self.scores_: dict[str, torch.Tensor] | None = sm.init_scores(self.weights_, generator=self.generator_)

    def _check_only_supported_parameters(self, model):
        """Every parameter must be a masked weight, a (zeroed, frozen) bias of a masked layer or a (frozen, identity)
        batch-norm affine parameter: anything else would be shared, trained and unprotected."""
        supported = set(self.weights_)
        for prefix, module in model.named_modules():
            if isinstance(module, sm.MASKABLE_MODULES + sm._BN):
                supported |= {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)}
        unsupported = sorted(set(dict(model.named_parameters())) - supported)
        if unsupported:
            raise UsageError(
                f"exssnet masks nn.Linear/nn.Conv2d weights (biases zeroed, batch norm non-affine); the backbone has "
                f"other parameters it cannot protect: {', '.join(unsupported)}"
            )

    def before_experience(self, exp):
        t = exp.task_id
        if t != len(self.masks_):
            raise RuntimeError(f"exssnet learns tasks in order: expected task {len(self.masks_)}, got {t}")
        for module in self.model_.modules():  # the reference keeps one set of batch-norm statistics per task
            if isinstance(module, sm._BN) and module.track_running_stats:
                module.reset_running_stats()
        scores = self.scores_ if t == 0 else sm.init_scores(self.weights_, generator=self.generator_)
        source = self.knn_source_task(exp) if self.kkt and t > 0 else None
        if source is not None:
            with torch.no_grad():
                for name, s in scores.items():
                    s.copy_(self.scores_history_[source][name])
        self.kkt_sources_.append(source)
        self.scores_ = scores
        cfg = self.train_config_
        self.optimizer_ = _make_optimizer(list(scores.values()), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def train_step(self, batch):
        """Phase 1: one edge-popup step on the current task's scores (weights fixed)."""
        self.model_.train()
        self.optimizer_.zero_grad(set_to_none=True)
        masks = sm.topk_masks(self.scores_, self.sparsity)
        logits = sm.masked_forward(self.model_, masks, batch.x)
        loss = F.cross_entropy(self.mask_logits(logits, batch.task), batch.y)
        loss.backward()
        self.optimizer_.step()
        return {"loss": loss.item()}

    def after_experience(self, exp):
        with torch.no_grad():
            mask = {name: sm.topk_mask(s, self.sparsity).bool() for name, s in self.scores_.items()}
        self.train_exclusive_weights(exp, mask)
        self.masks_.append({name: sm.pack_mask(m) for name, m in mask.items()})
        if self.kkt:
            self.scores_history_.append({name: s.detach().clone() for name, s in self.scores_.items()})
        self.bn_stats_.append(sm.bn_buffers(self.model_))
        self.scores_ = None
        self.optimizer_ = None

    # -- phase 2 -----------------------------------------------------------------------------------------------------
    def earlier_union(self) -> dict[str, torch.Tensor]:
        """Bool {name: M_1 ∨ … ∨ M_{t−1}} over the stored masks (all False before the first task)."""
        union = {n: torch.zeros(shape, dtype=torch.bool, device=self.device_) for n, shape in self.shapes_.items()}
        for packed in self.masks_:
            for name in union:
                union[name] |= sm.unpack_mask(packed[name], self.shapes_[name], dtype=torch.bool)
        return union

    def exclusive_masks(self, mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bool {name: M_t ∧ ¬(earlier masks)}: the weights task t may train."""
        union = self.earlier_union()
        return {name: m & ~union[name] for name, m in mask.items()}

    def train_exclusive_weights(self, exp, mask: dict[str, torch.Tensor]) -> None:
        """Phase 2: train the weights of M_t that no earlier mask uses, with M_t fixed; all other weights (earlier
        tasks' included) end bit-identical."""
        cfg = self.train_config_
        epochs = cfg.epochs if self.weight_epochs is None else self.weight_epochs
        trainable = self.exclusive_masks(mask)
        self.trainable_ = trainable  # kept for inspection (tests, reports); not state the method needs
        if epochs == 0 or not any(m.any() for m in trainable.values()):
            return
        float_mask = {name: m.float() for name, m in mask.items()}
        weights = self.weights_
        frozen = {name: w.detach().clone() for name, w in weights.items()}
        lr = cfg.lr if self.weight_lr is None else self.weight_lr
        for w in weights.values():
            w.requires_grad_(True)
        optimizer = _make_optimizer(list(weights.values()), cfg.optimizer, lr, cfg.momentum, cfg.weight_decay)
        data = exp.train.to(self.device_)
        self.model_.train()
        try:
            for _ in range(epochs):
                order = torch.randperm(len(data), generator=self.generator_).to(self.device_)
                for idx in batch_slices(order, cfg.batch_size, cfg.drop_last):  # as the runner's mini-batches
                    optimizer.zero_grad(set_to_none=True)
                    logits = sm.masked_forward(self.model_, float_mask, data.x[idx])
                    loss = F.cross_entropy(self.mask_logits(logits, data.task[idx]), data.y[idx])
                    loss.backward()
                    for name, w in weights.items():
                        w.grad.mul_(trainable[name])  # the exclusive gradient mask of the paper
                    optimizer.step()
                    with torch.no_grad():
                        for name, w in weights.items():
                            w.copy_(torch.where(trainable[name], w, frozen[name]))
        finally:
            for w in weights.values():
                w.requires_grad_(False)
                w.grad = None

    # -- KKT ---------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def knn_source_task(self, exp) -> int | None:
        """The earlier task whose subnetwork's features best separate the new task's classes by KNN, if better than
        chance; None otherwise (KKT, "knn_best")."""
        data = exp.train
        n = max(2, math.ceil(0.2 * len(data)))
        sample = data.subset(torch.randperm(len(data), generator=self.generator_)[:n]).to(self.device_)
        split = max(1, int(len(sample) * 0.66))
        accuracies = []
        self.model_.eval()
        for j in range(len(self.masks_)):
            features = sm.masked_forward(
                self.model_.features, self._submodule_masks(self.task_masks(j), "features."), sample.x,
                buffers=self._submodule_masks(self.bn_stats_[j], "features."),
            ).flatten(1)
            accuracies.append(
                knn_accuracy(features[:split], sample.y[:split], features[split:], sample.y[split:], self.kkt_k)
            )
        self.kkt_accuracies_ = accuracies
        best = max(range(len(accuracies)), key=lambda j: accuracies[j])
        return best if accuracies[best] > 1 / len(exp.classes) else None

    @staticmethod
    def _submodule_masks(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}

    # -- prediction --------------------------------------------------------------------------------------------------
    def task_masks(self, task: int) -> dict[str, torch.Tensor]:
        """Float {name: M_task}: the stored mask of a learned task. A task not learned yet has no mask: it is answered
        with the most recent learned mask or, before the first one, the first task's initial random mask (as the
        sibling SupSup does, so that forward-transfer readings compare)."""
        if task < len(self.masks_):
            return {name: sm.unpack_mask(p, self.shapes_[name]) for name, p in self.masks_[task].items()}
        if self.masks_:
            return self.task_masks(len(self.masks_) - 1)
        return {name: sm.topk_mask(s.detach(), self.sparsity) for name, s in self.scores_.items()}

    def predict(self, x, task_id):
        if task_id is None:
            raise UsageError("exssnet predicts with the task's mask and needs the task id (task-incremental only)")
        self.model_.eval()
        if isinstance(task_id, torch.Tensor):
            logits = None
            for t in task_id.unique().tolist():
                rows = task_id == t
                out = self._predict_task(x[rows], t)
                logits = out.new_empty(len(x), out.shape[1]) if logits is None else logits
                logits[rows] = out
            return logits
        return self._predict_task(x, task_id)

    def _predict_task(self, x, task: int):
        buffers = self.bn_stats_[min(task, len(self.bn_stats_) - 1)] if self.bn_stats_ else None
        return self.mask_logits(sm.masked_forward(self.model_, self.task_masks(task), x, buffers=buffers), task)

    def state_bytes(self):
        stored = [p for masks in self.masks_ for p in masks.values()]
        stored += [s for scores in self.scores_history_ for s in scores.values()]
        stored += [b for stats in self.bn_stats_ for b in stats.values()]
        if self.scores_ is not None:  # the scores of the task being learned (and, before training, the first's)
            stored += list(self.scores_.values())
        return tensors_nbytes(*stored)
