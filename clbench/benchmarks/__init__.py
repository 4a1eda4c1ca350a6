"""Benchmarks: the data model, dataset loaders, stream generators, named benchmarks and reference backbones.

The names below are imported on first use (PEP 562): the catalog of named benchmarks (clbench.benchmarks.catalog)
needs no torch, so commands that only describe or read results start fast; torchvision and scikit-learn are imported
only when a dataset is loaded or a stream rotated.
"""

import importlib

_EXPORTS = {
    "SCENARIOS": "catalog", "BenchmarkInfo": "catalog", "benchmark_info": "catalog", "list_benchmarks": "catalog",
    "MLP": "backbones", "Backbone": "backbones", "ReducedResNet18": "backbones", "build_backbone": "backbones",
    "Batch": "base", "Experience": "base", "Stream": "base", "StreamSpec": "base", "TensorData": "base",
    "TransformedTensorData": "base", "batch_slices": "base", "batches_per_pass": "base",
    "DATASETS": "datasets", "Dataset": "datasets", "default_data_root": "datasets", "load_dataset": "datasets",
    "permuted_stream": "generators", "rotated_stream": "generators", "split_stream": "generators",
    "stream_from_datasets": "generators", "stream_from_tensors": "generators",
    "make_stream": "registry",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__():
    return __all__
