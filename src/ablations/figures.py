"""Figures that carry the evidence; used for MLflow artifacts and for the report.

Every figure of the project is drawn here, from plain values and data frames; nothing here trains, tracks or
assembles a report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats  # noqa: E402

from ablations.health import reference_lines  # noqa: E402
from ablations.metrics import value_of  # noqa: E402

if TYPE_CHECKING:
    from ablations.spec import ExperimentSpec

FIGURE_DPI = 100  # sharp enough at the report's figure widths, and quick to draw


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% t interval of the mean over seeds, as the tables give it (a bootstrap interval over 3 to 5 seeds is
    little more than their range)."""
    values = [v for v in values if math.isfinite(v)]
    mean = sum(values) / len(values)
    if len(values) < 2 or len(set(values)) == 1:  # no spread (a count, a fixed size): a point, not a NaN interval
        return mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return float(low), float(high)


def draw_reference_lines(ax: plt.Axes, lines: dict[str, float] | None) -> None:
    """Horizontal reference lines (e.g. a corpus's unigram baseline). A line far above or below the data would
    squash it flat, so such a line is named in a corner note instead of drawn."""
    low, high = ax.get_ylim()
    margin = 0.5 * (high - low)
    off_plot = []
    for name, value in (lines or {}).items():
        if low - margin <= value <= high + margin:
            ax.axhline(value, color="black", linestyle="--", linewidth=0.9, label=name)
            low, high = min(low, value), max(high, value)
        else:
            off_plot.append(f"{name} {value:.3g}")
    ax.set_ylim(low - 0.02 * (high - low), high + 0.02 * (high - low))
    if off_plot:
        note = ", ".join(off_plot) + (" (off the plot)")
        ax.annotate(note, (0.01, 0.99), xycoords="axes fraction", va="top", fontsize=7, color="dimgrey")


