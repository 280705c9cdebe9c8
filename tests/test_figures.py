"""The report's figures drawn from small frames: what each draws, where, and in which colour (no PDF, no runs)."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import seaborn as sns
from matplotlib.colors import to_hex

from ablations import figures, report


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions draw, kept open to inspect (they close what they save)."""
    kept = []
    close = plt.close
    monkeypatch.setattr(figures.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def verdict(**fields) -> dict:
    row = {"experiment_id": "E01", "hypothesis": "H1", "corpus": "stdlib_prose", "tier": "quick",
           "test": "superiority", "metric": "final_val_loss", "direction": "lower", "effect": 0.1, "ci_low": 0.05,
           "ci_high": 0.15, "ci_level": 0.95, "min_effect": 0.02, "verdict": "supported",
           "verdict_adjusted": "supported", "awaiting": ""}  # fmt: skip
    return row | fields


def axes_fraction(ax, x: float, y: float) -> tuple[float, float]:
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))
    return float(fx), float(fy)


def interval_colours(ax) -> list[str]:
    """The colours of the intervals (thick lines) of an effects panel, top row first."""
    return [to_hex(line.get_color()) for line in ax.lines if line.get_linewidth() >= 2.5]


def test_the_overview_draws_equivalence_as_a_distance_in_its_own_panel_and_every_marker_inside(drawn, tmp_path):
    """An equivalence effect is treatment - control: its sign predicts nothing, so a far one must not sit on the
    'as predicted' side of the axis; 46 margins out, a marker was cut in half by the edge."""
    verdicts = pd.DataFrame([
        verdict(effect=0.93, ci_low=0.92, ci_high=0.95),  # 46 margins: the right edge
        verdict(hypothesis="H2", test="non_inferiority", effect=-0.5, ci_low=-0.55, ci_high=-0.45,
                verdict="refuted", verdict_adjusted="refuted"),  # -25 margins: the left edge
        verdict(hypothesis="H4", test="equivalence", direction="equal", effect=0.93, ci_low=0.92, ci_high=0.946,
                verdict="refuted", verdict_adjusted="refuted"),
        verdict(hypothesis="H8", test="equivalence", direction="equal", effect=-0.01, ci_low=-0.03, ci_high=0.012,
                verdict="inconclusive", verdict_adjusted="inconclusive"),
    ])  # fmt: skip
    figures.margins_figure(verdicts, tmp_path / "overview.svg")
    directional, equivalence = drawn[0].axes
    assert [t.get_text() for t in directional.get_yticklabels()] == ["E01 H1 · stdlib_prose · quick",
                                                                    "E01 H2 · stdlib_prose · quick"]  # fmt: skip
    assert [t.get_text() for t in equivalence.get_yticklabels()] == ["E01 H4 · stdlib_prose · quick",
                                                                    "E01 H8 · stdlib_prose · quick"]  # fmt: skip
    assert "as the hypothesis predicts" in directional.get_xlabel()
    assert "|treatment − control| / margin" in equivalence.get_xlabel()
    assert "within 1 = as predicted" in equivalence.get_title()
    markers = [line for line in equivalence.lines if line.get_marker() == "D"]
    assert [line.get_xdata()[0] for line in markers] == pytest.approx([0.93 / 0.02, 0.01 / 0.02])
    intervals = [line.get_xdata() for line in equivalence.lines if line.get_linewidth() == 2.5]
    assert list(intervals[1]) == pytest.approx([0, 0.03 / 0.02])  # it holds 0: from no distance to the farther end
    for ax in (directional, equivalence):
        for line in ax.lines:
            if line.get_linewidth() == 2.5 or line.get_marker() in "osD":  # intervals and markers, not margins
                for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True):
                    assert 0.02 < axes_fraction(ax, x, y)[0] < 0.98, (ax.get_title(), x)


