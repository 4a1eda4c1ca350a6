"""Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"; Rolnick et al. 2019).

Every training mini-batch is joined by `batch_size_mem` samples (default: the batch size; at most the memory's size)
drawn uniformly without replacement from the memory. When the memory takes its samples (`update`):
  * "experience": after each experience, all of its training samples at once, so the current experience never
                  replays itself (Avalanche's ReplayPlugin);
  * "stream":     after every optimizer step, the step's incoming mini-batch (before its replayed part was added),
                  so the memory follows the stream and the current experience is replayed too, from the second step
                  of the first experience on: Chaudhry et al.'s ER (the paper above, reservoir update of every
                  incoming batch) and Mammoth's ER (aimagelab/mammoth, models/er.py: buffer.add_data after
                  opt.step, utils/buffer.py's reservoir). With "reservoir", after N samples have arrived the memory
                  is a uniform sample of min(N, mem_size) of them, each in it with probability min(1, mem_size / N),
                  as Vitter's algorithm R gives (Mammoth's); the storage policies below apply unchanged to the
                  samples seen so far. "by_task" weighting needs "experience" (it weighs the current experience
                  against the earlier ones, which a streaming memory mixes).
How the two parts make the loss (`loss_weighting`):
  * "concat":  one cross-entropy over the concatenated batch, as Avalanche's ReplayPlugin (equal batches: ½, ½);
  * "by_task": (1/t)·CE(current) + (1 − 1/t)·CE(replayed) while training experience t (1-based), van de Ven &
               Tolias's weighting (continual-learning, `--replay exemplars`, rnt = 1/t); in task-IL the replayed part
               takes ceil(batch_size_mem / (t − 1)) samples from each earlier task, so its mean is the average of the
               per-task losses, as that code does.

The storage policies are exact and vectorised through random priorities: every sample ever offered to the buffer
draws a uniform key once, and the buffer keeps the samples with the smallest keys —
  * "reservoir":       the `mem_size` smallest keys overall, i.e. a uniform sample of everything seen so far, exactly
                       the distribution of reservoir sampling (Vitter 1985);
  * "class_balanced":  the smallest keys within each class, `mem_size` split evenly over the classes seen so far
                       (Avalanche's ClassBalancedBuffer with adaptive size); the first classes get the remainder;
  * "fixed_per_class": `per_class` random samples of every class of every experience (a class of two domain-IL
                       experiences counts twice), kept unchanged once stored, so the memory grows with the stream
                       (van de Ven & Tolias's exemplar memory, `--budget` 100 per class; `mem_size` does not apply).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from clbench.benchmarks.base import Batch, TensorData
from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


@register("replay")
class Replay(SGDStrategy):
    """Rehearsal from a `mem_size`-sample buffer (or `per_class` samples per class with "fixed_per_class");
    `batch_size_mem` None means the training batch size; `loss_weighting` "concat" or "by_task"; `update`
    "experience" (after each experience) or "stream" (after every step, with its incoming batch)."""

    min_mem_size = 1  # subclasses for which replay is optional lower it to 0 (= off)
    update = "experience"  # for subclasses whose constructor does not take the option

    def __init__(
        self,
        mem_size: int = 200,
        storage_policy: Literal["reservoir", "class_balanced", "fixed_per_class"] = "reservoir",
        batch_size_mem: int | None = None,
        loss_weighting: Literal["concat", "by_task"] = "concat",
        per_class: int | None = None,
        update: Literal["experience", "stream"] = "experience",
    ):
        self.mem_size = mem_size
        self.storage_policy = storage_policy
        self.batch_size_mem = batch_size_mem
        self.loss_weighting = loss_weighting
        self.per_class = per_class
        self.update = update

    def validate(self):
        if self.mem_size < self.min_mem_size:
            raise UsageError(f"mem_size must be at least {self.min_mem_size}, got {self.mem_size}")
        if self.batch_size_mem is not None and self.batch_size_mem < 1:
            raise UsageError(f"batch_size_mem must be at least 1 or None, got {self.batch_size_mem}")
        if self.storage_policy == "fixed_per_class" and (self.per_class is None or self.per_class < 1):
            raise UsageError(f"storage_policy='fixed_per_class' needs per_class >= 1, got {self.per_class}")
        if self.storage_policy != "fixed_per_class" and self.per_class is not None:
            raise UsageError(f"per_class is only used with storage_policy='fixed_per_class', not "
                             f"{self.storage_policy!r}; leave it unset (mem_size sets the memory)")
        if self.update == "stream" and self.loss_weighting == "by_task":
            raise UsageError("loss_weighting='by_task' needs update='experience' (it weighs the current experience "
                             "against earlier ones, which update='stream' mixes in one memory)")

    @property
    def replays(self) -> bool:
        return self.mem_size > 0 or self.storage_policy == "fixed_per_class"

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.buffer_: TensorData | None = None
        self.keys_ = torch.empty(0)
        self.experiences_seen_ = 0
        self.n_current_ = 0

    def augment_batch(self, batch: Batch) -> Batch:
        self.n_current_ = len(batch.y)
        if self.buffer_ is None or len(self.buffer_) == 0:
            return batch
        memory = self.buffer_.subset(self._replay_indices().to(self.device_))
        return Batch(
            torch.cat([batch.x, memory.x]), torch.cat([batch.y, memory.y]), torch.cat([batch.task, memory.task])
        )

    def _replay_indices(self) -> torch.Tensor:
        """Buffer rows of this step's replayed samples: a uniform draw without replacement or, by_task in task-IL,
        an equal share from every earlier task."""
        n = self.batch_size_mem or self.train_config_.batch_size
        if self.loss_weighting == "by_task" and self.spec_.scenario == "task":
            tasks = self.buffer_.task.cpu()
            groups = [torch.nonzero(tasks == t).flatten() for t in torch.unique(tasks).tolist()]
            share = -(-n // len(groups))
            return torch.cat([g[torch.randperm(len(g), generator=self.generator_)[:share]] for g in groups])
        return torch.randperm(len(self.buffer_), generator=self.generator_)[: min(n, len(self.buffer_))]

    @property
    def own_task_loss(self) -> bool:
        return self.loss_weighting == "by_task"

    def task_loss(self, logits, batch):
        if self.loss_weighting == "concat" or len(batch.y) == self.n_current_:
            return super().task_loss(logits, batch)
        masked = self.mask_logits(logits, batch.task)
        k = self.n_current_
        t = self.experiences_seen_ + 1  # the experience being trained, 1-based
        current = F.cross_entropy(masked[:k], batch.y[:k])
        replayed = F.cross_entropy(masked[k:], batch.y[k:])
        return current / t + (1 - 1 / t) * replayed

    def train_step(self, batch):
        stats = super().train_step(batch)
        if self.update == "stream" and self.replays:
            self._store(TensorData(batch.x, batch.y, batch.task))  # the incoming samples, after the step (Mammoth)
        return stats

    def after_experience(self, exp):
        self.experiences_seen_ += 1
        if self.update == "stream" or not self.replays:
            return
        self._store(exp.train)

    def _store(self, data: TensorData) -> None:
        """Offer `data` to the memory: every sample draws its key, the storage policy keeps the smallest."""
        new = data.to(self.device_)
        new_keys = torch.rand(len(new), generator=self.generator_)
        pool = new if self.buffer_ is None else TensorData.concat([self.buffer_, new])
        keys = torch.cat([self.keys_, new_keys])
        keep = self._smallest_keys(keys, pool.y.cpu(), pool.task.cpu())
        self.buffer_, self.keys_ = pool.subset(keep.to(self.device_)), keys[keep]

    def _smallest_keys(self, keys: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        if self.storage_policy == "reservoir":
            return torch.argsort(keys, stable=True)[: self.mem_size]
        if self.storage_policy == "fixed_per_class":
            # a class per experience: (task, label) pairs, so domain-IL's repeated labels get a quota each time
            groups = torch.unique(torch.stack([tasks, labels], 1), dim=0)
            members = [torch.nonzero((tasks == t) & (labels == y)).flatten() for t, y in groups.tolist()]
            quotas = [self.per_class] * len(members)
        else:
            classes = torch.unique(labels)  # sorted, so the remainder goes to the lowest units deterministically
            quota = torch.full((len(classes),), self.mem_size // len(classes))
            quota[: self.mem_size % len(classes)] += 1
            members = [torch.nonzero(labels == cls).flatten() for cls in classes.tolist()]
            quotas = quota.tolist()
        kept = [m[torch.argsort(keys[m], stable=True)[:k]] for m, k in zip(members, quotas, strict=True)]
        return torch.sort(torch.cat(kept)).values

    def state_bytes(self):
        if self.buffer_ is None:
            return 0
        return tensors_nbytes(self.buffer_.x, self.buffer_.y, self.buffer_.task, self.keys_)
