"""Measurements of a model beyond its loss, taken at initialization and at every validation.

A probe is a function (model, batch) -> {metric: value}; experiments choose probes by name in
`train.probes`. Probes run on a fixed training batch (the same for every arm and seed), outside the
training step, and leave the model's gradients and mode as they found them.
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
    """Attention logit std, normalized attention entropy, the weight on the query's own token, and the
    gradient norms of W_Q and W_K.

    Entropy of each query row i (over its i+1 visible keys) divided by its maximum log(i+1), averaged
    over rows i >= 1, heads and layers: 1 = uniform attention, 0 = one-hot (saturated softmax). The self
    weight is the diagonal of the attention matrix over the same rows (uniform attention: the mean of 1/(i+1)).
    """
    layers = [block.attn for block in model.blocks]
    for attn in layers:
        attn.record = True
    try:
        _loss_and_grads(model, batch)
    finally:
        for attn in layers:
            attn.record = False
    n = batch[0].size(1)
    device = batch[0].device
    max_entropy = torch.log(torch.arange(1, n + 1, dtype=torch.float32, device=device))[1:]
    logit_std, entropy, self_weight, qk_grad = [], [], [], []
    for attn in layers:
        logits, weights = attn.recorded["logits"].detach(), attn.recorded["weights"].detach()
        visible = torch.tril(torch.ones(n, n, dtype=torch.bool, device=device))
        logit_std.append(logits[..., visible].float().std().item())
        row_entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1)[..., 1:]
        entropy.append((row_entropy / max_entropy).mean().item())
        self_weight.append(weights.diagonal(dim1=-2, dim2=-1)[..., 1:].mean().item())
        qk_grad.extend(weight.grad[rows].norm().item() for weight, rows in attn.query_key_rows())
        attn.recorded = {}
    model.zero_grad(set_to_none=True)
    qk = math.sqrt(sum(g**2 for g in qk_grad))
    return {
        "attn_logit_std": sum(logit_std) / len(logit_std),
        "attn_entropy": sum(entropy) / len(entropy),
        "attn_self_weight": sum(self_weight) / len(self_weight),
        "qk_grad_norm": qk,
        "log10_qk_grad_norm": math.log10(qk) if qk > 0 else -math.inf,
    }


def softmax_jacobian(model: GPT, batch: Batch) -> dict[str, float]:
    """How much gradient the attention softmax passes back to its logits: the Frobenius norm of its Jacobian
    d p / d logits = diag(p) - p pᵀ for each query row i >= 1, averaged over rows, heads and layers.

    It is 0 for a one-hot (saturated) row and 1/n - 1/n² for a uniform row over n keys;
    ||diag(p) - p pᵀ||² = Σ p² - 2 Σ p³ + (Σ p²)². Vaswani et al.'s argument for 1/sqrt(d_k) is that large
    logits drive it towards 0 ("extremely small gradients").
    """
    layers = [block.attn for block in model.blocks]
    for attn in layers:
        attn.record = True
    try:
        with torch.no_grad():
            model(batch[0])
    finally:
        for attn in layers:
            attn.record = False
    norms = []
    for attn in layers:
        p = attn.recorded["weights"].double()
        sum_sq, sum_cube = (p**2).sum(-1), (p**3).sum(-1)
        norms.append((sum_sq - 2 * sum_cube + sum_sq**2).clamp_min(0).sqrt()[..., 1:].mean().item())
        attn.recorded = {}
    norm = sum(norms) / len(norms)
    return {"softmax_jacobian_norm": norm, "log10_softmax_jacobian_norm": math.log10(norm) if norm > 0 else -math.inf}


def layer_grad_norms(model: GPT, batch: Batch) -> dict[str, float]:
    """Gradient norm of each block's parameters, and the last-to-first ratio (Xiong et al. 2020)."""
    _loss_and_grads(model, batch)
    norms = [
        math.sqrt(sum(p.grad.norm().item() ** 2 for p in b.parameters() if p.grad is not None)) for b in model.blocks
    ]
    model.zero_grad(set_to_none=True)
    metrics = {f"grad_norm_layer{i}": norm for i, norm in enumerate(norms)}
    ratio = norms[-1] / norms[0] if norms[0] > 0 else math.inf
    metrics["grad_norm_last_over_first"] = ratio
    metrics["log10_grad_norm_last_over_first"] = math.log10(ratio) if ratio > 0 else -math.inf  # orders of magnitude
    return metrics


NOISE_MICRO_BATCHES = 8


def gradient_noise(model: GPT, batch: Batch) -> dict[str, float]:
    """The simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, App. A.1).

    Unbiased |G|^2 and tr(Sigma) from the squared gradient norm at two batch sizes: the whole probe
    batch (B sequences) and its NOISE_MICRO_BATCHES micro-batches (b = B / 8 sequences each); the
    whole-batch gradient is the mean of the micro-batch gradients. B_simple is in sequences.
    """
    x, y = batch
    if x.size(0) % NOISE_MICRO_BATCHES or x.size(0) < 2 * NOISE_MICRO_BATCHES:
        raise ValueError(
            f"the gradient_noise probe needs a batch of a multiple of {NOISE_MICRO_BATCHES} sequences, >= 16"
        )
    grads = []
    for xs, ys in zip(x.chunk(NOISE_MICRO_BATCHES), y.chunk(NOISE_MICRO_BATCHES), strict=True):
        _loss_and_grads(model, (xs, ys))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    model.zero_grad(set_to_none=True)
    return noise_scale(torch.stack(grads), micro_batch=x.size(0) // NOISE_MICRO_BATCHES)


def noise_scale(micro_grads: torch.Tensor, micro_batch: int) -> dict[str, float]:
    """|G|^2, tr(Sigma) and B_simple from k micro-batch gradients (k x P) of micro_batch examples each."""
    grads = micro_grads.double()
    small, big = micro_batch, micro_batch * grads.size(0)
    small_sq, big_sq = grads.pow(2).sum(1).mean().item(), grads.mean(0).pow(2).sum().item()
    grad_sq = (big * big_sq - small * small_sq) / (big - small)
    trace = (small_sq - big_sq) / (1 / small - 1 / big)
    return {
        "grad_sq_norm": grad_sq,
        "grad_trace_cov": trace,
        "noise_scale": trace / grad_sq if grad_sq > 0 else math.inf,
    }


PROBES: dict[str, Callable[[GPT, Batch], dict[str, float]]] = {
    "attention": attention,
    "softmax_jacobian": softmax_jacobian,
    "layer_grad_norms": layer_grad_norms,
    "gradient_noise": gradient_noise,
}
PROBE_BATCH = {"gradient_noise": 64}  # probes that need a batch of their own size (sequences)


def run_probes(names: list[str], model: GPT, batch_of: Callable[[int | None], Batch]) -> dict[str, float]:
    """Run the named probes; batch_of(size) gives the fixed probe batch (size None: the training batch size)."""
    unknown = set(names) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; valid: {', '.join(PROBES)}")
    was_training = model.training
    model.eval()  # dropout off and BatchNorm on running statistics: a measurement, not a training step
    try:
        with torch.enable_grad():  # validation runs under no_grad; probes need gradients
            metrics: dict[str, float] = {}
            for name in names:
                metrics |= PROBES[name](model, batch_of(PROBE_BATCH.get(name)))
            return metrics
    finally:
        model.train(was_training)
