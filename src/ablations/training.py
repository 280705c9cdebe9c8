"""The LightningModule that trains the Transformer as a next-token language model.

Per-step work is kept to what nanoGPT's train.py does: forward, backward, clip, step. Metrics are
sent to the logger every `log_every` steps only; a non-finite loss stops the run and is recorded as
a divergence, which is a result, not a crash.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassCalibrationError

from ablations.data import IGNORE, evaluation_windows
from ablations.model import GPT, ModelConfig
from ablations.probes import run_probes

CALIBRATION_BINS = 15
EVAL_PREFIXES = ("", "domain_")  # metric prefix of each evaluation dataloader: data.corpus, then data.domain
LR_SCALING = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}  # exponent of batch / reference batch


def adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    # fused: one kernel for all parameters, on CPU 4x faster than PyTorch's default per-tensor loop
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def adafactor(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Shazeer and Stern 2018, T5's optimizer: steps relative to each matrix's RMS, so a smaller initialization
    stays smaller (lr caps the relative step size; beta2 is Adafactor's own decay schedule)."""
    return torch.optim.Adafactor(groups, lr=cfg.lr)


OPTIMIZERS: dict[str, Callable[[list[dict], OptimConfig], torch.optim.Optimizer]] = {
    "adamw": adamw,
    "adafactor": adafactor,
}


def holds_matrix_entries(p: torch.nn.Parameter) -> bool:
    """Weights and embeddings, and a matrix's factors packed into a vector (model.LUFactors); not norms, biases."""
    return p.dim() >= 2 or getattr(p, "matrix_entries", False)


