"""Compile `results/` into the evidence report, reports/evidence-report.pdf, and log it to MLflow.

    python -m ablations.report [results=results] [out=reports/evidence-report.pdf] [mlflow=false] [tiers=quick,full]

mlflow=false: do not log the PDF as an MLflow run. tiers: the tiers to report (smoke runs say nothing about claims),
as a list also written 'tiers=[quick,full]' (quoted: a shell may read the brackets as a pattern).

Every number comes from results/*.csv (exported from the MLflow store); the hypotheses and claims come
from experiments/*.yaml. Python computes everything and writes it to JSON; the Typst template
(report.typ) only lays it out, so no text is ever pasted into markup.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import typst
from pylatexenc.latex2text import LatexNodes2Text
from scipy import stats

from ablations import settings, tracking
from ablations.figures import (
    DOMAIN_CURVE_METRIC,
    arm_comparison_figure,
    curves_figure,
    effects_figure,
    figure_from_spec,
    length_scaling_figure,
    literature_figure,
    margin_rows,
    margins_figure,
    reliability_figure,
    tails_figure,
)
from ablations.files import atomic_write
from ablations.health import LAST_QUARTER_DROP, PLATEAU_MARGIN, reference_lines
from ablations.metrics import SCALING_FITS, value_of
from ablations.numerics import NUMERICS_VERSION
from ablations.quantization import TAIL_QUANTILES
from ablations.results import AWAITING, trained_here
from ablations.spec import BASE, ExperimentSpec, experiment_names, load_spec, off_scale
from ablations.verdict import NOT_DECIDED, Hypothesis

TEMPLATE = Path(__file__).with_name("report.typ")
# Fonts with CJK glyphs, in order of preference; Debian/Ubuntu: apt-get install fonts-noto-cjk.
CJK_FONTS = ("Noto Serif CJK SC", "Noto Sans CJK SC", "Source Han Serif SC", "WenQuanYi Micro Hei")
CJK_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".local/share/fonts"))


def cjk_font() -> str | None:
    """The first installed CJK font, or None (the report then leaves the Chinese out and says so)."""
    try:
        installed = subprocess.run(["fc-list", ":", "family"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return next((font for font in CJK_FONTS if font in installed), None)


def mean_interval(values: pd.Series) -> tuple[float, float, float]:
    """Mean and 95% t interval of one arm's per-seed values."""
    mean = float(values.mean())
    if len(values) < 2 or values.std(ddof=1) == 0:
        half = math.inf if len(values) < 2 else 0.0
    else:
        half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def fmt(x: float, digits: int = 3) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return "∞" if x > 0 else "−∞" if x < 0 else "n/a"
    return f"{x:+.{digits}g}".replace("-", "−")


def num(x: float) -> str:
    """A measured value in four significant digits, with a typographic minus."""
    return f"{x:.4g}".replace("-", "−")


def fmt_p(p: float) -> str:
    """An adjusted p value, or — for a verdict outside every family (superseded, awaiting runs)."""
    return "—" if pd.isna(p) else f"{p:.2g}"


RULES = {
    "superiority": "{t} {dir} than {c} by at least {m}",
    "non_inferiority": "{t} not worse than {c} by more than {m} ({dir} is better)",
    "equivalence": "{t} within ±{m} of {c}",
    "counts": "{fewer} {metric} runs in {t} than in {c}",
    "fact": "{t} against {c}: {dir} by {m}",
    "bound": "{t} {dir} than {c} in every seed",
    "bound_equal": "{t} within ±{m} of {c} in every seed",
}
OUTCOMES = {
    ("superiority", "supported"): "The whole 95% interval lies above the minimum effect",
    ("superiority", "refuted"): "The whole 95% interval lies below the minimum effect",
    ("non_inferiority", "supported"): "The whole 95% interval lies above minus the margin",
    ("non_inferiority", "refuted"): "The whole 95% interval lies below minus the margin",
    ("equivalence", "supported"): "The whole 90% interval lies inside the margin (TOST)",
    ("equivalence", "refuted"): "The whole 90% interval lies beyond an edge of the margin",
    ("counts", "supported"): "Fisher's exact test shows the predicted difference in counts",
    ("counts", "refuted"): "Fisher's exact test shows the opposite difference in counts",
    ("fact", "supported"): "The fixed values meet the statement",
    ("fact", "refuted"): "The fixed values do not meet the statement",
    ("bound", "supported"): "Every seed meets the statement (the effect shown is the worst seed's)",
    ("bound", "refuted"): "At least one seed misses the statement (the effect shown is the worst seed's)",
}


def verdict_sentence(v: pd.Series, h, spec: ExperimentSpec) -> str:
    """One hypothesis's verdict in words: the test, the numbers, the raw and the adjusted verdict."""
    kind = "bound_equal" if v.test == "bound" and v.direction == "equal" else v.test
    rule = RULES[kind].format(t=v.treatment, c=v.control, m=f"{v.min_effect:g}", metric=v.metric,
                              dir=v.direction, fewer="fewer" if v.direction == "lower" else "more")  # fmt: skip
    if v.test == "counts":
        numbers = f"rates {v.control} {v.control_mean:.2f}, {v.treatment} {v.treatment_mean:.2f}"
    elif h.side_by_side:
        numbers = f"{v.treatment} against {v.control} timed side by side in each {v.treatment} run"
    elif h.fit_arms:
        fit = f"the exponent k of {v.metric} ∝ {h.fit_size}^-k fitted per seed over {len(h.fit_arms)} arms"
        numbers = f"{fit}, {num(v.treatment_mean)} on average, against the constant {v.control} = {num(h.reference)}"
    elif h.reference is not None:
        numbers = f"{v.treatment} {num(v.treatment_mean)} against the constant {v.control} = {num(h.reference)}"
    else:
        numbers = f"{v.control} {num(v.control_mean)}, {v.treatment} {num(v.treatment_mean)}"
    interval = "" if pd.isna(v.ci_level) else f" [{fmt(v.ci_low)}, {fmt(v.ci_high)}] ({v.ci_level:.0%})"
    interval = f" [{fmt(v.ci_low)}, {fmt(v.ci_high)}] (the seeds' range)" if v.test == "bound" else interval
    test = v.test.replace("_", "-")
    text = f"{h.id} ({test}, {v.metric}: {rule}): effect {fmt(v.effect)}{interval} over {v.n_seeds} seeds ({numbers})"
    text += "" if pd.isna(v.p_value) else f", p = {v.p_value:.3g}"
    text += "" if pd.isna(v.p_adjusted) else f", adjusted {v.p_adjusted:.3g}"
    text += ". "
    if v.awaiting:
        return text + f"Raw verdict {v.verdict}, shown and not counted: {v.awaiting}."
    if v.verdict == "not decided":
        return text + f"Not decided: {v.reason}."
    if v.interval == "fact" and v.test != "fact":
        text += (
            "Every seed gives the same difference (the quantity does not vary by seed), so it is compared "
            f"exactly with the margin and stays outside the family of tests: {v.verdict}{refuted_because(v)}."
        )
    elif v.verdict == "inconclusive":
        text += "Neither side of the test is reached: inconclusive."
    else:
        text += f"{OUTCOMES[(v.test, v.verdict)]}: {v.verdict}{refuted_because(v)}."
    if v.verdict_adjusted != v.verdict:
        text += f" After the false-discovery adjustment over the report's tests: {v.verdict_adjusted}."
    found = refutation(v) if v.verdict_adjusted == v.verdict else ""
    return text + document_sentence(h, v.verdict_adjusted, v.metric, found)


def scope(metric: str, test: str = "") -> str:
    """What a verdict on metric is bounded by: a fixed fact (a parameter count) by the shapes it was counted on; a
    bound (an identity) by the runs it was checked on; a benchmark's time, speed or memory by the sizes it ran at and
    the hardware it ran on; anything trained by the model's size and training budget."""
    if test == "fact":
        return "for the shapes counted here"
    if test == "bound":  # an identity each run must meet: the runs checked, not a size or budget, bound it
        return "in every run checked here"
    if timed(metric):
        return "at these model and input sizes on this hardware"
    return "at this model size and budget"


def timed(metric: str) -> bool:
    """Whether a metric is a benchmark's time, speed or memory, which the hardware sets as much as the model."""
    return metric.startswith("bench_") or "per_sec" in metric


def only_smaller(h: Hypothesis, found: str) -> str:
    """What a refutation of the document's statement leaves standing when the effect went its way (`found`:
    refutation's "smaller"): the direction, without the size the hypothesis asked for."""
    if found != "smaller":
        return ""
    return f"; the effect goes the way the statement says, but by less than {h.id}'s minimum effect ({h.min_effect:g})"


