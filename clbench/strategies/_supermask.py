"""Supermask machinery shared by the mask-based strategies (SupSup, ExSSNeT): frozen signed-constant weights, per-task
real-valued scores, top-k% binary masks with straight-through gradients, and masked forward passes through
`torch.func.functional_call`, so that the backbone module itself is never modified by training.

Papers followed:
  * Ramanujan et al., "What's Hidden in a Randomly Weighted Neural Network?" (CVPR 2020; edge-popup): the mask keeps
    the top-k% of |scores| per layer; the gradient reaches the scores straight through the (non-differentiable) top-k.
  * Wortsman et al., "Supermasks in Superposition" (NeurIPS 2020), reference code RAIVNLab/supsup
    (`models/module_util.py`, `models/init.py`, `models/modules.py`): scores are initialised like a default PyTorch
    layer (`kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))); weights are "signed constants"
    ±gain/sqrt(fan_in) with gain = calculate_gain("relu") = sqrt(2) (the Kaiming-normal std) and the sign of the
    layer's random initial weight; the number of kept entries is `numel - int((1 - density) * numel)` per tensor,
    exactly as the reference `GetSubnet` (which zeroes the `int((1-k)·numel)` smallest).

What is masked, and why (the reference uses bias-free layers and, for conv nets, non-affine batch norm with one set of
running statistics per task, `MultitaskNonAffineBN`):
  * the `weight` of every `nn.Linear` and `nn.Conv2d` (the head included, as in the reference, whose last layer is a
    masked layer too) — these are the *maskable* tensors, named as in `model.named_parameters()`;
  * biases: clbench's MLPs have biases. `signed_constant_` sets them to zero and freezes them, which makes the
    network exactly the reference's bias-free one (masking a zero bias would change nothing);
  * batch norm: `signed_constant_` sets the affine weight to 1 and bias to 0 and freezes them, which is exactly a
    non-affine BN. The running statistics are buffers; a strategy that wants one set per task (as the reference)
    keeps its own copies (`bn_buffers`) and passes them to `masked_forward(..., buffers=...)`, where batch norm in
    training mode updates the passed tensors in place, never the model's own.

API (all functions are pure unless their name ends with `_`; MASKABLE_MODULES and BATCH_NORM_MODULES are the module
types masked and treated as batch norm):

    maskable_weights(model)                    -> {name: weight Parameter} of every Linear/Conv2d
    signed_constant_(model)                    -> None; weights := ±σ, biases := 0, BN affine := (1, 0), all frozen
    init_scores(weights, generator=None)       -> {name: fresh float32 score tensor, requires_grad=True}
    kept_count(numel, density)                 -> how many entries a top-k mask keeps
    topk_mask(scores, density)                 -> float {0,1} mask of the top-k |scores|, straight-through gradient
    topk_masks(scores, density)                -> {name: topk_mask(...)} for a dict of scores
    apply_masks(params, masks)                 -> {name: param * mask (or param if unmasked)}
    masked_forward(model, masks, x, ...)       -> model output with masked weights (functional_call)
    superimpose(masks_list, alphas)            -> {name: Σ_i alphas[i] · masks_list[i][name]} (SupSup inference)
    bn_buffers(model)                          -> {name: clone} of every batch-norm running statistic
    pack_mask(mask) / unpack_mask(packed, shape)  1 bit per entry storage (uint8), and back to float
"""

from __future__ import annotations

import math

import torch
from torch import autograd, nn
from torch.func import functional_call

MASKABLE_MODULES = (nn.Linear, nn.Conv2d)
BATCH_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)
_BN = BATCH_NORM_MODULES  # kept: other strategies refer to it


