"""Compile `results/` into the evidence report, reports/evidence-report.pdf, and log it to MLflow.

    python -m ablations.report [--results results] [--out reports/evidence-report.pdf] [--no-mlflow]

Every number comes from results/*.csv (exported from the MLflow store); the hypotheses and claims come
from experiments/*.yaml. Python computes everything and writes it to JSON; the Typst template
(report.typ) only lays it out, so no text is ever pasted into markup.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import typst  # noqa: E402
from scipy import stats  # noqa: E402

from ablations import tracking  # noqa: E402
from ablations.experiment import figure_from_spec  # noqa: E402
from ablations.figures import FIGURE_DPI, arm_comparison_figure  # noqa: E402
from ablations.health import PLATEAU_MARGIN, reference_lines  # noqa: E402
from ablations.quantization import TAIL_QUANTILES  # noqa: E402
from ablations.spec import ExperimentSpec, load_spec  # noqa: E402

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


RULES = {
    "superiority": "{t} {dir} than {c} by at least {m}",
    "non_inferiority": "{t} not worse than {c} by more than {m} ({dir} is better)",
    "equivalence": "{t} within ±{m} of {c}",
    "counts": "fewer {metric} runs in {t} than in {c}",
    "fact": "{t} against {c}: {dir} by {m}",
}
OUTCOMES = {
    ("superiority", "supported"): "The whole 95% interval lies above the minimum effect",
    ("superiority", "refuted"): "The whole 95% interval lies below the minimum effect",
    ("non_inferiority", "supported"): "The whole 95% interval lies above minus the margin",
    ("non_inferiority", "refuted"): "The whole 95% interval lies below minus the margin",
    ("equivalence", "supported"): "The whole 90% interval lies inside the margin (TOST)",
    ("equivalence", "refuted"): "The whole 90% interval lies beyond an edge of the margin",
    ("counts", "supported"): "Fisher's exact test favours the treatment",
    ("counts", "refuted"): "Fisher's exact test favours the control",
    ("fact", "supported"): "The fixed values meet the statement",
    ("fact", "refuted"): "The fixed values do not meet the statement",
}


def verdict_sentence(v: pd.Series, h, spec: ExperimentSpec) -> str:
    """One hypothesis's verdict in words: the test, the numbers, the raw and the adjusted verdict."""
    rule = RULES[v.test].format(t=v.treatment, c=v.control, m=f"{v.min_effect:g}", metric=v.metric,
                                dir={"lower": "lower", "higher": "higher", "equal": "equal"}[v.direction])  # fmt: skip
    if v.test == "counts":
        numbers = f"rates {v.control} {v.control_mean:.2f}, {v.treatment} {v.treatment_mean:.2f}"
    else:
        numbers = f"{v.control} {v.control_mean:.4g}, {v.treatment} {v.treatment_mean:.4g}"
    interval = "" if pd.isna(v.ci_level) else f" [{fmt(v.ci_low)}, {fmt(v.ci_high)}] ({v.ci_level:.0%})"
    text = f"{h.id} ({v.test}, {v.metric}: {rule}): effect {fmt(v.effect)}{interval} over {v.n_seeds} seeds ({numbers})"
    text += "" if pd.isna(v.p_value) else f", p = {v.p_value:.3g}, adjusted {v.p_adjusted:.3g}"
    text += ". "
    if v.verdict == "not decided":
        return text + f"Not decided: {v.reason}."
    if v.verdict == "inconclusive":
        text += "Neither side of the test is reached: inconclusive."
    else:
        text += f"{OUTCOMES[(v.test, v.verdict)]}: {v.verdict}."
    if v.verdict_adjusted != v.verdict:
        text += f" After the false-discovery adjustment over the report's tests: {v.verdict_adjusted}."
    if v.verdict_adjusted == "refuted" and h.from_document:
        text += f" The document's claim ({h.source}) does not hold at this model size and budget."
    return text


