"""From runs to decisions: each run's value and health, the verdicts of an experiment's hypotheses, the
same hypotheses along the scale axis, and the trend test over scale.

Trend (for a hypothesis with a scale axis): the per-seed effect at each value of the axis, oriented so that
positive is the predicted direction, is regressed on log2(value) by ordinary least squares. With the slope's
95 % CI:

flips        the effects at the smallest and the largest value are decided with opposite signs (each
             interval excludes 0) and the slope's interval excludes 0
weakens      the slope's interval lies below 0: the predicted effect shrinks as the axis grows
strengthens  it lies above 0
holds        it contains 0: no trend detected at these seeds
not decided  a run at some value did not learn (as for a verdict)

The expected slope (negative, zero or positive) is written in the experiment file beforehand; `matches`
says whether the outcome agrees (negative: weakens or a downward flip; positive: strengthens or an upward
flip; zero: the slope's 90 % interval lies within plus or minus the hypothesis's margin spread over the axis
(min_effect / log2(largest / smallest value)), the two one-sided tests of an equivalence: the effect moves by less
than the margin from one end of the axis to the other. An interval that merely contains 0 shows no trend, not its
absence).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import statsmodels.api as sm
from statsmodels.regression.linear_model import RegressionResultsWrapper

from ablations.health import run_health
from ablations.metrics import value_of
from ablations.spec import ExperimentSpec
from ablations.verdict import COUNTED, NOT_DECIDED, Arm, Hypothesis, Verdict, decide, power_law_exponent


@dataclass
class ArmRun:
    arm: str
    seed: int
    run_id: str
    status: str  # "finished" or "diverged"
    metrics: dict[str, float]
    reused: bool
    key: str = ""  # the run key: config, corpus and code version
    copied_from: str = ""  # "<experiment id>/<run id>": the other experiment's run this one was copied from

    @property
    def health(self) -> str:
        return run_health(self.status, self.metrics)


def has_value(run: ArmRun, metric: str) -> bool:
    """Whether the run measured `metric`, or scores a value for it by its status (a diverged run)."""
    return metric in run.metrics or run.status == "diverged"


def measured(h: Hypothesis, runs: list[ArmRun]) -> bool:
    """Whether every run of h's measured arms has a value of h's metric (a count is of health, always known)."""
    return h.test == "counts" or all(has_value(r, m) for r in runs if r.arm in h.measured_arms for m in h.metrics)


def arm_sample(h: Hypothesis, arm: str, runs: list[ArmRun]) -> Arm:
    """An arm's per-seed values of h's metric and health (for counts, the value is whether the run counts).

    Side by side, the control is the zero of the contrast each treatment run measured, with that run's health;
    against a constant, it is that constant."""
    if h.control_value is not None and arm == h.control:
        treatment = arm_sample(h, h.treatment, runs)
        return Arm(dict.fromkeys(treatment.values, h.control_value), treatment.health)
    if h.fit_arms and arm == h.treatment:
        return exponent_sample(h, runs)
    mine = [r for r in runs if r.arm == arm]
    if h.test == "counts":
        values = {r.seed: float(r.health in COUNTED[h.metric]) for r in mine}
    else:
        values = {r.seed: value_of(r.status, r.metrics, h.metric) for r in mine}
    return Arm(values, {r.seed: r.health for r in mine})


def exponent_sample(h: Hypothesis, runs: list[ArmRun]) -> Arm:
    """Each seed's power-law exponent of h.metric against h.fit_size over its runs of h.fit_arms (seeds with a run
    of every fit arm), and its health: learned if every one of those runs learned, else the first other health."""
    by_seed: dict[int, list[ArmRun]] = {}
    for r in runs:
        if r.arm in h.fit_arms:
            by_seed.setdefault(r.seed, []).append(r)
    values, health = {}, {}
    for seed, mine in sorted(by_seed.items()):
        if len({r.arm for r in mine}) < len(h.fit_arms):
            continue
        sizes = [value_of(r.status, r.metrics, h.fit_size) for r in mine]
        values[seed] = power_law_exponent(sizes, [value_of(r.status, r.metrics, h.metric) for r in mine])
        health[seed] = next((r.health for r in mine if r.health != "learned"), "learned")
    return Arm(values, health)


def unmeasured(hypotheses: list[Hypothesis], runs: list[ArmRun]) -> dict[str, str]:
    """id -> the metrics it lacks, for the hypotheses some run of their arms did not measure: runs reused from
    before a hypothesis was added (an amendment) or before its benchmark logged the metric. Deciding them would fail;
    they wait for runs at a new code version."""
    return {h.id: ", ".join(h.metrics) for h in hypotheses if not measured(h, runs)}


def verdicts_for(hypotheses: list[Hypothesis], runs: list[ArmRun]) -> list[Verdict]:
    """The decision rule of every hypothesis, on the per-seed values of its two arms."""
    return [decide(h, arm_sample(h, h.control, runs), arm_sample(h, h.treatment, runs)) for h in hypotheses]


def at_scale(spec: ExperimentSpec, h: Hypothesis, value: float, tier_value: float) -> Hypothesis:
    """h with its arms at one value of the scale axis (its own arms at the tier's value)."""
    if value == tier_value:
        return h
    return replace(h, control=spec.scale.arm_name(h.control, value), treatment=spec.scale.arm_name(h.treatment, value))


def scale_verdicts(
    spec: ExperimentSpec, tier: str, tier_value: float, runs: list[ArmRun]
) -> dict[str, dict[float, Verdict]]:
    """hypothesis -> axis value -> verdict, for the scaled hypotheses at every value that has runs of both arms, all
    of which measured the metric (runs made before a hypothesis was added may not have)."""
    if spec.scale is None or tier not in spec.scale.values:
        return {}
    present = {r.arm for r in runs}
    out: dict[str, dict[float, Verdict]] = {}
    for h in spec.hypotheses:
        if h.id not in spec.scale.slope:
            continue
        for value in sorted(spec.scale.values[tier]):
            scaled = at_scale(spec, h, value, tier_value)
            if set(scaled.measured_arms) <= present and measured(scaled, runs):
                out.setdefault(h.id, {})[value] = verdicts_for([scaled], runs)[0]
    return out


@dataclass(frozen=True)
class Trend:
    hypothesis: str
    axis: str
    values: str  # the axis values with runs, e.g. "64 128 256"
    n_points: int  # per-seed effects regressed
    slope: float  # per doubling of the axis, in the effect's units
    slope_low: float
    slope_high: float
    expected: str  # negative, zero or positive
    trend: str  # flips, weakens, strengthens, holds, not decided
    matches: bool
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _decided_sign(v: Verdict) -> int:
    return 1 if v.ci_low > 0 else -1 if v.ci_high < 0 else 0


def trend(h: Hypothesis, axis: str, expected: str, by_value: dict[float, Verdict], runs: list[ArmRun]) -> Trend:
    """The trend test of h over the axis values in by_value, each verdict naming the arms at its value."""
    values = sorted(by_value)
    common = {"hypothesis": h.id, "axis": axis, "values": " ".join(f"{v:g}" for v in values), "expected": expected}
    nan = math.nan
    if undecided := [f"{v:g}: {by_value[v].reason}" for v in values if by_value[v].verdict == NOT_DECIDED]:
        return Trend(**common, n_points=0, slope=nan, slope_low=nan, slope_high=nan, trend=NOT_DECIDED,
                     matches=False, reason="; ".join(undecided))  # fmt: skip
    sign = -1 if h.direction == "lower" else 1
    x, y = [], []
    for value in values:
        at_value = replace(h, control=by_value[value].control, treatment=by_value[value].treatment)
        control, treatment = (arm_sample(at_value, arm, runs).values for arm in (at_value.control, at_value.treatment))
        for seed in sorted(set(control) & set(treatment)):
            x.append(math.log2(value))
            y.append(sign * (treatment[seed] - control[seed]))
    if len(set(x)) < 2 or len(x) < 3:
        return Trend(**common, n_points=len(x), slope=nan, slope_low=nan, slope_high=nan, trend=NOT_DECIDED,
                     matches=False, reason="fewer than two axis values with paired seeds")  # fmt: skip
    fit = sm.OLS(np.array(y), sm.add_constant(np.array(x))).fit()
    slope, (low, high) = float(fit.params[1]), (float(b) for b in fit.conf_int(0.05)[1])
    ends = _decided_sign(by_value[values[0]]), _decided_sign(by_value[values[-1]])
    if ends[0] * ends[1] < 0 and (low > 0 or high < 0):
        outcome = "flips"
    else:
        outcome = "weakens" if high < 0 else "strengthens" if low > 0 else "holds"
    if expected == "zero":
        matches = _slope_within_margin(fit, h.min_effect, values)
    else:
        matches = high < 0 if expected == "negative" else low > 0
    return Trend(**common, n_points=len(x), slope=slope, slope_low=low, slope_high=high, trend=outcome,
                 matches=matches)  # fmt: skip


def _slope_within_margin(fit: RegressionResultsWrapper, margin: float, values: list[float]) -> bool:
    """Equivalence of the slope to zero (TOST, 90 % interval): less than `margin` of change over the whole axis."""
    low, high = (float(b) for b in fit.conf_int(0.10)[1])
    per_doubling = margin / math.log2(max(values) / min(values))
    return -per_doubling < low and high < per_doubling


def trends(spec: ExperimentSpec, tier: str, tier_value: float, runs: list[ArmRun]) -> list[Trend]:
    """The trend test of every scaled hypothesis with runs at two or more axis values."""
    out = []
    for hypothesis_id, by_value in scale_verdicts(spec, tier, tier_value, runs).items():
        h = next(h for h in spec.hypotheses if h.id == hypothesis_id)
        if len(by_value) >= 2:
            out.append(trend(h, spec.scale.axis, spec.scale.slope[h.id], by_value, runs))
    return out
