"""Give the arm runs made before ablations.health their baselines, last-quarter drop and health tag.

    .venv/bin/python scripts/backfill_health.py [--data-dir ../shared/data]

Runs made since log these themselves (ablations.run.train_arm). An older run gets the same numbers
computed the same way from its own corpus, split as it was then: every run before the document split of the
standard-library corpora used the first 90 % / last 10 % split, so the corpus is split that way here. A run
whose corpus cannot be rebuilt with the sha256 it recorded is left alone and named. Idempotent.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from mlflow.entities import Metric

from ablations import tracking
from ablations.data import load_corpus, tokenize
from ablations.health import HEALTH_TAG, LAST_QUARTER_DROP, baselines, last_quarter_drop, run_health


def corpus_path(params: dict[str, str], data_dir: Path) -> str | None:
    """The run's corpus file, found where it was or, by name, under data_dir."""
    path = params.get("data.path")
    if path in (None, "None", "null"):
        return None
    candidate = Path(path) if Path(path).is_absolute() else tracking.ROOT / path
    if candidate.exists():
        return str(candidate)
    found = sorted(data_dir.rglob(Path(path).name))
    return str(found[0]) if found else str(candidate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=tracking.ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    client = tracking.client()
    cache: dict[tuple[str, str], dict[str, float]] = {}
    done = skipped = 0
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], f"tags.`{tracking.ROLE}` = '{tracking.ARM_ROLE}'",
                                      max_results=50_000):  # fmt: skip
            if "baseline_unigram" in run.data.metrics or run.info.status != "FINISHED":
                continue
            params, tags = run.data.params, run.data.tags
            key = (tags["corpus_sha256"], params["data.tokenizer"])
            if key not in cache:
                corpus = load_corpus(params["data.corpus"], corpus_path(params, args.data_dir), ".cache")
                if corpus.sha256 != key[0]:
                    print(f"skipped {run.info.run_id}: its corpus {params['data.corpus']} is not the one it recorded")
                    skipped += 1
                    continue
                tokens = tokenize(dataclasses.replace(corpus, documents=()), key[1], ".cache")  # the split then
                cache[key] = baselines(tokens.train, tokens.val, tokens.vocab_size)
            curve = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")]
            metrics = cache[key] | {LAST_QUARTER_DROP: last_quarter_drop(curve)}
            step = max((step for step, _ in curve), default=0)
            now = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items() if v == v])
            status = tags.get("ablations.status", "finished")
            client.set_tag(run.info.run_id, HEALTH_TAG, run_health(status, run.data.metrics | metrics))
            done += 1
    print(f"backfilled {done} runs, skipped {skipped}; baselines of {len(cache)} corpus x tokenizer pairs")


if __name__ == "__main__":
    main()
