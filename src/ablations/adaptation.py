"""What a second stage does to the weights it starts from before it trains: low-rank adapters, pruned neurons.

- **LoRA** (Hu et al. 2021), through `peft`: adapters B A of rank r beside the chosen Linear layers of the blocks,
  scaled by alpha / r, B initialized to zero (the adapted model starts as the base), every base weight frozen.
  Targets: every Linear of the blocks (`all_linear`) or W_Q and W_V alone (`qv`, Hu et al.'s choice; it needs
  `model.qkv_projection=split`, where they are modules of their own). The embeddings and the tied output head
  stay frozen.
- **Neuron pruning** of the FFNs: each hidden neuron of each block gets an importance score on a few training
  batches, and the lowest-scored `sparsity` share of every layer is removed by a fixed mask on the FFN's output
  projection (`torch.nn.utils.prune`: its input column is zero, so the neuron contributes nothing and stays
  removed through any later training). The criteria, each on the neuron's activation h (the input of the output
  projection) over the batches' tokens:

  - ``magnitude``: ||w_in|| * ||w_out||, the norms of the neuron's incoming row and outgoing column;
  - ``activation``: mean |h| (the handbook's "activation importance", line 942);
  - ``gradient``: the root mean square of dL/dh (its "gradient importance", line 940);
  - ``entropy``: the Shannon entropy of h's histogram (32 equal bins over its own range; its "information
    entropy importance", line 944: higher entropy, more important);
  - ``taylor``: |mean of h * dL/dh| per batch, averaged over batches: the first-order change of the loss when
    h is set to zero (Molchanov et al. 2017, eq. 8);
  - ``random``: uniform scores from the run's seed, the baseline every criterion must beat.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ablations.data import IGNORE, TextDataModule
from ablations.model import GPT, SPLIT, FeedForward

FINETUNE_METHODS = ("full", "lora")
LORA_TARGETS = ("all_linear", "qv")
ENTROPY_BINS = 32


@dataclass
class FinetuneConfig:
    method: str = "full"  # full: every weight trains | lora: adapters only, the rest frozen
    lora_rank: int = 8
    lora_alpha: float = 16.0  # the adapters' output is scaled by alpha / rank
    lora_targets: str = "all_linear"  # all_linear | qv

    def __post_init__(self) -> None:
        if self.method not in FINETUNE_METHODS:
            raise ValueError(f"finetune.method={self.method!r} must be one of {FINETUNE_METHODS}")
        if self.lora_targets not in LORA_TARGETS:
            raise ValueError(f"finetune.lora_targets={self.lora_targets!r} must be one of {LORA_TARGETS}")
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ValueError(f"finetune.lora_rank={self.lora_rank} and lora_alpha={self.lora_alpha} must be positive")


def lora_target_names(model: GPT, targets: str) -> list[str]:
    """The full module names of the Linear layers that get adapters."""
    linears = [f"blocks.{name}" for name, m in model.blocks.named_modules() if isinstance(m, nn.Linear)]
    if targets == "all_linear":
        return linears
    wanted = (f"split.{SPLIT[0]}", f"split.{SPLIT[2]}")
    chosen = [name for name in linears if name.endswith(wanted)]
    if not chosen:
        raise ValueError(
            "finetune.lora_targets=qv needs W_Q and W_V as modules of their own: model.qkv_projection=split"
        )
    return chosen


def add_lora(model: GPT, cfg: FinetuneConfig) -> GPT:
    """Adapters on the target layers (in place), every other parameter frozen."""
    # peft imports torchao, which reports CUDA kernels it cannot load and torch deprecations: not this run's business
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from peft import LoraConfig, inject_adapter_in_model  # a second or two of imports: only LoRA runs pay them

    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules=lora_target_names(model, cfg.lora_targets),
    )
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def parameter_counts(model: GPT) -> dict[str, float]:
    """Trainable parameters and their share of all (GPT.num_params: tied weights once, adapters included)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "trainable_fraction": trainable / model.num_params()}


# --- neuron pruning -------------------------------------------------------------------------------------

CRITERIA = ("magnitude", "activation", "gradient", "entropy", "taylor", "random")


@dataclass
class PruneConfig:
    criterion: str | None = None  # None: no pruning | a name in CRITERIA
    sparsity: float = 0.0  # the share of each FFN's hidden neurons removed
    calibration_batches: int = 8  # training batches the scores are measured on

    def __post_init__(self) -> None:
        if self.criterion is not None and self.criterion not in CRITERIA:
            raise ValueError(f"prune.criterion={self.criterion!r} must be one of {CRITERIA}")
        if not 0 <= self.sparsity < 1 or self.calibration_batches < 1:
            raise ValueError(
                f"prune.sparsity={self.sparsity} must lie in [0, 1) and prune.calibration_batches be positive"
            )