def document_sentence(h: Hypothesis, verdict: str, metric: str, found: str = "") -> str:
    """What a decided verdict says about the handbook: a refuted statement of its own is refuted (in its size only
    when the effect went its way: `found`, refutation's finding); a supported statement of the opposite contradicts
    it; a refuted opposite does not refute it."""
    if not h.from_document:
        return ""
    if not h.opposes_document:
        return (f" The document's statement ({h.source}), as {h.id} tests it on {metric}, is refuted "
                f"{scope(metric, h.test)}{only_smaller(h, found)}.") if verdict == "refuted" else ""  # fmt: skip
    if verdict == "supported":
        return (f" {h.id} states the opposite of the document's statement ({h.source}): supported, it contradicts that "
                f"statement on {metric} {scope(metric, h.test)}.")  # fmt: skip
    if verdict == "refuted" and h.direction == "equal":  # "no difference" refuted: a difference, of either sign
        return (f" {h.id} states the opposite of the document's statement ({h.source}): refuted, the arms differ by "
                "more than the margin; whether in the way the document claims, the effect's sign says (treatment "
                "− control).")  # fmt: skip
    if verdict == "refuted":
        return (f" {h.id} states the opposite of the document's statement ({h.source}): its refutation is no "
                "refutation of the document.")  # fmt: skip
    return ""


def refutation(v) -> str:
    """What a refutation found, which the word alone hides ("" unless refuted with an interval): "smaller" (a real
    effect in the predicted direction, below the minimum), "opposite", "none" (the interval holds 0), "beyond" (an
    equivalence's difference beyond the margin) or "worse" (a non-inferiority's, beyond minus the margin)."""
    if v.verdict != "refuted" or pd.isna(v.ci_low) or v.test not in ("superiority", "non_inferiority", "equivalence"):
        return ""  # a fact or bound says what it missed in its own sentence
    if v.test in ("equivalence", "non_inferiority"):
        return "beyond" if v.test == "equivalence" else "worse"
    if v.test == "superiority" and v.ci_low > 0:
        return "smaller"
    return "opposite" if v.ci_high < 0 else "none"


REFUTATION_SHORT = {"smaller": "effect < m", "opposite": "opposite", "none": "no effect shown",
                    "beyond": "beyond ±m", "worse": "worse by > m"}  # fmt: skip


def refuted_because(v: pd.Series) -> str:
    """A refutation's finding in words (refutation)."""
    found = refutation(v)
    if found == "beyond":
        side = "higher" if v.effect > 0 else "lower"
        return f" ({v.treatment}'s {v.metric} is {side} than {v.control}'s by more than the margin)"
    return {
        "": "",
        "worse": f" ({v.treatment} is worse than {v.control} by more than the margin)",
        "smaller": " (an effect in the predicted direction is shown, but smaller than the minimum effect)",
        "opposite": " (the effect goes against the predicted direction)",
        "none": " (the interval holds 0: no effect of the required size is shown)",
    }[found]


def meaning(
    spec: ExperimentSpec,
    exp_verdicts: pd.DataFrame,
    unrun: frozenset[str] = frozenset(),
    machines: Mapping[str, str] | None = None,
) -> str:
    """What the verdicts say taken together: per hypothesis, across corpora (`machines`: the hardware each corpus's
    runs ran on), against the literature; and which hypotheses have no verdict yet because an arm they measure has not
    run (`unrun`, arm names)."""
    sentences, waiting_for_arms = [], []
    for h in spec.hypotheses:
        rows = exp_verdicts[exp_verdicts.hypothesis == h.id]
        if rows.empty:
            waiting_for_arms += [h.id] if unrun & set(h.measured_arms) else []
            continue
        waiting = ", ".join(sorted(set(rows[rows.awaiting != ""].corpus)))
        if (rows := rows[rows.awaiting == ""]).empty:
            sentences.append(f"{h.id} awaits runs on {waiting}.")
            continue
        by_corpus = {r.corpus: r.verdict_adjusted for r in rows.itertuples()}
        if len(set(by_corpus.values())) == 1:
            verdict = next(iter(by_corpus.values()))
            where = f"on {' and '.join(by_corpus)}"  # "not decided on every corpus" read as "on some"
            text = f"{h.id} is {verdict} {where}"
        else:
            text = depends_on(h, by_corpus, machines or {})
        text += f" (awaiting runs on {waiting})" if waiting else ""
        decided = {v for v in by_corpus.values() if v in ("supported", "refuted")}
        if h.literature_expects and decided:
            agree = decided == {h.literature_expects}
            text += (
                "; this agrees with the literature" if agree else f"; the literature expected {h.literature_expects}"
            )
        sentences.append(text + ".")
        against = "supported" if h.opposes_document else "refuted"
        if h.from_document and (where := [c for c, v in by_corpus.items() if v == against]):
            how = "contradicted" if h.opposes_document else "refuted"
            if h.opposes_document:
                ending = f" ({h.id} states its opposite)."
            else:  # refuted in size only where every refutation found an effect its way, below the minimum
                found = {refutation(r) for r in rows.itertuples() if r.corpus in where}
                ending = only_smaller(h, "smaller" if found == {"smaller"} else "") + "."
            sentences.append(
                f"The handbook's statement behind {h.id} ({h.source}), as {h.id} tests it on {h.metric}, is {how} on "
                f"{', '.join(where)} {scope(h.metric, h.test)}{ending}"
            )
    if waiting_for_arms:
        several = len(waiting_for_arms) > 1
        sentences.append(f"{', '.join(waiting_for_arms)} {'have' if several else 'has'} no verdict yet: an arm "
                         f"{'each' if several else 'it'} measures has not run.")  # fmt: skip
    return " ".join(sentences)


def depends_on(h: Hypothesis, by_corpus: dict[str, str], machines: Mapping[str, str]) -> str:
    """A hypothesis decided differently on the corpora. A timing whose corpora ran on different machines names them:
    a benchmark times the model, not the text, so the machine is the likelier cause."""
    verdicts = ", ".join(f"{v} on {c}" for c, v in by_corpus.items())
    ran_on = {c: machines.get(c, "") for c in by_corpus}
    if not timed(h.metric) or len(set(ran_on.values())) < 2:
        return f"{h.id} depends on the corpus ({verdicts})"
    where = "; ".join(f"{c} on {m}" for c, m in ran_on.items())
    return (f"{h.id} differs between the corpora ({verdicts}), whose runs ran on different machines ({where}): "
            "a timing measures the machine as well as the model, so the difference is not shown to be the "
            "corpus's")  # fmt: skip


def _metrics_of(row: dict) -> dict[str, float]:
    """A runs.csv row's finite numbers."""
    return {k: v for k, v in row.items() if isinstance(v, float) and math.isfinite(v)}


SETUP_FIELDS = (("model.n_layer", "layers"), ("model.d_model", "d_model"), ("model.block_size", "context"),
                ("data.batch_size", "batch"), ("optim.max_steps", "steps"), ("optim.lr", "lr"))  # fmt: skip


def spread(values: pd.Series) -> str:
    """One value, or the range the arms span ("2–24")."""
    unique = sorted(values.dropna().unique())
    if len(unique) == 1:
        return f"{unique[0]:g}" if isinstance(unique[0], float) else str(unique[0])
    return f"{unique[0]:g}–{unique[-1]:g}"


def counted_spread(values: pd.Series) -> str:
    """A count, or the range the arms span, with thousands separators ("0–1,536,000")."""
    unique = sorted(int(v) for v in values.dropna().unique())
    return "—" if not unique else f"{unique[0]:,}" + (f"–{unique[-1]:,}" if len(unique) > 1 else "")


def scaled(arms: pd.Series) -> pd.Series:
    """Whether each arm name is a scale axis's arm (arm@axis=value)."""
    return arms.map(off_scale).astype(bool)


def own_arms(group: pd.DataFrame) -> pd.DataFrame:
    """The runs of the experiment's own arms, without the scaled ones."""
    return group[~scaled(group.arm)]


def with_scale_axis(own: str, everything: str) -> str:
    """A value over the experiment's own arms, and in brackets its range with the scale axis's arms where wider."""
    return own + (f" (scale axis {everything})" if everything != own else "")


PRECISIONS = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16 autocast"}


def setup_line(group: pd.DataFrame) -> str:
    """The model and budget of a tier x corpus: each setting's value or its range over the experiment's own arms,
    then the range along the scale axis in brackets where the scaled arms (arm@axis=value) reach further."""
    if "model.n_layer" not in group:
        return ""
    own = own_arms(group)
    fields = []
    for column, label in SETUP_FIELDS:
        if column in group:
            fields.append(f"{label} {with_scale_axis(spread(own[column]), spread(group[column]))}")
    precision = str(group.iloc[0]["trainer.precision"])
    return ", ".join(fields + [PRECISIONS.get(precision, precision)])


def ran(arm_runs: pd.DataFrame) -> str:
    """What an arm's runs actually used: shape, steps, batch, learning rate and real training tokens."""
    first = arm_runs.iloc[0]
    if "model.n_layer" not in arm_runs:
        return ""
    shape = f"L{first['model.n_layer']} d{first['model.d_model']}"
    if first.train_tokens == 0:  # E18's decoding and E25's pruning arms: a trained model, evaluated
        return f"ran: {shape}, no training of its own (evaluated)"
    batch = f"batch {first['data.batch_size']}"
    if first.get("data.packing") in ("buckets", "sorted"):  # token-budget batches: data.batch_size is not used
        batch = f"batches of at most {int(first['data.max_tokens']):,} padded tokens"
    budget = f"{int(first['optim.max_steps']):,} steps, {batch}, lr {first['optim.lr']:g}"
    return f"ran: {shape}, {budget}, {int(first.train_tokens):,} tokens"


