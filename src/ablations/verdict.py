"""The pre-registered decision rules: per-seed values of two arms -> effect, interval, p value, verdict.

The effect is oriented so that a positive value is the direction the hypothesis predicts:
``lower``  : control - treatment (the treatment arm has the lower metric)
``higher`` : treatment - control
``equal``  : treatment - control

Each hypothesis declares the test that matches its statement (`test`; by default superiority for
lower/higher and equivalence for equal). Every decision is a test at level ALPHA = 5 %, and p < ALPHA
exactly when a verdict is decided:

superiority      "better by at least m". The 95 % CI against m: supported when it lies wholly above m,
                 refuted when wholly below (a smaller effect, none, or the opposite one). p: the two-sided t
                 test of effect = m.
non_inferiority  "not worse by more than m". The same rule against -m: supported when the 95 % CI lies
                 above -m, refuted when it lies wholly below -m. An improvement supports it.
equivalence      "within ±m" (TOST). Supported when the 90 % CI lies inside (-m, m) (two one-sided tests at
                 5 %), refuted when it lies wholly beyond one edge. p: the TOST p while the mean is inside
                 the margins, else the one-sided p at the nearer edge.
counts           "fewer (or more) runs of the treatment end as `metric`" (not_learned, plateau or diverged):
                 Fisher's exact test on the 2x2 table of runs, each side at 2.5 %; p is the doubled
                 one-sided p. The effect is the difference of the two rates.
fact             a value fixed by construction (e.g. a parameter count): it must not vary by seed, and is
                 compared with the threshold exactly; no p value, outside the count of tests.
bound            an identity up to float rounding, or a limit, that each instance must meet ("the accumulated
                 gradient equals the big-batch one to 1e-4"): against a constant `reference`, every seed's value
                 is compared exactly and strictly with the threshold, supported when every seed meets it, refuted
                 when any misses it, not decided when a seed has no finite value. The effect is the worst seed's
                 and the interval the seeds' range; no p value, outside the count of tests, so that an identity does
                 not enter the false-discovery family with p = 0 and loosen the others' threshold. Two trained arms
                 are never compared this way: "every seed goes one way" is no test of a difference.

Side by side (`side_by_side: true`): the metric is already the treatment's contrast to the control, measured
in turns within each treatment run (a log ratio of speeds, ablations.timing), so the control's value is 0 for
every seed and the interval is the t interval of the treatment's per-seed contrasts. Against a constant
(`reference: 2.0`, a law's value such as a scaling exponent), the control is that constant for every seed and
`control` names it (e.g. "quadratic"); the test is any but counts.

A power law (`fit_arms`, `fit_size`): the treatment is each seed's exponent k of metric ∝ size^-k, fitted by least
squares on the logs over that seed's runs of the fit arms, and the control is a constant `reference` (e.g. 0: the
metric falls with size at all); every run of a seed must have learned for its exponent to count.

Seeds are paired (the same seed gives both arms the same data order): with exactly the same seeds in both
arms the interval is the t interval of the per-seed differences; when the seeds differ at all it is
Welch's interval of the two arms (`interval` says which, so the switch is never silent).

A measured hypothesis (superiority, non-inferiority, equivalence) is decided only on arms whose every
run learned (ablations.health): otherwise it is "not decided" and `reason` names the arm. A metric
measured at initialization (named init_...) is exempt: it does not depend on how training went. The verdicts of
a family are then adjusted together for the false discovery rate (Benjamini-Hochberg): `adjust`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

ALPHA = 0.05
DIRECTIONS = ("lower", "higher", "equal")
TESTS = ("superiority", "non_inferiority", "equivalence", "counts", "fact", "bound")
EXACT = ("fact", "bound")  # compared exactly, no p value: outside the family of tests
AT_INIT = "init_"  # the prefix of metrics measured before training (ablations.probes)
COUNTED = {"not_learned": ("plateau", "diverged"), "plateau": ("plateau",), "diverged": ("diverged",)}
SUPPORTED, REFUTED, INCONCLUSIVE, NOT_DECIDED = "supported", "refuted", "inconclusive", "not decided"
PAIRED, WELCH, FISHER, FACT, EVERY_SEED = "paired t", "Welch t", "Fisher exact", "fact", "every seed"  # .interval


@dataclass(frozen=True)
class Hypothesis:
    id: str
    statement: str
    metric: str
    treatment: str
    control: str
    direction: str
    min_effect: float
    test: str = ""  # one of TESTS; "" takes superiority for lower/higher, equivalence for equal
    source: str = ""  # "document, line N" for the handbook's own claims, else the paper it comes from
    # The statement is the opposite of the document's (the natural test of "X is needed" is "without X, as good"):
    # a supported verdict then contradicts the document, and a refuted one does not refute it.
    opposes_document: bool = False
    literature: str = ""  # what published work found
    literature_expects: str = ""  # the verdict the literature predicts: supported | refuted
    # the published effect of the same comparison, oriented as this one (+ = as predicted), in its own units
    # (`literature_units`, e.g. log PPL per word-piece): the report draws it beside ours; it decides nothing
    literature_effect: float | None = None
    literature_units: str = ""
    side_by_side: bool = False  # the metric is the contrast to the control, measured within each treatment run
    reference: float | None = None  # the control is this constant, not an arm; `control` names it
    # A power law: the treatment (a name, not an arm) is each seed's exponent k of metric ∝ fit_size^-k over the
    # runs of these arms (power_law_exponent), tested against the constant `reference`.
    fit_arms: tuple[str, ...] = ()
    fit_size: str = ""  # the metric that gives each run's size, e.g. non_embedding_params

    @property
    def measured_arms(self) -> tuple[str, ...]:
        """The arms whose runs hold the metric: side by side or against a constant, the treatment's alone; for a
        power law, the arms it is fitted over."""
        if self.fit_arms:
            return tuple(self.fit_arms)
        return (self.treatment,) if self.side_by_side or self.reference is not None else (self.control, self.treatment)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the measured arms' runs must hold."""
        return (self.metric, self.fit_size) if self.fit_arms else (self.metric,)

    @property
    def control_value(self) -> float | None:
        """The control's value for every seed when it is not an arm: the constant, or a side-by-side contrast's 0."""
        return 0.0 if self.side_by_side else self.reference

    @property
    def from_document(self) -> bool:
        return self.source.startswith("document")

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"hypothesis {self.id}: direction {self.direction!r} must be one of {DIRECTIONS}")
        if not self.test:
            object.__setattr__(self, "test", "equivalence" if self.direction == "equal" else "superiority")
        object.__setattr__(self, "fit_arms", tuple(self.fit_arms))
        if self.test not in TESTS:
            raise ValueError(f"hypothesis {self.id}: test {self.test!r} must be one of {TESTS}")
        if self.min_effect < 0:
            raise ValueError(f"hypothesis {self.id}: min_effect must be non-negative")
        if self.opposes_document and not self.from_document:
            raise ValueError(f"hypothesis {self.id}: opposes_document needs a source that starts with 'document'")
        if self.test not in EXACT and (self.direction == "equal") != (self.test == "equivalence"):
            needed = "equal" if self.test == "equivalence" else "lower or higher"
            raise ValueError(f"hypothesis {self.id}: the {self.test} test needs direction {needed}")
        if self.test == "equivalence" and self.min_effect == 0:
            raise ValueError(f"hypothesis {self.id}: an equivalence test needs a margin min_effect > 0")
        if self.test == "bound" and (self.reference is None or (self.direction == "equal" and self.min_effect == 0)):
            raise ValueError(f"hypothesis {self.id}: a bound is against a constant reference (and, equal, within a "
                             "margin min_effect > 0)")  # fmt: skip
        if self.test == "counts" and (self.metric not in COUNTED or self.min_effect != 0):
            raise ValueError(f"hypothesis {self.id}: a counts test counts one of {sorted(COUNTED)} "
                             "with min_effect 0")  # fmt: skip
        if self.side_by_side and self.test in ("counts", *EXACT):
            raise ValueError(f"hypothesis {self.id}: a side-by-side contrast is measured, not a {self.test}")
        if self.reference is not None and (self.side_by_side or self.test == "counts"):
            raise ValueError(f"hypothesis {self.id}: a constant reference is neither side by side nor counted")
        # (a constant reference already rules out counts and side by side)
        if self.fit_arms and (self.reference is None or not self.fit_size or len(self.fit_arms) < 3
                              or self.test in EXACT):  # fmt: skip
            raise ValueError(f"hypothesis {self.id}: a power law needs 3 or more fit_arms, a fit_size metric and a "
                             "constant reference to test its measured exponent against")  # fmt: skip
        if (self.literature_effect is None) != (not self.literature_units):
            raise ValueError(f"hypothesis {self.id}: a literature_effect needs its literature_units, and only it")
        if self.literature_expects not in ("", "supported", "refuted"):
            raise ValueError(f"hypothesis {self.id}: literature_expects must be supported or refuted")


