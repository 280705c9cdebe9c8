"""The decision rule. Every expected number is worked out here by hand on tiny inputs (exact binary fractions,
t quantiles from a table) or by scipy directly, never by the code under test. `make mutation` checks that these
tests kill every mutant of ablations.verdict."""

import math
import warnings

import pytest
from scipy import stats

from ablations.verdict import MAX_SEEDS_REPORTED, Hypothesis, decide, seeds_to_settle

# t(0.975, n - 1) / sqrt(n), from a t table: the half-width of a 95% interval of n values of unit sd.
# n=3: 4.303 / 1.732 = 2.484   n=4: 3.182 / 2 = 1.591   n=6: 2.571 / 2.449 = 1.050   n=7: 2.447 / 2.646 = 0.925
T2 = 4.302652729749462  # t(0.975, 2)


def hypothesis(direction="lower", min_effect=0.02) -> Hypothesis:
    return Hypothesis("H", "s", "final_val_loss", "treatment", "control", direction, min_effect)


def values(*xs):
    return dict(enumerate(xs))


def test_clearly_better_treatment_is_supported():
    v = decide(hypothesis(), values(2.00, 2.01, 1.99), values(1.90, 1.92, 1.88))
    assert v.verdict == "supported"
    assert v.effect == pytest.approx(0.1)
    assert v.ci_low > 0.02
    assert v.seeds_to_settle is None  # only an inconclusive verdict asks for more seeds


def test_a_verdict_records_every_input_and_result_with_the_test_as_its_last_field():
    """Per-seed effects (control - treatment) 1.0, 0.5, 1.5: mean 1, sd 0.5, half-width t(0.975, 2) * 0.5 / sqrt(3)."""
    v = decide(hypothesis("lower", 0.02), values(3.0, 2.5, 3.5), values(2.0, 2.0, 2.0))
    half = T2 * 0.5 / math.sqrt(3)
    # 0.98 to win with sd 0.5, a ratio of 1.96: 3 seeds give 2.484 (too wide), 4 give 1.591.
    assert v.as_dict() == {
        "hypothesis": "H",
        "metric": "final_val_loss",
        "treatment": "treatment",
        "control": "control",
        "direction": "lower",
        "min_effect": 0.02,
        "n_seeds": 3,
        "control_mean": 3.0,
        "treatment_mean": 2.0,
        "effect": 1.0,
        "ci_low": pytest.approx(1 - half, rel=1e-12),
        "ci_high": pytest.approx(1 + half, rel=1e-12),
        "verdict": "inconclusive",
        "seeds_to_settle": 4,
        "test": "paired t",
    }
    assert list(v.as_dict())[-1] == "test"  # CSV columns only gain one, at the end
    assert (v.ci_low, v.ci_high) == pytest.approx(stats.ttest_1samp([1.0, 0.5, 1.5], 0).confidence_interval())


def test_effect_and_interval_are_the_paired_t_interval_of_the_seed_differences():
    control, treatment = values(2.00, 2.05, 1.97, 2.02), values(1.95, 1.99, 1.96, 1.93)
    v = decide(hypothesis(), control, treatment)
    diffs = [control[s] - treatment[s] for s in control]
    low, high = stats.ttest_1samp(diffs, 0).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((sum(diffs) / 4, low, high))
    assert (v.test, v.n_seeds) == ("paired t", 4)


def test_two_paired_seeds_give_a_finite_interval():
    """Effects 0.5 and 1.0: mean 0.75, sd sqrt(0.125); t(0.975, 1) = 12.706."""
    v = decide(hypothesis(), values(1.0, 1.0), values(0.5, 0.0))
    half = 12.706204736174694 * math.sqrt(0.125) / math.sqrt(2)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((0.75, 0.75 - half, 0.75 + half), rel=1e-12)
    assert (v.verdict, v.n_seeds, v.test) == ("inconclusive", 2, "paired t")


