"""Continual learning with hypernetworks (von Oswald, Henning, Grewe & Sacramento, ICLR 2020).

A task-conditioned hypernetwork f_h(e, Θ_h) maps a learned task embedding e^(t) to *all* weights of the target
network (the runner's backbone, whose own parameters only define the shapes and are never trained: it is run on the
generated weights with `torch.func.functional_call`, its buffers — the Standardize statistics — passed unchanged).
Learning task T trains Θ_h and the new embedding e^(T) on Eq. 2 of the paper,

    L = L_task(f(x, f_h(e^(T), Θ_h)), y) + β/(T−1) · Σ_{t<T} ‖ f_h(e^(t), Θ_h*) − f_h(e^(t), Θ_h + ΔΘ_h) ‖²

where Θ_h* are the hypernetwork's parameters before task T (the targets f_h(e^(t), Θ_h*) are fixed while T is learned)
and ΔΘ_h is the look-ahead: the step the optimiser would take on L_task alone, computed from its state without
changing it and held constant in the regulariser's gradient (hypercl's `calc_delta_theta`, detached, as by default
there). Old embeddings are frozen after their task: only e^(T) and Θ_h are optimised, as in the authors' code (hypercl
mnist/train_splitMNIST.py gives the embedding optimiser only the current task's embedding).

Chunking (Sec. 2.2, Fig. 1b): with `chunk_size` c the target's P weights are cut into n = ⌈P/c⌉ chunks; a learned chunk
embedding (shared by all tasks, part of Θ_h) is concatenated to e and the same MLP emits each chunk. `chunk_size=None`
gives the full hypernetwork with one output per target weight.

Defaults are the authors' split-MNIST classifier hypernetwork (hypercl mnist/train_args_default.py, `class_*`):
β=0.01 (`class_beta`), task and chunk embeddings of 96 (`class_temb_size`, `class_emb_size`), chunks of 42000
(`class_hyper_chunks`), hidden layers 10,10 (`class_hnet_arch`) with ReLU (`class_hnet_act`), look-ahead on
(`no_lookahead=False`); embeddings drawn from N(0, 1); every old task regularised at every step (`reg_batch_size=None`;
an int regularises that many random old tasks per step, hypercl's `hnet_reg_batch_size`); the whole output regularised,
as that script does. The optimiser comes from the run's TrainConfig (Adam 1e-3, batch 128 in the paper), over Θ_h and
the current embedding, fresh for each task. On Split-Fashion-MNIST task-IL (MLP 2×400, Adam 1e-3, batch 128, 2 epochs,
seed 0) these settings reach accuracy 0.981 with forgetting 0.001 in about 11 s of training on one CPU thread.

How the regulariser is computed (the same quantity, cheaper; see `regulariser`): unchunked, the outputs for all old
embeddings come from one batched forward pass and the targets are stored (n_old·P floats). Chunked, a target chunk is
A*·ĥ*, the output layer A* = [W* b*] at Θ_h* applied to its input features ĥ* = [h; 1], so A* and the features of the
old (task, chunk) pairs are stored instead of the targets, and with D = A − A*, δ = ĥ − ĥ*,
‖A ĥ − A* ĥ*‖² = ‖D ĥ + A* δ‖²: summed over the rows through the Gram matrices DᵀD, DᵀA*, A*ᵀA*, its cost no
longer grows with the number of old tasks and chunks, and only the small differences D, δ enter the products.

Scenarios, the paper's CL1 and CL3 (van de Ven & Tolias):
  * task: the task id selects the embedding; logits are masked to the task's units (multi-head).
  * class: HNET+ENT. Training is task-IL training (each task on its own units); at test time the weights of every
    learned task are generated, each task's softmax entropy over its own units is computed per sample and the task of
    lowest entropy chosen (hypercl's `--infer_with_entropy`, temperature 1); the returned logits are masked to the
    chosen task's units. Domain-IL (CL2) needs one head shared by all tasks and is not offered.

Deliberate deviations:
  * Initialisation: hidden layers use PyTorch's Linear initialisation (as hypercl), but the output layer is scaled so
    that the generated weights start with the mean square of the backbone's own initial weights, its bias at zero —
    the aim of the hyperfan initialisation the authors' library hypnettorch offers, in a simple data-free form. With
    PyTorch's initialisation there the generated weights start about ten times too large; on Split-Fashion-MNIST
    (2 epochs) accuracy fell from 0.98 to 0.96 and forgetting rose from 0.001 to 0.019.
  * Normalisation statistics (batch norm of the ResNet backbones) are kept per task: each task starts from the
    backbone's initial running statistics and its final ones are stored, like hypnettorch's per-task statistics. The
    MLP backbones have none.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from clbench.errors import UsageError
from clbench.strategies.base import MASKED_LOGIT, Strategy, tensors_nbytes
from clbench.strategies.registry import register


class _GramSquaredNorm(torch.autograd.Function):
    """Σ_rows ‖D h + A* δ‖² over (task, chunk) rows, from m×m Gram matrices instead of the generated chunks.

    Inputs: Dᵀ and A*ᵀ (m, c), the features H and their changes Δ as (k, n, m) for k tasks and n chunks, and the
    Gram matrices A*ᵀA* over the first `rem` weight positions and over the rest. Rows of the last chunk use only the
    first `rem` positions (the others are past the end of the target weights). With the valid part V = [:rem] and the
    padding part P = [rem:], forward needs DᵀD and DᵀA* on each part; backward
        ∂/∂D_Vᵀ = 2(HᵀH·D_Vᵀ + HᵀΔ·A*_Vᵀ) over all rows,  ∂/∂D_Pᵀ = the same over the rows of full chunks,
        ∂/∂h = 2(DᵀD·h + DᵀA*·δ),  ∂/∂δ = 2(A*ᵀD·h + A*ᵀA*·δ)   with each row's own parts:
    products with the c weight positions, whatever the number of rows."""

    @staticmethod
    def forward(ctx, diff_t, feats, delta, a_star_t, gram_valid, gram_pad, rem):
        dv, dp, av, ap = diff_t[:, :rem], diff_t[:, rem:], a_star_t[:, :rem], a_star_t[:, rem:]
        dd_v, dd_p, da_v, da_p = dv @ dv.T, dp @ dp.T, dv @ av.T, dp @ ap.T
        grams = (dd_v + dd_p, da_v + da_p, gram_valid + gram_pad), (dd_v, da_v, gram_valid)
        total = diff_t.new_zeros(())
        for (h, d), (dd, da, aa) in zip(_full_and_last(feats, delta), grams, strict=True):
            total = total + ((h @ dd) * h).sum() + 2 * ((h @ da) * d).sum() + ((d @ aa) * d).sum()
        ctx.rem = rem
        ctx.save_for_backward(feats, delta, diff_t, a_star_t, gram_valid, gram_pad, dd_v, dd_p, da_v, da_p)
        return total

    @staticmethod
    def backward(ctx, grad):
        feats, delta, diff_t, a_star_t, gram_valid, gram_pad, dd_v, dd_p, da_v, da_p = ctx.saved_tensors
        rem, g2 = ctx.rem, 2 * grad
        (hf, df), (hl, dl) = _full_and_last(feats, delta)
        grad_diff = grad_feats = grad_delta = None
        if ctx.needs_input_grad[0]:
            hh_full, hd_full = hf.T @ hf, hf.T @ df
            hh_all, hd_all = hh_full + hl.T @ hl, hd_full + hl.T @ dl
            grad_valid = torch.addmm(hd_all @ a_star_t[:, :rem], hh_all, diff_t[:, :rem], alpha=g2, beta=g2)
            grad_pad = torch.addmm(hd_full @ a_star_t[:, rem:], hh_full, diff_t[:, rem:], alpha=g2, beta=g2)
            grad_diff = torch.cat([grad_valid, grad_pad], 1)
        grams = (dd_v + dd_p, da_v + da_p, gram_valid + gram_pad), (dd_v, da_v, gram_valid)
        parts_h, parts_d = [], []
        for (h, d), (dd, da, aa) in zip(((hf, df), (hl, dl)), grams, strict=True):
            parts_h.append(g2 * (h @ dd + d @ da.T))
            parts_d.append(g2 * (h @ da + d @ aa))
        full_shape = (feats.shape[0], feats.shape[1] - 1, feats.shape[2])
        if ctx.needs_input_grad[1]:
            grad_feats = torch.cat([parts_h[0].view(full_shape), parts_h[1][:, None]], 1)
        if ctx.needs_input_grad[2]:
            grad_delta = torch.cat([parts_d[0].view(full_shape), parts_d[1][:, None]], 1)
        return grad_diff, grad_feats, grad_delta, None, None, None, None


def _full_and_last(feats, delta):
    """(k, n, m) rows -> ((rows of the first n−1 chunks), (rows of the last chunk)), each (features, changes)."""
    m = feats.shape[2]
    return ((feats[:, :-1].reshape(-1, m), delta[:, :-1].reshape(-1, m)), (feats[:, -1], delta[:, -1]))


def parse_hidden(text: str) -> tuple[int, ...]:
    """'10,10' -> (10, 10); '' -> () (no hidden layer). UsageError on anything else."""
    bad = UsageError(f"hnet_hidden must be comma-separated positive integers like '10,10' (or ''), got {text!r}")
    if not isinstance(text, str):
        raise bad
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise bad
    return tuple(int(p) for p in parts)


@register("hnet")
class HNet(Strategy):
    """A task-conditioned, chunked hypernetwork generates the backbone's weights from a task embedding.

    beta: weight of the output regulariser; emb_dim: task-embedding size; chunk_emb_dim: chunk-embedding size;
    chunk_size: target weights per chunk (None: unchunked); hnet_hidden: hidden layer sizes, e.g. '10,10';
    hnet_act: hidden activation; lookahead: regularise at Θ_h + ΔΘ_h (Eq. 2) or at Θ_h; reg_batch_size: old tasks
    regularised per step (None: all)."""

    scenarios = frozenset({"task", "class"})
    # the optimizer covers the current task's embedding, a new tensor at every task (the reference, too, makes a new
    # optimizer per task), so no optimizer can be kept across tasks
    train_choices = {"optimizer_state": ("reset",)}

    def __init__(
        self,
        beta: float = 0.01,
        emb_dim: int = 96,
        chunk_emb_dim: int = 96,
        chunk_size: int | None = 42000,
        hnet_hidden: str = "10,10",
        hnet_act: Literal["relu", "elu"] = "relu",
        lookahead: bool = True,
        reg_batch_size: int | None = None,
    ):
        self.beta = beta
        self.emb_dim = emb_dim
        self.chunk_emb_dim = chunk_emb_dim
        self.chunk_size = chunk_size
        self.hnet_hidden = hnet_hidden
        self.hnet_act = hnet_act
        self.lookahead = lookahead
        self.reg_batch_size = reg_batch_size

    def validate(self):
        if not self.beta >= 0 or math.isinf(self.beta):
            raise UsageError(f"beta must be a finite number >= 0, got {self.beta}")
        if self.emb_dim < 1:
            raise UsageError(f"emb_dim must be at least 1, got {self.emb_dim}")
        if self.chunk_emb_dim < 1:
            raise UsageError(f"chunk_emb_dim must be at least 1, got {self.chunk_emb_dim}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UsageError(f"chunk_size must be at least 1 or None (unchunked), got {self.chunk_size}")
        if self.reg_batch_size is not None and self.reg_batch_size < 1:
            raise UsageError(f"reg_batch_size must be at least 1 or None (all old tasks), got {self.reg_batch_size}")
        parse_hidden(self.hnet_hidden)

    # -- the hypernetwork -------------------------------------------------------------------------------------------
    def setup(self, spec, model, *, train, seed, device="cpu"):
        super().setup(spec, model, train=train, seed=seed, device=device)
        self.validate()
        dev, g = self.device_, self.generator_
        self.param_names_ = [name for name, _ in model.named_parameters()]
        self.param_shapes_ = [tuple(p.shape) for _, p in model.named_parameters()]
        self.param_sizes_ = [p.numel() for _, p in model.named_parameters()]
        n_out = sum(self.param_sizes_)
        self.n_target_ = n_out
        self.chunked_ = self.chunk_size is not None
        out_dim = min(self.chunk_size, n_out) if self.chunked_ else n_out
        self.n_chunks_ = math.ceil(n_out / out_dim) if self.chunked_ else 1
        self.out_dim_ = out_dim

        def uniform(shape, bound):
            return ((torch.rand(shape, generator=g) * 2 - 1) * bound).to(dev)

        # Θ_h: [chunk embeddings] + (W, b) per hidden layer + the output layer as one matrix, stored transposed as
        # Aᵀ = [W b]ᵀ (d+1, out_dim) acting on the features [h; 1] (the row-major layout keeps the products with
        # small matrices fast); every tensor a trainable leaf.
        params: list[torch.Tensor] = []
        if self.chunked_:
            params.append(torch.randn(self.n_chunks_, self.chunk_emb_dim, generator=g).to(dev))
        width = self.emb_dim + (self.chunk_emb_dim if self.chunked_ else 0)
        for h in parse_hidden(self.hnet_hidden):
            bound = 1 / math.sqrt(width)
            params += [uniform((h, width), bound), uniform((h,), bound)]
            width = h
        params.append(torch.cat([uniform((width, out_dim), 1.0), torch.zeros(1, out_dim, device=dev)], 0))
        self.hnet_params_ = [p.requires_grad_(True) for p in params]
        # One embedding per experience, drawn now (the reference creates them all with the hypernetwork).
        self.task_embs_ = [torch.randn(self.emb_dim, generator=g).to(dev).requires_grad_(True)
                           for _ in range(spec.n_experiences)]
        self._scale_output_layer(model)

        # Running statistics of normalisation layers are kept per task; every other buffer is shared and fixed.
        stat_owners = [name for name, m in model.named_modules()
                       if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
        self.stat_names_ = [name for name, _ in model.named_buffers()
                            if any(name.startswith(owner + ".") for owner in stat_owners)]
        self.initial_stats_ = {name: b.detach().clone() for name, b in model.named_buffers()
                               if name in self.stat_names_}
        self.task_stats_: list[dict[str, torch.Tensor]] = []
        self.work_stats_ = {name: b.clone() for name, b in self.initial_stats_.items()}

        # The regulariser's targets f_h(e_t, Θ_h*), set after each task: unchunked, stored whole (n_old, P); chunked,
        # as the output layer at Θ_h* (A*) and its input features for the old embeddings (ĥ*), see `regulariser`.
        self.targets_: torch.Tensor | None = None
        self.out_star_: torch.Tensor | None = None
        self.gram_star_: tuple[torch.Tensor, torch.Tensor] = ()
        self.hidden_star_: torch.Tensor | None = None
        self.n_trained_ = 0
        self.current_task_ = 0
        self.optimizer_ = self._make_optimizer(0)
        self._cache: dict[int, torch.Tensor] = {}  # generated weights per task, valid until the next step

    @torch.no_grad()
    def _scale_output_layer(self, model):
        """Scale the output weights so that the generated weights start with the mean square of the backbone's own
        initial weights (zero-mean, since the output bias starts at zero)."""
        target_ms = torch.cat([p.detach().flatten() for p in model.parameters()]).pow(2).mean().item()
        hidden = self._features(self.hnet_params_, torch.stack(self.task_embs_).detach())[:, :-1]
        hidden_ms = hidden.pow(2).mean().item()
        fan_in = hidden.shape[-1]
        # Var(out) = fan_in · Var(w) · E[h²], with Var(w) = bound²/3 for w ~ U(−bound, bound)
        bound = math.sqrt(3 * target_ms / (fan_in * max(hidden_ms, 1e-12)))
        self.hnet_params_[-1][:-1].mul_(bound)

    def _act(self, x):
        return F.relu(x) if self.hnet_act == "relu" else F.elu(x)

    def _features(self, params, embs: torch.Tensor) -> torch.Tensor:
        """The output layer's input [h; 1] for each embedding (k, d+1), or each (embedding, chunk) (k·n_chunks, d+1)."""
        hidden = params[1:-1] if self.chunked_ else params[:-1]
        pairs = list(zip(hidden[0::2], hidden[1::2], strict=True))
        if self.chunked_:
            chunk_embs = params[0]
            k, n = embs.shape[0], chunk_embs.shape[0]
            if pairs:
                weight, bias = pairs.pop(0)
                # W·[e; c] + b = W_e·e + (W_c·c + b): no (k·n)-row copy of the embedding
                h = (embs @ weight[:, : self.emb_dim].T)[:, None, :]
                h = self._act(h + F.linear(chunk_embs, weight[:, self.emb_dim :], bias)).flatten(0, 1)
            else:
                h = torch.cat([embs[:, None, :].expand(k, n, -1), chunk_embs[None].expand(k, n, -1)], 2).flatten(0, 1)
        else:
            h = embs
        for weight, bias in pairs:
            h = self._act(F.linear(h, weight, bias))
        return torch.cat([h, h.new_ones(h.shape[0], 1)], 1)

    def hnet_forward(self, embs: torch.Tensor, params=None) -> torch.Tensor:
        """Generated target weights for a batch of task embeddings: (k, emb_dim) -> (k, P)."""
        params = self.hnet_params_ if params is None else params
        out = self._features(params, embs) @ params[-1]
        if self.chunked_:
            out = out.reshape(embs.shape[0], self.n_chunks_ * self.out_dim_)[:, : self.n_target_]
        return out

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generated weight vector (P,) -> the backbone's named parameters."""
        pieces = torch.split(flat, self.param_sizes_)
        return {n: p.view(s) for n, p, s in zip(self.param_names_, pieces, self.param_shapes_, strict=True)}

    def target_forward(self, x: torch.Tensor, flat: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.model_, {**self.unflatten(flat), **stats}, (x,))

    # -- training ----------------------------------------------------------------------------------------------------
    def _make_optimizer(self, task: int) -> torch.optim.Optimizer:
        cfg = self.train_config_
        params = [*self.hnet_params_, self.task_embs_[task]]
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def before_experience(self, exp):
        self.current_task_ = exp.index
        # A fresh optimiser per task (as the reference), over Θ_h and this task's embedding only.
        self.optimizer_ = self._make_optimizer(exp.index)
        self.work_stats_ = {name: b.clone() for name, b in self.initial_stats_.items()}
        self._cache.clear()

    def after_experience(self, exp):
        self.task_stats_.append(self.work_stats_)
        self.n_trained_ = exp.index + 1
        # Θ_h* for the next task is Θ_h now: keep what determines f_h(e_t, Θ_h*) for every embedding learned so far.
        with torch.no_grad():
            embs = torch.stack(self.task_embs_[: self.n_trained_])
            if self.chunked_:
                # targets_t = A*·ĥ*_t chunk by chunk: keep A* = [W b] of the output layer and the features ĥ* = [h; 1]
                self.out_star_ = self.hnet_params_[-1].detach().clone()  # A*ᵀ
                rem = self.n_target_ - (self.n_chunks_ - 1) * self.out_dim_  # valid positions of the last chunk
                valid, pad = self.out_star_[:, :rem], self.out_star_[:, rem:]
                self.gram_star_ = (valid @ valid.T, pad @ pad.T)  # A*ᵀA* over the two parts
                feats = self._features(self.hnet_params_, embs)
                self.hidden_star_ = feats.view(self.n_trained_, self.n_chunks_, -1).clone()
            else:
                self.targets_ = self.hnet_forward(embs).detach().clone()
        self._cache.clear()

    def stored_targets(self) -> torch.Tensor:
        """f_h(e_t, Θ_h*) for every learned task t, (n_trained, P): the regulariser's targets (rebuilt from A*, ĥ* in
        chunked mode, where they are not stored whole)."""
        if not self.chunked_:
            return self.targets_
        out = self.hidden_star_.flatten(0, 1) @ self.out_star_
        return out.reshape(self.n_trained_, -1)[:, : self.n_target_]

    @torch.no_grad()
    def _lookahead_step(self) -> list[torch.Tensor]:
        """ΔΘ_h: the change the optimiser would apply now, from the gradients present (L_task's), without changing
        the optimiser's state (hypercl's utils/optim_step.calc_delta_theta)."""
        opt = self.optimizer_
        group = opt.param_groups[0]
        lr, wd = group["lr"], group["weight_decay"]
        deltas = []
        for p in self.hnet_params_:
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            if wd:
                grad = grad + wd * p
            state = opt.state.get(p, {})
            if isinstance(opt, torch.optim.Adam):
                beta1, beta2 = group["betas"]
                step = float(state["step"]) + 1 if "step" in state else 1.0
                if "exp_avg" in state:  # the moments Adam is about to form, in new tensors
                    m = state["exp_avg"].mul(beta1).add_(grad, alpha=1 - beta1)
                    v = state["exp_avg_sq"].mul(beta2).addcmul_(grad, grad, value=1 - beta2)
                else:
                    m, v = grad * (1 - beta1), grad * grad * (1 - beta2)
                denom = v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
                deltas.append(m.div_(denom).mul_(-lr / (1 - beta1**step)))
            else:
                momentum = group["momentum"]
                if momentum and "momentum_buffer" in state and state["momentum_buffer"] is not None:
                    grad = state["momentum_buffer"] * momentum + grad * (1 - group["dampening"])
                deltas.append(-lr * grad)
        return deltas

    def _old_tasks(self) -> torch.Tensor | None:
        n_old = self.current_task_
        if self.reg_batch_size is None or self.reg_batch_size >= n_old:
            return None  # all of them
        return torch.randperm(n_old, generator=self.generator_)[: self.reg_batch_size].to(self.device_)

    def regulariser(self, params=None, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(1/|ids|) Σ_{t∈ids} ‖f_h(e_t, params) − f_h(e_t, Θ_h*)‖²; `ids` None means every old task.

        Unchunked: the old embeddings' outputs in one batched forward pass, minus the stored targets.
        Chunked: the target of chunk i of task t is A*·ĥ*_{t,i}, with A* = [W* b*] the output layer at Θ_h* and ĥ* its
        input features [h; 1]. With A = [W b], D = A − A* and δ = ĥ − ĥ* (all at `params`), each generated chunk
        minus its target is D ĥ + A* δ. With few (task, chunk) rows these differences are formed directly; with many,
        Σ_rows ‖D ĥ + A* δ‖² comes from the small Gram matrices DᵀD, DᵀA*, A*ᵀA* (`_GramSquaredNorm`), at a cost
        that does not grow with the number of old tasks or chunks. Only the small D and δ enter the products, so
        nothing cancels. Positions past the end of the last chunk are not target weights; their terms are subtracted.
        """
        params = self.hnet_params_ if params is None else params
        n_old = self.current_task_
        rows = slice(None, n_old) if ids is None else ids
        embs = (torch.stack(self.task_embs_[:n_old]) if ids is None
                else torch.stack([self.task_embs_[int(t)] for t in ids])).detach()
        k = embs.shape[0]
        if not self.chunked_:
            return (self.hnet_forward(embs, params) - self.targets_[rows]).pow(2).sum() / k
        feats = self._features(params, embs)  # (k·n, d+1)
        delta = feats - self.hidden_star_[rows].flatten(0, 1)
        diff = params[-1] - self.out_star_  # Dᵀ
        if feats.shape[0] <= 2 * feats.shape[1]:
            # few rows: form the differences D ĥ + A* δ themselves, cut to the target weights
            out = feats @ diff + delta @ self.out_star_
            return out.reshape(k, self.n_chunks_ * self.out_dim_)[:, : self.n_target_].pow(2).sum() / k
        shape = (k, self.n_chunks_, feats.shape[1])
        total = _GramSquaredNorm.apply(diff, feats.view(shape), delta.view(shape), self.out_star_, *self.gram_star_,
                                       self.n_target_ - (self.n_chunks_ - 1) * self.out_dim_)
        return total / k

    def task_loss(self, batch) -> torch.Tensor:
        t = self.current_task_
        flat = self.hnet_forward(self.task_embs_[t][None])[0]
        logits = self.target_forward(batch.x, flat, self.work_stats_)
        # Each task is trained on its own output units, in class-IL too (the paper trains task-specific heads).
        return F.cross_entropy(logits.masked_fill(~self.unit_mask_[t], MASKED_LOGIT), batch.y)

    def train_step(self, batch):
        self.model_.train()
        self._cache.clear()
        self.optimizer_.zero_grad(set_to_none=True)
        regularise = self.current_task_ > 0 and self.beta > 0
        ids = self._old_tasks() if regularise else None
        loss = self.task_loss(batch)
        stats = {}
        if regularise and not self.lookahead:
            penalty = self.beta * self.regulariser(None, ids)
            total = loss + penalty
            total.backward()
        else:
            loss.backward()
            total = loss.detach()
            if regularise:
                deltas = self._lookahead_step()
                shifted = [p + d for p, d in zip(self.hnet_params_, deltas, strict=True)]
                penalty = self.beta * self.regulariser(shifted, ids)
                penalty.backward()
                total = total + penalty.detach()
        self.optimizer_.step()
        stats["loss"] = total.item()
        if regularise:
            stats["penalty"] = penalty.item()
        return stats

    # -- prediction --------------------------------------------------------------------------------------------------
    def _weights(self, task: int) -> torch.Tensor:
        if task not in self._cache:
            with torch.no_grad():
                self._cache[task] = self.hnet_forward(self.task_embs_[task][None])[0]
        return self._cache[task]

    def _stats(self, task: int) -> dict[str, torch.Tensor]:
        return self.task_stats_[task] if task < len(self.task_stats_) else self.initial_stats_

    def task_logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits over all units of the network generated for `task`, masked to that task's units."""
        with torch.no_grad():
            logits = self.target_forward(x, self._weights(task), self._stats(task))
        return logits.masked_fill(~self.unit_mask_[task], MASKED_LOGIT)

    def predict(self, x, task_id):
        self.model_.eval()
        if task_id is not None:
            return self.task_logits(x, task_id)
        # HNET+ENT: the learned task whose network is most confident (lowest softmax entropy over its own units).
        best, best_entropy = None, None
        for t in range(max(self.n_trained_, 1)):
            logits = self.task_logits(x, t)
            log_p = F.log_softmax(logits, dim=1)
            entropy = -(log_p.exp() * log_p).sum(1)
            if best is None:
                best, best_entropy = logits, entropy
            else:
                lower = entropy < best_entropy
                best = torch.where(lower[:, None], logits, best)
                best_entropy = torch.where(lower, entropy, best_entropy)
        return best

    def state_bytes(self):
        """The hypernetwork (Θ_h with the chunk embeddings), the task embeddings, the stored targets and the per-task
        normalisation statistics: everything this method keeps besides the backbone, whose weights it never uses."""
        stats = [b for d in self.task_stats_ for b in d.values()]
        return tensors_nbytes(*self.hnet_params_, *self.task_embs_, self.targets_, self.out_star_, *self.gram_star_,
                              self.hidden_star_, *stats)
