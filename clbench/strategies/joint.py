"""Joint training, the upper bound, in two protocols (`mode`):

* "incremental" (default): after experience i the model has been trained from its initial weights on the union of
  experiences 0..i, as if all that data had arrived at once; row i of R is that model, and the last row is plain
  joint training over the whole stream with the run's per-experience budget (as Avalanche's JointTraining).
* "offline": van de Ven & Tolias's "Offline" upper bound (Three scenarios for continual learning, 2019; their
  code's `--joint`, with compare.py's `iters = contexts * iters`): nothing is trained until the last experience,
  then one model is trained once on all experiences for T times the per-experience budget (T × iterations, or the
  run's epochs over the T-times-larger union). Only R's last row exists; the earlier rows are NaN, so ACC is defined,
  BWT, forgetting and FWT are NaN, and learning accuracy and average incremental accuracy read the one row there is
  (the metrics skip missing terms; docs/METRICS.md). In task-IL every mini-batch takes ceil(batch / T) samples
  from each experience and the per-experience losses are averaged (equal shares, so the batch mean is that
  average), as that code does; in domain- and class-IL batches are drawn from the union.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Literal

from clbench.benchmarks.base import TensorData
from clbench.strategies.base import SGDStrategy
from clbench.strategies.registry import register


@register("joint")
class Joint(SGDStrategy):
    """Trains on the union of the experiences seen so far (`mode` "incremental") or once on all of them at the end
    (`mode` "offline"); see the module docstring."""

    def __init__(self, mode: Literal["incremental", "offline"] = "incremental"):
        self.mode = mode

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.initial_state_ = copy.deepcopy(model.state_dict())
        self.seen_: list[TensorData] = []

    def before_experience(self, exp):
        # Restart from the run's initial weights so that row i does not depend on the order of earlier rows.
        self.model_.load_state_dict(self.initial_state_)
        self.seen_.append(exp.train)

    def experience_train(self, exp):
        cfg = self.train_config_
        if self.mode == "incremental":
            return cfg
        if exp.index < self.spec_.n_experiences - 1:
            return None
        if cfg.iterations is None:
            return cfg  # epochs over the union: already T times the steps of one experience
        return dataclasses.replace(cfg, iterations=cfg.iterations * len(self.seen_))

    def train_data(self, exp):
        if self.mode == "offline" and self.spec_.scenario == "task":
            return list(self.seen_)
        return TensorData.concat(self.seen_)

    def state_bytes(self):
        return sum(d.nbytes for d in self.seen_)