def test_no_difference_or_the_opposite_direction_is_refuted():
    assert decide(hypothesis(), values(2.0, 2.01, 1.99), values(2.0, 2.011, 1.99)).verdict == "refuted"
    assert decide(hypothesis(), values(1.8, 1.81, 1.79), values(2.0, 2.01, 1.99)).verdict == "refuted"


def test_noisy_result_straddling_the_threshold_is_inconclusive_and_says_how_many_seeds_would_settle_it():
    v = decide(hypothesis(), values(2.00, 2.10, 1.95), values(1.97, 2.02, 1.96))
    assert v.ci_low < 0.02 < v.ci_high
    assert v.verdict == "inconclusive"
    assert v.seeds_to_settle is not None and v.seeds_to_settle > 3


def test_higher_direction_flips_the_sign():
    v = decide(hypothesis("higher"), values(1.0, 1.0, 1.01), values(1.2, 1.21, 1.2))
    assert v.effect == pytest.approx(0.2, abs=0.01) and v.verdict == "supported"


@pytest.mark.parametrize(("direction", "treatment"), [("higher", 1.25), ("lower", 0.75)])
def test_an_interval_that_only_touches_min_effect_is_inconclusive_for_good(direction, treatment):
    """A deterministic effect of exactly min_effect: the interval [0.25, 0.25] is neither above nor below it,
    and no number of seeds can move it (so no seeds_to_settle)."""
    v = decide(hypothesis(direction, 0.25), values(1.0, 1.0), values(treatment, treatment))
    assert (v.effect, v.ci_low, v.ci_high) == (0.25, 0.25, 0.25)
    assert (v.verdict, v.seeds_to_settle) == ("inconclusive", None)


def test_an_effect_just_past_min_effect_with_zero_width_is_decided():
    assert decide(hypothesis("higher", 0.25), values(1.0, 1.0), values(1.5, 1.5)).verdict == "supported"
    assert decide(hypothesis("higher", 0.25), values(1.0, 1.0), values(1.125, 1.125)).verdict == "refuted"


# --- equal: the effect must lie within ±min_effect ------------------------------------------------------------


def test_equal_direction_supports_only_when_the_interval_is_inside_the_margin():
    inside = decide(hypothesis("equal", 0.05), values(2.0, 2.01, 1.99), values(2.0, 2.012, 1.991))
    outside = decide(hypothesis("equal", 0.05), values(2.0, 2.01, 1.99), values(2.2, 2.21, 2.19))
    assert inside.verdict == "supported" and outside.verdict == "refuted"
    assert inside.seeds_to_settle is None and outside.seeds_to_settle is None


def test_equal_direction_refutes_an_effect_below_minus_min_effect():
    v = decide(hypothesis("equal", 0.5), values(2.0, 2.0, 2.0), values(1.0, 1.01, 0.99))
    assert v.effect == pytest.approx(-1.0) and v.ci_high < -0.5
    assert (v.verdict, v.seeds_to_settle) == ("refuted", None)


@pytest.mark.parametrize(("treatment", "verdict"), [(1.25, "refuted"), (0.75, "refuted"), (1.125, "supported")])
def test_equal_direction_at_the_edges_of_the_margin(treatment, verdict):
    """Zero-width intervals at exactly +min_effect and -min_effect lie outside the open margin (-0.25, 0.25)."""
    v = decide(hypothesis("equal", 0.25), values(1.0, 1.0), values(treatment, treatment))
    assert v.ci_low == v.ci_high == treatment - 1.0
    assert (v.verdict, v.seeds_to_settle) == (verdict, None)


def test_equal_direction_straddling_plus_min_effect_is_inconclusive_and_aims_at_that_edge():
    """Effects 0.25, 0.5, 0.75: mean 0.5, sd 0.25, CI 0.5 ± 0.621 reaches past +1. The edge is 0.5 away,
    twice the sd: 4 seeds (1.591 < 2, 3 seeds give 2.484)."""
    v = decide(hypothesis("equal", 1.0), values(1.0, 1.0, 1.0), values(1.25, 1.5, 1.75))
    half = T2 * 0.25 / math.sqrt(3)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((0.5, 0.5 - half, 0.5 + half), rel=1e-12)
    assert -1.0 < v.ci_low < 1.0 < v.ci_high
    assert (v.verdict, v.seeds_to_settle) == ("inconclusive", 4)


