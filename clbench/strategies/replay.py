"""Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"; Rolnick et al. 2019).

Every training mini-batch is concatenated with `batch_size_mem` samples drawn from a fixed-size memory of earlier
experiences (as Avalanche's ReplayPlugin does); the memory is updated after each experience, so the current
experience never replays itself.

Both storage policies are exact and vectorised through random priorities: every sample ever offered to the buffer
draws a uniform key once, and the buffer keeps the samples with the smallest keys —
  * "reservoir":      the `mem_size` smallest keys overall, i.e. a uniform sample of everything seen so far, exactly
                      the distribution of reservoir sampling (Vitter 1985);
  * "class_balanced": the smallest keys within each class, `mem_size` split evenly over the classes seen so far
                      (Avalanche's ClassBalancedBuffer with adaptive size); the first classes get the remainder.
"""

from __future__ import annotations

from typing import Literal

import torch

from clbench.benchmarks.base import Batch, TensorData
from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


@register("replay")
class Replay(SGDStrategy):
    """Rehearsal from a `mem_size`-sample buffer; `batch_size_mem` None means the training batch size."""

    min_mem_size = 1  # subclasses for which replay is optional lower it to 0 (= off)

    def __init__(
        self,
        mem_size: int = 200,
        storage_policy: Literal["reservoir", "class_balanced"] = "reservoir",
        batch_size_mem: int | None = None,
    ):
        self.mem_size = mem_size
        self.storage_policy = storage_policy
        self.batch_size_mem = batch_size_mem

    def validate(self):
        if self.mem_size < self.min_mem_size:
            raise UsageError(f"mem_size must be at least {self.min_mem_size}, got {self.mem_size}")
        if self.batch_size_mem is not None and self.batch_size_mem < 1:
            raise UsageError(f"batch_size_mem must be at least 1 or None, got {self.batch_size_mem}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.buffer_: TensorData | None = None
        self.keys_ = torch.empty(0)

    def augment_batch(self, batch: Batch) -> Batch:
        if self.buffer_ is None:
            return batch
        n = min(self.batch_size_mem or self.train_config_.batch_size, len(self.buffer_))
        picked = torch.randperm(len(self.buffer_), generator=self.generator_)[:n].to(self.device_)
        memory = self.buffer_.subset(picked)
        return Batch(
            torch.cat([batch.x, memory.x]), torch.cat([batch.y, memory.y]), torch.cat([batch.task, memory.task])
        )

    def after_experience(self, exp):
        new = exp.train.to(self.device_)
        new_keys = torch.rand(len(new), generator=self.generator_)
        pool = new if self.buffer_ is None else TensorData.concat([self.buffer_, new])
        keys = torch.cat([self.keys_, new_keys])
        keep = self._smallest_keys(keys, pool.y.cpu())
        self.buffer_, self.keys_ = pool.subset(keep.to(self.device_)), keys[keep]

    def _smallest_keys(self, keys: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.storage_policy == "reservoir":
            return torch.argsort(keys, stable=True)[: self.mem_size]
        classes = torch.unique(labels)  # sorted, so the remainder goes to the lowest units deterministically
        quota = torch.full((len(classes),), self.mem_size // len(classes))
        quota[: self.mem_size % len(classes)] += 1
        kept = []
        for cls, k in zip(classes.tolist(), quota.tolist(), strict=True):
            members = torch.nonzero(labels == cls).flatten()
            kept.append(members[torch.argsort(keys[members], stable=True)[:k]])
        return torch.sort(torch.cat(kept)).values

    def state_bytes(self):
        if self.buffer_ is None:
            return 0
        return tensors_nbytes(self.buffer_.x, self.buffer_.y, self.buffer_.task, self.keys_)
