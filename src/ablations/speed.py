"""Speed benchmarks whose numbers are evidence, timed side by side (ablations.timing).

A benchmark is chosen by name in `benchmark.name` and runs after training, on copies of the trained model
(ablations.run.evaluate); its metrics are named bench_*.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ablations.data import TextDataModule, evaluation_windows, pad_batch
from ablations.generation import DecodingConfig, generate
from ablations.metrics import SCALING_FITS
from ablations.model import GPT
from ablations.timing import alternate, median_log_ratio
from ablations.training import LanguageModelTask, make_optimizer

BATCHINGS = ("fixed", "buckets")  # control, treatment of the batching benchmark


@dataclass
class BenchmarkConfig:
    name: str | None = None  # None: no benchmark; else a name in BENCHMARKS
    batches: int = 8  # batches of each contender per round
    repeats: int = 10  # timed rounds

    def __post_init__(self) -> None:
        if self.name is not None and self.name not in BENCHMARKS:
            raise ValueError(f"benchmark.name={self.name!r} must be null or one of {sorted(BENCHMARKS)}")
        if self.batches < 1 or self.repeats < 2:
            raise ValueError(f"benchmark.batches={self.batches} must be >= 1 and benchmark.repeats={self.repeats} >= 2")


def training_steps(
    task: LanguageModelTask,
    batches: list[Any],
    precision: Callable[[], AbstractContextManager],
    collate: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] = pad_batch,
    micro_batches: int = 1,
) -> Callable[[], None]:
    """One pass of training steps over `batches` (by default lists of documents), as Lightning takes them:
    collation, forward under the trainer's precision, backward, clipping, optimizer step; on a copy of the
    task's model. With micro_batches = k, each update sums the gradients of k consecutive batches (loss / k)."""
    model = copy.deepcopy(task.model).train()
    optimizer = make_optimizer(model, task.optim_cfg)
    clip = task.optim_cfg.grad_clip or float("inf")

    def run() -> None:
        for i, batch in enumerate(batches):
            x, y = collate(batch)
            with precision():
                logits = model(x)
            (F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()) / micro_batches).backward()
            if (i + 1) % micro_batches == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    return run


