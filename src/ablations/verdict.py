"""The pre-registered decision rule: per-seed values -> effect, 95% CI, verdict.

The effect is oriented so that a positive value is the direction the hypothesis predicts:
``lower``  : control - treatment (the treatment arm has the lower metric)
``higher`` : treatment - control
``equal``  : treatment - control, to be within ±min_effect

Verdicts, for ``lower``/``higher``:
supported    the whole 95% CI lies above min_effect
refuted      the whole 95% CI lies below min_effect (a smaller effect, none, or the opposite one)
inconclusive the CI contains min_effect; `seeds_to_settle` estimates the seeds per arm that would
             shrink it enough, if the mean and spread stay as measured.
For ``equal``: supported when the CI lies inside (-min_effect, min_effect), refuted when it lies
wholly outside, inconclusive otherwise.

Seeds are paired (the same seed gives both arms the same data order), so the CI is the t interval
of the per-seed differences; with unpaired seeds it falls back to Welch's t interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DIRECTIONS = ("lower", "higher", "equal")
MAX_SEEDS_REPORTED = 1000


@dataclass(frozen=True)
class Hypothesis:
    id: str
    statement: str
    metric: str
    treatment: str
    control: str
    direction: str
    min_effect: float
    source: str = ""  # "document, line N" for the handbook's own claims, else the paper it comes from
    literature: str = ""  # what published work found
    literature_expects: str = ""  # the verdict the literature predicts: supported | refuted

    @property
    def from_document(self) -> bool:
        return self.source.startswith("document")

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"hypothesis {self.id}: direction {self.direction!r} must be one of {DIRECTIONS}")
        if self.min_effect < 0:
            raise ValueError(f"hypothesis {self.id}: min_effect must be non-negative")
        if self.literature_expects not in ("", "supported", "refuted"):
            raise ValueError(f"hypothesis {self.id}: literature_expects must be supported or refuted")


@dataclass(frozen=True)
class Verdict:
    hypothesis: str
    metric: str
    treatment: str
    control: str
    direction: str
    min_effect: float
    n_seeds: int
    control_mean: float
    treatment_mean: float
    effect: float
    ci_low: float
    ci_high: float
    verdict: str
    seeds_to_settle: int | None  # seeds per arm that would likely settle an inconclusive verdict

    def as_dict(self) -> dict:
        return asdict(self)


def _effect_interval(
    control: dict[int, float], treatment: dict[int, float], sign: int
) -> tuple[float, float, float, float, int]:
    """Mean effect, CI low, CI high, standard deviation of the per-seed effect, n."""
    paired = sorted(set(control) & set(treatment))
    if paired and len(paired) == len(control) == len(treatment):
        diffs = sign * (np.array([treatment[s] for s in paired]) - np.array([control[s] for s in paired]))
        n, mean, sd = len(diffs), float(diffs.mean()), float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
        if n > 1 and sd == 0:
            return mean, mean, mean, 0.0, n
        if n < 2:
            return mean, -math.inf, math.inf, math.nan, n
        low, high = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
        return mean, float(low), float(high), sd, n
    a, b = np.array(list(treatment.values())), np.array(list(control.values()))
    n = min(len(a), len(b))
    mean = sign * float(a.mean() - b.mean())
    if n < 2:
        return mean, -math.inf, math.inf, math.nan, n
    spread = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    if spread == 0:
        return mean, mean, mean, 0.0, n
    low, high = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    low, high = sorted((sign * float(low), sign * float(high)))
    return mean, low, high, spread, n


def seeds_to_settle(mean: float, sd: float, distance_needed: float) -> int | None:
    """Smallest n whose t half-width sd * t(n-1) / sqrt(n) falls under `distance_needed`."""
    if not math.isfinite(sd) or distance_needed <= 0:
        return None
    for n in range(2, MAX_SEEDS_REPORTED + 1):
        if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < distance_needed:
            return n
    return None


def decide(h: Hypothesis, control: dict[int, float], treatment: dict[int, float]) -> Verdict:
    """Apply the decision rule to per-seed values of h.metric, keyed by seed."""
    if not control or not treatment:
        raise ValueError(f"hypothesis {h.id}: no values for {'control' if not control else 'treatment'} arm")
    sign = -1 if h.direction == "lower" else 1
    effect, low, high, sd, n = _effect_interval(control, treatment, sign)
    m = h.min_effect
    if h.direction == "equal":
        if -m < low and high < m:
            verdict = "supported"
        elif low >= m or high <= -m:
            verdict = "refuted"
        else:
            verdict = "inconclusive"
        distance = m - abs(effect) if abs(effect) < m else abs(effect) - m
    else:
        verdict = "supported" if low > m else "refuted" if high < m else "inconclusive"
        distance = abs(effect - m)
    return Verdict(
        hypothesis=h.id,
        metric=h.metric,
        treatment=h.treatment,
        control=h.control,
        direction=h.direction,
        min_effect=m,
        n_seeds=n,
        control_mean=float(np.mean(list(control.values()))),
        treatment_mean=float(np.mean(list(treatment.values()))),
        effect=effect,
        ci_low=low,
        ci_high=high,
        verdict=verdict,
        seeds_to_settle=seeds_to_settle(effect, sd, distance) if verdict == "inconclusive" else None,
    )
