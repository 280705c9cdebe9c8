"""Measurements of a model beyond its loss, taken at initialization and at every validation.

A probe is a function (model, batch) -> {metric: value}; experiments choose probes by name in
`train.probes`. Probes run on one fixed training batch, outside the training step, and leave the
model's gradients and mode as they found them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ablations.model import GPT

Batch = tuple[torch.Tensor, torch.Tensor]


def _loss_and_grads(model: GPT, batch: Batch) -> None:
    x, y = batch
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten()).backward()


def attention(model: GPT, batch: Batch) -> dict[str, float]:
    """Attention logit std, normalized attention entropy, and the gradient norms of W_Q and W_K.

    Entropy of each query row i (over its i+1 visible keys) divided by its maximum log(i+1), averaged
    over rows i >= 1, heads and layers: 1 = uniform attention, 0 = one-hot (saturated softmax).
    """
    layers = [block.attn for block in model.blocks]
    for attn in layers:
        attn.record = True
    try:
        _loss_and_grads(model, batch)
    finally:
        for attn in layers:
            attn.record = False
    d = model.cfg.d_model
    n = batch[0].size(1)
    max_entropy = torch.log(torch.arange(1, n + 1, dtype=torch.float32))[1:]
    logit_std, entropy, q_grad, k_grad = [], [], [], []
    for attn in layers:
        logits, weights = attn.recorded["logits"].detach(), attn.recorded["weights"].detach()
        visible = torch.tril(torch.ones(n, n, dtype=torch.bool))
        logit_std.append(logits[..., visible].float().std().item())
        row_entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1)[..., 1:]
        entropy.append((row_entropy / max_entropy).mean().item())
        grad = attn.qkv.weight.grad
        q_grad.append(grad[:d].norm().item())
        k_grad.append(grad[d : 2 * d].norm().item())
        attn.recorded = {}
    model.zero_grad(set_to_none=True)
    qk = math.sqrt(sum(g**2 for g in q_grad + k_grad))
    return {
        "attn_logit_std": sum(logit_std) / len(logit_std),
        "attn_entropy": sum(entropy) / len(entropy),
        "qk_grad_norm": qk,
        "log10_qk_grad_norm": math.log10(qk) if qk > 0 else -math.inf,
    }


def layer_grad_norms(model: GPT, batch: Batch) -> dict[str, float]:
    """Gradient norm of each block's parameters, and the last-to-first ratio (Xiong et al. 2020)."""
    _loss_and_grads(model, batch)
    norms = [
        math.sqrt(sum(p.grad.norm().item() ** 2 for p in b.parameters() if p.grad is not None)) for b in model.blocks
    ]
    model.zero_grad(set_to_none=True)
    metrics = {f"grad_norm_layer{i}": norm for i, norm in enumerate(norms)}
    metrics["grad_norm_last_over_first"] = norms[-1] / norms[0] if norms[0] > 0 else math.inf
    return metrics


PROBES: dict[str, Callable[[GPT, Batch], dict[str, float]]] = {
    "attention": attention,
    "layer_grad_norms": layer_grad_norms,
}


def run_probes(names: list[str], model: GPT, batch: Batch) -> dict[str, float]:
    unknown = set(names) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; valid: {', '.join(PROBES)}")
    was_training = model.training
    model.eval()  # dropout off and BatchNorm on running statistics: a measurement, not a training step
    try:
        with torch.enable_grad():  # validation runs under no_grad; probes need gradients
            metrics: dict[str, float] = {}
            for name in names:
                metrics |= PROBES[name](model, batch)
            return metrics
    finally:
        model.train(was_training)
