"""One arm x seed, from its config to a finished MLflow run, in named steps:

    resolve    the data and what depends on it: the step budget (epochs, token budgets), batch-scaled learning
               rates, the corpora's content hashes, and the run key
    reuse      a finished run with the same key, if there is one (and its weights, if they are needed); or
               `adopt` one of another experiment: copied here whole, tagged with where it came from
    build      the model and its training task (ablations.ddp builds the same in every rank)
    fit        here, or data-parallel in processes of its own (ablations.ddp)
    evaluate   a speed benchmark and quantization if asked, then the final evaluation on the validation split
    record     the run's metrics, health and status

`train_arm` runs them in order. An interruption anywhere after the run is opened marks it KILLED, never
FINISHED, so a killed run is trained again next time instead of being trusted.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from ablations import tracking
from ablations.adaptation import FinetuneConfig, PruneConfig, adapt
from ablations.data import TextDataModule, TokenizedCorpus, evaluation_windows
from ablations.decisions import ArmRun
from ablations.generation import DecodingConfig, decoding_metrics
from ablations.health import (
    HEALTH_TAG,
    LAST_QUARTER_DROP,
    baselines,
    last_quarter_drop,
    position_baselines,
    run_health,
)
from ablations.model import ModelConfig
from ablations.numerics import ADDED_SETTINGS
from ablations.quantization import QuantizeConfig, quantized_evaluation
from ablations.run_logger import RunLogger
from ablations.speed import BenchmarkConfig, run_benchmark
from ablations.training import (
    LanguageModelTask,
    OptimConfig,
    context_losses,
    derived_metrics,
    padding_effect,
    prefix_loss,
    train_split_losses,
)

# Config blocks that describe where and how a run executes, not what it computes.
NOT_IN_RUN_KEY = ("experiment", "seeds", "threads", "shard")


@dataclass
class Resolved:
    """A run config with its budget resolved, its data, and its identity."""

    cfg: DictConfig
    data: TextDataModule
    tokens: TokenizedCorpus
    optim: OptimConfig
    hashes: dict[str, str]  # corpus_sha256 (and domain_sha256)
    key: str


def data_module(run_cfg: DictConfig) -> TextDataModule:
    return TextDataModule(**run_cfg.data, block_size=run_cfg.model.block_size, seed=run_cfg.seed)


def build_task(run_cfg: DictConfig, vocab_size: int, optim: OptimConfig | None = None) -> LanguageModelTask:
    """The seeded model and its task: the same weights in this process and in every data-parallel rank."""
    pl.seed_everything(run_cfg.seed, verbose=False)
    model_cfg = ModelConfig(**{**run_cfg.model, "vocab_size": vocab_size})
    return LanguageModelTask(model_cfg, optim or OptimConfig(**run_cfg.optim), **run_cfg.train)


def trainer_options(run_cfg: DictConfig) -> dict[str, Any]:
    """What every Trainer of a run gets besides its config group and its logger; with train.keep_best, the
    ModelCheckpoint that keeps the best evaluation's weights (in a temporary folder: restore_best reads it)."""
    keep_best = OmegaConf.select(run_cfg, "train.keep_best", default=None)
    best = {}
    if keep_best is not None:
        folder = tempfile.mkdtemp(prefix="ablations-best-")
        checkpoint = ModelCheckpoint(folder, "best", monitor=keep_best, mode="min", save_weights_only=True)
        best = {"enable_checkpointing": True, "callbacks": [checkpoint]}
    return {
        "max_steps": run_cfg.optim.max_steps,
        "val_check_interval": run_cfg.val_every * run_cfg.optim.grad_accumulation,  # counted in micro-batches
        "accumulate_grad_batches": run_cfg.optim.grad_accumulation,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
        "inference_mode": False,  # evaluation under no_grad instead, so that probes can take gradients
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    } | best


@dataclass(frozen=True)
class Candidate:
    """Weights early stopping may keep: the loss that scored them, at the step they were reached."""

    loss: float
    step: int
    state_dict: dict[str, torch.Tensor]


