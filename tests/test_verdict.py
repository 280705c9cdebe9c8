"""The decision rules. Every expected number is worked out here by hand on tiny inputs (exact binary fractions,
t quantiles from a table, hypergeometric counts) or by scipy's own tests directly, never by the code under test.
`make mutation` checks that these tests kill every mutant of ablations.verdict."""

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from ablations.decisions import ArmRun, verdicts_for
from ablations.verdict import ALPHA, Arm, Hypothesis, adjust, decide, power_law_exponent

T2 = 4.302652729749462  # t(0.975, 2)
T2_90 = 2.919985580355516  # t(0.95, 2)


def hypothesis(direction="lower", min_effect=0.02, test="", metric="final_val_loss") -> Hypothesis:
    return Hypothesis("H", "s", metric, "treatment", "control", direction, min_effect, test=test)


def values(*xs) -> Arm:
    return Arm.learned(dict(enumerate(xs)))


def arm(values_by_seed: dict[int, float], *health: str) -> Arm:
    return Arm(values_by_seed, dict(zip(values_by_seed, health, strict=True)))


# --- superiority: the 95% CI against min_effect ---------------------------------------------------------------


def test_clearly_better_treatment_is_supported():
    v = decide(hypothesis(), values(2.00, 2.01, 1.99), values(1.90, 1.92, 1.88))
    assert (v.verdict, v.test, v.interval, v.ci_level) == ("supported", "superiority", "paired t", 0.95)
    assert v.effect == pytest.approx(0.1)
    assert v.ci_low > 0.02


def test_a_verdict_records_every_input_and_result():
    """Per-seed effects (control - treatment) 1.0, 0.5, 1.5: mean 1, sd 0.5, half-width t(0.975, 2) * 0.5 / sqrt(3)
    = 1.242; the CI [-0.242, 2.242] contains 0.02. p: the two-sided t test of effect = 0.02."""
    v = decide(hypothesis("lower", 0.02), values(3.0, 2.5, 3.5), values(2.0, 2.0, 2.0))
    half = T2 * 0.5 / math.sqrt(3)
    assert v.as_dict() == {
        "hypothesis": "H",
        "metric": "final_val_loss",
        "treatment": "treatment",
        "control": "control",
        "direction": "lower",
        "min_effect": 0.02,
        "test": "superiority",
        "n_seeds": 3,
        "control_mean": 3.0,
        "treatment_mean": 2.0,
        "effect": 1.0,
        "ci_low": pytest.approx(1 - half, rel=1e-12),
        "ci_high": pytest.approx(1 + half, rel=1e-12),
        "ci_level": 0.95,
        "p_value": pytest.approx(stats.ttest_1samp([1.0, 0.5, 1.5], 0.02).pvalue, rel=1e-9),
        "verdict": "inconclusive",
        "interval": "paired t",
        "control_health": "3 learned",
        "treatment_health": "3 learned",
        "reason": "",
        "p_adjusted": pytest.approx(math.nan, nan_ok=True),
        "verdict_adjusted": "",
    }
    assert (v.ci_low, v.ci_high) == pytest.approx(stats.ttest_1samp([1.0, 0.5, 1.5], 0).confidence_interval())


def test_refuted_when_the_whole_interval_lies_below_min_effect():
    # effect 0 ± 0.0248 (equal arms): wholly below 0.05 -> refuted; a mirrored effect -0.2 is refuted too
    assert decide(hypothesis("lower", 0.05), values(2.0, 2.01, 1.99), values(2.0, 2.0, 2.0)).verdict == "refuted"
    assert decide(hypothesis(), values(1.8, 1.81, 1.79), values(2.0, 2.01, 1.99)).verdict == "refuted"


def test_higher_orients_the_effect_as_treatment_minus_control():
    v = decide(hypothesis("higher"), values(1.0, 1.0, 1.01), values(1.2, 1.21, 1.2))
    assert v.effect == pytest.approx(0.2)  # 0.2, 0.21, 0.19
    assert v.verdict == "supported"


@pytest.mark.parametrize(
    ("control", "treatment", "expected"),
    [
        ((2.0, 2.01, 1.99), (1.90, 1.92, 1.88), "supported"),
        ((3.0, 2.5, 3.5), (2.0, 2.0, 2.0), "inconclusive"),
        ((2.0, 2.01, 1.99), (2.0, 2.0, 2.0), "inconclusive"),  # 0 ± 0.0248 contains 0.02
        ((2.0, 2.01, 1.99), (2.05, 2.065, 2.045), "refuted"),
        ((2.0, 2.1, 1.95, 2.2, 2.03), (1.97, 2.02, 1.96, 2.1, 2.0), "inconclusive"),
        ((2.0, 2.1, 1.95, 2.2, 2.03), (1.9, 2.02, 1.86, 2.1, 1.93), "supported"),
    ],
)
def test_a_superiority_p_value_is_the_t_test_against_min_effect_and_below_alpha_exactly_when_decided(
    control, treatment, expected
):
    v = decide(hypothesis("lower", 0.02), values(*control), values(*treatment))
    diffs = [c - t for c, t in zip(control, treatment, strict=True)]
    assert v.p_value == pytest.approx(stats.ttest_1samp(diffs, 0.02).pvalue, rel=1e-9)
    assert v.verdict == expected
    assert (v.p_value < ALPHA) == (v.verdict != "inconclusive")


