"""clbench strategies inside Avalanche pipelines.

`ClbenchPlugin` carries a strategy built on clbench's SGD template (naive, joint, ewc, lwf, gem, agem, replay,
center-loss) into any Avalanche `SupervisedTemplate` — `avalanche.training.Naive` or the user's own — with the
user's model, optimizer, loss and loggers. The template's four hooks map one to one onto Avalanche callbacks:

    augment_batch        before_forward        (replay: extend strategy.mbatch with memory samples)
    penalty              before_backward       (added to strategy.loss; features = the output layer's input)
    project_gradients    after_backward        (GEM / A-GEM edit the .grad tensors)
    after_update         after_update          (center loss: restore frozen classifier rows)

and the experience boundaries: before_experience and train_data (joint widens the data) before the data loader is
made, after_experience after training. The model must map inputs to logits (`model(x)`), as Avalanche's SimpleMLP
does; task-IL methods mask those logits to each task's units, which the plugin reads off the benchmark.

`ClbenchStrategy` (template.py) runs *any* clbench strategy, including those with their own step (hnet, supsup,
exssnet), as an Avalanche strategy.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from clbench.avalanche.streams import experience_from_avalanche, spec_from_avalanche, tensor_dataset
from clbench.benchmarks.base import Batch, StreamSpec, TensorData
from clbench.errors import UsageError
from clbench.strategies import SGDStrategy, Strategy, make_strategy
from clbench.strategies.base import TrainConfig, classifier_head


def avalanche_train_data(strategy: Strategy, exp) -> TensorData:
    """What `strategy` trains on in experience `exp` inside Avalanche's loop: its `train_data`, several sources joined
    into one (equal shares per source need clbench's mini-batches). A strategy that sets a budget of its own for the
    experience (`experience_train`) is refused: Avalanche's loop trains every experience for its own epochs."""
    if strategy.experience_train(exp) != strategy.train_config_:
        raise UsageError(f"strategy {strategy.name!r} with these hyperparameters sets a training budget of its own "
                         "per experience (e.g. joint mode='offline'), which Avalanche's loop does not follow; run it "
                         "with clbench's runner instead")
    data = strategy.train_data(exp)
    return TensorData.concat(data) if isinstance(data, list) else data


def resolve_strategy(strategy: Strategy | str, params: dict | None) -> Strategy:
    if isinstance(strategy, str):
        return make_strategy(strategy, params or {})
    if params:
        raise UsageError("pass hyperparameters either in the strategy object or as params, not both")
    return strategy


class ClbenchPlugin(SupervisedPlugin):
    """Runs a clbench SGD-template strategy as an Avalanche plugin.

    strategy: a name ("ewc") with `params`, or a strategy object; benchmark: the Avalanche benchmark being trained
    (for the output units and the scenario, see `spec_from_avalanche`), or `spec`; seed: the strategy's own
    randomness (replay and memory sampling).
    """

    def __init__(self, strategy: Strategy | str, benchmark=None, *, params: dict | None = None,
                 scenario: str | None = None, spec: StreamSpec | None = None, seed: int = 0):
        super().__init__()
        self.strategy = resolve_strategy(strategy, params)
        if not isinstance(self.strategy, SGDStrategy):
            raise UsageError(
                f"strategy {self.strategy.name!r} has its own training step and cannot be a plugin; "
                "run it with clbench.avalanche.ClbenchStrategy instead"
            )
        if self.strategy.own_task_loss:
            raise UsageError(
                f"strategy {self.strategy.name!r} with these hyperparameters computes its own task loss (e.g. "
                "replay loss_weighting='by_task'), which Avalanche's criterion replaces in a plugin; run it with "
                "clbench.avalanche.ClbenchStrategy instead"
            )
        if (benchmark is None) == (spec is None):
            raise UsageError("ClbenchPlugin needs exactly one of benchmark= or spec=")
        self.spec = spec if spec is not None else spec_from_avalanche(benchmark, scenario)
        self.strategy.check_scenario(self.spec.scenario)
        self.seed = seed
        self._ready = False
        self._exp = None
        self._batch: Batch | None = None
        self._features: torch.Tensor | None = None
        self._handle = None
        self.penalties: list[tuple[int, float]] = []  # (experience, penalty) per step where the method added one

    # -- experience boundaries ----------------------------------------------------------------------------------
    def before_train_dataset_adaptation(self, strategy, **kwargs):
        if not self._ready:
            train = TrainConfig(epochs=strategy.train_epochs, batch_size=strategy.train_mb_size)
            self.strategy.begin_run(self.spec, strategy.model, train=train, seed=self.seed, device=strategy.device)
            self._ready = True
        self._exp = experience_from_avalanche(strategy.experience)
        self.strategy.begin_experience(self._exp)

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        data = avalanche_train_data(self.strategy, self._exp)
        if data is not self._exp.train:  # the method trains on more than the experience (joint: all seen so far)
            strategy.adapted_dataset = tensor_dataset(data, data.task).train()

    def after_training_exp(self, strategy, **kwargs):
        self.strategy.end_experience(self._exp)
        self._exp = None

    # -- the step ------------------------------------------------------------------------------------------------
    def before_forward(self, strategy, **kwargs):
        batch = Batch(strategy.mb_x, strategy.mb_y, strategy.mb_task_id)
        self._batch = self.strategy.augment_batch(batch)
        if self._batch is not batch:
            strategy.mbatch[0], strategy.mbatch[1], strategy.mbatch[-1] = self._batch.x, self._batch.y, self._batch.task
        # The output layer's input is the features; hooked for this forward only, so that copies of the model
        # (LwF's teacher) carry no hook and later forwards (teacher, memory gradients) cannot replace them.
        self._features = None
        self._handle = classifier_head(strategy.model).register_forward_pre_hook(self._keep_features)

    def after_forward(self, strategy, **kwargs):
        self._handle.remove()

    def before_backward(self, strategy, **kwargs):
        penalty = self.strategy.penalty(self._batch, self._features, strategy.mb_output)
        if penalty is not None:
            strategy.loss = strategy.loss + penalty
            self.penalties.append((self._exp.index, float(penalty.detach())))

    def after_backward(self, strategy, **kwargs):
        self.strategy.project_gradients(self._batch)

    def after_update(self, strategy, **kwargs):
        self.strategy.after_update()

    def _keep_features(self, module, args):
        self._features = args[0]
