"""The experiment format's scale axis, amendments and learning check, and the trend test over scale."""

import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablations import results
from ablations.decisions import ArmRun, scale_verdicts, trend, trends
from ablations.numerics import NUMERICS_VERSION
from ablations.spec import ExperimentSpec, load_spec
from ablations.verdict import Arm, Hypothesis, decide

LEARNED = {"baseline_unigram": 9.0}  # every loss below 8.1 learned


def spec(**extra) -> ExperimentSpec:
    raw = {
        "id": "E99", "name": "toy", "title": "t", "claim": {"lines": "1"},
        "arms": {"small": {"model.n_head": 1}, "big": {"model.n_head": 8}},
        "hypotheses": [
            {"id": "H1", "statement": "s", "metric": "final_val_loss", "treatment": "big", "control": "small",
             "direction": "lower", "min_effect": 0.0},
            {"id": "H2", "statement": "s", "metric": "final_val_loss", "treatment": "big", "control": "small",
             "direction": "equal", "min_effect": 0.5},
        ],
    } | extra  # fmt: skip
    return ExperimentSpec.from_config(OmegaConf.create(raw))


SCALE = {"axis": "model.d_model", "values": {"quick": [64, 128, 256], "smoke": [16, 32]}, "slope": {"H1": "negative"}}


def test_the_scale_axis_adds_the_scaled_hypotheses_arms_at_the_other_values():
    s = spec(scale=SCALE)
    assert s.scale_arms("quick", 128) == {
        "small@d_model=64": {"model.n_head": 1, "model.d_model": 64},
        "big@d_model=64": {"model.n_head": 8, "model.d_model": 64},
        "small@d_model=256": {"model.n_head": 1, "model.d_model": 256},
        "big@d_model=256": {"model.n_head": 8, "model.d_model": 256},
    }
    assert s.scale_arms("smoke", 32) == {"small@d_model=16": {"model.n_head": 1, "model.d_model": 16},
                                         "big@d_model=16": {"model.n_head": 8, "model.d_model": 16}}  # fmt: skip
    assert s.scale_arms("full", 384) == {}  # no values at that tier
    assert spec().scale_arms("quick", 128) == {}


def test_with_two_stages_each_value_trains_its_own_base_first_and_its_arms_start_from_it():
    s = spec(scale=SCALE, base={"optim.max_steps": 7})
    assert list(s.scale_arms("quick", 128)) == ["base@d_model=64", "small@d_model=64", "big@d_model=64",
                                                "base@d_model=256", "small@d_model=256", "big@d_model=256"]  # fmt: skip
    assert s.scale_arms("quick", 128)["base@d_model=64"] == {"optim.max_steps": 7, "save_checkpoint": True,
                                                            "model.d_model": 64}  # fmt: skip
    assert [s.base_arm(a) for a in ("big@d_model=64", "small", "base", "base@d_model=64")] == [
        "base@d_model=64", "base", None, None]  # fmt: skip
    assert spec(scale=SCALE).base_arm("big@d_model=64") is None  # one stage


def test_an_axis_of_the_second_stage_alone_starts_every_value_from_the_one_base_and_scratch_arms_from_init():
    target = {"axis": "data.domain_tokens_limit", "values": {"quick": [8192, 81920]}, "slope": {"H1": "negative"},
              "base_per_value": False}  # fmt: skip
    s = spec(scale=target, base={"optim.max_steps": 7}, from_scratch=["small"])
    assert list(s.scale_arms("quick", 81920)) == ["small@domain_tokens_limit=8192", "big@domain_tokens_limit=8192"]
    assert [s.base_arm(a) for a in ("big@domain_tokens_limit=8192", "big", "small", "small@domain_tokens_limit=8192",
                                    "base")] == ["base", "base", None, None, None]  # fmt: skip
    with pytest.raises(ValueError, match="from_scratch of toy must name second-stage arms"):
        spec(from_scratch=["small"])  # one stage: nothing to start from
    with pytest.raises(ValueError, match="from_scratch of toy must name second-stage arms"):
        spec(base={}, from_scratch=["tiny"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"scale": SCALE | {"slope": {"H1": "down"}}}, "must be one of"),
        ({"scale": SCALE | {"slope": {"H7": "zero"}}}, "names unknown hypotheses"),
        ({"scale": SCALE | {"values": {"quick": [128]}}}, "two or more distinct positive values"),
        ({"scale": SCALE | {"axis": "model.n_head"}}, "is set by arms"),
        ({"amendments": [{"date": "2026-13-01", "change": "c", "reason": "r"}]}, "must be YYYY-MM-DD"),
        ({"amendments": [{"date": "2026-12-01", "change": "c", "reason": " "}]}, "needs a change and a reason"),
        (
            {"amendments": [{"date": "2026-12-01", "change": "c", "reason": "r", "supersedes": ["H9"]}]},
            r"supersedes \['H9'\]",
        ),
        ({"amendments": [{"date": "2026-12-01", "change": "c", "reason": "r", "adds": ["H9"]}]}, r"adds \['H9'\]"),
        ({"learning_check": {"arms": ["small"]}}, "needs exactly max_drop"),
        ({"learning_check": {"arms": ["small"], "max_drop": 0.05}}, "needs exactly max_drop"),
        ({"scale": SCALE | {"values": {"quik": [64, 128]}}}, r"names tiers \['quik'\] that conf/tier does not define"),
        ({"tier_overrides": {"medium": {"optim.max_steps": 10}}}, r"names tiers \['medium'\]"),
    ],
)
def test_a_malformed_scale_amendment_or_learning_check_is_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        spec(**extra)