# --- non-inferiority: the 95% CI against -min_effect -----------------------------------------------------------


def test_e05_h4_an_improvement_is_supported_as_non_inferior_but_not_as_equivalent():
    """E05 H4 "keeps top-1 accuracy (within 0.005)": accuracy improved by 0.005. Per-seed gains 0.0045, 0.005,
    0.0055 (sd 0.0005): the 95% CI [0.00376, 0.00624] lies above -0.005, so not worse by more than 0.005. As an
    equivalence test the mean sits on the margin, so that test cannot be decided."""
    control, treatment = values(0.40, 0.41, 0.42), values(0.4045, 0.415, 0.4255)
    kept = decide(hypothesis("higher", 0.005, "non_inferiority", "final_top1_acc"), control, treatment)
    half = T2 * 0.0005 / math.sqrt(3)
    assert (kept.ci_low, kept.ci_high) == pytest.approx((0.005 - half, 0.005 + half), rel=1e-6)
    assert (kept.verdict, kept.test, kept.ci_level) == ("supported", "non_inferiority", 0.95)
    assert kept.p_value == pytest.approx(stats.ttest_1samp([0.0045, 0.005, 0.0055], -0.005).pvalue, rel=1e-6)
    assert decide(hypothesis("equal", 0.005, metric="final_top1_acc"), control, treatment).verdict == "inconclusive"


def test_non_inferiority_is_refuted_when_the_treatment_is_worse_by_more_than_the_margin():
    # loss higher by 0.1 (± 0.025) under direction lower, margin 0.05: wholly below -0.05
    v = decide(hypothesis("lower", 0.05, "non_inferiority"), values(2.0, 2.01, 1.99), values(2.1, 2.1, 2.1))
    assert (v.effect, v.verdict) == (pytest.approx(-0.1), "refuted")
    # worse by 0.03 ± 0.025: the CI [-0.055, -0.005] contains -0.05
    v = decide(hypothesis("lower", 0.05, "non_inferiority"), values(2.0, 2.01, 1.99), values(2.03, 2.03, 2.03))
    assert v.verdict == "inconclusive"


# --- equivalence: TOST, the 90% CI inside (-m, m) --------------------------------------------------------------


def test_equivalence_is_two_one_sided_tests_at_five_percent():
    """Differences 0.03, 0.05, 0.04: mean 0.04, sd 0.01. 90% CI 0.04 ± 2.920 * 0.01 / sqrt(3) = [0.0231, 0.0569],
    inside (-0.06, 0.06); the 95% CI [0.0152, 0.0648] is not, so only a 5%-level TOST supports it."""
    v = decide(hypothesis("equal", 0.06), values(1.0, 1.0, 1.0), values(1.03, 1.05, 1.04))
    half = T2_90 * 0.01 / math.sqrt(3)
    assert (v.ci_low, v.ci_high, v.ci_level) == (pytest.approx(0.04 - half), pytest.approx(0.04 + half), 0.9)
    assert 0.04 + T2 * 0.01 / math.sqrt(3) > 0.06
    assert v.verdict == "supported"
    diffs = [0.03, 0.05, 0.04]
    tost = max(stats.ttest_1samp(diffs, -0.06, alternative="greater").pvalue,
               stats.ttest_1samp(diffs, 0.06, alternative="less").pvalue)  # fmt: skip
    assert v.p_value == pytest.approx(tost, rel=1e-6)


def test_equivalence_is_refuted_when_the_90_percent_interval_lies_beyond_an_edge():
    v = decide(hypothesis("equal", 0.05), values(2.0, 2.01, 1.99), values(2.2, 2.21, 2.19))
    assert v.verdict == "refuted"
    diffs = [0.2, 0.2, 0.2 + 1e-12]
    v = decide(hypothesis("equal", 0.5), values(2.0, 2.0, 2.0), values(1.0, 1.01, 0.99))
    assert (v.effect, v.verdict) == (pytest.approx(-1.0), "refuted")
    assert v.p_value == pytest.approx(stats.ttest_1samp([-1.0, -0.99, -1.01], -0.5, alternative="less").pvalue)
    assert diffs  # the first case is exact: a zero-spread difference far outside


def test_equivalence_straddling_an_edge_is_inconclusive():
    v = decide(hypothesis("equal", 1.0), values(1.0, 1.0, 1.0), values(1.25, 1.5, 1.75))
    half = T2_90 * 0.25 / math.sqrt(3)
    assert (v.ci_low, v.ci_high) == pytest.approx((0.5 - half, 0.5 + half))
    assert v.verdict == "supported"  # 0.5 ± 0.42 lies inside (-1, 1)
    v = decide(hypothesis("equal", 0.5), values(2.0, 2.0, 2.0), values(1.0, 1.5, 0.5))
    assert (v.effect, v.verdict) == (pytest.approx(-1.0), "inconclusive")  # -1 ± 0.84 crosses -0.5


@pytest.mark.parametrize(("treatment", "verdict"), [(1.125, "supported"), (1.5, "refuted"), (1.25, "inconclusive")])
def test_an_exact_equivalence_decides_strictly_inside_or_beyond_and_not_on_the_edge(treatment, verdict):
    v = decide(hypothesis("equal", 0.25), values(1.0, 1.0), values(treatment, treatment))
    assert (v.effect, v.ci_low, v.ci_high, v.verdict) == (treatment - 1.0, treatment - 1.0, treatment - 1.0, verdict)
    assert (math.isnan(v.p_value), v.interval) == (True, "fact")  # no spread: outside the family of tests


