"""Whether a run learned: a corpus's trivial baselines and each run's health.

Baselines are cross-entropies on the validation split of models fitted by counting the training split,
with add-one smoothing (a token never seen in training costs a finite amount):

uniform   ln V, every token equally likely
unigram   each token by its frequency
bigram    each token by its frequency after the token before it

On the order task (E10: each token predicts its own position in the window) all three are chance, ln block_size.

A run's health:

diverged  its loss became non-finite and training stopped
plateau   it finished, but its final validation loss is not at least PLATEAU_MARGIN (10 %) below the unigram
          baseline: it learned little beyond token frequencies (a stuck Post-LN stack, a budget too small).
          With a domain corpus, either corpus counts: an arm trained on the domain alone from scratch (E24)
          learned if its domain loss is that far below the domain's unigram baseline (`baseline_domain_*`).
          A run that trained no step (it evaluates the weights of another run, quantized or pruned) is judged
          by those weights' loss (`start_val_loss`): how much worse it does is its measurement, not a failure
          to learn
learned   otherwise
unknown   no baseline was logged for the run

Every run that trained also gets a learning check: over the last quarter of training its validation loss fell by
less than the experiment's stated amount (0.05 nats unless it sets another), so it ended near its plateau, not
mid-descent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

PLATEAU_MARGIN = 0.10
LAST_QUARTER_DROP = "val_loss_drop_last_quarter"  # the metric a learning check reads
HEALTH_TAG = "ablations.health"  # each arm run's health, for the MLflow UI


def baselines(train: np.ndarray, val: np.ndarray, vocab_size: int) -> dict[str, float]:
    """The uniform, unigram and bigram cross-entropies (nats per token) of the validation split."""
    train, val = train.astype(np.int64), val.astype(np.int64)
    unigram = np.bincount(train, minlength=vocab_size) + 1.0
    pairs = np.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size**2).reshape(vocab_size, -1) + 1.0
    after = pairs.sum(axis=1)  # per previous token: its pairs' total
    return {
        "baseline_uniform": math.log(vocab_size),
        "baseline_unigram": float(-np.log(unigram[val] / unigram.sum()).mean()),
        "baseline_bigram": float(-np.log(pairs[val[:-1], val[1:]] / after[val[:-1]]).mean()),
    }


def position_baselines(block_size: int) -> dict[str, float]:
    """The order task's baselines (train.target=position, E10): every position is equally frequent in a window, and
    a token's identity, alone or after the one before it, says nothing of where the window cut it; so every
    counting model scores chance, ln block_size, and `plateau` means no better than 10 % below chance."""
    chance = math.log(block_size)
    return {"baseline_uniform": chance, "baseline_unigram": chance, "baseline_bigram": chance}


def run_health(status: str, metrics: Mapping[str, float]) -> str:
    """learned, plateau, diverged or unknown (see the module docstring)."""
    if status == "diverged":
        return "diverged"
    if "baseline_unigram" not in metrics or "final_val_loss" not in metrics:
        return "unknown"
    evaluated_only = metrics.get("train_tokens") == 0 and "start_val_loss" in metrics
    own = "start_val_loss" if evaluated_only else "final_val_loss"
    corpora = [(own, "baseline_unigram"), ("final_domain_val_loss", "baseline_domain_unigram")]
    below = [metrics[loss] <= (1 - PLATEAU_MARGIN) * metrics[unigram] for loss, unigram in corpora
             if loss in metrics and unigram in metrics]  # fmt: skip
    return "learned" if any(below) else "plateau"


def reference_lines(metric: str, metrics: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """What a figure of `metric` over these runs should draw: for the validation loss, the corpus's unigram
    baseline and the plateau line below it; nothing for other metrics or runs without a baseline."""
    unigrams = [m["baseline_unigram"] for m in metrics if math.isfinite(m.get("baseline_unigram", math.nan))]
    if metric != "final_val_loss" or not unigrams:
        return {}
    unigram = float(np.mean(unigrams))
    return {"unigram baseline": unigram, f"plateau line ({PLATEAU_MARGIN:.0%} below)": (1 - PLATEAU_MARGIN) * unigram}


def last_quarter_drop(history: Sequence[tuple[int, float]]) -> float:
    """How much the validation loss fell from the first evaluation at or after 3/4 of training to the last one.

    history: (step, val_loss) of the periodic evaluations. NaN with fewer than two evaluations in that span."""
    if not history:
        return math.nan
    points = sorted(history)
    last_step = points[-1][0]
    quarter = [loss for step, loss in points if step >= 0.75 * last_step]
    return quarter[0] - quarter[-1] if len(quarter) >= 2 else math.nan


def learning_check(metrics: Mapping[str, float], max_drop: float) -> str:
    """passed, failed, or unknown when the run has no last-quarter drop."""
    drop = metrics.get(LAST_QUARTER_DROP, math.nan)
    if not math.isfinite(drop):
        return "unknown"
    return "passed" if drop < max_drop else "failed"
