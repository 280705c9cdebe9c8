"""One decoder-only Transformer whose every ablation switch is a field of `ModelConfig`.

In the spirit of nanoGPT's model.py: flat, each block readable on one screen. The fast path runs
attention through `F.scaled_dot_product_attention`; `reference_attention` is the explicit formula
that tests compare it with and that probes use to look at the attention weights.

Switches with several variants are chosen by name, as litgpt resolves `mlp_class_name`: each variant is a
class (or a class with its argument) in one of the tables NORMS, MLPS, POSITIONS, BLOCKS and QKV_PROJECTIONS,
and a new variant is a class plus its entry (ARCHITECTURE.md, "A new model switch").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from rotary_embedding_torch import RotaryEmbedding
from torch import nn
from torch.nn.utils import parametrize


@dataclass
class ModelConfig:
    vocab_size: int = 256
    block_size: int = 64  # context length
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # heads of keys and values, shared by n_head / n_kv_head query heads each (GQA);
    # None: n_head (multi-head attention); 1: one key-value head for all (multi-query attention)
    d_model: int = 128
    d_ff: int | None = None  # None: the MLP's own default (4 * d_model; SwiGLU: 8/3 * d_model, as many weights)
    d_qk: int | None = None  # per-head size of queries and keys (Vaswani's d_k); None: d_model / n_head, as values
    dropout: float = 0.0
    # "sqrt_dk" divides the logits by sqrt(d_k); "none" leaves them unscaled; a number is used as is.
    attn_scale: str | float = "sqrt_dk"
    attn_score: str = "dot"  # a name in ATTENTION_SCORES: dot (q kᵀ, scaled by attn_scale) | additive (Bahdanau)
    norm: str = "layernorm"  # a name in NORMS
    norm_position: str = "pre"  # a name in BLOCKS
    pos_encoding: str = "learned"  # a name in POSITIONS
    mlp: str = "gelu"  # a name in MLPS
    qkv_projection: str = "separate"  # a name in QKV_PROJECTIONS: how q, k and v are made from the stream
    residual: bool = True  # False: each sublayer's output replaces the stream instead of adding to it
    causal: bool = True  # False: no causal mask, every position attends to every other (the future too)
    init: str = "gpt2"  # a name in INITS
    tie_embeddings: bool = True
    embedding_scale: str = "none"  # a name in EMBEDDING_SCALES: the token embeddings' multiplier (Vaswani et al. 3.4)
    embedding_rank: int | None = None  # ALBERT's factorized embedding: vocab x rank, then rank -> d_model
    embedding_buckets: int | None = None  # the hashing trick: token ids share this many embedding rows
    # Which random hash of the ids into the buckets; None: drawn with the weights at initialization (the run's seed)
    embedding_hash_seed: int | None = None
    bias: bool = False
    # T5's alternative to scaling: initialize W_Q with std / sqrt(d_k) (use with attn_scale="none").
    fold_scale_into_q_init: bool = False

    def __post_init__(self) -> None:
        checks = {
            f"model.n_head={self.n_head} must divide model.d_model={self.d_model}": self.n_head > 0
            and self.d_model % self.n_head == 0,
            **{
                f"model.{field}={getattr(self, field)!r} must be one of {tuple(table)}": getattr(self, field) in table
                for field, table in VARIANTS.items()
            },
            f"model.dropout={self.dropout} must lie in [0, 1)": 0 <= self.dropout < 1,
            f"model.n_layer={self.n_layer} and model.block_size={self.block_size} must be positive": self.n_layer > 0
            and self.block_size > 0,
            "model.fold_scale_into_q_init needs a W_Q: model.qkv_projection=separate or split": (
                not self.fold_scale_into_q_init or self.qkv_projection in ("separate", "split")
            ),
            "model.attn_scale scales dot-product scores only: leave it sqrt_dk with model.attn_score=additive": (
                self.attn_score == "dot" or self.attn_scale == "sqrt_dk"
            ),
            f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head} (separate or split W_K, W_V)": (
                self.n_kv_head is None
                or (
                    self.n_kv_head > 0
                    and self.n_head % self.n_kv_head == 0
                    and self.qkv_projection in ("separate", "split")
                )
            ),
            f"model.d_qk={self.d_qk} must be positive, with projections that make q and k": self.d_qk is None
            or (self.d_qk > 0 and self.qkv_projection != "none"),
            f"model.embedding_rank={self.embedding_rank} must lie in [1, d_model]": self.embedding_rank is None
            or 1 <= self.embedding_rank <= self.d_model,
            f"model.embedding_buckets={self.embedding_buckets} must lie in [1, vocab_size]": self.embedding_buckets
            is None
            or 1 <= self.embedding_buckets <= self.vocab_size,
            "model.embedding_buckets needs model.tie_embeddings=false: tokens sharing a row would share their logits": (
                self.embedding_buckets is None or not self.tie_embeddings
            ),
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))
        self.attention_scale()  # validates attn_scale

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @property
    def qk_head(self) -> int:
        """The per-head size of queries and keys: d_k, which the scores' 1/sqrt(d_k) scaling divides by."""
        return self.d_qk or self.d_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def attention_scale(self) -> float:
        if self.attn_scale == "sqrt_dk":
            return 1.0 / math.sqrt(self.qk_head)
        if self.attn_scale == "none":
            return 1.0
        try:
            return float(self.attn_scale)
        except ValueError:
            raise ValueError(f"model.attn_scale={self.attn_scale!r} must be 'sqrt_dk', 'none' or a number") from None


