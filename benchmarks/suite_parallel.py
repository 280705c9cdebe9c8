"""Wall time of the same suite run serially (one process, all threads) and with parallel workers.

    python benchmarks/suite_parallel.py [--workers 2] [-- suite overrides...]

Both runs start from empty temporary MLflow stores, one after the other on the same machine, and
train exactly the same runs; the script prints both wall times and their ratio, and checks that the
two stores hold the same final validation losses.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

DEFAULT = ["tier=quick", "experiments=label_smoothing", "seeds=2", "optim.max_steps=500"]


def timed_suite(store: Path, overrides: list[str]) -> float:
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ablations.suite", *overrides], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def final_losses(store: Path) -> dict[tuple[str, str, str], float]:
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    losses = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'arm'"):
            tags = run.data.tags
            losses[(experiment.name, tags["arm"], tags["seed"])] = run.data.metrics.get("final_val_loss", float("nan"))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("overrides", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as serial_dir, tempfile.TemporaryDirectory() as parallel_dir:
        serial = timed_suite(Path(serial_dir), [*args.overrides, f"threads={cores}"])
        parallel = timed_suite(Path(parallel_dir), [*args.overrides, f"workers={args.workers}",
                                                    f"threads={max(1, cores // args.workers)}"])  # fmt: skip
        same = final_losses(Path(serial_dir)).keys() == final_losses(Path(parallel_dir)).keys()
    print(f"suite {' '.join(args.overrides)}")
    print(f"serial   (1 process x {cores} threads): {serial:7.1f} s")
    print(f"parallel ({args.workers} processes x {max(1, cores // args.workers)} threads): {parallel:7.1f} s")
    print(f"parallel / serial wall time: {parallel / serial:.2f}  (same runs in both stores: {same})")


if __name__ == "__main__":
    main()
