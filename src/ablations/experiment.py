"""Run one experiment: every arm x seed as a nested MLflow run, then the pre-registered verdicts.

An experiment file (experiments/<name>.yaml) declares the claim, the hypotheses and the arms; each arm
is a set of config overrides applied to the resolved base config. Nothing here knows any one
experiment: a new claim is a new YAML file.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from ablations import tracking
from ablations.data import TextDataModule, evaluation_windows
from ablations.decisions import ArmRun, Trend, trends, verdicts_for
from ablations.figures import arm_comparison_figure, grid_figure, scatter_figure
from ablations.health import (
    HEALTH_TAG,
    LAST_QUARTER_DROP,
    PLATEAU_MARGIN,
    baselines,
    last_quarter_drop,
    reference_lines,
    run_health,
)
from ablations.metrics import value_of
from ablations.model import ModelConfig
from ablations.parent_run import EVIDENCE_TAG, NOTE_TAG, ParentRun, is_evidence, note, where_to_look
from ablations.probes import PROBES
from ablations.quantization import QuantizeConfig, quantized_evaluation
from ablations.resources import available_cores
from ablations.spec import ExperimentSpec
from ablations.training import LanguageModelTask, OptimConfig, derived_metrics
from ablations.verdict import Verdict

console = Console(width=None if Console().is_terminal else 140)
# Config blocks that describe where and how a run executes, not what it computes.
NOT_IN_RUN_KEY = ("experiment", "seeds", "threads", "shard")


def arm_config(cfg: DictConfig, arm: str, overrides: dict[str, Any], seed: int) -> DictConfig:
    """The base config with the arm's overrides and the seed applied; unknown keys are an error."""
    run_cfg = cfg.copy()
    OmegaConf.set_struct(run_cfg, True)
    for key, value in overrides.items():
        if OmegaConf.select(run_cfg, key, default="<missing>") == "<missing>":
            raise KeyError(f"arm {arm!r} overrides {key!r}, which is not a config key")
        OmegaConf.update(run_cfg, key, value, merge=False)
    with open_dict(run_cfg):
        run_cfg.seed = seed
        run_cfg.arm = arm
    return run_cfg


# The only class a config may instantiate: `_target_` must never become a way to run arbitrary code.
TRAINER_TARGETS = ("pytorch_lightning.Trainer", "lightning.pytorch.Trainer")


def check_config(run_cfg: DictConfig) -> None:
    """Raise the first problem of a run's config (a bad value, a corpus that cannot be used)."""
    if run_cfg.trainer.get("_target_") not in TRAINER_TARGETS:
        raise ValueError(f"trainer._target_ must be one of {TRAINER_TARGETS}, not {run_cfg.trainer.get('_target_')!r}")
    if unknown := set(run_cfg.train.probes) - set(PROBES):
        raise ValueError(f"unknown probes {sorted(unknown)} in train.probes; valid: {', '.join(PROBES)}")
    TextDataModule(**run_cfg.data, block_size=run_cfg.model.block_size).load()
    ModelConfig(**{**run_cfg.model, "vocab_size": 256})
    OptimConfig(**run_cfg.optim)
    QuantizeConfig(**run_cfg.quantize)


def check_overrides(spec: ExperimentSpec, tier: str, overrides: list[str]) -> None:
    """Refuse a command-line override that the experiment sets again for some arm or for the whole tier:
    it would be overwritten there without a word."""
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in spec.tier_settings(tier):
            raise ValueError(f"{key} is set by {spec.name} for its {tier} tier itself: the override would be ignored")
        if spec.scale is not None and key == spec.scale.axis and tier in spec.scale.values:
            raise ValueError(f"{key} is {spec.name}'s scale axis at the {tier} tier: its scaled arms set it")
        if setters := [arm for arm, changes in spec.arms_for(tier).items() if key in changes]:
            named = ", ".join(setters[:6]) + (f" and {len(setters) - 6} more" if len(setters) > 6 else "")
            raise ValueError(
                f"{key} is set by arms of {spec.name} ({named}): the override would be overwritten there; "
                "drop it, or change the experiment file"
            )