def test_an_equivalence_distance_is_the_range_of_distances_its_interval_spans():
    assert figures.equivalence_distance(-0.12, -0.13, -0.11, 0.02) == pytest.approx((6.0, 5.5, 6.5))
    assert figures.equivalence_distance(0.01, -0.03, 0.02, 0.02) == pytest.approx((0.5, 0.0, 1.5))


def curves(arm: str, metric: str, steps: list[int], values: list[float], seeds=(0, 1, 2)) -> list[dict]:
    return [
        {"arm": arm, "seed": seed, "metric": metric, "step": step, "value": value + 0.01 * seed}
        for seed in seeds
        for step, value in zip(steps, values, strict=True)
    ]


BASELINES = {"unigram baseline": 3.35, "plateau line (10% below)": 3.01, "bigram baseline": 2.47}


def test_the_curves_show_an_arm_evaluated_once_inside_the_limits_and_list_only_arms_with_data(drawn, tmp_path):
    """E07 on tinyshakespeare: one evaluation per run was an empty panel whose limits the baselines set, and the
    legend named an arm without runs there."""
    train_steps = list(range(10, 200, 10))
    train = [3.6 - 1.5 * step / 190 for step in train_steps]
    frame = pd.DataFrame(
        curves("fixed", "val_loss", [100], [2.40])
        + curves("buckets", "val_loss", [100], [2.43])
        + curves("fixed", "train_loss", train_steps, train)
        + curves("buckets", "train_loss", train_steps, train)
        + curves("fixed@d_model=64", "val_loss", [100], [1.0])  # an arm not asked for: neither drawn nor limiting
    )
    arms = ["fixed", "buckets", "buckets_equal_updates"]
    figures.curves_figure(frame, arms, "tinyshakespeare, quick", tmp_path / "curves.svg", BASELINES)
    fig = drawn[0]
    val, train_ax = fig.axes[:2]
    low, high = val.get_ylim()
    assert low < 2.40 and 2.45 < high and low > 2.0  # the data inside, and not squashed by a far baseline
    drawn_arms = [line for line in val.lines if line.get_label() in arms]
    assert [line.get_label() for line in drawn_arms] == ["fixed", "buckets"]
    assert all(line.get_marker() == "o" for line in drawn_arms)  # a point, not no line
    bars = [c for c in val.collections if type(c).__name__ == "LineCollection"]
    assert len(bars) == len(val.collections) == 2  # each arm's seed range as a bar: a band one step wide is invisible
    assert val.get_xlim() == train_ax.get_xlim()  # one step axis: the evaluation sits where it was in training
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["fixed", "buckets", "unigram baseline 3.35 (off the plot)",
                      "plateau line (10% below) 3.01 (off the plot)", "bigram baseline"]  # fmt: skip
    assert not val.texts  # no note inside the axes for a line to strike through


def test_the_baselines_are_drawn_on_the_validation_panel_only(drawn, tmp_path):
    """A smoothed training objective sits near the plateau line while the model learns (E05, label smoothing)."""
    steps = list(range(100, 2100, 100))
    falling = [2.8 - step / 2000 for step in steps]
    frame = pd.DataFrame(
        curves("ls0", "val_loss", steps, falling)
        + curves("ls0", "train_loss", steps, falling)
        + curves("ls02", "val_loss", steps, falling)
        + curves("ls02", "train_loss", steps, [loss + 1.0 for loss in falling])  # the smoothed objective: higher
    )
    near = {"unigram baseline": 3.0, "plateau line (10% below)": 2.7, "bigram baseline": 2.2}
    figures.curves_figure(frame, ["ls0", "ls02"], "stdlib_prose, quick", tmp_path / "curves.svg", near)
    val, train = drawn[0].axes[:2]
    assert {line.get_label() for line in val.lines} >= set(near)
    assert not {line.get_label() for line in train.lines} & set(near)
    assert not any("off the plot" in line.get_label() for line in train.lines)