# --- counts: Fisher's exact test on learned / plateau / diverged -----------------------------------------------


def test_counts_three_against_three_cannot_decide_and_five_against_five_can():
    """ "Warm-up keeps Post-LN from getting stuck": all control runs plateau, no treatment run does. With 3 runs an
    arm the one-sided p is 1 / C(6, 3) = 1/20 = 0.05 (not below 2.5%); with 5, 1 / C(10, 5) = 1/252."""
    h = hypothesis("lower", 0.0, "counts", "not_learned")
    three = decide(h, arm(dict.fromkeys(range(3), 3.35), *["plateau"] * 3), values(2.4, 2.5, 2.45))
    assert (three.verdict, three.p_value, three.interval) == ("inconclusive", pytest.approx(2 / 20), "Fisher exact")
    assert (three.control_mean, three.treatment_mean, three.effect) == (1.0, 0.0, 1.0)
    control = arm(dict.fromkeys(range(5), 3.35), "plateau", "plateau", "diverged", "plateau", "plateau")
    five = decide(h, control, values(2.4, 2.5, 2.45, 2.4, 2.42))
    assert (five.verdict, five.p_value) == ("supported", pytest.approx(2 / 252))
    assert (five.control_health, five.treatment_health) == ("4 plateau, 1 diverged", "5 learned")
    assert math.isnan(five.ci_low) and math.isnan(five.ci_level)


def test_counts_are_refuted_when_the_treatment_fails_more_and_count_only_their_status():
    """4 of 5 treatment runs diverge, none of the control: one-sided p = C(5,4) / C(10,4) = 5/210 < 2.5%."""
    treatment = arm(dict.fromkeys(range(5), 5.5), "diverged", "diverged", "diverged", "diverged", "learned")
    v = decide(hypothesis("lower", 0.0, "counts", "diverged"), values(2.4, 2.5, 2.45, 2.4, 2.42), treatment)
    assert (v.verdict, v.p_value, v.effect) == ("refuted", pytest.approx(10 / 210), pytest.approx(-0.8))
    plateaus = decide(hypothesis("higher", 0.0, "counts", "plateau"), values(2.4, 2.5, 2.45, 2.4, 2.42), treatment)
    assert (plateaus.verdict, plateaus.treatment_mean) == ("inconclusive", 0.0)  # diverged is not a plateau


# --- facts ---------------------------------------------------------------------------------------------------


def test_a_fact_is_compared_exactly_and_has_no_p_value():
    """E01 H3: 8 heads have exactly as many parameters as 1 head."""
    same = Hypothesis("H3", "s", "n_params", "h8", "h1", "equal", 0, test="fact")
    v = decide(same, values(800, 800, 800), values(800, 800, 800))
    assert (v.verdict, v.effect, v.interval, v.test) == ("supported", 0, "fact", "fact")
    assert math.isnan(v.p_value)
    more = Hypothesis("H", "s", "n_params", "big", "small", "higher", 100, test="fact")
    assert decide(more, values(800, 800), values(900, 900)).verdict == "supported"  # exactly 100 more
    assert decide(more, values(800, 800), values(899, 899)).verdict == "refuted"
    assert decide(same, values(800, 800), values(801, 801)).verdict == "refuted"


def test_a_fact_that_varies_by_seed_is_not_decided():
    h = Hypothesis("H3", "s", "n_params", "h8", "h1", "equal", 0, test="fact")
    v = decide(h, values(800, 800), values(800, 801))
    assert (v.verdict, v.reason) == ("not decided", "a fact varies by seed in h8")


# --- bounds: an identity that every seed must meet ----------------------------------------------------------------


def bound(direction="lower", min_effect=0.0, reference=1.0) -> Hypothesis:
    return Hypothesis("H6", "s", "grad_diff", "accum", "float_rounding", direction, min_effect, test="bound",
                      reference=reference)  # fmt: skip


def constant(value: float, seeds) -> Arm:
    return Arm.learned(dict.fromkeys(seeds, value))


def test_a_bound_met_by_every_seed_is_supported_with_the_worst_seed_and_the_range():
    """E26 H6: every seed's gradient difference below the reference 1.0 (binary fractions, effects 0.75, 0.5, 0.875)."""
    v = decide(bound(), constant(1.0, range(3)), values(0.25, 0.5, 0.125))
    assert (v.verdict, v.test, v.interval, v.effect, v.ci_low, v.ci_high) == (
        "supported", "bound", "every seed", 0.5, 0.5, 0.875)  # fmt: skip
    assert math.isnan(v.p_value) and math.isnan(v.ci_level)
    assert (v.control_mean, v.treatment_mean) == (1.0, 0.875 / 3)  # (0.25 + 0.5 + 0.125) / 3


def test_one_seed_past_the_bound_refutes_it_whatever_the_mean():
    v = decide(bound(), constant(1.0, range(3)), values(0.25, 1.5, 0.125))  # mean 0.625, well below 1
    assert (v.verdict, v.effect, v.ci_low, v.ci_high) == ("refuted", -0.5, -0.5, 0.875)


