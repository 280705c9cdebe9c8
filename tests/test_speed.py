"""Speed as evidence: contenders timed in turns (ablations.timing) and the batching benchmark (ablations.speed)."""

import contextlib
import math

import pytest
import torch

from ablations import speed
from ablations.data import TextDataModule
from ablations.model import ModelConfig
from ablations.speed import BenchmarkConfig, batching
from ablations.timing import alternate, median_log_ratio
from ablations.training import LanguageModelTask, OptimConfig


def test_contenders_take_turns_in_a_rotated_order_and_the_warm_up_is_not_kept():
    calls = []
    seconds = alternate({name: (lambda name=name: calls.append(name)) for name in "abc"}, repeats=3, warmup=1)
    assert calls == list("abcbcacababc")  # one warm-up round, then three timed ones
    assert {name: len(times) for name, times in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for times in seconds.values() for t in times)


def test_the_comparison_is_the_median_of_the_log_ratios_paired_by_round():
    # round 2 was slow for both: paired, it cancels; a ratio of medians would give log(3 / 2)
    assert median_log_ratio([2.0, 20.0, 3.0], [1.0, 10.0, 3.0]) == pytest.approx(math.log(2))


@pytest.fixture(scope="module")
def corpus_and_task(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speed")
    text = "".join(f"paragraph {i} " + "word " * (i * 7 % 23) + "\n\n" for i in range(600))
    (tmp / "docs.txt").write_text(text)
    data = TextDataModule("textfile", path=str(tmp / "docs.txt"), block_size=64, batch_size=8, max_tokens=512,
                          packing="buckets", cache_dir=str(tmp))  # fmt: skip
    data.setup()
    torch.manual_seed(0)
    model = ModelConfig(vocab_size=256, block_size=64, n_layer=1, n_head=2, d_model=16)
    return data, LanguageModelTask(model, OptimConfig(max_steps=10, warmup_steps=1))


def test_the_batching_benchmark_times_each_batchings_own_batches_on_a_copy_of_the_model(corpus_and_task):
    data, task = corpus_and_task
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    metrics = batching(task, data, BenchmarkConfig("batching", batches=4, repeats=2), contextlib.nullcontext)
    assert metrics["bench_padding_fraction_buckets"] < metrics["bench_padding_fraction_fixed"]
    assert all(math.isfinite(v) and v >= 0 for k, v in metrics.items() if k != "bench_log_speedup")
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())  # trained on copies


def test_the_speed_up_counts_real_tokens_not_batches(corpus_and_task, monkeypatch):
    """Bucketed batches hold more real tokens each: their speed-up is the token ratio times the time ratio."""
    data, task = corpus_and_task
    monkeypatch.setattr(speed, "alternate", lambda contenders, repeats: {"fixed": [2.0] * 3, "buckets": [1.0] * 3})
    metrics = batching(task, data, BenchmarkConfig("batching", batches=4, repeats=3), contextlib.nullcontext)
    fixed, buckets = metrics["bench_tokens_per_sec_fixed"], metrics["bench_tokens_per_sec_buckets"]
    assert metrics["bench_log_speedup"] == pytest.approx(math.log(buckets / fixed))
    assert buckets / fixed != pytest.approx(2.0)  # the samples differ in real tokens


def test_a_bad_benchmark_setting_is_refused():
    with pytest.raises(ValueError, match="benchmark.name='sorting'"):
        BenchmarkConfig("sorting")
    with pytest.raises(ValueError, match="benchmark.repeats=1"):
        BenchmarkConfig("batching", repeats=1)


@pytest.fixture(scope="module")
def windows_and_dot_task(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attention_score")
    (tmp / "text.txt").write_text("".join(f"line {i} of some text\n" for i in range(800)))
    data = TextDataModule("textfile", path=str(tmp / "text.txt"), block_size=32, batch_size=4, cache_dir=str(tmp))
    data.setup()
    torch.manual_seed(0)
    model = ModelConfig(vocab_size=256, block_size=32, n_layer=1, n_head=2, d_model=16)
    return data, LanguageModelTask(model, OptimConfig(max_steps=10, warmup_steps=1))


def test_activation_bytes_count_what_backward_keeps_once_and_not_the_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4, bias=False)

    class Head(torch.nn.Module):  # logits of shape (B, T, V), as the language model's
        def __init__(self):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            return self.linear(x.float().unsqueeze(-1).expand(*x.shape, 8))

    x, y = torch.randint(4, (2, 3)), torch.randint(4, (2, 3))
    kept = speed.saved_activation_bytes(Head(), x, y)
    assert kept > 0 and kept % 4 == 0
    assert linear.weight.grad is None  # the step's gradients are cleared again


def test_additive_scores_keep_d_head_times_the_activations_of_dot_product_scores(windows_and_dot_task, monkeypatch):
    """The handbook (line 574) says dot products are the more efficient: additive scores materialize tanh(q + k),
    (B, H, T, T, d_head), where dot-product attention keeps (B, H, T, T) weights at most."""
    data, task = windows_and_dot_task
    monkeypatch.setattr(speed, "alternate", lambda contenders, repeats: {"dot": [1.0] * 2, "additive": [3.0] * 2})
    metrics = speed.attention_score(task, data, BenchmarkConfig("attention_score", batches=2, repeats=2),
                                    contextlib.nullcontext)  # fmt: skip
    assert metrics["bench_log_speedup"] == pytest.approx(math.log(3.0))
    tanh_bytes = 4 * 2 * 32 * 32 * 8 * 4  # B, H, T, T, d_head floats of 4 bytes
    extra = metrics["bench_activation_bytes_additive"] - metrics["bench_activation_bytes_dot"]
    assert extra >= tanh_bytes
    assert metrics["bench_log_memory_saving"] == pytest.approx(
        math.log(metrics["bench_activation_bytes_additive"] / metrics["bench_activation_bytes_dot"])
    )


