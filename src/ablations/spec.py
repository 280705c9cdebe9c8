"""The experiment file's schema: claim, hypotheses, arms, tiers, amendments and the scale axis.

Loaded and checked without torch, so that exports and reports can read experiments cheaply.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablations.metrics import UnknownMetricError, lookup
from ablations.store import ROOT
from ablations.verdict import Hypothesis

SLOPES = ("negative", "zero", "positive")  # the pre-registered sign of a scale trend
BASE = "base"  # the first stage of a two-stage experiment
TIERS = tuple(sorted(path.stem for path in (ROOT / "conf" / "tier").glob("*.yaml")))


@dataclass(frozen=True)
class Amendment:
    """A design change made after data was seen: when, what, why, the hypotheses it supersedes (whose verdicts
    stay in results/, marked superseded), those it adds (not pre-registered: written after earlier runs of the
    experiment had been seen, and marked so wherever their verdicts appear) and those it puts on the scale axis
    (`scales`: their verdicts at the axis's other values and their trend are not pre-registered, and marked so)."""

    date: str
    change: str
    reason: str
    supersedes: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    scales: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            datetime.date.fromisoformat(self.date)
        except ValueError:
            raise ValueError(f"amendment date {self.date!r} must be YYYY-MM-DD") from None
        if not self.change.strip() or not self.reason.strip():
            raise ValueError(f"the amendment of {self.date} needs a change and a reason")


@dataclass(frozen=True)
class ScaleAxis:
    """Primary hypotheses run again at other values of one config key (a model size, a budget).

    values: tier -> the values at that tier (the tier's own value among them reuses its runs).
    slope: hypothesis -> the expected sign of its per-seed effect's slope on log2(value), written beforehand.
    base_per_value: with two stages, each value trains a base of its own (a model-size axis); false: every value's
        arms start from the tier's one base (an axis of the second stage alone, such as the target data's size)."""

    axis: str
    values: dict[str, list[float]]
    slope: dict[str, str]
    base_per_value: bool = True

    def __post_init__(self) -> None:
        if bad := {h: s for h, s in self.slope.items() if s not in SLOPES}:
            raise ValueError(f"scale.slope {bad} must be one of {SLOPES}")
        for tier, values in self.values.items():
            if len(set(values)) < 2 or min(values) <= 0:
                raise ValueError(f"scale.values.{tier} needs two or more distinct positive values")

    @property
    def hypotheses(self) -> list[str]:
        return list(self.slope)

    @property
    def label(self) -> str:
        return self.axis.rsplit(".", 1)[-1]

    def arm_name(self, arm: str, value: float) -> str:
        return f"{arm}@{self.label}={value:g}"


def off_scale(arm: str) -> bool:
    """Whether an arm's name is a scaled arm's (ScaleAxis.arm_name): the arm at another value of the scale axis."""
    return "@" in arm


@dataclass
class ExperimentSpec:
    """What an experiment file declares. Arms come from `arms` (name -> overrides) and from `grid`,
    whose axes multiply: {axis: {label: overrides}} gives one arm per combination of labels, named
    by the labels joined with "-" (e.g. post-L24-nowarmup).

    Two stages: with `base` (overrides, possibly {}), an arm named "base" is trained first for every
    seed and its weights kept as an MLflow artifact; every other arm of that seed starts from them
    (`init_from`) and is keyed by them, so a base is trained once and reused across arms, seeds'
    reruns and invocations."""

    id: str
    name: str
    title: str
    claim: dict[str, Any]
    hypotheses: list[Hypothesis]
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    full_tier_arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    # {x, hue, y, title}: a metric against axes of the grid; {kind: scatter, x, y, log}: two metrics; {kind: layers,
    # metrics}: per-block metrics (prefix0, prefix1, ...) against the block; {kind: series, metrics, x, x_values,
    # y_label, arms}: several metrics as one line per arm (of `arms`, if named), each metric at its x
    figures: list[dict[str, Any]] = field(default_factory=list)
    all_tiers: dict[str, Any] = field(default_factory=dict)  # overrides of every arm at every tier
    tier_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # tier -> overrides of every arm there
    # tier -> axis -> label -> overrides merged into that grid option for that tier (e.g. the smoke tier's budgets,
    # which a grid axis would otherwise fix for every tier)
    tier_grid: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    base: dict[str, Any] | None = None  # overrides of the first stage, the arm "base"
    design: str = ""  # how the arms are built and measured, in words, for the report
    report_metrics: list[str] = field(default_factory=list)  # metrics the report tabulates per arm
    amendments: list[Amendment] = field(default_factory=list)
    # {max_drop: nats}, on every run that trained (ablations.health); {} turns the check off
    learning_check: dict[str, Any] = field(default_factory=lambda: {"max_drop": 0.05})
    scale: ScaleAxis | None = None
    from_scratch: list[str] = field(default_factory=list)  # arms of a two-stage experiment that start from init

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ExperimentSpec:
        raw = OmegaConf.to_container(cfg, resolve=True)
        raw["hypotheses"] = [Hypothesis(**h) for h in raw["hypotheses"]]
        raw["amendments"] = [Amendment(**a) for a in raw.get("amendments", [])]
        raw["scale"] = ScaleAxis(**raw["scale"]) if raw.get("scale") else None
        spec = cls(**raw)
        spec._check_additions()
        spec._check_metrics()
        arms = spec.arms_for("full")
        if not arms:
            raise ValueError(f"experiment {spec.name} defines no arms")
        for h in spec.hypotheses:
            fitted = set(h.fit_arms) or {h.treatment}  # a power law's treatment is its fit, over fit_arms
            named = fitted | ({h.control} if h.reference is None else set())  # a constant is no arm
            missing = named - set(arms)
            if missing:
                raise ValueError(f"hypothesis {h.id} names arms {sorted(missing)} that {spec.name} does not define")
        for tier, axes in spec.tier_grid.items():
            for axis, options in axes.items():
                if unknown := set(options) - set(spec.grid.get(axis, {})):
                    raise ValueError(f"tier_grid.{tier}.{axis} of {spec.name} names options {sorted(unknown)} "
                                     "that its grid does not define")  # fmt: skip
        for figure in spec.figures:
            if figure.get("kind") == "layers":
                if not figure.get("metrics"):
                    raise ValueError(f"layers figure of {spec.name} needs metrics: the per-block prefixes it draws")
                continue
            if figure.get("kind") == "series":
                if not figure.get("metrics") or len(figure["metrics"]) != len(figure.get("x_values", [])):
                    raise ValueError(f"series figure of {spec.name} needs metrics and as many x_values, and x")
                continue
            if figure.get("kind") == "scatter":
                if not {"x", "y"} <= set(figure):
                    raise ValueError(f"scatter figure of {spec.name} needs the metrics x and y")
                continue
            if unknown := {figure["x"], *figure.get("hue", [])} - set(spec.grid):
                raise ValueError(f"figure of {spec.name} uses axes {sorted(unknown)} that its grid does not define")
        return spec

    def _check_additions(self) -> None:
        scaled_tiers = set(self.scale.values) if self.scale else set()
        if unknown := (set(self.tier_overrides) | set(self.tier_grid) | scaled_tiers) - set(TIERS):
            raise ValueError(f"{self.name} names tiers {sorted(unknown)} that conf/tier does not define; "
                             f"valid: {', '.join(TIERS)}")  # fmt: skip
        ids = {h.id for h in self.hypotheses}
        if len(ids) != len(self.hypotheses):
            raise ValueError(f"{self.name}: hypothesis ids must be unique")
        for amendment in self.amendments:
            if unknown := set(amendment.supersedes) - ids:
                raise ValueError(f"the amendment of {amendment.date} in {self.name} supersedes {sorted(unknown)}, "
                                 "which it does not define")  # fmt: skip
            if unknown := set(amendment.adds) - ids:
                raise ValueError(f"the amendment of {amendment.date} in {self.name} adds {sorted(unknown)}, "
                                 "which it does not define")  # fmt: skip
            if unscaled := set(amendment.scales) - set(self.scale.slope if self.scale else {}):
                raise ValueError(f"the amendment of {amendment.date} in {self.name} puts {sorted(unscaled)} on the "
                                 "scale axis, and scale.slope does not name them")  # fmt: skip
        arms = self.arms_for("full")
        if self.from_scratch and (self.base is None or not set(self.from_scratch) <= set(arms) - {BASE}):
            raise ValueError(f"from_scratch of {self.name} must name second-stage arms of a two-stage experiment")
        if self.learning_check and set(self.learning_check) != {"max_drop"}:
            raise ValueError(f"learning_check of {self.name} needs exactly max_drop")
        if self.scale is not None:
            if unknown := set(self.scale.hypotheses) - ids:
                raise ValueError(f"scale.slope of {self.name} names unknown hypotheses {sorted(unknown)}")
            if fits := [h.id for h in self.hypotheses if h.fit_arms and h.id in self.scale.slope]:
                raise ValueError(f"scale.slope of {self.name} names power laws {fits}: a fit is over sizes already")
            if bounds := [h.id for h in self.hypotheses if h.test == "bound" and h.id in self.scale.slope]:
                raise ValueError(f"scale.slope of {self.name} names bounds {bounds}: an identity has no trend to fit")
            setters = [arm for arm, changes in arms.items() if self.scale.axis in changes]
            if setters:
                raise ValueError(f"scale.axis {self.scale.axis} of {self.name} is set by arms {setters}")

    def _check_metrics(self) -> None:
        """Every metric the file names is one the registry knows (ablations.metrics); config keys (dotted) pass."""
        named = [m for h in self.hypotheses if h.test != "counts" for m in h.metrics]
        # A grid figure's x is a grid axis and a series figure's a label; a layers figure names per-block prefixes.
        for figure in self.figures:
            kind = figure.get("kind")
            named += [figure[axis] for axis in ("x", "y") if axis in figure and (axis == "y" or kind == "scatter")]
            named += [f"{metric}0" if kind == "layers" else metric for metric in figure.get("metrics", [])]
        named += [m for m in self.report_metrics if "." not in m]
        for name in named:
            try:
                lookup(name)
            except UnknownMetricError as err:
                raise ValueError(f"{self.name}: {err.args[0]}") from None

    def tier_settings(self, tier: str) -> dict[str, Any]:
        """The overrides every arm gets at this tier: `all_tiers`, then the tier's own."""
        return self.all_tiers | self.tier_overrides.get(tier, {})

    def superseded(self, hypothesis: str) -> str:
        """The date of the amendment that superseded a hypothesis, or ""."""
        return next((a.date for a in self.amendments if hypothesis in a.supersedes), "")

    def added(self, hypothesis: str) -> str:
        """The date of the amendment that added a hypothesis after runs had been seen, or "" (pre-registered)."""
        return next((a.date for a in self.amendments if hypothesis in a.adds), "")

    def scaled(self, hypothesis: str) -> str:
        """The date of the amendment that put a hypothesis on the scale axis after its runs there had been seen, or
        "" (its scale axis, if any, was pre-registered)."""
        return next((a.date for a in self.amendments if hypothesis in a.scales), "")

    def pre_registered(self, hypothesis: str, off_scale: bool = False) -> bool:
        """Whether a verdict was written down before its runs: its hypothesis not added by an amendment, and, at
        another value of the scale axis than the tier's own (`off_scale`), not put on the axis by one."""
        return not self.added(hypothesis) and not (off_scale and self.scaled(hypothesis))

    def scale_arms(self, tier: str, tier_value: float) -> dict[str, dict[str, Any]]:
        """The arms of the scaled hypotheses at every other value of the scale axis at this tier."""
        if self.scale is None or tier not in self.scale.values:
            return {}
        arms = self.arms_for(tier)
        names = dict.fromkeys(a for h in self.hypotheses if h.id in self.scale.slope for a in h.measured_arms)
        if self.base is not None and self.scale.base_per_value:  # each value's arms start from a base of its own
            names = {BASE: None} | names
        return {
            self.scale.arm_name(arm, value): arms[arm] | {self.scale.axis: value}
            for value in self.scale.values[tier]
            if value != tier_value
            for arm in names
        }

    def base_arm(self, arm: str) -> str | None:
        """The arm whose weights `arm` starts from: the base at the same value of the scale axis, or the one base
        (None for a base, an arm trained from scratch, or with one stage)."""
        name, at, value = arm.partition("@")
        if self.base is None or name == BASE or name in self.from_scratch:
            return None
        return f"{BASE}{at}{value}" if self.scale is None or self.scale.base_per_value else BASE

    def grid_arms(self, tier: str) -> dict[str, dict[str, Any]]:
        if not self.grid:
            return {}  # the product of no axes would be one nameless arm
        changes = self.tier_grid.get(tier, {})
        grid = {
            axis: {label: overrides | changes.get(axis, {}).get(label, {}) for label, overrides in options.items()}
            for axis, options in self.grid.items()
        }
        arms = {}
        for combination in itertools.product(*(options.items() for options in grid.values())):
            name = "-".join(label for label, _ in combination)
            arms[name] = {key: value for _, overrides in combination for key, value in overrides.items()}
        return arms

    def axes_of(self, arm: str) -> dict[str, str]:
        """The grid label of each axis for a grid arm ({} for an explicit arm)."""
        labels = arm.split("-")
        if len(labels) != len(self.grid):
            return {}
        if any(label not in options for label, options in zip(labels, self.grid.values(), strict=True)):
            return {}
        return dict(zip(self.grid, labels, strict=True))

    def arms_for(self, tier: str) -> dict[str, dict[str, Any]]:
        base = {} if self.base is None else {BASE: self.base | {"save_checkpoint": True}}
        arms = base | self.arms | self.grid_arms(tier)
        return arms | self.full_tier_arms if tier == "full" else arms


EXPERIMENTS_DIR = ROOT / "experiments"


def experiment_names() -> list[str]:
    """Every experiment with a file, run or not."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load_spec(name: str) -> ExperimentSpec:
    """The experiment file outside of Hydra (for exports and reports)."""
    return ExperimentSpec.from_config(OmegaConf.load(EXPERIMENTS_DIR / f"{name}.yaml").experiment)
