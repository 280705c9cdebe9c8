"""What one invocation of an experiment will train, decided and checked before anything runs.

From the composed config: the experiment's arms at the tier (with the scale axis's arms), each arm x seed's
run config (the tier's settings and the arm's overrides on the base config), and the checks that refuse bad
input with one line: an override the arms would overwrite, a key no config has, a bad value, a corpus that
cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from ablations.adaptation import FinetuneConfig, PruneConfig
from ablations.data import TextDataModule
from ablations.generation import DecodingConfig
from ablations.model import ModelConfig
from ablations.probes import PROBES
from ablations.quantization import QuantizeConfig
from ablations.spec import ExperimentSpec
from ablations.speed import BenchmarkConfig
from ablations.training import KEEP_BEST, OptimConfig


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
    tokens = TextDataModule(**run_cfg.data, block_size=run_cfg.model.block_size).load()
    ModelConfig(**{**run_cfg.model, "vocab_size": tokens.vocab_size})
    if run_cfg.train.target == "position" and run_cfg.model.block_size > tokens.vocab_size:
        raise ValueError(f"train.target=position needs model.block_size <= the vocabulary ({tokens.vocab_size})")
    OptimConfig(**run_cfg.optim)
    QuantizeConfig(**run_cfg.quantize)
    BenchmarkConfig(**run_cfg.benchmark)
    if run_cfg.benchmark.name is not None and on_gpu(run_cfg):
        raise ValueError(
            "benchmark.name times the trained model on the CPU (Lightning hands it back there after fit), not on "
            "the GPU the run trained on: run the timing experiments with trainer=cpu"
        )
    check_adaptation(run_cfg)
    if run_cfg.train.keep_best not in KEEP_BEST:
        raise ValueError(f"train.keep_best={run_cfg.train.keep_best!r} must be one of {KEEP_BEST}")
    if run_cfg.train.keep_best is not None and several_devices(run_cfg):
        raise ValueError("train.keep_best selects among the evaluations of one process: trainer.devices=1")
    if run_cfg.train.keep_best == "domain_val_loss" and run_cfg.data.domain is None:
        raise ValueError("train.keep_best=domain_val_loss needs a domain corpus (data.domain)")
    if run_cfg.train.keep_best_start and run_cfg.train.keep_best is None:
        raise ValueError("train.keep_best_start needs train.keep_best")
    if run_cfg.data.epochs is not None and run_cfg.optim.grad_accumulation > 1:
        raise ValueError("optim.grad_accumulation counts updates in micro-batches: use it with data.epochs=null")
    decoding = dict(run_cfg.evaluation.decoding)
    if decoding.pop("prompts") < 1:
        raise ValueError("evaluation.decoding.prompts must be positive")
    if decoding["rule"] is not None:
        DecodingConfig(**decoding)
        if not run_cfg.model.causal:
            raise ValueError("evaluation.decoding needs model.causal=true: decoding sees no future to attend to")
    factors = run_cfg.evaluation.context_factors
    if any(not isinstance(f, int) or f < 2 for f in factors):
        raise ValueError(f"evaluation.context_factors={list(factors)} must be whole numbers of 2 or more")
    if factors and run_cfg.model.pos_encoding == "learned":
        raise ValueError("evaluation.context_factors: learned positions have no vector past model.block_size")


def on_gpu(run_cfg: DictConfig) -> bool:
    """Whether the run's Trainer would train on a GPU (``auto`` picks one where CUDA is present)."""
    accelerator = str(run_cfg.trainer.get("accelerator", "cpu"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def several_devices(run_cfg: DictConfig) -> bool:
    devices = run_cfg.trainer.get("devices", 1)
    return isinstance(devices, int) and devices > 1


def check_adaptation(run_cfg: DictConfig) -> None:
    """LoRA and pruning change the model's modules: they need what they act on, and one process to fit in."""
    finetune, pruning = FinetuneConfig(**run_cfg.finetune), PruneConfig(**run_cfg.prune)
    if finetune.method == "full" and pruning.criterion is None:
        return
    if several_devices(run_cfg):
        raise ValueError("finetune.method=lora and prune.criterion train in one process: trainer.devices=1")
    if pruning.criterion is not None and run_cfg.model.mlp not in ("gelu", "relu"):
        raise ValueError("prune.criterion needs FFNs of two Linear maps around an activation: model.mlp=gelu or relu")
    if finetune.method == "lora" and finetune.lora_targets == "qv" and run_cfg.model.qkv_projection != "split":
        raise ValueError("finetune.lora_targets=qv needs W_Q and W_V as modules: model.qkv_projection=split")


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


@dataclass
class Invocation:
    """One `make experiment`: the spec, the runs it asks for (configs checked), and what its runs are tagged with."""

    spec: ExperimentSpec
    cfg: DictConfig
    arms: list[str]
    run_cfgs: list[DictConfig]
    shard: tuple[int, int] | None

    @property
    def tags(self) -> dict[str, str]:
        # the runs' own tokenizer: an experiment file can set it for all its runs (E18's BPE over a byte command line)
        tokenizers = ",".join(sorted({str(c.data.tokenizer) for c in self.run_cfgs})) or str(self.cfg.data.tokenizer)
        return {"experiment": self.spec.name, "experiment_id": self.spec.id, "tier": self.cfg.tier,
                "corpus": self.cfg.data.corpus, "tokenizer": tokenizers}  # fmt: skip

    @property
    def parent_name(self) -> str:
        shard = f" · shard {self.shard[0] + 1}/{self.shard[1]}" if self.shard else ""
        return f"{self.cfg.tier} · {self.cfg.data.corpus}{shard}"


def invocation(cfg: DictConfig, shard: tuple[int, int] | None = None) -> Invocation:
    """Every run config of the experiment at this tier, checked before anything is written to MLflow."""
    spec = ExperimentSpec.from_config(cfg.experiment)
    arms = tier_arms(spec, cfg)
    base = spec.tier_settings(cfg.tier)
    run_cfgs = [
        arm_config(cfg, arm, base | changes, seed) for arm, changes in arms.items() for seed in range(cfg.seeds)
    ]
    for run_cfg in run_cfgs[:: cfg.seeds]:
        check_config(run_cfg)
    if shard is not None:
        index, count = shard
        # A seed's arms start from its base, so with two stages a shard takes whole seeds.
        run_cfgs = [c for c in run_cfgs if c.seed % count == index] if spec.base is not None else run_cfgs[index::count]
    return Invocation(spec, cfg, list(arms), run_cfgs, shard)
