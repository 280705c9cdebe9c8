"""An experiment that names an unknown metric, an unknown tier or an unknown config key, or asks what a config
cannot do, is refused before anything runs: one clear error, and nothing written to the MLflow store."""

import sqlite3
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ablations.experiment import run_experiment
from ablations.store import ROOT


def composed(cache_dir: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", ["experiment=label_smoothing", "tier=smoke", "seeds=1", f"data.cache_dir={cache_dir}"])


def break_metric(cfg):
    cfg.experiment.hypotheses[0].metric = "final_val_los"


def break_tier(cfg):
    cfg.experiment.tier_overrides = {"medium": {"optim.max_steps": 10}}


def break_arm_key(cfg):
    cfg.experiment.arms.ls01 = {"train.label_smoothin": 0.1}


def extrapolate_learned_positions(cfg):
    cfg.evaluation.context_factors = [2]  # the default positions are learned: no vector past the context


def lora_on_fused_qv(cfg):
    cfg.finetune.method, cfg.finetune.lora_targets = "lora", "qv"  # W_Q and W_V are rows of one fused matrix


def prune_swiglu(cfg):
    cfg.prune.criterion, cfg.prune.sparsity, cfg.model.mlp = "taylor", 0.3, "swiglu"


def unknown_prune_criterion(cfg):
    cfg.prune.criterion = "variance"


def keep_best_by_an_unknown_loss(cfg):
    cfg.train.keep_best = "train_loss"


def time_on_a_gpu(cfg):
    cfg.benchmark.name, cfg.trainer.accelerator = "batching", "gpu"  # the benchmark would time the CPU copy


def keep_best_by_a_domain_without_one(cfg):
    cfg.train.keep_best = "domain_val_loss"  # label_smoothing trains on one corpus


def keep_the_start_without_early_stopping(cfg):
    cfg.train.keep_best_start = True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (break_metric, "unknown metric 'final_val_los'"),
        (break_tier, "names tiers ['medium'] that conf/tier does not define"),
        (break_arm_key, "arm 'ls01' overrides 'train.label_smoothin', which is not a config key"),
        (extrapolate_learned_positions, "learned positions have no vector past model.block_size"),
        (lora_on_fused_qv, "lora_targets=qv needs W_Q and W_V as modules: model.qkv_projection=split"),
        (prune_swiglu, "prune.criterion needs FFNs of two Linear maps around an activation"),
        (unknown_prune_criterion, "prune.criterion='variance' must be one of"),
        (keep_best_by_an_unknown_loss, "train.keep_best='train_loss' must be one of"),
        (keep_best_by_a_domain_without_one, "train.keep_best=domain_val_loss needs a domain corpus"),
        (keep_the_start_without_early_stopping, "train.keep_best_start needs train.keep_best"),
        (time_on_a_gpu, "benchmark.name times the trained model on the CPU"),
    ],
    ids=[
        "metric",
        "tier",
        "arm key",
        "learned positions past the context",
        "lora qv fused",
        "prune swiglu",
        "prune criterion",
        "keep_best unknown loss",
        "keep_best without a domain",
        "keep_best_start without keep_best",
        "benchmark on a GPU",
    ],
)
def test_a_broken_experiment_is_refused_before_anything_is_written(cache_dir, tmp_path, monkeypatch, change, message):
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    cfg = composed(cache_dir)
    with open_dict(cfg):
        change(cfg)
    with pytest.raises((ValueError, KeyError)) as refused:
        run_experiment(cfg)
    assert message in str(refused.value)
    assert not Path(store).exists() or not sqlite3.connect(store).execute("select * from runs").fetchall()
    if Path(store).exists():  # not even the MLflow experiment was created
        names = [n for (n,) in sqlite3.connect(store).execute("select name from experiments")]
        assert "label_smoothing" not in names
