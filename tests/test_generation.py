"""Decoding (ablations.generation) and the KV cache and key-value heads it relies on (ablations.model)."""

import itertools

import pytest
import torch

from ablations.generation import DecodingConfig, generate, loop_fraction, repetition_metrics
from ablations.model import GPT, ModelConfig


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = {"vocab_size": 50, "block_size": 32, "n_layer": 2, "n_head": 4, "d_model": 32} | overrides
    model = GPT(ModelConfig(**cfg))
    with torch.no_grad():  # sharper than at init, so that greedy paths depend on every logit
        for p in model.parameters():
            p.mul_(8 if p.dim() >= 2 else 1)
    return model


CACHED = [{}, {"n_kv_head": 2}, {"n_kv_head": 1}, {"pos_encoding": "rope"}, {"pos_encoding": "sinusoidal"},
          {"pos_encoding": "none"}, {"norm_position": "post"}]  # fmt: skip


@pytest.mark.parametrize("overrides", CACHED, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_decoding_with_the_kv_cache_gives_the_tokens_of_decoding_without_it(overrides):
    model, prompt = tiny(**overrides), torch.randint(50, (3, 5), generator=torch.Generator().manual_seed(1))
    for cfg in (DecodingConfig("greedy", 20), DecodingConfig("sample", 20, temperature=0.8, top_k=10, top_p=0.9)):
        cached = generate(model, prompt, cfg, use_cache=True, generator=torch.Generator().manual_seed(2))
        recomputed = generate(model, prompt, cfg, use_cache=False, generator=torch.Generator().manual_seed(2))
        assert torch.equal(cached, recomputed)
        assert torch.equal(cached[:, :5], prompt) and cached.shape == (3, 25)


def test_the_cached_logits_equal_the_full_forwards():
    model, x = tiny(n_kv_head=2), torch.randint(50, (2, 12))
    cache = model.new_cache()
    steps = [model(x[:, :6], cache)] + [model(x[:, i : i + 1], cache) for i in range(6, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(x), atol=1e-5, rtol=1e-5)


def test_key_value_heads_shrink_the_cache_and_the_projection_by_n_head_over_n_kv_head():
    """Shazeer 2019 (MQA), Ainslie et al. 2023 (GQA): the cache holds 2 x layers x n_kv_head x d_head per token."""
    x = torch.randint(50, (1, 10))
    for kv_heads in (4, 2, 1):
        model = tiny(n_kv_head=kv_heads)
        cache = model.new_cache()
        model(x, cache)
        assert sum(c.nbytes for c in cache) == 2 * 2 * kv_heads * 8 * 10 * 4  # k and v, 2 layers, float32
        assert model.blocks[0].attn.qkv.weight.shape == (32 + 2 * kv_heads * 8, 32)


def test_grouped_heads_written_out_equal_the_fused_kernel():
    model = tiny(n_kv_head=2).eval()
    x = torch.randint(50, (2, 16))
    fused = model(x)
    for block in model.blocks:
        block.attn.record = True
    torch.testing.assert_close(model(x), fused, atol=1e-5, rtol=1e-5)


def test_a_repetition_penalty_lowers_what_was_already_said_and_bad_settings_are_refused():
    model, prompt = tiny(), torch.randint(50, (4, 5), generator=torch.Generator().manual_seed(3))
    plain = generate(model, prompt, DecodingConfig("greedy", 25))
    penalized = generate(model, prompt, DecodingConfig("greedy", 25, repetition_penalty=5.0))

    def distinct(tokens):
        return sum(len(set(row.tolist())) for row in tokens[:, 5:])

    assert distinct(penalized) > distinct(plain)
    for bad in ({"rule": "nucleus"}, {"beams": 0}, {"top_p": 1.5}, {"temperature": 0.0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            DecodingConfig(**bad)
    with pytest.raises(ValueError, match="KV cache serves"):
        generate(tiny(pos_encoding="alibi"), prompt, DecodingConfig("greedy", 2))


def test_beam_search_finds_the_most_likely_continuation_that_brute_force_finds():
    """With beams >= vocab^(steps - 1) the search is exhaustive; with one beam it is greedy decoding."""
    model = tiny(vocab_size=5, block_size=8)
    prompt = torch.tensor([[1, 3], [4, 0]])
    found = generate(model, prompt, DecodingConfig("beam", 3, beams=25))
    for row, best in zip(prompt, found, strict=True):
        candidates = torch.tensor([row.tolist() + list(c) for c in itertools.product(range(5), repeat=3)])
        with torch.no_grad():
            log_probs = model(candidates[:, :-1]).log_softmax(-1).gather(-1, candidates[:, 1:, None])[..., 0]
        assert torch.equal(best, candidates[log_probs[:, 1:].sum(-1).argmax()])
    assert torch.equal(generate(model, prompt, DecodingConfig("beam", 3, beams=1)),
                       generate(model, prompt, DecodingConfig("greedy", 3)))  # fmt: skip


def test_repetition_metrics_by_hand():
    assert loop_fraction([1, 2, 3, 4, 5, 6]) == 0
    assert loop_fraction([9, 8, 1, 2, 1, 2, 1, 2]) == 6 / 8  # "1 2" three times: the last 6 of 8 tokens
    assert loop_fraction([7] * 5) == 1
    metrics = repetition_metrics(torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8]]))
    assert metrics["gen_repeated_4gram_fraction"] == pytest.approx((1 / 5 + 0) / 2)  # (1,2,3,4) again, 1 of 5
    assert metrics["gen_distinct_2"] == pytest.approx((4 / 7 + 1) / 2)
