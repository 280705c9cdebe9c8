"""The evidence report, built from a small fixture of real smoke-tier results (tests/fixtures/smoke_results)."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from ablations import report

# make test runs two workers: this module's tests share one module fixture, so they stay on one worker
pytestmark = pytest.mark.xdist_group("report_pdf")

FIXTURE = Path(__file__).parent / "fixtures" / "smoke_results"


# One verdict of each kind, so that a report printing the wrong verdict for a hypothesis fails.
VERDICTS = {
    "H1": {"verdict": "supported", "effect": 0.05, "ci_low": 0.03, "ci_high": 0.07, "seeds_to_settle": None},
    "H2": {"verdict": "refuted", "effect": 0.001, "ci_low": -0.01, "ci_high": 0.012, "seeds_to_settle": None},
    "H3": {"verdict": "inconclusive", "effect": 1.0, "ci_low": -0.5, "ci_high": 2.5, "seeds_to_settle": 7},
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for name in ("runs.csv", "curves.csv"):
        shutil.copy(FIXTURE / name, out / name)
    verdicts = pd.read_csv(FIXTURE / "verdicts.csv")
    assert set(verdicts.hypothesis) == set(VERDICTS)
    for hypothesis, values in VERDICTS.items():
        for column, value in values.items():
            verdicts.loc[verdicts.hypothesis == hypothesis, column] = value
    verdicts.to_csv(out / "verdicts.csv", index=False)
    return out


@pytest.fixture(scope="module")
def pdf(tmp_path_factory, results_dir) -> Path:
    return report.build(results_dir, tmp_path_factory.mktemp("report") / "report.pdf", tiers=("smoke",))


def pages(pdf: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(pdf).pages]


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
    verdicts = pd.read_csv(results_dir / "verdicts.csv")
    for experiment in set(verdicts.experiment):
        spec = report.load_spec(experiment)
        part = verdicts_part(text, f"{spec.id} {experiment}")
        ids = list(verdicts[verdicts.experiment == experiment].hypothesis)
        for i, v in enumerate(verdicts[verdicts.experiment == experiment].itertuples()):
            # each line: the verdict badge, corpus and tier, then the sentence that ends in the verdict
            start = part.index(f"{v.verdict} {v.corpus}, {v.tier} tier. {v.hypothesis} ({v.metric}")
            end = part.find(f"tier. {ids[i + 1]} (", start) if i + 1 < len(ids) else len(part)
            sentence = part[start:end]
            assert f": {v.verdict}" in sentence, sentence
            others = {"supported", "refuted", "inconclusive"} - {v.verdict}
            assert not any(f": {o}" in sentence for o in others), sentence
        assert "seeds per arm would likely settle it" in part  # the inconclusive one says what would settle it


def test_summary_lists_every_hypothesis_and_the_numbers_match_verdicts_csv(pdf, results_dir):
    summary = next(t for t in pages(pdf) if t.lstrip().startswith("Summary"))
    verdicts = pd.read_csv(results_dir / "verdicts.csv")
    for v in verdicts.itertuples():
        assert f"{v.hypothesis}:" in summary
        assert report.fmt(v.effect).replace("−", "-") in summary.replace("−", "-")
    assert [w for w in flat(summary).split() if w in VERDICTS_WORDS] == [v["verdict"] for v in VERDICTS.values()]


VERDICTS_WORDS = ("supported", "refuted", "inconclusive")


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
