"""Golden numbers: what the numeric code computes for one tiny run of every switch, packing and method.

The run key's code part is `ablations.numerics.NUMERICS_VERSION`, bumped by hand. This file is what forces the
bump: `tests/test_numerics.py` recomputes these cases and compares them with `tests/fixtures/golden.json`;
a change of any number fails it until the version is bumped and the file regenerated
(`make golden`). Refactors, comments and new switches that default to off change nothing here, so they leave
every committed run reusable.

Each case is a few steps of real Lightning training of a 1-layer model on a fixed synthetic corpus, then the
final evaluation; timings are left out (they are not numbers of the model).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import platform
import random
import sys
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger

from ablations.adaptation import FinetuneConfig, PruneConfig, adapt
from ablations.data import TextDataModule, evaluation_windows
from ablations.model import ModelConfig
from ablations.numerics import NUMERICS_VERSION
from ablations.quantization import QuantizeConfig, quantized_evaluation
from ablations.run import budget, domain_baselines, further_evaluation, task_baselines, trainer_options
from ablations.speed import BenchmarkConfig, run_benchmark
from ablations.training import LanguageModelTask, derived_metrics

GOLDEN = Path(__file__).parent / "fixtures" / "golden.json"
SEED = 3
# (relative, absolute) tolerances. On the CPU that recorded the numbers, float32 kernels repeat to the last bits.
# Another CPU runs other kernels (MKL, ATen and fbgemm dispatch on AVX2 or AVX-512), and 16 training steps carry
# their last-bit differences on: measured on an AMD EPYC (AVX-512) against numbers recorded on an earlier machine,
# up to 1.0e-3 relative (a gradient norm) and 2.4e-6 absolute on KL divergences of order 1e-6 (int4 quantization),
# so those are compared absolutely there. Across CPUs the test therefore catches changes of the code that move a
# number by more than 0.5 %; on the recording CPU, any change.
SAME_CPU, ACROSS_CPUS = (1e-6, 1e-9), (5e-3, 1e-5)
# Numbers left out across CPUs. LoRA's adapters start with B = 0, so the first gradients of A are near zero and
# Adam scales them to full-size steps whose direction comes from last-bit noise: another CPU's kernels change it.
# Measured on an Intel Xeon (AVX-512) against the AMD EPYC numbers: the adapters' gradient norm 1 % off at step 10
# and 15 % at step 14, while every loss agreed within 0.5 %. On the recording CPU they are compared like the rest.
UNSTABLE_ACROSS_CPUS = {"lora_all": "grad_norm@", "lora_qv": "grad_norm@"}


def cpu_signature() -> str:
    """The processor and the instruction set torch's kernels dispatch on: what decides the last bits."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    return f"{model} / {torch.backends.cpu.get_cpu_capability()}"