def batching(
    task: LanguageModelTask, data: TextDataModule, cfg: BenchmarkConfig, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """Training speed on fixed-size batches (data.batch_size documents) against token-budget buckets
    (data.max_tokens padded tokens), in real (non-padding) tokens per second.

    Each contender trains on `cfg.batches` batches drawn at random from one epoch of its own batching of this
    corpus, so that each carries its batching's padding; both start from the trained weights."""
    data.setup()
    generator = torch.Generator().manual_seed(data.seed)
    samples, tokens, slots = {}, {}, {}
    for packing in BATCHINGS:
        epoch = data.document_batches(packing).batches(0)
        chosen = torch.randperm(len(epoch), generator=generator)[: cfg.batches].tolist()
        samples[packing] = [[data.train_docs[i] for i in epoch[j]] for j in chosen]
        tokens[packing] = sum(len(doc) - 1 for docs in samples[packing] for doc in docs)
        slots[packing] = sum(len(docs) * (max(len(doc) for doc in docs) - 1) for docs in samples[packing])
    seconds = alternate({p: training_steps(task, samples[p], precision) for p in BATCHINGS}, cfg.repeats)
    # real tokens per second of buckets over fixed: the samples' token ratio times their time ratio
    log_time_ratio = median_log_ratio(seconds["fixed"], seconds["buckets"])
    metrics = {"bench_log_speedup": math.log(tokens["buckets"] / tokens["fixed"]) + log_time_ratio}
    for packing in BATCHINGS:
        metrics[f"bench_tokens_per_sec_{packing}"] = tokens[packing] / statistics.median(seconds[packing])
        metrics[f"bench_padding_fraction_{packing}"] = 1 - tokens[packing] / slots[packing]
    return metrics


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the tensors that autograd keeps for the backward pass of one training step (each storage once,
    parameters excluded): the activation memory the step needs, counted exactly instead of read from the
    allocator, which on CPU reports nothing per operation."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(kept.values())


def attention_score(
    task: LanguageModelTask, data: TextDataModule, cfg: BenchmarkConfig, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """Training speed and activation memory of this model against the same model with the other attention score
    (dot-product or additive), on the same training batches: bench_log_speedup = log(other's seconds / own),
    bench_log_memory_saving = log(other's activation bytes / own); positive when this arm's score is the cheaper;
    bench_log_activation_bytes = log(own activation bytes), comparable across arms as a fact.
    The other model carries the trained weights (its own score vector, if additive, at its initialization)."""
    own = task.model.cfg
    other_cfg = dataclasses.replace(own, attn_score="additive" if own.attn_score == "dot" else "dot")
    other = LanguageModelTask(other_cfg, task.optim_cfg)
    other.model.load_state_dict(task.model.state_dict(), strict=False)
    data.setup()
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(cfg.batches)]
    tasks = {own.attn_score: task, other_cfg.attn_score: other}
    steps = {name: training_steps(t, batches, precision, collate=tuple) for name, t in tasks.items()}
    seconds = alternate(steps, cfg.repeats)
    x, y = batches[0]
    tokens = x.numel() * cfg.batches
    memory = {name: saved_activation_bytes(copy.deepcopy(t.model).train(), x, y) for name, t in tasks.items()}
    return {
        "bench_log_speedup": median_log_ratio(seconds[other_cfg.attn_score], seconds[own.attn_score]),
        "bench_log_memory_saving": math.log(memory[other_cfg.attn_score] / memory[own.attn_score]),
        "bench_log_activation_bytes": math.log(memory[own.attn_score]),  # a fact of the shapes: the same every seed
        **{f"bench_tokens_per_sec_{name}": tokens / statistics.median(t) for name, t in seconds.items()},
        **{f"bench_activation_bytes_{name}": float(b) for name, b in memory.items()},
    }


def summed_gradient(model: torch.nn.Module, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The gradient of one update over `micro_batches` (loss / k each, summed in the .grad buffers), flattened."""
    model.zero_grad(set_to_none=True)
    for x, y in micro_batches:
        (F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten()) / len(micro_batches)).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def accumulation(
    task: LanguageModelTask, data: TextDataModule, cfg: BenchmarkConfig, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """Gradient accumulation (optim.grad_accumulation = k micro-batches of data.batch_size) against one batch of the
    same k x data.batch_size sequences, from the trained weights: the relative difference of the two gradients (the
    same update up to float summation order); the activation bytes one step keeps for its backward pass (a
    micro-batch's; the peak activation memory); the bytes of the gradient buffers after the update (summed in
    place: as many as one batch's); and, for k > 1, the time per token side by side (bench_log_speedup: log of the
    single batch's seconds over the accumulated micro-batches'; negative when accumulating is slower)."""
    k = task.optim_cfg.grad_accumulation
    data.setup()
    loader = iter(data.train_dataloader())
    micro = [next(loader) for _ in range(k * cfg.batches)]
    first = micro[:k]
    whole = (torch.cat([x for x, _ in first]), torch.cat([y for _, y in first]))
    model = copy.deepcopy(task.model).train()
    single = summed_gradient(model, [whole])
    accumulated = summed_gradient(model, first)
    grad_bytes = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    metrics = {
        "bench_grad_relative_difference": float((accumulated - single).norm() / single.norm()),
        "bench_grad_bytes": float(grad_bytes),
        "bench_log_activation_bytes": math.log(saved_activation_bytes(model, *first[0])),
    }
    if k > 1:
        wholes = [(torch.cat([x for x, _ in micro[i : i + k]]), torch.cat([y for _, y in micro[i : i + k]]))
                  for i in range(0, len(micro), k)]  # fmt: skip
        steps = {
            "single": training_steps(task, wholes, precision, collate=tuple),
            "accumulated": training_steps(task, micro, precision, collate=tuple, micro_batches=k),
        }
        seconds = alternate(steps, cfg.repeats)
        metrics["bench_log_speedup"] = median_log_ratio(seconds["single"], seconds["accumulated"])
    return metrics


def decoding(
    task: LanguageModelTask, data: TextDataModule, cfg: BenchmarkConfig, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """Greedy decoding with the KV cache from `cfg.batches` validation prompts of a quarter of the context, continued
    to the full context: the cache's exact bytes per token
    (bench_kv_cache_bytes_per_token, and its log, comparable across arms as a fact) and, when the model shares
    key-value heads, its speed against the same shape with a key-value head per query head (multi-head attention),
    in turns: bench_log_speedup = log(MHA seconds / own). The MHA copy has fresh weights: decoding time does not
    depend on their values."""
    own = task.model.eval()
    data.setup()
    prompt_length = own.cfg.block_size // 4
    prompts = evaluation_windows(data.val_ids, prompt_length, cfg.batches).tensors[0]
    new_tokens = own.cfg.block_size - prompt_length
    decode = DecodingConfig("greedy", new_tokens)
    cache = own.new_cache()
    with torch.no_grad(), precision():
        own(prompts, cache)
    per_token = sum(layer.nbytes for layer in cache) / (prompts.numel())
    metrics = {"bench_kv_cache_bytes_per_token": per_token, "bench_log_kv_cache_bytes": math.log(per_token)}
    if own.cfg.kv_heads < own.cfg.n_head:
        mha = GPT(dataclasses.replace(own.cfg, n_kv_head=None)).eval()
        contenders = {name: (lambda m=m: generate(m, prompts, decode)) for name, m in (("own", own), ("mha", mha))}
        seconds = alternate(contenders, cfg.repeats)
        metrics["bench_log_speedup"] = median_log_ratio(seconds["mha"], seconds["own"])
        metrics |= {
            f"bench_tokens_per_sec_{n}": prompts.size(0) * new_tokens / statistics.median(t) for n, t in seconds.items()
        }
    return metrics


SCALING_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192)  # the sequence lengths timed
SCALING_COSTS = ("attention", "blocks", "decode")  # what length_scaling times at each length


def log_log_slope(lengths: Sequence[int], costs: Sequence[float]) -> float:
    """The exponent k of cost ∝ length^k: the least-squares slope of log cost on log length."""
    return float(np.polyfit(np.log(lengths), np.log(costs), 1)[0])


def attention_flops(model: GPT, hidden: torch.Tensor) -> tuple[float, float]:
    """Counted FLOPs (torch.utils.flop_counter) of the first block's attention sublayer on `hidden`: all of them,
    and those of the two batched products q kᵀ and weights·v, the terms that grow as n² d. The written-out attention
    is counted, since the counter does not know the fused CPU kernel."""
    attn, norm = model.blocks[0].attn, model.blocks[0].norm1
    attn.record = True
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            attn(norm(hidden))
    finally:
        attn.record, attn.recorded = False, {}
    counts = counter.get_flop_counts()["Global"]
    return float(counter.get_total_flops()), float(sum(v for op, v in counts.items() if "bmm" in str(op)))


def length_scaling(
    task: LanguageModelTask, data: TextDataModule, cfg: BenchmarkConfig, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """How cost grows with the sequence length L, on the trained model (a random hidden state of L positions, so
    that the position encoding does not limit L): in turns, the time of the first block's attention sublayer, of all
    blocks, and of one decoding step with a KV cache of L tokens; and the attention sublayer's counted FLOPs. Each
    exponent is the log-log slope over the lengths of one range of SCALING_FITS; the quadratic FLOP share is at the
    model's own context (the n² d terms over all of the sublayer's FLOPs)."""
    model, d = task.model.eval(), task.model.cfg.d_model
    generator = torch.Generator().manual_seed(0)
    hidden = {n: torch.randn(1, n, d, generator=generator) for n in SCALING_LENGTHS}
    caches = {n: model.new_cache() for n in SCALING_LENGTHS}
    with torch.no_grad():
        for n in SCALING_LENGTHS:
            model.run_blocks(hidden[n], caches[n])  # the prefix the decoding step attends to
    step = torch.randn(1, 1, d, generator=generator)

    def decode(n: int) -> None:
        model.run_blocks(step, caches[n])
        for cache in caches[n]:  # back to n tokens: every round decodes the same step
            cache.k, cache.v = cache.k[:, :, :n], cache.v[:, :, :n]

    block = model.blocks[0]
    contenders = {}
    for n in SCALING_LENGTHS:
        contenders[f"attention{n}"] = partial(lambda x: block.attn(block.norm1(x)), hidden[n])
        contenders[f"blocks{n}"] = partial(model.run_blocks, hidden[n])
        contenders[f"decode{n}"] = partial(decode, n)
    with torch.no_grad(), precision():
        seconds = {name: statistics.median(t) for name, t in alternate(contenders, cfg.repeats).items()}
    flops = {n: attention_flops(model, hidden[n])[0] for n in SCALING_LENGTHS}
    total, quadratic = attention_flops(model, torch.randn(1, model.cfg.block_size, d, generator=generator))
    exponents = {}
    for suffix, fitted in SCALING_FITS.items():
        exponents |= {
            f"bench_{what}_time_exponent{suffix}": log_log_slope(fitted, [seconds[f"{what}{n}"] for n in fitted])
            for what in SCALING_COSTS
        }
        exponents[f"bench_attention_flops_exponent{suffix}"] = log_log_slope(fitted, [flops[n] for n in fitted])
    # every length's own value too, for the report's log-log figure
    per_length = {
        f"bench_{what}_seconds_n{n}": seconds[f"{what}{n}"] for what in SCALING_COSTS for n in SCALING_LENGTHS
    }
    return (
        exponents
        | per_length
        | {f"bench_attention_flops_n{n}": flops[n] for n in SCALING_LENGTHS}
        | {"bench_attention_quadratic_flops_share": quadratic / total}
    )


BENCHMARKS = {
    "batching": batching,
    "attention_score": attention_score,
    "accumulation": accumulation,
    "decoding": decoding,
    "length_scaling": length_scaling,
}


def run_benchmark(
    task: LanguageModelTask, data: TextDataModule, cfg: BenchmarkConfig, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """The metrics of the benchmark cfg names ({} without one)."""
    return {} if cfg.name is None else BENCHMARKS[cfg.name](task, data, cfg, precision)
