"""A frozen copy of the model taken after an experience (the distillation teacher of LwF and iCaRL)."""

from __future__ import annotations

import copy

import torch


class FrozenTeacher:
    """Mixin for strategies keeping a teacher in `teacher_` (None until the first experience is finished)."""

    teacher_: torch.nn.Module | None

    def _new_teacher(self) -> torch.nn.Module:
        """The model as it is now, in eval mode (batch-norm statistics, no dropout), never trained."""
        return copy.deepcopy(self.model_).eval().requires_grad_(False)

    def load_checkpoint_state(self, state):
        # The teacher exists only after the first experience, so a freshly set-up strategy has none to load the
        # saved weights into: give it one of the model's structure first.
        if state.get("teacher_") is not None and self.teacher_ is None:
            self.teacher_ = self._new_teacher()
        super().load_checkpoint_state(state)