def test_a_reference_line_far_off_the_data_is_named_in_the_legend_not_in_the_corner(drawn, tmp_path):
    values = [(arm, seed, 1.7 + 0.02 * seed + 0.2 * i) for i, arm in enumerate(["a", "b"]) for seed in range(3)]
    lines = {"unigram baseline": 3.3, "plateau line (10% below)": 2.0}
    figures.arm_comparison_figure("E02 [quick, stdlib_prose]", "final_val_loss", values, tmp_path / "a.svg", lines)
    ax = drawn[0].axes[0]
    assert not ax.texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "unigram baseline 3.3 (off the plot)" in legend and "plateau line (10% below)" in legend
    assert ax.get_ylim()[1] > 2.0  # the near line is drawn, inside the limits


def test_a_long_panel_title_is_wrapped_to_fit_the_figure(drawn, tmp_path):
    """'…jacobian_norm (lower), effect and 9' was cut off at the figure's edge."""
    verdicts = pd.DataFrame([
        verdict(corpus="tinyshakespeare", awaiting="its runs are of an older version"),
        verdict(hypothesis="H7", metric="final_log10_softmax_jacobian_norm_of_every_layer_and_head_pooled"),
    ])  # fmt: skip
    figures.effects_figure(verdicts, "E02: effects", tmp_path / "effects.svg")
    fig = drawn[0]
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for text in (ax.title, ax.xaxis.label):
            box = text.get_window_extent(renderer)
            assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, text.get_text()
    assert "\n" in fig.axes[1].get_title() and "\n" not in fig.axes[0].get_title()


def test_an_effects_panel_keeps_both_margins_of_an_equivalence_in_view(drawn, tmp_path):
    """E04 H3: effects +0.03 to +0.1 against ±0.05: the axis began at -0.04 and −m was off the panel."""
    rows = pd.DataFrame([verdict(test="equivalence", direction="equal", min_effect=0.05, effect=0.08, ci_low=0.06,
                                 ci_high=0.1, ci_level=0.9)])  # fmt: skip
    figures.effects_figure(rows, "E04: effects", tmp_path / "effects.svg")
    ax = drawn[0].axes[0]
    low, high = ax.get_xlim()
    margins = sorted(line.get_xdata()[0] for line in ax.lines if line.get_color() == "black")
    assert margins == [-0.05, 0.05] and low < -0.05 and high > 0.1


def test_the_verdict_figures_colour_by_the_adjusted_verdict_and_say_so(drawn, tmp_path):
    rows = pd.DataFrame([
        verdict(verdict="supported", verdict_adjusted="inconclusive"),  # the adjustment changed it: orange
        verdict(corpus="tinyshakespeare", verdict="refuted", verdict_adjusted="awaiting runs",
                awaiting="its runs are of an older version"),  # outside every family: its raw verdict, hollow
    ])  # fmt: skip
    expected = [to_hex(figures.VERDICT_COLOURS[v]) for v in ("inconclusive", "refuted")]
    figures.effects_figure(rows, "E01: effects", tmp_path / "effects.svg")
    assert interval_colours(drawn[-1].axes[0]) == expected
    published = rows.assign(literature_effect=0.2, literature_units="PPL")
    figures.literature_figure(published, "E01: published", tmp_path / "literature.svg")
    assert interval_colours(drawn[-1].axes[0]) == expected
    figures.margins_figure(rows.iloc[:1], tmp_path / "overview.svg")
    assert interval_colours(drawn[-1].axes[0]) == expected[:1]
    for fig in drawn:
        title = fig.legends[0].get_title().get_text()
        assert "verdict after the false-discovery adjustment" in title, title
    assert "hollow: awaiting runs" in drawn[0].legends[0].get_title().get_text()
    raw = figures.shown_verdicts(rows.drop(columns="verdict_adjusted"))
    assert list(raw) == ["supported", "refuted"]  # a frame without adjusted verdicts: the raw ones


