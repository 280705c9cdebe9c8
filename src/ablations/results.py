"""Export the MLflow store to `results/`: runs.csv, verdicts.csv, trends.csv and curves.csv.

    python -m ablations.results [out=results]

The export is a pure function of the store: the same store gives byte-identical files. Each
(experiment, tier, corpus, arm, seed) appears once: its latest finished run, with its health (learned,
plateau, diverged: ablations.health) and, where the experiment asks for one, its learning check. Verdicts
are recomputed from runs.csv with the hypotheses in experiments/<name>.yaml, so anyone can check them by
hand: each with its test, its raw and its false-discovery-adjusted verdict, the scale it was measured at,
the health of both arms, whether an amendment superseded it, and whether it awaits runs (its runs predate a rerun
at the current numerics version, or its arms lack seeds): then it is not counted. trends.csv holds the scale trend
tests.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ablations import settings, tracking
from ablations.decisions import ArmRun, Trend, scale_verdicts, trends, verdicts_for
from ablations.files import atomic_file
from ablations.health import learning_check, run_health
from ablations.metrics import curves_csv_metrics, per_step
from ablations.numerics import NUMERICS_VERSION
from ablations.parent_run import is_evidence
from ablations.spec import ExperimentSpec, experiment_names, load_spec, off_scale
from ablations.verdict import Hypothesis, Verdict, adjust

GROUP = ["experiment", "tier", "corpus"]
KEY = [*GROUP, "arm", "seed"]
RUN_COLUMNS = KEY + ["seeds_planned", "status", "health", "learning_check", "corpus_sha256", "tokenizer"]
# The params a reader needs beside the metrics (the full config stays in MLflow).
# Every experiment's scale axis among them: the trend reads the axis's value of each run from here.
EXPORTED_PARAMS = ("model.", "optim.", "data.batch_size", "data.packing", "data.max_tokens", "data.mix",
                   "data.domain_tokens_limit", "data.train_tokens_limit", "train.keep_best", "trainer.precision",
                   "trainer.accelerator")  # fmt: skip
PROVENANCE = ["run_id", "parent_run_id", "git_commit", "code_version", "hardware", "start_time", "copied_from"]


def store_runs(mlflow_client: MlflowClient) -> pd.DataFrame:
    """Every finished arm run of every known experiment in the store, every code version, sorted by KEY and time."""
    known = set(experiment_names())
    arm_runs = f"tags.`{tracking.ROLE}` = '{tracking.ARM_ROLE}' and attributes.status = 'FINISHED'"
    rows = [
        _row(run)
        for experiment in mlflow_client.search_experiments()
        if experiment.name in known
        for run in mlflow_client.search_runs([experiment.experiment_id], filter_string=arm_runs, max_results=50_000)
    ]
    return pd.DataFrame(rows).sort_values(KEY + ["start_time", "run_id"]) if rows else pd.DataFrame()


def _row(run: Run) -> dict:
    """A run as a row of runs.csv: its tags that say what it is, its summary metrics and exported params, provenance."""
    tags = run.data.tags
    return {
        **{name: tags[name] for name in ("experiment", "tier", "corpus", "arm")},
        "seed": int(tags["seed"]),
        # the seeds of the invocation that trained it: a group stopped part-way waits for the rest
        "seeds_planned": float(run.data.params.get("seeds", "nan")),
        "status": tags["ablations.status"],
        "corpus_sha256": tags["corpus_sha256"],
        # the run's own param: the tag was the command line's ("byte" on E18's BPE runs, before that was fixed)
        "tokenizer": run.data.params.get("data.tokenizer", tags["tokenizer"]),
        **{k: v for k, v in run.data.metrics.items() if not per_step(k)},
        **{k: v for k, v in run.data.params.items() if k.startswith(EXPORTED_PARAMS)},
        "run_id": run.info.run_id,
        "parent_run_id": tags.get("mlflow.parentRunId", ""),
        **{name: tags[name] for name in ("git_commit", "code_version", "hardware")},
        "start_time": run.info.start_time,
        "copied_from": tags.get(tracking.COPIED_FROM, ""),  # another experiment's run: its time is counted there
    }


def finished_runs(
    mlflow_client: MlflowClient, every: pd.DataFrame | None = None, version: str = "current"
) -> pd.DataFrame:
    """One row per finished arm run (the latest of any repeats), sorted by KEY: of each group's current numerics
    version, or ("previous") of the version before it, in the groups that have been rerun. `every`: store_runs's
    table, if already read."""
    every = store_runs(mlflow_client) if every is None else every
    frame = every if every.empty else (current_numerics if version == "current" else previous_numerics)(every)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + PROVENANCE)
    frame = frame.drop_duplicates(KEY, keep="last").reset_index(drop=True)
    specs = {name: load_spec(name) for name in frame["experiment"].unique()}
    frame["health"] = [run_health(r.status, _metrics(r)) for r in frame.itertuples(index=False)]
    frame["learning_check"] = [
        run_learning_check(specs[r.experiment], r.status, _metrics(r)) for r in frame.itertuples(index=False)
    ]
    metrics = sorted(set(frame.columns) - set(RUN_COLUMNS) - set(PROVENANCE))
    return frame[RUN_COLUMNS + metrics + PROVENANCE]


def current_numerics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, tier, corpus), only the runs of the numerics version of the group's latest run: a verdict
    never mixes runs of code that computes different numbers. While a group is being rerun at a new version, its
    hypotheses whose arms have no new runs yet are left out (with a warning), not decided on the old runs."""
    newest = frame.loc[frame.groupby(GROUP)["start_time"].idxmax(), [*GROUP, "code_version"]]
    return frame.merge(newest, on=[*GROUP, "code_version"])  # an inner merge keeps frame's order


