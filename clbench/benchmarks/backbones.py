"""Reference backbones. Each has `features` (x → penultimate features, flattening inside) and `head`
(nn.Linear to all output units), and forward = head(features(x)); strategies rely on both attributes (center loss
reads the features, LwF/iCaRL-style methods touch the head), and `feature_dim` gives the width in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import unknown_choice
from .base import StreamSpec


class Standardize(nn.Module):
    """(x − mean) / std per channel, with fixed statistics stored as buffers (never trained)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x):
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """features → head; subclasses build the two parts."""

    features: nn.Module
    head: nn.Linear

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def forward(self, x):
        return self.head(self.features(x))


class MLP(Backbone):
    """Fully connected ReLU network; the standard backbone of the (permuted/rotated/split) MNIST literature."""

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (400, 400)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers plus a (projected when the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(c_in, c_out, stride),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            _conv3x3(c_out, c_out),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class ReducedResNet18(Backbone):
    """The reduced ResNet-18 of GEM (Lopez-Paz & Ranzato 2017): BasicBlocks [2, 2, 2, 2] of widths nf, 2nf, 4nf, 8nf
    (nf=20), BatchNorm, strides 1, 2, 2, 2, then average pooling.

    GEM pools with a fixed 4x4 window, which assumes 32x32 inputs; adaptive pooling to 1x1 gives the same result there
    and also accepts other sizes (e.g. 28x28 MNIST). features output: 8*nf.
    """

    def __init__(self, n_classes: int, in_channels: int = 3, nf: int = 20):
        super().__init__()
        layers: list[nn.Module] = [_conv3x3(in_channels, nf), nn.BatchNorm2d(nf), nn.ReLU()]
        width = nf
        for i, stride in enumerate((1, 2, 2, 2)):
            out = nf * 2**i
            layers += [BasicBlock(width, out, stride), BasicBlock(out, out)]
            width = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)


BACKBONES = {
    "mlp400": lambda spec: MLP(spec.input_shape, spec.n_classes, hidden=(400, 400)),
    "mlp100": lambda spec: MLP(spec.input_shape, spec.n_classes, hidden=(100, 100)),
    "mlp1000": lambda spec: MLP(spec.input_shape, spec.n_classes, hidden=(1000, 1000)),
    "resnet18-reduced": lambda spec: ReducedResNet18(spec.n_classes, in_channels=spec.input_shape[0]),
}


NORMALIZE = ("standardize", "none")


def build_backbone(spec: StreamSpec, normalize: str = "standardize") -> Backbone:
    """The reference backbone named by `spec.backbone`, sized for the stream's inputs and output units.

    normalize="standardize" puts a Standardize layer with the dataset's channel statistics in front when the stream
    carries them (`input_mean`, `input_std`); "none" feeds the stream's pixels as they are (in [0, 1]), as van de
    Ven & Tolias's and GEM's code do for MNIST — an always-zero background pixel then gets no first-layer gradient
    and no Fisher information, which changes how strongly EWC-like penalties bind.

    Parameters are initialised from torch's global RNG: seed it (torch.manual_seed) for reproducible weights.
    """
    if spec.backbone not in BACKBONES:
        raise unknown_choice("backbone", spec.backbone, BACKBONES)
    if normalize not in NORMALIZE:
        raise unknown_choice("normalize", normalize, NORMALIZE)
    model = BACKBONES[spec.backbone](spec)
    if normalize == "standardize" and "input_mean" in spec.metadata:
        model.features = nn.Sequential(Standardize(spec.metadata["input_mean"], spec.metadata["input_std"]),
                                       *model.features)
    return model