def meaning(spec: ExperimentSpec, exp_verdicts: pd.DataFrame) -> str:
    """What the verdicts say taken together: per hypothesis, across corpora, against the literature."""
    sentences = []
    for h in spec.hypotheses:
        rows = exp_verdicts[exp_verdicts.hypothesis == h.id]
        if rows.empty:
            continue
        by_corpus = {r.corpus: r.verdict_adjusted for r in rows.itertuples()}
        if len(set(by_corpus.values())) == 1:
            verdict = next(iter(by_corpus.values()))
            where = "on every corpus" if len(by_corpus) > 1 else f"on {next(iter(by_corpus))}"
            text = f"{h.id} is {verdict} {where}"
        else:
            text = f"{h.id} depends on the corpus (" + ", ".join(f"{v} on {c}" for c, v in by_corpus.items()) + ")"
        decided = {v for v in by_corpus.values() if v in ("supported", "refuted")}
        if h.literature_expects and decided:
            agree = decided == {h.literature_expects}
            text += (
                "; this agrees with the literature" if agree else f"; the literature expected {h.literature_expects}"
            )
        sentences.append(text + ".")
        if h.from_document and (refuted := [c for c, v in by_corpus.items() if v == "refuted"]):
            sentences.append(
                f"The handbook's statement behind {h.id} ({h.source}) does not hold on {', '.join(refuted)}."
            )
    return " ".join(sentences)