BASE: dict[str, dict[str, Any]] = {
    "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "d_model": 16},
    "data": {"batch_size": 4, "eval_batch_size": 16, "eval_windows": 8, "test_windows": 24},
    "optim": {"lr": 3e-2, "min_lr": 3e-3, "warmup_steps": 2, "max_steps": 16},
    "train": {"log_every": 2},
    "quantize": {},
    "benchmark": {},
    "finetune": {},
    "prune": {},
    "evaluation": {
        "context_factors": [],
        "train_split": False,
        "prefix_loss": False,
        "padding_effect": False,
        "decoding": {
            "rule": None,
            "temperature": 1.0,
            "top_k": None,
            "top_p": None,
            "repetition_penalty": 1.0,
            "beams": 1,
            "prompts": 4,
        },
    },
}
# name -> overrides of BASE (section -> key -> value)
CASES: dict[str, dict[str, dict[str, Any]]] = {
    "base": {},
    "heads": {"model": {"n_head": 4}},
    "two_layers": {"model": {"n_layer": 2}},
    "unscaled": {"model": {"attn_scale": "none"}},
    "scale_number": {"model": {"attn_scale": 0.5}},
    "t5_init": {"model": {"attn_scale": "none", "fold_scale_into_q_init": True}},
    "rmsnorm": {"model": {"norm": "rmsnorm"}},
    "batchnorm": {"model": {"norm": "batchnorm"}, "train": {"eval_train_mode": True}},
    "post_ln": {"model": {"norm_position": "post", "n_layer": 2}},
    "sinusoidal": {"model": {"pos_encoding": "sinusoidal"}},
    "no_positions": {"model": {"pos_encoding": "none"}},
    "rope": {"model": {"pos_encoding": "rope"}, "evaluation": {"context_factors": [2, 4]}},
    "alibi": {"model": {"pos_encoding": "alibi"}},
    "gqa": {"model": {"n_head": 2, "n_kv_head": 1}},
    "factorized_embedding": {"model": {"embedding_rank": 8}},
    # The random hash of 2026-12-03 (model.embedding_hash_seed, in the key with buckets on): a new case, since the
    # fixed hash's numbers belong to keys no run can have any more.
    "hashed_embedding_random": {"model": {"embedding_buckets": 64, "embedding_hash_seed": 0, "tie_embeddings": False}},
    "bpe": {"data": {"tokenizer": "bpe", "bpe_vocab_size": 300}},
    "untied_bias": {"model": {"tie_embeddings": False, "bias": True}},
    "dropout": {"model": {"dropout": 0.1}},
    "d_ff": {"model": {"d_ff": 24}},
    "swiglu": {"model": {"mlp": "swiglu"}},
    "split_qkv": {"model": {"qkv_projection": "split"}},
    "key_size": {"model": {"d_qk": 4}, "train": {"probes": ["attention"]}},
    "lora_qv": {
        "model": {"qkv_projection": "split"},
        "finetune": {"method": "lora", "lora_rank": 2, "lora_targets": "qv"},
    },
    "lora_all": {"finetune": {"method": "lora", "lora_rank": 2}},
    "prune_taylor": {"prune": {"criterion": "taylor", "sparsity": 0.25, "calibration_batches": 2}},
    "prune_entropy": {"prune": {"criterion": "entropy", "sparsity": 0.5, "calibration_batches": 2}},
    "relu": {"model": {"mlp": "relu"}},
    "lu_ffn": {"model": {"mlp": "gelu_lu"}},
    "no_ffn": {"model": {"mlp": "none"}},
    "shared_qk": {"model": {"qkv_projection": "shared_qk"}, "train": {"probes": ["attention"]}},
    "no_qkv_projection": {"model": {"qkv_projection": "none"}, "train": {"probes": ["attention"]}},
    "sqrt_d_embedding": {"model": {"embedding_scale": "sqrt_d_model", "pos_encoding": "sinusoidal"}},
    "additive": {
        "model": {"attn_score": "additive"},
        "train": {"probes": ["attention"]},
        "benchmark": {"name": "attention_score", "batches": 2, "repeats": 2},
    },
    "no_residual": {"model": {"residual": False, "n_layer": 2}, "train": {"probes": ["layer_grad_norms"]}},
    "label_smoothing": {"train": {"label_smoothing": 0.1}},
    "calibration": {"train": {"calibration": True}},
    "probes": {"train": {"probes": ["attention", "layer_grad_norms", "gradient_noise"]}},
    "softmax_probe": {"train": {"probes": ["softmax_jacobian"]}, "model": {"attn_scale": "none"}},
    "xavier_post_ln": {"model": {"init": "xavier", "norm_position": "post", "n_layer": 2}},
    "adafactor": {"optim": {"name": "adafactor"}},
    "grad_accumulation": {"optim": {"grad_accumulation": 2}, "data": {"batch_size": 2}},
    "decoding_sample": {
        "evaluation": {
            "decoding": {
                "rule": "sample",
                "temperature": 0.8,
                "top_k": 10,
                "top_p": 0.9,
                "repetition_penalty": 1.2,
                "beams": 1,
                "prompts": 4,
            }
        }
    },
    "decoding_beam": {
        "evaluation": {
            "decoding": {
                "rule": "beam",
                "temperature": 1.0,
                "top_k": None,
                "top_p": None,
                "repetition_penalty": 1.0,
                "beams": 3,
                "prompts": 2,
            }
        }
    },
    "position_target": {"model": {"causal": False, "pos_encoding": "none"}, "train": {"target": "position"}},
    "bidirectional": {"model": {"causal": False}, "evaluation": {"prefix_loss": True}},
    "padding_effect": {"evaluation": {"padding_effect": True}},
    "padding_effect_bidirectional": {"model": {"causal": False}, "evaluation": {"padding_effect": True}},
    "small_train_split": {"data": {"train_tokens_limit": 600}, "evaluation": {"train_split": True}},
    "sqrt_lr_tokens": {"optim": {"lr_scaling": "sqrt", "max_tokens": 900, "lr_reference_batch": 8}},
    "no_clip_no_decay": {"optim": {"grad_clip": 0.0, "weight_decay": 0.0}},
    "char_tokens": {"data": {"tokenizer": "char"}},
    "documents": {"data": {"packing": "documents"}},
    "buckets": {"data": {"packing": "buckets", "max_tokens": 48, "epochs": 1, "max_documents": 20}},
    "sorted": {"data": {"packing": "sorted", "max_tokens": 48, "epochs": 1, "max_documents": 20}},
    "fixed": {"data": {"packing": "fixed", "epochs": 1, "max_documents": 24}},
    "buckets_fixed_updates": {
        "data": {"packing": "buckets", "max_tokens": 48, "epochs": 1, "max_documents": 20, "count_epochs_as": "fixed"}
    },
    "benchmark_batching": {
        "data": {"packing": "buckets", "max_tokens": 48, "epochs": 1, "max_documents": 20},
        "benchmark": {"name": "batching", "batches": 2, "repeats": 2},
    },
    "domain_mix": {"data": {"domain": "textfile", "mix": "1:3"}},
    "domain_target_limit": {"data": {"domain": "textfile", "mix": "1:0", "domain_tokens_limit": 200}},
    **{
        f"quantize_{method}": {"quantize": {"method": method, "latency_batches": [1], "latency_repeats": 1}}
        for method in ("none", "dynamic_int8", "weight_int8")
    },
    "quantize_weight_int4": {
        "quantize": {"method": "weight_int4", "group_size": 8, "latency_batches": [1], "latency_repeats": 1}
    },  # fmt: skip
    "quantize_dynamic_per_tensor": {
        "quantize": {"method": "dynamic_int8", "per_channel": False, "latency_batches": [1], "latency_repeats": 1}
    },  # fmt: skip
    **{
        f"quantize_static_{calibration}": {
            "quantize": {
                "method": "static_int8",
                "calibration": calibration,
                "calibration_batches": 2,
                "entropy_stride": 8,
                "latency_batches": [1],
            }
        }  # fmt: skip
        for calibration in ("minmax", "percentile", "entropy")
    },
    "quantize_static_7bit": {
        "quantize": {"method": "static_int8", "activation_bits": 7, "calibration_batches": 2, "latency_batches": [1]}
    },  # fmt: skip
}
TIMINGS = ("train_seconds", "tokens_per_sec", "latency", "wall_seconds", "bench_log_speedup")