def test_every_arm_of_a_large_experiment_has_its_own_colour(drawn, tmp_path):
    """Beyond the ten colours of the cycle, the eleventh arm took the first one's colour."""
    arms = [f"arm{i}" for i in range(11)]
    frame = pd.DataFrame([row for arm in arms for row in curves(arm, "val_loss", [100, 200], [2.5, 2.4])])
    figures.curves_figure(frame, arms, "stdlib_prose, quick", tmp_path / "curves.svg")
    colours = [to_hex(handle.get_color()) for handle in drawn[0].legends[0].legend_handles]
    assert len(set(colours)) == len(arms)


def test_a_lone_spike_does_not_flatten_the_curves(drawn, tmp_path):
    """E04: one seed's train loss of 12 at one step, among values near 2, squeezed every curve into a line."""
    steps = list(range(0, 2000, 10))
    losses = [12.0 if step == 400 else 2.0 + 0.001 * i for i, step in enumerate(steps)]
    frame = pd.DataFrame(curves("a", "train_loss", steps, losses) + curves("a", "val_loss", [1000, 1990], [2.1, 2.0]))
    figures.curves_figure(frame, ["a"], "tinyshakespeare, quick", tmp_path / "curves.svg")
    _, train = drawn[0].axes[:2]
    assert train.get_ylim()[1] < 3 and train.get_ylim()[0] < 2.0 + 0.001 * 20


def test_a_short_runs_early_point_stays_in_view(drawn, tmp_path):
    """E24: a fine-tune of 500 steps has its best domain loss at step 50, inside the base's first tenth (of 2,000)."""
    base = curves("base", "val_loss", list(range(200, 2001, 200)), [2.4 - 0.01 * i for i in range(10)])
    tuned = curves("tuned", "val_loss", [50, 250, 500], [1.6, 1.9, 2.0])
    figures.curves_figure(pd.DataFrame(base + tuned), ["base", "tuned"], "stdlib_prose, quick", tmp_path / "c.svg")
    assert drawn[0].axes[0].get_ylim()[0] < 1.6


def test_only_the_arms_drawn_share_out_the_colours(drawn, tmp_path):
    """E25: 22 arms, 8 with curves; husl over all 22 gave the 8 neighbouring hues of one olive."""
    arms = [f"arm{i}" for i in range(22)]
    drawn_arms = arms[14:]
    frame = pd.DataFrame([row for arm in drawn_arms for row in curves(arm, "val_loss", [100, 200], [2.5, 2.4])])
    figures.curves_figure(frame, arms, "stdlib_prose, quick", tmp_path / "curves.svg")
    colours = [to_hex(handle.get_color()) for handle in drawn[0].legends[0].legend_handles]
    assert colours == [to_hex(c) for c in sns.color_palette(None, len(drawn_arms))]


def test_the_scatter_figures_legend_lies_outside_the_axes(tmp_path, drawn):
    points = [(arm, seed, 1.0 + i + 0.01 * seed, 2.0 - i) for i, arm in enumerate("abc") for seed in range(2)]
    figures.scatter_figure("t", "x", "y", points, tmp_path / "s.svg")
    (fig,) = drawn
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


def test_a_scatter_figure_asked_for_log_axes_draws_both_on_a_log_scale(tmp_path, drawn):
    """E22's loss against size: a power law is a straight line only on log-log axes."""
    points = [(arm, 0, 10.0 ** (i + 5), 2.0 - 0.1 * i) for i, arm in enumerate("abc")]
    figures.scatter_figure("t", "x", "y", points, tmp_path / "linear.svg")
    figures.scatter_figure("t", "x", "y", points, tmp_path / "log.svg", log=True)
    linear, log = (fig.axes[0] for fig in drawn)
    assert (linear.get_xscale(), linear.get_yscale()) == ("linear", "linear")
    assert (log.get_xscale(), log.get_yscale()) == ("log", "log")