def make_optimizer(module: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """cfg's optimizer over the module's trainable parameters, weight decay on matrices and embeddings only."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in trainable if holds_matrix_entries(p)]
    no_decay = [p for p in trainable if not holds_matrix_entries(p)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return OPTIMIZERS[cfg.name](groups, cfg)


TARGETS = ("next_token", "position")
KEEP_BEST = (None, "val_loss", "domain_val_loss")  # the periodic evaluation's loss early stopping selects by


@dataclass
class OptimConfig:
    name: str = "adamw"  # a name in OPTIMIZERS
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    max_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    # A token budget instead of a step count: max_steps = max_tokens / tokens per batch.
    max_tokens: int | None = None
    # Learning rate (and min_lr) scaled with the batch size: none, sqrt or linear in batch / reference.
    lr_scaling: str = "none"
    lr_reference_batch: int = 32
    # Micro-batches whose gradients add up to one update (Lightning's accumulate_grad_batches): an update sees
    # grad_accumulation x data.batch_size sequences, and max_steps counts updates.
    grad_accumulation: int = 1

    def __post_init__(self) -> None:
        checks = {
            f"optim.name={self.name!r} must be one of {tuple(OPTIMIZERS)}": self.name in OPTIMIZERS,
            f"optim.lr={self.lr} must be positive": self.lr > 0,
            f"optim.min_lr={self.min_lr} must lie in [0, optim.lr]": 0 <= self.min_lr <= self.lr,
            f"optim.max_steps={self.max_steps} must be non-negative (0: evaluate only)": self.max_steps >= 0,
            f"optim.warmup_steps={self.warmup_steps} must lie in [0, optim.max_steps]": 0
            <= self.warmup_steps
            <= self.max_steps,
            f"optim.weight_decay={self.weight_decay} must be non-negative": self.weight_decay >= 0,
            f"optim.grad_clip={self.grad_clip} must be non-negative": self.grad_clip >= 0,
            f"optim.lr_scaling={self.lr_scaling!r} must be none, sqrt or linear": self.lr_scaling in LR_SCALING,
            f"optim.max_tokens={self.max_tokens} must be positive": self.max_tokens is None or self.max_tokens > 0,
            f"optim.grad_accumulation={self.grad_accumulation} must be a positive whole number": isinstance(
                self.grad_accumulation, int
            )
            and self.grad_accumulation >= 1,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def for_batch(self, batch_size: int, tokens_per_batch: int) -> OptimConfig:
        """This config with max_steps from max_tokens and the learning rates scaled for this batch size."""
        factor = (batch_size / self.lr_reference_batch) ** LR_SCALING[self.lr_scaling]
        # A mix makes tokens_per_batch fractional: the 1e-6 keeps 54.99999 steps from flooring to 54.
        max_steps = (
            self.max_steps if self.max_tokens is None else max(1, int(self.max_tokens / tokens_per_batch + 1e-6))
        )
        return replace(self, lr=self.lr * factor, min_lr=self.min_lr * factor, max_steps=max_steps,
                       warmup_steps=min(self.warmup_steps, max_steps))  # fmt: skip

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay from lr to min_lr at max_steps (nanoGPT's schedule)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)


class LanguageModelTask(pl.LightningModule):
    """Next-token training of GPT(model).

    probes: names from ablations.probes, measured at init (`init_<metric>`), at every validation
        (`probe/<metric>`) and at the end (`final_<metric>`).
    eval_train_mode: also score the validation split with the model in train mode, where BatchNorm
        uses the statistics of the batch itself (`final_val_loss_train_mode`, `train_eval_gap`).
    label_smoothing: epsilon of the training loss, PyTorch's definition: the target is (1 - eps) on
        the true token plus eps / V on every token (V = vocabulary, the true one included).
        Evaluation is always the unsmoothed NLL.
    calibration: at the end, also top-1 accuracy, mean confidence, expected calibration error (15
        equal-width bins, torchmetrics) and the reliability diagram (`reliability_*`, step = bin).
    target: what each position predicts, in training and in every evaluation: "next_token" (a language model) or
        "position" (its own index in the window, a synthetic order task: E10); probes stay on next tokens.
    keep_best: early stopping by a periodic evaluation's loss ("val_loss" or "domain_val_loss"): the run's
        ModelCheckpoint (ablations.run.trainer_options) keeps the weights where it was lowest, and those are
        evaluated at the end.
    keep_best_start: with keep_best, the weights the run starts from are a candidate too, scored by the same
        evaluation before the first update (ablations.run.fit): early stopping may then choose not to train.

    With a domain corpus (data.domain) every evaluation scores both corpora: `val_loss` and
    `domain_val_loss`. After `evaluate_with(other)`, evaluation runs `other` (e.g. a quantized copy)
    and also measures `final_kl_to_reference`: KL(model || other) of the next-token distributions.
    """

    def __init__(
        self,
        model: ModelConfig,
        optim: OptimConfig,
        log_every: int = 10,
        compile: bool = False,
        probes: list[str] | None = None,
        eval_train_mode: bool = False,
        label_smoothing: float = 0.0,
        calibration: bool = False,
        target: str = "next_token",
        keep_best: str | None = None,
        keep_best_start: bool = False,
    ):
        super().__init__()
        if keep_best not in KEEP_BEST:
            raise ValueError(f"train.keep_best={keep_best!r} must be one of {KEEP_BEST}")
        if keep_best_start and keep_best is None:
            raise ValueError("train.keep_best_start needs train.keep_best")
        self.keep_best, self.keep_best_start = keep_best, keep_best_start
        if target not in TARGETS or (target == "position" and model.block_size > model.vocab_size):
            raise ValueError(f"train.target={target!r} must be one of {TARGETS} (position: block_size <= vocab_size)")
        self.target = target
        self.model_cfg, self.optim_cfg, self.log_every = model, optim, log_every
        self.probes, self.eval_train_mode = list(probes or []), eval_train_mode
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"train.label_smoothing={label_smoothing} must lie in [0, 1)")
        self.label_smoothing, self.calibration = label_smoothing, calibration
        self.model = GPT(model)
        self.forward_fn = torch.compile(self.model) if compile else self.model
        self.diverged_at: int | None = None
        self.grad_norm = torch.tensor(float("nan"))
        self.final_metrics: dict[str, float] = {}
        self.train_seconds, self._clock, self.trained_steps = 0.0, 0.0, 0
        self.train_tokens, self.train_slots = torch.tensor(0), 0
        self._eval_sum: dict[int, float] = {}
        self._eval_count: dict[int, int] = {}
        self.reference: torch.nn.Module | None = None
        self._kl_sum = 0.0

    def on_before_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> tuple:
        """Every batch Lightning hands over, training and evaluation alike, with the targets `target` asks for."""
        if self.target == "position":
            x, y = batch
            return x, torch.arange(x.size(1), device=x.device).expand_as(y).masked_fill(y == IGNORE, IGNORE)
        return batch

    def evaluate_with(self, model: torch.nn.Module) -> None:
        """Evaluate `model` from now on, and its KL divergence from this task's own (reference) model."""
        self.reference, self.forward_fn = self.model, model

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        x, y = batch
        logits = self.forward_fn(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), label_smoothing=label_smoothing)

    # --- training -------------------------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch, self.label_smoothing)
        # Decided by all ranks together under DDP, where every rank must run backward or none may.
        if self.trainer.strategy.reduce_boolean_decision(not torch.isfinite(loss), all=False):
            self.diverged_at = self.global_step
            self.logger.log_metrics({"diverged_step": self.global_step}, step=self.global_step)
            self.trainer.should_stop = True
            # A backward of zero gradient (DDP needs one on every rank); on_before_optimizer_step drops it.
            return sum(p.sum() for p in self.parameters()) * 0.0
        self._last_loss = loss.detach()
        self.train_tokens += (batch[1] != IGNORE).sum()  # real tokens, padding excluded; a tensor: no sync
        self.train_slots += batch[1].numel()
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.diverged_at is not None:  # no update from the diverged step: AdamW skips parameters without a gradient
            optimizer.zero_grad(set_to_none=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # clip_grad_norm_ returns the norm before clipping: the gradient-norm metric comes for free.
        self.grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.optim_cfg.grad_clip or float("inf"))

    def probe(self) -> dict[str, float]:
        if not self.probes:
            return {}
        batch_of = self.trainer.datamodule.probe_batch  # on the host: moved to the model's device
        return run_probes(self.probes, self.model, lambda size: tuple(t.to(self.device) for t in batch_of(size)))

    def on_train_start(self) -> None:
        self.train_tokens = self.train_tokens.to(self.device)  # summed on the batches' device, once moved here
        if self.probes:
            at_init = self.probe()
            self.final_metrics |= {f"init_{k}": v for k, v in at_init.items()}
            self.logger.log_metrics({f"probe/{k}": v for k, v in at_init.items()}, step=0)
        self._clock = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self._clock
        self._clock = now
        step = self.trained_steps = self.global_step  # already counts the step just taken
        updated = (batch_idx + 1) % self.optim_cfg.grad_accumulation == 0  # the last micro-batch of an update
        if updated and step % self.log_every == 0 and self.diverged_at is None:
            tokens = int(self.train_tokens)
            self.logger.log_metrics(
                {
                    "train_loss": self._last_loss.item(),
                    "grad_norm": float(self.grad_norm),
                    "lr": self.optim_cfg.lr_at(step - 1),
                    "tokens_per_sec": tokens / self.train_seconds,
                },
                step=step,
            )

    def configure_optimizers(self):
        optimizer = make_optimizer(self, self.optim_cfg)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.optim_cfg.lr_at(step) / self.optim_cfg.lr
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- evaluation: the mean next-token NLL over every target token ---------------------------

    def _eval_start(self) -> None:
        self._eval_sum, self._eval_count = {}, {}

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> None:
        n = int((batch[1] != IGNORE).sum())  # real target tokens: padding has target IGNORE
        self._eval_sum[dataloader_idx] = self._eval_sum.get(dataloader_idx, 0.0) + self.loss(batch).item() * n
        self._eval_count[dataloader_idx] = self._eval_count.get(dataloader_idx, 0) + n

    def _eval_losses(self, prefix: str) -> dict[str, float]:
        """{prefix}val_loss and {prefix}val_ppl of each evaluated corpus ("domain_val_loss" for the domain)."""
        metrics = {}
        for i in sorted(self._eval_sum):
            loss = self._eval_sum[i] / self._eval_count[i]
            name = f"{prefix}{EVAL_PREFIXES[i]}val"
            metrics |= {f"{name}_loss": loss, f"{name}_ppl": math.exp(min(loss, 50.0))}
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        probed = {f"probe/{k}": v for k, v in self.probe().items()}
        losses = self._eval_losses("")
        self.logger.log_metrics(losses | probed, step=self.global_step)
        if self.keep_best is not None:  # for the ModelCheckpoint that keeps the best weights (ablations.run), only
            self.log(self.keep_best, losses[self.keep_best], logger=False)
        self._clock = time.perf_counter()  # validation time does not count as training time

    def on_test_epoch_start(self) -> None:
        self._eval_start()
        self._calibration = (
            MulticlassCalibrationError(self.model_cfg.vocab_size, n_bins=CALIBRATION_BINS, norm="l1")
            if self.calibration
            else None
        )
        self._confidence, self._correct = [], []
        # A copy, so that train-mode BatchNorm updating its running statistics cannot touch the model.
        self._train_mode_model = copy.deepcopy(self.model).train() if self.eval_train_mode else None
        self._train_mode_sum, self._kl_sum = 0.0, 0.0

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)
        if self.reference is not None and dataloader_idx == 0:
            x, y = batch
            real = y.flatten() != IGNORE
            log_p = self.reference(x).flatten(0, 1)[real].float().log_softmax(-1)
            log_q = self.forward_fn(x).flatten(0, 1)[real].float().log_softmax(-1)
            self._kl_sum += F.kl_div(log_q, log_p, log_target=True, reduction="sum").item()
        if self._calibration is not None:
            x, y = batch
            real = y.flatten() != IGNORE
            probs, target = self.forward_fn(x).flatten(0, 1).float().softmax(-1)[real], y.flatten()[real]
            self._calibration.update(probs, target)
            confidence, prediction = probs.max(-1)
            self._confidence.append(confidence)
            self._correct.append(prediction == target)
        if self._train_mode_model is not None:
            x, y = batch
            loss = F.cross_entropy(self._train_mode_model(x).flatten(0, 1).float(), y.flatten())
            self._train_mode_sum += loss.item() * int((y != IGNORE).sum())

    def on_test_epoch_end(self) -> None:
        self.final_metrics |= self._eval_losses("final_")
        loss = self.final_metrics["final_val_loss"]
        if self.reference is not None:
            self.final_metrics["final_kl_to_reference"] = self._kl_sum / self._eval_count[0]
        self.final_metrics |= {f"final_{k}": v for k, v in self.probe().items()}
        if self._train_mode_model is not None:
            train_mode_loss = self._train_mode_sum / self._eval_count[0]
            self.final_metrics |= {
                "final_val_loss_train_mode": train_mode_loss,
                "train_eval_gap": loss - train_mode_loss,
            }
            self._train_mode_model = None
        if self._calibration is not None:
            self.final_metrics |= self._calibration_metrics()

    def _calibration_metrics(self) -> dict[str, float]:
        confidence, correct = torch.cat(self._confidence), torch.cat(self._correct).float()
        bins = torch.bucketize(confidence, torch.linspace(0, 1, CALIBRATION_BINS + 1, device=confidence.device)[1:-1])
        count = torch.bincount(bins, minlength=CALIBRATION_BINS).float()
        per_bin = {
            "reliability_accuracy": torch.bincount(bins, correct, CALIBRATION_BINS) / count.clamp_min(1),
            "reliability_confidence": torch.bincount(bins, confidence, CALIBRATION_BINS) / count.clamp_min(1),
            "reliability_count": count,
        }
        for i in range(CALIBRATION_BINS):  # the diagram: one point per bin, the bin index as step
            self.logger.log_metrics({name: values[i].item() for name, values in per_bin.items()}, step=i)
        return {
            "final_top1_acc": correct.mean().item(),
            "final_mean_confidence": confidence.mean().item(),
            "final_ece": self._calibration.compute().item(),
        }