def power_law_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """k of values ∝ sizes^-k: minus the least-squares slope of log(value) on log(size)."""
    slope, _ = np.polyfit(np.log(sizes), np.log(values), 1)
    return float(-slope)


@dataclass(frozen=True)
class Arm:
    """One arm's runs: the hypothesis metric and the health of each seed's run."""

    values: dict[int, float]
    health: dict[int, str]

    @classmethod
    def learned(cls, values: dict[int, float]) -> Arm:
        return cls(values, dict.fromkeys(values, "learned"))

    def health_summary(self) -> str:
        """E.g. "3 learned" or "2 plateau, 1 learned"."""
        counts = Counter(self.health.values())
        return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class Verdict:
    hypothesis: str
    metric: str
    treatment: str
    control: str
    direction: str
    min_effect: float
    test: str  # the kind of test (TESTS)
    n_seeds: int
    control_mean: float  # for counts: the rate of counted runs
    treatment_mean: float
    effect: float
    ci_low: float
    ci_high: float
    ci_level: float  # 0.95, or 0.90 for equivalence (TOST); NaN where no interval applies
    p_value: float  # NaN for facts, bounds and hypotheses not decided: outside the family of tests
    verdict: str
    interval: str  # PAIRED, WELCH, FISHER, FACT or EVERY_SEED
    control_health: str
    treatment_health: str
    reason: str = ""  # why a verdict is "not decided"
    p_adjusted: float = math.nan  # Benjamini-Hochberg over the family (`adjust`)
    verdict_adjusted: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Estimate:
    """The oriented mean effect and its t distribution: paired differences or Welch's two samples."""

    mean: float
    se: float
    df: float
    n: int
    interval: str

    def ci(self, level: float) -> tuple[float, float]:
        if self.n < 2:
            return -math.inf, math.inf
        half = stats.t.ppf(0.5 + level / 2, self.df) * self.se if self.se > 0 else 0.0
        return self.mean - half, self.mean + half

    def p_above(self, threshold: float) -> float:
        """One-sided p of "the effect exceeds threshold" (H0: effect <= threshold)."""
        if self.n < 2:
            return 1.0
        if self.se == 0:  # identical differences: exact, where the t statistic would divide by zero
            return 0.0 if self.mean > threshold else 1.0
        return float(stats.t.sf((self.mean - threshold) / self.se, self.df))

    def p_below(self, threshold: float) -> float:
        """One-sided p of "the effect lies below threshold"."""
        return _Estimate(-self.mean, self.se, self.df, self.n, self.interval).p_above(-threshold)