def test_equal_direction_straddling_minus_min_effect_is_inconclusive_and_aims_at_that_edge():
    """Effects -1, -0.5, -1.5: mean -1, sd 0.5, CI -1 ± 1.242 from -2.24 to +0.24, across -0.5 but inside +0.5.
    The edge -0.5 is 0.5 away, one sd: 7 seeds (0.925 < 1, 6 seeds give 1.050)."""
    v = decide(hypothesis("equal", 0.5), values(2.0, 2.0, 2.0), values(1.0, 1.5, 0.5))
    half = T2 * 0.5 / math.sqrt(3)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((-1.0, -1.0 - half, -1.0 + half), rel=1e-12)
    assert v.ci_low < -0.5 < v.ci_high < 0.5
    assert (v.verdict, v.seeds_to_settle) == ("inconclusive", 7)


# --- seeds that do not pair: Welch's interval, and it says so ------------------------------------------------


def test_deterministic_metric_has_a_zero_width_interval():
    """Parameter counts do not vary by seed: 8 heads have exactly as many as 1 head."""
    v = decide(Hypothesis("H3", "s", "n_params", "h8", "h1", "higher", 1), values(800, 800, 800), values(800, 800, 800))
    assert (v.effect, v.ci_low, v.ci_high, v.verdict, v.test) == (0, 0, 0, "refuted", "paired t")


def test_one_seed_is_always_inconclusive():
    v = decide(hypothesis(), {0: 2.0}, {0: 1.0})
    assert (v.ci_low, v.ci_high) == (-math.inf, math.inf)
    assert (v.verdict, v.seeds_to_settle, v.n_seeds, v.test) == ("inconclusive", None, 1, "paired t")


def test_unpaired_seeds_fall_back_to_welch():
    v = decide(hypothesis(), {0: 2.0, 1: 2.02, 2: 1.98}, {5: 1.7, 6: 1.72, 7: 1.69})
    low, high = stats.ttest_ind([2.0, 2.02, 1.98], [1.7, 1.72, 1.69], equal_var=False).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((2.0 - 1.7033333333333334, low, high))
    assert (v.verdict, v.test) == ("supported", "Welch t")


def test_partly_overlapping_seeds_use_welch_over_all_values_and_say_so():
    """Seeds 1 and 2 are in both arms, 0 only in control, 3 and 4 only in treatment: Welch over every value, with
    n the smaller arm, not a paired interval over the two shared seeds."""
    control, treatment = {0: 2.3, 1: 2.0, 2: 2.1}, {1: 1.9, 2: 1.7, 3: 2.2, 4: 1.6}
    v = decide(hypothesis(), control, treatment)
    low, high = stats.ttest_ind([2.3, 2.0, 2.1], [1.9, 1.7, 2.2, 1.6], equal_var=False).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((6.4 / 3 - 7.4 / 4, low, high))
    assert (v.n_seeds, v.test) == (3, "Welch t")
    paired = stats.ttest_1samp([2.0 - 1.9, 2.1 - 1.7], 0).confidence_interval(0.95)
    assert (v.ci_low, v.ci_high) != pytest.approx(tuple(paired))


def test_welch_with_two_seeds_an_arm_is_finite_and_asks_for_seeds_by_the_spread_of_a_difference():
    """Each arm's variance is 0.125, so one treatment seed minus one control seed has sd sqrt(0.25) = 0.5. Effect 1,
    min_effect 2: 1 away, twice that sd, so 4 seeds (1.591 < 2, 3 seeds give 2.484)."""
    v = decide(hypothesis("higher", 2.0), {1: 0.0, 2: 0.5}, {0: 1.0, 1: 1.5})
    low, high = stats.ttest_ind([1.0, 1.5], [0.0, 0.5], equal_var=False).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((1.0, low, high))
    assert (v.verdict, v.seeds_to_settle, v.n_seeds, v.test) == ("inconclusive", 4, 2, "Welch t")


