import math

import pytest
from scipy import stats

from ablations.verdict import Hypothesis, decide, seeds_to_settle


def hypothesis(direction="lower", min_effect=0.02) -> Hypothesis:
    return Hypothesis("H", "s", "final_val_loss", "treatment", "control", direction, min_effect)


def values(*xs):
    return dict(enumerate(xs))


def test_clearly_better_treatment_is_supported():
    v = decide(hypothesis(), values(2.00, 2.01, 1.99), values(1.90, 1.92, 1.88))
    assert v.verdict == "supported"
    assert v.effect == pytest.approx(0.1)
    assert v.ci_low > 0.02


def test_effect_and_interval_are_the_paired_t_interval_of_the_seed_differences():
    control, treatment = values(2.00, 2.05, 1.97, 2.02), values(1.95, 1.99, 1.96, 1.93)
    v = decide(hypothesis(), control, treatment)
    diffs = [control[s] - treatment[s] for s in control]
    low, high = stats.ttest_1samp(diffs, 0).confidence_interval(0.95)
    assert (v.effect, v.ci_low, v.ci_high) == pytest.approx((sum(diffs) / 4, low, high))


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


def test_equal_direction_supports_only_when_the_interval_is_inside_the_margin():
    inside = decide(hypothesis("equal", 0.05), values(2.0, 2.01, 1.99), values(2.0, 2.012, 1.991))
    outside = decide(hypothesis("equal", 0.05), values(2.0, 2.01, 1.99), values(2.2, 2.21, 2.19))
    assert inside.verdict == "supported" and outside.verdict == "refuted"


def test_deterministic_metric_has_a_zero_width_interval():
    """Parameter counts do not vary by seed: 8 heads have exactly as many as 1 head."""
    v = decide(Hypothesis("H3", "s", "n_params", "h8", "h1", "higher", 1), values(800, 800, 800), values(800, 800, 800))
    assert (v.effect, v.ci_low, v.ci_high, v.verdict) == (0, 0, 0, "refuted")


def test_one_seed_is_always_inconclusive():
    v = decide(hypothesis(), {0: 2.0}, {0: 1.0})
    assert v.verdict == "inconclusive" and math.isinf(v.ci_high)


def test_unpaired_seeds_fall_back_to_welch():
    v = decide(hypothesis(), {0: 2.0, 1: 2.02, 2: 1.98}, {5: 1.7, 6: 1.72, 7: 1.69})
    low, high = stats.ttest_ind([2.0, 2.02, 1.98], [1.7, 1.72, 1.69], equal_var=False).confidence_interval(0.95)
    assert (v.ci_low, v.ci_high) == pytest.approx((low, high))
    assert v.verdict == "supported"


def test_seeds_to_settle_shrinks_the_half_width_below_the_distance():
    n = seeds_to_settle(mean=0.05, sd=0.03, distance_needed=0.03)
    assert stats.t.ppf(0.975, n - 1) * 0.03 / math.sqrt(n) < 0.03
    assert stats.t.ppf(0.975, n - 2) * 0.03 / math.sqrt(n - 1) >= 0.03
    assert seeds_to_settle(0.02, 0.01, 0.0) is None


def test_invalid_hypotheses_are_refused():
    with pytest.raises(ValueError, match="direction"):
        hypothesis("sideways")
    with pytest.raises(ValueError, match="min_effect"):
        hypothesis("lower", -1)
