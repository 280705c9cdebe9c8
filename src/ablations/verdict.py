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
wholly outside it (at or beyond one edge), inconclusive otherwise; `seeds_to_settle` then aims at the
nearer edge. A CI that merely touches the threshold settles nothing.

Seeds are paired (the same seed gives both arms the same data order), so when both arms have exactly
the same seeds the CI is the t interval of the per-seed differences, mean ± t(0.975, n-1)·sd/√n.
When their seeds differ at all (a run missing from one arm, a partly finished sweep) it is Welch's t
interval of the two arms instead, with n the smaller arm; `Verdict.test` says which ("paired t" or
"Welch t"), so that the switch is never silent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DIRECTIONS = ("lower", "higher", "equal")
MAX_SEEDS_REPORTED = 1000
PAIRED, WELCH = "paired t", "Welch t"  # Verdict.test


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
    test: str  # PAIRED or WELCH: the interval the arms' seeds allowed (last, so CSV columns only gain one)

    def as_dict(self) -> dict:
        return asdict(self)


def _half_width(sd: float, n: int | np.ndarray) -> float | np.ndarray:
    """Half the width of the 95% t interval of the mean of n values whose standard deviation is sd."""
    return stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)


def _effect_interval(
    control: dict[int, float], treatment: dict[int, float], sign: int
) -> tuple[float, float, float, float, int, str]:
    """Mean effect, CI low, CI high, standard deviation of the per-seed effect, n, and the test used."""
    if set(control) == set(treatment):
        diffs = sign * np.array([treatment[s] - control[s] for s in sorted(control)])
        n, mean = len(diffs), float(diffs.mean())
        if n < 2:
            return mean, -math.inf, math.inf, math.nan, n, PAIRED
        sd = float(diffs.std(ddof=1))
        half = float(_half_width(sd, n))
        return mean, mean - half, mean + half, sd, n, PAIRED
    a, b = np.array(list(treatment.values())), np.array(list(control.values()))
    n, mean = min(len(a), len(b)), sign * float(a.mean() - b.mean())
    if n < 2:
        return mean, -math.inf, math.inf, math.nan, n, WELCH
    spread = math.sqrt(a.var(ddof=1) + b.var(ddof=1))  # the sd of one treatment seed minus one control seed
    if spread == 0:  # exact, where scipy would warn "precision loss ... may be unreliable"
        return mean, mean, mean, spread, n, WELCH
    # no mutate: its only surviving mutant, equal_var=None, is falsy too, so scipy runs the same Welch test
    welch = stats.ttest_ind(a, b, equal_var=False)  # pragma: no mutate
    low, high = sorted(sign * float(x) for x in welch.confidence_interval(0.95))
    return mean, low, high, spread, n, WELCH


def seeds_to_settle(sd: float, distance_needed: float) -> int | None:
    """Smallest n (up to MAX_SEEDS_REPORTED) whose t half-width t(0.975, n-1)·sd/√n falls under `distance_needed`.

    None when no n does, or cannot (sd unknown with one seed, or no distance to win: a CI that touches
    the threshold with zero width stays there).
    """
    n = 2 + np.arange(MAX_SEEDS_REPORTED - 1)  # 2, 3, ..., MAX_SEEDS_REPORTED
    settled = np.flatnonzero(_half_width(sd, n) < distance_needed)
    return int(n[settled[0]]) if settled.size else None


def decide(h: Hypothesis, control: dict[int, float], treatment: dict[int, float]) -> Verdict:
    """Apply the decision rule to per-seed values of h.metric, keyed by seed."""
    if not control or not treatment:
        raise ValueError(f"hypothesis {h.id}: no values for {'control' if not control else 'treatment'} arm")
    sign = -1 if h.direction == "lower" else 1
    effect, low, high, sd, n, test = _effect_interval(control, treatment, sign)
    m = h.min_effect
    if h.direction == "equal":
        if -m < low and high < m:
            verdict = "supported"
        elif low >= m or high <= -m:
            verdict = "refuted"
        else:
            verdict = "inconclusive"
        distance = abs(abs(effect) - m)  # to the nearer edge of (-m, m)
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
        seeds_to_settle=seeds_to_settle(sd, distance) if verdict == "inconclusive" else None,
        test=test,
    )
