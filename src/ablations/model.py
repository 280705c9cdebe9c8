"""One decoder-only Transformer whose every ablation switch is a field of `ModelConfig`.

In the spirit of nanoGPT's model.py: flat, each block readable on one screen. The fast path runs
attention through `F.scaled_dot_product_attention`; `reference_attention` is the explicit formula
that tests compare it with and that probes use to look at the attention weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("layernorm", "rmsnorm", "batchnorm")
NORM_POSITIONS = ("pre", "post")
POS_ENCODINGS = ("learned", "sinusoidal", "none")


@dataclass
class ModelConfig:
    vocab_size: int = 256
    block_size: int = 64  # context length
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_ff: int | None = None  # None: 4 * d_model
    dropout: float = 0.0
    # "sqrt_dk" divides the logits by sqrt(d_k); "none" leaves them unscaled; a number is used as is.
    attn_scale: str | float = "sqrt_dk"
    norm: str = "layernorm"
    norm_position: str = "pre"
    pos_encoding: str = "learned"
    tie_embeddings: bool = True
    bias: bool = False
    # T5's alternative to scaling: initialize W_Q with std / sqrt(d_k) (use with attn_scale="none").
    fold_scale_into_q_init: bool = False

    def __post_init__(self) -> None:
        checks = {
            f"model.n_head={self.n_head} must divide model.d_model={self.d_model}": self.n_head > 0
            and self.d_model % self.n_head == 0,
            f"model.norm={self.norm!r} must be one of {NORMS}": self.norm in NORMS,
            f"model.norm_position={self.norm_position!r} must be one of {NORM_POSITIONS}": self.norm_position
            in NORM_POSITIONS,
            f"model.pos_encoding={self.pos_encoding!r} must be one of {POS_ENCODINGS}": self.pos_encoding
            in POS_ENCODINGS,
            f"model.dropout={self.dropout} must lie in [0, 1)": 0 <= self.dropout < 1,
            f"model.n_layer={self.n_layer} and model.block_size={self.block_size} must be positive": self.n_layer > 0
            and self.block_size > 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))
        self.attention_scale()  # validates attn_scale

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    def attention_scale(self) -> float:
        if self.attn_scale == "sqrt_dk":
            return 1.0 / math.sqrt(self.d_head)
        if self.attn_scale == "none":
            return 1.0
        try:
            return float(self.attn_scale)
        except ValueError:
            raise ValueError(f"model.attn_scale={self.attn_scale!r} must be 'sqrt_dk', 'none' or a number") from None


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal softmax(q kᵀ · scale) v, written out; returns the output and the attention weights."""
    n = q.size(-2)
    logits = (q @ k.transpose(-2, -1)) * scale
    future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=q.device), diagonal=1)
    weights = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


class BatchNormOverTokens(nn.Module):
    """BatchNorm1d whose statistics pool the batch and time axes of a (B, T, C) tensor."""

    def __init__(self, d_model: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, bias=cfg.bias)
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model)
    return BatchNormOverTokens(cfg.d_model)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.scale, self.dropout = cfg.n_head, cfg.attention_scale(), cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # Probes set `record = True` to run the explicit attention and keep its logits and weights.
        self.record = False
        self.recorded: dict[str, torch.Tensor] = {}

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (B, n_head, T, d_head)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        return tuple(t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(x)
        if self.record:
            y, weights = reference_attention(q, k, v, self.scale)
            self.recorded = {"logits": (q @ k.transpose(-2, -1)) * self.scale, "weights": weights}
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.scale, dropout_p=self.dropout if self.training else 0.0
            )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.fc = nn.Linear(cfg.d_model, d_ff, bias=cfg.bias)
        self.proj = nn.Linear(d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.norm1, self.attn = make_norm(cfg), CausalSelfAttention(cfg)
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:  # x + f(norm(x)): the residual stream itself is never normalized
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))  # Post-LN, as in Vaswani et al. 2017
        return self.norm2(x + self.mlp(x))


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    position = torch.arange(n_positions).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_encoding == "learned":
            self.position_embedding = nn.Embedding(cfg.block_size, cfg.d_model)
        elif cfg.pos_encoding == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_table(cfg.block_size, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # Pre-LN leaves the residual stream unnormalized, so it needs a final norm; Post-LN already ends in one.
        self.final_norm = make_norm(cfg) if cfg.norm_position == "pre" else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.fold_scale_into_q_init:
            with torch.no_grad():
                for block in self.blocks:
                    block.attn.qkv.weight[: cfg.d_model] /= math.sqrt(cfg.d_head)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Trainable parameters, counting tied weights once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of length {T} exceeds model.block_size={self.cfg.block_size}")
        x = self.token_embedding(idx)
        if self.cfg.pos_encoding == "learned":
            x = x + self.position_embedding(torch.arange(T, device=idx.device))
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + self.position_table[:T]
        return self.dropout(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits of shape (B, T, vocab_size)."""
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))