def test_cost_against_length_is_read_from_the_runs_and_drawn_with_the_logged_exponents(drawn, tmp_path):
    """Per-length seconds and FLOPs of the length_scaling benchmark become two log-log panels; each cost's legend
    gives, per fitted range, the mean of its logged exponents over seeds with their t interval, and its fitted line
    has that slope."""
    lengths = (128, 256, 512, 1024, 2048, 4096, 8192)
    rows = []
    for seed, (k_attention, k_decode) in enumerate(((1.9, 1.1), (2.1, 0.9))):
        row = {"arm": "model", "seed": seed, "status": "finished", "bench_attention_time_exponent": k_attention,
               "bench_attention_time_exponent_long": 1.95, "bench_decode_time_exponent": k_decode,
               "bench_attention_flops_exponent": 1.8}  # fmt: skip
        for n in lengths:
            row |= {f"bench_attention_seconds_n{n}": 1e-7 * n**k_attention, f"bench_decode_seconds_n{n}": 1e-5 * n,
                    f"bench_attention_flops_n{n}": 4.0 * n * n * 128 + 8.0 * n * 128**2}  # fmt: skip
        rows.append(row)
    rows.append({"arm": "model", "seed": 2, "status": "diverged", "bench_attention_seconds_n128": 9.0})
    points, exponents = report.length_scaling_points(rows)
    assert report.length_scaling_points(rows[2:]) is None  # no finished run: no figure
    assert len(points) == 2 * 3 * len(lengths) and set(points.seed) == {0, 1}  # the diverged run is left out
    assert list(dict.fromkeys(points.unit)) == ["median seconds per call", "counted FLOPs"]
    figures.length_scaling_figure(points, exponents, "stdlib_prose, quick", tmp_path / "length.png")
    seconds, flops = drawn[0].axes
    labels = [t.get_text() for t in seconds.get_legend().get_texts()]
    assert labels[0].startswith("attention, 512-2,048: k = 2.00 [")
    assert labels[1] == "attention, 2,048-8,192: k = 1.95"  # no spread over seeds: no interval
    assert labels[2].startswith("decode, 512-2,048: k = 1.00 [")
    assert [t.get_text() for t in flops.get_legend().get_texts()][0] == "attention, 512-2,048: k = 1.80"
    fitted = [line for line in seconds.lines if line.get_linestyle() == "-"][0]
    assert list(fitted.get_xdata()) == [512, 1024, 2048]
    (x0, x1), (y0, y1) = fitted.get_xdata()[[0, -1]], fitted.get_ydata()[[0, -1]]
    assert math.log(y1 / y0) / math.log(x1 / x0) == pytest.approx(2.0)
    assert seconds.get_xscale() == "log" and seconds.get_yscale() == "log"


def test_the_overview_leaves_out_a_hypothesis_without_a_minimum_effect_and_the_caption_names_it(drawn, tmp_path):
    """A direction-only hypothesis (m = 0: E27's Table 3 rows) has no unit in Figure 1; dividing by it once stopped
    the report with a ZeroDivisionError."""
    rows = pd.DataFrame([verdict(), verdict(experiment_id="E27", min_effect=0.0)])
    figures.margins_figure(rows, tmp_path / "overview.png")
    assert [t.get_text() for t in drawn[0].axes[0].get_yticklabels()] == ["E01 H1 · stdlib_prose · quick"]
    [entry] = report.overview_figures(rows, tmp_path)
    assert "without a minimum effect (E27 H1; 1 row): there is no m to divide by" in entry["caption"]


def test_a_layers_figure_draws_each_arms_per_block_metric_in_order_and_stops_where_the_blocks_do(drawn, tmp_path):
    """Arms of different depths share the panel; each line has a point per block, at the mean of log10 over seeds;
    a run that did not finish draws nothing."""
    runs = [("deep", seed, "finished", {f"g_layer{i}": 10.0 ** (i + seed) for i in range(4)}) for seed in (0, 1)]
    runs += [("shallow", 0, "finished", {"g_layer0": 1.0, "g_layer1": 1.0, "g_layer2": math.nan})]
    runs += [("broken", 0, "diverged", {"g_layer0": 5.0})]
    points = figures.layer_points(["g_layer"], runs)
    assert {arm for arm, *_ in points} == {"deep", "shallow"}
    figures.lines_figure("t", points, "block", tmp_path / "layers.svg", log10=True)
    ax = drawn[0].axes[0]
    deep = ax.get_lines()[0]
    assert list(deep.get_xdata()) == [1, 2, 3, 4]
    assert list(deep.get_ydata()) == pytest.approx([0.5, 1.5, 2.5, 3.5])  # log10 of 10^i and 10^(i + 1)
    assert list(ax.get_lines()[1].get_xdata()) == [1, 2]


