import math

import pytest
import torch
import torch.nn.functional as F

from ablations.model import GPT, CausalSelfAttention, ModelConfig, reference_attention


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "d_model": 32} | overrides)


SWITCHES = [
    {},
    {"norm": "rmsnorm"},
    {"norm": "batchnorm"},
    {"norm_position": "post"},
    {"pos_encoding": "sinusoidal"},
    {"pos_encoding": "none"},
    {"tie_embeddings": False},
    {"attn_scale": "none"},
    {"attn_scale": 0.5},
    {"n_head": 1},
    {"n_head": 32},
    {"d_ff": 48, "dropout": 0.1, "bias": True},
    {"mlp": "swiglu"},
    {"mlp": "relu"},
    {"mlp": "gelu_lu"},
    {"mlp": "none"},
    {"qkv_projection": "shared_qk"},
    {"qkv_projection": "none"},
    {"residual": False},
    {"causal": False},
    {"embedding_scale": "sqrt_d_model"},
    {"attn_score": "additive"},
    {"pos_encoding": "rope"},
    {"n_kv_head": 2},
    {"n_kv_head": 1, "attn_score": "additive"},
    {"embedding_rank": 8},
    {"embedding_rank": 8, "tie_embeddings": False},
    {"embedding_buckets": 16, "tie_embeddings": False},
    {"pos_encoding": "alibi"},
    {"pos_encoding": "alibi", "n_head": 1, "attn_score": "additive"},
    {"attn_score": "additive", "dropout": 0.1},
    {"residual": False, "norm_position": "post"},
]


