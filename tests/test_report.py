"""The evidence report, built from a small fixture of real smoke-tier results (tests/fixtures/smoke_results)."""

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from ablations import figures, report, tracking
from ablations.spec import experiment_names, load_spec
from ablations.verdict import Arm, decide

# make test runs two workers: this module's tests share one module fixture, so they stay on one worker
pytestmark = pytest.mark.xdist_group("report_pdf")

FIXTURE = Path(__file__).parent / "fixtures" / "smoke_results"


# Verdicts of each kind, so that a report printing the wrong verdict for a hypothesis fails: H1 supported, H2 refuted
# but turned inconclusive by the false-discovery adjustment (both injected), H4 the fact as the smoke runs decided it
# (refuted: 8 heads have exactly as many parameters as 1). H3 is superseded by an amendment: the appendix shows it.
VERDICTS = {
    "H1": {"verdict": "supported", "verdict_adjusted": "supported", "effect": 0.05, "ci_low": 0.03, "ci_high": 0.07,
           "p_value": 0.001, "p_adjusted": 0.003, "reason": ""},
    "H2": {"verdict": "refuted", "verdict_adjusted": "inconclusive", "effect": 0.001, "ci_low": -0.01,
           "ci_high": 0.012, "p_value": 0.04, "p_adjusted": 0.06, "reason": ""},
}  # fmt: skip


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for name in ("runs.csv", "trends.csv", "curves.csv"):
        shutil.copy(FIXTURE / name, out / name)
    verdicts = pd.read_csv(FIXTURE / "verdicts.csv")
    verdicts = verdicts[~verdicts.treatment.str.contains("@")]  # the hypotheses at the tier's own scale
    assert list(verdicts.hypothesis) == ["H1", "H2", "H3", "H4"]
    assert verdicts.set_index("hypothesis").loc["H3", "superseded"] == "2026-12-02"
    verdicts = verdicts.astype({"reason": object, "verdict": object, "verdict_adjusted": object})
    for hypothesis, values in VERDICTS.items():
        for column, value in values.items():
            verdicts.loc[verdicts.hypothesis == hypothesis, column] = value
    verdicts.to_csv(out / "verdicts.csv", index=False)
    return out


@pytest.fixture(scope="module")
def pdf(tmp_path_factory, results_dir) -> Path:
    return report.build(results_dir, tmp_path_factory.mktemp("report") / "report.pdf", tiers=("smoke",))


def pages(pdf: Path) -> list[str]:
    """The text of each page after the table of contents (which names every section again)."""
    text = [page.extract_text() for page in PdfReader(pdf).pages]
    return [t for t in text if not t.lstrip().startswith("Contents")]


def test_the_contents_list_every_section_with_its_page(pdf):
    every_page = [page.extract_text() for page in PdfReader(pdf).pages]
    contents = flat(next(t for t in every_page if t.lstrip().startswith("Contents")))
    for section in ("Findings at a glance", "Summary", "How a verdict is decided", "E01 attention_heads", "Appendix"):
        assert section in contents
    assert PdfReader(pdf).outline  # the PDF's own bookmarks: the sections are links


def flat(text: str) -> str:
    return " ".join(text.split())


def verdicts_part(text: list[str], section_title: str) -> str:
    """The text of one experiment's Verdicts subsection: from its heading to "What it means"."""
    start = next(i for i, t in enumerate(text) if section_title in t and "The claim" in t)
    body = flat("\n".join(text[start:]))
    body = body[body.index(flat(section_title)) :]
    start = body.index("Verdicts ") + len("Verdicts ")
    return body[start : body.index("What it means", start)]


def test_each_hypothesis_renders_with_its_own_verdict_inside_its_experiments_section(pdf, results_dir):
    text = pages(pdf)
    verdicts = pd.read_csv(results_dir / "verdicts.csv", keep_default_na=False)
    verdicts = verdicts[verdicts.superseded == ""]  # a superseded verdict is in the appendix, not here
    for experiment in set(verdicts.experiment):
        spec = report.load_spec(experiment)
        part = verdicts_part(text, f"{spec.id} {experiment}")
        ids = list(verdicts[verdicts.experiment == experiment].hypothesis)
        for i, v in enumerate(verdicts[verdicts.experiment == experiment].itertuples()):
            # each line: the adjusted verdict's badge, corpus and tier, then the sentence with the raw verdict
            start = part.index(f"{v.verdict_adjusted} {v.corpus}, {v.tier} tier. {v.hypothesis} ({v.test}, {v.metric}")
            end = part.find(f"tier. {ids[i + 1]} (", start) if i + 1 < len(ids) else len(part)
            sentence = part[start:end]
            expected = {
                "supported": ": supported.",
                "refuted": ": refuted",  # then what the refutation found, in brackets
                "not decided": "Not decided: did not",
                "inconclusive": "inconclusive.",
            }
            assert expected[v.verdict] in sentence, sentence
            others = {"supported", "refuted"} - {v.verdict}
            assert not any(f": {o}." in sentence or f": {o} (" in sentence for o in others), sentence
            if v.verdict_adjusted != v.verdict:
                assert f"report's tests: {v.verdict_adjusted}." in sentence, sentence


def test_summary_lists_every_hypothesis_and_the_numbers_match_verdicts_csv(pdf, results_dir):
    summary = flat(next(t for t in pages(pdf) if "E01 attention_heads H1:" in flat(t)))
    verdicts = pd.read_csv(results_dir / "verdicts.csv")
    verdicts = verdicts[verdicts.superseded.isna()]
    for v in verdicts.itertuples():
        assert f"{v.hypothesis}:" in summary or f"{v.hypothesis}{report.ADDED_MARK}:" in summary
        assert report.fmt(v.effect).replace("−", "-") in summary.replace("−", "-")
    table = summary[summary.index("Verdict raw → adjusted") :].partition("Along the scale axis")[0]
    badges = [w for w in table.replace("not decided", "not_decided").split() if w in VERDICTS_WORDS]
    assert badges == ["supported", "refuted", "inconclusive", "refuted"]  # H2 raw, then adjusted; H3 superseded


def test_a_superseded_verdict_stays_visible_in_the_appendix_and_not_in_the_summary(pdf):
    text = pages(pdf)
    appendix = flat(next(t for t in text if "Appendix: superseded verdicts" in t))
    assert "H3: More heads mean more" in appendix and "not decided" in appendix  # the full statement
    assert "2026-12-02" in flat("\n".join(text))  # the amendment's date, in the methods section's table