INLINE_MATH = re.compile(r"\$(.+?)\$")


def plain_math(text: str) -> str:
    """The handbook's inline LaTeX ($\\sqrt{d_k}$, $(1 - \\epsilon)$) as Unicode text (√(d_k), (1 - ϵ)) for the PDF."""
    to_text = LatexNodes2Text(math_mode="text")
    return INLINE_MATH.sub(lambda match: to_text.latex_to_text(match[1]), text)


def experiment_section(
    spec: ExperimentSpec,
    runs: pd.DataFrame,
    verdicts: pd.DataFrame,
    curves: pd.DataFrame,
    trends: list[dict],
    corpora: dict[str, list[str]],
    work: Path,
) -> dict:
    """One experiment's part of report.json: the claim and its hypotheses, then per tier x corpus the setup, the arm
    table, the figures and the run ids; the verdicts in words, its rows of the scale-axis table, and what they mean
    together; what has not run (`corpora`: each tier's corpora in the report). Figures are drawn in `work`."""
    groups = list(runs.groupby(["tier", "corpus"], sort=True))
    exp_verdicts = verdicts[verdicts.experiment == spec.name]
    bigram_rows = [row for (tier, corpus), group in groups for row in bigram_level(tier, corpus, group)]
    figures = [
        entry for (tier, corpus), group in groups for entry in group_figures(spec, tier, corpus, group, curves, work)
    ]
    return {
        "id": spec.id,
        "name": spec.name,
        "title": spec.title,
        "claim": {key: plain_math(text) if isinstance(text, str) else text for key, text in spec.claim.items()},
        "design": " ".join(spec.design.split()),
        "hypotheses": hypothesis_rows(spec),
        "settings": [settings_row(tier, corpus, group) for (tier, corpus), group in groups],
        "tables": [arm_table(spec, tier, corpus, group) for (tier, corpus), group in groups],
        "still_learning": [line for (tier, corpus), group in groups for line in still_learning(tier, corpus, group)],
        "unchecked": [line for (tier, corpus), group in groups for line in unchecked(tier, corpus, group)],
        "bigram_level": bigram_rows,
        "learning_max_drop": f"{spec.learning_check['max_drop']:g}" if spec.learning_check else "",
        "budget_axis": spec.scale is not None and spec.scale.axis.startswith("optim.max_"),
        "verdicts": verdict_rows(spec, exp_verdicts, bigram_rows),
        "trends": [t for t in trends if t["experiment"] == f"{spec.id} {spec.name}"],  # trend_rows
        "awaiting": awaiting_groups(exp_verdicts),
        "not_run": [line for (tier, corpus), group in groups if (line := not_run(spec, tier, corpus, group))]
        + absent_corpora(runs, corpora),
        "meaning": meaning(
            spec,
            exp_verdicts,
            frozenset(a for (t, _), g in groups for a in missing_arms(spec, t, g)),
            {corpus: hardware_counts(runs_there) for corpus, runs_there in runs.groupby("corpus")},
        ),
        "figures": figures + effects_figures(spec, exp_verdicts, work) + literature_figures(spec, exp_verdicts, work),
        "run_ids": [run_ids_row(tier, corpus, group) for (tier, corpus), group in groups],
    }


def awaiting_groups(exp_verdicts: pd.DataFrame) -> list[str]:
    """The corpus x tier groups of an experiment with verdicts that await runs: a rerun not yet made or not finished."""
    waiting = exp_verdicts[exp_verdicts.awaiting != ""]
    groups = sorted(set(zip(waiting.corpus, waiting.tier, waiting.code_version.astype(str), strict=True)))
    return [f"{corpus} ({tier} tier, numerics version {version})" for corpus, tier, version in groups]


def planned_arms(spec: ExperimentSpec, tier: str, group: pd.DataFrame) -> list[str]:
    """The arms one invocation at this tier trains (as ablations.plan plans them): the experiment's own, then the scale
    axis's at the other values, the tier's value read from the runs of its own arms."""
    arms = list(spec.arms_for(tier))
    if spec.scale is not None and spec.scale.axis in group:
        values = own_arms(group)[spec.scale.axis].dropna().unique()
        arms += list(spec.scale_arms(tier, values[0])) if len(values) == 1 else []
    return arms


def absent_corpora(runs: pd.DataFrame, corpora: dict[str, list[str]]) -> list[str]:
    """The corpora of the report (`corpora`, per tier) on which an experiment has no run at a tier it ran at."""
    ran = set(zip(runs.tier, runs.corpus, strict=True))
    return [f"{corpus} ({tier} tier): no run yet" for tier in sorted(set(runs.tier)) for corpus in corpora[tier]
            if (tier, corpus) not in ran]  # fmt: skip


def missing_arms(spec: ExperimentSpec, tier: str, group: pd.DataFrame) -> list[str]:
    """The planned arms of a tier x corpus without a single run (a chain stopped part-way)."""
    return [arm for arm in planned_arms(spec, tier, group) if arm not in set(group.arm)]


def not_run(spec: ExperimentSpec, tier: str, corpus: str, group: pd.DataFrame) -> str:
    """The missing arms of a tier x corpus, each with the hypotheses that measure it and so have no verdict there
    yet; "" when every arm has runs."""
    planned = planned_arms(spec, tier, group)
    if not (missing := [arm for arm in planned if arm not in set(group.arm)]):
        return ""
    named = []
    for arm in missing:
        name, at, _ = arm.partition("@")  # a scaled arm serves the trends of the scaled hypotheses alone
        users = [h.id for h in spec.hypotheses if name in h.measured_arms and (not at or h.id in spec.scale.slope)]
        kind = " scale trend" if at else ""
        named.append(arm + (f" ({', '.join(users)}{kind})" if users else ""))
    return f"{corpus} ({tier} tier): {len(missing)} of {len(planned)} planned arms, " + ", ".join(named)


def still_learning(tier: str, corpus: str, group: pd.DataFrame) -> list[str]:
    """The arms of a tier x corpus whose learning check failed: still falling over the last quarter of training."""
    checked = group[group.learning_check.isin(["passed", "failed"])]
    lines = []
    for arm, runs in checked.groupby("arm", sort=True):
        if not (failed := runs[runs.learning_check == "failed"]).empty:
            drop = failed[LAST_QUARTER_DROP].mean()
            lines.append(
                f"{arm} ({corpus}, {tier}): {len(failed)} of {len(runs)} runs, dropping {drop:.3f} nats on average"
            )
    return lines


def unchecked(tier: str, corpus: str, group: pd.DataFrame) -> list[str]:
    """The checked arms of a tier x corpus whose learning check could not be made: fewer than two periodic
    evaluations in the last quarter of training (a short run evaluated rarely)."""
    missing = group[group.learning_check == "unknown"]
    return [f"{arm} ({corpus}, {tier}): {len(runs)} runs" for arm, runs in missing.groupby("arm", sort=True)]


BIGRAM_CHECKED = (  # (loss, its corpus's unigram and bigram baselines, the corpus as the table names it)
    ("final_val_loss", "baseline_unigram", "baseline_bigram", "{corpus}"),
    ("final_domain_val_loss", "baseline_domain_unigram", "baseline_domain_bigram", "{corpus}'s domain"),
)


def domain_only(runs: pd.DataFrame) -> bool:
    """Whether an arm's runs trained on the domain corpus alone (data.mix 1:0, the default with a domain): such an
    arm (E24's scratch and fine-tuned stages) is judged on the domain, not on a general corpus it did not train on."""
    if "baseline_domain_unigram" not in runs or runs.baseline_domain_unigram.isna().any():
        return False
    mixes = runs["data.mix"] if "data.mix" in runs else pd.Series([None] * len(runs))
    # "domain:general" (ablations.data.parse_mix, which imports Lightning: the report must not)
    return all(float((mix if isinstance(mix, str) else "1:0").partition(":")[2]) == 0 for mix in mixes)


def bigram_level(tier: str, corpus: str, group: pd.DataFrame) -> list[dict]:
    """The arms of a tier x corpus whose runs all learned but whose mean final loss is not below the bigram baseline
    on a corpus where they learned (mean loss below the plateau line): they learned more than token frequencies, but
    no more than what the previous token alone predicts. An arm that trained on the domain alone (domain_only) is
    judged there, not on the general corpus it did not train on. (An arm with a run that did not learn is named as
    such elsewhere.)"""
    finished = group[group.status == "finished"]
    rows = []
    for arm, runs in finished.groupby("arm", sort=True):
        if not runs.health.eq("learned").all():
            continue
        for loss_name, unigram_name, bigram_name, where in BIGRAM_CHECKED[domain_only(runs) :]:
            if not {loss_name, unigram_name, bigram_name} <= set(runs) or runs[loss_name].isna().any():
                continue
            loss, unigram, bigram = (runs[name].mean() for name in (loss_name, unigram_name, bigram_name))
            if loss <= (1 - PLATEAU_MARGIN) * unigram and loss >= bigram:
                rows.append({"arm": arm, "corpus": where.format(corpus=corpus), "tier": tier, "loss": f"{loss:.3f}",
                             "bigram": f"{bigram:.3f}"})  # fmt: skip
    return rows


