"""Figures that carry the evidence; used for MLflow artifacts and for the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def arm_comparison_figure(title: str, metric: str, values: list[tuple[str, int, float]], path: Path) -> Path:
    """Every seed as a dot, and the arm mean with a bootstrap 95% interval; arms in the order given."""
    frame = pd.DataFrame(values, columns=["arm", "seed", metric])
    order = list(dict.fromkeys(frame.arm))
    fig, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
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
    ax.set_title(title)
    ax.legend(title="seed", fontsize=8, title_fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