def test_a_verdict_not_decided_says_which_arm_did_not_learn():
    spec = report.load_spec("attention_heads")
    row = pd.read_csv(FIXTURE / "verdicts.csv").fillna({"awaiting": ""}).iloc[0]  # H1, smoke runs: all plateau
    sentence = report.verdict_sentence(row, spec.hypotheses[0], spec)
    assert sentence.endswith("Not decided: did not learn: h1: 2 of 2 runs plateau; h8: 2 of 2 runs plateau.")


def test_a_bound_reads_as_every_seed_with_its_range_and_no_p_value():
    spec = report.load_spec("gradient_accumulation")
    h = next(h for h in spec.hypotheses if h.test == "bound")
    seeds = range(3)
    v = decide(h, Arm.learned(dict.fromkeys(seeds, 1e-4)), Arm.learned({0: 2e-7, 1: 5e-7, 2: 3e-7}))
    row = pd.Series({**v.as_dict(), "awaiting": "", "p_adjusted": float("nan"), "verdict_adjusted": v.verdict})
    sentence = report.verdict_sentence(row, h, spec)
    assert "H6 (bound, bench_grad_relative_difference: accum4x3 lower than float_rounding in every seed)" in sentence
    assert "effect +9.95e−05 [+9.95e−05, +9.98e−05] (the seeds' range)" in sentence, sentence
    assert "p =" not in sentence and "Every seed meets the statement" in sentence and sentence.count("supported") == 1


def test_a_count_reads_in_the_direction_it_predicts():
    """E11 H3 predicts more stuck runs without residuals; the sentence said "fewer ... favours the treatment"."""
    spec = report.load_spec("residual_connections")
    h = next(h for h in spec.hypotheses if h.test == "counts")
    stuck = Arm({s: 3.3 for s in range(5)}, dict.fromkeys(range(5), "plateau"))
    v = decide(h, Arm.learned({s: 2.0 for s in range(5)}), stuck)
    row = pd.Series({**v.as_dict(), "awaiting": "", "verdict_adjusted": v.verdict})
    sentence = report.verdict_sentence(row, h, spec)
    assert h.direction == "higher" and "more not_learned runs in no_residual than in residual" in sentence
    assert "shows the predicted difference in counts: supported" in sentence, sentence


def test_the_summarys_counts_say_how_many_lie_at_the_scale_axis_values_page_1_leaves_out():
    """Page 1 counted 7 not decided and 30 awaiting, the summary 14 and 31: the difference was the scaled verdicts."""
    made = [
        ("h8", "", "not decided", math.nan),
        ("h8@d_model=64", "", "not decided", math.nan),
        ("h4", "", "supported", 0.01),
        ("h4@d_model=64", "", "supported", 0.02),
        ("h2", "seeds missing", "refuted", 0.01),
        ("h2@d_model=64", "seeds missing", "refuted", 0.03),
    ]
    rows = [{"treatment": t, "awaiting": a, "verdict": v, "verdict_adjusted": v, "p_value": p} for t, a, v, p in made]
    assert report.counts(pd.DataFrame(rows)) == {"tests": 2, "scaled_tests": 1, "not_decided": 2,
                                                 "not_decided_scaled": 1, "changed_by_fdr": 0, "awaiting": 2,
                                                 "awaiting_scaled": 1}  # fmt: skip


def test_an_effects_caption_explains_hollow_dots_only_where_verdicts_await_runs(tmp_path):
    verdicts = pd.read_csv(FIXTURE / "verdicts.csv").fillna({"awaiting": ""})
    spec = report.load_spec("attention_heads")
    rows = verdicts[(verdicts.experiment == "attention_heads") & verdicts.ci_low.notna()]
    [entry] = report.effects_figures(spec, rows.assign(awaiting=""), tmp_path)
    assert "hollow" not in entry["caption"]
    [entry] = report.effects_figures(spec, rows.assign(awaiting="seeds missing"), tmp_path)
    assert "A hollow dot" in entry["caption"]


def test_the_setup_row_gives_the_range_of_parameters_and_tokens_over_own_arms_and_along_the_scale_axis():
    """E25's pruned arms train no tokens and its base 1.5 M: the first run's 0 stood for all of them."""
    group = pd.DataFrame({"arm": ["prune", "base", "base@d_model=64"], "seed": [0, 0, 0], "n_params": [9e5, 9e5, 3e5],
                          "train_tokens": [0.0, 1_536_000.0, 1_536_000.0], "corpus_sha256": ["ab" * 32] * 3,
                          "tokenizer": ["byte"] * 3, "hardware": ["cpu"] * 3, "wall_seconds": [1.0] * 3})  # fmt: skip
    row = report.settings_row("quick", "prose", group)
    params = "900,000 (scale axis 300,000–900,000)"  # the scaled arms' own range, as the arms and runs count them
    assert (row["params"], row["tokens"], row["arms"], row["seeds"], row["runs"]) == (params, "0–1,536,000", 3, 1, 3)


@pytest.mark.parametrize(
    ("test", "low", "high", "found"),
    [("superiority", 0.001, 0.016, "smaller"), ("superiority", -0.2, -0.1, "opposite"),
     ("superiority", -0.01, 0.01, "none"), ("equivalence", 0.3, 0.5, "beyond"),
     ("non_inferiority", -0.5, -0.3, "worse")],
)  # fmt: skip
def test_a_refutation_says_what_it_found_beside_its_badge(test, low, high, found):
    """E01 H5: +0.0087 [+0.0011, +0.016] is a real effect, only smaller than m; "refuted" alone read as none."""
    v = pd.Series({"verdict": "refuted", "test": test, "ci_low": low, "ci_high": high, "effect": (low + high) / 2,
                   "treatment": "t", "control": "c", "metric": "m"})  # fmt: skip
    assert report.refutation(v) == found and report.REFUTATION_SHORT[found]
    assert report.refutation(v.copy().replace("refuted", "supported")) == ""


def test_results_without_a_superseded_verdict_are_read(results_dir, tmp_path):
    """The appendix's sort by axis value once raised KeyError on an empty frame."""
    for name in ("runs.csv", "trends.csv", "curves.csv"):
        shutil.copy(results_dir / name, tmp_path / name)
    verdicts = pd.read_csv(results_dir / "verdicts.csv")
    verdicts[verdicts.superseded.isna()].to_csv(tmp_path / "verdicts.csv", index=False)
    frames = report.read_results(tmp_path, ("smoke",))
    assert frames["superseded"].empty and not frames["current"].empty