def test_an_amendment_marks_the_hypotheses_it_supersedes_with_its_date():
    s = spec(amendments=[{"date": "2026-12-01", "change": "H1 as counts", "reason": "stuck", "supersedes": ["H1"]}])
    assert (s.superseded("H1"), s.superseded("H2")) == ("2026-12-01", "")


def test_a_hypothesis_an_amendment_adds_is_dated_and_the_others_count_as_pre_registered():
    s = spec(amendments=[{"date": "2026-12-02", "change": "H2 added", "reason": "seen", "adds": ["H2"]}])
    assert (s.added("H1"), s.added("H2")) == ("", "2026-12-02")


def scaled_runs(effects: dict[float, list[float]], tier_value: float = 128) -> list[ArmRun]:
    """small at loss 3.0 and big at 3.0 - effect, per seed, at each axis value (own names at the tier's value)."""
    s = spec(scale=SCALE)
    runs = []
    for value, per_seed in effects.items():
        for seed, effect in enumerate(per_seed):
            for arm, loss in (("small", 3.0), ("big", 3.0 - effect)):
                name = arm if value == tier_value else s.scale.arm_name(arm, value)
                runs.append(ArmRun(name, seed, "r", "finished", {"final_val_loss": loss} | LEARNED, True))
    return runs


def test_the_trend_test_recovers_a_known_slope():
    """Effect 0.30 - 0.05 * log2(value / 64) + noise that sums to zero at each value: OLS gives exactly -0.05 per
    doubling (the noise is orthogonal to the axis), and with this little noise the interval excludes 0."""
    noise = [0.004, -0.006, 0.002]
    effects = {v: [0.30 - 0.05 * math.log2(v / 64) + e for e in noise] for v in (64, 128, 256)}
    (t,) = trends(spec(scale=SCALE), "quick", 128, scaled_runs(effects))
    assert t.slope == pytest.approx(-0.05)
    assert t.slope_low < -0.05 < t.slope_high < 0
    assert (t.trend, t.expected, t.matches, t.n_points, t.values) == ("weakens", "negative", True, 9, "64 128 256")
    x = np.log2([64] * 3 + [128] * 3 + [256] * 3)
    y = np.concatenate([effects[v] for v in (64, 128, 256)])
    assert t.slope == pytest.approx(np.polyfit(x, y, 1)[0])


def test_an_effect_that_changes_sign_flips():
    effects = {64: [0.2, 0.21, 0.19], 128: [0.0, 0.01, -0.01], 256: [-0.2, -0.19, -0.21]}
    (t,) = trends(spec(scale=SCALE), "quick", 128, scaled_runs(effects))
    assert (t.trend, t.matches) == ("flips", True)


def test_a_flat_effect_holds_and_does_not_match_a_negative_expectation():
    effects = {64: [0.2, 0.25, 0.15], 128: [0.2, 0.15, 0.25], 256: [0.25, 0.2, 0.15]}
    (t,) = trends(spec(scale=SCALE), "quick", 128, scaled_runs(effects))
    assert t.slope_low < 0 < t.slope_high
    assert (t.trend, t.matches) == ("holds", False)


