"""Supermasks in Superposition, SupSup (Wortsman, Ramanujan, Liu, Kembhavi, Rastegari, Yosinski, Farhadi, NeurIPS
2020), following the paper and its reference code RAIVNLab/supsup (`models/modules.py` MultitaskMaskConv,
`models/module_util.py` GetSubnet/mask_init, `models/init.py` signed_constant, `adaptors.py`
se_oneshot_entropy_minimization, `main.py`). The supermask machinery lives in `clbench.strategies._supermask`.

Training. The backbone is turned once, in `setup`, into a frozen random network: every Linear/Conv2d weight becomes
±σ with σ = sqrt(2/fan_in) (the Kaiming-normal std) and the sign of its random initial value ("signed constant");
biases are set to 0 and batch-norm affine parameters to (1, 0), i.e. the reference's bias-free layers and non-affine
batch norm. Nothing of the model is trained afterwards (its tensors stay bit-identical). Each experience t gets fresh
real-valued scores for every Linear/Conv2d weight (the head included, as the reference masks its last layer too),
initialised like a default layer (kaiming_uniform, a=√5). The forward pass uses W ⊙ M_t with M_t the top-`sparsity`
fraction of |scores| in each layer (edge-popup, Ramanujan et al. 2020; reference `GetSubnet` on `scores.abs()`), with
the straight-through gradient; only the current task's scores are optimised, with the runner's optimizer settings
(`train_config_`: Adam or SGD, lr, momentum, weight decay). After the experience the scores are discarded and the mask
is kept, packed to 1 bit per weight. Models with batch norm keep one set of running statistics per task (the
reference's `MultitaskNonAffineBN`).

`sparsity` is named as in the paper and code, where it is the fraction of weights each mask *keeps* (the code's
`--sparsity`, default 0.5: "higher sparsity values mean more dense subnetworks"); valid range (0, 1].

Which output units the loss sees. Task-IL: the task's own units (a multi-head model, the reference's GG setting with
`output_size` = classes per task). Class-IL and domain-IL: all output units, as in the reference's GN setting where the
whole output layer — including the units no task uses ("superfluous neurons", `output_size` 500 for 10 labels) — is
in the softmax; in class-IL the other tasks' units play that role, so a task's mask learns to keep them low, which
is what makes the entropy of a wrong superposition high.

Prediction.
  * task-IL (task id given): the task's mask, logits restricted to its units → forgetting is exactly zero.
  * class-IL and domain-IL (no task id): the paper's One-Shot task inference. All learned masks are superimposed
    with α_i = 1/k (k tasks learned), the output entropy H (mean over the batch) of W ⊙ Σ α_i M_i is computed, and
    the task is argmin_i ∂H/∂α_i (one gradient, `torch.enable_grad()` locally because the runner predicts under
    no_grad). The batch is then classified with the inferred task's mask; in class-IL the logits are restricted to
    that task's units. Inference is per `predict` batch: the paper's setting gives the model a batch of data all
    from one task, and clbench's runner evaluates each experience's test set in batches drawn from that experience
    alone (`--eval-batch-size`, 2048 by default; the reference uses test batches of 128). H is the mean entropy
    over the whole batch; the reference's adaptor slices the logits to the first `data_to_repeat` samples (1 in its
    permuted-MNIST scripts) before taking the entropy, i.e. it scores one sample and applies the inferred task to the
    batch; here every sample of the batch counts, as the paper describes inference from a batch of one task's data.
    Per-sample inference is not offered: it needs one superposed network per sample.

Known behaviour. In the paper's GN setting (permuted streams, shared head: clbench's permuted-* domain-IL) one-shot
inference is reliable once the masks are trained, and the domain-IL forgetting is then zero too. On split streams in
class-IL (two classes per task; not a setting the paper evaluates with one-shot inference — it uses HopSupSup for
SplitMNIST) the entropy gradient is dominated by how much each mask scales the output, and whole experiences can be
assigned to a wrong task, more so at low `sparsity`.

Deliberate deviations and choices:
  * masks are top-k of |scores| (the reference's MultitaskMaskConv, used in its GG experiments and the one whose
    density is controlled) for every scenario; the reference's MNIST GN experiments use the thresholded variant
    (FastMultitaskMaskConv, mask = scores ≥ 0, density ≈ 50% and not set), so `sparsity`=0.5 is the closest setting;
  * the same `sparsity` in every layer (the reference's default; its SplitCIFAR100 runs scale it per layer with
    `--er-sparsity`, which is not implemented);
  * the optimizer is the runner's (Adam or SGD, with its lr, momentum and weight decay); the reference uses RMSProp
    lr 1e-4 for permuted MNIST and Adam lr 1e-3 (weight decay 1e-4) for SplitCIFAR100. Recommended here:
    `--optimizer adam --lr 0.001` (split-fmnist task-IL, 1 epoch: Adam 1e-3 0.979, Adam 1e-2 0.974, SGD 0.1 with
    momentum 0.9 0.979);
  * during one-shot inference batch norm uses the batch's statistics (the reference calls `model.train()` there)
    without updating any stored statistics; the final prediction uses the inferred task's running statistics;
  * tasks not learned yet (the upper triangle of R, and the random-init row) are predicted with the most recent
    learned mask, or, before any task is learned, with the mask of the first task's initial scores;
  * no Binary/HopSupSup/NNs variants, no task-inference over more than one gradient step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clbench.errors import UsageError
from clbench.strategies import _supermask as sm
from clbench.strategies.base import MASKED_LOGIT, Strategy, tensors_nbytes
from clbench.strategies.registry import register


@register("supsup")
class SupSup(Strategy):
    """Frozen signed-constant network; one learned top-k supermask per task (`sparsity` = fraction of weights each
    mask keeps); task id given → its mask; no task id → one-shot entropy-gradient task inference per batch."""

    scenarios = frozenset({"task", "class", "domain"})
    # each task trains a fresh set of mask scores, so no optimizer state can carry over
    train_choices = {"optimizer_state": ("reset",)}

    def __init__(self, sparsity: float = 0.5):
        self.sparsity = sparsity

    def validate(self):
        if not 0.0 < self.sparsity <= 1.0:
            raise UsageError(f"sparsity (fraction of weights each mask keeps) must be in (0, 1], got {self.sparsity}")

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        sm.signed_constant_(model)
        self.params_ = dict(model.named_parameters())  # frozen; masked copies are built per forward
        weights = sm.maskable_weights(model)
        self.shapes_ = {name: tuple(w.shape) for name, w in weights.items()}
        for name, shape in self.shapes_.items():
            numel = int(torch.Size(shape).numel())
            if sm.kept_count(numel, self.sparsity) == 0:
                raise UsageError(
                    f"sparsity={self.sparsity} keeps no weight of layer {name} ({numel} weights); "
                    f"use sparsity >= {1 / numel:.2g}"
                )
        self.initial_bn_ = sm.bn_buffers(model)  # fresh statistics every task starts from
        self.packed_masks_: list[dict[str, torch.Tensor]] = []  # one per learned task, 1 bit per weight
        self.bn_stats_: list[dict[str, torch.Tensor]] = []  # one per learned task (empty dicts without batch norm)
        self.scores_ = sm.init_scores(weights, self.generator_)  # the first task's scores (also the init mask)
        self.current_bn_ = self._fresh_bn()
        self.current_task_ = 0
        self.optimizer_ = None

    def _fresh_bn(self):
        return {name: b.clone() for name, b in self.initial_bn_.items()}

    def before_experience(self, exp):
        if exp.task_id != len(self.packed_masks_):
            raise RuntimeError(f"experience {exp.task_id} arrives after {len(self.packed_masks_)} learned tasks")
        if self.scores_ is None:
            self.scores_ = sm.init_scores(sm.maskable_weights(self.model_), self.generator_)
            self.current_bn_ = self._fresh_bn()
        self.current_task_ = exp.task_id
        self.optimizer_ = self._make_optimizer(list(self.scores_.values()))

    def _make_optimizer(self, params):
        cfg = self.train_config_
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def train_step(self, batch):
        self.model_.train()
        self.optimizer_.zero_grad(set_to_none=True)
        masks = sm.topk_masks(self.scores_, self.sparsity)
        logits = sm.masked_forward(self.model_, masks, batch.x, params=self.params_, buffers=self.current_bn_)
        if self.spec_.scenario == "task":
            logits = self.mask_logits(logits, batch.task)
        loss = F.cross_entropy(logits, batch.y)
        loss.backward()
        self.optimizer_.step()
        return {"loss": loss.item()}

    def after_experience(self, exp):
        with torch.no_grad():
            masks = sm.topk_masks(self.scores_, self.sparsity)
        self.packed_masks_.append({name: sm.pack_mask(m) for name, m in masks.items()})
        self.bn_stats_.append(self.current_bn_)
        self.scores_, self.current_bn_, self.optimizer_ = None, None, None

    # -- prediction --------------------------------------------------------------------------------------------------
    @property
    def n_learned(self) -> int:
        return len(self.packed_masks_)

    def task_mask(self, task: int) -> dict[str, torch.Tensor]:
        """Float 0/1 masks of a learned task (unpacked from the stored bits)."""
        return {name: sm.unpack_mask(p, self.shapes_[name]) for name, p in self.packed_masks_[task].items()}

    def _mask_and_bn(self, task: int):
        if task < self.n_learned:
            return self.task_mask(task), self.bn_stats_[task]
        if self.n_learned:  # not learned yet: the most recent learned mask
            return self.task_mask(self.n_learned - 1), self.bn_stats_[-1]
        with torch.no_grad():  # nothing learned: the first task's initial mask
            return sm.topk_masks(self.scores_, self.sparsity), self.current_bn_

    def infer_task(self, x: torch.Tensor) -> int:
        """One-Shot task inference on a batch from one task: argmin_i ∂H/∂α_i at α = 1/k (H = mean output entropy)."""
        k = self.n_learned
        if k <= 1:
            return 0
        masks = [self.task_mask(t) for t in range(k)]
        was_training = self.model_.training
        self.model_.train()  # batch statistics, as the reference's adaptor; stored statistics are not touched
        try:
            with torch.enable_grad():
                alphas = torch.full((k,), 1.0 / k, device=x.device, requires_grad=True)
                superposed = sm.superimpose(masks, alphas)
                throwaway_bn = self._fresh_bn()
                logits = sm.masked_forward(self.model_, superposed, x, params=self.params_, buffers=throwaway_bn)
                entropy = -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()
                (grad,) = torch.autograd.grad(entropy, alphas)
        finally:
            self.model_.train(was_training)
        return int(grad.argmin().item())

    def predict(self, x, task_id):
        task = task_id if task_id is not None else self.infer_task(x)
        masks, bn = self._mask_and_bn(task)
        self.model_.eval()
        with torch.no_grad():
            logits = sm.masked_forward(self.model_, masks, x, params=self.params_, buffers=bn)
        # the task's own units (in domain-IL every experience owns all units, so this changes nothing there)
        return logits.masked_fill(~self.unit_mask_[task].expand_as(logits), MASKED_LOGIT)

    def state_bytes(self):
        total = sum(tensors_nbytes(*masks.values()) for masks in self.packed_masks_)
        total += sum(tensors_nbytes(*bn.values()) for bn in self.bn_stats_) + tensors_nbytes(*self.initial_bn_.values())
        if self.scores_ is not None:
            total += tensors_nbytes(*self.scores_.values())
        if self.current_bn_ is not None:
            total += tensors_nbytes(*self.current_bn_.values())
        return total
