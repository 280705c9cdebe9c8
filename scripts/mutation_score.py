"""Score the mutants of the code that decides verdicts, from the results `mutmut run` left in mutants/.

    python scripts/mutation_score.py --globs   # the mutant-name globs `make mutation` passes to `mutmut run`
    python scripts/mutation_score.py           # per module: killed / survived / no tests / total / score

mutmut mutates whole files, but only the functions below turn runs into verdicts, so only their mutants are
run (against the fast unit tests chosen in pyproject.toml) and scored. A mutant counts as killed when a test
failed or timed out on it (mutmut's own statuses, read from its meta files); anything else (survived, no
tests, not checked...) is a survivor, and every survivor is listed. Exits 1 if any mutant of the decision
rule (ablations.verdict) survives, except the reviewed equivalent mutants in EQUIVALENT (matched by function
and mutated line, so a renumbering cannot hide a new survivor): a wrong verdict there changes every result of
the suite. Survivors elsewhere are listed but do not fail.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants/src/ablations")
# (label, source file, mutant-name globs, fatal if any survives)
MODULES = [
    ("verdict: the decision rules", "verdict.py", ["ablations.verdict.*"], True),
    ("health: baselines and run health", "health.py", ["ablations.health.*"], False),
    (
        "data: the mixture sampler",
        "data.py",
        ["ablations.data.x_parse_mix__mutmut_*", "ablations.data.xǁMixedWindowsǁ*"],
        False,
    ),
    ("quantization: quantize (a copy)", "quantization.py", ["ablations.quantization.x_quantize__mutmut_*"], False),
    ("decisions: values, arms, scale verdicts, the trend test", "decisions.py", ["ablations.decisions.*"], False),
    (
        "results: verdicts, finished_runs",
        "results.py",
        [
            "ablations.results.x_verdicts__mutmut_*",
            "ablations.results.x_finished_runs__mutmut_*",
            "ablations.results.x__group_verdicts__mutmut_*",
            "ablations.results.x_trend_table__mutmut_*",
        ],
        False,
    ),
]
KILLED = {"killed", "timeout", "caught by type check"}
# Mutants of the decision rules that no input can tell apart from the original, each reviewed:
# (mutated function, a regex the mutated line matches, why it is equivalent).
ZIP_STRICT = r"zip\(.*(strict=(None|False)|, \))"
EQUIVALENT = [
    ("x__counts", ZIP_STRICT, "the zipped lists have equal lengths by construction"),
    ("x_adjust", ZIP_STRICT, "the zipped lists have equal lengths by construction"),
    ("x_adjust", r"if \(tested\) or True else", "multipletests of no p values returns no p values"),
    ("x_adjust", r'"FDR_BH"', "statsmodels reads the method name case-insensitively"),
    ("x__estimate", r"if sign (<= 0|< 1):", "sign is -1 or 1"),
    ("x__estimate", r"_Estimate\(.*None", "with one seed se and df are never read (n < 2 answers first)"),
    (
        "x__two_sided",
        r"(above|below) <= ALPHA / 2",
        "a t test's p is exactly 2.5 % with probability 0; an exact zero-spread p is 0 or 1",
    ),
    (
        "x__equivalence",
        r"p <= ALPHA",
        "a TOST or one-sided t p is exactly 5 % with probability 0; exact ones are 0 or 1",
    ),
    ("x__equivalence", r"abs\(estimate.mean\) <= margin", "at |mean| = m both branches give the same p and verdict"),
    ("x__equivalence", r"estimate.mean >= 0", "the mean is 0 only inside the margin, which the branch before takes"),
    ("xǁ_Estimateǁci", r"self.se (>= 0|> 0\) or True)", "with se = 0 the half-width is 0 either way"),
    ("xǁ_Estimateǁp_below", r", None\)\.p_above", "the interval label of the mirrored estimate is never read"),
]


def equivalence_reason(name: str) -> str | None:
    """Why a surviving mutant is a reviewed equivalent one, or None."""
    function = _by_function_and_number(name)[0].rsplit(".", 1)[-1]
    rules = [(pattern, why) for f, pattern, why in EQUIVALENT if f == function]
    if not rules:
        return None
    shown = subprocess.run([sys.executable.replace("python", "mutmut"), "show", name], capture_output=True, text=True)
    added = [line[1:] for line in shown.stdout.splitlines() if line.startswith("+") and not line.startswith("++")]
    return next((why for pattern, why in rules if any(re.search(pattern, line) for line in added)), None)


def statuses(source: str, globs: list[str]) -> dict[str, str]:
    """mutmut's status of every mutant of `source` whose name matches one of `globs`, in source order."""
    meta = MUTANTS / f"{source}.meta"
    if not meta.exists():
        return {}
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    selected = [name for name in exit_codes if any(fnmatch.fnmatchcase(name, g) for g in globs)]
    return {name: status_by_exit_code[exit_codes[name]] for name in sorted(selected, key=_by_function_and_number)}


def _by_function_and_number(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def _ranges(numbers: list[int]) -> str:
    """1,2,3,5 -> "1-3,5": the mutants of a function nothing tests, in one line."""
    runs: list[list[int]] = []
    for k in sorted(numbers):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--globs", action="store_true", help="print the globs to run, one a line, and exit")
    args = parser.parse_args()
    if args.globs:
        print("\n".join(g for *_, globs, _ in MODULES for g in globs))
        return 0
    if not MUTANTS.is_dir():
        print("no mutants/ here: run `make mutation` (or mutmut run) first", file=sys.stderr)
        return 2

    failed, lines = False, []
    print(f"{'module':<40} {'killed':>6} {'survived':>8} {'no tests':>8} {'total':>5} {'score':>6}")
    for label, source, globs, fatal in MODULES:
        found = statuses(source, globs)
        killed = [name for name, status in found.items() if status in KILLED]
        untested = [name for name, status in found.items() if status == "no tests"]
        survived = {name: status for name, status in found.items() if status not in KILLED and status != "no tests"}
        if fatal:  # reviewed equivalent mutants count as killed and are listed with their reason
            reasons = {name: equivalence_reason(name) for name in survived}
            equivalent = {name: why for name, why in reasons.items() if why}
            lines += [f"  {name}  [equivalent: {why}]" for name, why in equivalent.items()]
            survived = {name: status for name, status in survived.items() if name not in equivalent}
            killed += list(equivalent)
        score = f"{100 * len(killed) / len(found):5.1f}%" if found else "     -"
        print(f"{label:<40} {len(killed):>6} {len(survived):>8} {len(untested):>8} {len(found):>5} {score:>6}")
        mark = "  <- decision rule" if fatal else ""
        lines += [f"  {name}  [{status}]{mark}" for name, status in survived.items()]
        # mutmut maps tests to whole functions: "no tests" means no selected test calls the function at all
        by_function: dict[str, list[int]] = {}
        for name in untested:
            function, number = _by_function_and_number(name)
            by_function.setdefault(function, []).append(number)
        lines += [f"  {f}__mutmut_{{{_ranges(n)}}}  [no tests]{mark}" for f, n in by_function.items()]
        if fatal and (len(killed) < len(found) or not found):  # no mutants would mean the globs match nothing
            failed = True
    if lines:
        print("\nsurviving mutants (see one with `.venv/bin/mutmut show NAME`):", *lines, sep="\n")
    if failed:
        print("\nFAIL: every mutant of ablations.verdict must be killed by tests/test_verdict.py", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
