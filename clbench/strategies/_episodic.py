"""What GEM and A-GEM share: an episodic memory of `patterns_per_exp` random training samples per experience, and the
gradients of the model's parameters as one flat vector (read from `.grad`, written back, or computed on memory).

Memory gradients are computed with `torch.autograd.grad`, which returns them instead of accumulating into `.grad`,
so the current mini-batch's gradient is never clobbered and needs no save/restore. They are taken in training mode
with the same task-IL masking as the training loss (`task_loss`), one forward/backward per call, as in the GEM paper's
code and Avalanche (BatchNorm running statistics therefore also see the memory samples, as there).
"""

from __future__ import annotations

import torch

from clbench.benchmarks.base import Batch, TensorData
from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, tensors_nbytes


class EpisodicGradientStrategy(SGDStrategy):
    """SGD whose `project_gradients` consults a per-experience episodic memory; subclasses define `__init__` (with a
    `patterns_per_exp` hyperparameter) and `project_gradients`."""

    patterns_per_exp: int

    def validate(self):
        if self.patterns_per_exp < 1:
            raise UsageError(f"patterns_per_exp must be at least 1, got {self.patterns_per_exp}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.memory_: TensorData | None = None  # all experiences' samples, concatenated in experience order
        self.memory_sizes_: list[int] = []  # samples stored per experience
        self.n_projections_ = 0  # how many steps had their gradient changed (a diagnostic)

    def after_experience(self, exp):
        data = exp.train
        keep = torch.randperm(len(data), generator=self.generator_)[: self.patterns_per_exp]
        new = data.subset(keep.to(data.y.device)).to(self.device_)
        self.memory_ = new if self.memory_ is None else TensorData.concat([self.memory_, new])
        self.memory_sizes_.append(len(new))

    def experience_memories(self) -> list[TensorData]:
        """The stored samples of each experience seen so far (views into `memory_`)."""
        if self.memory_ is None:
            return []
        parts = (t.split(self.memory_sizes_) for t in (self.memory_.x, self.memory_.y, self.memory_.task))
        return [TensorData(x, y, task) for x, y, task in zip(*parts, strict=True)]

    def state_bytes(self):
        if self.memory_ is None:
            return 0
        return tensors_nbytes(self.memory_.x, self.memory_.y, self.memory_.task)

    # flat gradients ---------------------------------------------------------------------------------------------------
    def current_gradient(self) -> torch.Tensor:
        """The parameters' `.grad` as one flat vector (zeros for parameters without a gradient)."""
        params = list(self.trainable_parameters().values())
        return _flatten([p.grad for p in params], params)

    def set_gradient(self, flat: torch.Tensor) -> None:
        params = list(self.trainable_parameters().values())
        for p, chunk in zip(params, flat.split([p.numel() for p in params]), strict=True):
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))

    def memory_gradient(self, data: TensorData) -> torch.Tensor:
        """Flat gradient of the (task-masked) mean cross-entropy on `data`, leaving every `.grad` untouched."""
        params = list(self.trainable_parameters().values())
        self.model_.train()
        _, logits = self.forward(data.x)
        loss = self.task_loss(logits, Batch(data.x, data.y, data.task))
        return _flatten(torch.autograd.grad(loss, params, allow_unused=True), params)


def _flatten(grads, params) -> torch.Tensor:
    flat = [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
    return torch.cat(flat)
