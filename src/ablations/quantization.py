"""Post-training quantization of a trained GPT's Transformer blocks, with what each method runs on a CPU.

The Linear layers of the blocks (attention qkv and output, MLP in and out) are quantized; the
embeddings and the tied output head stay fp32, as in Q8BERT. Methods:

- ``dynamic_int8``: weights int8 (one scale per tensor, or per output channel), activations quantized
  on the fly per batch. ``torch.ao.quantization.quantize_dynamic``: real fbgemm int8 kernels, so its
  latency is real. (torch.ao is deprecated in favour of torchao, whose dynamic int8 is slower on CPU.)
- ``weight_int8`` / ``weight_int4``: weight-only, activations fp32. torchao ``Int8WeightOnlyConfig``
  and ``IntxWeightOnlyConfig(int4, groups of group_size)``. Real storage; torchao's CPU path
  dequantizes the weights, so these are not expected to be faster.
- ``static_int8``: weights int8 per output channel and the input of every Linear int8 with one
  scale fixed by calibration (min-max, percentile, or entropy = TensorRT's KL-divergence method;
  the calibrators are NVIDIA ModelOpt's). Simulated: int8 weights are stored and dequantized,
  activations are rounded to the int8 grid in fp32 (fake quantization), so accuracy and storage are
  real but latency is not measured (no int8 CPU kernel runs this path).
"""

from __future__ import annotations

import copy
import io
import logging
import math
import statistics
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from scipy.stats import kurtosis
from torch import nn

from ablations.model import GPT
from ablations.timing import alternate, median_log_ratio

METHODS = ("none", "dynamic_int8", "weight_int8", "weight_int4", "static_int8")
CALIBRATIONS = ("minmax", "percentile", "entropy")
SIMULATED = ("static_int8",)  # accuracy and size are real, latency is not measured
# |x| / std at these quantiles: a Gaussian gives 0.67, 1.64, 2.58, 3.29, 3.89; long tails give far more.
TAIL_QUANTILES = (0.5, 0.9, 0.99, 0.999, 0.9999, 1.0)


@dataclass
class QuantizeConfig:
    method: str | None = None  # None: no quantization stage; "none": the fp32 reference, measured alike
    per_channel: bool = True  # dynamic_int8: one weight scale per output channel (else per tensor)
    calibration: str = "minmax"  # static_int8: how the activation range is chosen
    # static_int8: the grid of the activations, symmetric: 2^(bits-1) - 1 levels each side. 7 matches torch's
    # dynamic int8 kernel, whose activations are 7-bit by default (fbgemm's reduce_range, against overflow).
    activation_bits: int = 8
    percentile: float = 99.99  # static_int8 with percentile calibration
    entropy_stride: int = 1  # static_int8 with entropy calibration: try every stride-th threshold (1: all)
    calibration_batches: int = 8  # training batches seen by the static calibration
    group_size: int = 32  # weight_int4: weights per scale
    latency_batches: tuple[int, ...] = (1, 32)  # batch sizes of the latency measurement
    latency_repeats: int = 30

    def __post_init__(self) -> None:
        self.latency_batches = tuple(self.latency_batches)
        checks = {
            f"quantize.method={self.method!r} must be null or one of {METHODS}": self.method is None
            or self.method in METHODS,
            f"quantize.calibration={self.calibration!r} must be one of {CALIBRATIONS}": self.calibration
            in CALIBRATIONS,
            f"quantize.percentile={self.percentile} must lie in (50, 100]": 50 < self.percentile <= 100,
            f"quantize.calibration_batches={self.calibration_batches} must be positive": self.calibration_batches > 0,
            f"quantize.group_size={self.group_size} must be positive": self.group_size > 0,
            f"quantize.activation_bits={self.activation_bits} must lie in [2, 8]": 2 <= self.activation_bits <= 8,
            f"quantize.entropy_stride={self.entropy_stride} must be positive": self.entropy_stride > 0,
        }
        if failed := [message for message, ok in checks.items() if not ok]:
            raise ValueError("; ".join(failed))


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith("blocks.")}


def quantize(model: GPT, cfg: QuantizeConfig, calibration: Iterable[torch.Tensor] = ()) -> nn.Module:
    """A quantized copy of `model` (which is left untouched); `calibration`: input batches for static_int8."""
    quantized = copy.deepcopy(model).eval()
    if cfg.method == "dynamic_int8":
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        qconfig = per_channel_dynamic_qconfig if cfg.per_channel else default_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            quantize_dynamic(quantized.blocks, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    elif cfg.method in ("weight_int8", "weight_int4"):
        _torchao_weight_only(quantized, cfg)
    elif cfg.method == "static_int8":
        amax = calibrate_inputs(quantized, calibration, cfg)
        for name, linear in block_linears(quantized).items():
            parent, child = name.rsplit(".", 1)
            setattr(quantized.get_submodule(parent), child, StaticInt8Linear(linear, amax[name], cfg.activation_bits))
    return quantized


def _torchao_weight_only(model: GPT, cfg: QuantizeConfig) -> None:
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it reports CUDA kernels it cannot load on CPU
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    config = (
        Int8WeightOnlyConfig()
        if cfg.method == "weight_int8"
        else IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(cfg.group_size))
    )
    quantize_(model.blocks, config)