def test_an_expected_zero_slope_is_shown_only_by_an_equivalence_test_over_the_axis():
    """No trend detected is not a trend excluded: the slope's 90 % interval must lie within H2's margin (0.5) spread
    over the axis's two doublings (0.25 each). A small slope that is detected still matches; a large one does not
    (scaled_runs lowers the treatment's loss by the effect: a growing one is a falling equal-direction effect)."""
    noise = (0.002, -0.001, -0.001)
    zero = SCALE | {"slope": {"H2": "zero"}}

    def trend_of(slope: float, spread: tuple[float, ...] = noise):
        effects = {v: [0.2 + slope * math.log2(v / 64) + e for e in spread] for v in (64, 128, 256)}
        (t,) = trends(spec(scale=zero), "quick", 128, scaled_runs(effects))
        return t

    flat, small, large = trend_of(0.0), trend_of(0.05), trend_of(0.3)
    wide = trend_of(0.0, (1.0, -1.0, 0.0))  # no trend detected, interval about +-1
    assert (flat.trend, small.trend, large.trend, wide.trend) == ("holds", "weakens", "weakens", "holds")
    assert (flat.matches, small.matches, large.matches, wide.matches) == (True, True, False, False)


def test_scale_verdicts_decide_each_value_with_the_scaled_arms():
    effects = {64: [0.2, 0.21, 0.19], 128: [0.1, 0.11, 0.09], 256: [0.0, 0.01, -0.01]}
    by_value = scale_verdicts(spec(scale=SCALE), "quick", 128, scaled_runs(effects))["H1"]
    assert sorted(by_value) == [64, 128, 256]
    assert (by_value[64].treatment, by_value[128].treatment) == ("big@d_model=64", "big")
    assert [by_value[v].verdict for v in (64, 128, 256)] == ["supported", "supported", "inconclusive"]


def test_a_scaled_hypothesis_whose_runs_lack_its_metric_is_left_out_not_a_crash():
    """Runs made before a hypothesis was added (E07's committed runs before its speed benchmark) lack its metric."""
    runs = scaled_runs({64: [0.2, 0.21, 0.19], 128: [0.1, 0.11, 0.09]})
    runs = [replace(r, metrics={}) if r.arm == "big@d_model=64" else r for r in runs]
    by_value = scale_verdicts(spec(scale=SCALE), "quick", 128, runs)["H1"]
    assert sorted(by_value) == [128]


def test_a_run_that_did_not_learn_at_one_value_leaves_the_trend_undecided():
    runs = scaled_runs({64: [0.2, 0.21, 0.19], 128: [0.1, 0.11, 0.09]})
    runs[0] = ArmRun(runs[0].arm, 0, "r", "finished", {"final_val_loss": 8.5} | LEARNED, True)  # small@64 seed 0
    (t,) = trends(spec(scale=SCALE), "quick", 128, runs)
    assert t.trend == "not decided" and t.reason.startswith("64: did not learn: small@d_model=64: 1 of 3 runs plateau")
    h = Hypothesis("H1", "s", "final_val_loss", "big", "small", "lower", 0.0)
    one = {64: decide(h, Arm.learned({0: 3.0}), Arm.learned({0: 2.8}))}
    assert trend(h, "model.d_model", "zero", one, []).trend == "not decided"


def test_the_export_carries_scale_superseded_and_adjusted_verdicts(monkeypatch):
    s = spec(scale=SCALE, amendments=[{"date": "2026-12-01", "change": "c", "reason": "r", "supersedes": ["H2"]}])
    monkeypatch.setattr(results, "load_spec", lambda name: s)
    effects = {64: [0.2, 0.21, 0.19], 128: [0.1, 0.11, 0.09], 256: [0.0, 0.01, -0.01]}
    rows = [{"experiment": "toy", "tier": "quick", "corpus": "c", "arm": r.arm, "seed": r.seed, "status": r.status,
             "model.d_model": float(r.arm.split("=")[1]) if "@" in r.arm else 128.0, "wall_seconds": 1.0,
             "code_version": NUMERICS_VERSION,
             "run_id": f"{r.arm}{r.seed}", **r.metrics} for r in scaled_runs(effects)]  # fmt: skip
    table = results.verdicts(pd.DataFrame(rows))
    assert list(zip(table.hypothesis, table.scale, strict=True)) == [
        ("H1", "d_model=128"), ("H2", "d_model=128"), ("H1", "d_model=64"), ("H1", "d_model=256")]  # fmt: skip
    assert table.superseded.tolist() == ["", "2026-12-01", "", ""]
    h2 = table[table.hypothesis == "H2"].iloc[0]
    assert h2.verdict_adjusted == "superseded" and math.isnan(h2.p_adjusted)
    family = table[table.hypothesis == "H1"]
    assert family.p_adjusted.notna().all() and (family.p_adjusted >= family.p_value).all()
    trend_rows = results.trend_table(pd.DataFrame(rows))
    assert trend_rows[["hypothesis", "trend", "matches", "awaiting"]].values.tolist() == [["H1", "weakens", True, ""]]
    mid_rerun = pd.DataFrame([r for r in rows if r["run_id"] != "big@d_model=2562"])  # one scaled seed to go
    assert results.trend_table(mid_rerun).awaiting.tolist() == [
        "its runs are incomplete: 2 of the 3 seeds of its group so far"
    ]