def synthetic_text(seed: int, paragraphs: int = 160) -> str:
    """Paragraphs of words from a small vocabulary with a skewed frequency: learnable, and fixed forever."""
    rng = random.Random(seed)
    words = ["the", "king", "shall", "speak", "of", "love", "and", "war", "to", "my", "lord", "now", "thee"]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    paragraphs_text = []
    for _ in range(paragraphs):
        sentences = rng.randint(1, 3)
        paragraphs_text.append(" ".join(
            " ".join(rng.choices(words, weights, k=rng.randint(2, 6))).capitalize() + rng.choice(".!?")
            for _ in range(sentences)
        ))  # fmt: skip
    return "\n\n".join(paragraphs_text) + "\n"


def settings(case: str, folder: Path) -> dict[str, dict[str, Any]]:
    config = copy.deepcopy(BASE)
    for section, overrides in CASES[case].items():
        config[section] |= overrides
    paths = {"path": str(folder / "general.txt")}
    if config["data"].get("domain"):
        paths["domain_path"] = str(folder / "domain.txt")
    config["data"] |= paths | {"corpus": "textfile", "cache_dir": str(folder / "cache")}
    return config


def run_case(case: str, folder: Path, accelerator: str = "cpu") -> dict[str, float]:
    """The numbers of one case: the training curve, the final evaluation, parameters, tokens, baselines."""
    config = settings(case, folder)
    block_size = config["model"]["block_size"]
    data = TextDataModule(**config["data"], block_size=block_size, seed=SEED)
    tokens = data.load()
    optim = budget(config["optim"], data, block_size)
    pl.seed_everything(SEED, verbose=False)
    task = LanguageModelTask(ModelConfig(**config["model"], vocab_size=tokens.vocab_size), optim, **config["train"])
    prune, finetune = PruneConfig(**config["prune"]), FinetuneConfig(**config["finetune"])
    task.final_metrics |= adapt(task.model, prune, finetune, data, SEED)
    logger = CSVLogger(folder / "logs", name=case)
    steps = {"optim": {"max_steps": optim.max_steps, "grad_accumulation": optim.grad_accumulation}, "val_every": 8}
    options = trainer_options(OmegaConf.create(steps))  # the options every run's Trainer gets
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision="32-true", logger=logger, **options)
    trainer.fit(task, datamodule=data)
    numbers: dict[str, float] = run_benchmark(task, data, BenchmarkConfig(**config["benchmark"]), nullcontext)
    quantize = QuantizeConfig(**config["quantize"])
    if quantize.method is not None:
        calibration = (x for x, _ in itertools.islice(iter(data.train_dataloader()), quantize.calibration_batches))
        sample = evaluation_windows(data.val_ids, block_size, max(quantize.latency_batches)).tensors[0]
        task.model.eval()
        quantized, measured, profiles = quantized_evaluation(task.model, quantize, calibration, sample)
        task.evaluate_with(quantized)
        numbers |= measured | {f"{k}.{i}": v for k, values in profiles.items() for i, v in enumerate(values)}
    trainer.test(task, datamodule=data, verbose=False)
    numbers |= further_evaluation(data, config["evaluation"], task, nullcontext)
    logger.save()
    numbers |= task.final_metrics | task_baselines(config["train"].get("target", "next_token"), tokens, block_size)
    numbers |= domain_baselines(data)
    counts = {"n_params": task.model.num_params(), "train_tokens": int(task.train_tokens), "train_seconds": 1.0}
    numbers |= counts | derived_metrics(counts, task.trained_steps, task.train_slots)
    numbers["trained_steps"] = task.trained_steps
    for row in logged_rows(logger):
        numbers |= {f"{key}@{row['step']}": float(value) for key, value in row.items() if key != "step" and value}
    return {k: float(v) for k, v in sorted(numbers.items()) if not any(t in k for t in TIMINGS)}