def curves_figure(
    curves: pd.DataFrame, arms: list[str], title: str, path: Path, baselines: dict[str, float] | None = None
) -> Path:
    """Validation and training loss per step: the arm mean, a band from the lowest to the highest seed, and the
    corpus's unigram and bigram baselines (validation split) with the plateau line 10 % below unigram."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    for ax, metric in zip(axes, ("val_loss", "train_loss"), strict=True):
        frame = curves[curves.metric == metric]
        sns.lineplot(
            frame, x="step", y="value", hue="arm", hue_order=arms, errorbar=("pi", 100), ax=ax, legend=ax is axes[1]
        )
        # The first tenth of training is a steep drop that would flatten everything after it.
        later = frame[frame.step >= frame.step.max() * 0.1].value
        top = later.max()
        for name, value in (baselines or {}).items():
            ax.axhline(value, color="black", linestyle=":" if "bigram" in name else "--", linewidth=0.9, label=name)
            top = max(top, value)
        ax.set(title=f"{metric} ({title})", ylabel=metric, ylim=(later.min() * 0.98, top * 1.02))
    sns.move_legend(
        axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title_fontsize=8, ncols=1 + len(arms) // 10
    )
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def reliability_figure(curves: pd.DataFrame, arms: list[str], title: str, path: Path) -> Path:
    """Accuracy against confidence per confidence bin, pooled over seeds; the diagonal is perfect calibration."""
    wide = curves.pivot_table(index=["arm", "seed", "step"], columns="metric", values="value").reset_index()
    wide["hits"] = wide.reliability_accuracy * wide.reliability_count
    wide["confidence_sum"] = wide.reliability_confidence * wide.reliability_count
    pooled = wide.groupby(["arm", "step"])[["hits", "confidence_sum", "reliability_count"]].sum().reset_index()
    pooled = pooled[pooled.reliability_count > 0]
    fig, ax = plt.subplots(figsize=(4.8, 4.2), layout="constrained")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for arm in arms:
        rows = pooled[pooled.arm == arm]
        ax.plot(rows.confidence_sum / rows.reliability_count, rows.hits / rows.reliability_count, "o-", label=arm)
    ax.set(xlabel="confidence (bin mean)", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def tails_figure(curves: pd.DataFrame, title: str, path: Path) -> Path:
    """|x| / std at TAIL_QUANTILES for weights and activations (one line per seed) and for a Gaussian."""
    gaussian = [float(stats.norm.ppf(0.5 + q / 2)) for q in TAIL_QUANTILES[:-1]]
    labels = [f"{100 * q:g}%" for q in TAIL_QUANTILES[:-1]] + ["max"]
    frame = curves.drop_duplicates(["metric", "seed", "step"])  # every arm measures the same fp32 base
    fig, ax = plt.subplots(figsize=(6.5, 3.6), layout="constrained")
    for (metric, seed), rows in frame.groupby(["metric", "seed"]):
        colour = "tab:blue" if metric.startswith("weight") else "tab:red"
        label = metric.removesuffix("_tail") if seed == frame.seed.min() else None
        ax.plot(rows.step, rows.value, "o-", color=colour, alpha=0.7, label=label)
    ax.plot(range(len(gaussian)), gaussian, "k:", label="Gaussian")
    ax.set(xticks=range(len(labels)), xticklabels=labels, yscale="log", xlabel="quantile of |x - mean|",
           ylabel="multiples of the std", title=f"Tails of the Linear weights and inputs ({title})")  # fmt: skip
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def effects_figure(verdicts: pd.DataFrame, title: str, path: Path) -> Path:
    """One panel per hypothesis (each in its metric's units): effect and 95% CI per corpus, and the minimum effect."""
    colours = {"supported": "tab:green", "refuted": "tab:red", "inconclusive": "tab:orange", "not decided": "grey"}
    verdicts = verdicts[verdicts.ci_low.notna()]  # counts and facts have no interval
    hypotheses = list(dict.fromkeys(verdicts.hypothesis))
    fig, axes = plt.subplots(
        len(hypotheses),
        1,
        figsize=(7, 0.4 + 1.0 * len(hypotheses) + 0.25 * len(verdicts)),
        layout="constrained",
        squeeze=False,
    )
    for ax, hypothesis in zip(axes[:, 0], hypotheses, strict=True):
        rows = verdicts[verdicts.hypothesis == hypothesis]
        for i, v in enumerate(rows.itertuples()):
            low, high = (v.ci_low, v.ci_high) if math.isfinite(v.ci_low) else (v.effect, v.effect)
            ax.plot([low, high], [i, i], color=colours[v.verdict], linewidth=3, solid_capstyle="butt")
            ax.plot(v.effect, i, "o", color=colours[v.verdict])
        threshold = -rows.min_effect.iloc[0] if rows.test.iloc[0] == "non_inferiority" else rows.min_effect.iloc[0]
        ax.axvline(threshold, color="black", linewidth=1.5, label="threshold of the test")
        if rows.test.iloc[0] == "equivalence":
            ax.axvline(-threshold, color="black", linewidth=1.5)
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yticks(range(len(rows)), [f"{v.corpus} ({v.tier})" for v in rows.itertuples()])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        level = f"{rows.ci_level.iloc[0]:.0%}"
        ax.set_title(f"{hypothesis} ({rows.test.iloc[0]}): {rows.metric.iloc[0]} ({rows.direction.iloc[0]}), "
                     f"effect and {level} CI", fontsize=9)  # fmt: skip
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("effect (positive = as the hypothesis predicts)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def _metrics_of(row: dict) -> dict[str, float]:
    """A runs.csv row's finite numbers."""
    return {k: v for k, v in row.items() if isinstance(v, float) and math.isfinite(v)}


def setup_line(group: pd.DataFrame) -> str:
    first = group.iloc[0]
    model = (
        f"{first['model.n_layer']} layers, d_model {first['model.d_model']}, context {first['model.block_size']}, "
        f"batch {first['data.batch_size']}, {first['optim.max_steps']} steps, lr {first['optim.lr']:g}, "
        f"{first['trainer.precision']}"
        if "model.n_layer" in group
        else ""
    )
    return model


def experiment_section(spec: ExperimentSpec, runs: pd.DataFrame, verdicts: pd.DataFrame, curves, work: Path) -> dict:
    hypotheses = {h.id: h for h in spec.hypotheses}
    primary = spec.hypotheses[0].metric
    settings, tables, verdict_texts, figures, run_ids = [], [], [], [], []
    for (tier, corpus), group in runs.groupby(["tier", "corpus"], sort=True):
        first = group.iloc[0]
        settings.append(
            {
                "tier": tier,
                "corpus": corpus,
                "sha256": first.corpus_sha256[:16],
                "tokenizer": first.tokenizer,
                "setup": setup_line(group),
                "params": f"{int(first.n_params):,}",
                "tokens": f"{int(first.train_tokens):,}",
                "seeds": int(group.seed.nunique()),
                "arms": int(group.arm.nunique()),
                "hardware": first.hardware,
                "wall": f"{group.wall_seconds.sum() / 60:.1f} min",
            }
        )
        rows = []
        for arm in spec.arms_for(tier):
            arm_runs = group[group.arm == arm]
            if arm_runs.empty:
                continue
            values = arm_runs[primary].where(arm_runs.status == "finished", math.log(first.vocab_size))
            mean, low, high = mean_interval(values)
            speed = arm_runs["train_tokens_per_sec"].mean() if "train_tokens_per_sec" in arm_runs else math.nan
            rows.append(
                {
                    "arm": arm,
                    "overrides": [f"{k}={v}" for k, v in spec.arms_for(tier)[arm].items()],
                    "n": len(arm_runs),
                    "mean": f"{mean:.4f}",
                    "ci": f"[{low:.4f}, {high:.4f}]",
                    "params": f"{int(arm_runs.n_params.iloc[0]):,}",
                    "tok_s": "—" if math.isnan(speed) else f"{speed:,.0f}",  # evaluation-only arms do not train
                    "health": ", ".join(f"{n} {h}" for h, n in arm_runs.health.value_counts().items())
                    if "health" in arm_runs
                    else "",
                }
            )
        measures = {"metrics": spec.report_metrics, "rows": []}
        for arm in spec.arms_for(tier) if spec.report_metrics else []:
            arm_runs = group[group.arm == arm]
            if not arm_runs.empty:
                means = [arm_runs[m].mean() if m in arm_runs else math.nan for m in spec.report_metrics]
                measures["rows"].append({"arm": arm, "values": ["—" if math.isnan(x) else f"{x:.4g}" for x in means]})
        tables.append({"tier": tier, "corpus": corpus, "metric": primary, "rows": rows, "measures": measures})
        tag = f"{spec.name}-{tier}-{corpus}"
        as_runs = [(r["arm"], r["seed"], r["status"], _metrics_of(r)) for r in group.to_dict("records")]
        loss_lines = reference_lines("final_val_loss", [metrics for *_, metrics in as_runs])
        figures.append(
            {
                "path": arm_comparison_figure(
                    f"{spec.id} [{tier}, {corpus}]",
                    primary,
                    [
                        (r.arm, r.seed, getattr(r, primary))
                        for arm in spec.arms_for(tier)
                        for r in group[group.arm == arm].itertuples()
                    ],
                    work / f"{tag}-arms.png",
                    loss_lines if primary == "final_val_loss" else {},
                ).name,
                "caption": f"{primary} per seed (dots) and arm mean with a bootstrap 95% interval; "
                f"{corpus}, {tier} tier. For the validation loss: the corpus's unigram baseline and the plateau "
                "line (dashed, or named in the corner when far off the plot).",
            }
        )
        run_curves = curves[(curves.experiment == spec.name) & (curves.tier == tier) & (curves.corpus == corpus)]
        if not run_curves[run_curves.metric.isin(["val_loss", "train_loss"])].empty:
            lines = loss_lines | ({"bigram baseline": float(group.baseline_bigram.mean())} if loss_lines else {})
            figures.append(
                {
                    "path": curves_figure(
                        run_curves, list(spec.arms_for(tier)), f"{corpus}, {tier}", work / f"{tag}-curves.png", lines
                    ).name,
                    "caption": "Loss per step: arm mean and the band from the lowest to the highest seed "
                    "(validation on a fixed subset of windows). Dashed: the unigram baseline and the plateau line "
                    f"{PLATEAU_MARGIN:.0%} below it (a run ending above it did not learn); dotted: the bigram "
                    "baseline.",
                }
            )
        for i, spec_figure in enumerate(spec.figures):
            path = figure_from_spec(spec, spec_figure, as_runs, work / f"{tag}-figure{i}.png")
            if path is not None:
                title = spec_figure.get("title", spec_figure["y"])
                figures.append(
                    {"path": path.name, "caption": f"{title}; {corpus}, {tier} tier (mean, bootstrap 95% CI)."}
                )
        tail_curves = run_curves[run_curves.metric.str.endswith("_tail")]
        if not tail_curves.empty:
            figures.append(
                {
                    "path": tails_figure(tail_curves, f"{corpus}, {tier}", work / f"{tag}-tails.png").name,
                    "caption": "How long-tailed the trained model's Linear weights and inputs are: |x - mean| / std "
                    "at each quantile (each layer normalized by its own std, layers pooled), per seed, against a "
                    "Gaussian. Outliers far beyond the Gaussian line are what INT8 calibration must handle.",
                }
            )
        reliability = run_curves[run_curves.metric.str.startswith("reliability_")]
        if not reliability.empty:
            figures.append(
                {
                    "path": reliability_figure(
                        reliability, list(spec.arms_for(tier)), f"{corpus}, {tier}", work / f"{tag}-reliability.png"
                    ).name,
                    "caption": "Reliability diagram: validation accuracy against confidence in 15 bins, seeds pooled.",
                }
            )
        run_ids.append(
            {
                "tier": tier,
                "corpus": corpus,
                "parents": sorted(set(group.parent_run_id)),
                "runs": [f"{r.arm}/seed{r.seed}: {r.run_id}" for r in group.itertuples()],
            }
        )
    exp_verdicts = verdicts[verdicts.experiment == spec.name]
    for v in exp_verdicts.itertuples():
        verdict_texts.append(
            {
                "corpus": v.corpus,
                "tier": v.tier,
                "hypothesis": v.hypothesis,
                "verdict": v.verdict_adjusted,  # the badge: the verdict to read; the sentence gives both
                "text": verdict_sentence(pd.Series(v._asdict()), hypotheses[v.hypothesis], spec),
            }
        )
    if not exp_verdicts.empty:
        figures.append(
            {
                "path": effects_figure(exp_verdicts, f"{spec.id}: effects", work / f"{spec.name}-effects.png").name,
                "caption": "Effect of each hypothesis with its interval (colour = raw verdict; grey: not "
                "decided, an arm did not learn) and the threshold of its test.",
            }
        )
    return {
        "id": spec.id,
        "name": spec.name,
        "title": spec.title,
        "claim": spec.claim,
        "design": " ".join(spec.design.split()),
        "hypotheses": [
            {
                "id": h.id,
                "source": h.source,
                "statement": h.statement,
                "metric": h.metric,
                "direction": h.direction,
                "test": h.test.replace("_", "-"),
                "superseded": spec.superseded(h.id),
                "arms": f"{h.treatment} vs {h.control}",
                "min_effect": f"{h.min_effect:g}",
                "literature": h.literature,
                "literature_expects": h.literature_expects or "—",
            }
            for h in spec.hypotheses
        ],
        "settings": settings,
        "tables": tables,
        "verdicts": verdict_texts,
        "meaning": meaning(spec, exp_verdicts),
        "figures": figures,
        "run_ids": run_ids,
    }


def summary_rows(verdicts: pd.DataFrame, specs: dict[str, ExperimentSpec]) -> list[dict]:
    rows = []
    for v in verdicts.itertuples():
        h = next(h for h in specs[v.experiment].hypotheses if h.id == v.hypothesis)
        decided = v.verdict_adjusted in ("supported", "refuted")
        agrees = "—" if not decided or not h.literature_expects else "no"
        agrees = "yes" if decided and v.verdict_adjusted == h.literature_expects else agrees
        interval = "" if pd.isna(v.ci_level) else f" [{fmt(v.ci_low)}, {fmt(v.ci_high)}]"
        rows.append(
            {
                "experiment": f"{v.experiment_id} {v.experiment}",
                "hypothesis": f"{v.hypothesis}: {h.statement}",
                "corpus": v.corpus,
                "tier": v.tier,
                "test": v.test.replace("_", "-"),
                "seeds": int(v.n_seeds),
                "effect": f"{fmt(v.effect)}{interval}",
                "min_effect": f"{v.min_effect:g}",
                "p": "—" if pd.isna(v.p_value) else f"{v.p_value:.2g} / {v.p_adjusted:.2g}",
                "verdict": v.verdict,
                "verdict_adjusted": v.verdict_adjusted,
                "literature": agrees,
            }
        )
    return rows


def trend_rows(trends: pd.DataFrame) -> list[dict]:
    return [
        {
            "experiment": f"{t.experiment_id} {t.experiment}", "hypothesis": t.hypothesis, "corpus": t.corpus,
            "tier": t.tier, "axis": t.axis, "values": t.values,
            "slope": "—" if pd.isna(t.slope) else f"{fmt(t.slope)} [{fmt(t.slope_low)}, {fmt(t.slope_high)}]",
            "expected": t.expected,
            "trend": t.trend + (f" ({t.reason})" if isinstance(t.reason, str) and t.reason else ""),
            "matches": "yes" if t.matches else "no",
        }
        for t in trends.itertuples()
    ]  # fmt: skip


def amendment_rows(specs: dict[str, ExperimentSpec]) -> list[dict]:
    return [
        {"experiment": f"{spec.id} {spec.name}", "date": a.date, "change": a.change, "reason": a.reason,
         "supersedes": ", ".join(a.supersedes) or "—"}
        for spec in specs.values()
        for a in spec.amendments
    ]  # fmt: skip


def environment(runs: pd.DataFrame) -> dict:
    import mlflow
    import pytorch_lightning
    import torch

    return {
        "hardware": sorted(set(runs.hardware)) if not runs.empty else [],
        "run_commits": sorted(set(runs.git_commit)) if not runs.empty else [],
        "report_commit": tracking.git_commit(),
        "versions": f"Python {tracking.platform.python_version()}, torch {torch.__version__}, "
        f"Lightning {pytorch_lightning.__version__}, MLflow {mlflow.__version__}, Typst (typst-py) {typst.__version__}",
    }


def build(results_dir: Path, out: Path, tiers: tuple[str, ...] = ("quick", "full")) -> Path:
    """The PDF from results/*.csv, for the runs of the given tiers (smoke runs say nothing about claims)."""
    names = ("runs", "verdicts", "trends", "curves")
    runs, verdicts, trends, curves = (pd.read_csv(results_dir / f"{name}.csv") for name in names)
    runs, verdicts, trends, curves = (frame[frame.tier.isin(tiers)] for frame in (runs, verdicts, trends, curves))
    for column in ("reason", "superseded", "scale"):  # all blank reads as a float column
        verdicts[column] = verdicts[column].astype(object).where(verdicts[column].notna(), "")
    superseded = verdicts[verdicts.superseded != ""]
    verdicts = verdicts[verdicts.superseded == ""]
    at_own_scale = ~verdicts.treatment.str.contains("@", regex=False)  # the scaled arms are in the trend table
    if runs.empty:
        raise SystemExit(
            f"error: {results_dir}/runs.csv has no runs of the tiers {', '.join(tiers)}; nothing to report"
        )
    names = sorted(set(runs.experiment), key=lambda n: (load_spec(n).id, n))
    specs = {name: load_spec(name) for name in names}
    font = cjk_font()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cjk_font": font or "",
            "summary": summary_rows(verdicts[at_own_scale], specs),
            "counts": {
                "tests": int(verdicts.p_value.notna().sum()),
                "not_decided": int((verdicts.verdict == "not decided").sum()),
                "changed_by_fdr": int((verdicts.verdict != verdicts.verdict_adjusted).sum()),
            },
            "plateau_margin": f"{PLATEAU_MARGIN:.0%}",
            "trends": trend_rows(trends),
            "amendments": amendment_rows(specs),
            "superseded": summary_rows(superseded, specs),
            "experiments": [
                experiment_section(specs[n], runs[runs.experiment == n], verdicts[at_own_scale], curves, work)
                for n in names
            ],
            "environment": environment(runs),
            "commands": [
                "make results                      # results/*.csv from the MLflow store",
                "make report                       # this PDF from results/",
            ]
            + [
                f"make experiment name={n} tier={t} data={c}"
                + (" data.path=/path/to/input.txt" if c == "tinyshakespeare" else "")
                for n, t, c in sorted(set(zip(runs.experiment, runs.tier, runs.corpus, strict=True)))
            ],
        }
        (work / "report.json").write_text(json.dumps(data, ensure_ascii=False, indent=1))
        shutil.copy(TEMPLATE, work / "report.typ")
        out.parent.mkdir(parents=True, exist_ok=True)
        pdf = typst.compile(str(work / "report.typ"), root=str(work), font_paths=list(CJK_FONT_DIRS))
        tmp_out = out.with_suffix(".pdf.tmp")
        tmp_out.write_bytes(pdf)
        tmp_out.replace(out)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=tracking.ROOT / "results")
    parser.add_argument("--out", type=Path, default=tracking.ROOT / "reports" / "evidence-report.pdf")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the PDF as an MLflow artifact")
    parser.add_argument(
        "--tiers", nargs="+", default=["quick", "full"], help="the tiers to report (default: quick full)"
    )
    args = parser.parse_args()
    if not cjk_font():
        print(
            "note: no CJK font found (Debian/Ubuntu: apt-get install fonts-noto-cjk); the Chinese quotes are left out"
        )
    pdf = build(args.results, args.out, tuple(args.tiers))
    print(f"wrote {pdf}")
    if not args.no_mlflow:
        print(f"logged to MLflow run {log_to_mlflow(pdf, args.results)}")


if __name__ == "__main__":
    main()