def hypothesis_rows(spec: ExperimentSpec) -> list[dict]:
    return [
        {
            "id": h.id,
            "source": h.source + ("; the hypothesis states the opposite" if h.opposes_document else ""),
            "statement": h.statement,
            "metric": h.metric,
            "direction": h.direction,
            "test": h.test.replace("_", "-"),
            "superseded": spec.superseded(h.id),
            "added": spec.added(h.id),
            "scaled": spec.scaled(h.id),
            "arms": f"{h.treatment} vs {h.control}",
            "min_effect": f"{h.min_effect:g}",
            "literature": h.literature,
            "literature_expects": h.literature_expects or "—",
        }
        for h in spec.hypotheses
    ]


def settings_row(tier: str, corpus: str, group: pd.DataFrame) -> dict:
    """What one tier x corpus ran: corpus, model and training setup, size, hardware and wall time."""
    first, own = group.iloc[0], own_arms(group)
    return {
        "tier": tier,
        "corpus": corpus,
        "sha256": first.corpus_sha256[:16],
        "tokenizer": first.tokenizer,
        "setup": setup_line(group),
        "params": with_scale_axis(counted_spread(own.n_params), counted_spread(group.n_params)),
        "tokens": counted_spread(own.train_tokens),  # E25's pruned arms train none, its base 1.5 M
        "seeds": int(group.seed.nunique()),
        "arms": int(group.arm.nunique()),
        "runs": len(group),  # fewer than arms x seeds where the scale axis's arms have fewer seeds
        "hardware": hardware_counts(group),
        "wall": f"{trained_here(group).wall_seconds.sum() / 60:.1f} min",
    }


def hardware_counts(group: pd.DataFrame) -> str:
    """The machines a group's runs were trained on, with their run counts when there are several: wall times
    and speeds from different machines do not compare."""
    counts = group.hardware.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "; ".join(f"{machine} ({n} runs)" for machine, n in counts.items())


def arm_table(spec: ExperimentSpec, tier: str, corpus: str, group: pd.DataFrame) -> dict:
    """The table of one tier x corpus: the primary metric per arm, and the experiment's own measures."""
    primary = spec.hypotheses[0].metric
    return {
        "tier": tier,
        "corpus": corpus,
        "metric": primary,
        "unit": loss_unit(group) if "loss" in primary else "",
        "rows": arm_rows(spec, tier, group, primary),
        "measures": {"metrics": spec.report_metrics, "rows": measure_rows(spec, tier, group)},
    }


