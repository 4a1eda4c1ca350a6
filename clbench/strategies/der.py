"""Dark Experience Replay, DER and DER++ (Buzzega, Boschini, Porrello, Abati & Calderara, "Dark Experience for General
Continual Learning: a Strong, Simple Baseline", NeurIPS 2020).

A reservoir of `mem_size` samples keeps, besides each sample's input, label and task id, the logits the model gave it
when it arrived. Every step trains on

    CE(current batch) + alpha · MSE(model(x'), stored logits of x') + beta · CE(model(x''), y'')

where x' and x'' are two *independent* draws of `batch_size_mem` samples (None: the training batch size; at most the
buffer's size) from the buffer, each without replacement, as the authors' code (Mammoth, models/derpp.py) draws them;
beta = 0 is DER. Each draw has its own forward pass (Mammoth's three passes), so BatchNorm sees the current batch on
its own. A term whose weight is 0 draws and computes nothing, so alpha = beta = 0 is naive fine-tuning bit for bit.
The MSE is the mean over the compared logit entries (`F.mse_loss`), as in Mammoth.

The buffer is filled *during training*, as in the paper and Mammoth: after the buffer draws, every incoming sample is
offered to the reservoir (Vitter's algorithm R over the stream of all samples seen: sample number i, 0-based, takes
slot i while i < mem_size, else slot r for r uniform in {0, ..., i} when r < mem_size), with the logits of this
step's forward pass on the current batch, before the update, detached. Stored logits are never refreshed. The rule
is vectorised per mini-batch and exact: when two samples of one batch draw the same slot, the later one keeps it, as
the sequential loop would leave it. Random numbers come from the strategy's own generator, never the data order's.

Names and defaults are Avalanche's DER (avalanche/training/supervised/der.py): mem_size=200, batch_size_mem=None
(the training batch size), alpha=0.1, beta=0.5. Differences, on purpose:
  * Avalanche fills a class-balanced buffer after each experience, with logits computed in eval mode once the
    experience is trained, and replays one buffer batch through a joint forward pass for both terms. We follow the
    paper and Mammoth instead (online reservoir, logits at insertion time, two independent buffer batches, separate
    forward passes), and, like Mammoth, replay from the second step of the first experience on.
  * No data augmentation: clbench streams have none, so the stored input and the one the logits came from agree.
  * Task-IL: the buffer's CE term masks each replayed sample's logits to its own task's units (as the training CE),
    and the MSE compares only those units: the stored logits are raw (every unit), but units of other tasks get no
    training signal for a sample in a multi-head model, so matching them would only tie the shared features to
    values no head uses. Class- and domain-IL compare every unit, as Mammoth and Avalanche do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register


def reservoir_slots(first: int, draws: torch.Tensor, mem_size: int) -> torch.Tensor:
    """Algorithm R's slot for each of len(draws) incoming samples, the first being sample number `first` of the
    stream (0-based), given one uniform draw in [0, 1) per sample: -1 where the sample is not stored."""
    position = torch.arange(first, first + len(draws), dtype=torch.long)
    slot = torch.floor(draws.double() * (position + 1).double()).long()  # uniform in {0, ..., position}
    slot = torch.where(position < mem_size, position, slot)
    return torch.where(slot < mem_size, slot, torch.full_like(slot, -1))


def last_writes(slots: torch.Tensor, mem_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(buffer rows, incoming rows) that writing incoming sample j to `slots[j]` in order leaves: of several samples
    sent to one slot, the last one."""
    order = torch.arange(len(slots), dtype=torch.long)
    stored = slots >= 0
    winner = torch.full((mem_size,), -1, dtype=torch.long)
    winner.scatter_reduce_(0, slots[stored], order[stored], reduce="amax")
    rows = torch.nonzero(winner >= 0).flatten()
    return rows, winner[rows]


