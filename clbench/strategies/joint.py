"""Joint training, the upper bound: after experience i the model has been trained from its initial weights on the
union of experiences 0..i, as if all that data had arrived at once."""

import copy

from clbench.benchmarks.base import TensorData
from clbench.strategies.base import SGDStrategy
from clbench.strategies.registry import register


@register("joint")
class Joint(SGDStrategy):
    """Row i of R is the offline (i.i.d.) model of the first i+1 experiences; its last row is plain joint training
    over the whole stream, as Avalanche's JointTraining does, with the same epochs."""

    def __init__(self):
        pass

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.initial_state_ = copy.deepcopy(model.state_dict())
        self.seen_: list[TensorData] = []

    def before_experience(self, exp):
        # Restart from the run's initial weights so that row i does not depend on the order of earlier rows.
        self.model_.load_state_dict(self.initial_state_)
        super().before_experience(exp)
        self.seen_.append(exp.train)

    def train_data(self, exp):
        return TensorData.concat(self.seen_)

    def state_bytes(self):
        return sum(d.nbytes for d in self.seen_)