def score_start(task: LanguageModelTask, trainer: pl.Trainer, data: TextDataModule) -> Candidate:
    """train.keep_best_start: the starting weights, scored by the periodic evaluation before the first update
    (logged at step 0 like any other; the checkpoint callback saves only while fitting). The random state is
    restored after it (an evaluation's data loader draws a seed), so that training goes as it would without it."""
    with torch.random.fork_rng():
        trainer.validate(task, datamodule=data, verbose=False)
    return Candidate(float(trainer.callback_metrics[task.keep_best]), 0, copy.deepcopy(task.state_dict()))


def restore_best(task: LanguageModelTask, trainer: pl.Trainer, start: Candidate | None = None) -> None:
    """Early stopping (train.keep_best): load the weights of the evaluation where the loss was lowest (the start's
    among them when it was scored, and kept on a tie), record where that was, and remove the checkpoint."""
    checkpoint = trainer.checkpoint_callback
    if not isinstance(checkpoint, ModelCheckpoint):
        return
    best = start
    if checkpoint.best_model_path:  # none if no evaluation came before the end
        saved = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        trained = Candidate(float(checkpoint.best_model_score), int(saved["global_step"]), saved["state_dict"])
        best = trained if start is None or trained.loss < start.loss else start
    if best is not None:  # else the final weights stay
        task.load_state_dict(best.state_dict)
        task.final_metrics |= {"best_step": float(best.step), "best_eval_loss": best.loss}
    shutil.rmtree(checkpoint.dirpath, ignore_errors=True)


# --- resolve --------------------------------------------------------------------------------------------


def resolve(run_cfg: DictConfig) -> Resolved:
    """Load the data, settle the budget that depends on it (written back into run_cfg, so that the params
    record the values actually used), and key the run."""
    data = data_module(run_cfg)
    tokens = data.load()
    optim = budget(OmegaConf.to_container(run_cfg.optim), data, run_cfg.model.block_size)
    run_cfg.optim.update(max_steps=optim.max_steps, lr=optim.lr, min_lr=optim.min_lr, warmup_steps=optim.warmup_steps)
    hashes = {"corpus_sha256": tokens.sha256}
    if data.domain_tokens is not None:
        hashes["domain_sha256"] = data.domain_tokens.sha256
    return Resolved(run_cfg, data, tokens, optim, hashes, arm_run_key(run_cfg, hashes))


def budget(optim: dict[str, Any], data: TextDataModule, block_size: int) -> OptimConfig:
    """The optimizer settings with what depends on the data settled: a number of passes over the documents
    (data.epochs) fixes the step count; a token budget counts domain tokens when there is a domain corpus, so
    that every mix sees the same domain data; learning rates scale with the batch (optim.lr_scaling)."""
    if data.epochs is not None:
        optim = optim | {"max_steps": data.epochs * data.steps_per_epoch()}
    sequences = data.batch_size * optim.get("grad_accumulation", 1)  # per update
    tokens_per_batch = sequences * block_size
    if data.domain_tokens is not None and optim.get("max_tokens") is not None:
        if data.domain_share == 0:
            raise ValueError("optim.max_tokens counts domain tokens, and data.mix has none: set optim.max_steps")
        tokens_per_batch *= data.domain_share
    return OptimConfig(**optim).for_batch(sequences, tokens_per_batch)


def arm_run_key(run_cfg: DictConfig, corpus_hashes: dict[str, str]) -> str:
    """The run key of a run config whose budget is resolved: what it computes, not where or how it executes.

    The corpora enter by their content hashes, not by where they happen to lie on this machine.
    """
    key_config = {k: v for k, v in OmegaConf.to_container(run_cfg, resolve=True).items() if k not in NOT_IN_RUN_KEY}
    key_config["data"] = {k: v for k, v in key_config["data"].items() if k not in ("path", "domain_path", "cache_dir")}
    for setting, (switch, off) in ADDED_SETTINGS.items():  # off: as before the setting existed
        if OmegaConf.select(run_cfg, switch) == off:
            section, _, name = setting.rpartition(".")
            (key_config.get(section, {}) if section else key_config).pop(name, None)
            if section and section in key_config and not key_config[section]:  # all of it added settings, all off
                del key_config[section]
    return tracking.run_key(key_config | corpus_hashes)


# --- reuse ----------------------------------------------------------------------------------------------