def causal_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Attention weights from (..., T, T) logits: each query over itself and the keys before it."""
    n = logits.size(-1)
    future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=logits.device), diagonal=1)
    return logits.masked_fill(future, float("-inf")).softmax(dim=-1)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal softmax(q kᵀ · scale) v, written out; returns the output and the attention weights."""
    weights = causal_softmax((q @ k.transpose(-2, -1)) * scale)
    return weights @ v, weights


def additive_scores(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Bahdanau et al. 2015's additive scores per head h, wₕᵀ tanh(qᵢ + kⱼ), with q and k already projected
    (W_Q x and W_K x play their W_a s and U_a h); (B, H, T, T). It materializes a (B, H, T, T, d_head) tensor."""
    return torch.einsum("bhijd,hd->bhij", torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3)), w)


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi's head slopes (Press et al. 2022, sec. 3): the geometric sequence 2^(-8/n), 2^(-16/n), ...; for a head
    count that is not a power of 2, the closest power's slopes and every other slope of twice that count."""
    closest = 2 ** math.floor(math.log2(n_head))
    slopes = [2 ** (-8 * (i + 1) / closest) for i in range(closest)]
    return slopes if closest == n_head else slopes + alibi_slopes(2 * closest)[0::2][: n_head - closest]


def alibi_bias(slopes: torch.Tensor, n: int) -> torch.Tensor:
    """(H, n, n) logit biases -m_h (i - j): a penalty linear in the distance from query i back to key j."""
    distance = torch.arange(n, device=slopes.device)
    return slopes[:, None, None] * (distance[None, :] - distance[:, None])


class BatchNormOverTokens(nn.Module):
    """BatchNorm1d whose statistics pool the batch and time axes of a (B, T, C) tensor."""

    def __init__(self, d_model: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


NORMS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "layernorm": lambda cfg: nn.LayerNorm(cfg.d_model, bias=cfg.bias),
    "rmsnorm": lambda cfg: nn.RMSNorm(cfg.d_model),
    "batchnorm": lambda cfg: BatchNormOverTokens(cfg.d_model),
}


def make_norm(cfg: ModelConfig) -> nn.Module:
    return NORMS[cfg.norm](cfg)


# How many d_model-row blocks the fused projection holds: W_Q, W_K, W_V; one W_Q = W_K and W_V (the scores
# q kᵀ become symmetric); or none at all, q = k = v = the stream itself (handbook line 1064). "split" computes
# what "separate" does with W_Q, W_K, W_V as three modules (split.query, split.key, split.value) that an adapter
# can target one by one (LoRA on W_Q and W_V only, E17).
QKV_PROJECTIONS: dict[str, int] = {"separate": 3, "shared_qk": 2, "none": 0, "split": 3}
ATTENTION_SCORES = ("dot", "additive")
# Position encodings that act inside attention, on q and k (RoPE, Su et al. 2021) or on the logits (ALiBi).
RELATIVE_POSITIONS = ("rope", "alibi")
SPLIT = ("query", "key", "value")  # the modules of qkv_projection="split" (W_Q, W_K, W_V)


@dataclass
class KVCache:
    """One layer's keys and values of the tokens so far, each (B, n_kv_head, T, d_head): what decoding keeps so
    that a new token attends to the past without recomputing it."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.scale, self.dropout, self.causal = cfg.n_head, cfg.attention_scale(), cfg.dropout, cfg.causal
        self.n_kv_head = cfg.kv_heads
        parts, qk, kv = QKV_PROJECTIONS[cfg.qkv_projection], cfg.qk_head, cfg.kv_heads
        # W_Q, W_K, W_V in one matrix (fused_sizes: an initialization by fan treats them apart); W_K and W_V of
        # n_kv_head heads under GQA; queries and keys of d_qk per head
        self.head_sizes = (qk, qk, cfg.d_head)
        self.fused_sizes = {
            3: [cfg.n_head * qk, kv * qk, kv * cfg.d_head],
            2: [cfg.n_head * qk, cfg.d_model],
            0: [],
        }[parts]
        fused = parts and cfg.qkv_projection != "split"
        self.qkv = nn.Linear(cfg.d_model, sum(self.fused_sizes), bias=cfg.bias) if fused else None
        if self.qkv is not None:
            self.qkv.fused_sizes = self.fused_sizes
        self.split = None
        if cfg.qkv_projection == "split":
            linears = [nn.Linear(cfg.d_model, rows, bias=cfg.bias) for rows in self.fused_sizes]
            self.split = nn.ModuleDict(zip(SPLIT, linears, strict=True))
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # additive scores: one vector w per head, N(0, 0.02) as every other weight (no fused kernel runs them)
        # RoPE from rotary-embedding-torch (its frequencies are a fixed, untrained parameter: not counted)
        self.rotary = RotaryEmbedding(qk) if cfg.pos_encoding == "rope" else None
        slopes = torch.tensor(alibi_slopes(cfg.n_head)) if cfg.pos_encoding == "alibi" else None
        self.register_buffer("alibi_slopes", slopes, persistent=False)
        additive = cfg.attn_score == "additive"
        self.additive = nn.Parameter(0.02 * torch.randn(cfg.n_head, qk)) if additive else None
        # Probes set `record = True` to run the explicit attention and keep its logits and weights.
        self.record = False
        self.recorded: dict[str, torch.Tensor] = {}

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (B, T, C)."""
        if self.split is not None:
            return tuple(self.split[name](x) for name in SPLIT)
        if self.qkv is None:
            return x, x, x
        parts = self.qkv(x).split(self.fused_sizes, dim=2)
        return parts if len(parts) == 3 else (parts[0], parts[0], parts[1])

    def query_key_rows(self) -> list[tuple[nn.Parameter, slice]]:
        """W_Q and W_K, each as the parameter that holds it and its rows there: one matrix when W_Q = W_K, none
        without projections."""
        if self.split is not None:
            return [(self.split[name].weight, slice(None)) for name in SPLIT[:2]]
        if self.qkv is None:
            return []
        starts = [0, *itertools.accumulate(self.fused_sizes[:-1])]
        return [(self.qkv.weight, slice(a, b)) for a, b in itertools.pairwise(starts)]

    def heads(self, x: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q of shape (B, n_head, T, d_qk), k of shape (B, n_kv_head, T, d_qk) and v of shape (B, n_kv_head, T,
        d_head), at positions offset.."""
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, -1, d).transpose(1, 2) for t, d in zip(self.project(x), self.head_sizes, strict=True))
        if self.rotary is not None:
            q = self.rotary.rotate_queries_or_keys(q, offset=offset)
            k = self.rotary.rotate_queries_or_keys(k, offset=offset)
        return q, k, v

    def shared_kv(self, t: torch.Tensor) -> torch.Tensor:
        """Keys or values repeated for the query heads that share them (GQA), for the written-out attention."""
        groups = self.n_head // self.n_kv_head
        return t if groups == 1 else t.repeat_interleave(groups, dim=1)

    def causal_mask(self, n: int) -> dict[str, torch.Tensor | bool]:
        """The fused kernel's mask arguments: its own causal mask (or none), or ALiBi's biases with the future at
        -inf (or not)."""
        if self.alibi_slopes is None:
            return {"is_causal": self.causal}
        future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=self.alibi_slopes.device), diagonal=1)
        bias = alibi_bias(self.alibi_slopes, n)
        return {"attn_mask": bias.masked_fill(future, float("-inf")) if self.causal else bias}

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The attention logits, (B, H, T, T)."""
        logits = (
            additive_scores(q, k, self.additive)
            if self.additive is not None
            else (q @ k.transpose(-2, -1)) * self.scale
        )
        return logits if self.alibi_slopes is None else logits + alibi_bias(self.alibi_slopes, q.size(-2))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        if cache is not None:
            return self.proj(self.cached_attention(x, cache).transpose(1, 2).reshape(B, T, C))
        q, k, v = self.heads(x)
        if self.record or self.additive is not None:  # written out: kept for probes, or no fused kernel
            k, v = self.shared_kv(k), self.shared_kv(v)
            logits = self.scores(q, k)
            weights = causal_softmax(logits) if self.causal else logits.softmax(dim=-1)
            if self.record:
                self.recorded = {"logits": logits, "weights": weights}
            elif self.training and self.dropout:
                weights = F.dropout(weights, self.dropout)
            y = weights @ v
        else:
            dropout, gqa = self.dropout if self.training else 0.0, self.n_kv_head < self.n_head
            y = F.scaled_dot_product_attention(
                q, k, v, scale=self.scale, dropout_p=dropout, enable_gqa=gqa, **self.causal_mask(T)
            )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))

    def cached_attention(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Attention of new tokens over the cached keys and values and their own, appending theirs to the cache:
        the whole prompt at once (causal), then one token at a time (it sees everything before it)."""
        if self.additive is not None or self.alibi_slopes is not None or self.record or not self.causal:
            raise ValueError("the KV cache serves causal dot-product attention without ALiBi and without probes")
        past, T = cache.length, x.size(1)
        if past and T != 1:
            raise ValueError("with a filled KV cache, decode one token at a time")
        q, k, v = self.heads(x, offset=past)
        k, v = cache.append(k, v)
        return F.scaled_dot_product_attention(
            q, k, v, scale=self.scale, is_causal=not past, enable_gqa=self.n_kv_head < self.n_head
        )


class FeedForward(nn.Module):
    """Two linear maps around an activation: proj(act(fc(x))); GPT-2's with GELU, Vaswani et al.'s with ReLU."""

    def __init__(self, cfg: ModelConfig, activation: Callable[[torch.Tensor], torch.Tensor] = F.gelu):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.activation = activation
        self.fc = nn.Linear(cfg.d_model, d_ff, bias=cfg.bias)
        self.proj = nn.Linear(d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.activation(self.fc(x))))


class LUFactors(nn.Module):
    """A parametrization that stores a weight W as its LU factors, W = P L U (torch.linalg.lu): the strictly
    lower entries of the unit-diagonal L and the upper entries of U, packed, with the permutation P fixed. It
    makes countable the handbook's claim that an LU decomposition of the FFN's matrices saves parameters (E12)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        m, n = weight.shape
        k = min(m, n)
        self.lower_shape, self.upper_shape = (m, k), (k, n)
        self.register_buffer("permutation", torch.linalg.lu(weight)[0])
        self.register_buffer("lower_index", torch.tril_indices(m, k, offset=-1))
        self.register_buffer("upper_index", torch.triu_indices(k, n))

    def forward(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        L = torch.eye(*self.lower_shape, dtype=lower.dtype, device=lower.device)
        L = L.index_put(tuple(self.lower_index), lower)
        U = upper.new_zeros(self.upper_shape).index_put(tuple(self.upper_index), upper)
        return self.permutation @ L @ U

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, L, U = torch.linalg.lu(weight)
        return L[tuple(self.lower_index)], U[tuple(self.upper_index)]


class LUFeedForward(FeedForward):
    """The GELU FFN with each matrix stored as its LU factors once initialized (`GPT` calls `store_as_lu`)."""

    def store_as_lu(self) -> None:
        for linear in (self.fc, self.proj):
            parametrize.register_parametrization(linear, "weight", LUFactors(linear.weight.detach()), unsafe=True)
            factors = linear.parametrizations.weight
            for factor in (factors.original0, factors.original1):
                factor.matrix_entries = True  # packed into a vector, still matrix entries: weight decay applies


class SwiGLUMLP(nn.Module):
    """Shazeer 2020: proj(silu(gate(x)) * up(x)); d_ff 8/3 d_model keeps the weights of a 4 d_model FeedForward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.d_ff = cfg.d_ff or 8 * cfg.d_model // 3
        self.fc = nn.Linear(cfg.d_model, 2 * self.d_ff, bias=cfg.bias)  # gate and up in one matrix
        self.fc.fused_sizes = [self.d_ff, self.d_ff]
        self.proj = nn.Linear(self.d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc(x).split(self.d_ff, dim=-1)
        return self.dropout(self.proj(F.silu(gate) * up))


class NoFeedForward(nn.Module):
    """No FFN sublayer: the block is attention only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


MLPS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "gelu": FeedForward,
    "relu": partial(FeedForward, activation=F.relu),
    "swiglu": SwiGLUMLP,
    "gelu_lu": LUFeedForward,
    "none": NoFeedForward,
}


class PreNormBlock(nn.Module):
    """x + f(norm(x)): the residual stream itself is never normalized (GPT-2), so the model ends in a norm."""

    final_norm = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.attn = make_norm(cfg), CausalSelfAttention(cfg)
        self.norm2, self.mlp = make_norm(cfg), MLPS[cfg.mlp](cfg)
        self.residual = cfg.residual

    def add(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """The residual connection, or without one the sublayer's output alone (E11)."""
        return x + update if self.residual else update

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = self.add(x, self.attn(self.norm1(x), cache))
        return self.add(x, self.mlp(self.norm2(x)))


class PostNormBlock(PreNormBlock):
    """norm(x + f(x)), as in Vaswani et al. 2017: the stream is normalized after every sublayer already."""

    final_norm = False

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = self.norm1(self.add(x, self.attn(x, cache)))
        return self.norm2(self.add(x, self.mlp(x)))


BLOCKS: dict[str, type[nn.Module]] = {"pre": PreNormBlock, "post": PostNormBlock}


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    position = torch.arange(n_positions).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class LearnedPositions(nn.Module):
    """A trained vector per position (GPT-2): none exists past model.block_size."""

    extrapolates = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.block_size, cfg.d_model)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return x + self.embedding(torch.arange(offset, offset + x.size(1), device=x.device))


class SinusoidalPositions(nn.Module):
    """The fixed sines and cosines of Vaswani et al. 2017."""

    extrapolates = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(cfg.block_size, cfg.d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        end = offset + x.size(1)
        table = self.table if end <= len(self.table) else sinusoidal_table(end, x.size(2)).to(x.device)  # longer
        return x + table[offset:end]


class NoPositions(nn.Module):
    """No position signal added to the embeddings: none at all (only the causal mask tells positions apart), or
    RoPE and ALiBi, which act inside attention (CausalSelfAttention)."""

    extrapolates = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return x


POSITIONS: dict[str, type[nn.Module]] = {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "none": NoPositions,
    **dict.fromkeys(RELATIVE_POSITIONS, NoPositions),
}


def gpt2_init(model: nn.Module, cfg: ModelConfig) -> None:
    """GPT-2: every weight N(0, 0.02), biases 0, the residual projections N(0, 0.02 / sqrt(2 n_layer))."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():  # scaled by depth: the residual stream's variance stays O(1)
        if name.endswith("proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))


def xavier_init(model: nn.Module, cfg: ModelConfig) -> None:
    """Xavier-uniform (Glorot and Bengio 2010) for every Linear, each fused matrix by its parts (W_Q, W_K, W_V);
    no depth scaling: the initialization Xiong et al. 2020 analyse Post-LN under. Embeddings as GPT-2's."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.Linear) and module.weight is not model.token_embedding.weight:
                for part in module.weight.split(getattr(module, "fused_sizes", [module.out_features])):
                    nn.init.xavier_uniform_(part)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


INITS: dict[str, Callable[[nn.Module, ModelConfig], None]] = {"gpt2": gpt2_init, "xavier": xavier_init}
# "In the embedding layers, we multiply those weights by sqrt(d_model)" (Vaswani et al. 2017, 3.4).
EMBEDDING_SCALES: dict[str, Callable[[ModelConfig], float]] = {
    "none": lambda cfg: 1.0,
    "sqrt_d_model": lambda cfg: math.sqrt(cfg.d_model),
}
VARIANTS = {
    "norm": NORMS,
    "norm_position": BLOCKS,
    "pos_encoding": POSITIONS,
    "mlp": MLPS,
    "init": INITS,
    "qkv_projection": QKV_PROJECTIONS,
    "embedding_scale": EMBEDDING_SCALES,
    "attn_score": ATTENTION_SCORES,
}


def hashed_buckets(vocab_size: int, buckets: int, seed: int | None = 0) -> torch.Tensor:
    """The bucket of every token id under a hash drawn at random from all functions of the ids into the buckets, the
    ideal that the hashing trick's analysis assumes (Weinberger et al. 2009): ids collide independently, so about
    buckets (1 - 1/buckets)^vocab rows stay empty. A fixed (a id + b) mod p mod buckets, with sequential ids, is
    far from it: with p = 2^31 - 1 and 1,024 buckets it left 181 of 1,024 rows empty for 4,096 ids, not about 19."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)  # None: torch's seeded global one
    return torch.randint(buckets, (vocab_size,), generator=generator, dtype=torch.int64)


def count_learned(module: nn.Module) -> int:
    """The module's parameters, shared ones once, without RoPE's frequencies (fixed by construction)."""
    fixed = {id(p) for m in module.modules() if isinstance(m, RotaryEmbedding) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in fixed)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.embedding_rank or cfg.d_model
        self.token_embedding = nn.Embedding(cfg.embedding_buckets or cfg.vocab_size, width)
        buckets = (
            hashed_buckets(cfg.vocab_size, cfg.embedding_buckets, cfg.embedding_hash_seed)
            if cfg.embedding_buckets
            else None
        )
        self.register_buffer("bucket_of", buckets, persistent=False)
        # ALBERT: rank -> d_model after the lookup; tied, the output layer maps d_model -> rank -> vocabulary
        factored, tied = cfg.embedding_rank is not None, cfg.tie_embeddings
        self.embedding_up = nn.Linear(width, cfg.d_model, bias=False) if factored else None
        self.embedding_down = nn.Linear(cfg.d_model, width, bias=False) if factored and tied else None
        self.embedding_multiplier = EMBEDDING_SCALES[cfg.embedding_scale](cfg)
        self.positions = POSITIONS[cfg.pos_encoding](cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(BLOCKS[cfg.norm_position](cfg) for _ in range(cfg.n_layer))
        self.final_norm = make_norm(cfg) if BLOCKS[cfg.norm_position].final_norm else nn.Identity()
        self.lm_head = nn.Linear(width if self.embedding_down is not None else cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        INITS[cfg.init](self, cfg)
        for module in self.modules():  # factored from the initialized weights: their distribution is the init's
            if isinstance(module, LUFeedForward):
                module.store_as_lu()
        if cfg.fold_scale_into_q_init:
            with torch.no_grad():
                for block in self.blocks:
                    weight, rows = block.attn.query_key_rows()[0]
                    weight[rows] /= math.sqrt(cfg.qk_head)

    def num_params(self) -> int:
        """Parameters, counting tied weights once; frozen weights and adapters too (ablations.adaptation counts the
        trainable ones), but not RoPE's frequencies, fixed by construction."""
        return count_learned(self)

    def num_non_embedding_params(self) -> int:
        """The parameters of the blocks and the final norm: Kaplan et al.'s N, without the token and position
        embeddings and the output layer (a size that does not grow with the vocabulary)."""
        return count_learned(self.blocks) + count_learned(self.final_norm)

    def embed(self, idx: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Token embeddings with the position signal of positions offset, offset + 1, ... (offset: tokens before)."""
        T = offset + idx.size(1)
        if T > self.cfg.block_size and not self.positions.extrapolates:
            raise ValueError(f"sequence of length {T} exceeds model.block_size={self.cfg.block_size}")
        tokens = self.token_embedding(idx if self.bucket_of is None else self.bucket_of[idx])
        if self.embedding_up is not None:
            tokens = self.embedding_up(tokens)
        return self.dropout(self.positions(tokens * self.embedding_multiplier, offset))

    def embedding_shared_fraction(self) -> float:
        """The share of the vocabulary whose embedding row holds other tokens too (0 without hashing)."""
        if self.bucket_of is None:
            return 0.0
        per_row = torch.bincount(self.bucket_of, minlength=self.token_embedding.num_embeddings)
        return (per_row[self.bucket_of] > 1).float().mean().item()

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache, one per layer, for `forward(idx, cache)` while decoding."""
        return [KVCache() for _ in self.blocks]

    def run_blocks(self, x: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """The residual stream x of shape (B, T, d_model) through every block (with each layer's cache, if any)."""
        for block, layer_cache in zip(self.blocks, cache or [None] * len(self.blocks), strict=True):
            x = block(x, layer_cache)
        return x

    def forward(self, idx: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """Next-token logits of shape (B, T, vocab_size); with a cache, of idx after the tokens it holds."""
        x = self.run_blocks(self.embed(idx, offset=cache[0].length if cache else 0), cache)
        x = self.final_norm(x)
        return self.lm_head(x if self.embedding_down is None else self.embedding_down(x))
