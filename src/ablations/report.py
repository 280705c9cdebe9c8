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
from ablations.experiment import ExperimentSpec, figure_from_spec, load_spec  # noqa: E402
from ablations.figures import FIGURE_DPI, arm_comparison_figure  # noqa: E402
from ablations.quantization import TAIL_QUANTILES  # noqa: E402

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


def verdict_sentence(v: pd.Series, h, spec: ExperimentSpec) -> str:
    effect = f"{fmt(v.effect)} [{fmt(v.ci_low)}, {fmt(v.ci_high)}]"
    rule = {
        "lower": f"{v.treatment} lower than {v.control} by at least {v.min_effect:g}",
        "higher": f"{v.treatment} higher than {v.control} by at least {v.min_effect:g}",
        "equal": f"{v.treatment} within ±{v.min_effect:g} of {v.control}",
    }[v.direction]
    text = (
        f"{h.id} ({v.metric}, {rule}): effect {effect} over {v.n_seeds} seeds "
        f"({v.control} {v.control_mean:.4g}, {v.treatment} {v.treatment_mean:.4g}). "
    )
    where = "inside the margin" if v.direction == "equal" else "above the minimum effect"
    outside = "outside the margin" if v.direction == "equal" else "below the minimum effect"
    if v.verdict == "supported":
        text += f"The whole interval lies {where}: supported."
    elif v.verdict == "refuted":
        text += f"The whole interval lies {outside}: refuted."
        if h.from_document:
            text += f" The document's claim ({h.source}) is false in this setting."
    else:
        if v.n_seeds < 2:
            settle = "at least 3 seeds per arm (one seed gives no interval)"
        elif pd.notna(v.seeds_to_settle):
            settle = f"about {int(v.seeds_to_settle)} seeds per arm"
        else:
            settle = "no affordable number of seeds (the mean sits at the threshold; more than 1000 per arm)"
        edge = "an edge of the margin" if v.direction == "equal" else "the minimum effect"
        text += f"The interval contains {edge}: inconclusive; {settle} would likely settle it."
    return text


def meaning(spec: ExperimentSpec, exp_verdicts: pd.DataFrame) -> str:
    """What the verdicts say taken together: per hypothesis, across corpora, against the literature."""
    sentences = []
    for h in spec.hypotheses:
        rows = exp_verdicts[exp_verdicts.hypothesis == h.id]
        if rows.empty:
            continue
        by_corpus = {r.corpus: r.verdict for r in rows.itertuples()}
        if len(set(by_corpus.values())) == 1:
            verdict = next(iter(by_corpus.values()))
            where = "on every corpus" if len(by_corpus) > 1 else f"on {next(iter(by_corpus))}"
            text = f"{h.id} is {verdict} {where}"
        else:
            text = f"{h.id} depends on the corpus (" + ", ".join(f"{v} on {c}" for c, v in by_corpus.items()) + ")"
        decided = {v for v in by_corpus.values() if v != "inconclusive"}
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


def curves_figure(curves: pd.DataFrame, arms: list[str], title: str, path: Path) -> Path:
    """Validation and training loss per step: the arm mean, and a band from the lowest to the highest seed."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    for ax, metric in zip(axes, ("val_loss", "train_loss"), strict=True):
        frame = curves[curves.metric == metric]
        sns.lineplot(
            frame, x="step", y="value", hue="arm", hue_order=arms, errorbar=("pi", 100), ax=ax, legend=ax is axes[1]
        )
        # The first tenth of training is a steep drop that would flatten everything after it.
        later = frame[frame.step >= frame.step.max() * 0.1].value
        ax.set(title=f"{metric} ({title})", ylabel=metric, ylim=(later.min() * 0.98, later.max() * 1.02))
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
    colours = {"supported": "tab:green", "refuted": "tab:red", "inconclusive": "tab:orange"}
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
        ax.axvline(rows.min_effect.iloc[0], color="black", linewidth=1.5, label="minimum effect")
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yticks(range(len(rows)), [f"{v.corpus} ({v.tier})" for v in rows.itertuples()])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(f"{hypothesis}: {rows.metric.iloc[0]} ({rows.direction.iloc[0]}), effect and 95% CI", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("effect (positive = as the hypothesis predicts)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


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
                    "diverged": int((arm_runs.status == "diverged").sum()),
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
                ).name,
                "caption": f"{primary} per seed (dots) and arm mean with a bootstrap 95% interval; "
                f"{corpus}, {tier} tier.",
            }
        )
        run_curves = curves[(curves.experiment == spec.name) & (curves.tier == tier) & (curves.corpus == corpus)]
        if not run_curves[run_curves.metric.isin(["val_loss", "train_loss"])].empty:
            figures.append(
                {
                    "path": curves_figure(
                        run_curves, list(spec.arms_for(tier)), f"{corpus}, {tier}", work / f"{tag}-curves.png"
                    ).name,
                    "caption": "Loss per step: arm mean and the band from the lowest to the highest seed "
                    "(validation on a fixed subset of windows).",
                }
            )
        as_runs = [
            (
                r["arm"],
                r["seed"],
                r["status"],
                {k: v for k, v in r.items() if isinstance(v, float) and math.isfinite(v)},
            )
            for r in group.to_dict("records")
        ]
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
                "verdict": v.verdict,
                "text": verdict_sentence(pd.Series(v._asdict()), hypotheses[v.hypothesis], spec),
            }
        )
    if not exp_verdicts.empty:
        figures.append(
            {
                "path": effects_figure(exp_verdicts, f"{spec.id}: effects", work / f"{spec.name}-effects.png").name,
                "caption": "Effect of each hypothesis with its paired-t 95% CI (colour = verdict) "
                "and the minimum effect.",
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
        agrees = (
            "—"
            if v.verdict == "inconclusive" or not h.literature_expects
            else ("yes" if v.verdict == h.literature_expects else "no")
        )
        rows.append(
            {
                "experiment": f"{v.experiment_id} {v.experiment}",
                "hypothesis": f"{v.hypothesis}: {h.statement}",
                "corpus": v.corpus,
                "tier": v.tier,
                "seeds": int(v.n_seeds),
                "effect": f"{fmt(v.effect)} [{fmt(v.ci_low)}, {fmt(v.ci_high)}]",
                "min_effect": f"{v.min_effect:g}",
                "verdict": v.verdict,
                "literature": agrees,
            }
        )
    return rows


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
    runs, verdicts, curves = (pd.read_csv(results_dir / f"{name}.csv") for name in ("runs", "verdicts", "curves"))
    runs, verdicts, curves = (frame[frame.tier.isin(tiers)] for frame in (runs, verdicts, curves))
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
            "summary": summary_rows(verdicts, specs),
            "experiments": [
                experiment_section(specs[n], runs[runs.experiment == n], verdicts, curves, work) for n in names
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
    for name in ("runs.csv", "verdicts.csv"):
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
