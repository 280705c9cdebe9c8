"""Figures that carry the evidence; used for MLflow artifacts and for the report.

Every figure of the project is drawn here, from plain values and data frames; nothing here trains, tracks or
assembles a report.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
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


def draw_reference_lines(ax: plt.Axes, lines: dict[str, float] | None, axis: str = "y") -> list[Line2D]:
    """Reference lines across the plot at values of `axis` (e.g. a corpus's unigram baseline; dotted: a bigram
    baseline). A line far beyond the data would squash it flat, so such a line is named in the legend, "(off the
    plot)", instead: a note in the axes' corner was struck through by the lines drawn there. Returns the legend
    entries of the lines and notes (a legend made afterwards from the axes' labels shows them too)."""
    get_limits, set_limits, line_at = (
        (ax.get_ylim, ax.set_ylim, ax.axhline) if axis == "y" else (ax.get_xlim, ax.set_xlim, ax.axvline)
    )
    low, high = get_limits()
    margin = 0.5 * (high - low)
    entries = []
    for name, value in (lines or {}).items():
        if low - margin <= value <= high + margin:
            style = ":" if "bigram" in name else "--"
            entries.append(line_at(value, color="black", linestyle=style, linewidth=0.9, label=name))
            low, high = min(low, value), max(high, value)
        else:  # an empty line: a legend entry with a blank handle
            entries += ax.plot([], [], linestyle="none", label=f"{name} {value:.3g} (off the plot)")
    set_limits(low - 0.02 * (high - low), high + 0.02 * (high - low))
    return entries


def fit_titles(fig: plt.Figure) -> None:
    """Wrap each axes title and x label that would run past the figure's edge (a long hypothesis title was cut off
    there) at word boundaries, narrow enough to fit centred where it stands; the layout then makes room for its
    lines."""
    titles = [text for ax in fig.axes for text in (ax.title, ax.xaxis.label) if text.get_text()]
    width_pt = fig.get_figwidth() * 72
    if all(len(t.get_text()) * 0.6 * t.get_fontsize() < 0.5 * width_pt for t in titles):
        return  # short titles always fit: spare the layout pass
    fig.draw_without_rendering()  # the constrained layout: the titles' final places
    renderer = fig.canvas.get_renderer()
    for title in titles:
        box = title.get_window_extent(renderer)
        centre = (box.x0 + box.x1) / 2
        room = 2 * min(centre - fig.bbox.x0, fig.bbox.x1 - centre)
        if box.width > 0.98 * room:
            text = title.get_text()
            title.set_text(textwrap.fill(text, max(12, int(0.92 * len(text) * room / box.width))))


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Every figure ends here: titles fitted to the figure, written, closed."""
    fit_titles(fig)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


MAX_ARMS_ACROSS = 12  # an arms figure with more arms lists them down the page


def arm_comparison_figure(
    title: str, metric: str, values: list[tuple[str, int, float]], path: Path, lines: dict[str, float] | None = None
) -> Path:
    """Every seed as a dot, and the arm mean with its 95% t interval; arms in the order given; `lines`: named
    reference values (draw_reference_lines)."""
    frame = pd.DataFrame(values, columns=["arm", "seed", metric])
    order = list(dict.fromkeys(frame.arm))
    # Many arms side by side would make a strip too wide for the page, shrunk to illegible: then they go down the page.
    across = len(order) <= MAX_ARMS_ACROSS
    arm_axis, value_axis = ("x", "y") if across else ("y", "x")
    size = (max(5.5, 0.7 * len(order)) + 1.0, 3.5) if across else (7.5, 0.3 * len(order) + 1.2)  # + the legend
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    placed = {arm_axis: "arm", value_axis: metric, "order": order}
    sns.pointplot(frame, **placed, errorbar=t_interval, estimator="mean", color="black", linestyle="none",
                  capsize=0.15, ax=ax)  # fmt: skip
    sns.stripplot(frame, **placed, hue="seed", palette="deep", size=6, alpha=0.7, ax=ax)
    draw_reference_lines(ax, lines, value_axis)
    ax.set_title(title)
    ax.legend(title="seed", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside
    if across and (len(order) > 4 or max(map(len, order)) > 14):  # slanted names end under their own arm
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def scatter_figure(
    title: str, x: str, y: str, points: list[tuple[str, int, float, float]], path: Path, log: bool = False
) -> Path:
    """Two metrics against each other: every seed as a faint dot, each arm's mean as a labelled marker; with `log`,
    on log-log axes, where a power law is a straight line."""
    frame = pd.DataFrame(points, columns=["arm", "seed", x, y])
    order = list(dict.fromkeys(frame.arm))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    sns.scatterplot(frame, x=x, y=y, hue="arm", hue_order=order, alpha=0.35, legend=False, ax=ax)
    means = frame.groupby("arm", sort=False)[[x, y]].mean().loc[order]
    sns.scatterplot(means.reset_index(), x=x, y=y, hue="arm", hue_order=order, s=90, marker="D", ax=ax)
    for arm, row in means.iterrows():
        ax.annotate(arm, (row[x], row[y]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if log:  # a loss spans less than a decade: plain numbers, not 2 x 10^0
        ax.set(xscale="log", yscale="log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_title(title)
    # every arm is labelled beside its marker; the legend goes outside, where it covers no point
    ax.legend(title="arm (mean)", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path)


def lines_figure(title: str, points: list[tuple[str, int, str, float, float]], x_label: str, path: Path,
                 log10: bool = False) -> Path:  # fmt: skip
    """Values against x, a panel per panel name, a line per arm (the mean over seeds, or of log10 with `log10`,
    and its 95% t band). points: (arm, seed, panel, x, value); a lone panel's name labels its y axis."""
    frame = pd.DataFrame(points, columns=["arm", "seed", "panel", "x", "value"])
    y = "log10 of the value" if log10 else "value"
    frame[y] = np.log10(frame["value"]) if log10 else frame["value"]
    panels = list(dict.fromkeys(frame.panel))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 1.6, 3.8), layout="constrained", squeeze=False
    )
    for ax, panel in zip(axes[0], panels, strict=True):
        sns.lineplot(frame[frame.panel == panel], x="x", y=y, hue="arm", errorbar=t_interval, marker="o",
                     markersize=4, ax=ax, legend=ax is axes[0][-1])  # fmt: skip
        if len(panels) > 1:
            ax.set_title(panel, fontsize=9)
        else:
            ax.set_ylabel(f"log10 of {panel}" if log10 else panel)
        ax.set_xlabel(x_label)
        xs = sorted(frame.x.unique())
        if len(xs) <= 12:  # every x a tick (the evaluation lengths, a shallow stack's blocks)
            ax.set_xticks(xs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][-1].legend(title="arm", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title)
    return save_figure(fig, path)


