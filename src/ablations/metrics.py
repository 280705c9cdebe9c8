"""The metric registry: every metric a run logs, what kind it is, where it is made, and how it is read.

A hypothesis, a figure or a report table names metrics by these names; the experiment file is checked against
this registry before anything trains, so a typo fails in a second, not after hours. A new metric is one entry
here plus the code that logs it (the module named in `produced_by`).

Per run, a metric is one of
  summary  one value at the end of the run (a hypothesis may test it)
  curve    a value per training step, or per bin or quantile (curves.csv, the report's curves)
  profile  a value per step that is not a training step (the step is a bin or a quantile index)

How a diverged run scores (`at_divergence`): a loss counts as the uniform prediction's (ln V, or V for a
perplexity), as if the run had learned nothing; any other metric it never measured is missing (NaN). No
verdict is decided on a diverged arm (ablations.verdict), but its figures and tables still show it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass

# length_scaling's exponents (bench_*_exponent<suffix>): each name suffix and the lengths it is fitted over, E19's
# registered range and the long range where at d_model 128 the n² d terms hold 89-97 % of the attention sublayer's
# FLOPs (its amendment of 2026-12-03)
SCALING_FITS = {"": (512, 1024, 2048), "_long": (2048, 4096, 8192)}
KINDS = ("loss", "quality", "probe", "cost", "size", "speed", "count", "baseline", "training")
AT_DIVERGENCE = ("uniform_loss", "uniform_ppl", "missing")


@dataclass(frozen=True)
class MetricSpec:
    name: str  # a name, or an fnmatch pattern for a family (`latency_ratio_b*`: one per batch size)
    kind: str
    produced_by: str  # the module that logs it
    label: str  # how the report and the figures name it
    per_run: str = "summary"  # summary | curve | profile
    at_divergence: str = "missing"
    lower_is_better: bool | None = None  # None: neither (a count, a setting)
    in_curves_csv: bool = False  # exported per step to results/curves.csv for the report's curve figures

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.at_divergence not in AT_DIVERGENCE:
            raise ValueError(f"metric {self.name}: kind {self.kind!r} or at_divergence {self.at_divergence!r} unknown")


def _probe_family(prefixed: str, kind: str, label: str) -> list[MetricSpec]:
    """A probe's metric at init, at every validation (a curve) and at the end."""
    return [
        MetricSpec(f"init_{prefixed}", kind, "probes", f"{label} at init"),
        MetricSpec(f"probe/{prefixed}", kind, "probes", label, per_run="curve"),
        MetricSpec(f"final_{prefixed}", kind, "probes", f"{label} at the end"),
    ]