def test_a_series_figure_puts_each_metric_at_its_x_and_leaves_out_what_a_run_did_not_measure(drawn, tmp_path):
    """E10's loss by evaluation length: learned positions have no 2x or 4x loss, so their line is one point."""
    figure = {"kind": "series", "metrics": ["l1", "l2", "l4"], "x": "context", "x_values": [64, 128, 256]}
    runs = [("rope", seed, "finished", {"l1": 2.0 + seed, "l2": 2.1 + seed, "l4": 2.3 + seed}) for seed in (0, 1)]
    runs += [("learned", 0, "finished", {"l1": 1.9})]
    points = figures.series_points(figure, runs)
    figures.lines_figure("t", points, "context", tmp_path / "series.svg")
    rope, learned = drawn[0].axes[0].get_lines()[:2]
    assert list(rope.get_xdata()) == [64, 128, 256]
    assert list(rope.get_ydata()) == pytest.approx([2.5, 2.6, 2.8])
    assert list(learned.get_xdata()) == [64]
    assert {arm for arm, *_ in figures.series_points(figure | {"arms": ["learned"]}, runs)} == {"learned"}


def test_an_arms_figure_with_more_arms_than_fit_across_lists_them_down_the_page(drawn, tmp_path):
    """E25's 26 arms side by side made a strip that the page shrank to illegible: past 12 arms the arms go on the y
    axis, the figure grows down, and the baselines become vertical lines."""
    arms = [f"arm{i}" for i in range(26)]
    values = [(arm, seed, 1.7 + 0.01 * i + 0.002 * seed) for i, arm in enumerate(arms) for seed in range(2)]
    lines = {"plateau line (10% below)": 2.0}
    figures.arm_comparison_figure("E25", "final_val_loss", values, tmp_path / "a.svg", lines)
    fig = drawn[0]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == arms
    assert fig.get_figheight() > fig.get_figwidth()
    (plateau,) = [line for line in ax.lines if line.get_label() == "plateau line (10% below)"]
    assert list(plateau.get_xdata()) == [2.0, 2.0]


def test_a_domain_corpus_s_validation_loss_gets_a_third_panel_without_the_general_corpus_baselines(drawn, tmp_path):
    """E24's fine-tuned arms overfit their small target set: only the domain's curve shows it."""
    rows = curves("ft", "val_loss", [250, 500], [2.3, 2.4]) + curves("ft", "train_loss", [10, 500], [1.8, 1.2])
    rows += curves("ft", "domain_val_loss", [250, 500], [2.19, 2.23])
    figures.curves_figure(pd.DataFrame(rows), ["ft"], "stdlib_prose, quick", tmp_path / "c.svg", BASELINES)
    val, train, domain, key = drawn[0].axes  # two panels a row: the fourth cell holds the legend
    assert domain.get_title().startswith("domain_val_loss")
    assert not key.axison and [t.get_text() for t in key.get_legend().get_texts()][0] == "ft"
    assert list(domain.lines[0].get_ydata()) == pytest.approx([2.20, 2.24])  # the mean over seeds
    assert not {line.get_label() for line in domain.lines} & set(BASELINES)
    figures.curves_figure(pd.DataFrame(rows[:12]), ["ft"], "stdlib_prose, quick", tmp_path / "d.svg", BASELINES)
    assert len(drawn[1].axes) == 2
