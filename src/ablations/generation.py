"""Autoregressive decoding from a trained model, with or without a KV cache (the same tokens either way).

The sampling rules are Hugging Face transformers' logits processors, applied to plain logits tensors in the
order `generate` uses them: repetition penalty (Keskar et al. 2019), temperature, top-k, top-p (Holtzman et al.
2020). Greedy decoding takes the most likely token after the penalty; sampling draws from the processed
distribution with the caller's generator, so a seed fixes the continuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ablations.model import GPT

RULES = ("greedy", "sample")


@dataclass(frozen=True)
class DecodingConfig:
    rule: str = "greedy"  # a name in RULES
    max_new_tokens: int = 64
    temperature: float = 1.0  # sample only
    top_k: int | None = None  # sample only: keep the k most likely tokens
    top_p: float | None = None  # sample only: keep the smallest set of tokens whose probability reaches p
    repetition_penalty: float = 1.0  # > 1 lowers the logits of tokens already in the sequence (both rules)

    def __post_init__(self) -> None:
        checks = {
            f"decoding rule {self.rule!r} must be one of {RULES}": self.rule in RULES,
            f"max_new_tokens={self.max_new_tokens} must be positive": self.max_new_tokens > 0,
            f"temperature={self.temperature} must be positive": self.temperature > 0,
            f"top_k={self.top_k} must be positive": self.top_k is None or self.top_k > 0,
            f"top_p={self.top_p} must lie in (0, 1]": self.top_p is None or 0 < self.top_p <= 1,
            f"repetition_penalty={self.repetition_penalty} must be positive": self.repetition_penalty > 0,
        }
        if failed := [message for message, ok in checks.items() if not ok]:
            raise ValueError("; ".join(failed))

    def processors(self) -> LogitsProcessorList:
        chosen = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            chosen.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.rule == "sample":
            if self.temperature != 1.0:
                chosen.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k is not None:
                chosen.append(TopKLogitsWarper(self.top_k))
            if self.top_p is not None:
                chosen.append(TopPLogitsWarper(self.top_p))
        return chosen


@torch.no_grad()
def generate(
    model: GPT,
    prompt: torch.Tensor,
    cfg: DecodingConfig,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The prompt (B, T) followed by cfg.max_new_tokens tokens of each row. With the cache the prompt runs once and
    every new token alone; without it the whole sequence runs again at every step."""
    model.eval()
    processors, tokens, step_input = cfg.processors(), prompt, prompt
    cache = model.new_cache() if use_cache else None
    for _ in range(cfg.max_new_tokens):
        logits = (model(step_input, cache) if cache is not None else model(tokens))[:, -1, :]
        scores = processors(tokens, logits.float())
        if cfg.rule == "greedy":
            chosen = scores.argmax(dim=-1, keepdim=True)
        else:
            chosen = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)
        tokens = torch.cat([tokens, chosen], dim=1)
        step_input = chosen
    return tokens