def arm_run_key(run_cfg: DictConfig, corpus_hashes: dict[str, str]) -> str:
    """The run key of a run config whose budget is resolved: what it computes, not where or how it executes.

    The corpora enter by their content hashes, not by where they happen to lie on this machine.
    """
    key_config = {k: v for k, v in OmegaConf.to_container(run_cfg, resolve=True).items() if k not in NOT_IN_RUN_KEY}
    key_config["data"] = {k: v for k, v in key_config["data"].items() if k not in ("path", "domain_path", "cache_dir")}
    return tracking.run_key(key_config | corpus_hashes)


def run_params(run_cfg: DictConfig) -> dict[str, str]:
    """The resolved config as MLflow params: no cache folder (it changes no number) and corpus paths relative
    to the project, so that the committed store names no folder of the machine that made the run."""
    config = OmegaConf.to_container(run_cfg, resolve=True)
    config.pop("experiment")
    data = config["data"]
    data.pop("cache_dir")
    for key in ("path", "domain_path"):
        if data.get(key):
            data[key] = os.path.relpath(Path(data[key]).expanduser().resolve(), tracking.ROOT)
    return tracking.flatten(config)


def train_arm(
    run_cfg: DictConfig,
    mlflow_client: MlflowClient,
    exp_id: str,
    tags: dict[str, str],
    parent_id: Callable[[], str] | None = None,
) -> ArmRun:
    """Train and evaluate one arm x seed in its own MLflow run, or reuse the finished run with the same key.

    parent_id: called only when the run is trained, for the parent run to nest it under (created on demand).
    """
    arm, seed = run_cfg.arm, run_cfg.seed
    started = time.perf_counter()
    data = TextDataModule(**run_cfg.data, block_size=run_cfg.model.block_size, seed=seed)
    tokens = data.load()
    if run_cfg.data.epochs is not None:  # a number of passes over the documents fixes the step count
        run_cfg.optim.max_steps = run_cfg.data.epochs * data.steps_per_epoch()
    # Budgets and learning rates that depend on the batch: the params record the values actually used.
    # With a domain corpus a token budget counts domain tokens, so that every mix sees the same domain data.
    tokens_per_batch = run_cfg.data.batch_size * run_cfg.model.block_size
    if data.domain_tokens is not None and run_cfg.optim.max_tokens is not None:
        if data.domain_share == 0:
            raise ValueError("optim.max_tokens counts domain tokens, and data.mix has none: set optim.max_steps")
        tokens_per_batch *= data.domain_share
    optim = OptimConfig(**run_cfg.optim).for_batch(run_cfg.data.batch_size, tokens_per_batch)
    run_cfg.optim.update(max_steps=optim.max_steps, lr=optim.lr, min_lr=optim.min_lr, warmup_steps=optim.warmup_steps)
    hashes = {"corpus_sha256": tokens.sha256}
    if data.domain_tokens is not None:
        hashes["domain_sha256"] = data.domain_tokens.sha256
    key = arm_run_key(run_cfg, hashes)
    done = tracking.find_finished_run(mlflow_client, exp_id, key)
    if done is not None and run_cfg.save_checkpoint and not tracking.has_checkpoint(mlflow_client, done):
        done = None  # its weights are gone (checkpoints are never committed): train it again, superseding it
    if done is not None:
        status = done.data.tags["ablations.status"]
        return ArmRun(arm, seed, done.info.run_id, status, done.data.metrics, reused=True, key=key)
    tracking.mark_abandoned_runs(mlflow_client, exp_id, key)  # one process trains a given key at a time

    start_weights = None
    if run_cfg.init_from is not None:
        if (start := tracking.find_finished_run(mlflow_client, exp_id, run_cfg.init_from)) is None:
            raise tracking.CheckpointError(f"no finished run with key {run_cfg.init_from} to start {arm} from")
        start_weights = tracking.load_checkpoint(mlflow_client, start)
    pl.seed_everything(seed, verbose=False)
    model_cfg = ModelConfig(**{**run_cfg.model, "vocab_size": tokens.vocab_size})
    task = LanguageModelTask(model_cfg, optim, **run_cfg.train)
    if start_weights is not None:
        task.model.load_state_dict(start_weights)
    quantize_cfg = QuantizeConfig(**run_cfg.quantize)

    run_id = None
    try:  # from here on, an interruption at any point marks the run KILLED
        nesting = {"mlflow.parentRunId": parent_id()} if parent_id else {}
        run_id = mlflow_client.create_run(
            exp_id,
            run_name=f"{arm}/seed{seed}",  # the experiment is the MLflow experiment already
            tags=tags | nesting | {tracking.ROLE: tracking.ARM_ROLE, "ablations.run_key": key, "arm": arm,
                                   "seed": str(seed), **hashes},
        ).info.run_id  # fmt: skip
        params = run_params(run_cfg)
        params |= {"model.vocab_size": str(tokens.vocab_size), "model.n_params": str(task.model.num_params())}
        items = sorted(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            mlflow_client.log_batch(run_id, params=[_param(k, v) for k, v in items[i : i + 100]])
        logger = tracking.RunLogger(tracking_uri=mlflow_client.tracking_uri, run_id=run_id)
        devices = run_cfg.trainer.get("devices", 1)
        data_parallel = isinstance(devices, int) and devices > 1
        # With several devices the fit runs in processes of its own; this trainer evaluates on one device.
        single = {"devices": 1, "strategy": "auto"} if data_parallel else {}
        trainer = instantiate(run_cfg.trainer, **single, logger=logger, **trainer_options(run_cfg))
        if run_cfg.optim.max_steps > 0 and data_parallel:
            _fit_data_parallel(run_cfg, run_id, task, mlflow_client.tracking_uri)
        elif run_cfg.optim.max_steps > 0:
            trainer.fit(task, datamodule=data)
        diverged = task.diverged_at is not None
        measured, profiles = {}, {}
        if not diverged:
            if quantize_cfg.method is not None:
                quantized, measured, profiles = _quantize_for_evaluation(task, data, quantize_cfg)
                task.evaluate_with(quantized)
            trainer.test(task, datamodule=data, verbose=False)
            if run_cfg.save_checkpoint:
                tracking.save_checkpoint(mlflow_client, run_id, task.model.state_dict())
        logger.flush(Path(run_cfg.data.cache_dir) / "unsent-metrics")
        steps, train_tokens = task.trained_steps, int(task.train_tokens)
        curve = [(m.step, m.value) for m in mlflow_client.get_metric_history(run_id, "val_loss")]
        metrics = (
            task.final_metrics
            | measured
            | baselines(tokens.train, tokens.val, tokens.vocab_size)
            | {LAST_QUARTER_DROP: last_quarter_drop(curve)}
            | {
                "n_params": task.model.num_params(),
                "vocab_size": tokens.vocab_size,
                "train_tokens": train_tokens,
                "train_seconds": task.train_seconds,
                "wall_seconds": time.perf_counter() - started,
            }
        )
        metrics |= derived_metrics(metrics, steps, task.train_slots)
        if diverged:
            metrics["diverged_step"] = task.diverged_at
        status = "diverged" if diverged else "finished"
        now = int(time.time() * 1000)
        profile_points = [_metric(k, v, now, i) for k, values in profiles.items() for i, v in enumerate(values)]
        mlflow_client.log_batch(
            run_id,
            metrics=[_metric(k, v, now, steps) for k, v in metrics.items() if math.isfinite(v)] + profile_points,
        )
        mlflow_client.set_tag(run_id, "ablations.status", status)
        mlflow_client.set_tag(run_id, HEALTH_TAG, run_health(status, metrics))
        mlflow_client.set_terminated(run_id, "FINISHED")
    except BaseException:  # interrupted or crashed: never leave the run looking finished
        if run_id is None:  # interrupted inside create_run, which may have stored the run before returning
            tracking.mark_abandoned_runs(mlflow_client, exp_id, key)
        else:
            mlflow_client.set_tag(run_id, "ablations.status", "killed")
            mlflow_client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    return ArmRun(arm, seed, run_id, status, metrics, reused=False, key=key)


def trainer_options(run_cfg: DictConfig) -> dict[str, Any]:
    """What every Trainer of a run gets besides its config group and its logger."""
    return {
        "max_steps": run_cfg.optim.max_steps,
        "val_check_interval": run_cfg.val_every,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
        "inference_mode": False,  # evaluation under no_grad instead, so that probes can take gradients
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }


def _fit_data_parallel(run_cfg: DictConfig, run_id: str, task: LanguageModelTask, tracking_uri: str) -> None:
    """Fit in the trainer's `devices` processes (ablations.ddp) and take rank 0's weights and counters back."""
    with tempfile.TemporaryDirectory() as tmp:
        config, start, end = Path(tmp) / "run.yaml", Path(tmp) / "start.pt", Path(tmp) / "end.pt"
        OmegaConf.save(run_cfg, config, resolve=True)
        torch.save(task.model.state_dict(), start)
        command = [sys.executable, "-m", "ablations.ddp", str(config), run_id, str(start), str(end)]
        process = subprocess.Popen(command, env=os.environ | {"MLFLOW_TRACKING_URI": tracking_uri})
        try:
            if process.wait() != 0:
                raise RuntimeError(f"the data-parallel fit failed (exit code {process.returncode})")
        finally:
            if process.poll() is None:  # interrupted here: stop the ranks too
                process.terminate()
                process.wait()
        state = torch.load(end, map_location="cpu", weights_only=True)
    task.model.load_state_dict(state["model"])
    task.trained_steps, task.train_seconds = int(state["trained_steps"]), float(state["train_seconds"])
    task.train_tokens, task.train_slots = state["train_tokens"], int(state["train_slots"])
    task.diverged_at = None if int(state["diverged_at"]) < 0 else int(state["diverged_at"])
    task.final_metrics |= {k: float(v) for k, v in state["final_metrics"].items()}  # the probes at init


def _quantize_for_evaluation(
    task: LanguageModelTask, data: TextDataModule, cfg: QuantizeConfig
) -> tuple[torch.nn.Module, dict[str, float], dict[str, list[float]]]:
    """The quantized copy of the task's model, calibrated on training batches, with its size, speed and tails."""
    data.setup()
    calibration = (x for x, _ in itertools.islice(iter(data.train_dataloader()), cfg.calibration_batches))
    sample = evaluation_windows(data.val_ids, data.block_size, max(cfg.latency_batches)).tensors[0]
    task.model.eval()
    return quantized_evaluation(task.model, cfg, calibration, sample)


def _param(key: str, value: str) -> Param:
    return Param(key, value[:6000])  # MLflow's limit on a param value


def _metric(key: str, value: float, timestamp: int, step: int) -> Metric:
    return Metric(key, float(value), timestamp, step)


def scale_value(spec: ExperimentSpec, cfg: DictConfig) -> float | None:
    """The tier's own value of the experiment's scale axis (None without one)."""
    if spec.scale is None:
        return None
    return spec.tier_settings(cfg.tier).get(spec.scale.axis, OmegaConf.select(cfg, spec.scale.axis))


def tier_arms(spec: ExperimentSpec, cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Every arm a tier trains: the experiment's arms and, with a scale axis, the scaled hypotheses' arms at its
    other values."""
    return spec.arms_for(cfg.tier) | spec.scale_arms(cfg.tier, scale_value(spec, cfg))


def planned_runs(cfg: DictConfig) -> int:
    return len(tier_arms(ExperimentSpec.from_config(cfg.experiment), cfg)) * cfg.seeds


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """The (i, n) of a `shard="i/n"` setting: the i-th (from 0) of n shares of an experiment's runs."""
    if shard is None:
        return None
    index, _, count = str(shard).partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"shard={shard!r} must be i/n with 0 <= i < n, e.g. shard=0/4")
    return int(index), int(count)


def run_experiment(
    cfg: DictConfig, on_run: Callable[[ArmRun], None] | None = None, shard: tuple[int, int] | None = None
) -> list[Verdict]:
    """Train every arm x seed of cfg.experiment under one parent run and return the verdicts.

    on_run is called after each arm x seed (trained or reused), e.g. to advance a progress display.
    shard=(i, n) trains only the i-th of n disjoint shares of the runs (parallel workers) and returns
    no verdicts: a later call over all runs reuses them and decides.
    """
    spec = ExperimentSpec.from_config(cfg.experiment)
    torch.set_num_threads(cfg.threads or available_cores())
    mlflow_client = tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, spec.name)
    arms = tier_arms(spec, cfg)
    seeds = list(range(cfg.seeds))
    tags = tracking.environment_tags() | {
        "experiment": spec.name,
        "experiment_id": spec.id,
        "tier": cfg.tier,
        "corpus": cfg.data.corpus,
        "tokenizer": cfg.data.tokenizer,
    }
    base = spec.tier_settings(cfg.tier)
    run_cfgs = [arm_config(cfg, arm, base | overrides, seed) for arm, overrides in arms.items() for seed in seeds]
    for run_cfg in run_cfgs[:: len(seeds)]:
        check_config(run_cfg)  # refuse bad input before anything is written to MLflow
    if shard is not None:
        index, count = shard
        # A seed's arms start from its base, so with two stages a shard takes whole seeds.
        run_cfgs = [c for c in run_cfgs if c.seed % count == index] if spec.base is not None else run_cfgs[index::count]
    evidence = is_evidence(cfg.tier)
    parent = ParentRun(
        mlflow_client,
        exp_id,
        f"{cfg.tier} · {cfg.data.corpus}" + (f" · shard {index + 1}/{count}" if shard else ""),
        tags | {tracking.ROLE: tracking.EXPERIMENT_ROLE, "arms": ",".join(arms), "seeds": str(len(seeds)),
                EVIDENCE_TAG: "yes" if evidence else f"no: {cfg.tier} tier, plumbing only"},
    )  # fmt: skip
    started, runs, base_keys = time.perf_counter(), [], {}
    try:
        console.print(
            f"[bold]{spec.id} {spec.name}[/]: {len(arms)} arms x {len(seeds)} seeds, "
            f"tier {cfg.tier}, corpus {cfg.data.corpus}"
        )
        for run_cfg in run_cfgs:
            if spec.base is not None and run_cfg.arm != "base":
                run_cfg.init_from = base_keys[run_cfg.seed]  # the base arm comes first: arms_for puts it there
            run = train_arm(run_cfg, mlflow_client, exp_id, tags, parent.id)
            if run.arm == "base":
                if run.status != "finished":
                    raise ValueError(f"the base model of seed {run.seed} diverged: no arm can start from it")
                base_keys[run.seed] = run.key
            runs.append(run)
            print_run(run)
            if on_run:
                on_run(run)
        parent.settle([r.key for r in runs])
        verdicts = [] if shard is not None else verdicts_for(spec.hypotheses, runs)
        scale_trends = [] if shard is not None else trends(spec, cfg.tier, scale_value(spec, cfg), runs)
        if shard is None and not parent.reused:
            seconds = time.perf_counter() - started
            _log_summary(mlflow_client, parent.id(), spec, runs, verdicts, seconds)
            mlflow_client.set_tag(parent.id(), NOTE_TAG, note(spec, cfg.tier, cfg.data.corpus, verdicts))
        parent.end("FINISHED")
    except BaseException:
        parent.end(RunStatus.to_string(RunStatus.KILLED))
        raise
    if shard is not None:
        return []
    print_verdicts(spec, verdicts, evidence)
    print_trends(spec, scale_trends)
    for line in where_to_look(exp_id, parent.id(), parent.reused):
        console.print(line, highlight=False)
    return verdicts