def layer_points(
    prefixes: Sequence[str], runs: Sequence[tuple[str, int, str, Mapping[str, float]]]
) -> list[tuple[str, int, str, float, float]]:
    """(arm, seed, prefix, block from 1, value) of every finished run's `prefix0`, `prefix1`, ... while they last."""
    points = []
    for arm, seed, status, metrics in runs:
        for prefix in prefixes if status == "finished" else ():
            block = 0
            while math.isfinite(metrics.get(f"{prefix}{block}", math.nan)) and metrics[f"{prefix}{block}"] > 0:
                points.append((arm, seed, prefix, block + 1, metrics[f"{prefix}{block}"]))
                block += 1
    return points


def series_points(
    figure: Mapping[str, Any], runs: Sequence[tuple[str, int, str, Mapping[str, float]]]
) -> list[tuple[str, int, str, float, float]]:
    """(arm, seed, the y label, x, value) for each of a series figure's metrics a finished run has, at its x; of
    the figure's `arms` only, when it names them."""
    pairs = list(zip(figure["metrics"], figure["x_values"], strict=True))
    return [
        (arm, seed, figure.get("y_label", "value"), x, metrics[metric])
        for arm, seed, status, metrics in runs
        for metric, x in pairs
        if status == "finished" and math.isfinite(metrics.get(metric, math.nan)) and arm in figure.get("arms", [arm])
    ]


