"""Trivial baselines and run health, on token sequences small enough to count by hand."""

import math
from dataclasses import replace

import numpy as np
import pytest

from ablations.health import baselines, last_quarter_drop, learning_check, position_baselines, run_health
from ablations.results import run_learning_check
from ablations.spec import load_spec


def test_baselines_are_add_one_counts_of_the_training_split_scored_on_validation():
    """Train 0 1 0 1 (V = 2): unigram counts 2, 2 -> +1 -> 3/6 each; bigrams (0,1) x2, (1,0) x1 -> +1 -> row 0 is
    1/4, 3/4 and row 1 is 2/3, 1/3. Validation 0 1 1: unigram -ln(1/2) per token; bigrams (0,1) 3/4, (1,1) 1/3."""
    out = baselines(np.array([0, 1, 0, 1]), np.array([0, 1, 1]), 2)
    assert out["baseline_uniform"] == pytest.approx(math.log(2))
    assert out["baseline_unigram"] == pytest.approx(math.log(2))
    assert out["baseline_bigram"] == pytest.approx(-(math.log(3 / 4) + math.log(1 / 3)) / 2)


def test_an_unseen_token_costs_a_finite_amount():
    """Train 0 0 0 1 (V = 3): counts 3, 1, 0 -> 4, 2, 1 of 7; token 2 never seen costs ln 7, not infinity."""
    out = baselines(np.array([0, 0, 0, 1], dtype=np.uint8), np.array([2, 0], dtype=np.uint8), 3)
    assert out["baseline_unigram"] == pytest.approx((math.log(7) + math.log(7 / 4)) / 2)
    assert out["baseline_bigram"] == pytest.approx(-math.log(1 / 3))  # row 2 is all add-one: 1/3 each
    assert out["baseline_uniform"] == pytest.approx(math.log(3))


def test_on_the_order_task_a_run_learned_only_well_below_chance_not_below_the_corpus_unigram():
    """Context 64: chance is ln 64 = 4.16 and the plateau line 3.74; a loss of 3.5 learned some positions, although
    it is above a byte corpus's unigram line (about 3.0), and ln 64 itself is a model that learned nothing."""
    chance = position_baselines(64)
    assert chance == pytest.approx(
        dict.fromkeys(("baseline_uniform", "baseline_unigram", "baseline_bigram"), math.log(64))
    )
    assert run_health("finished", {"final_val_loss": 3.5} | chance) == "learned"
    assert run_health("finished", {"final_val_loss": math.log(64)} | chance) == "plateau"


@pytest.mark.parametrize(
    ("status", "loss", "expected"),
    [("finished", 2.5, "learned"), ("finished", 2.969, "learned"), ("finished", 2.971, "plateau"),
     ("finished", 3.35, "plateau"), ("finished", 3.9, "plateau"), ("diverged", 1.0, "diverged")],
)  # fmt: skip
def test_a_run_that_ends_less_than_ten_percent_below_unigram_sat_on_a_plateau(status, loss, expected):
    """0.9 * 3.3 = 2.97: the plateau line."""
    assert run_health(status, {"final_val_loss": loss, "baseline_unigram": 3.3}) == expected


def test_a_run_without_a_baseline_has_unknown_health():
    assert run_health("finished", {"final_val_loss": 2.0}) == "unknown"
    assert run_health("diverged", {}) == "diverged"


def test_the_last_quarter_drop_reads_the_evaluations_from_three_quarters_of_training_on():
    history = [(2000, 1.62), (250, 2.57), (1500, 1.70), (1750, 1.65), (1000, 1.90)]
    assert last_quarter_drop(history) == pytest.approx(1.70 - 1.62)
    assert math.isnan(last_quarter_drop([(100, 3.0), (200, 2.9), (300, 2.8)]))  # only step 300 is in the span
    assert math.isnan(last_quarter_drop([]))


def test_a_learning_check_passes_below_the_stated_drop():
    assert learning_check({"val_loss_drop_last_quarter": 0.04}, 0.05) == "passed"
    assert learning_check({"val_loss_drop_last_quarter": 0.05}, 0.05) == "failed"
    assert learning_check({"val_loss_drop_last_quarter": math.nan}, 0.05) == "unknown"
    assert learning_check({}, 0.05) == "unknown"


def test_with_a_domain_corpus_a_run_learned_if_either_corpus_is_well_below_its_unigram():
    trained_on_the_domain = {"final_val_loss": 3.6, "baseline_unigram": 3.3,  # prose forgotten or never learned
                             "final_domain_val_loss": 1.9, "baseline_domain_unigram": 3.0}  # fmt: skip
    assert run_health("finished", trained_on_the_domain) == "learned"
    assert run_health("finished", trained_on_the_domain | {"final_domain_val_loss": 2.8}) == "plateau"


def test_a_run_that_trained_no_step_is_as_healthy_as_the_weights_it_evaluates():
    pruned = {"final_val_loss": 3.2, "baseline_unigram": 3.3, "train_tokens": 0.0}  # a model damaged by pruning
    assert run_health("finished", pruned | {"start_val_loss": 2.1}) == "learned"  # its base learned
    assert run_health("finished", pruned | {"start_val_loss": 3.1}) == "plateau"  # its base did not
    assert run_health("finished", pruned | {"start_val_loss": 2.1, "train_tokens": 5e5}) == "plateau"  # it trained


def test_every_run_that_trained_gets_the_learning_check_and_no_other():
    spec = load_spec("positional_encoding")  # its check: max_drop 0.05
    still_falling = {"train_tokens": 1000.0, "val_loss_drop_last_quarter": 0.2}
    assert run_learning_check(spec, "finished", still_falling) == "failed"
    assert run_learning_check(spec, "finished", still_falling | {"val_loss_drop_last_quarter": 0.01}) == "passed"
    assert run_learning_check(spec, "finished", still_falling | {"train_tokens": 0.0}) == ""  # evaluated only
    assert run_learning_check(spec, "diverged", still_falling) == ""
    assert run_learning_check(replace(spec, learning_check={}), "finished", still_falling) == ""