def reuse(run: Resolved, mlflow_client: MlflowClient, exp_id: str) -> ArmRun | None:
    """The finished run with this key, unless its weights are needed and gone (checkpoints are never committed):
    then it is trained again, superseding it."""
    done = tracking.find_finished_run(mlflow_client, exp_id, run.key)
    if done is None or (run.cfg.save_checkpoint and not tracking.has_checkpoint(mlflow_client, done)):
        return None
    status = done.data.tags["ablations.status"]
    return ArmRun(run.cfg.arm, run.cfg.seed, done.info.run_id, status, done.data.metrics, reused=True, key=run.key)


def adopt(
    run: Resolved, mlflow_client: MlflowClient, exp_id: str, tags: dict[str, str], parent_id: Callable[[], str] | None
) -> ArmRun | None:
    """The same run (config, corpora and code: its key) finished in another experiment, copied into this one with
    its numbers, curves, provenance and weights, and tagged with where it came from: trained once, not twice."""
    source = tracking.find_finished_run_elsewhere(mlflow_client, exp_id, run.key)
    if source is None or (run.cfg.save_checkpoint and not tracking.has_checkpoint(mlflow_client, source)):
        return None
    run_id = open_run(mlflow_client, exp_id, run, tags, parent_id)
    try:
        tracking.copy_run_record(mlflow_client, source, run_id)
    except BaseException:
        mark_killed(mlflow_client, exp_id, run.key, run_id)
        raise
    status = source.data.tags["ablations.status"]
    origin = f"{source.info.experiment_id}/{source.info.run_id}"
    return ArmRun(run.cfg.arm, run.cfg.seed, run_id, status, source.data.metrics, True, run.key, copied_from=origin)


def start_weights(run_cfg: DictConfig, mlflow_client: MlflowClient, exp_id: str) -> tuple[dict | None, dict]:
    """The weights of the finished run this one starts from (init_from: its key), if any, and that run's final
    validation loss as `start_val_loss` (an evaluation-only run is judged by it: ablations.health)."""
    if run_cfg.init_from is None:
        return None, {}
    if (start := tracking.find_finished_run(mlflow_client, exp_id, run_cfg.init_from)) is None:
        raise tracking.CheckpointError(f"no finished run with key {run_cfg.init_from} to start {run_cfg.arm} from")
    return tracking.load_checkpoint(mlflow_client, start), {"start_val_loss": start.data.metrics["final_val_loss"]}


# --- open the MLflow run --------------------------------------------------------------------------------


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


def open_run(
    mlflow_client: MlflowClient, exp_id: str, run: Resolved, tags: dict[str, str], parent_id: Callable[[], str] | None
) -> str:
    """Create the arm's MLflow run with its tags, nested under the invocation's parent run if there is one (created
    on demand); its name is short (the experiment is the MLflow experiment)."""
    tags = tags | ({"mlflow.parentRunId": parent_id()} if parent_id else {})
    arm, seed = run.cfg.arm, run.cfg.seed
    run_tags = tags | {tracking.ROLE: tracking.ARM_ROLE, "ablations.run_key": run.key, "arm": arm, "seed": str(seed)}
    return mlflow_client.create_run(exp_id, run_name=f"{arm}/seed{seed}", tags=run_tags | run.hashes).info.run_id


def log_params(mlflow_client: MlflowClient, run_id: str, run: Resolved, task: LanguageModelTask) -> None:
    params = run_params(run.cfg) | {
        "model.vocab_size": str(run.tokens.vocab_size),
        "model.n_params": str(task.model.num_params()),
    }
    items = sorted(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in items[i : i + 100]])


# --- fit and evaluate -----------------------------------------------------------------------------------


def data_parallel(run_cfg: DictConfig) -> bool:
    devices = run_cfg.trainer.get("devices", 1)
    return isinstance(devices, int) and devices > 1


def make_trainer(run_cfg: DictConfig, logger: RunLogger) -> pl.Trainer:
    """The run's trainer; with several devices the fit runs in processes of its own and this one evaluates on one."""
    single = {"devices": 1, "strategy": "auto"} if data_parallel(run_cfg) else {}
    return instantiate(run_cfg.trainer, **single, logger=logger, **trainer_options(run_cfg))