def previous_numerics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per group rerun at a new numerics version, the runs of the version before it (its newest other version):
    what the rerun replaced."""
    older = frame[~frame["run_id"].isin(current_numerics(frame)["run_id"])]
    return older if older.empty else current_numerics(older)


def _metrics(row: tuple) -> dict[str, float]:
    """A runs.csv row's values, without the blanks of metrics it does not have."""
    return {k: v for k, v in row._asdict().items() if pd.notna(v)}


def run_learning_check(spec: ExperimentSpec, status: str, metrics: dict[str, float]) -> str:
    """passed, failed or unknown for a finished run that trained, in an experiment with a learning check; "" for a
    run that trained nothing (a decoded, quantized or pruned model, evaluated), a diverged one, or no check."""
    if not spec.learning_check or status != "finished" or not metrics.get("train_tokens"):
        return ""
    return learning_check(metrics, spec.learning_check["max_drop"])


def _arm_runs(group: pd.DataFrame) -> list[ArmRun]:
    return [ArmRun(r.arm, r.seed, r.run_id, r.status, _metrics(r), True) for r in group.itertuples(index=False)]


def _tier_value(spec: ExperimentSpec, group: pd.DataFrame) -> float | None:
    """The scale axis's value of the experiment's own arms in this group (their param)."""
    if spec.scale is None or spec.scale.axis not in group:
        return None
    own = group.loc[~group["arm"].map(off_scale).astype(bool), spec.scale.axis].dropna()
    return float(own.iloc[0]) if len(own) else None


def trained_here(group: pd.DataFrame) -> pd.DataFrame:
    """The runs trained for this experiment, not copied from another (whose wall time counts there)."""
    return group if "copied_from" not in group else group[group["copied_from"].isna() | group["copied_from"].eq("")]


def _measured(h: Hypothesis, group: pd.DataFrame) -> bool:
    """Whether every finished run of h's arms measured h's metric (a count is of health, always known)."""
    if h.test == "counts":
        return True
    finished = group[group["arm"].isin(h.measured_arms) & (group["status"] == "finished")]
    return all(m in group and bool(finished[m].notna().all()) for m in h.metrics)


def _left_out(where: str, why: str, hypotheses: dict[str, str]) -> None:
    """Warn that these hypotheses (id -> what they lack) are left out of verdicts.csv for one group of runs."""
    if hypotheses:
        lacking = ", ".join(f"{h} ({what})" for h, what in hypotheses.items())
        warnings.warn(f"{where}: left out of verdicts.csv, {why}: {lacking}", stacklevel=4)


def _group_verdicts(spec: ExperimentSpec, tier: str, corpus: str, group: pd.DataFrame) -> list[tuple[str, Verdict]]:
    """(scale, verdict) of every hypothesis with runs of both arms, and of the scaled ones at every axis value."""
    arm_runs, present = _arm_runs(group), set(group["arm"])
    where = f"{spec.name} [{tier}, {corpus}]"
    with_arms = [h for h in spec.hypotheses if set(h.measured_arms) <= present]
    armless = {h.id: ", ".join(sorted(set(h.measured_arms) - present)) for h in spec.hypotheses if h not in with_arms}
    _left_out(where, "arms without runs", armless)
    testable = [h for h in with_arms if _measured(h, group)]
    unmeasured = {h.id: ", ".join(h.metrics) for h in with_arms if h not in testable}
    _left_out(
        where, "metrics the finished runs did not measure (runs made before the hypothesis was added)", unmeasured
    )
    tier_value = _tier_value(spec, group)
    here = "" if tier_value is None else f"{spec.scale.label}={tier_value:g}"
    rows = [(here, v) for v in verdicts_for(testable, arm_runs)]
    for by_value in scale_verdicts(spec, tier, tier_value, arm_runs).values():
        rows += [(f"{spec.scale.label}={value:g}", v) for value, v in by_value.items() if value != tier_value]
    return rows