def figure_from_spec(
    spec: ExperimentSpec, figure: dict[str, Any], runs: Sequence[tuple[str, int, str, Mapping[str, float]]], path: Path
) -> Path | None:
    """Draw one of the experiment file's `figures` from (arm, seed, status, metrics) of its runs; None when no run
    has the values it plots."""
    if figure.get("kind") == "layers":
        title = figure.get("title", f"{spec.id}: {', '.join(figure['metrics'])} by block")
        points = layer_points(figure["metrics"], runs)
        return lines_figure(title, points, "block (1 = next to the embeddings)", path, log10=True) if points else None
    if figure.get("kind") == "series":
        title = figure.get("title", f"{spec.id}: {', '.join(figure['metrics'])}")
        points = series_points(figure, runs)
        return lines_figure(title, points, figure["x"], path) if points else None
    if figure.get("kind") == "scatter":
        points = [
            (arm, seed, metrics[figure["x"]], metrics[figure["y"]])
            for arm, seed, status, metrics in runs
            if status == "finished" and figure["x"] in metrics and figure["y"] in metrics
        ]
        title = figure.get("title", f"{spec.id}: {figure['y']} against {figure['x']}")
        if not points:
            return None
        return scatter_figure(title, figure["x"], figure["y"], points, path, log=figure.get("log", False))
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


CURVE_METRICS = ("val_loss", "train_loss")
DOMAIN_CURVE_METRIC = "domain_val_loss"  # a second corpus's validation loss (two-stage experiments): its own panel
# The corpus's baselines are values of the validation loss: a training objective (label smoothing's, say) can sit
# on the plateau line while the model learns, so only these panels draw them.
BASELINE_METRICS = ("val_loss", "final_val_loss")


def padded(low: float, high: float, share: float = 0.04) -> tuple[float, float]:
    """Limits a share of the span beyond low and high (a span of 0, one value, gets a share of the value)."""
    span = high - low if high > low else abs(high) or 1.0
    return low - share * span, high + share * span


def curve_limits(frame: pd.DataFrame) -> tuple[float, float]:
    """The y range of a loss panel. Each run's first tenth of training is a steep drop that would flatten everything
    after it, so it is left out (each run's own tenth: a short fine-tune's best point, E24's at step 50 of 500,
    stays in); each run's last value is always inside. The top is the 99th percentile: a lone spike (E04's train
    loss of 12 among values near 2) leaves the panel rather than flatten every curve (the caption says so)."""
    later = frame[frame.step >= 0.1 * frame.groupby(["arm", "seed"]).step.transform("max")].value
    last = frame.sort_values("step").groupby(["arm", "seed"]).value.last()
    return padded(min(later.min(), last.min()), max(later.quantile(0.99), last.max()))


def curve_panel(ax: plt.Axes, frame: pd.DataFrame, metric: str, order: list[str], palette: dict) -> None:
    """One metric's curves: the arm mean and a band from the lowest to the highest seed. Aggregated once with pandas:
    seaborn's lineplot computed the same interval one (arm, step) group at a time, a third of the report's time."""
    if frame.empty:
        ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="dimgrey")
        return
    spread = frame.groupby(["arm", "step"]).value.agg(["mean", "min", "max"]).reset_index()
    # A line needs two steps: evaluations, and any arm with few steps, are drawn as points too (an arm evaluated
    # once was an empty panel); a band one step wide is invisible, so such arms get bars.
    fewest = spread.groupby("arm").step.nunique().min()
    marker = "o" if metric.endswith("val_loss") or fewest < 3 else None
    for arm in [a for a in order if a in set(spread.arm)]:
        rows, colour = spread[spread.arm == arm], palette[arm]
        ax.plot(rows.step, rows["mean"], color=colour, marker=marker, markersize=3, markeredgewidth=0, label=arm)
        if fewest < 2:
            ax.vlines(rows.step, rows["min"], rows["max"], color=colour)
        else:
            ax.fill_between(rows.step, rows["min"], rows["max"], color=colour, alpha=0.2, linewidth=0)
    ax.set(xlabel="step")
    ax.set_ylim(*curve_limits(frame))


