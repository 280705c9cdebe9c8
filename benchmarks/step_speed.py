"""Training-step speed on this machine: the suite's Lightning step against a bare loop, fp32 against
bf16 autocast and torch.compile, with model FLOP utilization, and optionally nanoGPT's train.py.

    python benchmarks/step_speed.py [--threads 2] [--nanogpt /path/to/nanoGPT --data input.txt] [--compile]

Configurations: EXPERIMENTS.md's CPU baseline (4 layers, d_model 128, context 64, batch 12) and
nanoGPT's "baby GPT" (6 layers, 6 heads, d_model 384, context 256, batch 64). Every variant trains
the same model from the same initialization on the same random batches, in one process; the variants
take turns, `--rounds` times, and the median of each is shown (the machines are noisy); the first
steps are warm-up and not timed. MFU is model FLOPs per second (nanoGPT's
estimate: 6N + 12 L T d per token) over the measured peak of a large matmul in the same precision.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from ablations.model import GPT, ModelConfig
from ablations.training import LanguageModelTask, OptimConfig

CONFIGS = {
    "cpu baseline": dict(n_layer=4, n_head=4, d_model=128, block_size=64, batch_size=12),
    "baby GPT": dict(n_layer=6, n_head=6, d_model=384, block_size=256, batch_size=64),
}
# (warm-up, timed) steps of each configuration: a few seconds of timing for the tiny model, whose steps
# take milliseconds, and half a minute for the baby GPT, whose fp32 steps take seconds on two cores.
STEPS = {"cpu baseline": (20, 300), "baby GPT": (1, 4)}


def matmul_peak(dtype: torch.dtype, size: int = 4096, repeats: int = 10) -> float:
    """FLOP/s of the fastest of `repeats` large matmuls: what this machine can do at best."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * size**3 / fastest


def flops_per_token(model: GPT, cfg: dict) -> float:
    return 6 * model.num_params() + 12 * cfg["n_layer"] * cfg["block_size"] * cfg["d_model"]


def batches(cfg: dict, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 65, (n, cfg["batch_size"], cfg["block_size"] + 1), generator=generator)
    return [(d[:, :-1], d[:, 1:]) for d in data]


def bare_loop(cfg: dict, warmup: int, steps: int, precision: str, compile: bool) -> float:
    """nanoGPT's step: forward, backward, clip, AdamW step. Seconds per step after warm-up."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, **{k: v for k, v in cfg.items() if k != "batch_size"}))
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    data = batches(cfg, warmup + steps)
    for i, (x, y) in enumerate(data):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = forward(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def lightning_loop(cfg: dict, warmup: int, steps: int, precision: str) -> float:
    """The suite's LanguageModelTask under a Lightning Trainer. Seconds per step after warm-up."""
    torch.manual_seed(0)
    model_cfg = ModelConfig(vocab_size=65, **{k: v for k, v in cfg.items() if k != "batch_size"})
    task = LanguageModelTask(model_cfg, OptimConfig(warmup_steps=0, max_steps=warmup + steps), log_every=10)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=warmup + steps,
            precision="bf16-mixed" if precision == "bf16" else "32-true", logger=CSVLogger(tmp),
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0,
        )  # fmt: skip
        times: list[float] = []

        class Clock(pl.Callback):
            def on_train_batch_start(self, *args) -> None:
                times.append(time.perf_counter())

        trainer.callbacks.append(Clock())
        trainer.fit(task, train_dataloaders=DataLoader(batches(cfg, warmup + steps), batch_size=None))
        times.append(time.perf_counter())
    return (times[-1] - times[warmup]) / steps


def nanogpt_step(nanogpt: Path, data: Path, cfg: dict, warmup: int, steps: int, threads: int) -> float:
    """nanoGPT's train.py on the same configuration (CPU, fp32, no compile): mean seconds per iteration after
    warm-up, from its own per-iteration times (the other variants are timed as means too)."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "nanoGPT"
        shutil.copytree(nanogpt, repo)
        shutil.copy(data, repo / "data/shakespeare_char/input.txt")
        env = os.environ | {"OMP_NUM_THREADS": str(threads)}
        run = dict(cwd=repo, check=True, capture_output=True, text=True, env=env)
        subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], **run)
        args = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_interval=100000",
                "--eval_iters=1", "--log_interval=1", f"--max_iters={warmup + steps}", "--dropout=0.0",
                f"--n_layer={cfg['n_layer']}", f"--n_head={cfg['n_head']}", f"--n_embd={cfg['d_model']}",
                f"--block_size={cfg['block_size']}", f"--batch_size={cfg['batch_size']}"]  # fmt: skip
        out = subprocess.run([sys.executable, "train.py", *args], **run).stdout
    ms = [float(t) for i, t in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", out) if int(i) > warmup]
    return sum(ms) / len(ms) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT (optional)")
    parser.add_argument("--data", type=Path, help="TinyShakespeare input.txt, with --nanogpt")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    parser.add_argument("--rounds", type=int, default=3, help="times every variant is timed; medians are shown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"{args.threads} threads; matmul peak fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f}")
    for name in args.configs:
        cfg = CONFIGS[name]
        tokens = cfg["batch_size"] * cfg["block_size"]
        per_token = flops_per_token(
            GPT(ModelConfig(vocab_size=65, **{k: v for k, v in cfg.items() if k != "batch_size"})), cfg
        )
        steps = STEPS[name]
        variants = {
            "bare loop, fp32": (partial(bare_loop, cfg, *steps, "fp32", False), "fp32"),
            "suite (Lightning), fp32": (partial(lightning_loop, cfg, *steps, "fp32"), "fp32"),
            "bare loop, bf16 autocast": (partial(bare_loop, cfg, *steps, "bf16", False), "bf16"),
            "suite (Lightning), bf16-mixed": (partial(lightning_loop, cfg, *steps, "bf16"), "bf16"),
        }
        if args.compile:
            variants["bare loop, fp32, compiled"] = (partial(bare_loop, cfg, *steps, "fp32", True), "fp32")
        if args.nanogpt:
            reference_step = partial(nanogpt_step, args.nanogpt.resolve(), args.data.resolve(), cfg, *steps)
            variants["nanoGPT train.py, fp32"] = (partial(reference_step, args.threads), "fp32")
        print(f"\n{name}: {cfg}, {steps[1]} timed steps after {steps[0]}, {args.rounds} rounds")
        seconds: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(args.rounds):  # interleaved, so that a slow spell of the machine hits every variant alike
            for label, (measure, _) in variants.items():
                seconds[label].append(measure())
        reference = statistics.median(seconds["bare loop, fp32"])
        for label, (_, precision) in variants.items():
            median = statistics.median(seconds[label])
            mfu = per_token * tokens / median / peak[precision]
            spread = f"{tokens / max(seconds[label]):,.0f}-{tokens / min(seconds[label]):,.0f}"
            print(f"  {label:32} {tokens / median:9,.0f} tokens/s ({spread})  MFU {mfu:6.1%} of {precision} peak  "
                  f"speed / bare fp32 {reference / median:.2f}")  # fmt: skip
        if args.nanogpt:
            for suite in ("suite (Lightning), fp32", "suite (Lightning), bf16-mixed"):
                ratios = [r / s for s, r in zip(seconds[suite], seconds["nanoGPT train.py, fp32"], strict=True)]
                print(f"  {suite} / nanoGPT fp32, per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
                      f"median {statistics.median(ratios):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
