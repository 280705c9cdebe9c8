"""From runs to verdicts: diverged runs, the export's choice of runs, missing arms, and the run key.

Expected values are worked out by hand on small tables, or with scipy directly.
"""

import math

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ablations import results, tracking
from ablations.decisions import ArmRun, unmeasured, verdicts_for
from ablations.numerics import NUMERICS_VERSION
from ablations.plan import arm_config
from ablations.run import arm_run_key
from ablations.spec import load_spec
from ablations.training import derived_metrics
from ablations.verdict import Hypothesis

# --- a diverged run decides nothing ----------------------------------------------------------------


LEARNED = {"baseline_unigram": 3.3}  # a loss of at most 0.9 * 3.3 = 2.97 learned


def test_a_diverged_seed_is_shown_at_ln_v_but_decides_nothing():
    h = Hypothesis("H1", "s", "final_val_loss", "h8", "h1", "lower", 0.02)
    runs = [ArmRun("h8", s, f"t{s}", "finished", {"final_val_loss": v} | LEARNED, True)
            for s, v in enumerate((2.0, 2.1, 2.05))]  # fmt: skip
    runs += [
        ArmRun("h1", 0, "c0", "finished", {"final_val_loss": 2.3} | LEARNED, True),
        ArmRun("h1", 1, "c1", "diverged", {"vocab_size": 256.0}, True),
        ArmRun("h1", 2, "c2", "finished", {"final_val_loss": 2.35} | LEARNED, True),
    ]
    (v,) = verdicts_for([h], runs)
    diffs = [2.3 - 2.0, math.log(256) - 2.1, 2.35 - 2.05]  # control - treatment, per seed
    assert v.effect == pytest.approx(sum(diffs) / 3)
    assert (v.ci_low, v.ci_high) == pytest.approx(stats.ttest_1samp(diffs, 0).confidence_interval(0.95))
    assert v.control_mean == pytest.approx((2.3 + math.log(256) + 2.35) / 3)
    assert (v.verdict, v.reason) == ("not decided", "did not learn: h1: 1 of 3 runs diverged")
    assert (v.control_health, v.treatment_health) == ("2 learned, 1 diverged", "3 learned")


def test_a_run_without_a_baseline_has_unknown_health_and_decides_nothing():
    h = Hypothesis("H1", "s", "final_val_loss", "b", "a", "lower", 0.02)
    runs = [ArmRun(arm, s, "r", "finished", {"final_val_loss": 2.0 + s / 2} | (LEARNED if arm == "b" else {}), True)
            for arm in ("a", "b") for s in range(2)]  # fmt: skip
    (v,) = verdicts_for([h], runs)
    assert (v.verdict, v.reason) == ("not decided", "did not learn: a: 2 of 2 runs unknown")


def test_counts_read_each_runs_health():
    """Post-LN without warm-up: 3 of 5 runs stuck at the unigram loss (3.3 > 2.97), against none with warm-up."""
    h = Hypothesis("H2", "s", "not_learned", "warm", "cold", "lower", 0, test="counts")
    cold = [ArmRun("cold", s, "c", "finished", {"final_val_loss": v} | LEARNED, True)
            for s, v in enumerate((3.3, 3.29, 3.31, 2.5, 2.6))]  # fmt: skip
    warm = [ArmRun("warm", s, "w", "finished", {"final_val_loss": 2.4} | LEARNED, True) for s in range(5)]
    (v,) = verdicts_for([h], cold + warm)
    assert (v.control_mean, v.treatment_mean, v.control_health) == (0.6, 0.0, "3 plateau, 2 learned")
    # one-sided p: C(5,3) C(5,0) / C(10,3) = 10/120; doubled 1/6 -> inconclusive at 5 runs an arm
    assert (v.verdict, v.p_value) == ("inconclusive", pytest.approx(1 / 6))


# --- re-deciding from runs.csv ----------------------------------------------------------------------