@pytest.mark.parametrize("overrides", SWITCHES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_switch_gives_logits_of_the_right_shape(overrides):
    model = GPT(tiny(**overrides))
    logits = model(torch.randint(50, (3, 16)))
    assert logits.shape == (3, 16, 50)
    assert torch.isfinite(logits).all()


CAUSAL = [o for o in SWITCHES if o.get("norm") != "batchnorm" and o.get("causal", True)] + [{"norm": "batchnorm"}]


@pytest.mark.parametrize("overrides", CAUSAL)
def test_causal_mask_leaks_nothing_from_the_future(overrides):
    torch.manual_seed(0)
    model = GPT(tiny(**overrides)).eval()  # eval: dropout off, BatchNorm on running statistics
    x = torch.randint(50, (2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_without_the_causal_mask_the_future_leaks_and_generation_sees_none_of_it():
    """E23: model.causal=false lets every position see the window's future; the prefix loss (each position from
    its own prefix, as generation meets it) equals the ordinary loss exactly when the model is causal."""
    import contextlib

    from ablations.training import prefix_loss

    torch.manual_seed(0)
    model = GPT(tiny(causal=False)).eval()
    x = torch.randint(50, (2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, :10], model(changed)[:, :10])
    from ablations.data import evaluation_windows

    ids = torch.randint(50, (16 * 70 + 1,))
    x, y = evaluation_windows(ids, 16, 64).tensors  # the windows prefix_loss scores
    for causal in (True, False):
        torch.manual_seed(0)
        model = GPT(tiny(causal=causal)).eval()
        with torch.no_grad():
            ordinary = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
        prefix = prefix_loss(model, ids, contextlib.nullcontext)["final_val_loss_prefix"]
        assert (prefix == pytest.approx(ordinary, rel=1e-5)) == causal


def test_trailing_padding_cannot_reach_a_causal_models_real_tokens_and_reaches_a_bidirectional_ones():
    """The handbook (lines 621, 629) says padding must be masked or it changes the attention of real tokens. In a
    causal decoder padding that follows a sequence is in every real token's future, masked already."""
    x = torch.randint(1, 50, (1, 10))
    padded = torch.cat([x, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    for causal in (True, False):
        torch.manual_seed(0)
        model = GPT(tiny(causal=causal)).eval()
        with torch.no_grad():
            same = torch.allclose(model(x), model(padded)[:, :10], atol=1e-6, rtol=0)  # kernels' float order only
        assert same == causal


def test_the_padding_effect_measures_what_trailing_padding_does_to_the_real_tokens():
    """E23's measurement of line 629: the real tokens' loss followed by padding minus alone, checked by hand; nothing
    in a causal model (float rounding aside)."""
    import contextlib

    from ablations.data import evaluation_windows
    from ablations.training import PREFIX_WINDOWS, padding_effect

    ids = torch.randint(1, 50, (16 * 70 + 1,))
    x, y = evaluation_windows(ids, 16, PREFIX_WINDOWS).tensors
    for causal in (True, False):
        torch.manual_seed(0)
        model = GPT(tiny(causal=causal)).eval()
        with torch.no_grad():
            alone = F.cross_entropy(model(x[:, :8]).flatten(0, 1), y[:, :8].flatten())
            padded = torch.cat([x[:, :8], torch.zeros(len(x), 8, dtype=torch.long)], dim=1)
            followed = F.cross_entropy(model(padded)[:, :8].flatten(0, 1), y[:, :8].flatten())
        measured = padding_effect(model, ids, contextlib.nullcontext)
        assert measured["final_padding_loss_change"] == pytest.approx((followed - alone).item(), abs=1e-6)
        assert (abs(measured["final_padding_loss_change"]) < 1e-6) == causal
        assert (measured["final_padding_logit_change"] < 1e-5) == causal


def test_batchnorm_in_train_mode_mixes_positions():
    """BatchNorm's batch statistics pool over time: in train mode the future does leak (E03 measures it)."""
    torch.manual_seed(0)
    model = GPT(tiny(norm="batchnorm")).train()
    x = torch.randint(50, (2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert not torch.allclose(a[:, :10], b[:, :10])


@pytest.mark.parametrize("scale", ["sqrt_dk", "none", 0.3])
@pytest.mark.parametrize("n_head", [1, 4, 8])
def test_sdpa_equals_the_reference_attention(scale, n_head):
    torch.manual_seed(0)
    cfg = tiny(attn_scale=scale, n_head=n_head)
    attention = CausalSelfAttention(cfg).eval()
    x = torch.randn(2, 16, 32)
    q, k, v = attention.heads(x)
    expected, weights = reference_attention(q, k, v, cfg.attention_scale())
    actual = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=cfg.attention_scale())
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, n_head, 16))
    assert (weights.triu(diagonal=1) == 0).all()


def test_attention_scale_values():
    assert tiny(n_head=4).attention_scale() == pytest.approx(1 / math.sqrt(8))
    assert tiny(attn_scale="none").attention_scale() == 1.0
    assert tiny(attn_scale=0.25).attention_scale() == 0.25


def test_parameter_count_does_not_depend_on_the_number_of_heads():
    counts = {h: GPT(tiny(n_head=h)).num_params() for h in (1, 2, 4, 8, 16, 32)}
    assert len(set(counts.values())) == 1, counts


def test_swiglu_by_default_has_as_many_weights_as_the_gelu_mlp():
    """8/3 d_model hidden units in three matrices hold as many weights as 4 d_model in two (d_model 48)."""
    gelu, swiglu = GPT(tiny(d_model=48)), GPT(tiny(d_model=48, mlp="swiglu"))
    assert swiglu.num_params() == gelu.num_params()
    x = torch.randn(2, 5, 48)
    mlp = swiglu.blocks[0].mlp
    gate, up = mlp.fc(x).split(128, dim=-1)
    assert torch.allclose(mlp(x), mlp.proj(F.silu(gate) * up))  # Shazeer 2020, eq. (6), no biases


def test_relu_and_no_ffn_variants_compute_what_they_say():
    """ReLU: Vaswani et al.'s max(0, x W1) W2 (eq. 2, no biases); none: the block is attention only, and the
    model loses exactly the FFN's 2 d_model d_ff weights per layer."""
    torch.manual_seed(0)
    mlp = GPT(tiny(mlp="relu")).blocks[0].mlp
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(mlp(x), torch.relu(x @ mlp.fc.weight.T) @ mlp.proj.weight.T)
    half = GPT(tiny(d_ff=64))  # line 920 counts one d_model x d_ff matrix; both of the FFN's shrink
    assert GPT(tiny()).num_params() - half.num_params() == 2 * (2 * 32 * (128 - 64))
    without = GPT(tiny(mlp="none"))
    assert not list(without.blocks[0].mlp.parameters())
    assert GPT(tiny()).num_params() - without.num_params() == 2 * (2 * 32 * 128)


def test_an_lu_factored_ffn_has_exactly_the_parameters_of_the_dense_one():
    """The handbook (line 926) says an LU decomposition of the FFN's matrices reduces parameters. For an m x n
    matrix L holds the m k - k(k+1)/2 entries below its unit diagonal and U the k n - k(k-1)/2 on and above its
    diagonal (k = min(m, n)): m n together, no fewer. Truncated low-rank factors (SVD) save; an exact LU cannot."""
    torch.manual_seed(0)
    dense, factored = GPT(tiny()), GPT(tiny(mlp="gelu_lu"))
    assert factored.num_params() == dense.num_params()
    fc = factored.blocks[0].mlp.fc
    lower, upper = fc.parametrizations.weight.original0, fc.parametrizations.weight.original1
    m, n = 128, 32
    assert lower.numel() == m * n - n * (n + 1) // 2 and upper.numel() == n * n - n * (n - 1) // 2


def test_an_lu_factored_ffn_starts_as_the_dense_one_and_trains_its_factors():
    x = torch.randint(50, (2, 16))
    torch.manual_seed(0)
    dense = GPT(tiny())
    torch.manual_seed(0)
    factored = GPT(tiny(mlp="gelu_lu"))
    torch.testing.assert_close(factored(x), dense(x), atol=1e-5, rtol=1e-4)  # W = P L U of the same init
    F.cross_entropy(factored(x).flatten(0, 1), x.flatten()).backward()
    fc = factored.blocks[0].mlp.fc.parametrizations.weight
    assert fc.original0.grad.abs().sum() > 0 and fc.original1.grad.abs().sum() > 0
    assert fc.original0.matrix_entries  # packed matrix entries: AdamW decays them like the dense weight


def test_shared_qk_makes_the_scores_symmetric_and_no_projection_attends_with_the_stream_itself():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    shared = CausalSelfAttention(tiny(qkv_projection="shared_qk"))
    q, k, v = shared.heads(x)
    scores = q @ k.transpose(-2, -1)
    torch.testing.assert_close(scores, scores.transpose(-2, -1))
    assert not torch.equal(k, v) and shared.qkv.weight.shape == (64, 32)
    assert [rows for _, rows in shared.query_key_rows()] == [slice(0, 32)]  # W_Q = W_K: one block of rows
    bare = CausalSelfAttention(tiny(qkv_projection="none"))
    q, k, v = bare.heads(x)
    heads = x.view(2, 16, 4, 8).transpose(1, 2)
    assert bare.qkv is None and torch.equal(q, heads) and torch.equal(k, heads) and torch.equal(v, heads)
    full = GPT(tiny()).num_params()
    assert full - GPT(tiny(qkv_projection="shared_qk")).num_params() == 2 * 32 * 32  # W_K, per layer
    assert full - GPT(tiny(qkv_projection="none")).num_params() == 2 * 3 * 32 * 32


def test_without_residuals_nothing_of_the_embedding_passes_a_silent_block():
    """A block whose sublayers output zero passes the stream on with residuals and wipes it without (E11)."""
    x = torch.randint(50, (2, 16))
    logits = {}
    for residual in (True, False):
        torch.manual_seed(0)
        model = GPT(tiny(residual=residual))
        with torch.no_grad():
            for block in model.blocks:
                block.attn.proj.weight.zero_()
                block.mlp.proj.weight.zero_()
            logits[residual] = model(x)
    assert logits[True].std(dim=(0, 1)).sum() > 0.1  # the tokens still tell positions apart
    torch.testing.assert_close(logits[False], logits[False][:1, :1].expand_as(logits[False]))


def test_sqrt_d_model_scales_the_token_embeddings_and_not_the_positions():
    torch.manual_seed(0)
    plain = GPT(tiny(pos_encoding="sinusoidal"))
    torch.manual_seed(0)
    scaled = GPT(tiny(pos_encoding="sinusoidal", embedding_scale="sqrt_d_model"))
    idx = torch.randint(50, (2, 16))
    tokens = plain.token_embedding(idx)
    torch.testing.assert_close(scaled.embed(idx) - plain.embed(idx), tokens * (math.sqrt(32) - 1))
    assert scaled.num_params() == plain.num_params()


def test_additive_scores_are_bahdanaus_formula_computed_by_hand():
    """score(i, j) = wᵀ tanh(q_i + k_j) for one head, checked entry by entry on a 3-token input."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(attn_score="additive", n_head=1, d_model=4))
    q, k, v = attn.heads(torch.randn(1, 3, 4))
    scores = attn.scores(q, k)
    w = attn.additive[0]
    for i in range(3):
        for j in range(3):
            expected = sum(w[d] * math.tanh(q[0, 0, i, d] + k[0, 0, j, d]) for d in range(4))
            assert scores[0, 0, i, j].item() == pytest.approx(float(expected), abs=1e-6)
    attn.eval()
    out = attn(torch.randn(1, 3, 4))
    assert out.shape == (1, 3, 4)
    assert GPT(tiny(attn_score="additive")).num_params() - GPT(tiny()).num_params() == 2 * 32  # w: d_model a layer


def test_rope_scores_depend_only_on_the_distance_between_positions():
    """Shifting every position by the same offset leaves q·k unchanged (Su et al. 2021, eq. 16)."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(pos_encoding="rope"))
    q, k, _ = (t.view(1, 16, 4, 8).transpose(1, 2) for t in attn.project(torch.randn(1, 16, 32)))
    rotate = attn.rotary.rotate_queries_or_keys
    at_start = rotate(q) @ rotate(k).transpose(-2, -1)
    shifted = rotate(q, offset=7) @ rotate(k, offset=7).transpose(-2, -1)
    torch.testing.assert_close(shifted, at_start, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(at_start, q @ k.transpose(-2, -1), atol=1e-3)  # the rotation does act


def test_alibi_biases_are_linear_in_the_distance_with_the_papers_slopes():
    from ablations.model import alibi_bias, alibi_slopes

    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]  # Press et al. 2022: 1/2, 1/4, ..., 1/256
    assert alibi_slopes(6) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]  # their get_slopes for 6 heads
    bias = alibi_bias(torch.tensor([0.5]), 5)[0]
    for i in range(5):
        for j in range(5):
            assert bias[i, j].item() == pytest.approx(-0.5 * (i - j))


def test_the_fused_kernel_and_the_written_out_attention_agree_for_relative_positions():
    x = torch.randn(2, 16, 32)
    for encoding in ("rope", "alibi"):
        torch.manual_seed(0)
        attn = CausalSelfAttention(tiny(pos_encoding=encoding)).eval()
        fused = attn(x)
        attn.record = True
        torch.testing.assert_close(attn(x), fused, atol=1e-5, rtol=1e-5)


def test_without_positions_a_token_embeds_alike_everywhere_and_only_learned_positions_stop_at_the_context():
    x = torch.full((1, 16), 7)
    rows = GPT(tiny(pos_encoding="none")).embed(x)[0]
    torch.testing.assert_close(rows, rows[:1].expand_as(rows))  # no position signal at all
    longer = torch.randint(50, (1, 48))  # 3x the context of 16
    for encoding in ("none", "sinusoidal", "rope", "alibi"):
        assert GPT(tiny(pos_encoding=encoding))(longer).shape == (1, 48, 50)
    with pytest.raises(ValueError, match="exceeds model.block_size"):
        GPT(tiny(pos_encoding="learned"))(longer)


def test_a_factorized_embedding_has_albert_parameter_count_and_ties_through_its_rank():
    """ALBERT (Lan et al. 2020, 3.1): V x E + E x H instead of V x H; tied, the output maps H -> E -> V."""
    full, factored = GPT(tiny()), GPT(tiny(embedding_rank=8))
    assert factored.token_embedding.weight.shape == (50, 8)
    assert factored.lm_head.weight is factored.token_embedding.weight
    # tied: V x E + E x H (up) + H x E (down) instead of V x H
    assert full.num_params() - factored.num_params() == 50 * 32 - (50 * 8 + 2 * 8 * 32)
    untied = GPT(tiny(embedding_rank=8, tie_embeddings=False))
    assert untied.embedding_down is None and untied.lm_head.weight.shape == (50, 32)


def test_hashed_embeddings_share_rows_by_bucket_and_more_buckets_share_less():
    """The hashing trick (line 896): ids in one bucket get one vector. Line 902 says more buckets share more."""
    from ablations.model import hashed_buckets

    torch.manual_seed(0)
    model = GPT(tiny(embedding_buckets=16, embedding_hash_seed=0, tie_embeddings=False))
    buckets = hashed_buckets(50, 16)
    a, b = next((i, j) for i in range(50) for j in range(i + 1, 50) if buckets[i] == buckets[j])
    rows = model.token_embedding(buckets[torch.tensor([a, b])])
    torch.testing.assert_close(rows[0], rows[1])
    assert torch.equal(model.bucket_of, buckets) and set(buckets.tolist()) <= set(range(16))
    shared = {
        n: GPT(tiny(embedding_buckets=n, embedding_hash_seed=0, tie_embeddings=False)).embedding_shared_fraction()
        for n in (8, 32, 50)
    }
    assert shared[8] == 1.0 > shared[50]  # 50 ids in 8 rows must share; in 50 rows they need not (collisions may)
    per_row = torch.bincount(hashed_buckets(50, 32), minlength=32)
    assert shared[32] == pytest.approx((per_row[hashed_buckets(50, 32)] > 1).float().mean().item())


def test_the_hash_of_the_hashing_trick_leaves_as_many_rows_empty_as_a_random_function():
    """E20's 4,096 BPE ids in 1,024 rows: a random function leaves 1024 (1 - 1/1024)^4096, about 19 (sd 4), empty;
    the fixed (a id + b) mod p hash it replaces left 181."""
    from ablations.model import hashed_buckets

    empty = (torch.bincount(hashed_buckets(4096, 1024), minlength=1024) == 0).sum().item()
    assert 19 - 4 * 4 <= empty <= 19 + 4 * 4
    assert not torch.equal(hashed_buckets(4096, 1024, seed=1), hashed_buckets(4096, 1024))


def test_without_a_hash_seed_each_run_seed_draws_its_own_hash():
    """E20's default: the hash is drawn with the weights, so its intervals over seeds cover the collision pattern."""

    def buckets(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return GPT(tiny(embedding_buckets=16, tie_embeddings=False)).bucket_of

    assert torch.equal(buckets(0), buckets(0)) and not torch.equal(buckets(0), buckets(1))


def test_tied_embeddings_share_one_matrix():
    tied, untied = GPT(tiny()), GPT(tiny(tie_embeddings=False))
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.num_params() - tied.num_params() == 50 * 32


def test_post_ln_has_no_final_norm_and_pre_ln_has_one():
    assert isinstance(GPT(tiny(norm_position="post")).final_norm, torch.nn.Identity)
    assert isinstance(GPT(tiny()).final_norm, torch.nn.LayerNorm)


def test_same_seed_same_loss_and_different_seed_different_loss():
    def loss(seed: int) -> float:
        torch.manual_seed(seed)
        model = GPT(tiny())
        x = torch.randint(50, (4, 16), generator=torch.Generator().manual_seed(123))
        return F.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten()).item()

    assert loss(0) == loss(0)
    assert loss(0) != loss(1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_head": 3}, "must divide"),
        ({"norm": "groupnorm"}, "model.norm"),
        ({"norm_position": "middle"}, "norm_position"),
        ({"pos_encoding": "xpos"}, "pos_encoding"),
        ({"mlp": "geglu"}, r"model.mlp='geglu' must be one of \('gelu', 'relu', 'swiglu', 'gelu_lu', 'none'\)"),
        ({"qkv_projection": "tied"}, "model.qkv_projection"),
        ({"attn_score": "additive", "attn_scale": "none"}, "scales dot-product scores only"),
        ({"attn_score": "bilinear"}, "model.attn_score"),
        ({"n_kv_head": 3}, "model.n_kv_head=3 must divide"),
        ({"n_kv_head": 2, "qkv_projection": "shared_qk"}, "model.n_kv_head=2 must divide"),
        ({"embedding_buckets": 16}, "needs model.tie_embeddings=false"),
        ({"embedding_rank": 64}, "embedding_rank=64 must lie in"),
        ({"qkv_projection": "none", "fold_scale_into_q_init": True}, "needs a W_Q"),
        ({"attn_scale": "half"}, "attn_scale"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_sequences_longer_than_the_context_are_refused():
    with pytest.raises(ValueError, match="exceeds model.block_size"):
        GPT(tiny())(torch.zeros(1, 17, dtype=torch.long))


def test_t5_init_gives_the_same_logits_at_init_as_scaling():
    """Folding 1/sqrt(d_k) into W_Q's init, unscaled, equals scaling the logits, at initialization."""
    from ablations.probes import attention

    x = torch.randint(50, (4, 16))
    stats = {}
    for name, overrides in {"scaled": {}, "t5": {"attn_scale": "none", "fold_scale_into_q_init": True}}.items():
        torch.manual_seed(0)
        model = GPT(tiny(**overrides))
        stats[name] = attention(model, (x, x.roll(-1, 1)))
        stats[name]["logits"] = model(x)
    torch.testing.assert_close(stats["scaled"]["logits"], stats["t5"]["logits"])
    assert stats["scaled"]["attn_logit_std"] == pytest.approx(stats["t5"]["attn_logit_std"], rel=1e-5)
    assert stats["scaled"]["attn_entropy"] == pytest.approx(stats["t5"]["attn_entropy"], rel=1e-5)


def test_unscaled_logits_grow_with_the_square_root_of_d_k():
    from ablations.probes import attention

    x = torch.randint(50, (8, 16))
    std = {}
    for n_head in (16, 1):  # d_k = 4 and 64 at d_model 64
        torch.manual_seed(0)
        model = GPT(tiny(d_model=64, n_head=n_head, attn_scale="none"))
        std[n_head] = attention(model, (x, x))["attn_logit_std"]
    assert 2 < std[1] / std[16] < 8  # sqrt(64 / 4) = 4, up to sampling noise


def test_attention_entropy_is_one_for_uniform_attention_and_probes_leave_no_gradients():
    from ablations.probes import attention, layer_grad_norms

    model = GPT(tiny(attn_scale=0.0))  # zero logits: uniform attention over the visible keys
    x = torch.randint(50, (2, 16))
    stats = attention(model, (x, x))
    assert stats["attn_entropy"] == pytest.approx(1.0, abs=1e-5)
    uniform_self_weight = sum(1 / (i + 1) for i in range(1, 16)) / 15  # rows 1..15 over i + 1 keys
    assert stats["attn_self_weight"] == pytest.approx(uniform_self_weight, abs=1e-6)
    norms = layer_grad_norms(model, (x, x))
    assert set(norms) == {
        "grad_norm_layer0", "grad_norm_layer1", "grad_norm_last_over_first", "log10_grad_norm_last_over_first"
    }  # fmt: skip
    assert norms["log10_grad_norm_last_over_first"] == pytest.approx(math.log10(norms["grad_norm_last_over_first"]))
    assert all(p.grad is None for p in model.parameters())


def test_batchnorm_in_eval_mode_uses_its_running_statistics():
    torch.manual_seed(0)
    model = GPT(tiny(norm="batchnorm"))
    bn = model.blocks[0].norm1.bn
    model.train()
    model(torch.randint(50, (4, 16)))
    running = bn.running_mean.clone()
    assert not torch.equal(running, torch.zeros_like(running))  # train mode updated them
    model.eval()
    x = torch.randint(50, (4, 16))
    with torch.no_grad():
        alone, in_batch = model(x[:1]), model(x)[:1]
    torch.testing.assert_close(alone, in_batch)  # no batch statistics: one sequence scores the same alone
    torch.testing.assert_close(bn.running_mean, running)


def test_label_smoothing_outside_zero_to_one_is_refused():
    """What smoothing does to the training and evaluation losses: test_metrics (through the real steps)."""
    from ablations.training import LanguageModelTask, OptimConfig

    for eps in (1.0, -0.1):
        with pytest.raises(ValueError, match="label_smoothing"):
            LanguageModelTask(tiny(), OptimConfig(), label_smoothing=eps)


def test_noise_scale_estimator_recovers_a_known_gradient_and_covariance():
    from ablations.probes import noise_scale

    generator = torch.Generator().manual_seed(0)
    P, k, b, sigma = 200_000, 8, 4, 0.05  # noise scale P sigma^2 / |G|^2 = 25 sequences
    true_grad = torch.randn(P, generator=generator) * 0.01  # |G|^2 about P * 1e-4 = 20
    # Per-example covariance sigma^2 I: tr(Sigma) = P sigma^2; a micro-batch mean has covariance Sigma / b.
    micro = true_grad + torch.randn(k, P, generator=generator) * sigma / b**0.5
    estimate = noise_scale(micro, micro_batch=b)
    assert estimate["grad_sq_norm"] == pytest.approx(true_grad.pow(2).sum().item(), rel=0.1)
    assert estimate["grad_trace_cov"] == pytest.approx(P * sigma**2, rel=0.05)
    assert estimate["noise_scale"] == pytest.approx(P * sigma**2 / true_grad.pow(2).sum().item(), rel=0.15)


def test_gradient_noise_probe_runs_on_a_model():
    from ablations.probes import gradient_noise

    torch.manual_seed(0)
    x = torch.randint(50, (16, 16))
    metrics = gradient_noise(GPT(tiny()), (x, x.roll(-1, 1)))
    assert metrics["grad_trace_cov"] > 0 and math.isfinite(metrics["noise_scale"])
    with pytest.raises(ValueError, match="multiple of 8"):
        gradient_noise(GPT(tiny()), (x[:12], x[:12]))


def test_token_budgets_and_batch_scaled_learning_rates():
    from ablations.training import OptimConfig

    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, max_steps=500, warmup_steps=50, max_tokens=1_000_000, lr_scaling="sqrt")
    big = cfg.for_batch(batch_size=128, tokens_per_batch=128 * 64)
    assert (
        big.max_steps == 1_000_000 // (128 * 64) and big.lr == pytest.approx(2e-3) and big.min_lr == pytest.approx(2e-4)
    )
    assert OptimConfig(max_steps=500).for_batch(8, 512) == OptimConfig(max_steps=500)  # no budget, no scaling
    assert OptimConfig(lr_scaling="linear").for_batch(8, 512).lr == pytest.approx(1e-3 / 4)
    with pytest.raises(ValueError, match="lr_scaling"):
        OptimConfig(lr_scaling="cubic")


def test_xavier_init_draws_each_fused_matrix_by_its_own_fans_and_keeps_tied_embeddings_normal():
    torch.manual_seed(0)
    model = GPT(tiny(d_model=64, n_head=4, init="xavier", tie_embeddings=True))
    qkv = model.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (64 + 64))  # Glorot and Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    for part in qkv.split(64):
        assert part.abs().max() <= bound and part.abs().max() > 0.9 * bound
    proj = model.blocks[0].attn.proj.weight
    assert proj.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # no depth scaling
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_adafactor_steps_are_relative_to_each_matrix_so_a_smaller_init_stays_smaller():
    from ablations.training import LanguageModelTask, OptimConfig

    torch.manual_seed(0)
    sizes = {}
    for name in ("adamw", "adafactor"):
        task = LanguageModelTask(
            tiny(attn_scale="none", fold_scale_into_q_init=True), OptimConfig(name=name, lr=1e-2, warmup_steps=0)
        )
        optimizer = task.configure_optimizers()["optimizer"]
        q = task.model.blocks[0].attn.qkv.weight
        start = q[:32].detach().clone()
        x = torch.randint(0, 50, (4, 16))
        for _ in range(20):
            optimizer.zero_grad()
            task.loss((x, x)).backward()
            optimizer.step()
        sizes[name] = ((q[:32].detach() - start).norm() / start.norm()).item()
    assert sizes["adafactor"] < 1.0 < sizes["adamw"]  # AdamW's steps of ~lr dwarf a W_Q of std 0.02 / sqrt(8)


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 2}, {"pos_encoding": "rope"}, {"qkv_projection": "split"}])
def test_a_smaller_key_size_shrinks_w_q_and_w_k_only_and_the_fused_kernel_agrees_with_the_written_out_one(overrides):
    cfg = ModelConfig(**{"n_layer": 1, "d_model": 32, "n_head": 4, "block_size": 16, "vocab_size": 64, "d_qk": 4}
                      | overrides)  # fmt: skip
    attention = CausalSelfAttention(cfg)
    kv = cfg.kv_heads
    learned = sum(p.numel() for p in attention.parameters() if p.requires_grad)  # not RoPE's fixed frequencies
    assert learned == 32 * (4 * 4 + kv * 4 + kv * 8) + 32 * 32
    assert attention.scale == pytest.approx(1 / 2)  # 1/sqrt(d_k), not 1/sqrt(d_model / n_head)
    x = torch.randn(2, 16, 32)
    q, k, v = attention.heads(x)
    assert q.shape == (2, 4, 16, 4) and k.shape == (2, kv, 16, 4) and v.shape == (2, kv, 16, 8)
    fused = attention(x)
    attention.record = True
    torch.testing.assert_close(attention(x), fused, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("n_layer", "d_model"), [(2, 32), (4, 16), (1, 64)])
def test_non_embedding_parameters_are_kaplans_twelve_layers_d_squared_plus_the_norms(n_layer, d_model):
    shape = {"n_layer": n_layer, "d_model": d_model, "n_head": 4, "block_size": 16, "vocab_size": 64}
    model = GPT(ModelConfig(**shape))
    norms = (2 * n_layer + 1) * d_model  # LayerNorm weights (no biases): two per block and the final one
    assert model.num_non_embedding_params() == 12 * n_layer * d_model**2 + norms
    rope = GPT(
        ModelConfig(n_layer=n_layer, d_model=d_model, n_head=4, block_size=16, vocab_size=64, pos_encoding="rope")
    )
    assert rope.num_non_embedding_params() == model.num_non_embedding_params()  # not RoPE's fixed frequencies