REGISTRY: tuple[MetricSpec, ...] = (
    # the language-model losses (training.LanguageModelTask)
    MetricSpec("final_val_loss", "loss", "training", "validation loss (nats/token)", at_divergence="uniform_loss",
               lower_is_better=True),
    MetricSpec("final_val_ppl", "loss", "training", "validation perplexity", at_divergence="uniform_ppl",
               lower_is_better=True),
    MetricSpec("final_domain_val_loss", "loss", "training", "domain validation loss (nats/token)",
               lower_is_better=True),
    MetricSpec("final_domain_val_ppl", "loss", "training", "domain validation perplexity", lower_is_better=True),
    MetricSpec("final_val_loss_ctx*", "loss", "training", "validation loss on windows longer than the training context",
               lower_is_better=True),
    MetricSpec("ctx*_loss_increase", "loss", "training",
               "long windows' loss minus the same tokens' at the training context", lower_is_better=True),
    MetricSpec("final_val_loss_prefix", "loss", "training", "validation loss, each position from its prefix alone",
               lower_is_better=True),
    MetricSpec("final_padding_loss_change", "loss", "training",
               "real tokens' validation loss followed by unmasked padding, minus alone"),
    MetricSpec("final_padding_logit_change", "quality", "training",
               "largest change of a real token's logit when unmasked padding follows"),
    MetricSpec("final_train_split_loss", "loss", "training", "loss on the training tokens, eval mode",
               lower_is_better=True),
    MetricSpec("generalization_gap", "loss", "training", "validation loss minus the training tokens' loss"),
    *(
        MetricSpec(name, "quality", "generation", label)
        for name, label in (
            ("gen_repeated_4gram_fraction", "share of generated 4-grams seen earlier in the continuation"),
            ("gen_distinct_2", "distinct bigrams over bigrams of a continuation"),
            ("gen_loop_fraction", "share of a continuation in its repeating tail"),
            ("gen_self_nll", "the model's own NLL of what it generated"),
        )
    ),
    MetricSpec("final_val_loss_train_mode", "loss", "training", "validation loss, model in train mode",
               lower_is_better=True),
    MetricSpec("train_eval_gap", "loss", "training", "eval-mode minus train-mode validation loss"),
    MetricSpec("train_loss", "loss", "training", "training loss", per_run="curve", lower_is_better=True,
               in_curves_csv=True),
    MetricSpec("val_loss", "loss", "training", "validation loss", per_run="curve", lower_is_better=True,
               in_curves_csv=True),
    MetricSpec("val_ppl", "loss", "training", "validation perplexity", per_run="curve", lower_is_better=True),
    MetricSpec("domain_val_loss", "loss", "training", "domain validation loss", per_run="curve", lower_is_better=True,
               in_curves_csv=True),
    MetricSpec("domain_val_ppl", "loss", "training", "domain validation perplexity", per_run="curve",
               lower_is_better=True),
    MetricSpec("val_loss_drop_last_quarter", "training", "health", "validation loss fall over the last quarter"),
    MetricSpec("diverged_step", "training", "training", "step at which the loss became non-finite"),
    # calibration (train.calibration)
    MetricSpec("final_top1_acc", "quality", "training", "top-1 accuracy", lower_is_better=False),
    MetricSpec("final_mean_confidence", "quality", "training", "mean top-1 confidence"),
    MetricSpec("final_ece", "quality", "training", "expected calibration error", lower_is_better=True),
    *(
        MetricSpec(f"reliability_{what}", "quality", "training", f"reliability diagram: {what} (step = bin)",
                   per_run="profile", in_curves_csv=True)
        for what in ("accuracy", "confidence", "count")
    ),
    # the optimisation itself (training.LanguageModelTask)
    MetricSpec("grad_norm", "training", "training", "gradient norm before clipping", per_run="curve"),
    MetricSpec("lr", "training", "training", "learning rate", per_run="curve"),
    MetricSpec("tokens_per_sec", "speed", "training", "training tokens per second", per_run="curve"),
    # sizes and budgets (run, training.derived_metrics)
    MetricSpec("n_params", "size", "run", "parameters (tied weights once)"),
    MetricSpec("vocab_size", "size", "run", "vocabulary size"),
    MetricSpec("non_embedding_params", "size", "run", "parameters of the blocks (Kaplan et al.'s N)"),
    MetricSpec("start_val_loss", "loss", "run", "validation loss of the weights the run starts from (nats/token)"),
    MetricSpec("best_step", "count", "training", "early stopping (train.keep_best): the step of the weights kept"),
    MetricSpec("best_eval_loss", "loss", "training", "early stopping: the periodic evaluation's loss there"),
    MetricSpec("trainable_params", "size", "adaptation", "trainable parameters (LoRA: the adapters)"),
    MetricSpec("trainable_fraction", "size", "adaptation", "trainable share of all parameters"),
    MetricSpec("pruned_fraction", "size", "adaptation", "share of the FFN neurons pruned"),
    MetricSpec("embedding_shared_fraction", "size", "run", "share of the vocabulary whose embedding row is shared"),
    MetricSpec("train_tokens", "count", "training", "training tokens (padding excluded)"),
    MetricSpec("train_seconds", "cost", "training", "training seconds"),
    MetricSpec("wall_seconds", "cost", "run", "wall seconds of the run"),
    MetricSpec("train_tokens_per_sec", "speed", "training", "training tokens per second", lower_is_better=False),
    MetricSpec("log_train_tokens_per_sec", "speed", "training", "log training tokens per second",
               lower_is_better=False),
    MetricSpec("train_padding_fraction", "cost", "training", "padding fraction of the training batches",
               lower_is_better=True),
    # speed benchmarks, side by side in one process (speed, timing)
    MetricSpec("bench_log_speedup", "speed", "speed",
               "log speed of the arm's setting over the other contender's, side by side", lower_is_better=False),
    MetricSpec("bench_log_memory_saving", "size", "speed",
               "log activation bytes of the other contender over the arm's own", lower_is_better=False),
    MetricSpec("bench_grad_relative_difference", "quality", "speed",
               "accumulated over one batch's gradient: relative difference", lower_is_better=True),
    MetricSpec("bench_grad_bytes", "size", "speed", "bytes of the gradient buffers after one update",
               lower_is_better=True),
    MetricSpec("bench_*_time_exponent", "speed", "speed", "exponent k of time ∝ length^k, fitted at 512-2,048"),
    MetricSpec("bench_attention_flops_exponent", "cost", "speed", "exponent k of attention FLOPs, 512-2,048"),
    MetricSpec("bench_*_time_exponent_long", "speed", "speed", "exponent k of time ∝ length^k, fitted at 2,048-8,192"),
    MetricSpec("bench_attention_flops_exponent_long", "cost", "speed", "exponent k of attention FLOPs, 2,048-8,192"),
    MetricSpec("bench_*_seconds_n*", "speed", "speed", "median seconds of one call at sequence length n",
               lower_is_better=True),
    MetricSpec("bench_attention_flops_n*", "cost", "speed", "counted FLOPs of one attention sublayer at length n"),
    MetricSpec("bench_attention_quadratic_flops_share", "cost", "speed",
               "share of attention FLOPs in the n² d terms, at the model's context"),
    MetricSpec("bench_kv_cache_bytes_per_token", "size", "speed", "bytes the KV cache holds per token",
               lower_is_better=True),
    MetricSpec("bench_log_kv_cache_bytes", "size", "speed", "log bytes the KV cache holds per token",
               lower_is_better=True),
    MetricSpec("bench_log_activation_bytes", "size", "speed", "log bytes kept for the backward pass of one step",
               lower_is_better=True),
    MetricSpec("bench_activation_bytes_*", "size", "speed", "bytes kept for the backward pass of one training step",
               lower_is_better=True),
    MetricSpec("bench_tokens_per_sec_*", "speed", "speed", "real tokens per second in the side-by-side benchmark",
               lower_is_better=False),
    MetricSpec("bench_padding_fraction_*", "cost", "speed", "padding fraction of the benchmark's batches",
               lower_is_better=True),
    # trivial baselines of the corpus (health)
    MetricSpec("baseline_*", "baseline", "health", "baseline cross-entropy (nats/token)"),
    # post-training quantization (quantization)
    MetricSpec("final_kl_to_reference", "quality", "training", "KL(fp32 || quantized) per token", lower_is_better=True),
    MetricSpec("log_kl_to_reference", "quality", "training", "log KL(fp32 || quantized)", lower_is_better=True),
    MetricSpec("block_bytes", "size", "quantization", "bytes of the blocks' weights", lower_is_better=True),
    MetricSpec("block_bytes_ratio", "size", "quantization", "block bytes over fp32", lower_is_better=True),
    MetricSpec("log_block_bytes", "size", "quantization", "log bytes of the blocks' weights", lower_is_better=True),
    MetricSpec("latency_ms_b*", "speed", "quantization", "forward latency in ms (b = batch)", lower_is_better=True),
    MetricSpec("latency_ratio_b*", "speed", "quantization", "latency over fp32, side by side (b = batch)",
               lower_is_better=True),
    MetricSpec("log_latency_ratio_b*", "speed", "quantization", "log latency over fp32 (b = batch)",
               lower_is_better=True),
    MetricSpec("final_weight_kurtosis", "probe", "quantization", "largest kurtosis of a block weight"),
    MetricSpec("final_activation_kurtosis", "probe", "quantization", "largest kurtosis of a block input"),
    *(
        MetricSpec(f"{what}_tail", "probe", "quantization", f"{what} |x| / std at the tail quantiles (step = quantile)",
                   per_run="profile", in_curves_csv=True)
        for what in ("weight", "activation")
    ),
    # probes (probes.PROBES), each at init, during training and at the end
    *_probe_family("attn_logit_std", "probe", "attention logit std"),
    *_probe_family("attn_entropy", "probe", "normalized attention entropy"),
    *_probe_family("attn_self_weight", "probe", "attention weight on the query's own token"),
    *_probe_family("qk_grad_norm", "probe", "gradient norm of W_Q and W_K"),
    *_probe_family("log10_qk_grad_norm", "probe", "log10 gradient norm of W_Q and W_K"),
    *_probe_family("softmax_jacobian_norm", "probe", "norm of the attention softmax's Jacobian"),
    *_probe_family("log10_softmax_jacobian_norm", "probe", "log10 norm of the attention softmax's Jacobian"),
    *_probe_family("grad_norm_layer*", "probe", "gradient norm of a block"),
    *_probe_family("grad_norm_last_over_first", "probe", "gradient norm, last block over first"),
    *_probe_family("log10_grad_norm_last_over_first", "probe", "log10 gradient norm, last block over first"),
    *_probe_family("grad_sq_norm", "probe", "squared norm of the true gradient (estimate)"),
    *_probe_family("grad_trace_cov", "probe", "trace of the gradient covariance (estimate)"),
    *_probe_family("noise_scale", "probe", "gradient noise scale (sequences)"),
)  # fmt: skip