def calibrate_inputs(model: nn.Module, batches: Iterable[torch.Tensor], cfg: QuantizeConfig) -> dict[str, float]:
    """The int8 range (amax) of the input of every block Linear, from the calibration batches."""
    from modelopt.torch.quantization.calib import HistogramCalibrator, MaxCalibrator

    calibrators = {
        name: MaxCalibrator(num_bits=cfg.activation_bits, axis=None, unsigned=False)
        if cfg.calibration == "minmax"
        else HistogramCalibrator(num_bits=cfg.activation_bits, axis=None, unsigned=False)
        for name in block_linears(model)
    }
    with captured_inputs(model) as inputs, torch.no_grad():
        seen = 0
        for x in batches:
            model(x)
            for name, captured in inputs.items():
                calibrators[name].collect(captured.pop())
            seen += 1
    if seen == 0:
        raise ValueError("static_int8 needs calibration batches")
    if cfg.calibration == "minmax":
        return {name: float(c.compute_amax()) for name, c in calibrators.items()}
    kwargs = {"percentile": cfg.percentile} if cfg.calibration == "percentile" else {"stride": cfg.entropy_stride}
    return {name: float(c.compute_amax(cfg.calibration, **kwargs)) for name, c in calibrators.items()}


@contextmanager
def captured_inputs(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """The inputs of every block Linear during the forward passes inside the block, by layer name."""
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in block_linears(model)}
    handles = [
        linear.register_forward_hook(lambda _module, args, _output, name=name: inputs[name].append(args[0].detach()))
        for name, linear in block_linears(model).items()
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


class StaticInt8Linear(nn.Module):
    """A Linear with int8 weights (a scale per output channel) whose input is rounded to a fixed symmetric grid
    of `activation_bits` bits."""

    def __init__(self, linear: nn.Linear, input_amax: float, activation_bits: int = 8):
        super().__init__()
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.input_max = 2 ** (activation_bits - 1) - 1
        self.register_buffer("input_scale", torch.tensor(max(input_amax, 1e-12) / self.input_max))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.fake_quantize_per_tensor_affine(x, float(self.input_scale), 0, -self.input_max, self.input_max)
        weight = self.weight_int8.float() * self.weight_scale[:, None]
        return nn.functional.linear(x, weight, self.bias)


def block_bytes(model: nn.Module) -> int:
    """Bytes of the blocks' serialized state (what a checkpoint of them takes on disk)."""
    buffer = io.BytesIO()
    torch.save(model.blocks.state_dict(), buffer)
    return len(buffer.getvalue())


def latency_ratio(reference: nn.Module, quantized: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds per forward of `quantized` and its ratio to `reference`, timed side by side
    (ablations.timing: in turns, paired by round)."""
    with torch.no_grad():
        seconds = alternate({"reference": lambda: reference(x), "quantized": lambda: quantized(x)}, repeats)
    ratio = math.exp(median_log_ratio(seconds["quantized"], seconds["reference"]))
    return statistics.median(seconds["quantized"]), ratio


def tails(model: GPT, x: torch.Tensor) -> dict[str, list[float]]:
    """Long tails of the block Linears' weights and inputs: |value| / std at TAIL_QUANTILES (pooled over
    layers, each layer normalized by its own std) and the largest excess kurtosis of any layer."""
    with captured_inputs(model) as inputs, torch.no_grad():
        model(x)
    tensors = {
        "weight": [m.weight.detach().flatten() for m in block_linears(model).values()],
        "activation": [captured[0].flatten() for captured in inputs.values()],
    }
    result = {}
    for kind, values in tensors.items():
        normalized = torch.cat([(v - v.mean()).abs() / v.std() for v in values])
        quantiles = torch.tensor(TAIL_QUANTILES, dtype=normalized.dtype)
        sample = normalized if normalized.numel() <= 2**24 else normalized[:: normalized.numel() // 2**24 + 1]
        result[f"{kind}_tail"] = torch.quantile(sample, quantiles).tolist()
        result[f"{kind}_kurtosis"] = [max(float(kurtosis(v.numpy())) for v in values)]
    return result


def quantized_evaluation(
    model: GPT, cfg: QuantizeConfig, calibration: Iterable[torch.Tensor], sample: torch.Tensor
) -> tuple[nn.Module, dict[str, float], dict[str, list[float]]]:
    """Quantize `model` and measure what does not need the validation loop: the blocks' bytes, latency at
    each of cfg.latency_batches (as a ratio to `model`, timed side by side), and the long tails.

    sample: validation inputs, at least max(latency_batches) rows. Returns the quantized model, its
    summary metrics and its per-quantile tail profiles (logged with the quantile index as step).
    """
    quantized = quantize(model, cfg, calibration)
    reference_bytes, quantized_bytes = block_bytes(model), block_bytes(quantized)
    metrics = {
        "block_bytes": quantized_bytes,
        "block_bytes_ratio": quantized_bytes / reference_bytes,
        "log_block_bytes": math.log(quantized_bytes),
    }
    if cfg.method not in SIMULATED:
        for batch in cfg.latency_batches:
            seconds, ratio = latency_ratio(model, quantized, sample[:batch], cfg.latency_repeats)
            metrics |= {
                f"latency_ms_b{batch}": seconds * 1e3,
                f"latency_ratio_b{batch}": ratio,
                f"log_latency_ratio_b{batch}": math.log(ratio),
            }
    profiles = tails(model, sample[: max(cfg.latency_batches)])
    metrics |= {f"final_{k}": v[0] for k, v in profiles.items() if k.endswith("kurtosis")}
    return quantized, metrics, {k: v for k, v in profiles.items() if k.endswith("tail")}