def _estimate(control: dict[int, float], treatment: dict[int, float], sign: int) -> _Estimate:
    if set(control) == set(treatment):
        diffs = sign * np.array([treatment[s] - control[s] for s in sorted(control)])
        n = len(diffs)
        if n < 2:
            return _Estimate(float(diffs.mean()), math.nan, math.nan, n, PAIRED)
        described = DescrStatsW(diffs)
        return _Estimate(float(described.mean), float(described.std_mean), n - 1.0, n, PAIRED)
    first, second = np.array(list(treatment.values())), np.array(list(control.values()))
    if sign < 0:
        first, second = second, first
    n = min(len(first), len(second))
    mean = float(first.mean() - second.mean())
    if n < 2:
        return _Estimate(mean, math.nan, math.nan, n, WELCH)
    compared = CompareMeans(DescrStatsW(first), DescrStatsW(second))
    se = float(compared.std_meandiff_separatevar)
    return _Estimate(mean, se, float(compared.dof_satt()) if se > 0 else math.inf, n, WELCH)


def _two_sided(estimate: _Estimate, threshold: float) -> tuple[str, float]:
    """Superiority and non-inferiority: the 95 % CI against threshold, and its p value."""
    above, below = estimate.p_above(threshold), estimate.p_below(threshold)
    verdict = SUPPORTED if above < ALPHA / 2 else REFUTED if below < ALPHA / 2 else INCONCLUSIVE
    return verdict, min(1.0, 2 * min(above, below))


def _equivalence(estimate: _Estimate, margin: float) -> tuple[str, float]:
    if abs(estimate.mean) < margin:
        p = max(estimate.p_above(-margin), estimate.p_below(margin))  # TOST
        return (SUPPORTED if p < ALPHA else INCONCLUSIVE), p
    p = estimate.p_above(margin) if estimate.mean > 0 else estimate.p_below(-margin)
    return (REFUTED if p < ALPHA else INCONCLUSIVE), p


