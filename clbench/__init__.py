"""clbench: continual-learning benchmarks, strategies, a method-agnostic runner and metrics."""

__version__ = "0.1.0"
