"""Every quote of the handbook in the experiment files is found at the line it cites (issue 17: five were off)."""

import json

import pytest
from citations import FIXTURE, HANDBOOK, cited_lines, missing_fragments, quotes


@pytest.fixture(scope="module")
def recorded() -> dict[str, str]:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("quote", quotes(), ids=lambda q: f"{q[0]}-{q[2]}")
def test_every_quote_is_found_at_its_cited_lines(quote, recorded):
    experiment, text, first, last = quote
    numbers = [str(n) for n in range(first, last + 1)]
    if absent := [n for n in numbers if n not in recorded]:
        pytest.fail(f"lines {absent} are not in {FIXTURE.name}: run `python tests/citations.py --write`")
    cited = "".join(recorded[n] for n in numbers)
    assert not missing_fragments(text, cited), f"{experiment}: not at line {first}: {missing_fragments(text, cited)}"


def test_a_quote_at_the_wrong_line_is_caught(recorded):
    text = "较大的Batch大小: 当Batch大小较大时, 模型能够获得更稳定的梯度估计"  # E06's quote, cited at 2195
    assert not missing_fragments(text, recorded["2195"])
    assert missing_fragments(text, recorded["3047"])  # any other cited line


@pytest.mark.skipif(not HANDBOOK.exists(), reason=f"the handbook is not at {HANDBOOK} (set ABLATIONS_HANDBOOK)")
def test_the_recorded_lines_are_the_handbooks(recorded):
    assert cited_lines() == recorded, "the handbook changed or new lines are cited: python tests/citations.py --write"
