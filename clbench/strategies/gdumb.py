"""GDumb, Greedy sampler and Dumb learner (Prabhu, Torr & Dokania, ECCV 2020, "GDumb: A Simple Approach that Questions
Our Progress in Continual Learning"), with the hyperparameter name and default of Avalanche's GDumb / GDumbPlugin
(`mem_size` = 200 samples).

At each experience, *before* training:
  1. the memory is updated with the experience's training samples by the paper's greedy class-balancing sampler
     (its Algorithm 1, below);
  2. the model is discarded: every parameter (and batch-norm statistic) is re-initialised, and a fresh optimizer is
     built;
  3. `train_data` returns the memory, so the runner's own mini-batch loop trains the new model on the memory only,
     for the run's budget (epochs over the memory, or iterations).
Predictions are the plain (task-masked in task-IL) model outputs.

The sampler, with capacity k = `mem_size`, offers the samples one at a time; |Y| is the number of labels seen so far
(the offered sample's included) and n_c the number of samples of label c in memory:
  * the memory is not full: the sample is added;
  * it is full and n_y < k / |Y| (tested exactly, as n_y·|Y| < k): a uniformly random sample of the largest class
    (the lowest label among equally large ones: the paper leaves ties open) is evicted and the sample is added;
  * otherwise the sample is skipped.
Once the memory is full it is class-balanced up to one sample (max − min ≤ 1) as soon as every label has offered
enough samples; a label that stops arriving keeps what it has. The decisions depend only on labels and counts, so
they run over integers; the inputs are gathered once per experience by indexing. Within an experience the samples are
offered in a random order drawn from the strategy's generator (an experience is a set here; the paper's stream order
is its arrival order, and the authors' code takes the first samples of every class in dataset order); the memory keeps
arrival order. A convenient restatement of the rule, "add when the class has fewer samples than the largest one",
agrees with this one on a balanced memory but also swaps samples between two classes that differ by one when a third
class is far behind; this module follows the k / |Y| test.

What "class" means per scenario: one label (output unit), in all three. In class- and task-IL these are the
classes of the experiences (task-IL keeps each sample's task id for the masked loss; one memory of `mem_size` serves
all tasks). In domain-IL the labels repeat across experiences, so the memory is balanced per label over all domains
together: once it is full and balanced, a later domain's samples enter only where a label is below k / |Y| (only
where k is not a multiple of the number of labels), i.e. the memory stays mostly with the first domain(s), as the
greedy rule implies.

Re-initialisation: each experience draws a seed from the strategy's generator and calls every module's
`reset_parameters()`, in module order, on a CPU copy of the model under `torch.random.fork_rng` seeded with it, then
copies the result into the model. So for clbench's backbones the initialisation is the one `build_backbone` makes
under that seed; it is the same on every device, bit-identical for a seed, a new one at every experience, and torch's
global RNG is left as it was. A
model with a module that owns parameters but has no `reset_parameters` is rejected in `setup`.

Deliberate differences:
  * Avalanche's GDumbPlugin fills its memory with a ClassBalancedBuffer (one reservoir sample per class, `mem_size`
    split evenly over the classes seen), not the paper's per-sample greedy rule, which is used here (so, unlike
    Avalanche's, a full balanced memory takes no samples of a later domain in domain-IL); its docstring's "mem_size
    per task in multitask scenarios" does not apply: one memory for all tasks.
  * Avalanche restores one deep copy of the initial model at every experience; here every experience gets a fresh
    initialisation from the generator (the paper: a model "trained from scratch").
  * The paper (and its code) trains with SGD, SGDR warm restarts, cutmix, gradient clipping and many epochs, at test
    time; here the model is trained in every experience, before that experience's evaluation, with the run's
    optimiser settings and budget, and no augmentation, scheduler or clipping.
  * The runner's `optimizer_state="keep"` cannot be honoured (the model it would keep moments for is discarded) and is
    rejected, as for the other methods that rebuild their optimizer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from clbench.benchmarks.base import TensorData
from clbench.errors import UsageError
from clbench.strategies.base import SGDStrategy, tensors_nbytes
from clbench.strategies.registry import register

_SEED_RANGE = 2**62  # the init seed of an experience: an integer in [0, 2^62) drawn from the strategy's generator


def greedy_sample(labels: torch.Tensor, n_memory: int, capacity: int, seen: torch.Tensor,
                  uniforms: torch.Tensor) -> torch.Tensor:
    """The paper's greedy class-balancing sampler over a pool: `labels` holds the memory's labels (the first
    `n_memory`, in memory order), then the offered samples' labels in the order they are offered. Returns the pool
    positions kept, in arrival order. `seen` (bool, one per label) marks the labels seen so far and is updated in
    place. `uniforms` (one per offered sample, in [0, 1)) choose the evicted sample: member floor(u · n_c), in memory
    order, of the largest class c when offered sample i causes an eviction.
    """
    labels_list = labels.tolist()
    n_offered = len(labels_list) - n_memory
    if n_offered < 0 or len(uniforms) != n_offered:
        raise ValueError(f"{len(labels_list)} labels, {n_memory} in memory, {len(uniforms)} uniforms")
    n_classes = len(seen)
    members: list[list[int]] = [[] for _ in range(n_classes)]
    # Fill: while there is room every offered sample is added, so the first ones go in at once.
    fill = n_memory + max(0, min(capacity - n_memory, n_offered))
    for position in range(fill):
        members[labels_list[position]].append(position)
    seen_list = seen.tolist()
    for label in set(labels_list[:fill]):
        seen_list[label] = True
    n_seen = sum(seen_list)
    counts = [len(m) for m in members]
    u = uniforms.tolist()
    for position in range(fill, len(labels_list)):
        y = labels_list[position]
        if not seen_list[y]:
            seen_list[y] = True
            n_seen += 1
        if counts[y] * n_seen < capacity:  # full (the fill took the free slots), n_y < k/|Y|
            largest = max(range(n_classes), key=counts.__getitem__)  # the first maximum: lowest label on ties
            victim = min(int(u[position - n_memory] * counts[largest]), counts[largest] - 1)
            del members[largest][victim]
            counts[largest] -= 1
            members[y].append(position)
            counts[y] += 1
    seen.copy_(torch.tensor(seen_list, dtype=torch.bool))
    kept = sorted(p for m in members for p in m)
    return torch.tensor(kept, dtype=torch.long)


def _modules_without_reset(model: nn.Module) -> list[str]:
    return [f"{name or '(model)'} ({type(module).__name__})" for name, module in model.named_modules()
            if next(module.parameters(recurse=False), None) is not None
            and not callable(getattr(module, "reset_parameters", None))]


@register("gdumb")
class GDumb(SGDStrategy):
    """Greedy class-balanced memory of `mem_size` samples, updated before each experience; the model is
    re-initialised and trained on the memory only (see the module docstring)."""

    train_choices = {"optimizer_state": ("reset",)}

    def __init__(self, mem_size: int = 200):
        self.mem_size = mem_size

    def validate(self):
        if self.mem_size < 1:
            raise UsageError(f"mem_size must be at least 1, got {self.mem_size}")

    def setup(self, spec, model, *, train, seed, device="cpu"):
        missing = _modules_without_reset(model)
        if missing:
            raise UsageError(f"strategy 'gdumb' re-initialises the model at every experience, but these modules "
                             f"have parameters and no reset_parameters(): {', '.join(missing)}")
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.memory_: TensorData | None = None
        self.seen_ = torch.zeros(spec.n_classes, dtype=torch.bool)  # labels offered to the sampler so far
        # A CPU copy to re-initialise (a cache, not learned state: its values are replaced every time).
        self._blank = copy.deepcopy(model).to("cpu")

    def before_experience(self, exp):
        self.update_memory(exp.train)
        self.reinitialise()
        self.optimizer_ = self.make_optimizer()

    def update_memory(self, data: TensorData) -> None:
        """Offer `data`'s samples, in a random order from the generator, to the greedy sampler."""
        n_old = 0 if self.memory_ is None else len(self.memory_)
        order = torch.randperm(len(data), generator=self.generator_)
        uniforms = torch.rand(len(data), generator=self.generator_, dtype=torch.float64)
        old_labels = torch.empty(0, dtype=torch.long) if self.memory_ is None else self.memory_.y.cpu()
        labels = torch.cat([old_labels, data.y.cpu()[order]])
        kept = greedy_sample(labels, n_old, self.mem_size, self.seen_, uniforms)
        new = data.subset(order[kept[kept >= n_old] - n_old].to(data.y.device)).to(self.device_)
        if self.memory_ is None:
            self.memory_ = new
        else:
            old = self.memory_.to(self.device_)
            self.memory_ = TensorData.concat([old.subset(kept[kept < n_old].to(self.device_)), new])

    def reinitialise(self) -> None:
        """Replace every parameter (and batch-norm statistic) of the model by a fresh initialisation drawn from the
        generator; buffers of modules without `reset_parameters` (fixed input statistics) keep their values."""
        seed = int(torch.randint(_SEED_RANGE, (1,), generator=self.generator_))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self._blank.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        self.model_.load_state_dict(self._blank.state_dict())

    def train_data(self, exp):
        return self.memory_

    def state_bytes(self):
        if self.memory_ is None:
            return 0
        return self.memory_.nbytes + tensors_nbytes(self.seen_)