def test_what_an_arm_ran_says_whether_it_trained():
    """E18's decoding arms read "0 steps, batch 12, lr 0.001, 0 tokens" beside the model they evaluate."""
    trained = pd.DataFrame({"arm": ["greedy"], "model.n_layer": [4], "model.d_model": [128], "data.batch_size": [12],
                            "optim.max_steps": [2000], "optim.lr": [1e-3], "train_tokens": [1_536_000.0]})  # fmt: skip
    assert report.ran(trained) == "ran: L4 d128, 2,000 steps, batch 12, lr 0.001, 1,536,000 tokens"
    evaluated = trained.assign(**{"optim.max_steps": 0, "train_tokens": 0.0})
    assert report.ran(evaluated) == "ran: L4 d128, no training of its own (evaluated)"


def test_the_methods_section_states_each_rule_and_the_trend_table_its_outcome(pdf):
    text = flat("\n".join(pages(pdf)))
    rules = (
        "Superiority",
        "Non-inferiority",
        "Equivalence",
        "two one-sided tests",
        "on learned / plateau / diverged",
        "Hochberg (false discovery rate 5%)",
        "not at least 10% below the unigram baseline",
    )
    for rule in rules:
        assert rule in text, rule
    assert "else [" not in text and "else if" not in text  # Typst code printed as text
    trends = pd.read_csv(FIXTURE / "trends.csv")
    assert "Along the scale axis" in text and f"{trends.trend[0]} (an arm did not learn at 16, 32)" in text


VERDICTS_WORDS = ("supported", "refuted", "inconclusive", "not_decided")


# CI installs a CJK font (.ci/run): there the test must run, not skip.
@pytest.mark.skipif(report.cjk_font() is None and not os.environ.get("CI"), reason="no CJK font installed")
def test_chinese_quotes_render_with_a_real_font(pdf):
    text = "\n".join(pages(pdf))
    assert "多个头" in text  # extracted as text: the glyphs exist in an embedded CJK font
    fonts = {
        str(font.get_object()["/BaseFont"])
        for page in PdfReader(pdf).pages
        for font in page["/Resources"]["/Font"].values()
    }
    assert any("CJK" in f for f in fonts), fonts


def test_without_runs_of_the_chosen_tiers_the_report_says_so(tmp_path, results_dir):
    with pytest.raises(SystemExit, match="no runs of the tiers quick"):
        report.build(results_dir, tmp_path / "r.pdf", tiers=("quick",))


def test_the_per_arm_figure_draws_a_diverged_run_at_the_registrys_value(monkeypatch, tmp_path):
    spec = report.load_spec("attention_heads")
    runs = pd.read_csv(FIXTURE / "runs.csv")
    runs.loc[0, ["status", "final_val_loss"]] = ["diverged", math.nan]  # h1, seed 0
    drawn = []

    def arm_comparison_figure(title, metric, values, path, lines):
        drawn.extend(values)
        path.write_text('<svg width="504pt" height="288pt"></svg>')  # a stand-in: the report reads its proportions
        return path

    monkeypatch.setattr(report, "arm_comparison_figure", arm_comparison_figure)
    report.arms_figure(spec, "smoke", "stdlib_prose", runs.to_dict("records"), {}, tmp_path / "arms.svg")
    expected = {(r.arm, r.seed): r.final_val_loss for r in runs.itertuples() if r.arm in spec.arms_for("smoke")}
    expected["h1", 0] = math.log(256)  # the uniform prediction over the byte vocabulary (ablations.metrics)
    assert {(arm, seed): value for arm, seed, value in drawn} == expected
    assert [arm for arm, _, _ in drawn] == ["h1", "h1", "h8", "h8", "h32", "h32"]  # the experiment file's order
    drawn.clear()  # an arm without the metric in any run (E18's base does not decode): no empty column
    runs.loc[runs.arm == "h32", "final_val_loss"] = math.nan
    runs.loc[runs.index[runs.arm == "h8"][0], "final_val_loss"] = math.nan
    report.arms_figure(spec, "smoke", "stdlib_prose", runs.to_dict("records"), {}, tmp_path / "arms.svg")
    assert [arm for arm, _, _ in drawn] == ["h1", "h1", "h8", "h8"]  # h8's missing seed stays a gap


def test_the_results_table_scores_a_diverged_run_by_the_registry_and_shows_an_unmeasured_metric_as_a_dash():
    """A diverged run's loss counts as ln V; a metric an arm does not measure (E18's trainer arm has no generation
    metric) is "—", where the table once printed "nan [nan, nan]" (and a run that did not finish scored ln V on any
    metric)."""
    spec = report.load_spec("attention_heads")
    runs = pd.read_csv(FIXTURE / "runs.csv")
    runs = runs[runs.arm.isin(["h1", "h8"])].reset_index(drop=True)
    runs.loc[runs.arm == "h1", "status"] = "diverged"
    rows = {r["arm"]: r for r in report.arm_rows(spec, "smoke", runs, "final_val_loss")}
    assert (
        rows["h1"]["mean"] == f"{math.log(256):.4f}"
        and rows["h1"]["ci"] == f"[{math.log(256):.4f}, {math.log(256):.4f}]"
    )
    runs["gen_distinct_2"] = [math.nan if arm == "h8" else 0.5 for arm in runs.arm]
    rows = {r["arm"]: r for r in report.arm_rows(spec, "smoke", runs, "gen_distinct_2")}
    assert (rows["h8"]["mean"], rows["h8"]["ci"]) == ("—", "—")
    assert rows["h1"]["mean"] == "0.5000"  # a non-loss metric a diverged run did measure stays its own


