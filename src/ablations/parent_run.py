"""The parent run of one invocation of an experiment: what MLflow's UI shows and where the console points.

A parent is created only when a run of the invocation has to be trained. When every run is reused,
the finished parent over exactly those runs (same run keys) is reused too, so running the same command
twice never leaves an empty duplicate. Its MLflow note (the run's description in the UI) holds the
claim, the hypotheses with their minimum effects and the verdict table in Markdown.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from ablations import tracking
from ablations.decisions import ArmRun, has_value
from ablations.figures import arm_comparison_figure, figure_from_spec
from ablations.health import reference_lines
from ablations.metrics import value_of
from ablations.spec import ExperimentSpec
from ablations.verdict import Verdict

RUNS_TAG = "ablations.run_keys_sha256"  # the runs a parent decided over
NOTE_TAG = "mlflow.note.content"  # MLflow's run description
EVIDENCE_TAG = "ablations.evidence"
NOT_EVIDENCE_TIERS = ("smoke",)  # plumbing checks: their verdicts say nothing about the claim


def is_evidence(tier: str) -> bool:
    return tier not in NOT_EVIDENCE_TIERS


def runs_digest(keys: Iterable[str]) -> str:
    return hashlib.sha256(",".join(sorted(keys)).encode()).hexdigest()


class ParentRun:
    """The parent of an invocation's arm runs, created on first need (the first run that trains)."""

    def __init__(self, client: MlflowClient, exp_id: str, name: str, tags: dict[str, str]):
        self.client, self.exp_id, self.name, self.tags = client, exp_id, name, tags
        self.run_id: str | None = None
        self.reused = False

    def id(self) -> str:
        if self.run_id is None:
            self.run_id = (
                self._resume_interrupted()
                or self.client.create_run(self.exp_id, run_name=self.name, tags=self.tags).info.run_id
            )
        return self.run_id

    def _resume_interrupted(self) -> str | None:
        """The parent that an interruption left KILLED for this same invocation (name, arms, seeds, numerics
        version), running again with this invocation's tags: one invocation's runs stay under one parent however
        often it was stopped and resumed."""
        same = " and ".join(f"tags.`{k}` = '{self.tags[k]}'" for k in ("arms", "seeds", "code_version"))
        found = self.client.search_runs(
            [self.exp_id],
            filter_string=f"attributes.run_name = '{self.name}' and attributes.status = 'KILLED' and {same}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            return None
        run_id = found[0].info.run_id
        self.client.update_run(run_id, status="RUNNING")
        for key, value in self.tags.items():
            self.client.set_tag(run_id, key, value)
        return run_id

    def settle(self, keys: list[str]) -> None:
        """Once every run is trained or reused: adopt the finished parent over exactly these runs when nothing
        was trained and one exists; otherwise make sure this invocation has its own, tagged with its runs."""
        digest = runs_digest(keys)
        if self.run_id is None:
            found = self.client.search_runs(
                [self.exp_id],
                filter_string=f"tags.`{RUNS_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                self.run_id, self.reused = found[0].info.run_id, True
                return
        self.client.set_tag(self.id(), RUNS_TAG, digest)

    def end(self, status: str) -> None:
        if self.run_id is not None and not self.reused:
            self.client.set_terminated(self.run_id, status)


def note(spec: ExperimentSpec, tier: str, corpus: str, verdicts: list[Verdict]) -> str:
    """The parent run's description: the claim, the hypotheses and the verdicts, in Markdown."""
    claim, hypotheses = spec.claim, spec.hypotheses
    lines = [
        f"## {spec.id} {spec.name}: {spec.title}",
        "",
        f"**Claim** (handbook lines {claim.get('lines', '?')}): {' '.join(str(claim.get('en', '')).split())}",
        "",
        f"**Tier** {tier}, **corpus** {corpus}."
        + ("" if is_evidence(tier) else " **Smoke tier: checks the plumbing; these verdicts are not evidence.**"),
        "",
        "| hypothesis | statement | test | metric | treatment vs control | min effect | effect [CI] | p | verdict "
        "| why |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    statements = {h.id: h.statement for h in hypotheses}
    for v in verdicts:
        level = "" if v.ci_level != v.ci_level else f" ({v.ci_level:.0%})"  # NaN: no interval (counts, facts)
        lines.append(
            f"| {v.hypothesis} | {statements[v.hypothesis]} | {v.test} | {v.metric} ({v.direction}) | {v.treatment} "
            f"vs {v.control} | {v.min_effect:g} | {v.effect:+.4g} [{v.ci_low:+.4g}, {v.ci_high:+.4g}]{level} "
            f"| {v.p_value:.3g} | {v.verdict} | {v.reason} |"
        )
    lines += ["", "p: this experiment alone; `make results` adjusts it over the report's family of tests (FDR)."]
    return "\n".join(lines)


def log_summary(
    mlflow_client: MlflowClient,
    parent_id: str,
    spec: ExperimentSpec,
    runs: list[ArmRun],
    verdicts: list[Verdict],
    seconds: float,
) -> None:
    """The decided parent's summary: effects and intervals as metrics, verdicts as tags, verdicts.json, figures."""
    now = int(time.time() * 1000)
    metrics = {"wall_seconds": seconds}
    for v in verdicts:
        metrics |= {
            f"{v.hypothesis}.effect": v.effect,
            f"{v.hypothesis}.ci_low": v.ci_low,
            f"{v.hypothesis}.ci_high": v.ci_high,
        }
    mlflow_client.log_batch(parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items() if math.isfinite(v)])
    for v in verdicts:
        mlflow_client.set_tag(parent_id, f"verdict.{v.hypothesis}", v.verdict)
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "verdicts.json"
        summary.write_text(json.dumps([v.as_dict() for v in verdicts], indent=2))
        mlflow_client.log_artifact(parent_id, str(summary))
        figure = Path(tmp) / f"{spec.name}.png"
        metric = spec.hypotheses[0].metric
        arm_comparison_figure(
            f"{spec.id} {spec.name}",
            metric,
            # arms that do not measure the metric (a two-stage base, say) are left out
            [(r.arm, r.seed, value_of(r.status, r.metrics, metric)) for r in runs if has_value(r, metric)],
            figure,
            reference_lines(metric, [r.metrics for r in runs]),
        )
        mlflow_client.log_artifact(parent_id, str(figure))
        for i, spec_figure in enumerate(spec.figures):
            path = Path(tmp) / f"{spec.name}-figure{i + 1}.png"
            figure_from_spec(spec, spec_figure, [(r.arm, r.seed, r.status, r.metrics) for r in runs], path)
            mlflow_client.log_artifact(parent_id, str(path))


def where_to_look(exp_id: str, parent_id: str, reused: bool) -> list[str]:
    """The console's closing lines: the parent run, how to open it in the UI, and the report."""
    uri = tracking.tracking_uri()
    page = f"/#/experiments/{exp_id}/runs/{parent_id}?workflowType=machine_learning"  # the UI's training view
    if uri.startswith(("http://", "https://")):
        open_it = f"{uri.rstrip('/')}{page}"
    elif uri == tracking.PROJECT_STORE_URI:
        open_it = f"make ui, then http://127.0.0.1:5000{page}"
    else:
        open_it = f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000{page}"
    return [
        f"MLflow parent run {parent_id}" + (" (reused: every run was already finished)" if reused else ""),
        f"  open it: {open_it}",
        "  the evidence report: make results report  (reports/evidence-report.pdf)",
    ]