def arm_comparison_figure(
    title: str, metric: str, values: list[tuple[str, int, float]], path: Path, lines: dict[str, float] | None = None
) -> Path:
    """Every seed as a dot, and the arm mean with its 95% t interval; arms in the order given; `lines`: named
    reference values (draw_reference_lines)."""
    frame = pd.DataFrame(values, columns=["arm", "seed", metric])
    order = list(dict.fromkeys(frame.arm))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.7 * len(order)) + 1.0, 3.5), layout="constrained")  # + the legend
    sns.pointplot(
        frame,
        x="arm",
        y=metric,
        order=order,
        errorbar=t_interval,
        estimator="mean",
        color="black",
        linestyle="none",
        capsize=0.15,
        ax=ax,
    )
    sns.stripplot(frame, x="arm", y=metric, order=order, hue="seed", palette="deep", size=6, alpha=0.7, ax=ax)
    draw_reference_lines(ax, lines)
    ax.set_title(title)
    ax.legend(title="seed", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside
    if len(order) > 4:  # slanted names end under their own arm
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def grid_figure(
    title: str,
    y: str,
    x_axis: str,
    x_order: list[str],
    hue_axes: list[str],
    values: list[tuple[dict[str, str], int, float]],
    path: Path,
    lines: dict[str, float] | None = None,
) -> Path:
    """A metric against one axis of an experiment's grid, one line per combination of the hue axes.

    values: (grid labels of the arm, seed, value). Points are means over seeds with their 95% t intervals.
    lines: named reference values (draw_reference_lines).
    """
    frame = pd.DataFrame(
        [
            {x_axis: axes[x_axis], "arm group": ", ".join(axes[h] for h in hue_axes) or "all", "seed": seed, y: value}
            for axes, seed, value in values
        ]
    )
    fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
    dodge = 0.25 if frame["arm group"].nunique() > 1 else False  # seaborn divides by (hue levels - 1)
    sns.pointplot(
        frame, x=x_axis, y=y, order=x_order, hue="arm group", errorbar=t_interval, dodge=dodge, capsize=0.1, ax=ax
    )
    draw_reference_lines(ax, lines)
    ax.set_title(title)
    ax.legend(title=", ".join(hue_axes), fontsize=8, title_fontsize=8)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def scatter_figure(title: str, x: str, y: str, points: list[tuple[str, int, float, float]], path: Path) -> Path:
    """Two metrics against each other: every seed as a faint dot, each arm's mean as a labelled marker."""
    frame = pd.DataFrame(points, columns=["arm", "seed", x, y])
    order = list(dict.fromkeys(frame.arm))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    sns.scatterplot(frame, x=x, y=y, hue="arm", hue_order=order, alpha=0.35, legend=False, ax=ax)
    means = frame.groupby("arm", sort=False)[[x, y]].mean().loc[order]
    sns.scatterplot(means.reset_index(), x=x, y=y, hue="arm", hue_order=order, s=90, marker="D", ax=ax)
    for arm, row in means.iterrows():
        ax.annotate(arm, (row[x], row[y]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_title(title)
    ax.legend(title="arm (mean)", fontsize=8, title_fontsize=8)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def figure_from_spec(
    spec: ExperimentSpec, figure: dict[str, Any], runs: Sequence[tuple[str, int, str, Mapping[str, float]]], path: Path
) -> Path | None:
    """Draw one of the experiment file's `figures` from (arm, seed, status, metrics) of its runs; None when no run
    has the values it plots."""
    if figure.get("kind") == "scatter":
        points = [
            (arm, seed, metrics[figure["x"]], metrics[figure["y"]])
            for arm, seed, status, metrics in runs
            if status == "finished" and figure["x"] in metrics and figure["y"] in metrics
        ]
        title = figure.get("title", f"{spec.id}: {figure['y']} against {figure['x']}")
        return scatter_figure(title, figure["x"], figure["y"], points, path) if points else None
    values = [
        (spec.axes_of(arm), seed, value_of(status, metrics, figure["y"]))
        for arm, seed, status, metrics in runs
        if spec.axes_of(arm) and (figure["y"] in metrics or status == "diverged")
    ]
    if not values:
        return None
    return grid_figure(
        figure.get("title", f"{spec.id}: {figure['y']}"),
        figure["y"],
        figure["x"],
        list(spec.grid[figure["x"]]),
        figure.get("hue", []),
        values,
        path,
        reference_lines(figure["y"], [metrics for _, _, _, metrics in runs]),
    )


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


def tails_figure(curves: pd.DataFrame, quantiles: Sequence[float], title: str, path: Path) -> Path:
    """|x| / std at the quantiles the curves' steps index (the last one: the maximum) for weights and activations
    (one line per seed) and for a Gaussian."""
    gaussian = [float(stats.norm.ppf(0.5 + q / 2)) for q in quantiles[:-1]]
    labels = [f"{100 * q:g}%" for q in quantiles[:-1]] + ["max"]
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


VERDICT_COLOURS = {"supported": "tab:green", "refuted": "tab:red", "inconclusive": "tab:orange", "not decided": "grey"}


def effects_figure(verdicts: pd.DataFrame, title: str, path: Path) -> Path:
    """One panel per hypothesis (each in its metric's units): effect and 95% CI per corpus, and the minimum effect."""
    colours = VERDICT_COLOURS
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
            waiting = v.awaiting != ""  # hollow: decided on runs of an older design, or on missing seeds
            ax.plot(v.effect, i, "o", color=colours[v.verdict], fillstyle="none" if waiting else "full")
        threshold = -rows.min_effect.iloc[0] if rows.test.iloc[0] == "non_inferiority" else rows.min_effect.iloc[0]
        ax.axvline(threshold, color="black", linewidth=1.5)
        if rows.test.iloc[0] == "equivalence":
            ax.axvline(-threshold, color="black", linewidth=1.5)
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # readable tick labels at small effects
        ax.set_yticks(range(len(rows)), [f"{v.corpus} ({v.tier}{', awaiting runs' * (v.awaiting != '')})"
                                         for v in rows.itertuples()])  # fmt: skip
        ax.set_ylim(len(rows) - 0.5, -0.5)
        level = rows.ci_level.iloc[0]
        shown = "exact value" if pd.isna(level) else f"effect and {level:.0%} CI"  # a fact has no interval
        ax.set_title(f"{hypothesis} ({rows.test.iloc[0]}): {rows.metric.iloc[0]} ({rows.direction.iloc[0]}), {shown}",
                     fontsize=9)  # fmt: skip
    present = [v for v in colours if v in set(verdicts.verdict)]
    handles = [Line2D([], [], color="black", linewidth=1.5, label="margin of the test")]
    handles += [Line2D([], [], color=colours[v], linewidth=3, marker="o", label=v) for v in present]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=len(handles))  # never over the data
    axes[-1, 0].set_xlabel("effect (+ = as predicted; equivalence: treatment − control)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def literature_figure(rows: pd.DataFrame, title: str, path: Path) -> Path:
    """Our effect with its interval beside the published effect of the same comparison, one row per hypothesis and
    corpus, in two panels: each in its own units (a byte-level loss and a paper's word-piece PPL do not share a
    scale), so what compares is the sign and the order of the rows."""
    colours = VERDICT_COLOURS
    labels = [f"{r.hypothesis} {r.corpus}{' (awaiting runs)' * (r.awaiting != '')}" for r in rows.itertuples()]
    fig, (ours, paper) = plt.subplots(1, 2, sharey=True, figsize=(7.5, 0.9 + 0.32 * len(rows)), layout="constrained")
    for i, r in enumerate(rows.itertuples()):
        low, high = (r.ci_low, r.ci_high) if math.isfinite(r.ci_low) else (r.effect, r.effect)
        ours.plot([low, high], [i, i], color=colours[r.verdict], linewidth=3, solid_capstyle="butt")
        ours.plot(r.effect, i, "o", color=colours[r.verdict])
        paper.plot(r.literature_effect, i, "*", color="black", markersize=9)
    for ax, label in ((ours, f"this suite: {rows.metric.iloc[0]} effect, 95% CI"),
                      (paper, f"published: {rows.literature_units.iloc[0]}")):  # fmt: skip
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(label, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ours.set_yticks(range(len(rows)), labels, fontsize=7)
    ours.set_ylim(len(rows) - 0.5, -0.5)
    present = [v for v in colours if v in set(rows.verdict)]
    handles = [Line2D([], [], color=colours[v], linewidth=3, marker="o", label=v) for v in present]
    handles += [Line2D([], [], color="black", linestyle="none", marker="*", markersize=9, label="published")]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=len(handles))
    fig.suptitle(f"{title} (+ = as the hypothesis predicts)", fontsize=10)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


TEST_MARKERS = {"superiority": "o", "non_inferiority": "s", "equivalence": "D"}


def margins_figure(verdicts: pd.DataFrame, path: Path) -> Path:
    """Every measured hypothesis at a glance: its effect and interval in units of its own minimum effect, so that
    one axis holds them all: superiority is decided against +1, non-inferiority against -1, equivalence against
    the band (-1, 1). Colour: the adjusted verdict; marker: the test."""
    rows = verdicts[verdicts.test.isin(list(TEST_MARKERS)) & verdicts.ci_low.notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.2, 0.9 + 0.17 * len(rows)), layout="constrained")
    for i, v in enumerate(rows.itertuples()):
        colour = VERDICT_COLOURS[v.verdict_adjusted]
        ax.plot([v.ci_low / v.min_effect, v.ci_high / v.min_effect], [i, i], color=colour, linewidth=2.5)
        ax.plot(v.effect / v.min_effect, i, TEST_MARKERS[v.test], color=colour, markersize=4)
    for x, style in ((-1, "-"), (0, ":"), (1, "-")):
        ax.axvline(x, color="black" if x else "grey", linewidth=1 if x else 0.8, linestyle=style)
    labels = [f"{v.experiment_id} {v.hypothesis} · {v.corpus} · {v.tier}" for v in rows.itertuples()]
    ax.set_yticks(range(len(rows)), labels, fontsize=6.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xscale("symlog", linthresh=3)  # most intervals lie within a few margins; a few lie far out
    ticks = [t for t in (-100, -30, -10, -3, -1, 0, 1, 3, 10, 30, 100) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks, [f"{t:+d}" if t else "0" for t in ticks], fontsize=7)
    ax.set_xlabel("effect / minimum effect (+ = as the hypothesis predicts)", fontsize=8)
    handles = [
        Line2D([], [], color=c, linewidth=2.5, label=v)
        for v, c in VERDICT_COLOURS.items()
        if v in set(rows.verdict_adjusted)
    ]
    handles += [
        Line2D([], [], color="black", marker=m, linestyle="", label=t.replace("_", "-"))
        for t, m in TEST_MARKERS.items()
        if t in set(rows.test)
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=len(handles))
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path
