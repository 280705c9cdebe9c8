"""key=value settings of the entry points (ablations.settings): typed values, and one line and exit 2 on bad input."""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ablations import settings


@dataclass
class Example:
    out: Path = Path("results")
    mlflow: bool = True
    tiers: list[str] = field(default_factory=lambda: ["quick", "full"])
    workers: int = 1


def test_values_are_read_with_their_types_and_the_rest_keep_their_defaults():
    chosen = settings.parse(["out=/tmp/r.pdf", "mlflow=false", "tiers=[smoke]"], Example(), "")
    assert chosen == Example(Path("/tmp/r.pdf"), False, ["smoke"], 1)


@pytest.mark.parametrize("argv", [["tiers=smoke,quick"], ["tiers=[smoke,quick]"], ["tiers=full", "tiers=smoke,quick"]])
def test_a_list_is_written_as_hydra_writes_one_or_in_brackets_and_the_last_one_counts(argv):
    assert settings.parse(argv, Example(), "").tiers == ["smoke", "quick"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["outt=x"], "error: unknown setting 'outt=x'; valid: out=, mlflow=, tiers=, workers="),
        (["--out", "x"], "error: unknown setting '--out'"),
        (["workers"], "error: unknown setting 'workers'"),
        (["out.name=x"], "error: unknown setting 'out.name=x'"),
        (["workers=two"], "error: workers=two: Value 'two' of type 'str' could not be converted to Integer"),
        (["mlflow=maybe"], "error: mlflow=maybe: Value 'maybe' is not a valid bool"),
        (["tiers=[smoke"], "error: tiers=[smoke: cannot read the value"),
        (["out=${nowhere}"], "error: Interpolation key 'nowhere' not found"),
    ],
)
def test_bad_input_ends_in_one_line_and_exit_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as ended:
        settings.parse(argv, Example(), "")
    assert ended.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(message) and stderr.count("\n") == 1, stderr


def test_help_prints_the_usage():
    with pytest.raises(SystemExit) as ended:
        settings.parse(["mlflow=false", "help"], Example(), "usage: python -m x [out=DIR]")
    assert ended.value.code == 0


@pytest.mark.parametrize(
    ("module", "bad"),
    [
        ("ablations.results", "--out"),  # the old flag
        ("ablations.report", "mlflow=maybe"),  # (the other bad inputs are checked in process, above)
    ],
)
def test_results_and_report_refuse_bad_settings_before_touching_anything(module, bad, tmp_path):
    store = tmp_path / "mlflow.db"
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    command = [sys.executable, "-m", module, f"out={tmp_path / 'out'}", bad]
    ended = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ended.returncode == 2
    assert ended.stderr.startswith("error: ") and ended.stderr.count("\n") == 1, ended.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no output