def _base(h: Hypothesis, control: Arm, treatment: Arm) -> dict:
    return {
        "hypothesis": h.id, "metric": h.metric, "treatment": h.treatment, "control": h.control,
        "direction": h.direction, "min_effect": h.min_effect, "test": h.test,
        "n_seeds": min(len(control.values), len(treatment.values)),
        "control_health": control.health_summary(), "treatment_health": treatment.health_summary(),
    }  # fmt: skip


def _measured(h: Hypothesis, control: Arm, treatment: Arm) -> Verdict:
    sign = -1 if h.direction == "lower" else 1
    estimate = _estimate(control.values, treatment.values, sign)
    if estimate.n >= 2 and estimate.se <= 1e-12 * max(1.0, abs(estimate.mean)):  # no spread beyond rounding
        return _exact(h, control, treatment, estimate.mean)
    if h.test == "equivalence":
        level, (verdict, p) = 1 - 2 * ALPHA, _equivalence(estimate, h.min_effect)
    else:
        threshold = h.min_effect if h.test == "superiority" else -h.min_effect
        level, (verdict, p) = 1 - ALPHA, _two_sided(estimate, threshold)
    low, high = estimate.ci(level)
    return Verdict(
        **_base(h, control, treatment),
        control_mean=float(np.mean(list(control.values.values()))),
        treatment_mean=float(np.mean(list(treatment.values.values()))),
        effect=estimate.mean, ci_low=low, ci_high=high, ci_level=level, p_value=p,
        verdict=verdict, interval=estimate.interval,
        reason="one seed gives no interval" if estimate.n < 2 else "",
    )  # fmt: skip


def _exact(h: Hypothesis, control: Arm, treatment: Arm, effect: float) -> Verdict:
    """Every seed gives the same difference (a padding fraction, a byte count): the quantity does not vary by seed,
    so it is compared exactly with the margin, as a fact is, and leaves the family of tests, where a t test with no
    variance would enter with p = 0."""
    if h.test == "equivalence":  # on the edge of the margin: neither side
        verdict = SUPPORTED if abs(effect) < h.min_effect else REFUTED if abs(effect) > h.min_effect else INCONCLUSIVE
    else:
        threshold = h.min_effect if h.test == "superiority" else -h.min_effect
        verdict = SUPPORTED if effect > threshold else REFUTED if effect < threshold else INCONCLUSIVE
    return Verdict(
        **_base(h, control, treatment),
        control_mean=float(np.mean(list(control.values.values()))),
        treatment_mean=float(np.mean(list(treatment.values.values()))),
        effect=effect, ci_low=effect, ci_high=effect, ci_level=math.nan, p_value=math.nan,
        verdict=verdict, interval=FACT,
    )  # fmt: skip


def _counts(h: Hypothesis, control: Arm, treatment: Arm) -> Verdict:
    counted = COUNTED[h.metric]
    hits = [sum(status in counted for status in arm.health.values()) for arm in (treatment, control)]
    sizes = [len(treatment.health), len(control.health)]
    table = [[hits[0], sizes[0] - hits[0]], [hits[1], sizes[1] - hits[1]]]
    fewer = stats.fisher_exact(table, alternative="less").pvalue  # the treatment counts fewer runs
    more = stats.fisher_exact(table, alternative="greater").pvalue
    predicted, opposite = (fewer, more) if h.direction == "lower" else (more, fewer)
    verdict = SUPPORTED if predicted < ALPHA / 2 else REFUTED if opposite < ALPHA / 2 else INCONCLUSIVE
    rates = [hit / size for hit, size in zip(hits, sizes, strict=True)]
    effect = (rates[1] - rates[0]) if h.direction == "lower" else (rates[0] - rates[1])
    return Verdict(
        **_base(h, control, treatment),
        control_mean=rates[1], treatment_mean=rates[0], effect=effect, ci_low=math.nan, ci_high=math.nan,
        ci_level=math.nan, p_value=min(1.0, 2 * min(predicted, opposite)), verdict=verdict, interval=FISHER,
    )  # fmt: skip


