"""The version of the numbers: the code part of every run key.

Bump it (and regenerate tests/fixtures/golden.json with `make golden`) whenever a change alters a number that a
run computes; tests/test_numerics.py fails until you do. Everything else (refactors, comments, new switches that
default to off, reports) leaves it alone, and so leaves every committed run reusable.

A new setting is part of every run's resolved config, so it would change every run's key even while it is off.
Each setting added after the store's first runs is therefore listed in ADDED_SETTINGS with the switch that turns
it on and that switch's off value (the behaviour before the setting existed): while the switch has that value,
the setting stays out of the key (ablations.run.arm_run_key).
"""

NUMERICS_VERSION = "1"

# config path of the setting -> (the switch that turns it on, the switch's off value)
ADDED_SETTINGS = {
    "data.count_epochs_as": ("data.count_epochs_as", None),
    "benchmark": ("benchmark.name", None),
    "model.qkv_projection": ("model.qkv_projection", "separate"),
    "model.residual": ("model.residual", True),
    "model.embedding_scale": ("model.embedding_scale", "none"),
    "model.attn_score": ("model.attn_score", "dot"),
    "evaluation.context_factors": ("evaluation.context_factors", []),
    "evaluation.train_split": ("evaluation.train_split", False),
    "evaluation.decoding": ("evaluation.decoding.rule", None),
    "data.train_tokens_limit": ("data.train_tokens_limit", None),
    "data.bpe_vocab_size": ("data.bpe_vocab_size", None),
    "model.embedding_rank": ("model.embedding_rank", None),
    "model.embedding_buckets": ("model.embedding_buckets", None),
    # With buckets, the key names the random hash (2026-12-03): keys of the former fixed hash's runs (none were
    # committed) can no longer match.
    "model.embedding_hash_seed": ("model.embedding_buckets", None),
    "optim.grad_accumulation": ("optim.grad_accumulation", 1),
    "model.n_kv_head": ("model.n_kv_head", None),
    "model.causal": ("model.causal", True),
    "train.target": ("train.target", "next_token"),
    "evaluation.prefix_loss": ("evaluation.prefix_loss", False),
    "evaluation.padding_effect": ("evaluation.padding_effect", False),
    "model.d_qk": ("model.d_qk", None),
    "data.domain_tokens_limit": ("data.domain_tokens_limit", None),
    "finetune": ("finetune.method", "full"),
    "prune": ("prune.criterion", None),
    "train.keep_best": ("train.keep_best", None),
    "train.keep_best_start": ("train.keep_best_start", False),
}