def arm_values(arm_runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's value of a metric: a finished run's own (NaN if it did not measure it), else the registry's rule for
    a run that did not finish (ablations.metrics.value_of). Only those become dicts: runs.csv has some 200 columns."""
    values = arm_runs[metric].astype(float) if metric in arm_runs else pd.Series(math.nan, index=arm_runs.index)
    unfinished = arm_runs.status != "finished"
    values[unfinished] = [
        value_of("diverged", _metrics_of(row) | {"vocab_size": float(row["vocab_size"])}, metric)
        for row in arm_runs[unfinished].to_dict("records")
    ]
    return values


def arm_rows(spec: ExperimentSpec, tier: str, group: pd.DataFrame, metric: str) -> list[dict]:
    """Per arm: its overrides, the metric's mean and 95% interval over seeds (a run that did not finish scores by the
    registry's rule: a loss as the uniform prediction, ln V; "—" for an arm that does not measure the metric),
    size, speed and health."""
    rows = []
    for arm, overrides in spec.arms_for(tier).items():
        arm_runs = group[group.arm == arm]
        if arm_runs.empty:
            continue
        values = arm_values(arm_runs, metric)
        mean, low, high = mean_interval(values.dropna()) if values.notna().any() else (math.nan,) * 3
        speed = arm_runs["train_tokens_per_sec"].mean() if "train_tokens_per_sec" in arm_runs else math.nan
        rows.append(
            {
                "arm": arm,
                "overrides": [f"{k}={v}" for k, v in overrides.items()] + [ran(arm_runs)],
                "n": len(arm_runs),
                "mean": "—" if math.isnan(mean) else f"{mean:.4f}".replace("-", "−"),
                "ci": "—" if math.isnan(mean) else f"[{low:.4f}, {high:.4f}]".replace("-", "−"),
                "params": f"{int(arm_runs.n_params.iloc[0]):,}",
                "tok_s": "—" if math.isnan(speed) else f"{speed:,.0f}",  # evaluation-only arms do not train
                "health": ", ".join(f"{n} {h}" for h, n in arm_runs.health.value_counts().items())
                if "health" in arm_runs
                else "",
            }
        )
    return rows


def measure_rows(spec: ExperimentSpec, tier: str, group: pd.DataFrame) -> list[dict]:
    """Per arm, the mean over seeds of each of the experiment's `report_metrics`."""
    rows = []
    for arm in spec.arms_for(tier) if spec.report_metrics else []:
        arm_runs = group[group.arm == arm]
        if not arm_runs.empty:
            means = [arm_runs[m].mean() if m in arm_runs else math.nan for m in spec.report_metrics]
            rows.append({"arm": arm, "values": ["—" if math.isnan(x) else num(x) for x in means]})
    return rows


CURVES_CAPTION = (
    "Loss per step: arm mean and the band from the lowest to the highest seed (validation on a fixed subset of "
    "windows; points mark the evaluations). On the validation panel only (a smoothed training objective has other "
    f"baselines): dashed, the unigram baseline and the plateau line {PLATEAU_MARGIN:.0%} below it (a run ending above "
    "it did not learn); dotted, the bigram baseline; a baseline far from the data is named in the legend. The first "
    "tenth of training and the top 1% of values may lie beyond the axes (a lone spike would flatten every curve)."
)
DOMAIN_PANEL_CAPTION = " The third panel: the validation loss on the second corpus (the domain)."
TAILS_CAPTION = (
    "How long-tailed the trained model's Linear weights and inputs are: |x - mean| / std at each quantile (each layer "
    "normalized by its own std, layers pooled), per seed, against a Gaussian. Outliers far beyond the Gaussian line "
    "are what INT8 calibration must handle."
)
LENGTH_SCALING_CAPTION = (
    "Cost against sequence length on log-log axes (the length_scaling benchmark on the trained model): each seed's "
    "median over the timed rounds (faint), the geometric mean over seeds (dots), and over each shaded range of lengths "
    "the line of the mean fitted exponent k, the value the hypotheses test, with its 95% t interval over seeds. The "
    "grey guides have slopes 1 and 2. FLOPs are counted on the attention sublayer (written-out attention)."
)
RELIABILITY_CAPTION = "Reliability diagram: validation accuracy against confidence in 15 bins, seeds pooled."


TEXT_WIDTH_CM, MAX_FIGURE_HEIGHT_CM = 17.4, 20.0  # A4 less report.typ's margins; room left for the caption


FIGURE = ".svg"  # vector figures, sharp at any zoom (matplotlib draws their text as paths)


def svg_size(path: Path) -> tuple[float, float]:
    """Width and height in points of an SVG that matplotlib wrote (its root's width="...pt" height="...pt")."""
    size = re.search(r'<svg[^>]*width="([\d.]+)pt" height="([\d.]+)pt"', path.read_text()[:2000])
    return float(size[1]), float(size[2])


# A per-arm strip plot of up to seven arms (6.5 in wide) is printed at 62 % of the text width; wider ones (more arms)
# at the same scale, so that their labels keep that size instead of shrinking with the arm count.
STRIP_WIDTH_PT, STRIP_WIDTH_PERCENT, MAX_WIDTH_PERCENT = 6.5 * 72, 62.0, 92.0


def figure_entry(path: Path, caption: str) -> dict:
    """A figure as report.json lists it: the file's name in the work folder, its caption, and its width in percent of
    the text width: 92 (the per-arm strip plots at one scale, STRIP_WIDTH_PT), less where the figure would be taller
    than a page allows (a tall figure at full width was clipped at the page's edge)."""
    width_pt, height_pt = svg_size(path)
    aspect = height_pt / width_pt
    width = MAX_WIDTH_PERCENT
    if path.stem.endswith("-arms"):
        width = min(MAX_WIDTH_PERCENT, STRIP_WIDTH_PERCENT * width_pt / STRIP_WIDTH_PT)
    width = min(width, 100 * MAX_FIGURE_HEIGHT_CM / (TEXT_WIDTH_CM * aspect))
    return {"path": path.name, "caption": caption, "width": round(width, 1)}


LOSS_UNITS = {"byte": "nats per byte", "char": "nats per character", "bpe": "nats per BPE token"}


def loss_unit(group: pd.DataFrame) -> str:
    """What a loss of this tier x corpus counts: nats per token of its tokenizer ("" for an unknown tokenizer)."""
    return LOSS_UNITS.get(str(group.iloc[0].tokenizer), "")


def by_task(rows: list[dict]) -> list[list[dict]]:
    """A tier x corpus's runs split by the target they predict: runs whose unigram baselines differ are scored on
    different targets (E10's order arms predict positions, chance ln 64) and share no loss axis or baseline line.
    The task with the most runs first; runs without a baseline (benchmarks) go with it."""
    tasks: dict[float | None, list[dict]] = {}
    for row in rows:
        unigram = row.get("baseline_unigram", math.nan)
        tasks.setdefault(round(unigram, 6) if math.isfinite(unigram) else None, []).append(row)
    unknown = tasks.pop(None, [])
    ordered = sorted(tasks.values(), key=len, reverse=True) or [[]]
    ordered[0] = ordered[0] + unknown
    return ordered


def group_figures(
    spec: ExperimentSpec, tier: str, corpus: str, group: pd.DataFrame, curves: pd.DataFrame, work: Path
) -> list[dict]:
    """The figures of one tier x corpus: per task, per-arm values and loss curves; then the experiment file's own
    figures, weight and activation tails, reliability; each only where its data exist."""
    tag = f"{spec.name}-{tier}-{corpus}"
    rows = group.to_dict("records")
    as_runs = [(r["arm"], r["seed"], r["status"], _metrics_of(r)) for r in rows]
    run_curves = curves[(curves.experiment == spec.name) & (curves.tier == tier) & (curves.corpus == corpus)]
    where, unit = f"{corpus}, {tier}", f" Losses in {loss_unit(group)}." if loss_unit(group) else ""
    entries = []
    for i, task in enumerate(by_task(rows)):
        prefix = work / (tag if i == 0 else f"{tag}-task{i}")
        note = (unit, "") if i == 0 else ("", OTHER_TASK_CAPTION.format(unigram=task[0]["baseline_unigram"]))
        entries += task_figures(spec, tier, corpus, task, run_curves, prefix, note)
    for i, spec_figure in enumerate(spec.figures):
        if (path := figure_from_spec(spec, spec_figure, as_runs, work / f"{tag}-figure{i}{FIGURE}")) is not None:
            title = spec_figure.get("title", spec_figure.get("y", ", ".join(spec_figure.get("metrics", []))))
            caption = f"{title}; {corpus}, {tier} tier (mean and 95% t interval over seeds)."
            if "y" in spec_figure and (retired := superseded_users(spec, spec_figure["y"])):
                caption = f"The measure of superseded {retired} (see the appendix). {caption}"
            entries.append(figure_entry(path, caption))
    if (scaling := length_scaling_points(rows)) is not None:
        path = length_scaling_figure(*scaling, where, work / f"{tag}-length{FIGURE}")
        entries.append(figure_entry(path, LENGTH_SCALING_CAPTION))
    if not (tails := run_curves[run_curves.metric.str.endswith("_tail")]).empty:
        entries.append(
            figure_entry(tails_figure(tails, TAIL_QUANTILES, where, work / f"{tag}-tails{FIGURE}"), TAILS_CAPTION)
        )
    if not (reliability := run_curves[run_curves.metric.str.startswith("reliability_")]).empty:
        path = reliability_figure(reliability, list(spec.arms_for(tier)), where, work / f"{tag}-reliability{FIGURE}")
        entries.append(figure_entry(path, RELIABILITY_CAPTION))
    return entries


OTHER_TASK_CAPTION = (
    " These arms predict another target than the experiment's others (their unigram baseline, {unigram:.3f} nats, is "
    "the chance level of that target; their losses are in nats per target class), so they are drawn apart, against "
    "their own baselines."
)


def task_figures(
    spec: ExperimentSpec,
    tier: str,
    corpus: str,
    rows: list[dict],
    curves: pd.DataFrame,
    prefix: Path,
    note: tuple[str, str],
) -> list[dict]:
    """The per-arm values and the loss curves of the runs of one task, against that task's baselines; `note` ends
    the captions: the loss unit (where a loss is drawn), and for a second task why it is drawn apart."""
    loss_lines = reference_lines("final_val_loss", [_metrics_of(r) for r in rows])
    entries = [arms_figure(spec, tier, corpus, rows, loss_lines, prefix.with_name(f"{prefix.name}-arms{FIGURE}"))]
    unit, apart = note
    entries[0]["caption"] += (unit if "loss" in spec.hypotheses[0].metric else "") + apart
    arms = [arm for arm in spec.arms_for(tier) if arm in {r["arm"] for r in rows}]
    if not curves[curves.metric.isin(["val_loss", "train_loss"]) & curves.arm.isin(arms)].empty:
        bigram = pd.Series([r.get("baseline_bigram") for r in rows], dtype=float).mean()
        lines = loss_lines | ({"bigram baseline": float(bigram)} if loss_lines and math.isfinite(bigram) else {})
        where = f"{corpus}, {tier}"
        shifted, offset = after_their_base(spec, curves, rows)
        path = curves_figure(shifted, arms, where, prefix.with_name(f"{prefix.name}-curves{FIGURE}"), lines)
        domain = DOMAIN_CURVE_METRIC in set(curves[curves.arm.isin(arms)].metric)
        second_stage = SECOND_STAGE_CAPTION.format(steps=offset) if offset else ""
        entries.append(figure_entry(path, CURVES_CAPTION + DOMAIN_PANEL_CAPTION * domain + second_stage + unit + apart))
    return entries


SECOND_STAGE_CAPTION = (
    " Arms that start from the base's weights are drawn from the step where the base ended ({steps:,}), so that "
    "each curve continues its base's; arms trained from scratch start at 0."
)


def after_their_base(spec: ExperimentSpec, curves: pd.DataFrame, rows: list[dict]) -> tuple[pd.DataFrame, int]:
    """The curves with the second stage of a two-stage experiment moved past its base's training (its steps), and
    that offset (0 where no arm starts from a base, or the base's runs are not among `rows`)."""
    base_steps = [r.get("optim.max_steps", math.nan) for r in rows if r["arm"] == BASE]
    base_steps = [steps for steps in base_steps if math.isfinite(steps)]
    offset = int(max(base_steps)) if spec.base is not None and base_steps else 0
    if not offset:
        return curves, 0
    continued = curves.arm.map(lambda arm: spec.base_arm(arm) is not None)
    return curves.assign(step=curves.step + offset * continued), offset


SCALING_METRIC = re.compile(r"bench_(?P<cost>\w+?)_(?P<unit>seconds|flops)_n(?P<n>\d+)")
# a unit of the per-length metrics: its exponents' name, its panel's label (panels in this order)
SCALING_UNITS = {"seconds": ("time", "median seconds per call"), "flops": ("flops", "counted FLOPs")}


def length_scaling_points(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The length_scaling benchmark of the finished runs: per-length costs (unit, cost, seed, n, value) and the
    logged exponents the hypotheses test (unit, cost, seed, k, and the lengths fit_low to fit_high they are fitted
    over); None when no run has them."""
    points, exponents = [], []
    for row in (r for r in rows if r["status"] == "finished"):
        measured, found = _metrics_of(row), set()
        for name, value in measured.items():
            if match := SCALING_METRIC.fullmatch(name):
                found.add((match["unit"], match["cost"]))
                points.append({"unit": match["unit"], "cost": match["cost"], "seed": row["seed"],
                               "n": int(match["n"]), "value": value})  # fmt: skip
        for (unit, cost), (suffix, fitted) in itertools.product(found, SCALING_FITS.items()):
            if (k := measured.get(f"bench_{cost}_{SCALING_UNITS[unit][0]}_exponent{suffix}")) is not None:
                exponents.append({"unit": unit, "cost": cost, "seed": row["seed"], "k": k,
                                  "fit_low": fitted[0], "fit_high": fitted[-1]})  # fmt: skip
    if not points:
        return None
    order = list(SCALING_UNITS)
    points.sort(key=lambda p: (order.index(p["unit"]), p["cost"], p["n"]))
    label = {unit: names[1] for unit, names in SCALING_UNITS.items()}
    columns = ["unit", "cost", "seed", "k", "fit_low", "fit_high"]
    return tuple(
        f.assign(unit=f.unit.map(label)) for f in (pd.DataFrame(points), pd.DataFrame(exponents, columns=columns))
    )


def superseded_users(spec: ExperimentSpec, metric: str) -> str:
    """The hypotheses that measure a metric when all of them are superseded ("H2, H3"), else ""."""
    users = [h.id for h in spec.hypotheses if metric in h.metrics]
    return ", ".join(users) if users and all(spec.superseded(i) for i in users) else ""


def arms_figure(
    spec: ExperimentSpec, tier: str, corpus: str, rows: list[dict], loss_lines: dict[str, float], path: Path
) -> dict:
    """The primary metric per seed and arm. A diverged run is drawn at the registry's value (ablations.metrics); the
    row itself is its metrics, so a finished run without the value is a gap. An arm none of whose runs has the metric
    (E18's base, which trains and does not decode) is left out: it was an empty column."""
    primary = spec.hypotheses[0].metric
    values = [
        (r["arm"], r["seed"], value_of(r["status"], r, primary))
        for arm in spec.arms_for(tier)
        for r in rows
        if r["arm"] == arm
    ]
    measured = {arm for arm, _, value in values if not math.isnan(value)}
    values = [v for v in values if v[0] in measured]
    lines = loss_lines if primary == "final_val_loss" else {}
    caption = (
        f"{primary} per seed (dots) and arm mean with its 95% t interval, as in the tables; {corpus}, {tier} tier."
    )
    if lines:
        caption += (" Dashed: the corpus's unigram baseline and the plateau line (named in the legend when far off the "
                    "plot).")  # fmt: skip
    return figure_entry(arm_comparison_figure(f"{spec.id} [{tier}, {corpus}]", primary, values, path, lines), caption)


OVERVIEW_CAPTION = (
    "Every measured hypothesis (rows: experiment, hypothesis, corpus, tier) with its effect and interval divided by "
    "its own minimum effect m. Upper panel: superiority is supported right of +1 and refuted left of it; "
    "non-inferiority is decided against -1 (positive: as the hypothesis predicts). Lower panel: equivalence, drawn as "
    "the distance |treatment - control| / m with the distances its 90 % interval covers; supported when the whole "
    "interval lies left of 1. Colour: the verdict after the false-discovery adjustment (grey: an arm did not learn). "
    "Counts, facts and bounds (checked on every seed) are left out, and so are the verdicts awaiting runs. "
    "The axis is linear within ±3 margins and logarithmic beyond."
)


OVERVIEW_ROWS = 50  # rows per overview figure: at full width their labels stay legible at 100 % zoom


def overview_parts(verdicts: pd.DataFrame) -> list[pd.DataFrame]:
    """The drawable verdicts in experiment order, cut between experiments into parts of at most OVERVIEW_ROWS rows
    (an experiment with more rows is a part of its own)."""
    rows = margin_rows(verdicts)
    parts: list[pd.DataFrame] = []
    for _, experiment in rows.groupby("experiment_id"):  # in experiment order
        if parts and len(parts[-1]) + len(experiment) <= OVERVIEW_ROWS:
            parts[-1] = pd.concat([parts[-1], experiment])
        else:
            parts.append(experiment)
    return parts


def overview_figures(verdicts: pd.DataFrame, work: Path) -> list[dict]:
    """The findings at a glance, before the summary table: one figure per part of the experiments (none when nothing
    was measured)."""
    counted = verdicts[verdicts.awaiting == ""]
    parts = overview_parts(counted)
    if not parts:
        return []
    caption = OVERVIEW_CAPTION
    measured = counted[counted.test.isin(["superiority", "non_inferiority", "equivalence"]) & counted.ci_low.notna()]
    if len(unitless := measured[measured.min_effect == 0]):
        named = ", ".join(dict.fromkeys(f"{v.experiment_id} {v.hypothesis}" for v in unitless.itertuples()))
        caption += (
            " Left out too: the verdicts of hypotheses that predict a direction without a minimum effect "
            f"({named}; {len(unitless)} row{'s' * (len(unitless) != 1)}): there is no m to divide by; their "
            "sections show them."
        )
    entries = []
    for i, part in enumerate(parts):
        first, last = part.experiment_id.iloc[0], part.experiment_id.iloc[-1]
        if len(parts) > 1:
            span = f"Experiment {first}" if first == last else f"Experiments {first}–{last}"
            text = f"{span}. " + (caption if i == 0 else "Drawn as in the first of these figures.")
        else:
            text = caption
        entries.append(figure_entry(margins_figure(part, work / f"overview-{i + 1}{FIGURE}"), text))
    return entries


def effects_figures(spec: ExperimentSpec, exp_verdicts: pd.DataFrame, work: Path) -> list[dict]:
    """The effect of each hypothesis against the threshold of its test, over all tiers and corpora (if any)."""
    if exp_verdicts.empty:
        return []
    quantities = [tested_quantity(spec, v.hypothesis, v.metric) for v in exp_verdicts.itertuples()]
    shown = exp_verdicts.assign(metric=quantities)
    path = effects_figure(shown, f"{spec.id}: effects", work / f"{spec.name}-effects{FIGURE}")
    caption = (
        "Effect of each hypothesis with its interval (colour = verdict after the false-discovery adjustment; grey: not "
        "decided, an arm did not learn) and the threshold of its test."
    )
    if (exp_verdicts.awaiting != "").any():
        caption += (' A hollow dot and "awaiting runs": its raw verdict, decided on runs that predate the rerun or '
                    "lack seeds, counted nowhere.")  # fmt: skip
    return [figure_entry(path, caption)]


def tested_quantity(spec: ExperimentSpec, hypothesis: str, metric: str) -> str:
    """What a hypothesis's effect is a difference of: its metric, or for a power law the exponent fitted to it."""
    h = next(h for h in spec.hypotheses if h.id == hypothesis)
    return f"exponent k of {metric} ∝ {h.fit_size}^-k" if h.fit_arms else metric


def literature_figures(spec: ExperimentSpec, exp_verdicts: pd.DataFrame, work: Path) -> list[dict]:
    """Our effects beside the published ones, for the hypotheses that give a published effect (if any)."""
    published = {h.id: h for h in spec.hypotheses if h.literature_effect is not None}
    rows = exp_verdicts[exp_verdicts.hypothesis.isin(published)].copy()
    if rows.empty:
        return []
    rows["literature_effect"] = [published[h].literature_effect for h in rows.hypothesis]
    rows["literature_units"] = [published[h].literature_units for h in rows.hypothesis]
    rows = rows.sort_values(["hypothesis", "corpus"], key=numbered)
    path = literature_figure(
        rows, f"{spec.id}: our effects and the published ones", work / f"{spec.name}-literature{FIGURE}"
    )
    caption = (
        "Each hypothesis's effect here (left, colour = adjusted verdict) beside the published effect of the same "
        "comparison (right, in the paper's units): the signs and the order compare, the sizes do not."
    )
    return [figure_entry(path, caption)]


def verdict_rows(spec: ExperimentSpec, exp_verdicts: pd.DataFrame, bigram_rows: Sequence[dict] = ()) -> list[dict]:
    """Each verdict in words, with a caution where an arm it compares is no better than a bigram model there
    (`bigram_rows`, as bigram_level finds them)."""
    hypotheses = {h.id: h for h in spec.hypotheses}
    return [
        {
            "corpus": v.corpus,
            "tier": v.tier,
            "hypothesis": v.hypothesis,
            "verdict": v.verdict_adjusted,  # the badge: the verdict to read; the sentence gives both
            "text": verdict_sentence(pd.Series(v._asdict()), hypotheses[v.hypothesis], spec)
            + bigram_caution(v, bigram_rows),
        }
        for v in exp_verdicts.itertuples()
    ]


def bigram_caution(v, bigram_rows: Sequence[dict]) -> str:
    """A verdict's warning that an arm it compares learned no more than a bigram model on its corpus ("" if none)."""
    weak = [r for r in bigram_rows if r["arm"] in (v.treatment, v.control) and r["tier"] == v.tier
            and r["corpus"] in (v.corpus, f"{v.corpus}'s domain")]  # fmt: skip
    return "".join(
        f" Caution: {r['arm']} is no better than the bigram baseline on {r['corpus']} ({r['loss']} against "
        f"{r['bigram']}): this comparison involves a model that used its context no better than pair statistics."
        for r in weak
    )


def run_ids_row(tier: str, corpus: str, group: pd.DataFrame) -> dict:
    """Where one tier x corpus's runs are in MLflow and what made them: the parent runs, the code commits, and each
    arm x seed's run id by its first 8 characters (enough to find it: `tags.mlflow.runName` or the UI's search)."""
    return {
        "tier": tier,
        "corpus": corpus,
        "parents": sorted(set(group.parent_run_id)),
        "commits": sorted(set(group.git_commit)),
        "runs": [f"{r.arm}/{r.seed} {r.run_id[:8]}" for r in group.itertuples()],
    }


def summary_rows(verdicts: pd.DataFrame, specs: dict[str, ExperimentSpec], statements: bool = False) -> list[dict]:
    """One row per verdict; the hypothesis by its arms, metric and direction (one line), or by its full statement
    (`statements`, for the appendix: superseded hypotheses have no section of their own to read it in)."""
    rows = []
    for v in verdicts.itertuples():
        h = next(h for h in specs[v.experiment].hypotheses if h.id == v.hypothesis)
        decided = v.verdict_adjusted in ("supported", "refuted")
        agrees = "—" if not decided or not h.literature_expects else "no"
        agrees = "yes" if decided and v.verdict_adjusted == h.literature_expects else agrees
        shown = v.test == "bound" or not pd.isna(v.ci_level)  # a bound's interval is the seeds' range
        interval = f" [{fmt(v.ci_low)}, {fmt(v.ci_high)}]" if shown else ""
        rows.append(
            {
                "experiment": f"{v.experiment_id} {v.experiment}",
                "hypothesis": f"{v.hypothesis}{ADDED_MARK if after_data(v, specs[v.experiment]) else ''}: "
                + (h.statement if statements else f"{v.treatment} vs {v.control},"),
                "metric": "" if statements else f"{v.metric}",
                "direction": "" if statements else v.direction,
                "corpus": v.corpus,
                "tier": v.tier,
                "scale": v.scale,
                "test": v.test.replace("_", "-"),
                "seeds": int(v.n_seeds),
                "effect": f"{fmt(v.effect)}{interval}",
                "min_effect": f"{v.min_effect:g}",
                "p": "—" if pd.isna(v.p_value) else f"{v.p_value:.2g} / " + fmt_p(v.p_adjusted),
                "verdict": v.verdict,
                "verdict_adjusted": v.verdict_adjusted,
                # what a refutation found, beside the badge: "refuted" alone reads as "no effect"
                "refuted_how": REFUTATION_SHORT.get(refutation(v), "") if v.verdict_adjusted == "refuted" else "",
                "literature": agrees,
            }
        )
    return rows


VERDICTS = ("supported", "refuted", "inconclusive", "not decided", AWAITING)
ADDED_MARK = "†"  # a hypothesis an amendment added after runs had been seen: not pre-registered


def after_data(verdict, spec: ExperimentSpec) -> bool:
    """Whether a verdict (a row of verdicts.csv) is not pre-registered (ExperimentSpec.pre_registered)."""
    return not spec.pre_registered(verdict.hypothesis, off_scale(verdict.treatment))


def added_after_data(verdicts: pd.DataFrame, specs: dict[str, ExperimentSpec]) -> pd.Series:
    """Per verdict, whether it is not pre-registered (after_data)."""
    return pd.Series([after_data(v, specs[v.experiment]) for v in verdicts.itertuples()], verdicts.index)


def scorecard(verdicts: pd.DataFrame, runs: pd.DataFrame, specs: dict[str, ExperimentSpec]) -> dict:
    """Page 1: the adjusted verdicts counted per experiment and in total, agreement with the literature, and the
    caveats a reader needs (the scale, tokenization, hardware and seeds of these runs)."""
    rows = []
    for name, group in verdicts.groupby("experiment", sort=False):
        counted = group.verdict_adjusted.value_counts()
        rows.append({"experiment": f"{specs[name].id} {name}", "corpora": ", ".join(sorted(set(group.corpus)))}
                    | {v: int(counted.get(v, 0)) for v in VERDICTS})  # fmt: skip
    rows.sort(key=lambda r: r["experiment"])
    not_run = [load_spec(name) for name in experiment_names() if name not in set(runs.experiment)]
    started = set(runs.experiment) - set(verdicts.experiment)  # runs, too few of them for any verdict yet
    agree = [r["literature"] for r in summary_rows(verdicts, specs)]
    params = runs.n_params.dropna()
    decided = verdicts.verdict_adjusted.isin(["supported", "refuted"])
    return {
        "rows": rows,
        "not_run": [f"{spec.id} {spec.name}" for spec in sorted(not_run, key=lambda spec: spec.id)],
        "started": sorted(f"{specs[name].id} {name}" for name in started),
        "total": {v: int((verdicts.verdict_adjusted == v).sum()) for v in VERDICTS},
        "added_decided": int((decided & added_after_data(verdicts, specs)).sum()),
        "literature": {"agree": agree.count("yes"), "disagree": agree.count("no")},
        "caveats": {
            "params": f"{int(params.min()):,}–{int(params.max()):,}",
            "tokenizers": ", ".join(sorted(set(runs.tokenizer.dropna()))),
            "hardware": "; ".join(sorted(set(runs.hardware.dropna()))),
            "seeds": spread(runs.groupby(["experiment", "tier", "corpus", "arm"]).seed.nunique()),
            "still_learning": sorted(specs[n].id for n in set(runs[runs.learning_check == "failed"].experiment)),
            "unchecked": sorted(specs[n].id for n in set(runs[runs.learning_check == "unknown"].experiment)),
        },
    }


# The expected slope and the trend found, in one vocabulary: the effect (+ = the hypothesis's way) rises, falls or
# stays flat as the axis grows; "As expected" compares the two.
EXPECTED_WORDS = {"positive": "rises", "negative": "falls", "zero": "flat"}
TREND_WORDS = {"strengthens": "rises", "weakens": "falls", "holds": "no trend detected", "flips": "flips sign"}
FLAT = "flat (within the margin)"  # a zero slope shown by its equivalence test


def trend_words(t) -> str:
    """The trend column: where the effect moves, and why a trend is not decided."""
    if t.expected == "zero" and t.matches:  # shown flat by its equivalence test, whether or not the slope is 0
        return FLAT if t.trend == "holds" else f"{TREND_WORDS[t.trend]}, by less than the margin"
    return TREND_WORDS.get(t.trend, t.trend) + trend_reason(t)


def trend_reason(t) -> str:
    """Why a trend is not decided, short enough for the table's column: the axis values where an arm did not learn
    (which arm, and how many runs, the per-value verdicts and trends.csv say)."""
    if not isinstance(t.reason, str) or not t.reason:
        return ""
    unlearned = re.findall(r"(?:^|; )([^;:]+): did not learn", t.reason)
    return f" (an arm did not learn at {', '.join(unlearned)})" if unlearned else f" ({t.reason})"


def trend_rows(trends: pd.DataFrame, verdicts: pd.DataFrame, specs: dict[str, ExperimentSpec]) -> list[dict]:
    """Per scaled hypothesis: the slope against the sign written down before the runs (marked † where an amendment
    wrote it after them), and the effect and adjusted verdict at each axis value (those verdicts are tests of the
    report's family too)."""
    rows = []
    for t in trends.sort_values(["experiment_id", "hypothesis", "corpus", "tier"], key=numbered).itertuples():
        at = verdicts[(verdicts.experiment == t.experiment) & (verdicts.hypothesis == t.hypothesis)
                      & (verdicts.corpus == t.corpus) & (verdicts.tier == t.tier)]  # fmt: skip
        at = at[at.scale != ""]
        if at.empty:  # a hypothesis of the other kind (current or superseded): its trend goes with its verdicts
            continue
        at = at.assign(value=at.scale.str.partition("=")[2].astype(float)).sort_values("value")
        spec = specs[t.experiment]
        effects = [f"{v.value:g}{ADDED_MARK if after_data(v, spec) else ''}: "
                   f"{fmt(v.effect)} [{fmt(v.ci_low)}, {fmt(v.ci_high)}] {v.verdict_adjusted}"
                   for v in at.itertuples()]  # fmt: skip
        expected = EXPECTED_WORDS.get(t.expected, t.expected) + (ADDED_MARK if spec.scaled(t.hypothesis) else "")
        if t.awaiting or t.trend == NOT_DECIDED or spec.scaled(t.hypothesis):  # no slope to compare, or a sign
            matches = "—"  # written down after the values that decide it had been seen
        elif t.matches:
            matches = "yes"
        else:  # a slope whose interval holds 0 neither shows nor contradicts a predicted sign
            matches = "not shown" if t.trend == "holds" else "no"
        rows.append({
            "experiment": f"{t.experiment_id} {t.experiment}", "corpus": t.corpus,
            "hypothesis": t.hypothesis + (ADDED_MARK if spec.added(t.hypothesis) else ""),
            "tier": t.tier, "axis": t.axis, "effects": effects,
            "slope": "—" if pd.isna(t.slope) else f"{fmt(t.slope)} [{fmt(t.slope_low)}, {fmt(t.slope_high)}]",
            "expected": expected,
            "trend": f"awaiting runs ({t.awaiting})" if t.awaiting else trend_words(t),
            "matches": matches,
        })  # fmt: skip
    return rows


def rerun_rows(changes: pd.DataFrame) -> list[dict]:
    """Each hypothesis decided before and after its experiment's rerun: the two verdicts (FDR-adjusted, each within
    its own report) and effects, current hypotheses first."""
    rows = []
    for c in changes.sort_values(["experiment_id", "corpus", "hypothesis"], key=numbered).itertuples():
        both = {}
        for when in ("before", "after"):
            low, high = getattr(c, f"ci_low_{when}"), getattr(c, f"ci_high_{when}")
            interval = "" if low == high else f" [{fmt(low)}, {fmt(high)}]"
            effect = f"{fmt(getattr(c, f'effect_{when}'))}{interval}, {int(getattr(c, f'n_seeds_{when}'))} seeds"
            both[when] = (getattr(c, f"verdict_adjusted_{when}"), effect)
        rows.append({"experiment": f"{c.experiment_id} {c.experiment}", "hypothesis": c.hypothesis,
                     "corpus": c.corpus, "scale": c.scale, "version": str(c.code_version_before),
                     "before": both["before"][0], "effect_before": both["before"][1],
                     "after": both["after"][0], "effect_after": both["after"][1],
                     "changed": "yes" if both["before"][0] != both["after"][0] else ""})  # fmt: skip
    return rows


def compute_rows(runs: pd.DataFrame) -> list[dict]:
    """Per experiment, corpus and tier: the runs trained for it and their summed wall time in worker-hours, the scale
    axis's share apart (its arms are named arm@axis=value), and the machines, whose speeds differ."""
    rows = []
    trained = trained_here(runs)
    for (name, corpus, tier), group in trained.groupby(["experiment", "corpus", "tier"], sort=True):
        scale = group[scaled(group.arm)]
        rows.append({"experiment": f"{load_spec(name).id} {name}", "corpus": corpus, "tier": tier,
                     "version": str(group.code_version.iloc[0]), "runs": len(group),
                     "hours": f"{group.wall_seconds.sum() / 3600:.2f}",
                     "scale_hours": f"{scale.wall_seconds.sum() / 3600:.2f}" if len(scale) else "—",
                     "machines": ", ".join(sorted(set(group.hardware.dropna())))})  # fmt: skip
    rows.sort(key=lambda r: (r["experiment"], r["corpus"], r["tier"]))
    current = trained[trained.code_version.astype(str) == NUMERICS_VERSION]
    if len(current):
        scale = current[scaled(current.arm)]
        rows.append({"experiment": "All, at the current version", "corpus": "", "tier": "", "version": NUMERICS_VERSION,
                     "runs": len(current), "hours": f"{current.wall_seconds.sum() / 3600:.2f}",
                     "scale_hours": f"{scale.wall_seconds.sum() / 3600:.2f}",
                     "machines": ", ".join(sorted(set(current.hardware.dropna())))})  # fmt: skip
    return rows


def amendment_rows(specs: dict[str, ExperimentSpec]) -> list[dict]:
    """Every amendment, with the hypotheses it supersedes, adds and puts on the scale axis ("supersedes H3, H4")."""

    def touched(a) -> str:
        named = {"supersedes": a.supersedes, "adds": a.adds, "puts on the scale axis": a.scales}
        return "; ".join(f"{how} {', '.join(ids)}" for how, ids in named.items() if ids) or "—"

    return [
        {"experiment": f"{spec.id} {spec.name}", "date": a.date, "change": a.change, "reason": a.reason,
         "hypotheses": touched(a)}
        for spec in specs.values()
        for a in spec.amendments
    ]  # fmt: skip


def environment(runs: pd.DataFrame) -> dict:
    # the installed versions, read from their metadata: importing Lightning took 6 of the report's 60 seconds
    torch, lightning, mlflow = (importlib.metadata.version(p) for p in ("torch", "pytorch-lightning", "mlflow"))
    return {
        "hardware": sorted(set(runs.hardware)) if not runs.empty else [],
        "run_commits": sorted(set(runs.git_commit)) if not runs.empty else [],
        "report_commit": tracking.git_commit(),
        "versions": f"Python {tracking.platform.python_version()}, torch {torch}, Lightning {lightning}, "
        f"MLflow {mlflow}, typst-py {typst.__version__}",
    }


def numbered(column: pd.Series) -> pd.Series:
    """A sort key that puts H2 before H10 (other columns sort as they are)."""
    return column.str[1:].astype(int) if column.name == "hypothesis" else column


def blanks_as_text(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Text columns with "" for a blank: pandas reads a blank as NaN, which is not text (nor valid JSON)."""
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), "") for c in columns})


def read_results(results_dir: Path, tiers: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """results/*.csv limited to the tiers; verdicts split into current and superseded, blanks as ""."""
    names = ["runs", "verdicts", "trends", "curves"]
    names += ["verdicts_before_rerun"] if (results_dir / "verdicts_before_rerun.csv").exists() else []
    # "1", "7e3" are versions, not numbers; an empty awaiting column is text, not NaN floats
    as_text = {"code_version": str, "code_version_before": str, "awaiting": str}
    frames = {name: pd.read_csv(results_dir / f"{name}.csv", dtype=as_text) for name in names}
    frames = {name: frame[frame.tier.isin(tiers)] for name, frame in frames.items()}
    if frames["runs"].empty:
        raise SystemExit(
            f"error: {results_dir}/runs.csv has no runs of the tiers {', '.join(tiers)}; nothing to report"
        )
    text_columns = {"verdicts": ("reason", "superseded", "scale", "awaiting"), "trends": ("awaiting",),
                    "verdicts_before_rerun": ("scale", "superseded_before", "superseded_after")}  # fmt: skip
    for name, columns in text_columns.items():
        if name in frames:
            frames[name] = blanks_as_text(frames[name], columns)
    verdicts = frames["verdicts"]
    superseded = verdicts[verdicts.superseded != ""]
    at = pd.to_numeric(superseded.scale.str.split("=").str[-1], errors="coerce")  # the axis value, in number order
    order = superseded.assign(at=at).sort_values(["experiment_id", "hypothesis", "corpus", "tier", "at"], key=numbered)
    frames["superseded"] = order.drop(columns="at")
    frames["current"] = current = verdicts[verdicts.superseded == ""]
    own_scale = current[~scaled(current.treatment)]  # the scaled arms: the trend table
    frames["verdicts"] = own_scale.sort_values(["experiment_id", "hypothesis", "corpus", "tier"], key=numbered)
    return frames


def commands(runs: pd.DataFrame) -> list[str]:
    """The commands that remake the report's runs, results and PDF."""
    remake = [
        f"make experiment name={n} tier={t} data={c}"
        + (" data.path=/path/to/input.txt" if c == "tinyshakespeare" else "")
        for n, t, c in sorted(set(zip(runs.experiment, runs.tier, runs.corpus, strict=True)))
    ]
    return ["make results                      # results/*.csv from the MLflow store",
            "make report                       # this PDF from results/", *remake]  # fmt: skip


def counts(verdicts: pd.DataFrame) -> dict[str, int]:
    """The summary's counts over every current verdict, the scaled ones included: those decided on current runs, and
    those awaiting their rerun."""
    counted = verdicts[verdicts.awaiting == ""]
    at_scale = scaled(verdicts.treatment)  # at the scale axis's other values: not on page 1
    not_decided, awaiting = counted.verdict == "not decided", verdicts.awaiting != ""
    return {
        "tests": int(counted.p_value.notna().sum()),
        "scaled_tests": int((counted.p_value.notna() & at_scale[counted.index]).sum()),
        "not_decided": int(not_decided.sum()),
        "not_decided_scaled": int((not_decided & at_scale[counted.index]).sum()),
        "changed_by_fdr": int((counted.verdict != counted.verdict_adjusted).sum()),
        "awaiting": int(awaiting.sum()),
        "awaiting_scaled": int((awaiting & at_scale).sum()),
    }


def build(results_dir: Path, out: Path, tiers: tuple[str, ...] = ("quick", "full")) -> Path:
    """The PDF from results/*.csv, for the runs of the given tiers (smoke runs say nothing about claims)."""
    frames = read_results(results_dir, tiers)
    runs, verdicts = frames["runs"], frames["verdicts"]
    names = sorted(set(runs.experiment), key=lambda n: (load_spec(n).id, n))
    specs = {name: load_spec(name) for name in names}
    trends = trend_rows(frames["trends"], frames["current"], specs)
    corpora = {tier: sorted(set(runs[runs.tier == tier].corpus)) for tier in set(runs.tier)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cjk_font": cjk_font() or "",
            "summary": summary_rows(verdicts, specs),
            "overviews": overview_figures(verdicts, work),
            "scorecard": scorecard(verdicts, runs, specs),
            "counts": counts(frames["current"]),
            "plateau_margin": f"{PLATEAU_MARGIN:.0%}",
            "trends": trends,
            "amendments": amendment_rows(specs),
            "reruns": rerun_rows(frames["verdicts_before_rerun"]) if "verdicts_before_rerun" in frames else [],
            "superseded": summary_rows(frames["superseded"], specs, statements=True),
            "superseded_trends": trend_rows(frames["trends"], frames["superseded"], specs),
            "experiments": [
                experiment_section(
                    specs[n], runs[runs.experiment == n], verdicts, frames["curves"], trends, corpora, work
                )
                for n in names
            ],
            "environment": environment(runs),
            "compute": compute_rows(runs),
            "commands": commands(runs),
        }
        (work / "report.json").write_text(json.dumps(data, ensure_ascii=False, indent=1, allow_nan=False))
        shutil.copy(TEMPLATE, work / "report.typ")
        pdf = typst.compile(str(work / "report.typ"), root=str(work), font_paths=list(CJK_FONT_DIRS))
        atomic_write(out, pdf)
    return out


def log_to_mlflow(pdf: Path, results_dir: Path) -> str:
    client = tracking.client()
    exp_id = tracking.experiment_id(client, "evidence_report")
    run = client.create_run(
        exp_id, run_name="evidence report", tags=tracking.environment_tags() | {"ablations.role": "report"}
    )
    client.log_artifact(run.info.run_id, str(pdf))
    for name in ("runs.csv", "verdicts.csv", "trends.csv"):
        client.log_artifact(run.info.run_id, str(results_dir / name), artifact_path="results")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@dataclass
class ReportSettings:
    results: Path = tracking.ROOT / "results"
    out: Path = tracking.ROOT / "reports" / "evidence-report.pdf"
    mlflow: bool = True  # log the PDF and the CSVs it came from as an MLflow run
    tiers: list[str] = field(default_factory=lambda: ["quick", "full"])


def main(argv: list[str]) -> None:
    chosen = settings.parse(argv, ReportSettings(), __doc__)
    if not cjk_font():
        print(
            "note: no CJK font found (Debian/Ubuntu: apt-get install fonts-noto-cjk); the Chinese quotes are left out"
        )
    pdf = build(chosen.results, chosen.out, tuple(chosen.tiers))
    print(f"wrote {pdf}")
    if chosen.mlflow:
        print(f"logged to MLflow run {log_to_mlflow(pdf, chosen.results)}")


if __name__ == "__main__":
    main(sys.argv[1:])
