"""Kill a suite run with SIGKILL at random moments, restart it, and check that nothing is lost or doubled.

    python scripts/fault_injection.py --kills 20 [--seed 0]

Runs a small smoke suite into a fresh temporary MLflow store: once uninterrupted (the reference),
then again in a second store, killed N times at random points and restarted until it completes.
Passes when the interrupted store ends with exactly one finished run per experiment x arm x seed,
and every final metric equals the reference run's, bit for bit.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

SUITE = [sys.executable, "-m", "ablations.suite", "tier=smoke", "seeds=2", "threads=1",
         "experiments=attention_heads,layernorm_vs_batchnorm,forgetting_data_mixing"]  # fmt: skip


def run_suite(store: Path, kill_after: float | None = None) -> bool:
    """Run the suite; with kill_after, SIGKILL it after that many seconds. True if it completed."""
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    process = subprocess.Popen(SUITE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    if process.returncode != 0:
        raise SystemExit(f"the suite failed with exit code {process.returncode}")
    return True


def finished(store: Path) -> dict[tuple[str, str, str], list[dict[str, float]]]:
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs(
            [experiment.experiment_id], filter_string="tags.`ablations.role` = 'arm' and attributes.status = 'FINISHED'"
        ):
            key = (experiment.name, run.data.tags["arm"], run.data.tags["seed"])
            metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("final_")}
            runs.setdefault(key, []).append(metrics)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=25.0, help="longest time before a kill, in seconds")
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 (kill times, not secrets)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        reference.mkdir()
        started = time.perf_counter()
        run_suite(reference)
        print(f"reference suite: {time.perf_counter() - started:.0f} s")
        expected = finished(reference)
        kills, stores, failures = 0, 0, []

        def check(store: Path) -> None:
            got = finished(store)
            duplicated = [key for key, runs in got.items() if len(runs) > 1]
            lost = sorted(set(expected) - set(got))
            different = [key for key in expected if key in got and got[key][0] != expected[key][0]]
            print(f"  store {stores}: {len(got)} arm x seed runs finished, {len(lost)} lost, "
                  f"{len(duplicated)} duplicated, {len(different)} differing from the reference")  # fmt: skip
            failures.extend(lost + duplicated + different)

        while True:
            stores += 1
            store = Path(tempfile.mkdtemp(dir=tmp))
            while kills < args.kills:
                delay = rng.uniform(1.0, args.max_delay)
                if run_suite(store, kill_after=delay):
                    break  # finished before the next kill: check it, then start over in a new store
                kills += 1
                so_far = sum(map(len, finished(store).values()))
                print(f"kill {kills}: SIGKILL after {delay:.1f} s; {so_far} runs finished so far")
            else:
                run_suite(store)
            check(store)
            if kills >= args.kills:
                break
        print(f"{kills} interruptions over {stores} stores: {len(failures)} runs lost, duplicated or different")
        if failures:
            raise SystemExit(f"FAILED: {failures}")
        print("passed")


if __name__ == "__main__":
    main()
