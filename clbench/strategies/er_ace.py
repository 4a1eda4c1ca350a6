"""Experience Replay with Asymmetric Cross-Entropy, ER-ACE (Caccia, Aljundi, Asadi, Tuytelaars, Pineau & Belilovsky,
"New Insights on Reducing Abrupt Representation Change in Online Continual Learning", ICLR 2022).

Each step has two cross-entropies:
  * the incoming mini-batch's, over the output units of the classes *present in that mini-batch* only (the logits of
    every other unit are masked out, so they receive exactly zero gradient: new classes do not push old ones down);
  * a replayed mini-batch's, `batch_size_mem` samples drawn uniformly without replacement from the memory, over the
    full head (every output unit, as Avalanche and the authors' code; in task-IL each sample's own task's units).
With replay the loss is their mean, (incoming + replayed) / 2, as Avalanche's ACECriterion; without replay (the first
experience) it is the incoming term alone. Each part has its own forward pass, as in Avalanche.

Names, defaults and the memory follow Avalanche's ER_ACE (avalanche/training/supervised/er_ace.py): mem_size=200,
batch_size_mem=10, a class-balanced memory (`mem_size` split evenly over the classes seen so far, Avalanche's
ClassBalancedBuffer with adaptive size) that receives each experience's samples *before* it is trained, so the
replayed batches mix the current classes with the old ones (Avalanche's adaptation of the online method), and replay
starts at the second experience. `storage_policy="reservoir"` keeps a uniform sample of everything seen instead
(the paper's reservoir). The memory is clbench's replay buffer (exact, vectorised; see replay.py).

Differences, on purpose:
  * The first experience also uses the restricted cross-entropy (the asymmetric rule of the paper applies to every
    incoming batch); Avalanche, which has no replay there, uses the plain cross-entropy over all units then, and the
    authors' code masks only from the second task on.
  * The authors' code (and Mammoth's port) also leaves the units of classes not seen yet unmasked in the incoming
    loss and sums the two terms; we follow Avalanche (only present classes; the mean).
  * A memory smaller than `batch_size_mem` replays all of it; Avalanche's loader (drop_last) replays nothing then.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from clbench.benchmarks.base import Batch
from clbench.strategies.base import MASKED_LOGIT
from clbench.strategies.registry import register
from clbench.strategies.replay import Replay


@register("er-ace")
class ERACE(Replay):
    """Experience replay whose incoming loss covers only the classes in the incoming batch (`mem_size` samples,
    class-balanced or reservoir; `batch_size_mem` replayed per step, None: the training batch size)."""

    def __init__(self, mem_size: int = 200, batch_size_mem: int | None = 10,
                 storage_policy: Literal["class_balanced", "reservoir"] = "class_balanced"):
        self.mem_size = mem_size
        self.batch_size_mem = batch_size_mem
        self.storage_policy = storage_policy
        # Replay's options this method does not have: one uniform replayed batch, a memory of mem_size samples
        self.loss_weighting = "concat"
        self.per_class = None

    def before_experience(self, exp):
        # store this experience's samples before training on it (Avalanche): Replay's update, moved earlier
        Replay.after_experience(self, exp)

    def after_experience(self, exp):
        pass

    @property
    def replaying(self) -> bool:
        """True from the second experience on (the memory then holds earlier experiences' samples)."""
        return self.experiences_seen_ > 1 and self.buffer_ is not None and len(self.buffer_) > 0

    def augment_batch(self, batch: Batch) -> Batch:
        return batch  # the replayed batch has a forward pass of its own (task_loss)

    @property
    def own_task_loss(self) -> bool:
        return True

    def task_loss(self, logits, batch):
        incoming = self.incoming_loss(logits, batch.y, batch.task)
        if not self.replaying:
            return incoming
        memory = self.buffer_.subset(self._replay_indices().to(self.device_))
        replayed = self.replay_loss(self.forward(memory.x)[1], memory.y, memory.task)
        return (incoming + replayed) / 2

    def incoming_loss(self, logits: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the units of the classes present in `y` (and, in task-IL, of the sample's task)."""
        present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device).index_fill_(0, y, True)
        return F.cross_entropy(self.mask_logits(logits, task).masked_fill(~present, MASKED_LOGIT), y)

    def replay_loss(self, logits: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the full head (in task-IL, each sample's own task's units)."""
        return F.cross_entropy(self.mask_logits(logits, task), y)
