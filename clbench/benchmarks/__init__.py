"""Benchmarks: the data model, dataset loaders, stream generators, named benchmarks and reference backbones.

torchvision and scikit-learn are imported only when a dataset is loaded or a stream rotated, so importing this
package stays cheap for code that only needs the data model.
"""

from .backbones import MLP, Backbone, ReducedResNet18, build_backbone
from .base import (
    SCENARIOS,
    Batch,
    Experience,
    Stream,
    StreamSpec,
    TensorData,
    TransformedTensorData,
    batch_slices,
    batches_per_pass,
)
from .datasets import DATASETS, Dataset, default_data_root, load_dataset
from .generators import (
    permuted_stream,
    rotated_stream,
    split_stream,
    stream_from_datasets,
    stream_from_tensors,
)
from .registry import BenchmarkInfo, benchmark_info, list_benchmarks, make_stream

__all__ = [
    "DATASETS",
    "MLP",
    "SCENARIOS",
    "Backbone",
    "Batch",
    "batch_slices",
    "batches_per_pass",
    "BenchmarkInfo",
    "Dataset",
    "Experience",
    "ReducedResNet18",
    "Stream",
    "StreamSpec",
    "TensorData",
    "TransformedTensorData",
    "benchmark_info",
    "build_backbone",
    "default_data_root",
    "list_benchmarks",
    "load_dataset",
    "make_stream",
    "permuted_stream",
    "rotated_stream",
    "split_stream",
    "stream_from_datasets",
    "stream_from_tensors",
]
