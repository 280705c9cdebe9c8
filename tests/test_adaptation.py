"""LoRA through peft and FFN neuron pruning (ablations.adaptation): what each leaves trainable, what it removes,
and that a pruned neuron stays removed through training."""

import pytest
import torch

from ablations.adaptation import (
    CRITERIA,
    FinetuneConfig,
    PruneConfig,
    add_lora,
    neuron_scores,
    parameter_counts,
    prune_neurons,
)
from ablations.model import GPT, ModelConfig
from ablations.training import OptimConfig, make_optimizer

SMALL = {"n_layer": 2, "d_model": 32, "n_head": 4, "block_size": 16, "vocab_size": 64}


def model(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**(SMALL | overrides)))


def batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 64, (4, 16), generator=generator),) * 2 for _ in range(n)]


def test_the_split_projection_computes_what_the_fused_one_does():
    fused, split = model(), model(qkv_projection="split")
    state = {}
    for key, value in fused.state_dict().items():
        if key.endswith("attn.qkv.weight"):
            for name, part in zip(("query", "key", "value"), value.split(32), strict=True):
                state[key.replace("qkv.weight", f"split.{name}.weight")] = part
        else:
            state[key] = value
    split.load_state_dict(state)
    x = batches(1)[0][0]
    assert torch.equal(fused(x), split(x))
    assert fused.num_params() == split.num_params()


@pytest.mark.parametrize(("targets", "per_layer"), [("all_linear", [(32, 96), (32, 32), (32, 128), (128, 32)]),
                                                    ("qv", [(32, 32), (32, 32)])])  # fmt: skip
def test_lora_starts_as_the_base_and_trains_only_rank_r_adapters(targets, per_layer):
    base = model(qkv_projection="split" if targets == "qv" else "separate")
    x = batches(1)[0][0]
    before, n_base = base(x), base.num_params()
    adapted = add_lora(base, FinetuneConfig(method="lora", lora_rank=4, lora_targets=targets))
    assert torch.equal(adapted(x), before)  # B = 0: the adapters add nothing until trained
    expected = 2 * sum(4 * (d_in + d_out) for d_in, d_out in per_layer)  # A: r x d_in, B: d_out x r, 2 layers
    counts = parameter_counts(adapted)
    assert counts == {"trainable_params": expected, "trainable_fraction": expected / (n_base + expected)}
    assert all(("lora_" in n) == p.requires_grad for n, p in adapted.named_parameters())


def test_a_lora_step_leaves_every_base_weight_as_it_was():
    adapted = add_lora(model(), FinetuneConfig(method="lora", lora_rank=4))
    frozen = {n: p.detach().clone() for n, p in adapted.named_parameters() if not p.requires_grad}
    optimizer = make_optimizer(adapted, OptimConfig(max_steps=1, warmup_steps=0))
    x, y = batches(1)[0]
    torch.nn.functional.cross_entropy(adapted(x).flatten(0, 1), y.flatten()).backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in adapted.named_parameters() if not p.requires_grad)
    assert not torch.equal(adapted(x), model()(x))  # the adapters did move


def test_lora_on_w_q_and_w_v_needs_them_as_modules():
    with pytest.raises(ValueError, match="qkv_projection=split"):
        add_lora(model(), FinetuneConfig(method="lora", lora_targets="qv"))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_pruning_removes_that_share_of_every_layer_and_they_stay_removed_through_training(criterion):
    pruned = model()
    assert prune_neurons(pruned, PruneConfig(criterion, 0.25), batches(), seed=0) == 0.25
    for block in pruned.blocks:
        assert int((block.mlp.proj.weight.abs().sum(0) == 0).sum()) == 32  # 25% of 128 hidden neurons
    optimizer = make_optimizer(pruned, OptimConfig(max_steps=1, warmup_steps=0))
    x, y = batches(1)[0]
    torch.nn.functional.cross_entropy(pruned(x).flatten(0, 1), y.flatten()).backward()
    optimizer.step()
    assert all(int((b.mlp.proj.weight.abs().sum(0) == 0).sum()) == 32 for b in pruned.blocks)


@pytest.mark.parametrize("criterion", [c for c in CRITERIA if c != "random"])
def test_a_dead_neuron_scores_lowest_under_every_criterion_but_random(criterion):
    dead = model()
    with torch.no_grad():  # neuron 7 of layer 1: no input, no output, its activation is GELU(0) = 0
        dead.blocks[1].mlp.fc.weight[7] = 0.0
        dead.blocks[1].mlp.proj.weight[:, 7] = 0.0
    scores = neuron_scores(dead, PruneConfig(criterion, 0.1), batches(), seed=0)
    assert int(scores[1].argmin()) == 7
    assert float(scores[1][7]) == pytest.approx(0.0, abs=1e-12)


def test_taylor_scores_are_the_first_order_loss_change_of_removing_each_neuron_per_sequence():
    trained_like = model()
    x, y = batches(1)[0]
    score = neuron_scores(trained_like, PruneConfig("taylor", 0.1), [(x, y)], seed=0)[0]
    h = {}
    handle = trained_like.blocks[0].mlp.proj.register_forward_pre_hook(lambda m, i: h.setdefault("h", i[0]))
    loss = torch.nn.functional.cross_entropy(trained_like(x).flatten(0, 1), y.flatten())
    handle.remove()
    (grad,) = torch.autograd.grad(loss, h["h"])
    expected = (h["h"] * grad).mean(1).abs().mean(0)  # (batch, T, d_ff): per sequence, then over sequences
    assert torch.allclose(score, expected.detach(), rtol=1e-4, atol=1e-10)


def test_random_scores_follow_the_seed():
    a, b, c = (neuron_scores(model(), PruneConfig("random", 0.1), [], seed=s)[0] for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