def context_losses(
    model: GPT,
    val_ids: torch.Tensor,
    factors: list[int],
    limit: int | None,
    batch_size: int,
    precision: Callable[[], AbstractContextManager],
) -> dict[str, float]:
    """Validation loss on windows `factor` times model.block_size long (length extrapolation, Press et al. 2022),
    and on the very same tokens cut into windows of the training context: the increase is the long windows' loss
    minus that one, per token (negative: the longer context helps). `limit` windows of the training context become
    limit / factor long ones, so every factor scores about as many tokens as the final evaluation."""
    block_size = model.cfg.block_size
    metrics = {}
    model.eval()
    with torch.no_grad():
        for factor in factors:
            count = None if limit is None else max(1, limit // factor)
            windows = evaluation_windows(val_ids, factor * block_size, count)
            sums, tokens = {"long": 0.0, "chunked": 0.0}, 0
            for x, y in DataLoader(windows, batch_size=max(1, batch_size // factor)):
                for name, inputs in (("long", x), ("chunked", x.reshape(-1, block_size))):
                    with precision():
                        logits = model(inputs)
                    sums[name] += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
                tokens += y.numel()
            metrics[f"final_val_loss_ctx{factor}x"] = sums["long"] / tokens
            metrics[f"ctx{factor}x_loss_increase"] = (sums["long"] - sums["chunked"]) / tokens
    return metrics


def train_split_losses(
    model: GPT,
    train_ids: torch.Tensor,
    limit: int | None,
    batch_size: int,
    precision: Callable[[], AbstractContextManager],
) -> dict[str, float]:
    """The model in eval mode on the tokens it trained on (`limit` windows spread over them, as the final
    evaluation takes the validation split), and the generalization gap: validation loss minus this one."""
    windows = evaluation_windows(train_ids, model.cfg.block_size, limit)
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for x, y in DataLoader(windows, batch_size=batch_size):
            with precision():
                logits = model(x)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            tokens += y.numel()
    return {"final_train_split_loss": total / tokens}


PREFIX_WINDOWS = 64  # windows scored position by position: block_size forwards each


def prefix_loss(model: GPT, val_ids: torch.Tensor, precision: Callable[[], AbstractContextManager]) -> dict[str, float]:
    """The validation loss as generation meets it: each position predicted from the window's tokens up to it and
    nothing after (one forward per prefix), on PREFIX_WINDOWS windows spread over the split. For a causal model it
    equals the ordinary loss of those windows; a model trained without the causal mask saw the future instead."""
    windows = evaluation_windows(val_ids, model.cfg.block_size, PREFIX_WINDOWS).tensors
    total = 0.0
    model.eval()
    with torch.no_grad():
        for t in range(model.cfg.block_size):
            with precision():
                logits = model(windows[0][:, : t + 1])[:, -1, :]
            total += F.cross_entropy(logits.float(), windows[1][:, t], reduction="sum").item()
    return {"final_val_loss_prefix": total / windows[1].numel()}


def padding_effect(
    model: GPT, val_ids: torch.Tensor, precision: Callable[[], AbstractContextManager]
) -> dict[str, float]:
    """What padding that follows a sequence does to its real tokens when nothing masks it (lines 621-629): the first
    half of PREFIX_WINDOWS validation windows scored alone, and again followed by a half window of padding (input 0,
    as the padded packings fill); the same real tokens' loss padded minus alone, and the largest change of any of
    their logits. Padding lies in a causal model's future, so it moves nothing there (float rounding aside)."""
    x, y = evaluation_windows(val_ids, model.cfg.block_size, PREFIX_WINDOWS).tensors
    half = model.cfg.block_size // 2
    real, targets = x[:, :half], y[:, :half].flatten()
    padded = torch.cat([real, torch.zeros_like(x[:, half:])], dim=1)
    model.eval()
    with torch.no_grad(), precision():
        alone, followed = model(real).float(), model(padded)[:, :half].float()
    return {
        "final_padding_loss_change": (
            F.cross_entropy(followed.flatten(0, 1), targets) - F.cross_entropy(alone.flatten(0, 1), targets)
        ).item(),
        "final_padding_logit_change": (followed - alone).abs().max().item(),
    }


def derived_metrics(metrics: Mapping[str, float], steps: int, train_slots: int) -> dict[str, float]:
    """Metrics computed from a run's measured ones, which hypotheses test on a log scale or as rates.

    train_slots: the token positions of the training batches, padding included.
    """
    derived = {}
    if steps > 0:
        tokens, seconds = metrics["train_tokens"], max(metrics["train_seconds"], 1e-9)
        derived |= {
            "train_tokens_per_sec": tokens / seconds,
            "log_train_tokens_per_sec": math.log(max(tokens, 1) / seconds),
            "train_padding_fraction": 1 - tokens / max(train_slots, 1),
        }
    if "final_kl_to_reference" in metrics:  # floored: an exact copy (KL 0) has a finite log
        derived["log_kl_to_reference"] = math.log(max(metrics["final_kl_to_reference"], 1e-12))
    return derived