def ffn_layers(model: GPT) -> list[FeedForward]:
    ffns = [block.mlp for block in model.blocks]
    if not all(isinstance(f, FeedForward) for f in ffns):
        raise ValueError("prune needs FFNs of two Linear maps around an activation: model.mlp=gelu or relu")
    return ffns


def activation_statistics(model: GPT, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    """Per FFN layer and batch: every hidden activation h and its gradient dL/dh, each (batch, T, d_ff)."""
    ffns, seen = ffn_layers(model), [{"h": [], "grad": []} for _ in model.blocks]

    def keep(layer: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            h = inputs[0]
            seen[layer]["h"].append(h.detach())
            h.register_hook(lambda g: seen[layer]["grad"].append(g.detach()))

        return hook

    handles = [ffn.proj.register_forward_pre_hook(keep(i)) for i, ffn in enumerate(ffns)]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for x, y in batches:
                F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return seen


def histogram_entropy(h: torch.Tensor) -> torch.Tensor:
    """The Shannon entropy (nats) of each column's histogram, ENTROPY_BINS equal bins over the column's range."""
    low, high = h.min(0).values, h.max(0).values
    width = (high - low).clamp_min(1e-12) / ENTROPY_BINS
    bins = ((h - low) / width).floor().clamp(0, ENTROPY_BINS - 1).long()
    counts = h.new_zeros(ENTROPY_BINS, h.size(1)).scatter_add_(0, bins, torch.ones_like(h))
    p = counts / h.size(0)
    return -(p * p.clamp_min(1e-30).log()).sum(0)


def taylor_score(h: list[torch.Tensor], grad: list[torch.Tensor]) -> torch.Tensor:
    """Molchanov et al. 2017, eq. 8: per sequence, |mean over its tokens of h dL/dh|; averaged over the sequences."""
    return torch.cat([(a * g).mean(1).abs() for a, g in zip(h, grad, strict=True)]).mean(0)


def tokens(batches: list[torch.Tensor]) -> torch.Tensor:
    """Every token's row of the batches, (tokens, d_ff)."""
    return torch.cat([b.flatten(0, 1) for b in batches])


# criterion -> its score from the per-batch activations and gradients of one layer, each (batch, T, d_ff)
ACTIVATION_CRITERIA: dict[str, Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]] = {
    "activation": lambda h, grad: tokens(h).abs().mean(0),
    "gradient": lambda h, grad: tokens(grad).pow(2).mean(0).sqrt(),
    "entropy": lambda h, grad: histogram_entropy(tokens(h)),
    "taylor": taylor_score,
}


def neuron_scores(
    model: GPT, cfg: PruneConfig, batches: list[tuple[torch.Tensor, torch.Tensor]], seed: int
) -> list[torch.Tensor]:
    """The importance of every hidden neuron, one (d_ff,) tensor per FFN layer: higher, more important."""
    ffns = ffn_layers(model)
    if cfg.criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        return [torch.rand(ffn.proj.in_features, generator=generator) for ffn in ffns]
    if cfg.criterion == "magnitude":
        return [ffn.fc.weight.detach().norm(dim=1) * ffn.proj.weight.detach().norm(dim=0) for ffn in ffns]
    score = ACTIVATION_CRITERIA[cfg.criterion]
    return [score(layer["h"], layer["grad"]) for layer in activation_statistics(model, batches)]


def prune_neurons(model: GPT, cfg: PruneConfig, batches: list[tuple[torch.Tensor, torch.Tensor]], seed: int) -> float:
    """Remove the lowest-scored `sparsity` share of every FFN's hidden neurons; the share actually removed."""
    scores = neuron_scores(model, cfg, batches, seed)
    removed = total = 0
    for ffn, score in zip(ffn_layers(model), scores, strict=True):
        k = round(cfg.sparsity * score.numel())
        mask = torch.ones_like(ffn.proj.weight)
        mask[:, score.argsort()[:k]] = 0.0
        prune.custom_from_mask(ffn.proj, "weight", mask)
        removed, total = removed + k, total + score.numel()
    return removed / total


def adapt(model: GPT, pruning: PruneConfig, finetune: FinetuneConfig, data: TextDataModule, seed: int) -> dict:
    """Prune FFN neurons, then add LoRA adapters, as the configs ask, to the weights a run starts from (in place);
    what that left: the share of neurons removed, the trainable parameters."""
    measured: dict[str, float] = {}
    if pruning.criterion is not None:
        data.setup()
        batches = list(itertools.islice(iter(data.train_dataloader()), pruning.calibration_batches))
        measured["pruned_fraction"] = prune_neurons(model, pruning, batches, seed)
    if finetune.method == "lora":
        add_lora(model, finetune)
        measured |= parameter_counts(model)
    return measured