def logged_rows(logger: CSVLogger) -> list[dict[str, str]]:
    import csv

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def compute(cases: list[str] | None = None, accelerator: str = "cpu") -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "general.txt").write_text(synthetic_text(0))
        (folder / "domain.txt").write_text(synthetic_text(1).upper())
        return {case: run_case(case, folder, accelerator) for case in cases or CASES}


def differences(
    found: dict[str, dict[str, float]],
    golden: dict[str, dict[str, float]],
    tolerance: tuple[float, float] = SAME_CPU,
    unstable: dict[str, str] | None = None,
) -> list[str]:
    """Every number that is missing, new, or beyond the tolerance, as 'case: metric golden -> found'; `unstable`
    (case -> metric prefix) names numbers left out (see UNSTABLE_ACROSS_CPUS)."""
    rtol, atol = tolerance
    lines = []
    for case in sorted(set(found) | set(golden)):
        new, old = found.get(case, {}), golden.get(case, {})
        skipped = (unstable or {}).get(case)
        for key in sorted(k for k in set(new) | set(old) if not (skipped and k.startswith(skipped))):
            a, b = old.get(key, math.nan), new.get(key, math.nan)
            same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
            if not same:
                lines.append(f"{case}: {key} {a!r} -> {b!r}")
    return lines