@register("der")
class DER(SGDStrategy):
    """DER++ (DER with beta=0): replays a reservoir of `mem_size` samples with the logits they had on arrival; `alpha`
    weighs the MSE to those logits, `beta` the cross-entropy on the stored labels; `batch_size_mem` samples per buffer
    draw (None: the training batch size)."""

    def __init__(self, mem_size: int = 200, batch_size_mem: int | None = None, alpha: float = 0.1, beta: float = 0.5):
        self.mem_size = mem_size
        self.batch_size_mem = batch_size_mem
        self.alpha = alpha
        self.beta = beta

    def validate(self):
        if self.mem_size < 1:
            raise UsageError(f"mem_size must be at least 1, got {self.mem_size}")
        if self.batch_size_mem is not None and self.batch_size_mem < 1:
            raise UsageError(f"batch_size_mem must be at least 1 or None, got {self.batch_size_mem}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be finite and >= 0, got {value}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.seen_ = 0  # samples offered to the reservoir so far
        # allocated at the first insertion (mem_size rows); rows [:stored] hold samples
        self.buffer_x_: torch.Tensor | None = None
        self.buffer_logits_: torch.Tensor | None = None
        self.buffer_y_: torch.Tensor | None = None
        self.buffer_task_: torch.Tensor | None = None

    @property
    def stored(self) -> int:
        """Samples in the buffer: min(mem_size, samples seen)."""
        return min(self.seen_, self.mem_size)

    # the loss ---------------------------------------------------------------------------------------------------------
    def penalty(self, batch, features, logits):
        terms = []
        if self.stored and self.alpha:
            rows = self._draw()
            out = self.forward(self.buffer_x_[rows])[1]
            terms.append(self.alpha * self.logit_mse(out, self.buffer_logits_[rows], self.buffer_task_[rows]))
        if self.stored and self.beta:
            rows = self._draw()
            out = self.forward(self.buffer_x_[rows])[1]
            terms.append(self.beta * F.cross_entropy(self.mask_logits(out, self.buffer_task_[rows]),
                                                     self.buffer_y_[rows]))
        self.insert(batch.x, logits.detach(), batch.y, batch.task)
        return sum(terms[1:], terms[0]) if terms else None

    def logit_mse(self, out: torch.Tensor, target: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Mean squared difference over every unit, or in task-IL over each sample's own task's units only."""
        if self.spec_.scenario != "task":
            return F.mse_loss(out, target)
        rows = self.unit_mask_[task]
        return (out - target).pow(2).masked_fill(~rows, 0.0).sum() / rows.sum()

    def _draw(self) -> torch.Tensor:
        n = self.batch_size_mem or self.train_config_.batch_size
        return torch.randperm(self.stored, generator=self.generator_)[:n].to(self.device_)

    # the reservoir ---------------------------------------------------------------------------------------------------
    def insert(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> None:
        """Offer a mini-batch (with the logits it got) to the reservoir."""
        if self.buffer_x_ is None:
            device = self.device_
            self.buffer_x_ = torch.zeros(self.mem_size, *x.shape[1:], dtype=x.dtype, device=device)
            self.buffer_logits_ = torch.zeros(self.mem_size, *logits.shape[1:], dtype=logits.dtype, device=device)
            self.buffer_y_ = torch.zeros(self.mem_size, dtype=y.dtype, device=device)
            self.buffer_task_ = torch.zeros(self.mem_size, dtype=task.dtype, device=device)
        draws = torch.rand(len(y), generator=self.generator_, dtype=torch.float64)
        slots = reservoir_slots(self.seen_, draws, self.mem_size)
        self.seen_ += len(y)
        rows, sources = last_writes(slots, self.mem_size)
        if len(rows) == 0:
            return
        rows, sources = rows.to(self.device_), sources.to(x.device)
        for buffer, value in ((self.buffer_x_, x), (self.buffer_logits_, logits), (self.buffer_y_, y),
                              (self.buffer_task_, task)):
            buffer[rows] = value[sources].to(buffer.device)

    def state_bytes(self):
        return tensors_nbytes(self.buffer_x_, self.buffer_logits_, self.buffer_y_, self.buffer_task_)