def fit(run: Resolved, task: LanguageModelTask, trainer: pl.Trainer, run_id: str, tracking_uri: str) -> None:
    if run.cfg.optim.max_steps == 0:
        return  # evaluation only (of the weights it starts from)
    if data_parallel(run.cfg):
        fit_data_parallel(run.cfg, run_id, task, tracking_uri)
    else:
        start = score_start(task, trainer, run.data) if task.keep_best_start else None
        trainer.fit(task, datamodule=run.data)
        restore_best(task, trainer, start)


def fit_data_parallel(run_cfg: DictConfig, run_id: str, task: LanguageModelTask, tracking_uri: str) -> None:
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


def evaluate(run: Resolved, task: LanguageModelTask, trainer: pl.Trainer) -> tuple[dict, dict[str, list[float]]]:
    """The benchmark the config names, on copies of the trained model; quantize if the config asks (evaluating
    the quantized copy from then on); then the final evaluation.

    Returns the benchmark's and the quantization's summary metrics and the quantization's per-quantile profiles."""
    benchmark = BenchmarkConfig(**run.cfg.benchmark)
    measured = run_benchmark(task, run.data, benchmark, trainer.precision_plugin.forward_context)
    cfg = QuantizeConfig(**run.cfg.quantize)
    profiles = {}
    if cfg.method is not None:
        run.data.setup()
        batches = itertools.islice(iter(run.data.train_dataloader()), cfg.calibration_batches)
        sample = evaluation_windows(run.data.val_ids, run.data.block_size, max(cfg.latency_batches)).tensors[0]
        task.model.eval()
        quantized, quantized_metrics, profiles = quantized_evaluation(task.model, cfg, (x for x, _ in batches), sample)
        measured |= quantized_metrics
        task.evaluate_with(quantized)
    trainer.test(task, datamodule=run.data, verbose=False)
    measured |= further_evaluation(run.data, run.cfg.evaluation, task, trainer.precision_plugin.forward_context)
    return measured, profiles