def curves_figure(
    curves: pd.DataFrame, arms: list[str], title: str, path: Path, baselines: dict[str, float] | None = None
) -> Path:
    """Validation and training loss per step, and the domain corpus's validation loss where it was logged: the arm
    mean and a band from the lowest to the highest seed; on the validation panel only, the corpus's unigram and
    bigram baselines (validation split) with the plateau line 10 % below unigram (`baselines`, as
    draw_reference_lines draws them). Arms without values are left out, legend included."""
    shown = [*CURVE_METRICS, *([DOMAIN_CURVE_METRIC] if DOMAIN_CURVE_METRIC in set(curves.metric) else [])]
    # Only the arms asked for: the others' values (an experiment's scaled arms) set limits for lines never drawn.
    curves = curves[curves.metric.isin(shown) & curves.arm.isin(arms)]
    present = [arm for arm in arms if arm in set(curves.arm)]
    # seaborn's colour cycle over all arms, so that an arm keeps its colour from figure to figure; beyond the cycle,
    # husl over the arms drawn, so that no two share a colour (over E25's 22 arms, its 8 curves took one olive)
    coloured = arms if len(arms) <= len(sns.color_palette()) else present
    colours = sns.color_palette(None if len(coloured) <= len(sns.color_palette()) else "husl", len(coloured))
    palette = dict(zip(coloured, colours, strict=True))
    # At most two panels a row: three in a row, shrunk to the page's width, printed their labels at ~4 pt.
    columns, rows = min(2, len(shown)), math.ceil(len(shown) / 2)
    fig, grid = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), layout="constrained", sharex=True,
                             squeeze=False)  # fmt: skip
    axes, spare = grid.flat[: len(shown)], grid.flat[len(shown) :]
    entries = []
    for ax, metric in zip(axes, shown, strict=True):  # one step axis for every panel
        ax.set(title=f"{metric} ({title})", ylabel=metric)
        ax.tick_params(labelbottom=True)  # sharex hides them above another row, and nothing is below the legend
        curve_panel(ax, curves[curves.metric == metric], metric, present, palette)
        if metric in BASELINE_METRICS and not curves[curves.metric == metric].empty:
            entries += draw_reference_lines(ax, baselines)
    handles = [Line2D([], [], color=palette[arm], label=arm) for arm in present]
    legend = {"handles": handles + entries, "title": "arm", "fontsize": 7, "title_fontsize": 8}
    if len(spare):  # the grid's empty cell holds the legend
        spare[0].axis("off")
        spare[0].legend(**legend, loc="upper left", ncols=1 + len(handles) // 12)
    else:  # below the panels, which keep the page's width
        fig.legend(**legend, loc="outside lower center", ncols=min(4, len(legend["handles"])))
    return save_figure(fig, path)


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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def length_scaling_figure(points: pd.DataFrame, exponents: pd.DataFrame, title: str, path: Path) -> Path:
    """Cost against sequence length on log-log axes, one panel per unit (`points`: unit, cost, seed, n, value):
    every seed as a faint dot, the geometric mean over seeds as a dot, and over each shaded range of lengths the line
    of the mean fitted exponent (`exponents`: unit, cost, seed, k, fit_low, fit_high: the logged exponents the
    hypotheses test), its 95% t interval over seeds in the legend; grey guides of slope 1 and 2."""
    units = list(dict.fromkeys(points.unit))
    fig, axes = plt.subplots(1, len(units), figsize=(5.4 * len(units), 4.4), layout="constrained", squeeze=False)
    for ax, unit in zip(axes[0], units, strict=True):
        frame, fits = points[points.unit == unit], exponents[exponents.unit == unit]
        lengths = sorted(frame.n.unique())
        ranges = sorted(set(zip(fits.fit_low, fits.fit_high, strict=True)))
        for i, (low_n, high_n) in enumerate(ranges):  # alternate greys, so that ranges that meet stay apart
            ax.axvspan(low_n, high_n, color=("0.95", "0.88")[i % 2], zorder=0)
        groups = frame.groupby("cost", sort=False)
        for colour, (cost, rows) in zip(sns.color_palette(n_colors=groups.ngroups), groups, strict=True):
            ax.scatter(rows.n, rows.value, color=colour, alpha=0.3, s=12)
            means = rows.groupby("n").value.apply(lambda v: math.exp(v.map(math.log).mean()))
            ax.plot(means.index, means.values, "o", color=colour)
            for (low_n, high_n), fit in fits[fits.cost == cost].groupby(["fit_low", "fit_high"]):
                fitted = [n for n in lengths if low_n <= n <= high_n]
                k, (low, high) = fit.k.mean(), t_interval(list(fit.k))
                span = "" if low == high else f" [{low:.2f}, {high:.2f}]"
                middle = math.exp(sum(math.log(means[n]) for n in fitted) / len(fitted))
                centre = math.exp(sum(math.log(n) for n in fitted) / len(fitted))
                ax.plot(fitted, [middle * (n / centre) ** k for n in fitted], "-", color=colour,
                        label=f"{cost}, {low_n:,}-{high_n:,}: k = {k:.2f}{span}")  # fmt: skip
        anchor = frame[frame.cost == frame.cost.iloc[0]].groupby("n").value.median()
        for slope, style, law in ((1, ":", "n"), (2, "--", "n²")):
            ax.plot(lengths, [anchor[lengths[0]] * (n / lengths[0]) ** slope for n in lengths], style, color="0.45",
                    linewidth=1, label=f"∝ {law} (guide)")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=unit, title=f"{unit} ({title})")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.legend(fontsize=6.5, title="k fitted over each shaded range", title_fontsize=7)
    return save_figure(fig, path)