def test_accumulated_micro_batches_give_one_batchs_gradient_with_a_micro_batchs_activations(windows_and_dot_task):
    """The handbook (line 2875) zeroes gradients every batch so that accumulation does not use more memory: the
    summed gradient equals the whole batch's, its buffers are as large as one batch's, and a step keeps only a
    micro-batch's activations for backward."""
    data, task = windows_and_dot_task
    accumulating = LanguageModelTask(task.model_cfg, OptimConfig(max_steps=10, warmup_steps=1, grad_accumulation=3))
    accumulating.model.load_state_dict(task.model.state_dict())
    metrics = speed.accumulation(accumulating, data, BenchmarkConfig("accumulation", batches=2, repeats=2),
                                 contextlib.nullcontext)  # fmt: skip
    assert metrics["bench_grad_relative_difference"] < 1e-5
    assert metrics["bench_grad_bytes"] == sum(p.nbytes for p in task.model.parameters())
    x, y = next(iter(data.train_dataloader()))
    whole = speed.saved_activation_bytes(task.model, torch.cat([x] * 3), torch.cat([y] * 3))
    assert metrics["bench_log_activation_bytes"] < math.log(whole) - math.log(2)
    assert math.isfinite(metrics["bench_log_speedup"])


def test_training_steps_with_micro_batches_step_the_optimizer_once_per_update(windows_and_dot_task, monkeypatch):
    data, task = windows_and_dot_task
    batches = [next(iter(data.train_dataloader()))] * 6
    steps = []
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: steps.append(1))
    speed.training_steps(task, batches, contextlib.nullcontext, collate=tuple, micro_batches=3)()
    assert len(steps) == 2


def test_the_decoding_benchmark_counts_the_cache_per_token_and_times_mha_only_for_shared_heads(windows_and_dot_task):
    data, task = windows_and_dot_task  # d_model 16, 2 heads, 1 layer
    config = BenchmarkConfig("decoding", batches=2, repeats=2)
    own = speed.decoding(task, data, config, contextlib.nullcontext)
    assert own == {"bench_kv_cache_bytes_per_token": 2 * 1 * 2 * 8 * 4, "bench_log_kv_cache_bytes": math.log(128)}
    mqa = LanguageModelTask(ModelConfig(vocab_size=256, block_size=64, n_layer=1, n_head=2, n_kv_head=1, d_model=16),
                            OptimConfig(max_steps=10, warmup_steps=1))  # fmt: skip
    shared = speed.decoding(mqa, data, config, contextlib.nullcontext)
    assert shared["bench_kv_cache_bytes_per_token"] == 64 and math.isfinite(shared["bench_log_speedup"])
    assert set(shared) >= {"bench_tokens_per_sec_own", "bench_tokens_per_sec_mha"}


def test_length_scaling_counts_the_quadratic_share_exactly_and_fits_exponents(monkeypatch):
    """The n² d terms of an attention sublayer are 4 n² d of its 4 n² d + 8 n d² FLOPs: n / (n + 2 d)."""
    task = LanguageModelTask(ModelConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, d_model=16),
                             OptimConfig(max_steps=1, warmup_steps=0))  # fmt: skip
    monkeypatch.setattr(speed, "SCALING_LENGTHS", (16, 32, 64, 128))
    monkeypatch.setattr(speed, "SCALING_FITS", {"": (32, 64, 128), "_long": (16, 32)})
    metrics = speed.length_scaling(task, None, BenchmarkConfig("length_scaling", repeats=2), contextlib.nullcontext)
    assert metrics["bench_attention_quadratic_flops_share"] == pytest.approx(16 / (16 + 2 * 16))
    assert 1 < metrics["bench_attention_flops_exponent"] < 2
    assert all(math.isfinite(v) for v in metrics.values())
    assert speed.log_log_slope([10, 100, 1000], [3, 300, 30000]) == pytest.approx(2.0)
    d = 16  # each length's FLOPs: 4 n² d + 8 n d², and the exponent is their slope over the three longest
    assert [metrics[f"bench_attention_flops_n{n}"] for n in (16, 32, 64, 128)] == [
        4 * n * n * d + 8 * n * d * d for n in (16, 32, 64, 128)
    ]
    slope = speed.log_log_slope([32, 64, 128], [metrics[f"bench_blocks_seconds_n{n}"] for n in (32, 64, 128)])
    assert metrics["bench_blocks_time_exponent"] == slope
    assert metrics["bench_attention_flops_exponent_long"] == speed.log_log_slope(
        [16, 32], [metrics[f"bench_attention_flops_n{n}"] for n in (16, 32)])  # fmt: skip
    assert all(metrics[f"bench_{what}_seconds_n{n}"] > 0 for what in speed.SCALING_COSTS for n in (16, 32, 64, 128))
