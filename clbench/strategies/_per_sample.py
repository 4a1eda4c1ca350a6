"""What the importance-based regularisers (EWC, MAS, SI) share: sums over samples of an elementwise function of
*per-sample* gradients, and the quadratic penalty Σ Ω (θ − θ*)².

Two ways to the per-sample sums:
  * any model: torch.func (vmap over grad), one gradient per sample;
  * models made of nn.Linear layers only (the MLPs): sample k's weight gradient is the outer product δ_k a_kᵀ, so
    for an elementwise f with f(uv) = f(u) f(v) (squaring, absolute value) Σ_k f(δ_k a_kᵀ) = f(δ)ᵀ f(a): one matmul
    per layer, never the N per-sample gradients (the identity behind Goodfellow 2015, "Efficient per-example
    gradient computations").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def only_linear_layers(model: nn.Module, params: dict) -> bool:
    """True when every trainable parameter belongs to an nn.Linear (the MLP backbones); whether each layer is applied
    once to 2-D inputs, the other condition of the closed form, is checked on the forward pass itself."""
    owned = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            owned |= {f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)}
        elif any(True for _ in module.parameters(recurse=False)):
            return False
    return owned == set(params)


def vmap_grad_sums(model: nn.Module, params: dict, sample_loss: Callable, inputs: tuple,
                   f: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """{parameter: Σ_k f(g_k)} over the samples k of `inputs` (tensors batched on dim 0, the model's input first),
    g_k the gradient of sample_loss(logits, *other inputs) on a batch of one."""
    detached = {name: p.detach() for name, p in params.items()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss(p, x, *rest):
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return sample_loss(logits, *(r.unsqueeze(0) for r in rest))

    grads = vmap(grad(loss), in_dims=(None, *[0] * len(inputs)))(detached, *inputs)
    return {name: f(g).sum(0) for name, g in grads.items()}


def linear_grad_sums(model: nn.Module, x: torch.Tensor, summed_loss: Callable[[torch.Tensor], torch.Tensor],
                     f: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """{parameter: Σ_k f(g_k)} by the closed form of an all-nn.Linear model, for `summed_loss(logits)` a *sum* over
    the samples (so that row k of the gradient at a layer's output is exactly sample k's own). None when a layer is
    not applied exactly once to a 2-D input, where the identity does not hold."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    inputs, outputs, calls = {}, {}, dict.fromkeys(layers, 0)

    def keep(name):
        def hook(module, args, output):
            inputs[name], outputs[name] = args[0], output
            calls[name] += 1

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in layers.items()]
    try:
        with torch.enable_grad():
            logits = model(x)
            if any(n != 1 for n in calls.values()) or any(a.dim() != 2 for a in inputs.values()):
                return None
            deltas = torch.autograd.grad(summed_loss(logits), [outputs[name] for name in layers])
    finally:
        for handle in handles:
            handle.remove()
    sums = {}
    for (name, layer), delta in zip(layers.items(), deltas, strict=True):
        f_delta = f(delta)
        sums[f"{name}.weight"] = f_delta.T @ f(inputs[name].detach())
        if layer.bias is not None:
            sums[f"{name}.bias"] = f_delta.sum(0)
    return sums


def quadratic_penalty(params: dict[str, torch.Tensor], importance: dict[str, torch.Tensor],
                      anchor: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Σ_i Ω_i (θ_i − θ*_i)² over the parameters of `importance` (a 0-d tensor of `like`'s dtype and device)."""
    total = like.new_zeros(())
    for name, p in params.items():
        if name in importance:
            total = total + (importance[name] * (p - anchor[name]).pow(2)).sum()
    return total