AWAITING = "awaiting runs"


def group_seeds(group: pd.DataFrame) -> int:
    """The seeds a group's arms should each have: as many as the runs trained for it were planned with (an invocation
    stopped part-way leaves every arm short), or as its runs have if that is more (a runs.csv without the column)."""
    planned = trained_here(group)["seeds_planned"].max() if "seeds_planned" in group else 0
    return max(group["seed"].nunique(), 0 if pd.isna(planned) else int(planned))


def awaiting(version: str, current_version: str | None, n_seeds: int, planned: int) -> str:
    """Why a verdict waits for runs before it counts ("" if it does not): its group's runs predate the code's numerics
    version (`current_version`; None: any version is current), or its arms have fewer seeds than their group plans."""
    if current_version is not None and version != current_version:
        return f"its runs are of numerics version {version}, made before the rerun at the current code and design"
    if n_seeds < planned:
        return f"its runs are incomplete: {n_seeds} of the {planned} seeds of its group so far"
    return ""


def verdicts(runs: pd.DataFrame, current_version: str | None = NUMERICS_VERSION) -> pd.DataFrame:
    """Every hypothesis of every experiment x tier x corpus that has runs (and the scaled ones at each axis value),
    with the Benjamini-Hochberg adjustment over each family: the evidence tiers' current pre-registered verdicts,
    apart from them those written after runs had been seen (ExperimentSpec.pre_registered: a post-hoc test must not
    move the threshold of the registered ones), and apart again the smoke tier's. A superseded hypothesis keeps its
    raw verdict and joins no family; so does one that awaits runs (`awaiting`: made before a rerun, or with seeds
    still missing), whose adjusted verdict reads "awaiting runs" until they exist."""
    rows, decided = [], []
    for (name, tier, corpus), group in runs.groupby(GROUP, sort=True):
        spec = load_spec(name)
        statements = {h.id: h for h in spec.hypotheses}
        version = str(group["code_version"].iloc[0])  # one per group: finished_runs keeps the newest version's
        for scale, v in _group_verdicts(spec, tier, corpus, group):
            h = statements[v.hypothesis]
            rows.append({
                "experiment": name, "experiment_id": spec.id, "tier": tier, "corpus": corpus,
                "hypothesis": h.id, "scale": scale, "claim_lines": spec.claim["lines"], "source": h.source,
                "statement": h.statement, "superseded": spec.superseded(h.id), "code_version": version,
                "pre_registered": spec.pre_registered(h.id, off_scale=off_scale(v.treatment)),
                "awaiting": awaiting(version, current_version, v.n_seeds, group_seeds(group)),
                "wall_seconds": float(trained_here(group)["wall_seconds"].sum()),
                "evidence": is_evidence(tier),  # False: a smoke-tier verdict, a plumbing check
            })  # fmt: skip
            decided.append(v)
    for kind in itertools.product((True, False), repeat=2):  # (evidence, pre_registered)
        family = [i for i, row in enumerate(rows) if (row["evidence"], row["pre_registered"]) == kind and _counted(row)]
        for i, v in zip(family, adjust([decided[i] for i in family]), strict=True):
            decided[i] = v
    for row, v in zip(rows, decided, strict=True):
        if not _counted(row):
            v = replace(v, verdict_adjusted="superseded" if row["superseded"] else AWAITING)
        row |= {k: val for k, val in v.as_dict().items() if k != "hypothesis"}
    columns = ["experiment", "experiment_id", "tier", "corpus", "hypothesis", "scale", "claim_lines", "source",
               "statement", *[f.name for f in fields(Verdict) if f.name != "hypothesis"], "superseded",
               "pre_registered", "code_version", "awaiting", "wall_seconds", "evidence"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _counted(row: dict) -> bool:
    """Whether a verdict joins its false-discovery family: a current hypothesis decided on current runs."""
    return not row["superseded"] and not row["awaiting"]


def rerun_changes(replaced: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Each hypothesis decided both on the runs a rerun replaced and on the rerun's (`after`: verdicts.csv's table):
    the verdict before and after. A hypothesis whose rerun still awaits seeds is not compared yet."""
    keys = ["experiment", "experiment_id", "tier", "corpus", "hypothesis", "scale"]
    shown = ["verdict_adjusted", "effect", "ci_low", "ci_high", "n_seeds", "superseded"]
    columns = [*keys, *(f"{c}_before" for c in shown), "code_version_before", *(f"{c}_after" for c in shown)]
    if replaced.empty:
        return pd.DataFrame(columns=columns)
    with warnings.catch_warnings():  # hypotheses the replaced runs cannot decide are simply not compared
        warnings.simplefilter("ignore")
        before = verdicts(replaced, current_version=None)  # each adjusted within the replaced runs' own family
    before = before[before["awaiting"] == ""]  # an old group short of seeds has no verdict to compare
    versions = replaced.groupby(GROUP)["code_version"].first().rename("code_version_before").reset_index()
    before = before.merge(versions, on=GROUP)
    after = after[after["awaiting"] == ""]
    both = before[[*keys, *shown, "code_version_before"]].merge(after[[*keys, *shown]], on=keys,
                                                                   suffixes=("_before", "_after"))  # fmt: skip
    return both[columns].sort_values(keys).reset_index(drop=True)


def trend_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The trend test of every scaled hypothesis (ablations.decisions) per experiment x tier x corpus, with the reason
    it awaits runs, as verdicts have (an older numerics version, or an arm at some axis value short of seeds)."""
    rows = []
    for (name, tier, corpus), group in runs.groupby(GROUP, sort=True):
        spec = load_spec(name)
        if spec.scale is None:
            continue
        tier_value, version = _tier_value(spec, group), str(group["code_version"].iloc[0])
        for t in trends(spec, tier, tier_value, _arm_runs(group)):
            measured = next(h for h in spec.hypotheses if h.id == t.hypothesis).measured_arms
            arms = [*measured, *(spec.scale.arm_name(a, v) for v in spec.scale.values[tier] if v != tier_value
                                 for a in measured)]  # fmt: skip
            seeds = min(int((group["arm"] == arm).sum()) for arm in arms)
            rows.append({"experiment": name, "experiment_id": spec.id, "tier": tier, "corpus": corpus,
                         **t.as_dict(), "awaiting": awaiting(version, NUMERICS_VERSION, seeds, group_seeds(group)),
                         "evidence": is_evidence(tier)})  # fmt: skip
    columns = ["experiment", "experiment_id", "tier", "corpus", *[f.name for f in fields(Trend)], "awaiting",
               "evidence"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def curves(mlflow_client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    rows = [
        {**{k: getattr(r, k) for k in KEY}, "run_id": r.run_id, "metric": m.key, "step": m.step, "value": m.value}
        for r in runs.itertuples(index=False)
        for metric in curves_csv_metrics()
        for m in mlflow_client.get_metric_history(r.run_id, metric)
    ]
    frame = pd.DataFrame(rows, columns=KEY + ["run_id", "metric", "step", "value"])
    return frame.sort_values(KEY + ["metric", "step"]).reset_index(drop=True)


def export(out_dir: Path, mlflow_client: MlflowClient | None = None) -> dict[str, Path]:
    mlflow_client = mlflow_client or tracking.client()
    out_dir.mkdir(parents=True, exist_ok=True)
    every = store_runs(mlflow_client)
    runs, replaced = finished_runs(mlflow_client, every), finished_runs(mlflow_client, every, "previous")
    decided = verdicts(runs)
    tables = {"runs.csv": runs, "verdicts.csv": decided, "trends.csv": trend_table(runs),
              "curves.csv": curves(mlflow_client, runs),
              "verdicts_before_rerun.csv": rerun_changes(replaced, decided)}  # fmt: skip
    written = {}
    for name, table in tables.items():
        path = out_dir / name
        with atomic_file(path, "w") as f:  # a reader never sees half a file
            table.to_csv(f, index=False, lineterminator="\n")
        written[name] = path
    return written


@dataclass
class ResultsSettings:
    out: Path = tracking.ROOT / "results"


def main(argv: list[str]) -> None:
    chosen = settings.parse(argv, ResultsSettings(), __doc__)
    for path in export(chosen.out).values():
        print(f"wrote {path} ({sum(1 for _ in path.open()) - 1} rows)")


if __name__ == "__main__":
    main(sys.argv[1:])
