"""Run one experiment: every arm x seed as a nested MLflow run, then the pre-registered verdicts.

An experiment file (experiments/<name>.yaml) declares the claim, the hypotheses and the arms; each arm
is a set of config overrides applied to the resolved base config. Nothing here knows any one
experiment: a new claim is a new YAML file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ablations import tracking
from ablations.decisions import ArmRun, Trend, trends, unmeasured, verdicts_for
from ablations.health import PLATEAU_MARGIN
from ablations.metrics import value_of
from ablations.parent_run import EVIDENCE_TAG, NOTE_TAG, ParentRun, is_evidence, log_summary, note, where_to_look
from ablations.plan import Invocation, invocation, scale_value
from ablations.resources import available_cores
from ablations.run import train_arm
from ablations.spec import BASE, ExperimentSpec
from ablations.verdict import Verdict

console = Console(width=None if Console().is_terminal else 140)


def run_experiment(
    cfg: DictConfig, on_run: Callable[[ArmRun], None] | None = None, shard: tuple[int, int] | None = None
) -> list[Verdict]:
    """Train every arm x seed of cfg.experiment under one parent run and return the verdicts.

    on_run is called after each arm x seed (trained or reused), e.g. to advance a progress display.
    shard=(i, n) trains only the i-th of n disjoint shares of the runs (parallel workers) and returns
    no verdicts: a later call over all runs reuses them and decides.
    """
    job = invocation(cfg, shard)  # bad input stops here, before the store is touched
    torch.set_num_threads(cfg.threads or available_cores())
    mlflow_client = tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, job.spec.name)
    tags = tracking.environment_tags() | job.tags
    evidence = is_evidence(cfg.tier)
    parent_tags = {tracking.ROLE: tracking.EXPERIMENT_ROLE, "arms": ",".join(job.arms), "seeds": str(cfg.seeds),
                   EVIDENCE_TAG: "yes" if evidence else f"no: {cfg.tier} tier, plumbing only"}  # fmt: skip
    parent = ParentRun(mlflow_client, exp_id, job.parent_name, tags | parent_tags)
    started = time.perf_counter()
    try:
        runs = train_runs(job, mlflow_client, exp_id, tags, parent, on_run)
        parent.settle([r.key for r in runs])
        lacking = unmeasured(job.spec.hypotheses, runs)
        decidable = [h for h in job.spec.hypotheses if h.id not in lacking]
        verdicts = [] if shard is not None else verdicts_for(decidable, runs)
        if shard is None and not parent.reused:
            log_summary(mlflow_client, parent.id(), job.spec, runs, verdicts, time.perf_counter() - started)
            mlflow_client.set_tag(parent.id(), NOTE_TAG, note(job.spec, cfg.tier, cfg.data.corpus, verdicts))
        parent.end("FINISHED")
    except BaseException:
        parent.end(RunStatus.to_string(RunStatus.KILLED))
        raise
    if shard is None:
        print_verdicts(job.spec, verdicts, evidence)
        if lacking:
            console.print(f"not decided, their runs lack the metric (made before it was logged): "
                          f"{'; '.join(f'{h} ({m})' for h, m in lacking.items())}", highlight=False)  # fmt: skip
        print_trends(job.spec, trends(job.spec, cfg.tier, scale_value(job.spec, cfg), runs))
        for line in where_to_look(exp_id, parent.id(), parent.reused):
            console.print(line, highlight=False)
    return verdicts


def train_runs(
    job: Invocation,
    mlflow_client: MlflowClient,
    exp_id: str,
    tags: dict[str, str],
    parent: ParentRun,
    on_run: Callable[[ArmRun], None] | None,
) -> list[ArmRun]:
    """Train or reuse each run in order; with two stages, each seed's base first, every other arm from it."""
    console.print(f"[bold]{job.spec.id} {job.spec.name}[/]: {len(job.arms)} arms x {job.cfg.seeds} seeds, "
                  f"tier {job.cfg.tier}, corpus {job.cfg.data.corpus}")  # fmt: skip
    runs, base_keys = [], {}
    width = max((len(run_cfg.arm) for run_cfg in job.run_cfgs), default=10)  # the arm names line up
    for run_cfg in job.run_cfgs:
        if (base := job.spec.base_arm(run_cfg.arm)) is not None:
            run_cfg.init_from = base_keys[base, run_cfg.seed]  # bases come first: arms_for and scale_arms see to it
        run = train_arm(run_cfg, mlflow_client, exp_id, tags, parent.id)
        if run.arm.partition("@")[0] == BASE:
            if run.status != "finished":
                raise ValueError(f"the {run.arm} model of seed {run.seed} diverged: no arm can start from it")
            base_keys[run.arm, run.seed] = run.key
        runs.append(run)
        print_run(run, width)
        if on_run:
            on_run(run)
    return runs


