"""A user-defined strategy loaded by module path in the tests (`--strategy tests.user_strategies:Diverging`)."""


from clbench.strategies import SGDStrategy
from clbench.strategies.agem import AGEM
from clbench.strategies.ewc import EWC


class Diverging(SGDStrategy):
    """Naive SGD whose loss is poisoned with NaN after `steps_before_nan` steps: a run that diverges."""

    def __init__(self, steps_before_nan: int = 3):
        self.steps_before_nan = steps_before_nan

    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.steps_ = 0

    def penalty(self, batch, features, logits):
        self.steps_ += 1
        return logits.new_tensor(float("nan")) if self.steps_ > self.steps_before_nan else None


class KeepOptimizer(AGEM):
    """A user's variant of a built-in: A-GEM whose optimizer state carries over between experiences (the runner's
    per-experience reset asks make_optimizer for the optimizer, and gets the one it has)."""

    def make_optimizer(self):
        kept = getattr(self, "optimizer_", None)
        return kept if kept is not None else super().make_optimizer()


class InterruptOnce(EWC):
    """EWC that is interrupted (as by a kill) when it reaches experience `interrupt_at`."""

    interrupt_at: int | None = None

    def before_experience(self, exp):
        if exp.index == self.interrupt_at:
            raise KeyboardInterrupt
        super().before_experience(exp)


class SelfNamed(SGDStrategy):
    """Naive SGD under a display name of its own, loaded by module path (not registered)."""

    name = "self-named"

    def __init__(self):
        pass


class ShadowsNaive(SGDStrategy):
    """A user's class that calls itself like a built-in."""

    name = "naive"

    def __init__(self):
        pass


class FailsForSeed(SGDStrategy):
    """Naive SGD whose run with run seed `fail_seed` fails at setup: one configuration, some seeds failed.

    A strategy is given only the seed derived from the run seed (runners.loop.run_seeds), so it derives the same
    from `fail_seed` and compares; deterministic, and no other seed is touched."""

    def __init__(self, fail_seed: int = -1):
        self.fail_seed = fail_seed

    def setup(self, spec, model, *, train, seed, device="cpu"):
        from types import SimpleNamespace

        from clbench.runners.loop import run_seeds

        if self.fail_seed >= 0 and seed == run_seeds(SimpleNamespace(seed=self.fail_seed))[2]:
            raise RuntimeError(f"planned failure of run seed {self.fail_seed}")
        super().setup(spec, model, train=train, seed=seed, device=device)


class L2Anchor(SGDStrategy):
    """The README's example: pull the weights towards those at the end of the previous experience."""

    tune_grid = {"strength": [0.001, 0.1]}  # what `clbench bench` searches without --grid

    def __init__(self, strength: float = 0.01):
        self.strength = strength

    def after_experience(self, exp):
        self.anchor_ = [p.detach().clone() for p in self.model_.parameters()]

    def penalty(self, batch, features, logits):
        if not hasattr(self, "anchor_"):
            return None
        return self.strength * sum(((p - a) ** 2).sum() for p, a in zip(self.model_.parameters(), self.anchor_,
                                                                          strict=True))
