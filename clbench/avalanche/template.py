"""Any clbench strategy as an Avalanche strategy (a `SupervisedTemplate`), with Avalanche's evaluation plugin,
loggers and experience/epoch/iteration callbacks working as usual.

The clbench strategy owns each training step (`train_step`: its own forward, loss, backward and optimizer, fresh per
experience) and the predictions (`predict`: hnet's generated weights, supsup's task inference). Plugin callbacks
*inside* a step (before_forward, before_backward, after_update, ...) therefore do not fire during training; those
around it (before/after_training_iteration, epochs, experiences, evaluation) do. For a strategy built on the SGD
template inside the user's own template and optimizer, use `ClbenchPlugin` instead.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from clbench.avalanche.plugin import avalanche_train_data, resolve_strategy
from clbench.avalanche.streams import experience_from_avalanche, spec_from_avalanche, tensor_dataset
from clbench.benchmarks.backbones import build_backbone
from clbench.benchmarks.base import Batch, StreamSpec
from clbench.errors import UsageError
from clbench.strategies import Strategy
from clbench.strategies.base import TrainConfig


class ClbenchStrategy(SupervisedTemplate):
    """Runs `strategy` (a clbench name with `params`, or a strategy object) on an Avalanche benchmark.

    benchmark or spec: where the output units and scenario come from (`spec_from_avalanche`); model: defaults to
    clbench's reference backbone for the benchmark, initialised from `seed`; train: epochs, batch size and optimiser
    settings (clbench's TrainConfig); seed: the strategy's own randomness. The remaining arguments are Avalanche's.
    """

    def __init__(self, *, strategy: Strategy | str, benchmark=None, params: dict | None = None,
                 spec: StreamSpec | None = None, scenario: str | None = None, model: nn.Module | None = None,
                 train: TrainConfig | None = None, seed: int = 0, device="cpu", plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1):
        self.clbench = resolve_strategy(strategy, params)
        train = train or TrainConfig()
        if (benchmark is None) == (spec is None):
            raise UsageError("ClbenchStrategy needs exactly one of benchmark= or spec=")
        spec = spec if spec is not None else spec_from_avalanche(benchmark, scenario)
        if model is None:
            torch.manual_seed(seed)
            model = build_backbone(spec)
        model = model.to(device)
        self.clbench.begin_run(spec, model, train=train, seed=seed, device=device)
        self.spec = spec
        self._exp = None
        self._mb_output = None
        # Avalanche wants an optimizer object; clbench's own (fresh per experience) replaces it before training.
        optimizer = getattr(self.clbench, "optimizer_", None) or torch.optim.SGD(model.parameters(), lr=train.lr)
        super().__init__(model=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                         train_mb_size=train.batch_size, train_epochs=train.epochs, eval_mb_size=train.eval_batch_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every)

    # -- Avalanche's model and optimizer management is the clbench strategy's job ------------------------------------
    def make_optimizer(self, **kwargs):
        pass

    def model_adaptation(self, model=None):
        return self.model if model is None else model

    # -- experiences ---------------------------------------------------------------------------------------------
    def train_dataset_adaptation(self, **kwargs):
        self._exp = experience_from_avalanche(self.experience)
        self.clbench.begin_experience(self._exp)
        data = avalanche_train_data(self.clbench, self._exp)
        # Keep Avalanche's dataset (and its train transforms) unless the method trains on more (joint).
        self.adapted_dataset = (self.experience.dataset if data is self._exp.train
                                else tensor_dataset(data, data.task)).train()
        self.optimizer = getattr(self.clbench, "optimizer_", self.optimizer)

    def _after_training_exp(self, **kwargs):
        self.clbench.end_experience(self._exp)
        super()._after_training_exp(**kwargs)

    # -- steps ---------------------------------------------------------------------------------------------------
    def training_epoch(self, **kwargs):
        for self.mbatch in self.dataloader:  # noqa: B020 (Avalanche's own idiom: callbacks read self.mbatch)
            if self._stop_training:
                break
            self._unpack_minibatch()
            self._before_training_iteration(**kwargs)
            stats = self.clbench.train_step(Batch(self.mb_x, self.mb_y.long(), self.mb_task_id.long()))
            self.loss = torch.tensor(stats["loss"])
            self.mb_output = None  # computed only if a metric or plugin asks for it
            self._after_training_iteration(**kwargs)

    def eval_epoch(self, **kwargs):
        for self.mbatch in self.dataloader:  # noqa: B020
            self._unpack_minibatch()
            self._before_eval_iteration(**kwargs)
            self._before_eval_forward(**kwargs)
            self.mb_output = self.predict(self.mb_x, self.mb_task_id)
            self._after_eval_forward(**kwargs)
            self.loss = self.criterion()
            self._after_eval_iteration(**kwargs)

    @property
    def mb_output(self):
        training = getattr(self, "is_training", False) and getattr(self, "mbatch", None) is not None
        if self._mb_output is None and training:
            self._mb_output = self.predict(self.mb_x, self.mb_task_id)  # the model after this step
        return self._mb_output

    @mb_output.setter
    def mb_output(self, value):
        self._mb_output = value

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        """clbench's prediction: with the task id in task-IL (per task present in the batch), without otherwise."""
        if self.spec.scenario != "task":
            return self.clbench.predict(x, None)
        tasks = task_labels.long()
        out = None
        for t in torch.unique(tasks).tolist():
            rows = tasks == t
            logits = self.clbench.predict(x[rows], int(t))
            out = logits.new_empty(len(x), logits.shape[1]) if out is None else out
            out[rows] = logits
        return out
