"""Export the MLflow store to `results/`: runs.csv, verdicts.csv and curves.csv.

    python -m ablations.results [--out results]

The export is a pure function of the store: the same store gives byte-identical files. Each
(experiment, tier, corpus, arm, seed) appears once: its latest finished run. Verdicts are recomputed
from runs.csv with the hypotheses in experiments/<name>.yaml, so anyone can check them by hand.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ablations import tracking
from ablations.experiment import ArmRun, load_spec, verdicts_for
from ablations.parent_run import is_evidence

RELIABILITY = ("reliability_accuracy", "reliability_confidence", "reliability_count")  # step = bin
TAILS = ("weight_tail", "activation_tail")  # step = quantile index (ablations.quantization.TAIL_QUANTILES)
CURVE_METRICS = ("train_loss", "val_loss", "val_ppl", "domain_val_loss", "domain_val_ppl", "grad_norm", "lr",
                 "tokens_per_sec", *RELIABILITY, *TAILS)  # fmt: skip
EXPORTED_CURVES = ("train_loss", "val_loss", "domain_val_loss", *RELIABILITY, *TAILS)
KEY = ["experiment", "tier", "corpus", "arm", "seed"]
RUN_COLUMNS = KEY + ["status", "corpus_sha256", "tokenizer"]
# The params a reader needs beside the metrics (the full config stays in MLflow).
EXPORTED_PARAMS = ("model.", "optim.", "data.batch_size", "trainer.precision", "trainer.accelerator")
PROVENANCE = ["run_id", "parent_run_id", "git_commit", "code_version", "hardware", "start_time"]


def finished_runs(mlflow_client: MlflowClient) -> pd.DataFrame:
    """One row per finished arm run in the store (the latest of any repeats), sorted by KEY."""
    known = {p.stem for p in (tracking.ROOT / "experiments").glob("*.yaml")}
    rows = []
    for experiment in mlflow_client.search_experiments():
        if experiment.name not in known:
            continue
        runs = mlflow_client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{tracking.ROLE}` = '{tracking.ARM_ROLE}' and attributes.status = 'FINISHED'",
            max_results=50_000,
        )
        for run in runs:
            tags = run.data.tags
            summary = {
                k: v for k, v in run.data.metrics.items() if k not in CURVE_METRICS and not k.startswith("probe/")
            }
            params = {k: v for k, v in run.data.params.items() if k.startswith(EXPORTED_PARAMS)}
            rows.append(
                {
                    "experiment": tags["experiment"],
                    "tier": tags["tier"],
                    "corpus": tags["corpus"],
                    "arm": tags["arm"],
                    "seed": int(tags["seed"]),
                    "status": tags["ablations.status"],
                    "corpus_sha256": tags["corpus_sha256"],
                    "tokenizer": tags["tokenizer"],
                    **summary,
                    **params,
                    "run_id": run.info.run_id,
                    "parent_run_id": tags.get("mlflow.parentRunId", ""),
                    "git_commit": tags["git_commit"],
                    "code_version": tags["code_version"],
                    "hardware": tags["hardware"],
                    "start_time": run.info.start_time,
                }
            )
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS + PROVENANCE)
    frame = pd.DataFrame(rows).sort_values(KEY + ["start_time", "run_id"])
    frame = frame.drop_duplicates(KEY, keep="last").reset_index(drop=True)
    metrics = sorted(set(frame.columns) - set(RUN_COLUMNS) - set(PROVENANCE))
    return frame[RUN_COLUMNS + metrics + PROVENANCE]


def verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """Every hypothesis of every experiment x tier x corpus that has runs."""
    rows = []
    for (name, tier, corpus), group in runs.groupby(["experiment", "tier", "corpus"], sort=True):
        spec = load_spec(name)
        arm_runs = [
            ArmRun(r.arm, r.seed, r.run_id, r.status, {k: v for k, v in r._asdict().items() if pd.notna(v)}, True)
            for r in group.itertuples(index=False)
        ]
        present = {r.arm for r in arm_runs}
        testable = [h for h in spec.hypotheses if {h.control, h.treatment} <= present]
        if untestable := [h for h in spec.hypotheses if h not in testable]:
            missing = ", ".join(f"{h.id} ({', '.join(sorted({h.control, h.treatment} - present))})" for h in untestable)
            warnings.warn(
                f"{name} [{tier}, {corpus}]: left out of verdicts.csv, arms without runs: {missing}", stacklevel=2
            )
        for h, v in zip(testable, verdicts_for(testable, arm_runs), strict=True):
            rows.append(
                {
                    "experiment": name,
                    "experiment_id": spec.id,
                    "tier": tier,
                    "corpus": corpus,
                    "hypothesis": h.id,
                    "claim_lines": spec.claim["lines"],
                    "source": h.source,
                    "statement": h.statement,
                    **{k: val for k, val in v.as_dict().items() if k != "hypothesis"},
                    "wall_seconds": float(group["wall_seconds"].sum()),
                    "evidence": is_evidence(tier),  # False: a smoke-tier verdict, a plumbing check
                }
            )
    return pd.DataFrame(rows)


def curves(mlflow_client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    rows = [
        {**{k: getattr(r, k) for k in KEY}, "run_id": r.run_id, "metric": m.key, "step": m.step, "value": m.value}
        for r in runs.itertuples(index=False)
        for metric in EXPORTED_CURVES
        for m in mlflow_client.get_metric_history(r.run_id, metric)
    ]
    frame = pd.DataFrame(rows, columns=KEY + ["run_id", "metric", "step", "value"])
    return frame.sort_values(KEY + ["metric", "step"]).reset_index(drop=True)


def export(out_dir: Path, mlflow_client: MlflowClient | None = None) -> dict[str, Path]:
    mlflow_client = mlflow_client or tracking.client()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = finished_runs(mlflow_client)
    tables = {"runs.csv": runs, "verdicts.csv": verdicts(runs), "curves.csv": curves(mlflow_client, runs)}
    written = {}
    for name, table in tables.items():
        path = out_dir / name
        tmp = path.with_suffix(".csv.tmp")
        table.to_csv(tmp, index=False, lineterminator="\n")
        tmp.replace(path)  # a reader never sees half a file
        written[name] = path
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=tracking.ROOT / "results")
    args = parser.parse_args()
    for path in export(args.out).values():
        print(f"wrote {path} ({sum(1 for _ in path.open()) - 1} rows)")


if __name__ == "__main__":
    main()