def print_run(run: ArmRun) -> None:
    loss = value_of(run.status, run.metrics, "final_val_loss")
    note = "reused finished run" if run.reused else f"{run.metrics['wall_seconds']:.0f} s"
    if run.status == "diverged":
        note += f", diverged at step {run.metrics['diverged_step']:.0f}: drawn at the uniform loss"
    elif run.health == "plateau":
        note += f", not {PLATEAU_MARGIN:.0%} below the unigram loss {run.metrics['baseline_unigram']:.3f}: a plateau"
    console.print(f"  {run.arm:>10} seed {run.seed}: {run.status:8} final_val_loss {loss:.4f}  ({note})")


def _log_summary(
    mlflow_client: MlflowClient,
    parent_id: str,
    spec: ExperimentSpec,
    runs: list[ArmRun],
    verdicts: list[Verdict],
    seconds: float,
) -> None:
    now = int(time.time() * 1000)
    metrics = {"wall_seconds": seconds}
    for v in verdicts:
        metrics |= {
            f"{v.hypothesis}.effect": v.effect,
            f"{v.hypothesis}.ci_low": v.ci_low,
            f"{v.hypothesis}.ci_high": v.ci_high,
        }
    mlflow_client.log_batch(parent_id, metrics=[_metric(k, v, now, 0) for k, v in metrics.items() if math.isfinite(v)])
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
            [(r.arm, r.seed, value_of(r.status, r.metrics, metric)) for r in runs],
            figure,
            reference_lines(metric, [r.metrics for r in runs]),
        )
        mlflow_client.log_artifact(parent_id, str(figure))
        for spec_figure in spec.figures:
            path = Path(tmp) / f"{spec.name}-{spec_figure['y']}-vs-{spec_figure['x']}.png"
            figure_from_spec(spec, spec_figure, [(r.arm, r.seed, r.status, r.metrics) for r in runs], path)
            mlflow_client.log_artifact(parent_id, str(path))


