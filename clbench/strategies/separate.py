"""Separate networks: one single-task expert per experience, the forgetting-free upper bound of task-IL.

Every experience gets a backbone of its own, trained on that experience's data only, and `predict(x, task_id)`
answers with the expert of experience `task_id`. It is

  * the single-task expert (STE) of the L2M metrics framework and its `l2metrics` library (Baker, New et al., "A
    Domain-Agnostic Approach for Characterization of Lifelong Learning Systems", Neural Networks, 2023): a learner
    trained on one task alone, the reference of the performance-relative-to-STE and sample-efficiency metrics; here
    R[j, j] is that expert's accuracy on experience j, in the same run, stream and seed as the methods it is
    compared with;
  * the "Separate Networks" baseline of task-IL (van de Ven, Tuytelaars & Tolias, "Three types of incremental
    learning", Nature Machine Intelligence, 2022; their code's `--separate-networks`): no parameter is shared, so
    nothing is forgotten and nothing is transferred.

Definition followed:
  * every expert starts from the same weights, the untrained model the runner passes to `setup` (a copy of its
    state is taken there, before any training), and is trained with a new optimizer of the run's settings (kind, lr,
    momentum, weight decay) for the run's budget (epochs or iterations) on the runner's mini-batches. Experience 0's
    expert is therefore bit for bit the model naive fine-tuning has after experience 0 under the same seed, and any
    difference from another method comes from training alone;
  * the loss is the task-masked cross-entropy of the other task-IL methods (each expert is trained and read on its
    task's output units only);
  * row i of R: experience j ≤ i is answered by its expert, which never changes after its experience, so
    R[i, j] = R[j, j] exactly (no forgetting, BWT = 0); an experience j > i, not trained yet, by the untrained
    initial model, so R[i, j] = b[j] (no forward transfer: FWT = 0).

Settings: no hyperparameters of its own. Task-incremental only (the expert is picked by the task id); the runner's
`optimizer_state="keep"` is refused, since every expert is a new model whose optimizer has nothing to carry over.

Memory: the live model is the expert of the experience being learned (or last learned); the experts of the earlier
experiences are kept as state dicts (`experts_`, saved in checkpoints), and `state_bytes()` counts them and the copy
of the initial weights: T model copies beyond the live one at the end of a run of T experiences. Van de Ven et al.
give each context a smaller network so that the total size stays comparable (their `--fc-units-sep`: 100 hidden
units instead of 400 on Split MNIST); here each expert is the run's backbone, as a single-task expert is, and its
memory is reported instead (`--backbone mlp100` gives their smaller experts).
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call

from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, Strategy, tensors_nbytes
from clbench.strategies.registry import register


@register("separate")
class Separate(SGDStrategy):
    """One backbone per experience, each trained from the run's initial weights on its own experience only; the
    task id picks the expert (see the module docstring)."""

    scenarios = frozenset({"task"})
    # every expert is a new model: no optimizer state can carry over from the previous one
    train_choices = {"optimizer_state": ("reset",)}
    # setup copies the initial weights from the seeded model the run builds, identically on a resumed run
    checkpoint_exclude = Strategy.checkpoint_exclude | {"initial_state_"}

    def __init__(self):
        pass

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.initial_state_ = copy.deepcopy(model.state_dict())  # before any training: every expert's start
        self.experts_: list[dict[str, torch.Tensor]] = []  # experts of the experiences before `live_task_`
        self.live_task_ = -1  # the experience whose expert the live model is (-1: none yet, it is untrained)

    def before_experience(self, exp):
        if self.live_task_ >= 0:  # the previous expert is finished: keep it, and start the next from scratch
            self.experts_.append({name: t.detach().clone() for name, t in self.model_.state_dict().items()})
        if exp.task_id != len(self.experts_):
            raise RuntimeError(f"experience {exp.task_id} arrives after {len(self.experts_)} trained experts")
        self.model_.load_state_dict(self.initial_state_)
        self.optimizer_ = self.make_optimizer()
        self.live_task_ = exp.task_id

    def predict(self, x, task_id):
        if task_id is None:
            raise UsageError("separate predicts with the expert of the task and needs the task id "
                             "(task-incremental only)")
        task_id = int(task_id)
        self.model_.eval()
        if task_id == self.live_task_:
            logits = self.model_(x)
        else:  # a finished expert, or the untrained initial model for an experience not trained yet
            state = self.experts_[task_id] if task_id < len(self.experts_) else self.initial_state_
            logits = functional_call(self.model_, state, (x,))
        return self.mask_logits(logits, task_id)

    def state_bytes(self):
        stored = [t for state in (*self.experts_, self.initial_state_) for t in state.values()]
        return tensors_nbytes(*stored)