VERDICT_COLOURS = {"supported": "tab:green", "refuted": "tab:red", "inconclusive": "tab:orange", "not decided": "grey"}


def shown_verdicts(verdicts: pd.DataFrame) -> pd.Series:
    """The verdict a figure colours each row by: the one after the false-discovery adjustment (verdict_adjusted), as
    the summary and the badges read it; the raw verdict where no adjusted one applies (a row awaiting runs is outside
    every family) or the frame has none."""
    if "verdict_adjusted" not in verdicts:
        return verdicts.verdict
    adjusted = verdicts.verdict_adjusted
    return adjusted.where(adjusted.isin(list(VERDICT_COLOURS)), verdicts.verdict)


def verdict_legend_title(verdicts: pd.DataFrame) -> str:
    """The title of a legend of shown_verdicts's colours: which verdict they are."""
    if "verdict_adjusted" not in verdicts:
        return "verdict"
    waiting = "awaiting" in verdicts and (verdicts.awaiting.fillna("") != "").any()
    return "verdict after the false-discovery adjustment" + ("; hollow: awaiting runs, raw verdict" if waiting else "")


def effects_figure(verdicts: pd.DataFrame, title: str, path: Path) -> Path:
    """One panel per hypothesis (each in its metric's units): effect and 95% CI per corpus, and the minimum effect.
    Colour: the adjusted verdict (shown_verdicts)."""
    verdicts = verdicts[verdicts.ci_low.notna()]  # counts have no interval (a fact's is its value, a bound's the range)
    verdicts = verdicts.assign(shown=shown_verdicts(verdicts))
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
            colour = VERDICT_COLOURS[v.shown]
            ax.plot([low, high], [i, i], color=colour, linewidth=3, solid_capstyle="butt")
            waiting = v.awaiting != ""  # hollow: decided on runs of an older design, or on missing seeds
            ax.plot(v.effect, i, "o", color=colour, fillstyle="none" if waiting else "full")
        threshold = -rows.min_effect.iloc[0] if rows.test.iloc[0] == "non_inferiority" else rows.min_effect.iloc[0]
        edges = [threshold, -threshold] if rows.direction.iloc[0] == "equal" else [threshold]  # equal: within ±m
        for edge in edges:
            ax.axvline(edge, color="black", linewidth=1.5)
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        ends = [x for v in rows.itertuples() for x in (v.ci_low, v.ci_high, v.effect) if math.isfinite(x)]
        pad_limits(ax, min(*ends, *edges, 0.0), max(*ends, *edges, 0.0))  # every margin in view (E04 H3 lost −m)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # readable tick labels at small effects
        ax.set_yticks(range(len(rows)), [f"{v.corpus} ({v.tier}{', awaiting runs' * (v.awaiting != '')})"
                                         for v in rows.itertuples()])  # fmt: skip
        ax.set_ylim(len(rows) - 0.5, -0.5)
        level = rows.ci_level.iloc[0]
        no_ci = {"bound": "worst seed and range of the seeds", "fact": "exact value"}  # no confidence interval
        shown = no_ci.get(rows.test.iloc[0], "exact value" if pd.isna(level) else f"effect and {level:.0%} CI")
        ax.set_title(f"{hypothesis} ({rows.test.iloc[0]}): {rows.metric.iloc[0]} ({rows.direction.iloc[0]}), {shown}",
                     fontsize=9)  # fmt: skip
    present = [v for v in VERDICT_COLOURS if v in set(verdicts.shown)]
    handles = [Line2D([], [], color="black", linewidth=1.5, label="margin of the test")]
    handles += [Line2D([], [], color=VERDICT_COLOURS[v], linewidth=3, marker="o", label=v) for v in present]
    # below the panels: never over the data
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=len(handles),
               title=verdict_legend_title(verdicts), title_fontsize=7)  # fmt: skip
    axes[-1, 0].set_xlabel("effect (+ = as predicted; equivalence: treatment − control)")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def interval_label(levels: pd.Series) -> str:
    """The intervals a panel draws, by their levels: 90 % for an equivalence (TOST), 95 % for the other tests."""
    shown = sorted(levels.dropna().unique(), reverse=True)
    label = f", {shown[0]:.0%} CI" if shown else ""
    return label + (f" (equivalence: {shown[-1]:.0%})" if len(shown) > 1 else "")