def _fact(h: Hypothesis, control: Arm, treatment: Arm) -> Verdict:
    common = dict(_base(h, control, treatment), ci_level=math.nan, p_value=math.nan, interval=FACT)
    arms = {h.control: control, h.treatment: treatment}
    if varying := [name for name, arm in arms.items() if len(set(arm.values.values())) > 1]:
        nan = math.nan
        return Verdict(**common, control_mean=nan, treatment_mean=nan, effect=nan, ci_low=nan, ci_high=nan,
                       verdict=NOT_DECIDED, reason=f"a fact varies by seed in {', '.join(varying)}")  # fmt: skip
    c, t = next(iter(control.values.values())), next(iter(treatment.values.values()))
    effect = {"lower": c - t, "higher": t - c, "equal": t - c}[h.direction]
    holds = abs(effect) <= h.min_effect if h.direction == "equal" else effect >= h.min_effect
    return Verdict(**common, control_mean=c, treatment_mean=t, effect=effect, ci_low=effect, ci_high=effect,
                   verdict=SUPPORTED if holds else REFUTED)  # fmt: skip


def _bound(h: Hypothesis, control: Arm, treatment: Arm) -> Verdict:
    """Every seed's own effect against the threshold, strictly ("below 1e-4"); the control is the constant."""
    sign = {"lower": -1, "higher": 1, "equal": 1}[h.direction]
    effects = [sign * (treatment.values[s] - h.reference) for s in sorted(treatment.values)]
    common = dict(_base(h, control, treatment), control_mean=h.reference, ci_level=math.nan, p_value=math.nan,
                  interval=EVERY_SEED)  # fmt: skip
    if missing := [seed for seed in sorted(treatment.values) if not math.isfinite(treatment.values[seed])]:
        nan = math.nan
        return Verdict(**common, treatment_mean=nan, effect=nan, ci_low=nan, ci_high=nan, verdict=NOT_DECIDED,
                       reason=f"no finite value in seeds {missing} of {h.treatment}")  # fmt: skip
    holds = [abs(e) < h.min_effect if h.direction == "equal" else e > h.min_effect for e in effects]
    worst = max(effects, key=abs) if h.direction == "equal" else min(effects)
    return Verdict(**common, treatment_mean=float(np.mean(list(treatment.values.values()))), effect=worst,
                   ci_low=min(effects), ci_high=max(effects), verdict=SUPPORTED if all(holds) else REFUTED)  # fmt: skip


def _unhealthy(h: Hypothesis, control: Arm, treatment: Arm) -> str:
    """Why the arms cannot decide h ("" when every run learned)."""
    problems = []
    measured = {h.control: control, h.treatment: treatment}
    names = (h.treatment,) if h.fit_arms else h.measured_arms  # a power law: per seed, the health of all its runs
    for name, arm in ((name, measured[name]) for name in names):
        failed = Counter(status for status in arm.health.values() if status != "learned")
        if failed:
            counts = ", ".join(f"{n} of {len(arm.health)} runs {status}" for status, n in sorted(failed.items()))
            problems.append(f"{name}: {counts}")
    return "; ".join(problems)


def decide(h: Hypothesis, control: Arm, treatment: Arm) -> Verdict:
    """Apply h's test to the per-seed values (and health) of its two arms."""
    if not control.values or not treatment.values:
        raise ValueError(f"hypothesis {h.id}: no values for {'control' if not control.values else 'treatment'} arm")
    if h.test == "counts":
        return _counts(h, control, treatment)
    if h.test == "fact":
        return _fact(h, control, treatment)
    if h.test == "bound":
        return _bound(h, control, treatment)
    verdict = _measured(h, control, treatment)
    if not h.metric.startswith(AT_INIT) and (reason := _unhealthy(h, control, treatment)):
        return replace(verdict, verdict=NOT_DECIDED, p_value=math.nan, reason=f"did not learn: {reason}")
    return verdict


def adjust(verdicts: list[Verdict]) -> list[Verdict]:
    """Benjamini-Hochberg over the verdicts that carry a p value: a decided verdict whose adjusted p is not
    below ALPHA becomes inconclusive. Facts, bounds and hypotheses not decided keep their verdict and no adjusted p."""
    tested = [i for i, v in enumerate(verdicts) if math.isfinite(v.p_value)]
    p_values = [verdicts[i].p_value for i in tested]
    adjusted = dict(zip(tested, multipletests(p_values, ALPHA, "fdr_bh")[1], strict=True)) if tested else {}
    out = []
    for i, v in enumerate(verdicts):
        p = float(adjusted.get(i, math.nan))
        keep = i not in adjusted or v.verdict not in (SUPPORTED, REFUTED) or p < ALPHA
        out.append(replace(v, p_adjusted=p, verdict_adjusted=v.verdict if keep else INCONCLUSIVE))
    return out