def test_a_bound_is_strict_at_its_edge_in_either_direction():
    """ "below 1e-4" is not met at 1e-4."""
    assert decide(bound(), constant(1.0, range(2)), values(1.0, 0.5)).verdict == "refuted"  # effect 0, not > 0
    higher = bound("higher", 0.25)
    assert decide(higher, constant(1.0, range(2)), values(1.375, 1.5)).verdict == "supported"  # effects .375, .5
    assert decide(higher, constant(1.0, range(2)), values(1.25, 1.5)).verdict == "refuted"  # .25 is not above .25


def test_an_equal_bound_takes_the_largest_distance_either_way():
    """E23 H3: padding changes the loss by less than the margin either way, in every seed."""
    h = bound("equal", 0.5, reference=0.0)
    v = decide(h, constant(0.0, range(3)), values(0.375, -0.25, 0.0625))  # the worst is the largest, not the least
    assert (v.verdict, v.effect, v.ci_low, v.ci_high) == ("supported", 0.375, -0.25, 0.375)
    v = decide(h, constant(0.0, range(3)), values(0.125, -0.5, 0.0625))
    assert (v.verdict, v.effect) == ("refuted", -0.5)


def test_a_seed_without_a_finite_value_leaves_a_bound_not_decided():
    """A diverged run has no gradient difference: refuted (or not) by the order of the seeds, once."""
    v = decide(bound(), constant(1.0, range(3)), values(0.25, math.nan, 0.125))
    assert (v.verdict, v.reason) == ("not decided", "no finite value in seeds [1] of accum")
    assert all(math.isnan(x) for x in (v.effect, v.p_value, v.treatment_mean, v.ci_low, v.ci_high))


@pytest.mark.parametrize(
    ("change", "message"),
    [({"reference": None}, "a bound is against a constant reference"),  # two trained arms: no test of a difference
     ({"direction": "equal", "min_effect": 0.0}, "within a margin"),
     ({"side_by_side": True}, "a side-by-side contrast is measured, not a bound"),
     ({"fit_arms": ("a", "b", "c"), "fit_size": "n"}, "a power law needs")],
)  # fmt: skip
def test_a_bound_needs_a_constant_and_is_neither_side_by_side_nor_a_power_law(change, message):
    with pytest.raises(ValueError, match=message):
        replace(bound(), **change)


def test_only_a_statement_of_the_document_can_oppose_it():
    with pytest.raises(ValueError, match="opposes_document needs a source that starts with 'document'"):
        Hypothesis("H", "s", "m", "t", "c", "lower", 0.02, source="Vaswani et al. 2017", opposes_document=True)


def test_a_bound_ignores_health_and_stays_outside_the_family():
    """An identity does not depend on how training went; with p = NaN it never enters Benjamini-Hochberg, where a
    p of 0 would lower the others' adjusted p (0.02 among 0.02 and 0.5 adjusts to 0.04; with a 0 added, to 0.03)."""
    stuck = arm({0: 0.25, 1: 0.5}, "plateau", "plateau")
    v = decide(bound(), constant(1.0, range(2)), stuck)
    assert v.verdict == "supported"
    tested = decide(hypothesis(), values(2.00, 2.01, 1.99), values(1.90, 1.92, 1.88))
    small, large = replace(tested, p_value=0.02), replace(tested, p_value=0.5)
    assert adjust([small, large, v])[0].p_adjusted == pytest.approx(0.04)
    assert adjust([small, large, replace(v, p_value=0.0)])[0].p_adjusted == pytest.approx(0.03)  # what it avoids
    together = adjust([small, large, v])
    assert math.isnan(together[2].p_adjusted) and together[2].verdict_adjusted == "supported"


# --- health: arms that did not learn decide nothing ------------------------------------------------------------


def test_a_plateaued_arm_cannot_support_or_refute_a_loss_hypothesis():
    """E04 on TinyShakespeare: Post-LN L24 without warm-up ends at 3.350, 3.348 (the unigram loss) and 2.577."""
    stuck = arm({0: 3.350, 1: 3.348, 2: 2.577}, "plateau", "plateau", "learned")
    for h in (hypothesis("lower", 0.02), hypothesis("higher", 0.02), hypothesis("equal", 0.5),
              hypothesis("higher", 5.0, "non_inferiority")):  # fmt: skip
        v = decide(h, stuck, values(2.2, 2.25, 2.21))
        assert v.verdict == "not decided"
        assert v.reason == "did not learn: control: 2 of 3 runs plateau"
        assert math.isnan(v.p_value)
    before_training = hypothesis("lower", 0.02, metric="init_grad_norm_last_over_first")
    at_init = decide(before_training, stuck, values(2.2, 2.25, 2.21))  # effects 1.15, 1.098, 0.367
    assert at_init.verdict == "inconclusive" and math.isfinite(at_init.p_value) and at_init.reason == ""
    assert at_init.control_health == "2 plateau, 1 learned"
    v = decide(hypothesis(), values(2.2, 2.25, 2.21), arm({0: 9.0, 1: 2.2, 2: 3.3}, "diverged", "learned", "plateau"))
    assert v.reason == "did not learn: treatment: 1 of 3 runs diverged, 1 of 3 runs plateau"
    assert v.treatment_health == "1 diverged, 1 learned, 1 plateau"