def maskable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every Linear and Conv2d module, by its `named_parameters` name (e.g. "features.1.weight")."""
    return {
        f"{prefix}.weight" if prefix else "weight": module.weight
        for prefix, module in model.named_modules()
        if isinstance(module, MASKABLE_MODULES)
    }


@torch.no_grad()
def signed_constant_(model: nn.Module, *, mode: str = "fan_in", nonlinearity: str = "relu") -> None:
    """Turn `model` into the frozen random network of edge-popup/SupSup, in place.

    Every Linear/Conv2d weight becomes sign(w) · gain/sqrt(fan) (the reference's `signed_constant`, with the sign of
    the current random weight, so the signs come from the RNG that initialised the model); a weight that is exactly
    0 gets the + sign. Biases of those layers become 0 and batch-norm affine parameters (1, 0), i.e. bias-free layers
    and non-affine batch norm as in the reference. Every parameter gets requires_grad=False.
    """
    gain = nn.init.calculate_gain(nonlinearity)
    for module in model.modules():
        if isinstance(module, MASKABLE_MODULES):
            std = gain / math.sqrt(nn.init._calculate_correct_fan(module.weight, mode))
            module.weight.copy_(torch.where(module.weight >= 0, std, -std))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, _BN) and module.affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
    model.requires_grad_(False)


def init_scores(weights: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Fresh scores for each weight: kaiming_uniform_(a=sqrt(5)) as the reference `mask_init`, drawn on the CPU from
    `generator` (so results do not depend on the device), float32, on the weight's device, requires_grad=True."""
    out = {}
    for name, w in weights.items():
        s = torch.empty(w.shape, dtype=torch.float32)
        nn.init.kaiming_uniform_(s, a=math.sqrt(5), generator=generator)
        out[name] = s.to(w.device).requires_grad_(True)
    return out


def kept_count(numel: int, density: float) -> int:
    """Entries a top-k mask of `density` keeps: numel − int((1 − density)·numel), as the reference GetSubnet."""
    return numel - int((1 - density) * numel)


class _TopK(autograd.Function):
    """1 for the `kept_count` largest entries of `values`, 0 elsewhere; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, values, density):
        flat = values.detach().flatten()
        k = kept_count(flat.numel(), density)
        mask = torch.zeros_like(flat)
        if k > 0:
            mask[torch.topk(flat, k, sorted=False).indices] = 1.0
        return mask.view_as(values)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def topk_mask(scores: torch.Tensor, density: float, *, absolute: bool = True) -> torch.Tensor:
    """Binary (float 0/1) mask keeping the top `density` fraction of |scores| (of `scores` if absolute=False), with a
    straight-through gradient: d mask / d scores is taken as the identity (through |·| when absolute). 0 < density ≤ 1.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return _TopK.apply(scores.abs() if absolute else scores, density)


def topk_masks(scores: dict[str, torch.Tensor], density: float, *, absolute: bool = True) -> dict[str, torch.Tensor]:
    return {name: topk_mask(s, density, absolute=absolute) for name, s in scores.items()}


def apply_masks(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """params with every entry named in `masks` multiplied by its mask (any float mask: binary or superimposed)."""
    return {name: p * masks[name] if name in masks else p for name, p in params.items()}


def masked_forward(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    x: torch.Tensor,
    *,
    params: dict[str, torch.Tensor] | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """model(x) computed with `params` (default: the model's own parameters) whose maskable weights are multiplied by
    `masks`, and with `buffers` (e.g. one task's batch-norm statistics) replacing the model's. The model's own tensors
    are not modified (batch norm in training mode updates the *passed* buffers in place). Train/eval behaviour follows
    `model.training`."""
    params = dict(model.named_parameters()) if params is None else params
    tensors = apply_masks(params, masks)
    if buffers:
        tensors.update(buffers)
    return functional_call(model, tensors, (x,))


def superimpose(masks_list: list[dict[str, torch.Tensor]], alphas: torch.Tensor) -> dict[str, torch.Tensor]:
    """The superposition Σ_i alphas[i] · M_i of several tasks' masks (SupSup's task inference); differentiable in
    `alphas` (shape (len(masks_list),))."""
    names = masks_list[0].keys()
    return {
        name: torch.einsum("t,t...->...", alphas, torch.stack([m[name] for m in masks_list])) for name in names
    }


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Clones of every batch-norm running statistic (running_mean, running_var, num_batches_tracked) by buffer name;
    empty for a model without batch norm."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, _BN) and module.track_running_stats:
            for name, buf in module.named_buffers(recurse=False):
                out[f"{prefix}.{name}" if prefix else name] = buf.detach().clone()
    return out


_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 (bool or float) mask stored as 1 bit per entry: uint8 of ceil(numel / 8) bytes."""
    flat = mask.detach().flatten().bool()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _BITS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape, dtype=torch.float32) -> torch.Tensor:
    """Inverse of `pack_mask`: a mask of `shape` and `dtype` (0/1 values)."""
    bits = (packed.unsqueeze(1) & _BITS.to(packed.device)) != 0
    return bits.flatten()[: math.prod(shape)].view(shape).to(dtype)