def runs_table(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """runs.csv rows of attention_heads (quick tier, stdlib_prose): (arm, seed, status, final_val_loss)."""
    return pd.DataFrame(
        [
            {
                "experiment": "attention_heads",
                "tier": "quick",
                "corpus": "stdlib_prose",
                "arm": arm,
                "seed": seed,
                "status": status,
                "final_val_loss": loss,
                "vocab_size": 256.0,
                "n_params": 800.0,
                "baseline_unigram": 3.3,
                "wall_seconds": 10.0,
                "run_id": f"{arm}-{seed}",
                "code_version": NUMERICS_VERSION,
            }
            for arm, seed, status, loss in rows
        ]
    )


def test_verdicts_are_recomputed_from_runs_csv_with_diverged_rows_at_ln_v():
    nan = float("nan")  # a diverged run has no final_val_loss in runs.csv
    runs = runs_table(
        [("h1", 0, "finished", 2.30), ("h1", 1, "diverged", nan), ("h1", 2, "finished", 2.35)]
        + [("h8", 0, "finished", 2.00), ("h8", 1, "finished", 2.10), ("h8", 2, "finished", 2.05)]
        + [("h32", 0, "finished", 2.20), ("h32", 1, "finished", 2.21), ("h32", 2, "finished", 2.19)]
    )
    table = results.verdicts(runs).set_index("hypothesis")
    assert list(table.index) == ["H1", "H2", "H3", "H4"]
    assert table.loc["H1", "effect"] == pytest.approx((2.3 - 2.0 + math.log(256) - 2.1 + 2.35 - 2.05) / 3)
    assert (table.loc["H1", "verdict"], table.loc["H1", "control_health"]) == ("not decided", "2 learned, 1 diverged")
    assert table.loc["H2", "effect"] == pytest.approx((0.2 + 0.11 + 0.14) / 3)  # h32 - h8
    assert table.loc["H2", "verdict"] == "supported"
    # equal parameter counts: measured as a superiority test (H3), h1's diverged run stops it; as a fact (H4, which
    # an amendment put in H3's place) the counts are compared exactly, whatever the runs' health
    assert (table.loc["H3", "effect"], table.loc["H3", "verdict"]) == (0, "not decided")
    assert (table.loc["H3", "superseded"], table.loc["H3", "verdict_adjusted"]) == ("2026-12-02", "superseded")
    assert (table.loc["H4", "effect"], table.loc["H4", "verdict"], table.loc["H4", "test"]) == (0, "refuted", "fact")


def test_a_hypothesis_whose_arm_has_no_runs_is_named_not_silently_dropped():
    runs = runs_table([(arm, s, "finished", 2.0 + 0.1 * s) for arm in ("h1", "h8") for s in range(3)])
    with pytest.warns(UserWarning, match=r"H2 .*h32"):
        table = results.verdicts(runs)
    assert list(table.hypothesis) == ["H1", "H3", "H4"]


def test_a_hypothesis_on_a_metric_its_runs_never_measured_is_named_and_left_out():
    """A hypothesis added after the runs were made (its metric absent) must not crash the export or be decided."""
    arms = ("h1", "h2", "h4", "h8", "h32")
    runs = runs_table([(arm, s, "finished", 2.0 + 0.1 * s) for arm in arms for s in range(3)]).drop(columns="n_params")
    with pytest.warns(UserWarning) as caught:
        table = results.verdicts(runs)
    assert [str(w.message) for w in caught] == [
        "attention_heads [quick, stdlib_prose]: left out of verdicts.csv, metrics the finished runs did not measure "
        "(runs made before the hypothesis was added): H3 (n_params), H4 (n_params)"
    ]
    assert list(table.hypothesis) == ["H1", "H2", "H5", "H6"]


def test_the_runner_leaves_out_a_hypothesis_whose_reused_runs_lack_its_metric():
    """A run reused from before its benchmark logged a metric (E19's long-range exponent) once stopped the runner,
    after training, with a KeyError reported as bad input; now that hypothesis is named and left undecided."""
    spec = load_spec("attention_cost_vs_length")
    runs = [ArmRun("model", s, f"r{s}", "finished", {"bench_attention_time_exponent": 1.3}, True) for s in range(3)]
    lacking = unmeasured(list(spec.hypotheses), runs)
    assert list(lacking) == ["H2", "H3", "H4", "H5"] and lacking["H4"] == "bench_attention_time_exponent_long"
    decided = verdicts_for([h for h in spec.hypotheses if h.id not in lacking], runs)
    assert [v.hypothesis for v in decided] == ["H1"]


def test_the_export_keeps_the_latest_finished_run_of_each_arm_and_seed():
    client = tracking.client()
    exp_id = tracking.experiment_id(client, "attention_heads")
    tags = {tracking.ROLE: tracking.ARM_ROLE, "experiment": "attention_heads", "tier": "quick",
            "corpus": "stdlib_prose", "corpus_sha256": "c", "tokenizer": "byte", "git_commit": "g",
            "code_version": "v", "hardware": "cpu", "ablations.status": "finished"}  # fmt: skip
    made = {}
    for start, (arm, seed, status, loss) in enumerate(
        [("h1", 0, "FINISHED", 2.5), ("h1", 0, "FINISHED", 2.4), ("h1", 0, "KILLED", 2.3), ("h8", 0, "FINISHED", 2.2)]
    ):
        run = client.create_run(exp_id, start_time=1000 + start, tags=tags | {"arm": arm, "seed": str(seed)})
        client.log_metric(run.info.run_id, "final_val_loss", loss)
        client.set_terminated(run.info.run_id, status)
        made[(arm, loss)] = run.info.run_id
    runs = results.finished_runs(MlflowClient(tracking.tracking_uri())).set_index("arm")
    assert sorted(runs.index) == ["h1", "h8"]
    assert runs.loc["h1", "final_val_loss"] == 2.4  # the later finished run, not the killed one after it
    assert runs.loc["h1", "run_id"] == made[("h1", 2.4)]


def test_a_group_rerun_at_a_new_numerics_version_exports_the_new_runs_only():
    """Old-version runs of arms not yet rerun are not mixed into the new version's verdicts; other groups keep
    theirs."""
    client = tracking.client()
    exp_id = tracking.experiment_id(client, "attention_heads")
    tags = {tracking.ROLE: tracking.ARM_ROLE, "experiment": "attention_heads", "tier": "quick",
            "corpus_sha256": "c", "tokenizer": "byte", "git_commit": "g", "hardware": "cpu",
            "ablations.status": "finished"}  # fmt: skip
    made = [("stdlib_prose", "h1", "1"), ("stdlib_prose", "h8", "1"), ("stdlib_prose", "h1", "2"),
            ("tinyshakespeare", "h1", "1"), ("tinyshakespeare", "h8", "1")]  # fmt: skip
    for start, (corpus, arm, version) in enumerate(made):
        run_tags = tags | {"corpus": corpus, "arm": arm, "seed": "0", "code_version": version}
        run = client.create_run(exp_id, start_time=1000 + start, tags=run_tags)
        client.log_metric(run.info.run_id, "final_val_loss", 2.0)
        client.set_terminated(run.info.run_id, "FINISHED")
    runs = results.finished_runs(MlflowClient(tracking.tracking_uri()))
    exported = sorted(zip(runs.corpus, runs.arm, runs.code_version, strict=True))
    assert exported == [("stdlib_prose", "h1", "2"), ("tinyshakespeare", "h1", "1"), ("tinyshakespeare", "h8", "1")]


# --- the run key -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_config():
    with initialize_config_dir(str(tracking.ROOT / "conf"), version_base="1.3"):
        return compose("config", ["experiment=attention_heads", "tier=smoke"])


HASHES = {"corpus_sha256": "a" * 64}


def key_of(cfg, *overrides: str, seed: int = 0, hashes: dict | None = None) -> str:
    changes = dict(o.split("=", 1) for o in overrides)
    literals = {"true": True, "false": False}
    typed = {k: (int(v) if v.lstrip("-").isdigit() else literals.get(v, v)) for k, v in changes.items()}
    return arm_run_key(arm_config(cfg, "h8", typed, seed), hashes or HASHES)


@pytest.mark.parametrize(
    "override",
    ["model.n_head=4", "model.d_model=64", "optim.lr=0.002", "optim.max_steps=21", "data.batch_size=5",
     "data.tokenizer=char", "train.label_smoothing=0.1", "quantize.method=dynamic_int8", "init_from=abc"],
)  # fmt: skip
def test_a_changed_config_gives_a_new_run_key(smoke_config, override):
    assert key_of(smoke_config, override) != key_of(smoke_config)


def test_the_seed_the_arm_and_the_corpus_content_enter_the_run_key(smoke_config):
    base = key_of(smoke_config)
    assert key_of(smoke_config, seed=1) != base
    assert arm_run_key(arm_config(smoke_config, "h1", {}, 0), HASHES) != base
    assert key_of(smoke_config, hashes={"corpus_sha256": "b" * 64}) != base
    assert key_of(smoke_config, hashes=HASHES | {"domain_sha256": "d" * 64}) != base


@pytest.mark.parametrize(
    "override", ["threads=1", "data.path=/elsewhere/input.txt", "data.cache_dir=/tmp/other", "shard=0/2"]
)
def test_where_and_how_a_run_executes_leaves_its_key_alone(smoke_config, override):
    assert key_of(smoke_config, override) == key_of(smoke_config)


def test_a_setting_added_later_enters_the_key_only_when_switched_on(smoke_config):
    """Off, the key is the one computed before the setting existed, so committed runs stay reusable."""
    from ablations.numerics import ADDED_SETTINGS

    without = smoke_config.copy()
    with open_dict(without):
        for setting in ADDED_SETTINGS:  # every added setting, and the sections made of them alone
            section, _, name = setting.rpartition(".")
            del (without[section] if section else without)[name]
        del without.evaluation
    assert key_of(smoke_config) == key_of(without)
    switched_on = ["benchmark.name=batching", "data.count_epochs_as=fixed", "model.residual=false",
                   "model.n_kv_head=1", "optim.grad_accumulation=2", "evaluation.train_split=true",
                   "evaluation.decoding.rule=greedy", "data.bpe_vocab_size=300", "train.target=position"]  # fmt: skip
    keys = {override: key_of(smoke_config, override) for override in switched_on}
    assert key_of(smoke_config) not in keys.values() and len(set(keys.values())) == len(switched_on)
    assert key_of(smoke_config, "benchmark.repeats=3") == key_of(smoke_config)  # a setting of a switch that is off
    assert key_of(smoke_config, "evaluation.decoding.top_k=5") == key_of(smoke_config)  # ditto


# --- metrics derived from the measured ones ---------------------------------------------------------


def test_derived_rates_logs_and_padding_fraction_by_hand():
    measured = {"train_tokens": 3000.0, "train_seconds": 2.0, "final_kl_to_reference": 0.05}
    derived = derived_metrics(measured, steps=10, train_slots=4000)
    assert derived["train_tokens_per_sec"] == 1500
    assert derived["log_train_tokens_per_sec"] == pytest.approx(math.log(1500))
    assert derived["train_padding_fraction"] == pytest.approx(0.25)
    assert derived["log_kl_to_reference"] == pytest.approx(math.log(0.05))
    assert derived_metrics({"final_kl_to_reference": 0.0}, steps=0, train_slots=0) == {
        "log_kl_to_reference": pytest.approx(math.log(1e-12))
    }  # an evaluation-only arm has no training rates; an exact copy's KL is floored, not -inf


def test_the_export_keeps_summary_metrics_and_model_params_and_records_each_runs_parent(tmp_path):
    client = tracking.client()
    exp_id = tracking.experiment_id(client, "attention_heads")
    tags = {tracking.ROLE: tracking.ARM_ROLE, "experiment": "attention_heads", "tier": "quick", "arm": "h8",
            "corpus": "stdlib_prose", "corpus_sha256": "c", "tokenizer": "byte", "git_commit": "g",
            "code_version": "v", "hardware": "cpu", "ablations.status": "finished"}  # fmt: skip
    parent = client.create_run(exp_id).info.run_id
    for seed, nested in ((0, {"mlflow.parentRunId": parent}), (1, {})):
        run_id = client.create_run(exp_id, tags=tags | {"seed": str(seed)} | nested).info.run_id
        for key, value in {"final_val_loss": 2.0, "val_loss": 2.1, "probe/attn_entropy": 0.5}.items():
            client.log_metric(run_id, key, value)
        client.log_param(run_id, "model.n_head", "8")
        client.log_param(run_id, "train.log_every", "10")
        client.set_terminated(run_id, "FINISHED")
    runs = results.finished_runs(MlflowClient(tracking.tracking_uri()))
    assert list(runs.columns) == results.RUN_COLUMNS + ["final_val_loss", "model.n_head"] + results.PROVENANCE
    assert list(runs.index) == [0, 1] and list(runs.parent_run_id) == [parent, ""]
    empty = results.finished_runs(MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}"))
    assert empty.empty and list(empty.columns) == results.RUN_COLUMNS + results.PROVENANCE


VERDICT_COLUMNS = [
    "experiment", "experiment_id", "tier", "corpus", "hypothesis", "scale", "claim_lines", "source", "statement",
    "metric", "treatment", "control", "direction", "min_effect", "test", "n_seeds", "control_mean", "treatment_mean",
    "effect", "ci_low", "ci_high", "ci_level", "p_value", "verdict", "interval", "control_health", "treatment_health",
    "reason", "p_adjusted", "verdict_adjusted", "superseded", "pre_registered", "code_version", "awaiting",
    "wall_seconds", "evidence",
]  # fmt: skip


def test_verdicts_csv_rows_carry_the_experiment_files_words_sorted_by_group_with_each_groups_wall_time():
    arms = ("h1", "h2", "h4", "h8", "h32")
    rows = [(arm, s, "finished", 2.0 + 0.01 * s + 0.1 * (arm == "h1")) for arm in arms for s in (0, 1)]
    prose = runs_table(rows)
    shakespeare = prose.assign(corpus="tinyshakespeare", wall_seconds=5.0, copied_from="")
    shakespeare.loc[0, "copied_from"] = "7/abc"  # trained for another experiment: its time counts there
    table = results.verdicts(pd.concat([shakespeare, prose], ignore_index=True))  # groups out of order
    assert list(table.columns) == VERDICT_COLUMNS
    assert list(zip(table.corpus, table.hypothesis, strict=True)) == [
        (c, h) for c in ("stdlib_prose", "tinyshakespeare") for h in ("H1", "H2", "H3", "H4", "H5", "H6")
    ]
    assert table.evidence.tolist() == [True] * 12  # quick-tier verdicts are evidence
    spec = load_spec("attention_heads")
    for row, h in zip(table.itertuples(), spec.hypotheses * 2, strict=True):
        assert (row.experiment_id, row.claim_lines) == (spec.id, spec.claim["lines"])
        assert (row.hypothesis, row.source, row.statement) == (h.id, h.source, h.statement)
        assert row.wall_seconds == (100.0 if row.corpus == "stdlib_prose" else 45.0)  # 10 runs, 1 of them copied


def test_verdicts_on_runs_older_than_the_code_await_their_rerun_and_join_no_family():
    """A group whose runs predate the current numerics version was made with the design before its amendments: its
    verdicts are shown raw, read "awaiting runs", and leave the adjustment of the current verdicts unchanged."""
    rows = [(arm, s, "finished", 2.0 + 0.01 * s + 0.1 * (arm == "h1")) for arm in ("h1", "h2", "h4", "h8", "h32")
            for s in range(3)]  # fmt: skip
    current = runs_table(rows)
    older = current.assign(corpus="tinyshakespeare", code_version="ed4e854c50bc")
    alone = results.verdicts(current)
    table = results.verdicts(pd.concat([current, older], ignore_index=True))
    waiting = table[(table.corpus == "tinyshakespeare") & (table.superseded == "")]  # E01 H3: an amendment's
    assert set(waiting.awaiting) == {
        "its runs are of numerics version ed4e854c50bc, made before the rerun at the current code and design"
    }
    assert set(waiting.verdict_adjusted) == {"awaiting runs"} and waiting.p_adjusted.isna().all()
    assert (waiting.verdict != "awaiting runs").all()  # the raw verdict stays to be read
    decided = table[table.corpus == "stdlib_prose"].reset_index(drop=True)
    assert set(decided.awaiting) == {""}
    pd.testing.assert_series_equal(decided.p_adjusted, alone.p_adjusted)  # the family is the current runs' alone
    # the verdicts a rerun replaced are decided as they were, in their own family, for the before/after table
    before = results.verdicts(older, current_version=None)
    assert set(before.awaiting) == {""} and "awaiting runs" not in set(before.verdict_adjusted)


def test_verdicts_written_after_the_data_are_adjusted_apart_from_the_pre_registered_ones():
    """E01's amendments added H4, H5 and H6 after runs had been seen: they form a family of their own, so that the
    pre-registered verdicts' adjusted p values are Benjamini-Hochberg's over the pre-registered p values alone."""
    rows = [(arm, s, "finished", 2.0 + 0.01 * s + 0.03 * (arm == "h1") + 0.02 * (arm == "h32"))
            for arm in ("h1", "h2", "h4", "h8", "h32") for s in range(3)]  # fmt: skip
    table = results.verdicts(runs_table(rows))
    assert table.pre_registered.tolist() == [h not in ("H4", "H5", "H6") for h in table.hypothesis]
    for pre_registered, family in table[table.superseded == ""].groupby("pre_registered"):
        tested = family[family.p_value.notna()]
        expected = multipletests(tested.p_value, alpha=0.05, method="fdr_bh")[1]
        assert tested.p_adjusted.to_numpy() == pytest.approx(expected), pre_registered


def test_a_hypothesis_whose_arms_lack_seeds_of_their_group_awaits_them():
    """Mid-rerun, h32 has 2 of the group's 3 seeds: H2 (h32 vs h8) waits; H1 (h8 vs h1, all seeds) counts."""
    rows = [(arm, s, "finished", 2.0 + 0.01 * s + 0.1 * (arm == "h1")) for arm in ("h1", "h2", "h4", "h8", "h32")
            for s in range(3) if (arm, s) != ("h32", 2)]  # fmt: skip
    table = results.verdicts(runs_table(rows)).set_index("hypothesis")
    assert table.loc["H2", "awaiting"] == "its runs are incomplete: 2 of the 3 seeds of its group so far"
    assert (table.loc["H2", "verdict_adjusted"], table.loc["H1", "awaiting"]) == ("awaiting runs", "")
    assert table.loc["H1", "verdict_adjusted"] in ("supported", "inconclusive", "refuted")


def test_an_experiment_stopped_part_way_awaits_the_seeds_it_planned():
    """Every arm has seeds 0 and 1 of the 3 its invocation planned (stopped after two seeds): no verdict counts yet;
    a run copied from another experiment's 5-seed invocation does not raise what this one planned."""
    rows = [(arm, s, "finished", 2.0 + 0.01 * s + 0.1 * (arm == "h1")) for arm in ("h1", "h2", "h4", "h8", "h32")
            for s in range(3)]  # fmt: skip
    complete = runs_table(rows).assign(seeds_planned=3, copied_from="")
    stopped = complete[complete.seed < 2]
    current = results.verdicts(stopped).query("superseded == ''")
    assert set(current.awaiting) == {"its runs are incomplete: 2 of the 3 seeds of its group so far"}
    assert set(current.verdict_adjusted) == {"awaiting runs"}
    assert set(results.verdicts(complete).awaiting) == {""}
    copied = complete.iloc[:1].assign(seeds_planned=5, copied_from="2/a-run-of-another-experiment")
    assert set(results.verdicts(pd.concat([complete.iloc[1:], copied])).awaiting) == {""}


def test_the_rerun_table_compares_each_hypothesis_once_its_rerun_has_every_seed():
    arms = ("h1", "h2", "h4", "h8", "h32")
    old = runs_table([(arm, s, "finished", 2.2 + 0.01 * s + 0.1 * (arm == "h1")) for arm in arms for s in range(3)])
    new = runs_table([(arm, s, "finished", 2.0 + 0.01 * s + 0.1 * (arm == "h1")) for arm in arms for s in range(3)
                      if (arm, s) != ("h32", 2)])  # fmt: skip
    changes = results.rerun_changes(old.assign(code_version="0ld"), results.verdicts(new)).set_index("hypothesis")
    assert "H2" not in changes.index  # h32 vs h8: two of three seeds so far
    assert changes.loc["H1", "code_version_before"] == "0ld"
    assert changes.loc["H1", ["n_seeds_before", "n_seeds_after"]].tolist() == [3, 3]


def test_the_warning_names_the_experiment_group_hypotheses_and_missing_arms_exactly():
    runs = runs_table([(arm, s, "finished", 2.0 + 0.1 * s) for arm in ("h1", "h32") for s in range(3)])
    with pytest.warns(UserWarning) as caught:
        results.verdicts(runs)
    assert [str(w.message) for w in caught] == [
        "attention_heads [quick, stdlib_prose]: left out of verdicts.csv, arms without runs: "
        "H1 (h8), H2 (h8), H3 (h8), H4 (h8), H5 (h2), H6 (h4)"
    ]


# --- a contrast measured side by side within each treatment run ---------------------------------------------


def test_a_side_by_side_contrast_is_decided_on_the_treatment_runs_alone():
    """The metric is already buckets' log speed-up over fixed, timed in turns in each buckets run: the control
    contributes 0 per seed and neither its values nor its health enter."""
    h = Hypothesis("H5", "s", "bench_log_speedup", "buckets", "fixed", "higher", 0.049, side_by_side=True)
    speedups = (0.12, 0.15, 0.10)
    runs = [ArmRun("buckets", s, f"b{s}", "finished", {"bench_log_speedup": x, "final_val_loss": 2.0} | LEARNED,
                   True) for s, x in enumerate(speedups)]  # fmt: skip
    runs += [ArmRun("fixed", s, f"f{s}", "finished", {"final_val_loss": 3.3} | LEARNED, True) for s in range(3)]
    (v,) = verdicts_for([h], runs)
    assert (v.control_mean, v.effect) == pytest.approx((0.0, sum(speedups) / 3))
    assert (v.ci_low, v.ci_high) == pytest.approx(stats.ttest_1samp(speedups, 0).confidence_interval(0.95))
    assert (v.verdict, v.interval, v.reason) == ("supported", "paired t", "")

    stuck = [replace_metrics(r, final_val_loss=3.3) if r.arm == "buckets" else r for r in runs]
    (v,) = verdicts_for([h], stuck)
    assert (v.verdict, v.reason) == ("not decided", "did not learn: buckets: 3 of 3 runs plateau")


def replace_metrics(run: ArmRun, **metrics: float) -> ArmRun:
    return ArmRun(run.arm, run.seed, run.run_id, run.status, run.metrics | metrics, run.reused)


def test_a_hypothesis_against_a_constant_compares_each_seed_with_it():
    """E19's kind: a measured exponent against the law's (2 for attention), equivalence within the margin."""
    from ablations.decisions import verdicts_for

    learned = {"baseline_unigram": 9.0, "final_val_loss": 2.0}
    runs = [
        ArmRun("model", s, f"r{s}", "finished", learned | {"m": 2.0 + d}, False)
        for s, d in enumerate((0.05, -0.04, 0.02))
    ]
    near = Hypothesis("H", "s", "m", "model", "quadratic", "equal", 0.25, reference=2.0)
    far = Hypothesis("H", "s", "m", "model", "linear", "equal", 0.25, reference=1.0)
    fact = Hypothesis("H", "s", "m", "model", "two", "higher", 0.0, test="fact", reference=2.0)
    (v_near, v_far) = verdicts_for([near, far], runs)
    assert v_near.verdict == "supported" and v_near.control_mean == 2.0 and v_far.verdict == "refuted"
    assert verdicts_for([fact], runs)[0].reason.startswith("a fact varies by seed in model")