# --- seeds that do not pair: Welch's interval, and it says so ------------------------------------------------


def test_one_seed_is_always_inconclusive():
    v = decide(hypothesis(), values(2.0), values(1.0))
    assert (v.ci_low, v.ci_high, v.p_value) == (-math.inf, math.inf, 1.0)
    assert (v.verdict, v.n_seeds, v.interval, v.reason) == ("inconclusive", 1, "paired t", "one seed gives no interval")


def test_unpaired_seeds_fall_back_to_welch():
    v = decide(hypothesis(), Arm.learned({0: 2.0, 1: 2.02, 2: 1.98}), Arm.learned({5: 1.7, 6: 1.72, 7: 1.69}))
    welch = stats.ttest_ind([2.0, 2.02, 1.98], [1.7, 1.72, 1.69], equal_var=False)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((2.0 - 1.7033333333333334, *welch.confidence_interval()))
    shifted = stats.ttest_ind([2.0 - 0.02, 2.02 - 0.02, 1.98 - 0.02], [1.7, 1.72, 1.69], equal_var=False)
    assert v.p_value == pytest.approx(shifted.pvalue, rel=1e-9)
    assert (v.verdict, v.interval) == ("supported", "Welch t")


def test_partly_overlapping_seeds_use_welch_over_all_values_and_say_so():
    """Seeds 1 and 2 are in both arms, 0 only in control, 3 and 4 only in treatment: Welch over every value, with
    n the smaller arm, not a paired interval over the two shared seeds."""
    control, treatment = {0: 2.3, 1: 2.0, 2: 2.1}, {1: 1.9, 2: 1.7, 3: 2.2, 4: 1.6}
    v = decide(hypothesis(), Arm.learned(control), Arm.learned(treatment))
    low, high = stats.ttest_ind([2.3, 2.0, 2.1], [1.9, 1.7, 2.2, 1.6], equal_var=False).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((6.4 / 3 - 7.4 / 4, low, high))
    assert (v.n_seeds, v.interval) == (3, "Welch t")


def test_welch_under_higher_and_for_equivalence_uses_the_matching_interval():
    v = decide(hypothesis("higher", 2.0), Arm.learned({1: 0.0, 2: 0.5}), Arm.learned({0: 1.0, 1: 1.5}))
    low, high = stats.ttest_ind([1.0, 1.5], [0.0, 0.5], equal_var=False).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high, v.verdict) == (pytest.approx(1.0), low, high, "inconclusive")
    v = decide(hypothesis("equal", 2.0), Arm.learned({1: 0.0, 2: 0.5}), Arm.learned({0: 1.0, 1: 1.5}))
    low, high = stats.ttest_ind([1.0, 1.5], [0.0, 0.5], equal_var=False).confidence_interval(0.90)
    assert (v.ci_low, v.ci_high) == pytest.approx((low, high))


def test_welch_with_one_seed_in_an_arm_is_inconclusive_with_an_infinite_interval():
    v = decide(hypothesis(), Arm.learned({0: 2.0, 1: 2.1, 2: 2.05}), Arm.learned({3: 1.0}))
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((1.05, -math.inf, math.inf))
    assert (v.verdict, v.n_seeds, v.interval) == ("inconclusive", 1, "Welch t")


def test_zero_spread_is_exact_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        welch = decide(hypothesis("higher", 1.0), Arm.learned({0: 5.0, 1: 5.0}), Arm.learned({1: 7.0, 2: 7.0}))
        paired = decide(hypothesis("higher", 2.0), values(5.0, 5.0), values(7.0, 7.0))
    assert (welch.effect, welch.ci_low, welch.ci_high, welch.verdict, welch.interval) == (
        2.0,
        2.0,
        2.0,
        "supported",
        "fact",
    )
    assert paired.verdict == "inconclusive"  # exactly on the threshold
    assert math.isnan(welch.p_value) and math.isnan(paired.p_value)


# --- Benjamini-Hochberg --------------------------------------------------------------------------------------


def test_adjust_is_benjamini_hochberg_over_the_tests_with_a_p_value():
    """p 0.01, 0.04, 0.03, 0.5 (sorted 0.01, 0.03, 0.04, 0.5): adjusted min over later ranks of p * 4 / rank:
    0.5; 0.04 * 4/3 = 0.0533; min(0.03 * 2, 0.0533) = 0.0533; min(0.01 * 4, 0.0533) = 0.04. A fact and a hypothesis
    not decided carry no p value and do not enlarge the family."""
    base = decide(hypothesis(), values(2.0, 2.01, 1.99), values(1.90, 1.92, 1.88))
    fact = decide(Hypothesis("F", "s", "n", "t", "c", "equal", 0, test="fact"), values(1, 1), values(1, 1))
    stuck = decide(hypothesis(), arm({0: 3.3, 1: 3.3}, "plateau", "plateau"), values(2.0, 2.1))
    made = ((0.01, "supported"), (0.04, "refuted"), (0.03, "supported"), (0.5, "inconclusive"))
    family = [replace(base, p_value=p, verdict=verdict) for p, verdict in made]
    adjusted = adjust([family[0], fact, family[1], stuck, family[2], family[3]])
    p = [v.p_adjusted for v in adjusted]
    assert p[0] == pytest.approx(0.04) and p[2] == pytest.approx(0.16 / 3) and p[4] == pytest.approx(0.16 / 3)
    assert p[5] == pytest.approx(0.5) and math.isnan(p[1]) and math.isnan(p[3])
    assert [v.verdict_adjusted for v in adjusted] == [
        "supported", "supported", "inconclusive", "not decided", "inconclusive", "inconclusive"]  # fmt: skip
    assert [v.verdict for v in adjusted] == ["supported", "supported", "refuted", "not decided", "supported",
                                             "inconclusive"]  # the raw verdicts stay  # fmt: skip
    assert adjust([]) == []


