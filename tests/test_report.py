"""The evidence report, built from a small fixture of real smoke-tier results (tests/fixtures/smoke_results)."""

from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from ablations import report

FIXTURE = Path(__file__).parent / "fixtures" / "smoke_results"


@pytest.fixture(scope="module")
def pdf(tmp_path_factory) -> Path:
    return report.build(FIXTURE, tmp_path_factory.mktemp("report") / "report.pdf", tiers=("smoke",))


def pages(pdf: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(pdf).pages]


def test_report_has_a_section_per_experiment_with_each_verdict(pdf):
    text = pages(pdf)
    runs = pd.read_csv(FIXTURE / "runs.csv")
    verdicts = pd.read_csv(FIXTURE / "verdicts.csv")
    for experiment in set(runs.experiment):
        spec = report.load_spec(experiment)
        section = [t for t in text if f"{spec.id} {experiment}" in t and "The claim" in t]
        assert len(section) == 1, f"no page opens the section of {experiment}"
        body = "\n".join(text[text.index(section[0]) :])
        for v in verdicts[verdicts.experiment == experiment].itertuples():
            assert f"{v.hypothesis} ({v.metric}" in body
            assert v.verdict in body


def test_summary_lists_every_hypothesis_and_the_numbers_match_verdicts_csv(pdf):
    summary = next(t for t in pages(pdf) if t.lstrip().startswith("Summary"))
    verdicts = pd.read_csv(FIXTURE / "verdicts.csv")
    for v in verdicts.itertuples():
        assert f"{v.hypothesis}:" in summary
        assert report.fmt(v.effect).replace("−", "-") in summary.replace("−", "-")


@pytest.mark.skipif(report.cjk_font() is None, reason="no CJK font installed")
def test_chinese_quotes_render_with_a_real_font(pdf):
    text = "\n".join(pages(pdf))
    assert "多个头" in text  # extracted as text: the glyphs exist in an embedded CJK font
    fonts = {
        str(font.get_object()["/BaseFont"])
        for page in PdfReader(pdf).pages
        for font in page["/Resources"]["/Font"].values()
    }
    assert any("CJK" in f for f in fonts), fonts


def test_without_runs_of_the_chosen_tiers_the_report_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no runs of the tiers quick"):
        report.build(FIXTURE, tmp_path / "r.pdf", tiers=("quick",))
