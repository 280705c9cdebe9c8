"""Autoregressive decoding from a trained model, with or without a KV cache (the same tokens either way).

The sampling rules are Hugging Face transformers' logits processors, applied to plain logits tensors in the
order `generate` uses them: repetition penalty (Keskar et al. 2019), temperature, top-k, top-p (Holtzman et al.
2020). Greedy decoding takes the most likely token after the penalty; sampling draws from the processed
distribution with the caller's generator, so a seed fixes the continuation. Beam search keeps the `beams` most
likely continuations (sum of log-probabilities) at every step and returns the best; without an end token every
beam has the same length, so no length normalization is needed.
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

RULES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class DecodingConfig:
    rule: str = "greedy"  # a name in RULES
    max_new_tokens: int = 64
    temperature: float = 1.0  # sample only
    top_k: int | None = None  # sample only: keep the k most likely tokens
    top_p: float | None = None  # sample only: keep the smallest set of tokens whose probability reaches p
    repetition_penalty: float = 1.0  # > 1 lowers the logits of tokens already in the sequence (every rule)
    beams: int = 1  # beam only: continuations kept at every step

    def __post_init__(self) -> None:
        checks = {
            f"decoding rule {self.rule!r} must be one of {RULES}": self.rule in RULES,
            f"max_new_tokens={self.max_new_tokens} must be positive": self.max_new_tokens > 0,
            f"temperature={self.temperature} must be positive": self.temperature > 0,
            f"top_k={self.top_k} must be positive": self.top_k is None or self.top_k > 0,
            f"top_p={self.top_p} must lie in (0, 1]": self.top_p is None or 0 < self.top_p <= 1,
            f"repetition_penalty={self.repetition_penalty} must be positive": self.repetition_penalty > 0,
            f"beams={self.beams} must be positive": self.beams > 0,
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
    if cfg.rule == "beam":
        return beam_search(model, prompt, cfg)
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


@torch.no_grad()
def beam_search(model: GPT, prompt: torch.Tensor, cfg: DecodingConfig) -> torch.Tensor:
    """The most likely continuation of each prompt row that a beam of cfg.beams finds, with cfg.repetition_penalty
    applied to the scores (recomputed from the whole sequence at every step: no cache)."""
    processors = cfg.processors()
    rows = []
    for row in prompt:
        beams, scores = row[None, :], torch.zeros(1)
        for _ in range(cfg.max_new_tokens):
            logits = processors(beams, model(beams)[:, -1, :].float())
            candidates = (scores[:, None] + logits.log_softmax(dim=-1)).flatten()
            scores, chosen = candidates.topk(min(cfg.beams, candidates.numel()))
            vocab = logits.size(-1)
            beams = torch.cat([beams[chosen // vocab], (chosen % vocab)[:, None]], dim=1)
        rows.append(beams[0])  # topk sorts: the first is the best
    return torch.stack(rows)


def loop_fraction(tokens: list[int], max_period: int = 16) -> float:
    """The share of a sequence covered by its longest tail that repeats one unit of at most max_period tokens at
    least twice (0 when the tail does not repeat): how much of a continuation is a loop."""
    longest = 0
    for period in range(1, max_period + 1):
        length = period
        while length < len(tokens) and tokens[-1 - length] == tokens[-1 - length + period]:
            length += 1
        if length >= 2 * period:
            longest = max(longest, length)
    return longest / len(tokens)


def repetition_metrics(continuations: torch.Tensor, n: int = 4) -> dict[str, float]:
    """Repetition in generated continuations (B, T), averaged over rows: the share of n-grams that occurred earlier
    in the same row, distinct bigrams over bigrams (distinct-2, Li et al. 2016), and the looped share of the tail."""
    repeated, distinct, looped = [], [], []
    for row in continuations.tolist():
        grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
        seen: set[tuple[int, ...]] = set()
        again = 0
        for gram in grams:
            again += gram in seen
            seen.add(gram)
        repeated.append(again / max(1, len(grams)))
        bigrams = list(zip(row, row[1:], strict=False))
        distinct.append(len(set(bigrams)) / max(1, len(bigrams)))
        looped.append(loop_fraction(row))
    count = len(repeated)
    return {
        f"gen_repeated_{n}gram_fraction": sum(repeated) / count,
        "gen_distinct_2": sum(distinct) / count,
        "gen_loop_fraction": sum(looped) / count,
    }


@torch.no_grad()
def continuation_nll(model: GPT, sequences: torch.Tensor, prompt_length: int) -> float:
    """The model's own mean negative log-likelihood of the generated tokens (after the prompt) of `sequences`."""
    logits = model(sequences[:, :-1]).float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), sequences[:, 1:], reduction="none")
    return nll[:, prompt_length - 1 :].mean().item()


def decoding_metrics(model: GPT, prompts: torch.Tensor, cfg: DecodingConfig, seed: int) -> dict[str, float]:
    """Continue every prompt by cfg (sampling seeded by `seed`) and measure the continuations' repetition and the
    model's own NLL of them."""
    generator = torch.Generator().manual_seed(seed)
    sequences = generate(model, prompts, cfg, generator=generator)
    prompt_length = prompts.size(1)
    return repetition_metrics(sequences[:, prompt_length:]) | {
        "gen_self_nll": continuation_nll(model, sequences, prompt_length)
    }