# --- invalid input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("control", "treatment", "which"), [({}, {0: 1.0}, "control"), ({0: 1.0}, {}, "treatment")])
def test_an_arm_without_values_is_refused_and_named(control, treatment, which):
    with pytest.raises(ValueError, match=f"^hypothesis H: no values for {which} arm$"):
        decide(hypothesis(), Arm.learned(control), Arm.learned(treatment))


@pytest.mark.parametrize(
    ("direction", "min_effect", "test", "metric", "message"),
    [
        ("sideways", 0.1, "", "m", "direction 'sideways' must be one of"),
        ("lower", -0.1, "", "m", "min_effect must be non-negative"),
        ("lower", 0.1, "bayes", "m", "test 'bayes' must be one of"),
        ("equal", 0.1, "superiority", "m", "the superiority test needs direction lower or higher"),
        ("lower", 0.1, "equivalence", "m", "the equivalence test needs direction equal"),
        ("equal", 0.0, "", "m", "an equivalence test needs a margin min_effect > 0"),
        ("lower", 0.0, "counts", "final_val_loss", "a counts test counts one of"),
        ("lower", 0.5, "counts", "plateau", "a counts test counts one of"),
        ("equal", 0.0, "counts", "plateau", "the counts test needs direction lower or higher"),
    ],
)
def test_a_hypothesis_that_does_not_fit_its_test_is_refused(direction, min_effect, test, metric, message):
    with pytest.raises(ValueError, match=message):
        Hypothesis("H", "s", metric, "t", "c", direction, min_effect, test=test)


def test_the_test_defaults_to_the_direction():
    assert hypothesis("lower").test == hypothesis("higher").test == "superiority"
    assert hypothesis("equal").test == "equivalence"
    with pytest.raises(ValueError, match="literature_expects"):
        Hypothesis("H", "s", "m", "t", "c", "lower", 0.1, literature_expects="maybe")
    assert Hypothesis("H", "s", "m", "t", "c", "lower", 0.1, source="document, line 4").from_document


# --- edges that mutation testing found untested ----------------------------------------------------------------


def test_counts_under_higher_with_unequal_arms():
    """2 of 2 treatment runs diverge against 0 of 6 control runs, claimed "more": one-sided p = 1 / C(8, 2) = 1/28."""
    h = hypothesis("higher", 0.0, "counts", "diverged")
    treatment = arm({0: 9.0, 1: 9.0}, "diverged", "diverged")
    v = decide(h, values(2.0, 2.1, 2.2, 2.0, 2.1, 2.2), treatment)
    assert (v.verdict, v.p_value, v.effect) == ("inconclusive", pytest.approx(2 / 28), 1.0)
    assert (v.control_mean, v.treatment_mean, v.n_seeds) == (0.0, 1.0, 2)
    assert math.isnan(v.ci_low) and math.isnan(v.ci_high)


def test_counts_decide_each_side_at_two_and_a_half_percent():
    """4 of 5 against 0 of 5 (one-sided p = 5/210 = 0.0238): decided, on either side. 3 of 3 against 0 of 3 (1/20): not
    refuted, whichever side it lies on. Equal counts: p = 1, not 2."""
    h = hypothesis("lower", 0.0, "counts", "plateau")
    four = arm(dict.fromkeys(range(5), 3.3), "plateau", "plateau", "plateau", "plateau", "learned")
    assert decide(h, four, values(2.0, 2.0, 2.0, 2.0, 2.0)).verdict == "supported"
    three = arm(dict.fromkeys(range(3), 3.3), "plateau", "plateau", "plateau")
    assert decide(h, values(2.0, 2.0, 2.0), three).verdict == "inconclusive"
    same = decide(h, values(2.0, 2.0, 2.0), values(2.1, 2.0, 2.0))
    assert (same.verdict, same.p_value, same.effect) == ("inconclusive", 1.0, 0.0)


def test_superiority_refutes_at_a_one_sided_p_between_one_and_a_half_and_two_and_a_half_percent():
    """Differences -0.26, -0.16, -0.36 against min_effect 0.02: t = 0.28 / (0.1 / sqrt 3) = 4.85, one-sided p 0.02."""
    v = decide(hypothesis("lower", 0.02), values(2.0, 2.0, 2.0), values(2.26, 2.16, 2.36))
    assert stats.ttest_1samp([-0.26, -0.16, -0.36], 0.02, alternative="less").pvalue == pytest.approx(0.02, abs=1e-3)
    assert (v.verdict, v.p_value) == ("refuted", pytest.approx(0.04, abs=2e-3))