def further_evaluation(
    data: TextDataModule, settings: Mapping[str, Any], task: LanguageModelTask, precision: Callable[[], Any]
) -> dict[str, float]:
    """What the `evaluation` settings add to the final evaluation: longer contexts, the training tokens, prefixes,
    trailing padding, decoding."""
    measured = {}
    if settings["context_factors"]:
        factors, windows = list(settings["context_factors"]), data.test_windows
        measured |= context_losses(task.model, data.val_ids, factors, windows, data.eval_batch_size, precision)
    if settings["train_split"]:
        windows = data.test_windows or len(data.val_ids) // data.block_size  # as many as the validation's
        measured |= train_split_losses(task.model, data.train_ids, windows, data.eval_batch_size, precision)
        measured["generalization_gap"] = task.final_metrics["final_val_loss"] - measured["final_train_split_loss"]
    if settings["prefix_loss"]:
        measured |= prefix_loss(task.model, data.val_ids, precision)
    if settings["padding_effect"]:
        measured |= padding_effect(task.model, data.val_ids, precision)
    decoding = dict(settings["decoding"])
    count = decoding.pop("prompts")
    if decoding["rule"] is not None:  # continue prompts of a quarter of the context to the whole context
        block = task.model.cfg.block_size
        prompts = evaluation_windows(data.val_ids, block // 4, count).tensors[0]
        measured |= decoding_metrics(task.model, prompts, DecodingConfig(**decoding, max_new_tokens=block - block // 4),
                                     seed=data.seed)  # fmt: skip
    return measured


# --- record ---------------------------------------------------------------------------------------------


def task_baselines(target: str, tokens: TokenizedCorpus, block_size: int) -> dict[str, float]:
    """The trivial baselines of what the run predicts: the corpus's next tokens, or positions (the order task)."""
    if target == "position":
        return position_baselines(block_size)
    return baselines(tokens.train, tokens.val, tokens.vocab_size)


def domain_baselines(data: TextDataModule) -> dict[str, float]:
    """The domain corpus's baselines (its whole training split: a property of the corpus), if there is one."""
    domain = data.domain_tokens
    if domain is None:
        return {}
    return {
        k.replace("baseline_", "baseline_domain_"): v
        for k, v in baselines(domain.train, domain.val, domain.vocab_size).items()
    }


def run_metrics(run: Resolved, task: LanguageModelTask, curve: list[tuple[int, float]], started: float) -> dict:
    """Everything the run's record holds: the task's final metrics, the corpus baselines, counts and rates."""
    tokens = run.tokens
    metrics = (
        task.final_metrics
        | task_baselines(run.cfg.train.target, tokens, run.cfg.model.block_size)
        | domain_baselines(run.data)
        | {LAST_QUARTER_DROP: last_quarter_drop(curve)}
        | {
            "n_params": task.model.num_params(),
            "non_embedding_params": task.model.num_non_embedding_params(),
            **(
                {"embedding_shared_fraction": task.model.embedding_shared_fraction()}
                if run.cfg.model.embedding_buckets
                else {}
            ),
            "vocab_size": tokens.vocab_size,
            "train_tokens": int(task.train_tokens),
            "train_seconds": task.train_seconds,
            "wall_seconds": time.perf_counter() - started,
        }
    )
    metrics |= derived_metrics(metrics, task.trained_steps, task.train_slots)
    if task.diverged_at is not None:
        metrics["diverged_step"] = task.diverged_at
    return metrics


def record(mlflow_client: MlflowClient, run_id: str, metrics: dict, profiles: dict, steps: int, status: str) -> None:
    """Log the summary metrics at the last step and each profile point at its index; then status and health."""
    now = int(time.time() * 1000)
    points = [Metric(k, float(v), now, steps) for k, v in metrics.items() if math.isfinite(v)]
    points += [Metric(k, float(v), now, i) for k, values in profiles.items() for i, v in enumerate(values)]
    mlflow_client.log_batch(run_id, metrics=points)
    mlflow_client.set_tag(run_id, "ablations.status", status)
    mlflow_client.set_tag(run_id, HEALTH_TAG, run_health(status, metrics))
    mlflow_client.set_terminated(run_id, "FINISHED")


def mark_killed(mlflow_client: MlflowClient, exp_id: str, key: str, run_id: str | None) -> None:
    if run_id is None:  # interrupted inside create_run, which may have stored the run before returning
        tracking.mark_abandoned_runs(mlflow_client, exp_id, key)
        return
    mlflow_client.set_tag(run_id, "ablations.status", "killed")
    mlflow_client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


# --- the steps in order ---------------------------------------------------------------------------------


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
    started = time.perf_counter()
    run = resolve(run_cfg)
    if (done := reuse(run, mlflow_client, exp_id)) is not None:
        return done
    tracking.mark_abandoned_runs(mlflow_client, exp_id, run.key)  # one process trains a given key at a time
    if (copied := adopt(run, mlflow_client, exp_id, tags, parent_id)) is not None:
        return copied
    weights, started_from = start_weights(run_cfg, mlflow_client, exp_id)
    task = build_task(run_cfg, run.tokens.vocab_size, run.optim)
    if weights is not None:
        task.model.load_state_dict(weights)
    task.final_metrics |= started_from
    pruning, finetune = PruneConfig(**run_cfg.prune), FinetuneConfig(**run_cfg.finetune)
    task.final_metrics |= adapt(task.model, pruning, finetune, run.data, run_cfg.seed)
    run_id = None
    try:
        run_id = open_run(mlflow_client, exp_id, run, tags, parent_id)
        log_params(mlflow_client, run_id, run, task)
        logger = RunLogger(tracking_uri=mlflow_client.tracking_uri, run_id=run_id)
        trainer = make_trainer(run_cfg, logger)
        fit(run, task, trainer, run_id, mlflow_client.tracking_uri)
        status = "finished" if task.diverged_at is None else "diverged"
        measured, profiles = evaluate(run, task, trainer) if status == "finished" else ({}, {})
        if status == "finished" and run_cfg.save_checkpoint:
            tracking.save_checkpoint(mlflow_client, run_id, task.model.state_dict())
        logger.flush(Path(run_cfg.data.cache_dir) / "unsent-metrics")
        curve = [(m.step, m.value) for m in mlflow_client.get_metric_history(run_id, "val_loss")]
        metrics = run_metrics(run, task, curve, started) | measured
        record(mlflow_client, run_id, metrics, profiles, task.trained_steps, status)
    except BaseException:  # interrupted or crashed: never leave the run looking finished
        mark_killed(mlflow_client, exp_id, run.key, run_id)
        raise
    return ArmRun(run_cfg.arm, run_cfg.seed, run_id, status, metrics, reused=False, key=run.key)
