"""Real (non-padding) training tokens per second of E07's batching modes, measured side by side.

    python benchmarks/dynamic_batching_speed.py [--corpus stdlib_prose] [--rounds 10] [--threads 2]

One process trains one model per mode (the quick tier's model, AdamW) and alternates between them,
a chunk of batches of each mode per round, so that every mode sees the same machine noise. Prints
real tokens/s per mode, the padding fraction, and each mode's speed as a ratio to fixed-size batches.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F

from ablations.data import IGNORE, TextDataModule
from ablations.model import GPT, ModelConfig

MODES = {
    "fixed": {"packing": "fixed", "batch_size": 32},
    "buckets": {"packing": "buckets", "max_tokens": 2048},
    "sorted": {"packing": "sorted", "max_tokens": 2048},
}  # fmt: skip  (E07's quick-tier arms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="stdlib_prose")
    parser.add_argument("--path", default=None)
    parser.add_argument("--tokenizer", default="byte")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=10, help="batches of one mode per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {}
    for name, overrides in MODES.items():
        data = TextDataModule(args.corpus, args.tokenizer, args.path, block_size=64, seed=0, **overrides)
        data.setup()
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=data.tokens.vocab_size, block_size=64, n_layer=4, d_model=128, n_head=4))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        runs[name] = {"batches": itertools.cycle(data.train_dataloader()), "model": model, "optimizer": optimizer,
                      "seconds": 0.0, "real": 0, "slots": 0}  # fmt: skip
    for _ in range(args.rounds):
        for run in runs.values():
            for _ in range(args.chunk):
                x, y = next(run["batches"])
                start = time.perf_counter()
                loss = F.cross_entropy(run["model"](x).flatten(0, 1), y.flatten(), ignore_index=IGNORE)
                loss.backward()
                run["optimizer"].step()
                run["optimizer"].zero_grad(set_to_none=True)
                run["seconds"] += time.perf_counter() - start
                run["real"] += int((y != IGNORE).sum())
                run["slots"] += y.numel()
    fixed = runs["fixed"]["real"] / runs["fixed"]["seconds"]
    print(f"{args.corpus}: {args.rounds} rounds x {args.chunk} batches per mode, {args.threads} threads")
    for name, run in runs.items():
        speed = run["real"] / run["seconds"]
        print(f"  {name:8} {speed:9,.0f} real tokens/s  padding {1 - run['real'] / run['slots']:.3f}  "
              f"speed / fixed {speed / fixed:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