def figure_from_spec(
    spec: ExperimentSpec, figure: dict[str, Any], runs: list[tuple[str, int, str, Mapping[str, float]]], path: Path
) -> Path | None:
    """Draw one of the experiment file's `figures` from (arm, seed, status, metrics) of its runs."""
    if figure.get("kind") == "scatter":
        points = [
            (arm, seed, metrics[figure["x"]], metrics[figure["y"]])
            for arm, seed, status, metrics in runs
            if status == "finished" and figure["x"] in metrics and figure["y"] in metrics
        ]
        title = figure.get("title", f"{spec.id}: {figure['y']} against {figure['x']}")
        return scatter_figure(title, figure["x"], figure["y"], points, path) if points else None
    values = [
        (spec.axes_of(arm), seed, value_of(status, metrics, figure["y"]))
        for arm, seed, status, metrics in runs
        if spec.axes_of(arm) and (figure["y"] in metrics or status == "diverged")
    ]
    if not values:
        return None
    return grid_figure(
        figure.get("title", f"{spec.id}: {figure['y']}"),
        figure["y"],
        figure["x"],
        list(spec.grid[figure["x"]]),
        figure.get("hue", []),
        values,
        path,
        reference_lines(figure["y"], [metrics for _, _, _, metrics in runs]),
    )


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