def recorded_on(recorded: dict, case: str) -> str:
    """The CPU a case's numbers were recorded on: the file's, or its own when `--add` recorded it elsewhere."""
    return recorded.get("case_cpus", {}).get(case, recorded.get("cpu"))


def tolerance(recorded: dict, case: str) -> tuple[float, float]:
    """The tolerance for comparing with a case's recorded numbers here: exact on the CPU that recorded them."""
    return SAME_CPU if recorded_here(recorded, case) else ACROSS_CPUS


def unstable(recorded: dict, case: str) -> dict[str, str]:
    """The numbers of a case not compared here: none on the CPU that recorded them."""
    return {} if recorded_here(recorded, case) else UNSTABLE_ACROSS_CPUS


def recorded_here(recorded: dict, case: str) -> bool:
    return recorded_on(recorded, case) == cpu_signature()


def changed_numbers(found: dict[str, dict[str, float]], recorded: dict) -> list[str]:
    """`differences` of every case, each at the tolerance of the CPU that recorded it."""
    golden = recorded["cases"]
    return [
        line
        for case in sorted(set(found) | set(golden))
        for line in differences(
            {case: found[case]} if case in found else {},
            {case: golden[case]} if case in golden else {},
            tolerance(recorded, case),
            unstable(recorded, case),
        )
    ]


def write(cases: dict[str, dict[str, float]], cpu: str | None = None, case_cpus: dict[str, str] | None = None) -> None:
    """Record `cases` as computed on `cpu` (this processor unless told), those in `case_cpus` on their own."""
    recorded = {"numerics_version": NUMERICS_VERSION, "cpu": cpu or cpu_signature(), "cases": cases}
    if case_cpus:
        recorded["case_cpus"] = dict(sorted(case_cpus.items()))
    GOLDEN.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"wrote {GOLDEN}: {len(cases)} cases, numerics version {NUMERICS_VERSION}")


def add(names: list[str]) -> None:
    """Record what is not recorded yet: new cases (a new switch) and new metrics of recorded cases (a probe that
    measures more). Every number recorded already must come out the same: a changed one needs a version bump."""
    recorded = json.loads(GOLDEN.read_text())
    if recorded["numerics_version"] != NUMERICS_VERSION:
        sys.exit("the golden file is of another numerics version: regenerate it whole with --write")
    found = compute(names)
    before = {case: recorded["cases"].get(case, {}) for case in names}
    again = {case: {k: found[case].get(k, math.nan) for k in before[case]} for case in names}
    if changed := changed_numbers(again, recorded | {"cases": before}):
        sys.exit(f"recorded numbers changed ({changed[:3]}): bump NUMERICS_VERSION and regenerate with --write")
    # A case is compared exactly on the CPU that recorded it: a new case records this one's (when it is not the
    # file's), and a recorded case takes new metrics only on its own CPU, its recorded numbers kept as they are.
    if elsewhere := [case for case in names if before[case] and not recorded_here(recorded, case)]:
        sys.exit(f"{elsewhere} were recorded on another CPU: add their new metrics there, or record new cases")
    here = {case: cpu_signature() for case in names if not before[case] and cpu_signature() != recorded["cpu"]}
    write(recorded["cases"] | {case: found[case] | before[case] for case in names}, recorded["cpu"],
          recorded.get("case_cpus", {}) | here)  # fmt: skip


USAGE = """usage: python tests/golden.py --write        every case, after bumping ablations.numerics.NUMERICS_VERSION
       python tests/golden.py --add CASE ...  record new cases (a new switch that defaults to off) and new metrics
                                              of recorded cases; the recorded numbers must come out the same"""

if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write(compute())
    elif sys.argv[1:2] == ["--add"] and len(sys.argv) > 2:
        add(sys.argv[2:])
    else:
        sys.exit(USAGE)
