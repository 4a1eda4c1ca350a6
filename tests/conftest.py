import pytest
import torch

from clbench.benchmarks import make_stream
from clbench.runners.config import RunConfig
from clbench.strategies.base import TrainConfig

# Small enough for a test, large enough that every strategy's mechanism is exercised.
FAST_TRAIN = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_class():
    return make_stream("split-digits", "class", stream_seed=0)


@pytest.fixture(scope="session")
def digits_task():
    return make_stream("split-digits", "task", stream_seed=0)


@pytest.fixture(scope="session")
def digits_domain():
    return make_stream("permuted-digits", "domain", n_experiences=3, stream_seed=0)


def config(strategy="naive", scenario="class", seed=0, params=None, train=FAST_TRAIN, benchmark="split-digits",
           n_experiences=None):
    return RunConfig(benchmark=benchmark, scenario=scenario, strategy=strategy, params=params or {}, seed=seed,
                     n_experiences=n_experiences, train=train)