def test_welch_with_one_seed_in_an_arm_is_inconclusive_with_an_infinite_interval():
    v = decide(hypothesis(), {0: 2.0, 1: 2.1, 2: 2.05}, {3: 1.0})
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((1.05, -math.inf, math.inf))
    assert (v.verdict, v.seeds_to_settle, v.n_seeds, v.test) == ("inconclusive", None, 1, "Welch t")


def test_welch_on_a_deterministic_metric_has_a_zero_width_interval_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not scipy's "precision loss ... may be unreliable": the interval is exact
        v = decide(hypothesis("higher", 1.0), {0: 5.0, 1: 5.0}, {1: 7.0, 2: 7.0})
    assert (v.effect, v.ci_low, v.ci_high, v.verdict, v.test) == (2.0, 2.0, 2.0, "supported", "Welch t")


# --- seeds_to_settle and invalid input -----------------------------------------------------------------------


def test_seeds_to_settle_is_the_smallest_n_whose_half_width_is_under_the_distance():
    assert seeds_to_settle(sd=1.0, distance_needed=1.0) == 7  # 1.050 at 6, 0.925 at 7
    assert seeds_to_settle(sd=0.5, distance_needed=1.0) == 4  # ratio 2: 2.484 at 3, 1.591 at 4
    assert seeds_to_settle(sd=0.1, distance_needed=1.0) == 2  # 0.1 * 8.985 < 1 already at 2
    n = seeds_to_settle(sd=0.03, distance_needed=0.03)
    assert stats.t.ppf(0.975, n - 1) * 0.03 / math.sqrt(n) < 0.03
    assert stats.t.ppf(0.975, n - 2) * 0.03 / math.sqrt(n - 1) >= 0.03


def test_seeds_to_settle_is_none_without_a_spread_or_a_distance():
    assert seeds_to_settle(sd=math.nan, distance_needed=1.0) is None  # one seed: the spread is unknown
    assert seeds_to_settle(sd=0.0, distance_needed=0.0) is None  # a zero-width interval on the threshold
    assert seeds_to_settle(sd=0.01, distance_needed=0.0) is None


def test_seeds_to_settle_reports_up_to_max_seeds_and_not_beyond():
    def half_width(n: int) -> float:
        return stats.t.ppf(0.975, n - 1) * 1.0 / math.sqrt(n)

    last = MAX_SEEDS_REPORTED
    assert seeds_to_settle(1.0, (half_width(last - 1) + half_width(last)) / 2) == last
    assert seeds_to_settle(1.0, (half_width(last) + half_width(last + 1)) / 2) is None


@pytest.mark.parametrize(("control", "treatment", "arm"), [({}, {0: 1.0}, "control"), ({0: 1.0}, {}, "treatment")])
def test_an_arm_without_values_is_refused_and_named(control, treatment, arm):
    with pytest.raises(ValueError, match=f"^hypothesis H: no values for {arm} arm$"):
        decide(hypothesis(), control, treatment)


def test_invalid_hypotheses_are_refused():
    with pytest.raises(ValueError, match=r"^hypothesis H: direction 'sideways' must be one of \('lower', 'higher'"):
        hypothesis("sideways")
    with pytest.raises(ValueError, match="^hypothesis H: min_effect must be non-negative$"):
        hypothesis("lower", -1)
    with pytest.raises(ValueError, match="^hypothesis H: literature_expects must be supported or refuted$"):
        Hypothesis("H", "s", "m", "t", "c", "lower", 0.1, literature_expects="maybe")


def test_valid_edge_hypotheses_are_accepted():
    assert hypothesis("equal", 0.0).min_effect == 0.0  # non-negative includes zero
    for expects in ("", "supported", "refuted"):
        assert (
            Hypothesis("H", "s", "m", "t", "c", "lower", 0.1, literature_expects=expects).literature_expects == expects
        )