def modules_loaded_by(modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `modules` (a comma-separated list)."""
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {modules}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(loaded.stdout.split())


def test_figures_draw_without_the_report_the_runner_or_torch_mlflow_lightning():
    loaded = modules_loaded_by("ablations.figures")
    heavy = {"torch", "mlflow", "pytorch_lightning", "ablations.report", "ablations.experiment", "ablations.tracking"}
    assert not heavy & loaded


def test_the_report_and_the_export_read_the_store_without_importing_lightning():
    """Lightning (and the torchmetrics and transformers it pulls in) took 5 of the report's 11 s of imports."""
    loaded = modules_loaded_by("ablations.report, ablations.results")
    assert not {"pytorch_lightning", "lightning", "torchmetrics", "transformers"} & loaded


def test_figures_draw_the_tables_interval_not_a_bootstrap():
    """An arm's error bar is the 95% t interval over seeds that the tables print (for 3 seeds a bootstrap is about
    their range)."""
    from statsmodels.stats.weightstats import DescrStatsW

    from ablations.figures import t_interval

    seeds = [1.62, 1.65, 1.66]
    assert t_interval(seeds) == pytest.approx(DescrStatsW(seeds).tconfint_mean(0.05))
    assert t_interval([1.7]) == (1.7, 1.7)
    assert t_interval([21600.0, 21600.0, 21600.0]) == (21600.0, 21600.0)  # no spread: a point, without a warning


def test_the_handbooks_inline_latex_is_printed_as_text_not_source():
    from ablations.spec import load_spec

    assert report.plain_math(r"不用除根号 $\sqrt{d_k}$ 吗, 14–17 % padding") == "不用除根号 √(d_k) 吗, 14–17 % padding"
    for path in sorted((tracking.ROOT / "experiments").glob("*.yaml")):
        claim = load_spec(path.stem).claim
        assert not any(c in report.plain_math(claim[key]) for key in ("zh", "en") for c in "$\\"), path.stem


def test_a_tall_figure_is_narrowed_to_fit_the_page_and_a_wide_one_keeps_its_width(tmp_path):
    """A forest plot of many hypotheses at full width was taller than the page and clipped (issue 17)."""
    import matplotlib.pyplot as plt

    for name, size in (("tall", (3.5, 7)), ("wide", (7, 4))):  # SVGs as the report's figures are written
        fig = plt.figure(figsize=size)
        fig.savefig(tmp_path / f"{name}.svg")
        plt.close(fig)
    tall, wide = (report.figure_entry(tmp_path / f"{n}.svg", "c") for n in ("tall", "wide"))
    assert report.TEXT_WIDTH_CM * tall["width"] / 100 * 2 == pytest.approx(report.MAX_FIGURE_HEIGHT_CM, rel=1e-2)
    assert wide["width"] == 92.0


def test_strip_plots_of_many_arms_print_their_labels_at_the_size_of_a_few_arms(tmp_path):
    """An 11-arm strip plot at the 7-arm plot's 62 % printed its labels at 45 % of their size (issue 17)."""
    names = [f"arm{i}" for i in range(11)]
    for count in (3, 11):
        values = [(name, seed, 2.0 + 0.01 * seed) for name in names[-count:] for seed in range(3)]
        figures.arm_comparison_figure("t", "final_val_loss", values, tmp_path / f"n{count}-arms.svg")
    few, many = (report.figure_entry(tmp_path / f"n{n}-arms.svg", "c") for n in (3, 11))
    few_pt, many_pt = (report.svg_size(tmp_path / f"n{n}-arms.svg")[0] for n in (3, 11))
    assert few["width"] == report.STRIP_WIDTH_PERCENT
    assert many["width"] / many_pt == pytest.approx(few["width"] / few_pt, rel=1e-3)  # one scale: one label size


def test_page_one_has_a_scorecard_whose_counts_are_the_fixtures_verdicts(pdf, results_dir):
    verdicts = pd.read_csv(results_dir / "verdicts.csv", keep_default_na=False)
    current = verdicts[(verdicts.superseded == "") & ~verdicts.treatment.str.contains("@")]
    counted = current.verdict_adjusted.value_counts()
    first = flat(pages(pdf)[0])
    expected = " ".join(str(int(counted.get(v, 0))) for v in ("supported", "refuted", "inconclusive", "not decided"))
    assert f"All {expected}" in first, first
    assert "Read every verdict with its scale" in first


def test_page_one_names_each_experiments_corpora_and_the_experiments_not_yet_run(pdf, results_dir):
    runs = pd.read_csv(results_dir / "runs.csv")
    first = flat(pages(pdf)[0])
    for name, group in runs.groupby("experiment"):
        row = first[first.index(f"{load_spec(name).id} {name}") :][:120]
        assert all(corpus in row for corpus in set(group.corpus)), row
    not_run = [name for name in experiment_names() if name not in set(runs.experiment)]
    assert not_run, "the fixtures leave some experiments without runs"
    listed = first[first.index("Pre-registered, not yet run") :]
    assert all(f"{load_spec(name).id} {name}" in listed for name in not_run), listed
    assert not any(f"{load_spec(name).id} {name}" in listed for name in set(runs.experiment)), listed


def test_page_one_lists_an_experiment_with_runs_but_no_verdict_yet_as_started(results_dir):
    runs, verdicts = pd.read_csv(results_dir / "runs.csv"), pd.read_csv(results_dir / "verdicts.csv")
    specs = {name: load_spec(name) for name in ("attention_heads", "dropout")}
    assert report.scorecard(verdicts, runs, specs)["started"] == []
    first_run_of_dropout = runs.head(1).assign(experiment="dropout")  # one arm's first run: nothing to compare yet
    card = report.scorecard(verdicts, pd.concat([runs, first_run_of_dropout]), specs)
    assert card["started"] == ["E15 dropout"]
    assert "E15 dropout" not in card["not_run"]
    assert [row["experiment"] for row in card["rows"]] == ["E01 attention_heads"]


def test_the_overview_draws_measured_verdicts_only_and_is_left_out_without_any(results_dir, tmp_path):
    verdicts = pd.read_csv(results_dir / "verdicts.csv").fillna({"awaiting": ""})
    verdicts = verdicts[verdicts.superseded.isna()]  # as build() passes them: the current hypotheses
    [entry] = report.overview_figures(verdicts, tmp_path)
    assert (tmp_path / entry["path"]).exists() and "minimum effect" in entry["caption"]
    assert report.overview_figures(verdicts[verdicts.test.isin(["fact", "counts"])], tmp_path) == []


def test_a_long_overview_is_cut_between_experiments_into_legible_figures(tmp_path):
    """27 experiments on two corpora give ~300 rows: one figure would print its labels at 2 pt."""
    sizes = {"E01": 30, "E02": 15, "E03": 10, "E04": 60, "E05": 5}
    rows = [{"experiment_id": e, "hypothesis": f"H{i + 1}", "corpus": "stdlib_prose", "tier": "quick",
             "test": "superiority", "effect": 0.1, "ci_low": 0.05, "ci_high": 0.15, "min_effect": 0.02,
             "verdict": "supported", "verdict_adjusted": "supported", "awaiting": ""}
            for e, n in sizes.items() for i in range(n)]  # fmt: skip
    parts = report.overview_parts(pd.DataFrame(rows).sample(frac=1, random_state=0))  # any order in
    assert [sorted(set(p.experiment_id)) for p in parts] == [["E01", "E02"], ["E03"], ["E04"], ["E05"]]
    entries = report.overview_figures(pd.DataFrame(rows), tmp_path)
    assert [e["caption"].split(".")[0] for e in entries] == [
        "Experiments E01–E02", "Experiment E03", "Experiment E04", "Experiment E05"]  # fmt: skip
    assert "minimum effect m" in entries[0]["caption"] and "first of these figures" in entries[1]["caption"]


def test_a_hypothesis_with_a_published_effect_gets_its_literature_figure(pdf):
    captions = [page for page in pages(pdf) if "beside the published effect of the same comparison" in page]
    assert len(captions) == 1  # the fixture is E01 alone, whose H1 and H2 give Table 3's numbers


def test_the_rerun_appendix_marks_the_verdicts_a_rerun_changed():
    row = {"experiment": "attention_heads", "experiment_id": "E01", "tier": "quick", "corpus": "stdlib_prose",
           "scale": "d_model=128", "code_version_before": "7adb798d4d25"}  # fmt: skip
    sides = {"verdict_adjusted": ("refuted", "inconclusive"), "effect": (-0.03, 0.008), "ci_low": (-0.06, -0.08),
             "ci_high": (-0.001, 0.1), "n_seeds": (3, 5), "superseded": ("", "")}  # fmt: skip
    both = {f"{k}_{when}": v[i] for k, v in sides.items() for i, when in enumerate(("before", "after"))}
    changes = pd.DataFrame([row | both | {"hypothesis": "H4"}, row | both | {"hypothesis": "H1",
                            "verdict_adjusted_after": "refuted"}])  # fmt: skip
    rows = report.rerun_rows(changes)
    assert [(r["hypothesis"], r["before"], r["after"], r["changed"]) for r in rows] == [
        ("H1", "refuted", "refuted", ""), ("H4", "refuted", "inconclusive", "yes")]  # fmt: skip
    assert rows[1]["effect_before"] == "−0.03 [−0.06, −0.001], 3 seeds"


def test_a_rerun_of_an_experiment_without_a_scale_axis_reads_its_blank_scale_as_text(tmp_path, results_dir):
    """An experiment without a scale axis (E06) leaves the rerun table's scale blank: it reads as "", not NaN, which
    the report's JSON cannot hold (it once stopped typst with a parse error)."""
    out = shutil.copytree(results_dir, tmp_path / "results")
    sides = {"verdict_adjusted": "refuted", "effect": -0.9, "ci_low": -1.0, "ci_high": -0.8, "n_seeds": 5,
             "superseded": ""}  # fmt: skip
    row = {"experiment": "attention_heads", "experiment_id": "E01", "tier": "smoke", "corpus": "stdlib_prose",
           "hypothesis": "H1", "scale": "", "code_version_before": "7e3"}  # fmt: skip
    row |= {f"{k}_{when}": v for k, v in sides.items() for when in ("before", "after")}
    pd.DataFrame([row]).to_csv(out / "verdicts_before_rerun.csv", index=False)
    rows = report.rerun_rows(report.read_results(out, ("smoke",))["verdicts_before_rerun"])
    assert (rows[0]["scale"], rows[0]["version"]) == ("", "7e3")
    json.dumps(rows, allow_nan=False)


def test_verdicts_awaiting_their_rerun_are_shown_in_their_section_and_counted_apart(tmp_path, results_dir):
    """Verdicts on runs older than the code (made before an experiment's rerun) are read in their section, raw, under
    a note naming the corpus and version; page 1 counts them in their own column and nowhere else."""
    out = shutil.copytree(results_dir, tmp_path / "results")
    verdicts = pd.read_csv(out / "verdicts.csv", keep_default_na=False)
    waiting = verdicts.superseded == ""
    verdicts["code_version"] = verdicts["code_version"].astype(str)
    why = "its runs are of numerics version 0ld, made before the rerun"
    verdicts.loc[waiting, ["awaiting", "verdict_adjusted", "code_version"]] = [why, "awaiting runs", "0ld"]
    verdicts.to_csv(out / "verdicts.csv", index=False)
    text = pages(report.build(out, tmp_path / "report.pdf", tiers=("smoke",)))
    shown = verdicts[waiting & ~verdicts.treatment.str.contains("@")]
    assert f"All 0 0 0 0 {len(shown)}" in flat(text[0])
    body = flat("\n".join(text))
    assert "Awaiting runs: stdlib_prose (smoke tier, numerics version 0ld): some or all" in body
    part = verdicts_part(text, "E01 attention_heads")
    for v in shown.itertuples():
        assert f"awaiting runs stdlib_prose, smoke tier. {v.hypothesis} (" in part
    assert part.count(f"shown and not counted: {why}.") == len(shown)
    assert "Findings at a glance" not in body  # nothing current is measured: no overview figure
    assert "H1 awaits runs on stdlib_prose. H2 awaits runs on stdlib_prose." in body  # "What it means"


def test_arms_still_falling_at_the_end_are_named_with_their_drop():
    group = pd.DataFrame({"arm": ["a", "a", "b", "c"], "learning_check": ["failed", "passed", "", "passed"],
                          "val_loss_drop_last_quarter": [0.08, 0.02, 0.3, 0.01]})  # fmt: skip
    assert report.still_learning("quick", "prose", group) == [
        "a (prose, quick): 1 of 2 runs, dropping 0.080 nats on average"
    ]


def test_what_it_means_names_the_corpora_decided_and_those_awaiting_runs():
    spec = report.load_spec("attention_heads")
    rows = pd.DataFrame({"hypothesis": ["H1"] * 3, "corpus": ["a", "b", "c"],
                         "verdict_adjusted": ["supported", "supported", "awaiting runs"],
                         "awaiting": ["", "", "its runs are of numerics version 0"]})  # fmt: skip
    assert report.meaning(spec, rows).startswith("H1 is supported on a and b (awaiting runs on c)")
    assert report.meaning(spec, rows[rows.corpus != "c"]).startswith("H1 is supported on a and b")


def test_a_hypothesis_stating_the_documents_opposite_contradicts_it_when_supported_and_never_refutes_it():
    """E10 H1 tests "order comes only from the encoding" as "without any, no worse": supported, it contradicts the
    handbook; refuted, it is no refutation of the handbook (it once read "the document's statement is refuted")."""
    spec = report.load_spec("positional_encoding")
    h1 = next(h for h in spec.hypotheses if h.id == "H1")
    assert h1.opposes_document
    supported = report.document_sentence(h1, "supported", "final_val_loss")
    assert "H1 states the opposite of the document's statement" in supported and "contradicts" in supported
    refuted = report.document_sentence(h1, "refuted", "final_val_loss")
    assert refuted.endswith("its refutation is no refutation of the document.") and "is refuted at" not in refuted
    rows = pd.DataFrame({"hypothesis": ["H1"] * 2, "corpus": ["a", "b"], "verdict_adjusted": ["supported", "refuted"],
                         "awaiting": ["", ""]})  # fmt: skip
    assert "H1 (document, lines 499 and 2719" in report.meaning(spec, rows)
    assert "is contradicted on a at this model size and budget (H1 states its opposite)." in report.meaning(spec, rows)
    own = next(h for h in report.load_spec("attention_heads").hypotheses if h.id == "H1")
    assert report.document_sentence(own, "refuted", "final_val_loss").endswith("at this model size and budget.")
    assert report.document_sentence(own, "supported", "final_val_loss") == ""
    h2 = next(h for h in report.load_spec("embedding_sqrt_dmodel_scale").hypotheses if h.id == "H2")
    assert h2.opposes_document and h2.direction == "equal"  # "no change either way"; refuted: scaling hurt by 0.2
    assert "the effect's sign says" in report.document_sentence(h2, "refuted", "final_val_loss")
    timed = report.document_sentence(own, "refuted", "bench_attention_time_exponent")  # E19: a timing, not a budget
    assert timed.endswith("is refuted at these model and input sizes on this hardware.")
    with pytest.raises(ValueError, match="opposes_document needs a source that starts with 'document'"):
        replace(own, source="Vaswani et al. 2017", opposes_document=True)


def test_a_group_trained_on_several_machines_names_each_with_its_run_count():
    one = pd.DataFrame({"hardware": ["AMD EPYC (2 cores)"] * 3})
    assert report.hardware_counts(one) == "AMD EPYC (2 cores)"
    mixed = pd.DataFrame({"hardware": ["AMD EPYC (2 cores)"] * 2 + ["Intel Xeon (2 cores)"] * 3})
    assert report.hardware_counts(mixed) == "Intel Xeon (2 cores) (3 runs); AMD EPYC (2 cores) (2 runs)"


def test_the_compute_table_sums_worker_hours_with_the_scale_axis_apart_and_skips_copied_runs():
    runs = pd.DataFrame({"experiment": ["attention_heads"] * 4, "corpus": ["c"] * 4, "tier": ["quick"] * 4,
                         "code_version": ["1"] * 4, "arm": ["h1", "h8", "h1@d_model=64", "h2"],
                         "wall_seconds": [3600.0, 1800.0, 900.0, 7200.0], "hardware": ["cpu A"] * 3 + ["cpu B"],
                         "copied_from": ["", "", "", "other_run"]})  # fmt: skip
    row, total = report.compute_rows(runs.assign(code_version=report.NUMERICS_VERSION))
    assert (row["runs"], row["hours"], row["scale_hours"], row["machines"]) == (3, "1.75", "0.25", "cpu A")
    assert (total["runs"], total["hours"]) == (3, "1.75")
    assert report.compute_rows(runs.assign(code_version="old")) == [row | {"version": "old"}]  # no total of old runs


@pytest.mark.parametrize(
    ("test", "low", "high", "effect", "says"),
    [
        ("superiority", 0.001, 0.016, 0.009, "an effect in the predicted direction is shown, but smaller"),
        ("superiority", -0.03, 0.005, -0.01, "the interval holds 0"),
        ("superiority", -0.05, -0.01, -0.03, "against the predicted direction"),
        ("equivalence", -0.13, -0.11, -0.12, "t's m is lower than c's by more than the margin"),
        ("non_inferiority", -0.2, -0.1, -0.15, "t is worse than c by more than the margin"),
    ],
)
def test_a_refutation_says_what_was_found(test, low, high, effect, says):
    v = pd.Series({"verdict": "refuted", "test": test, "ci_low": low, "ci_high": high, "effect": effect,
                   "treatment": "t", "control": "c", "metric": "m"})  # fmt: skip
    assert says in report.refuted_because(v)
    assert report.refuted_because(v.copy().replace({"refuted": "supported"})) == ""


def test_the_trend_table_gives_each_values_effect_and_does_not_call_an_open_slope_contrary():
    trends = pd.DataFrame(
        [
            {
                "experiment": "e",
                "experiment_id": "E1",
                "hypothesis": "H1",
                "corpus": "c",
                "tier": "quick",
                "axis": "model.d_model",
                "slope": 0.001,
                "slope_low": -0.008,
                "slope_high": 0.01,
                "expected": "positive",
                "trend": "holds",
                "matches": False,
                "reason": "",
                "awaiting": "",
            }
        ]
    )
    verdicts = pd.DataFrame([{"experiment": "e", "hypothesis": "H1", "corpus": "c", "tier": "quick",
                              "scale": f"d_model={d}", "effect": e, "ci_low": e - 0.01, "ci_high": e + 0.01,
                              "verdict_adjusted": "inconclusive", "treatment": "t" if d == 128 else f"t@d_model={d}"}
                             for d, e in ((256, 0.03), (64, 0.01), (128, 0.02))])  # fmt: skip
    specs = {"e": load_spec("attention_heads")}  # whose H1 was on its scale axis from the start
    (row,) = report.trend_rows(trends, verdicts, specs)
    assert row["hypothesis"] == "H1"
    assert row["effects"] == ["64: +0.01 [+0, +0.02] inconclusive", "128: +0.02 [+0.01, +0.03] inconclusive",
                              "256: +0.03 [+0.02, +0.04] inconclusive"]  # fmt: skip
    assert (row["trend"], row["matches"]) == ("no trend detected", "not shown")
    (row,) = report.trend_rows(trends.assign(slope_high=-0.001, trend="weakens"), verdicts, specs)
    assert (row["expected"], row["trend"], row["matches"]) == ("rises", "falls", "no")  # one vocabulary
    flat = trends.assign(expected="zero", matches=True)  # a zero slope shown by its equivalence test
    (row,) = report.trend_rows(flat, verdicts, specs)
    assert (row["expected"], row["trend"], row["matches"]) == ("flat", "flat (within the margin)", "yes")
    # E08 H1: a slope below 0, inside the margin
    (row,) = report.trend_rows(flat.assign(trend="weakens"), verdicts, specs)
    assert (row["trend"], row["matches"]) == ("falls, by less than the margin", "yes")
    # a superseded hypothesis has no current verdicts: its trend leaves the table (it stopped the report: E24's H1)
    assert report.trend_rows(trends.assign(hypothesis="H2"), verdicts, specs) == []
    # E23's amendment of 2026-12-05 put H1 on the scale axis after its runs there had been seen: the other values'
    # verdicts and the expected sign are marked, and the sign is not scored against the slope it was written after
    (row,) = report.trend_rows(trends, verdicts, {"e": load_spec("causal_and_padding_masks")})
    assert row["hypothesis"] == "H1" and [e.split(":")[0] for e in row["effects"]] == ["64†", "128", "256†"]
    assert (row["expected"], row["matches"]) == ("rises†", "—")


def test_a_verdict_is_marked_not_pre_registered_at_the_scale_values_an_amendment_added():
    e23 = load_spec("causal_and_padding_masks")

    def row(hypothesis: str, treatment: str):
        return pd.Series({"hypothesis": hypothesis, "treatment": treatment})

    assert report.after_data(row("H1", "unmasked@d_model=64"), e23)  # put on the axis after the runs
    assert not report.after_data(row("H1", "unmasked"), e23)  # the registered size
    assert not report.after_data(row("H2", "unmasked@d_model=64"), e23)  # registered on the axis beforehand


def test_a_hypothesis_an_amendment_added_is_marked_in_the_summary_and_its_section(pdf):
    text = flat(" ".join(pages(pdf)))
    assert "H4†: h8 vs h1" in text  # E01's H4 replaced H3 after the runs had been seen
    assert "H4† (" in text and "added by the amendment of 2026-12-02, after earlier runs had been seen" in text


def test_arms_that_learned_but_no_better_than_the_bigram_baseline_are_named_with_both_losses():
    """Arm c sat on the unigram plateau in one run: it did not learn, which its section says otherwise."""
    group = pd.DataFrame({"arm": ["a", "a", "b", "c", "c"], "status": ["finished"] * 5,
                          "health": ["learned"] * 4 + ["plateau"], "final_val_loss": [2.60, 2.62, 2.1, 2.7, 3.3],
                          "baseline_unigram": [3.3] * 5, "baseline_bigram": [2.6] * 5})  # fmt: skip
    assert report.bigram_level("quick", "prose", group) == [
        {"arm": "a", "corpus": "prose", "tier": "quick", "loss": "2.610", "bigram": "2.600"}]  # fmt: skip


def test_an_arm_that_learned_only_the_domain_is_judged_against_the_domains_bigram_baseline():
    """E24's scratch arms never see prose: their prose loss (3.27, above the plateau line) is no bigram finding; their
    code loss is judged against the code's bigram baseline."""
    group = pd.DataFrame({"arm": ["scratch", "scratch", "tuned"], "status": ["finished"] * 3,
                          "health": ["learned"] * 3, "final_val_loss": [3.27, 3.33, 1.9],
                          "baseline_unigram": [3.3] * 3, "baseline_bigram": [2.6] * 3,
                          "final_domain_val_loss": [2.5, 2.7, 1.5], "baseline_domain_unigram": [3.4] * 3,
                          "baseline_domain_bigram": [2.55] * 3})  # fmt: skip
    expected = {"arm": "scratch", "corpus": "prose's domain", "tier": "quick", "loss": "2.600", "bigram": "2.550"}
    assert report.bigram_level("quick", "prose", group) == [expected]


def test_an_arm_that_trained_on_the_domain_alone_is_not_judged_on_the_general_corpus():
    """E24's scratch arms learn some prose from code (2.8 nats, below the plateau line 2.97): that is no finding about
    a corpus they did not train on. A mixed arm (E09's 1:5) trained on both and is judged on both."""
    group = pd.DataFrame({"arm": ["scratch", "mixed"], "status": ["finished"] * 2, "health": ["learned"] * 2,
                          "final_val_loss": [2.8, 2.8], "baseline_unigram": [3.3] * 2, "baseline_bigram": [2.6] * 2,
                          "final_domain_val_loss": [1.5, 1.5], "baseline_domain_unigram": [3.4] * 2,
                          "baseline_domain_bigram": [2.55] * 2, "data.mix": [math.nan, "1:5"]})  # fmt: skip
    assert [r["arm"] for r in report.bigram_level("quick", "prose", group)] == ["mixed"]
    assert report.domain_only(group[group.arm == "scratch"]) and not report.domain_only(group[group.arm == "mixed"])
    assert not report.domain_only(group.drop(columns=["baseline_domain_unigram"]))  # no domain: the corpus itself


def test_arms_whose_learning_check_could_not_be_made_are_named():
    group = pd.DataFrame({"arm": ["a", "a", "b"], "learning_check": ["unknown", "unknown", "passed"]})
    assert report.unchecked("quick", "prose", group) == ["a (prose, quick): 2 runs"]


def test_runs_scored_on_another_target_are_drawn_apart_from_the_language_model():
    """E10's order arms predict positions (chance ln 64): their baselines and loss axis are not the corpus's."""
    language = [{"arm": "learned", "baseline_unigram": 3.2979541} for _ in range(3)]
    order = [{"arm": "order", "baseline_unigram": math.log(64)} for _ in range(2)]
    benchmark = {"arm": "bench", "baseline_unigram": math.nan}
    tasks = report.by_task([order[0], *language, benchmark, order[1]])
    assert [[r["arm"] for r in task] for task in tasks] == [["learned"] * 3 + ["bench"], ["order"] * 2]
    assert report.by_task([benchmark]) == [[benchmark]]


def test_planned_arms_without_runs_are_named_with_the_hypotheses_that_wait_for_them():
    spec = load_spec("embedding_parameter_reduction")  # 6 arms; H1's scale axis adds tied and rank32 at 64 and 256
    group = pd.DataFrame({"arm": ["tied", "untied", "rank32", "tied@d_model=64"], "model.d_model": [128, 128, 128, 64]})
    line = report.not_run(spec, "quick", "prose", group)
    assert line.startswith("prose (quick tier): 6 of 10 planned arms, rank64 (H2), hash1024 (H3, H4, H5)")
    assert line.endswith("rank32@d_model=64 (H1 scale trend), tied@d_model=256 (H1 scale trend), "
                         "rank32@d_model=256 (H1 scale trend)")  # fmt: skip
    assert report.not_run(spec, "quick", "prose", group[group.arm != "tied@d_model=64"]).count("@") == 4
    everything = pd.DataFrame({"arm": report.planned_arms(spec, "quick", group), "model.d_model": 128})
    assert report.not_run(spec, "quick", "prose", everything) == ""


def test_what_it_means_says_which_hypotheses_have_no_verdict_because_an_arm_has_not_run():
    spec = load_spec("embedding_parameter_reduction")
    rows = pd.DataFrame({"hypothesis": ["H6"], "corpus": ["a"], "verdict_adjusted": ["refuted"], "awaiting": [""]})
    text = report.meaning(spec, rows, frozenset({"rank64", "hash256"}))
    assert "H2, H3, H4 have no verdict yet: an arm each measures has not run." in text  # H1: tied, rank32 both ran
    alone = report.meaning(spec, rows, frozenset({"rank64"}))
    assert "H2 has no verdict yet: an arm it measures has not run." in alone
    assert "no verdict yet" not in report.meaning(spec, rows)


def test_losses_are_labelled_in_the_unit_of_their_tokenizer_and_ranges_name_the_scale_axis():
    assert report.loss_unit(pd.DataFrame({"tokenizer": ["bpe"]})) == "nats per BPE token"
    assert report.loss_unit(pd.DataFrame({"tokenizer": ["byte"]})) == "nats per byte"
    assert report.with_scale_axis("820,352", "820,352") == "820,352"
    assert report.with_scale_axis("820,352", "206,080–3,232,512") == "820,352 (scale axis 206,080–3,232,512)"


def test_an_effect_panel_names_the_level_of_each_interval_it_draws():
    assert figures.interval_label(pd.Series([0.95, 0.95])) == ", 95% CI"
    assert figures.interval_label(pd.Series([0.95, 0.90, math.nan])) == ", 95% CI (equivalence: 90%)"
    assert figures.interval_label(pd.Series([math.nan])) == ""


def test_a_corpus_of_the_report_on_which_an_experiment_has_no_run_is_named():
    runs = pd.DataFrame({"tier": ["quick", "quick"], "corpus": ["prose", "prose"]})
    corpora = {"quick": ["prose", "shakespeare"], "full": ["prose"]}
    assert report.absent_corpora(runs, corpora) == ["shakespeare (quick tier): no run yet"]  # full: not run at all
    assert report.absent_corpora(runs, {"quick": ["prose"]}) == []


def test_a_refutation_by_an_effect_that_went_the_documents_way_says_so_and_a_count_is_scoped_to_its_shapes():
    """E24 H4: fine-tuning lowered the code loss by 0.077 where 0.5 was asked: refuted, but in size only."""
    h4 = next(h for h in report.load_spec("pretrain_then_finetune").hypotheses if h.id == "H4")
    smaller = report.document_sentence(h4, "refuted", "final_domain_val_loss", "smaller")
    assert smaller.endswith("the effect goes the way the statement says, but by less than H4's minimum effect (0.5).")
    assert "the effect goes" not in report.document_sentence(h4, "refuted", "final_domain_val_loss", "opposite")
    rows = pd.DataFrame({"hypothesis": ["H4"], "corpus": ["a"], "verdict": ["refuted"], "verdict_adjusted": ["refuted"],
                         "awaiting": [""], "test": ["superiority"], "ci_low": [0.05], "ci_high": [0.1]})  # fmt: skip
    meaning = report.meaning(report.load_spec("pretrain_then_finetune"), rows)
    assert "is refuted on a at this model size and budget; the effect goes the way the statement says" in meaning
    fact = replace(h4, test="fact")
    assert report.document_sentence(fact, "refuted", "n_params").endswith("is refuted for the shapes counted here.")
    bound = next(h for h in report.load_spec("causal_and_padding_masks").hypotheses if h.id == "H3")  # an identity
    assert bound.test == "bound"
    assert report.document_sentence(bound, "supported", bound.metric).endswith("in every run checked here.")


def test_a_verdict_that_compares_an_arm_no_better_than_a_bigram_model_says_so():
    weak = [{"arm": "lora_r8", "corpus": "shakespeare's domain", "tier": "quick", "loss": "2.545", "bigram": "2.447"}]
    verdict = pd.Series({"treatment": "lora_r8", "control": "full", "corpus": "shakespeare", "tier": "quick"})
    caution = report.bigram_caution(verdict, weak)
    assert caution.startswith(" Caution: lora_r8 is no better than the bigram baseline on shakespeare's domain (2.545")
    assert report.bigram_caution(verdict.replace("shakespeare", "prose"), weak) == ""
    assert report.bigram_caution(verdict.replace("lora_r8", "lora_r32"), weak) == ""


def test_a_timing_decided_differently_on_corpora_that_ran_on_different_machines_names_the_machines():
    """E19 H5: the corpora's runs ran on an Intel and an AMD CPU; a benchmark times the model, not the text."""
    spec = report.load_spec("attention_cost_vs_length")
    h5 = next(h for h in spec.hypotheses if h.id == "H5")
    by_corpus = {"prose": "supported", "shakespeare": "refuted"}
    text = report.depends_on(h5, by_corpus, {"prose": "Intel Xeon", "shakespeare": "AMD EPYC"})
    assert "whose runs ran on different machines (prose on Intel Xeon; shakespeare on AMD EPYC)" in text
    assert report.depends_on(h5, by_corpus, {"prose": "AMD EPYC", "shakespeare": "AMD EPYC"}).endswith(
        "depends on the corpus (supported on prose, refuted on shakespeare)"
    )
    loss = next(h for h in report.load_spec("attention_heads").hypotheses if h.id == "H1")  # a trained quality
    assert "depends on the corpus" in report.depends_on(loss, by_corpus, {"prose": "Intel", "shakespeare": "AMD"})


def test_a_power_laws_effect_is_labelled_as_the_exponent_it_tests_not_as_the_loss():
    spec = report.load_spec("depth_vs_width")  # H1: loss ∝ N^-k fitted over eight shapes
    fitted = report.tested_quantity(spec, "H1", "final_val_loss")
    assert fitted == "exponent k of final_val_loss ∝ non_embedding_params^-k"
    plain = next(h.id for h in spec.hypotheses if not h.fit_arms)
    assert report.tested_quantity(spec, plain, "final_val_loss") == "final_val_loss"


def test_a_second_stage_is_drawn_after_the_steps_of_its_base_and_a_scratch_arm_from_zero():
    spec = report.load_spec("pretrain_then_finetune")  # base 2,000 steps; finetuned from it; scratch from init
    rows = [{"arm": "base", "optim.max_steps": 2000.0}, {"arm": "finetuned", "optim.max_steps": 1000.0}]
    curves = pd.DataFrame({"arm": ["base", "finetuned", "scratch"], "step": [100, 100, 100]})
    shifted, offset = report.after_their_base(spec, curves, rows)
    assert offset == 2000 and list(shifted.step) == [100, 2100, 100]
    one_stage = report.load_spec("attention_heads")
    assert report.after_their_base(one_stage, curves, rows) == (curves, 0)
