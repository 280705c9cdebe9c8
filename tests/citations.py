"""The handbook's lines that the experiment files quote, kept in tests/fixtures/cited_lines.json.

Every line of an experiment's `claim.zh` ends with the line (or range) of the handbook it quotes, e.g. "... (2945)"
or "... (1012-1014)"; "……" marks an elision inside a quote. The fixture holds the text of exactly the cited lines,
so that the quotes are checked in any clone (the handbook itself lies outside the project, at
../shared/claims/source-zh.txt, or where ABLATIONS_HANDBOOK points). After citing new lines:

    python tests/citations.py --write
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "cited_lines.json"
HANDBOOK = Path(os.environ.get("ABLATIONS_HANDBOOK", ROOT.parent / "shared" / "claims" / "source-zh.txt"))
MARKER = re.compile(r"^(?P<text>.*?)\s*\((?P<first>\d+)(?:-(?P<last>\d+))?\)\s*$")
ELISION = "……"


def quotes() -> list[tuple[str, str, int, int]]:
    """(experiment, quoted text, first line, last line) of every line of every claim.zh; a line without a
    marker is an error."""
    found = []
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        for line in yaml.safe_load(path.read_text())["experiment"]["claim"]["zh"].splitlines():
            if not (match := MARKER.match(line)):
                raise ValueError(f"{path.stem}: a quote without its line number at the end: {line[:50]}")
            first = int(match["first"])
            found.append((path.stem, match["text"], first, int(match["last"] or first)))
    return found


def squeezed(text: str) -> str:
    """Without whitespace and Markdown bold: the handbook spaces text unevenly and bolds phrases."""
    return re.sub(r"\s+|\*\*", "", text)


def missing_fragments(text: str, cited: str) -> list[str]:
    """The parts of a quote (split at elisions) that the cited text does not contain."""
    return [part for part in text.split(ELISION) if squeezed(part) and squeezed(part) not in squeezed(cited)]


def cited_lines(handbook: Path = HANDBOOK) -> dict[str, str]:
    """Line number -> text of every line the experiment files cite, read from the handbook."""
    lines = handbook.read_text().splitlines()
    cited = {n for _, _, first, last in quotes() for n in range(first, last + 1)}
    return {str(n): lines[n - 1] for n in sorted(cited)}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    FIXTURE.write_text(json.dumps(cited_lines(), ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {len(json.loads(FIXTURE.read_text()))} lines of {HANDBOOK}")