class UnknownMetricError(KeyError):
    """A name that no entry of the registry matches."""


def lookup(name: str) -> MetricSpec:
    """The registry entry of a metric name; an exact name wins over a family pattern."""
    for spec in REGISTRY:
        if spec.name == name:
            return spec
    for spec in REGISTRY:
        if fnmatch.fnmatchcase(name, spec.name):
            return spec
    raise UnknownMetricError(f"unknown metric {name!r}: ablations.metrics.REGISTRY has no such metric or family")


def is_known(name: str) -> bool:
    try:
        lookup(name)
    except UnknownMetricError:
        return False
    return True


def per_step(name: str) -> bool:
    """Whether a metric is logged per step (a curve or a profile), not once per run."""
    return is_known(name) and lookup(name).per_run != "summary"


def curves_csv_metrics() -> list[str]:
    """The per-step metrics that results/curves.csv keeps for the report's figures."""
    return [spec.name for spec in REGISTRY if spec.in_curves_csv]


def value_of(status: str, metrics: Mapping[str, float], name: str) -> float:
    """A run's value of a metric, with the registry's rule for a diverged run (see the module docstring)."""
    if status == "diverged":
        rule = lookup(name).at_divergence
        if rule == "uniform_loss":
            return math.log(metrics["vocab_size"])
        if rule == "uniform_ppl":
            return float(metrics["vocab_size"])
        if name not in metrics:
            return math.nan
    return metrics[name]