def print_run(run: ArmRun, width: int = 10) -> None:
    loss = value_of(run.status, run.metrics, "final_val_loss")
    note = "reused finished run" if run.reused else f"{run.metrics['wall_seconds']:.0f} s"
    note += f", copied from run {run.copied_from} of another experiment" if run.copied_from else ""
    if run.status == "diverged":
        note += f", diverged at step {run.metrics['diverged_step']:.0f}: drawn at the uniform loss"
    elif run.health == "plateau":
        note += f", not {PLATEAU_MARGIN:.0%} below the unigram loss {run.metrics['baseline_unigram']:.3f}: a plateau"
    domain = run.metrics.get("final_domain_val_loss")
    losses = f"final_val_loss {loss:.4f}" + (f" final_domain_val_loss {domain:.4f}" if domain is not None else "")
    console.print(f"  {run.arm:>{width}} seed {run.seed}: {run.status:8} {losses}  ({note})")


def print_verdicts(spec: ExperimentSpec, verdicts: list[Verdict], evidence: bool = True) -> None:
    title = f"{spec.id} {spec.name}: {spec.title}"
    if not evidence:
        title += "\n[bold]smoke tier: these verdicts check the plumbing and are not evidence about the claim[/]"
    caption = "p: this experiment alone; `make results` adjusts it over the whole report (FDR)"
    table = Table(title=title, caption=caption)
    for column in ("hypothesis", "test", "treatment vs control", "effect [CI]", "min effect", "seeds", "p"):
        table.add_column(column)
    table.add_column("verdict", no_wrap=True)
    table.add_column("why")
    colour = {"supported": "green", "refuted": "red", "inconclusive": "yellow", "not decided": "magenta"}
    for v in verdicts:
        why = v.reason + (f" (superseded {superseded})" if (superseded := spec.superseded(v.hypothesis)) else "")
        level = "" if math.isnan(v.ci_level) else f" {v.ci_level:.0%}"
        table.add_row(
            v.hypothesis,
            f"{v.test}: {v.metric} ({v.direction})",
            f"{v.treatment} vs {v.control}",
            f"{v.effect:+.4g} [{v.ci_low:+.4g}, {v.ci_high:+.4g}]{level}",
            f"{v.min_effect:g}",
            str(v.n_seeds),
            "" if math.isnan(v.p_value) else f"{v.p_value:.3g}",
            f"[{colour[v.verdict]}]{v.verdict}[/]" if evidence else f"{v.verdict} (not evidence)",
            why,
        )
    console.print(table)


def print_trends(spec: ExperimentSpec, scale_trends: list[Trend]) -> None:
    if not scale_trends:
        return
    table = Table(title=f"{spec.id}: the scaled hypotheses along {spec.scale.axis} (ablations.decisions)")
    for column in ("hypothesis", "values", "slope per doubling [95% CI]", "expected", "trend"):
        table.add_column(column)
    for t in scale_trends:
        outcome = t.trend + (f" ({t.reason})" if t.reason else "" if t.matches else " (not as expected)")
        table.add_row(t.hypothesis, t.values, f"{t.slope:+.4g} [{t.slope_low:+.4g}, {t.slope_high:+.4g}]",
                      t.expected, outcome)  # fmt: skip
    console.print(table)