def literature_figure(rows: pd.DataFrame, title: str, path: Path) -> Path:
    """Our effect with its interval beside the published effect of the same comparison, one row per hypothesis and
    corpus, in two panels: each in its own units (a byte-level loss and a paper's word-piece PPL do not share a
    scale), so what compares is the sign and the order of the rows. Colour: the adjusted verdict (shown_verdicts)."""
    rows = rows.assign(shown=shown_verdicts(rows))
    labels = [f"{r.hypothesis} {r.corpus}{' (awaiting runs)' * (r.awaiting != '')}" for r in rows.itertuples()]
    fig, (ours, paper) = plt.subplots(1, 2, sharey=True, figsize=(7.5, 0.9 + 0.32 * len(rows)), layout="constrained")
    for i, r in enumerate(rows.itertuples()):
        low, high = (r.ci_low, r.ci_high) if math.isfinite(r.ci_low) else (r.effect, r.effect)
        colour = VERDICT_COLOURS[r.shown]
        ours.plot([low, high], [i, i], color=colour, linewidth=3, solid_capstyle="butt")
        ours.plot(r.effect, i, "o", color=colour, fillstyle="none" if r.awaiting != "" else "full")
        paper.plot(r.literature_effect, i, "*", color="black", markersize=9)
    for ax, label in ((ours, f"this suite: {rows.metric.iloc[0]} effect{interval_label(rows.ci_level)}"),
                      (paper, f"published: {rows.literature_units.iloc[0]}")):  # fmt: skip
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(label, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ours.set_yticks(range(len(rows)), labels, fontsize=7)
    ours.set_ylim(len(rows) - 0.5, -0.5)
    present = [v for v in VERDICT_COLOURS if v in set(rows.shown)]
    handles = [Line2D([], [], color=VERDICT_COLOURS[v], linewidth=3, marker="o", label=v) for v in present]
    handles += [Line2D([], [], color="black", linestyle="none", marker="*", markersize=9, label="published")]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=len(handles),
               title=verdict_legend_title(rows), title_fontsize=7)  # fmt: skip
    fig.suptitle(f"{title} (+ = as the hypothesis predicts)", fontsize=10)
    return save_figure(fig, path)


TEST_MARKERS = {"superiority": "o", "non_inferiority": "s", "equivalence": "D"}


def equivalence_distance(effect: float, ci_low: float, ci_high: float, margin: float) -> tuple[float, float, float]:
    """An equivalence effect as the overview draws it: |effect| / margin and the range of distances its interval
    spans ((0, the farther end) when it holds 0), so that within 1 is as predicted whichever arm is higher."""
    ends = sorted((abs(ci_low), abs(ci_high)))
    low = 0.0 if ci_low <= 0 <= ci_high else ends[0]
    return abs(effect) / margin, low / margin, ends[1] / margin


def pad_limits(ax: plt.Axes, low: float, high: float, share: float = 0.04) -> None:
    """x limits a share of the axis, as drawn (symlog: in its own scale), beyond low and high: a marker at the end
    of the data was cut in half by the edge."""
    transform = ax.xaxis.get_transform()
    (start,), (end,) = transform.transform([[low], [high]])
    (left,), (right,) = transform.inverted().transform([[start - share * (end - start)], [end + share * (end - start)]])
    ax.set_xlim(left, right)