def test_equivalence_inside_the_margin_with_a_wide_interval_is_inconclusive():
    v = decide(hypothesis("equal", 0.2), values(1.0, 1.0, 1.0), values(1.0, 1.3, 0.8))  # 0.033 with sd 0.25
    assert (v.verdict, v.reason) == ("inconclusive", "")
    assert 0.05 < v.p_value < 1


def test_two_seeds_give_an_interval_and_one_seed_none():
    v = decide(hypothesis(), values(2.0, 2.1), values(1.5, 1.58))
    assert (v.n_seeds, v.reason, v.verdict, v.interval) == (2, "", "supported", "paired t")
    assert v.ci_low < 0.5 < v.ci_high
    one = decide(hypothesis(), values(2.0), values(1.5))
    assert one.p_value == 1.0 and decide(hypothesis("equal", 0.1), values(2.0), values(2.0)).p_value == 1.0


def test_facts_in_every_direction_with_their_fields():
    lower = Hypothesis("F", "s", "block_bytes", "int8", "fp32", "lower", 100, test="fact")
    v = decide(lower, values(1000, 1000), values(250, 250))
    assert (v.verdict, v.effect, v.control_mean, v.treatment_mean, v.ci_low, v.ci_high) == (
        "supported", 750, 1000, 250, 750, 750)  # fmt: skip
    assert math.isnan(v.ci_level) and math.isnan(v.p_value) and v.reason == ""
    assert decide(lower, values(1000, 1000), values(950, 950)).verdict == "refuted"
    varying = decide(lower, values(1000, 1001), values(250, 251))
    assert varying.reason == "a fact varies by seed in fp32, int8"
    assert all(math.isnan(x) for x in (varying.control_mean, varying.treatment_mean, varying.effect,
                                       varying.ci_low, varying.ci_high, varying.ci_level))  # fmt: skip


def test_both_arms_that_did_not_learn_are_named_and_ties_in_health_sort_by_name():
    stuck = arm({0: 3.3, 1: 2.0}, "plateau", "learned")
    v = decide(hypothesis(), stuck, arm({0: 9.0, 1: 2.0}, "diverged", "learned"))
    assert v.reason == "did not learn: control: 1 of 2 runs plateau; treatment: 1 of 2 runs diverged"
    assert v.control_health == "1 learned, 1 plateau"  # plateau came first, learned sorts first


def test_counts_under_higher_decide_on_the_claimed_side_with_the_claimed_effect():
    """5 of 5 treatment runs diverge against 1 of 6 control runs, claimed "more"."""
    control = arm(dict.fromkeys(range(6), 2.0), "diverged", *["learned"] * 5)
    treatment = arm(dict.fromkeys(range(5), 9.0), *["diverged"] * 5)
    v = decide(hypothesis("higher", 0.0, "counts", "diverged"), control, treatment)
    one_sided = stats.fisher_exact([[5, 0], [1, 5]], alternative="greater").pvalue
    assert (v.verdict, v.p_value, v.effect) == ("supported", pytest.approx(2 * one_sided), pytest.approx(5 / 6))
    assert decide(hypothesis("lower", 0.0, "counts", "diverged"), control, treatment).verdict == "refuted"


@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_a_count_whose_one_sided_p_is_exactly_two_and_a_half_percent_decides_nothing(direction):
    """1 of 1 against 0 of 39: one-sided p = 1 / C(40, 1) = 1/40, which is not below 2.5 %."""
    treatment = arm({0: 9.0}, "diverged")
    v = decide(hypothesis(direction, 0.0, "counts", "diverged"), values(*[2.0] * 39), treatment)
    assert v.p_value == pytest.approx(0.05) and v.verdict == "inconclusive"


def test_a_counts_hypothesis_with_a_minimum_effect_is_refused_with_the_whole_message():
    with pytest.raises(ValueError) as refused:
        Hypothesis("H", "s", "plateau", "t", "c", "lower", 0.5, test="counts")
    assert str(refused.value) == (
        "hypothesis H: a counts test counts one of ['diverged', 'not_learned', 'plateau'] with min_effect 0"
    )


def test_an_adjusted_p_of_exactly_five_percent_is_not_below_alpha():
    """A supported test at p = 0.025 beside one at 0.5: Benjamini-Hochberg gives it 0.025 * 2 / 1 = 0.05."""
    base = decide(hypothesis(), values(2.0, 2.01, 1.99), values(1.90, 1.92, 1.88))
    pair = adjust([replace(base, p_value=0.025), replace(base, p_value=0.5, verdict="inconclusive")])
    assert [(v.p_adjusted, v.verdict_adjusted) for v in pair] == [(0.05, "inconclusive"), (0.5, "inconclusive")]


def test_a_side_by_side_contrast_is_a_measured_test_of_the_treatment_runs():
    h = Hypothesis("H", "s", "bench_log_speedup", "buckets", "fixed", "higher", 0.05, side_by_side=True)
    assert h.measured_arms == ("buckets",)
    assert hypothesis().measured_arms == ("control", "treatment")
    with pytest.raises(ValueError, match="side-by-side contrast is measured, not a counts"):
        Hypothesis("H", "s", "not_learned", "buckets", "fixed", "lower", 0, test="counts", side_by_side=True)