def test_a_scale_axis_trains_the_scaled_arms_reuses_the_tiers_own_and_exports_the_trend(
    tmp_path, cache_dir, monkeypatch
):
    """E01 at the smoke tier with a scale axis added on the command line: d_model 16 beside the tier's 32. (The
    export reads the experiment file, so there the same values are added to the loaded spec.)"""
    env = os.environ | {"ABLATIONS_CACHE": cache_dir, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    command = [sys.executable, "-m", "ablations", "experiment=attention_heads", "tier=smoke", "threads=1",
               "+experiment.scale.values.smoke=[16,32]"]  # fmt: skip
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "7 arms x 2 seeds" in first.stdout and "h8@d_model=16 seed 1" in first.stdout
    assert "the scaled hypotheses along model.d_model" in first.stdout
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("attention_heads")
    runs = client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'arm'")
    d_model = {r.data.tags["arm"]: r.data.params["model.d_model"] for r in runs}
    assert d_model == {"h1": "32", "h2": "32", "h4": "32", "h8": "32", "h32": "32", "h1@d_model=16": "16",
                       "h8@d_model=16": "16"}  # fmt: skip
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("reused finished run") == 14
    e01 = load_spec("attention_heads")
    scale = replace(e01.scale, values=e01.scale.values | {"smoke": [16, 32]})
    monkeypatch.setattr(results, "load_spec", lambda name: replace(e01, scale=scale))
    written = results.export(tmp_path / "results", client)
    verdicts = pd.read_csv(written["verdicts.csv"])
    assert verdicts[verdicts.hypothesis == "H1"].scale.tolist() == ["d_model=32", "d_model=16"]
    trend_rows = pd.read_csv(written["trends.csv"])
    assert trend_rows[["hypothesis", "axis", "values", "expected"]].values.tolist() == [
        ["H1", "model.d_model", "16 32", "positive"]]  # fmt: skip


def test_a_rerun_replaces_the_runs_of_the_version_before_and_those_are_kept_apart():
    rows = [("e", "quick", "c", arm, seed, version, start)
            for version, start in (("old", 1), ("new", 2)) for arm in ("a", "b") for seed in (0, 1)]  # fmt: skip
    rows += [("f", "quick", "c", "a", 0, "old", 1)]  # never rerun: no "before"
    frame = pd.DataFrame(rows, columns=["experiment", "tier", "corpus", "arm", "seed", "code_version", "start_time"])
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    assert set(results.current_numerics(frame).code_version) == {"new", "old"}  # e's new runs, f's only ones
    assert set(results.current_numerics(frame).query("experiment == 'e'").code_version) == {"new"}
    previous = results.previous_numerics(frame)
    assert set(zip(previous.experiment, previous.code_version, strict=True)) == {("e", "old")} and len(previous) == 4


def test_every_experiments_scale_axis_is_exported_with_its_runs():
    """The trend reads each run's axis value from runs.csv: E24's data.domain_tokens_limit was not exported, so its
    trend lost the tier's own value and read as awaiting runs that could never come."""
    from ablations.results import EXPORTED_PARAMS
    from ablations.store import ROOT

    axes = {spec.scale.axis for path in sorted((ROOT / "experiments").glob("*.yaml"))
            if (spec := load_spec(path.stem)).scale is not None}  # fmt: skip
    assert "data.domain_tokens_limit" in axes
    assert all(axis.startswith(EXPORTED_PARAMS) for axis in axes), sorted(axes)