def margin_rows(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdicts margins_figure draws: measured (superiority, non-inferiority, equivalence) with an interval and a
    minimum effect to divide by."""
    return verdicts[verdicts.test.isin(list(TEST_MARKERS)) & verdicts.ci_low.notna() & (verdicts.min_effect > 0)]


def margins_figure(verdicts: pd.DataFrame, path: Path) -> Path:
    """Every measured hypothesis at a glance, in units of its own minimum effect m so that one axis holds them all.

    Upper panel, superiority and non-inferiority: effect / m, + = as the hypothesis predicts; superiority is decided
    against +1, non-inferiority against -1. Lower panel, equivalence: |treatment - control| / m with the distances its
    90 % interval spans, decided against 1 (within = as predicted): its effect has no predicted sign, so it is not
    drawn on a side of the upper axis. Colour: the adjusted verdict (shown_verdicts); marker: the test. A hypothesis
    without a minimum effect (m = 0: the direction alone) has no unit here and is left out."""
    rows = margin_rows(verdicts).reset_index(drop=True)
    rows = rows.assign(shown=shown_verdicts(rows))
    panels = [part for part in (rows[rows.test != "equivalence"], rows[rows.test == "equivalence"]) if not part.empty]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(7.2, 0.9 + 0.17 * len(rows) + 0.7 * (len(panels) - 1)),
        height_ratios=[len(part) + 3 for part in panels],  # + the title and the axis label
        layout="constrained",
        squeeze=False,
    )
    for ax, part in zip(axes[:, 0], panels, strict=True):
        equivalence = part.test.iloc[0] == "equivalence"
        if equivalence:
            drawn = [equivalence_distance(v.effect, v.ci_low, v.ci_high, v.min_effect) for v in part.itertuples()]
        else:
            drawn = [(v.effect / v.min_effect, v.ci_low / v.min_effect, v.ci_high / v.min_effect)
                     for v in part.itertuples()]  # fmt: skip
        for i, (v, (x, low, high)) in enumerate(zip(part.itertuples(), drawn, strict=True)):
            colour = VERDICT_COLOURS[v.shown]
            ax.plot([low, high], [i, i], color=colour, linewidth=2.5)
            ax.plot(x, i, TEST_MARKERS[v.test], color=colour, markersize=4)
        for x in (0, 1) if equivalence else (-1, 0, 1):
            ax.axvline(x, color="black" if x else "grey", linewidth=1 if x else 0.8, linestyle="-" if x else ":")
        labels = [f"{v.experiment_id} {v.hypothesis} · {v.corpus} · {v.tier}" for v in part.itertuples()]
        ax.set_yticks(range(len(part)), labels, fontsize=6.5)
        ax.set_ylim(len(part) - 0.5, -0.5)
        ax.set_xscale("symlog", linthresh=3)  # most intervals lie within a few margins; a few lie far out
        ends = [end for _, low, high in drawn for end in (low, high)]
        pad_limits(ax, min(*ends, 0 if equivalence else -1.5), max(*ends, 1.5))  # the margins always in view
        ticks = [t for t in (-100, -30, -10, -3, -1, 0, 1, 3, 10, 30, 100) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        ax.set_xticks(ticks, [f"{t:+d}" if t and not equivalence else f"{t:d}" for t in ticks], fontsize=7)
        if equivalence:
            ax.set_title("equivalence: how far apart the arms are, in margins (within 1 = as predicted)", fontsize=8)
            ax.set_xlabel("|treatment − control| / margin m, with the distances its 90% interval spans", fontsize=8)
        else:
            ax.set_title("superiority (decided against +1) and non-inferiority (against −1)", fontsize=8)
            ax.set_xlabel("effect / minimum effect m (+ = as the hypothesis predicts)", fontsize=8)
    handles = [
        Line2D([], [], color=c, linewidth=2.5, label=v) for v, c in VERDICT_COLOURS.items() if v in set(rows.shown)
    ]
    handles += [
        Line2D([], [], color="black", marker=m, linestyle="", label=t.replace("_", "-"))
        for t, m in TEST_MARKERS.items()
        if t in set(rows.test)
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=len(handles),
               title=f"colour: {verdict_legend_title(rows)}; marker: test", title_fontsize=7)  # fmt: skip
    return save_figure(fig, path)
