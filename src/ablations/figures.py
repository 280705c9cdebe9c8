"""Figures that carry the evidence; used for MLflow artifacts and for the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

FIGURE_DPI = 100  # sharp enough at the report's figure widths, and quick to draw


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
    """Every seed as a dot, and the arm mean with a bootstrap 95% interval; arms in the order given; `lines`: named
    reference values (draw_reference_lines)."""
    frame = pd.DataFrame(values, columns=["arm", "seed", metric])
    order = list(dict.fromkeys(frame.arm))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.7 * len(order)), 3.5), layout="constrained")
    sns.pointplot(
        frame,
        x="arm",
        y=metric,
        order=order,
        errorbar=("ci", 95),
        estimator="mean",
        color="black",
        linestyle="none",
        capsize=0.15,
        ax=ax,
    )
    sns.stripplot(frame, x="arm", y=metric, order=order, hue="seed", palette="deep", size=6, alpha=0.7, ax=ax)
    draw_reference_lines(ax, lines)
    ax.set_title(title)
    ax.legend(title="seed", fontsize=8, title_fontsize=8)
    if len(order) > 4:
        ax.tick_params(axis="x", labelrotation=35)
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

    values: (grid labels of the arm, seed, value). Points are means over seeds with a bootstrap 95% band.
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
        frame, x=x_axis, y=y, order=x_order, hue="arm group", errorbar=("ci", 95), dodge=dodge, capsize=0.1, ax=ax
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
