"""Baseline health, side by side with nanoGPT's train.py on the same machine, in one run.

    python benchmarks/baseline_vs_nanogpt.py --nanogpt /tmp/nanoGPT --data ../shared/data/tinyshakespeare/input.txt

Both train EXPERIMENTS.md's "Conventions" configuration on TinyShakespeare at character level
(4 layers, 4 heads, d_model 128, context 64, batch 12, 2000 steps, AdamW 1e-3 -> 1e-4 cosine, 100
warmup steps, dropout 0) with the same number of threads, one after the other. Printed: the final
validation loss of each and their training throughput in tokens/s (evaluation time excluded), and
the ratio. nanoGPT is never part of this project: fetch it into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
CONVENTIONS = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000)


# nanoGPT estimates its validation loss on 20 random batches; the suite uses the whole split. Score
# nanoGPT's final weights the suite's way too, so that both losses measure the same thing.
FULL_SPLIT_EVAL = """
import numpy as np, torch, torch.nn.functional as F
from model import GPT, GPTConfig
ckpt = torch.load("out-shakespeare-char/ckpt.pt", map_location="cpu", weights_only=True)
model = GPT(GPTConfig(**ckpt["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
model.eval()
val = torch.from_numpy(np.fromfile("data/shakespeare_char/val.bin", dtype=np.uint16).astype(np.int64))
T = ckpt["model_args"]["block_size"]
n = (len(val) - 1) // T
x, y = val[: n * T].view(n, T), val[1 : n * T + 1].view(n, T)
with torch.no_grad():
    total = sum(F.cross_entropy(model(xb, yb)[0].flatten(0, 1), yb.flatten(), reduction="sum").item()
                for xb, yb in zip(x.split(64), y.split(64)))
print(total / y.numel())
"""


def run_nanogpt(nanogpt: Path, data: Path, threads: int, seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="nanogpt-"))
    shutil.copytree(nanogpt, work / "nanoGPT")
    repo = work / "nanoGPT"
    # train.py hard-codes torch.manual_seed(1337 + seed_offset): shift it in this temporary copy only.
    train = repo / "train.py"
    source, seeding = train.read_text(), "torch.manual_seed(1337 + seed_offset)"
    if seeding not in source:
        raise SystemExit(f"this nanoGPT's train.py does not seed with {seeding}")
    train.write_text(source.replace(seeding, f"torch.manual_seed({1337 + seed} + seed_offset)"))
    shutil.copy(data, repo / "data/shakespeare_char/input.txt")
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    subprocess.run(
        [sys.executable, "data/shakespeare_char/prepare.py"], cwd=repo, check=True, env=env, capture_output=True
    )
    c = CONVENTIONS
    args = [
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        f"--block_size={c['block_size']}",
        f"--batch_size={c['batch_size']}",
        f"--n_layer={c['n_layer']}",
        f"--n_head={c['n_head']}",
        f"--n_embd={c['n_embd']}",
        f"--max_iters={c['max_iters']}",
        f"--lr_decay_iters={c['max_iters']}",
        "--dropout=0.0",
        "--always_save_checkpoint=True",  # so ckpt.pt holds the final weights, not the best ones
    ]
    run = dict(cwd=repo, check=True, env=env, capture_output=True, text=True)
    out = subprocess.run([sys.executable, "train.py", *args], **run)
    full_split_loss = float(subprocess.run([sys.executable, "-c", FULL_SPLIT_EVAL], **run).stdout.split()[-1])
    step_ms = {int(i): float(t) for i, t in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", out.stdout)}
    evals = {int(s): float(v) for s, v in re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", out.stdout)}
    # nanoGPT times evaluation inside the step that follows it: leave those steps out.
    train_ms = [t for i, t in step_ms.items() if i % 250 != 0]
    tokens_per_sec = c["batch_size"] * c["block_size"] / (sum(train_ms) / len(train_ms) / 1000)
    shutil.rmtree(work)
    return {"val_loss": full_split_loss, "val_loss_20_batches": evals[max(evals)], "tokens_per_sec": tokens_per_sec}


def run_suite(data: Path, threads: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as store:
        env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
        code = f"""
import json, torch
from hydra import compose, initialize_config_dir
from ablations import tracking
from ablations.plan import arm_config
from ablations.run import train_arm
torch.set_num_threads({threads})
with initialize_config_dir(str(tracking.ROOT / "conf"), version_base="1.3"):
    cfg = compose("config", ["experiment=attention_heads", "tier=quick", "data=tinyshakespeare", "data.path={data}"])
client = tracking.client()
run = train_arm(arm_config(cfg, "baseline", {{}}, {seed}), client, tracking.experiment_id(client, "baseline"), {{}})
print(json.dumps({{"val_loss": run.metrics["final_val_loss"], "tokens_per_sec": run.metrics["train_tokens_per_sec"]}}))
"""
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--data", type=Path, required=True, help="TinyShakespeare input.txt")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each (nanoGPT's: 1337 + seed)")
    args = parser.parse_args()
    suite, reference = [], []
    for seed in range(args.seeds):  # alternated, so that both see the same machine over time
        suite.append(run_suite(args.data.resolve(), args.threads, seed))
        reference.append(run_nanogpt(args.nanogpt.resolve(), args.data.resolve(), args.threads, seed))
    print(f"{'':18} {'val loss':>9} {'tokens/s':>10}   (nanoGPT's own 20-batch estimate)")
    for name, runs in (("suite", suite), ("nanoGPT", reference)):
        for seed, run in enumerate(runs):
            estimate = f"   ({run['val_loss_20_batches']:.4f})" if "val_loss_20_batches" in run else ""
            print(f"{f'{name}, seed {seed}':18} {run['val_loss']:9.4f} {run['tokens_per_sec']:10.0f}{estimate}")
    losses = {name: [r["val_loss"] for r in runs] for name, runs in (("suite", suite), ("nanoGPT", reference))}
    speeds = {name: [r["tokens_per_sec"] for r in runs] for name, runs in (("suite", suite), ("nanoGPT", reference))}
    for name in losses:
        print(f"{f'{name}, mean':18} {statistics.mean(losses[name]):9.4f} {statistics.mean(speeds[name]):10.0f}")
    if args.seeds >= 2:
        interval = stats.ttest_ind(losses["suite"], losses["nanoGPT"], equal_var=False).confidence_interval(0.95)
        difference = statistics.mean(losses["suite"]) - statistics.mean(losses["nanoGPT"])
        print(f"val loss suite - nanoGPT: {difference:+.4f}, Welch 95% CI [{interval.low:+.4f}, {interval.high:+.4f}]")
    ratios = [s / r for s, r in zip(speeds["suite"], speeds["nanoGPT"], strict=True)]
    print(f"throughput ratio suite / nanoGPT, per seed pair: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"mean {statistics.mean(ratios):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