def test_a_hypothesis_against_a_constant_measures_the_treatment_alone_and_is_never_counted():
    h = Hypothesis("H", "s", "bench_attention_time_exponent", "model", "quadratic", "equal", 0.25, reference=2.0)
    assert h.measured_arms == ("model",) and h.control_value == 2.0
    assert Hypothesis("H", "s", "m", "t", "c", "higher", 0.1, side_by_side=True).control_value == 0.0
    assert hypothesis().control_value is None
    for bad in ({"side_by_side": True}, {"test": "counts", "metric": "not_learned", "min_effect": 0}):
        with pytest.raises(ValueError, match="constant reference is neither"):
            Hypothesis(**{"id": "H", "statement": "s", "metric": "m", "treatment": "t", "control": "c",
                          "direction": "higher", "min_effect": 0.1, "reference": 1.0} | bad)  # fmt: skip


def test_the_power_law_fit_recovers_a_known_exponent_from_synthetic_points():
    rng = np.random.default_rng(0)
    sizes = [1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6]
    exponents = [power_law_exponent(sizes, [3.0 * n**-0.08 * math.exp(rng.normal(0, 0.003)) for n in sizes])
                 for _ in range(5)]  # fmt: skip
    assert np.mean(exponents) == pytest.approx(0.08, abs=0.005)
    assert power_law_exponent(sizes, [2.0 * n**-0.3 for n in sizes]) == pytest.approx(0.3, rel=1e-9)


def test_a_power_law_hypothesis_tests_each_seeds_exponent_against_its_constant():
    h = Hypothesis(id="H1", statement="s", metric="final_val_loss", treatment="power_law", control="flat",
                   reference=0.0, direction="higher", min_effect=0.0, fit_arms=["a", "b", "c"],
                   fit_size="non_embedding_params")  # fmt: skip
    assert h.measured_arms == ("a", "b", "c") and h.metrics == ("final_val_loss", "non_embedding_params")
    sizes = {"a": 1e5, "b": 4e5, "c": 1.6e6}
    runs = [ArmRun(arm, seed, f"{arm}{seed}", "finished",
                   {"final_val_loss": 2.0 * n**-(0.1 + 0.01 * seed), "non_embedding_params": n,
                    "baseline_unigram": 9.0}, reused=True)
            for arm, n in sizes.items() for seed in range(4)]  # fmt: skip
    (verdict,) = verdicts_for([h], runs)
    assert verdict.treatment_mean == pytest.approx(0.115) and verdict.control_mean == 0.0
    assert verdict.verdict == "supported"
    assert h.fit_arms == ("a", "b", "c") and hash(h)  # a tuple, however the file wrote it: hypotheses hash


POWER_LAW = {"id": "H1", "statement": "s", "metric": "final_val_loss", "treatment": "power_law", "control": "flat",
             "reference": 0.0, "direction": "higher", "min_effect": 0.0, "fit_arms": ["a", "b", "c"],
             "fit_size": "non_embedding_params"}  # fmt: skip


@pytest.mark.parametrize("change", [{"reference": None}, {"fit_size": ""}, {"fit_arms": ["a", "b"]}, {"test": "fact"}])
def test_a_power_law_without_its_parts_or_as_a_fact_is_refused(change):
    with pytest.raises(ValueError, match=r"H1: a power law needs 3 or more fit_arms, a fit_size metric and a "
                                         r"constant reference to test its measured exponent against$"):  # fmt: skip
        Hypothesis(**POWER_LAW | change)


@pytest.mark.parametrize("change", [{"literature_effect": 0.07}, {"literature_units": "log PPL"}])
def test_a_published_effect_comes_with_its_units(change):
    with pytest.raises(ValueError, match=r"H1: a literature_effect needs its literature_units, and only it$"):
        Hypothesis(**POWER_LAW | change)
    Hypothesis(**POWER_LAW | {"literature_effect": 0.07, "literature_units": "log PPL"})


@pytest.mark.parametrize("test", ["fact", "counts"])
def test_a_side_by_side_contrast_is_neither_a_fact_nor_counted(test):
    with pytest.raises(ValueError, match=rf"H1: a side-by-side contrast is measured, not a {test}$"):
        Hypothesis(id="H1", statement="s", metric="plateau" if test == "counts" else "bench_x", treatment="t",
                   control="c", direction="higher", min_effect=0.0, test=test, side_by_side=True)  # fmt: skip


@pytest.mark.parametrize(
    ("direction", "test", "min_effect", "treatment", "verdict"),
    [
        ("lower", "superiority", 0.1, (1.5, 1.6, 1.7), "supported"),  # 0.5 lower at every seed
        ("lower", "superiority", 0.6, (1.5, 1.6, 1.7), "refuted"),
        ("lower", "non_inferiority", 0.1, (2.05, 2.15, 2.25), "supported"),  # 0.05 worse, inside the margin
        ("equal", "equivalence", 0.1, (2.2, 2.3, 2.4), "refuted"),
    ],
)
def test_a_difference_that_no_seed_changes_is_compared_exactly_and_leaves_the_family(
    direction, test, min_effect, treatment, verdict
):
    v = decide(hypothesis(direction, min_effect, test=test), values(2.0, 2.1, 2.2), values(*treatment))
    assert (v.verdict, v.interval, v.ci_low, v.ci_high) == (verdict, "fact", v.effect, v.effect)
    assert math.isnan(v.p_value) and math.isnan(v.ci_level)
