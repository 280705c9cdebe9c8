"""The smoke tier through the real entry point into a real (temporary) MLflow store."""

import os
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablations import results

# make test runs two workers: this module's tests share one module fixture, so they stay on one worker
pytestmark = pytest.mark.xdist_group("smoke_store")

ARMS = {"h1", "h2", "h4", "h8", "h32"}


def run_cli(*overrides: str, cache_dir: str) -> subprocess.CompletedProcess:
    env = os.environ | {"ABLATIONS_CACHE": cache_dir}
    return subprocess.run(
        [sys.executable, "-m", "ablations", *overrides, "threads=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def arm_runs(client: MlflowClient):
    experiment = client.get_experiment_by_name("attention_heads")
    return client.search_runs([experiment.experiment_id], filter_string="tags.`ablations.role` = 'arm'")


@pytest.fixture(scope="session")  # not module: xdist may interleave other modules' tests, which would tear it down
def smoke_store(tmp_path_factory, cache_dir):
    """One smoke experiment, run once for the module, then run again to check that it resumes."""
    store = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    first = run_cli("experiment=attention_heads", "tier=smoke", cache_dir=cache_dir)
    second = run_cli("experiment=attention_heads", "tier=smoke", cache_dir=cache_dir)
    return uri, first, second


def test_smoke_tier_trains_every_arm_and_seed_and_prints_the_verdicts(smoke_store):
    _, first, _ = smoke_store
    assert first.returncode == 0, first.stderr[-3000:]
    for arm in ARMS:
        assert f"{arm} seed 0" in first.stdout and f"{arm} seed 1" in first.stdout
    for hypothesis in ("H1", "H2", "H3"):
        assert hypothesis in first.stdout
    assert "verdict" in first.stdout


def test_runs_land_in_mlflow_nested_under_a_parent_with_params_metrics_and_tags(smoke_store):
    uri, _, _ = smoke_store
    client = MlflowClient(uri)
    runs = arm_runs(client)
    assert {(r.data.tags["arm"], r.data.tags["seed"]) for r in runs} == {(a, s) for a in ARMS for s in ("0", "1")}
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.data.tags["ablations.role"] == "experiment"
    assert {f"verdict.H{i}" for i in (1, 2, 3)} <= set(parent.data.tags)
    assert {"verdicts.json", "attention_heads.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED" and tags["ablations.status"] == "finished"
        assert {"experiment", "tier", "corpus", "corpus_sha256", "git_commit", "hardware", "seed"} <= set(tags)
        assert tags["tier"] == "smoke" and len(tags["corpus_sha256"]) == 64
        assert params["model.n_head"] == tags["arm"].removeprefix("h")
        assert {"final_val_loss", "final_val_ppl", "n_params", "train_tokens_per_sec", "wall_seconds"} <= set(metrics)
        assert {"baseline_uniform", "baseline_unigram", "baseline_bigram"} <= set(metrics)
        assert tags["ablations.health"] == ("learned" if metrics["final_val_loss"] < 0.9 * metrics["baseline_unigram"]
                                            else "plateau")  # fmt: skip
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == [5, 10, 15, 20]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [10, 20]
        assert len(client.get_metric_history(run.info.run_id, "grad_norm")) == 4


def test_running_it_again_reuses_every_finished_run_and_their_parent(smoke_store):
    uri, first, second = smoke_store
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("reused finished run") == 10
    client = MlflowClient(uri)
    assert len(arm_runs(client)) == 10
    experiment = client.get_experiment_by_name("attention_heads")
    parents = client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'experiment'")
    assert len(parents) == 1  # no empty duplicate
    parent_id = parents[0].info.run_id
    assert f"MLflow parent run {parent_id}\n" in first.stdout
    assert f"MLflow parent run {parent_id} (reused: every run was already finished)" in second.stdout
    assert f"#/experiments/{experiment.experiment_id}/runs/{parent_id}" in second.stdout
    assert "make results report" in second.stdout


def test_the_ui_opens_on_the_runs_and_the_parent_describes_the_claim_and_its_verdicts(smoke_store):
    uri, first, _ = smoke_store
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("attention_heads")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'experiment'")
    description = parent.data.tags["mlflow.note.content"]
    assert "E01 attention_heads" in description and "Claim" in description
    for hypothesis in ("H1", "H2", "H3"):
        verdict = parent.data.tags[f"verdict.{hypothesis}"]
        assert f"| {hypothesis} |" in description and f"| {verdict} |" in description
    assert "| 0.02 |" in description  # the minimum effects
    assert parent.info.run_name == "smoke · stdlib_prose"
    assert {r.info.run_name for r in arm_runs(client)} == {f"{a}/seed{s}" for a in ARMS for s in (0, 1)}
    for run in arm_runs(client):
        assert not any("${" in value for value in run.data.params.values())  # resolved values
        assert "data.cache_dir" not in run.data.params


def test_smoke_verdicts_say_they_are_not_evidence(smoke_store, tmp_path):
    uri, first, _ = smoke_store
    # 20 steps learn nothing: every loss hypothesis is "not decided", and says it is not evidence either
    assert "not evidence about the claim" in first.stdout and "not decided (not evidence)" in first.stdout
    client = MlflowClient(uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("attention_heads").experiment_id], "tags.`ablations.role` = 'experiment'"
    )
    assert parent.data.tags["ablations.evidence"].startswith("no")
    assert "not evidence" in parent.data.tags["mlflow.note.content"]
    results.export(tmp_path, client)
    assert not pd.read_csv(tmp_path / "verdicts.csv").evidence.any()


def test_export_writes_runs_and_verdicts_and_is_deterministic(smoke_store, tmp_path):
    uri, _, _ = smoke_store
    client = MlflowClient(uri)
    results.export(tmp_path / "a", client)
    results.export(tmp_path / "b", client)
    for name in ("runs.csv", "verdicts.csv", "curves.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    runs = pd.read_csv(tmp_path / "a" / "runs.csv")
    assert len(runs) == 10 and set(runs.arm) == ARMS and set(runs.status) == {"finished"}
    verdicts = pd.read_csv(tmp_path / "a" / "verdicts.csv")
    assert list(verdicts.hypothesis) == ["H1", "H2", "H3", "H4", "H5", "H6"]
    assert set(verdicts.verdict) <= {"supported", "refuted", "inconclusive", "not decided"}
    # Anyone can recompute an effect from runs.csv: H1 is mean(h1) - mean(h8) of final_val_loss.
    h1 = verdicts.set_index("hypothesis").loc["H1"]
    by_arm = runs.groupby("arm").final_val_loss.mean()
    assert h1.effect == pytest.approx(by_arm["h1"] - by_arm["h8"])


def test_an_unknown_experiment_exits_non_zero_and_lists_the_valid_ones(cli_in_process):
    code, _, stderr = cli_in_process("experiment=attention_head")
    assert code == 2
    assert "unknown experiment 'attention_head'" in stderr and "attention_heads" in stderr


def test_a_diverging_run_is_recorded_as_diverged_and_the_experiment_finishes(cache_dir, tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    result = run_cli(
        "experiment=attention_heads", "tier=smoke", "seeds=1", "optim.lr=1e5", "optim.min_lr=0", cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "diverged at step" in result.stdout
    runs = arm_runs(MlflowClient(uri))
    assert {r.data.tags["ablations.status"] for r in runs} == {"diverged"}
    assert all(r.info.status == "FINISHED" and "diverged_step" in r.data.metrics for r in runs)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.d_model=36", "must divide"),
        ("optim.lr=-1", "optim.lr"),
        ("model.n_heads=4", "Could not override 'model.n_heads'"),
        ("data=textfile", "data.path"),
        ("data=textfile data.path=/nonexistent/corpus.txt", "does not exist"),
        ("trainer._target_=os.system", "trainer._target_ must be"),
        ("train.probes=[telepathy]", "unknown probes"),
        ("model.n_head=7", "model.n_head is set by arms of attention_heads (h1, h2, h4, h8, h32)"),
    ],
)
def test_bad_overrides_fail_with_one_clear_line(cli_in_process, override, message):
    code, _, stderr = cli_in_process("experiment=attention_heads", "tier=smoke", "seeds=1", *override.split())
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1, stderr
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("attention_heads")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # nothing half-written


def test_the_real_process_refuses_bad_input_with_one_line_exit_2_and_nothing_written(cache_dir):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    result = run_cli("experiment=attention_heads", "tier=smoke", "seeds=1", "model.d_model=36", cache_dir=cache_dir)
    assert (result.returncode, result.stderr) == (2, "error: model.n_head=8 must divide model.d_model=36\n")
    experiment = MlflowClient(uri).get_experiment_by_name("attention_heads")
    assert experiment is None or not MlflowClient(uri).search_runs([experiment.experiment_id])


def test_servers_the_suite_starts_bind_to_loopback_only():
    from ablations.tracking import ROOT

    dry_run = subprocess.run(["make", "-n", "ui"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--host 127.0.0.1" in dry_run


def test_an_unreachable_tracking_server_is_one_clear_error(cli_in_process, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    code, _, stderr = cli_in_process("experiment=attention_heads", "tier=smoke", "seeds=1")
    assert code == 2 and "is unreachable" in stderr and stderr.count("\n") == 1, stderr


def test_same_config_and_seed_give_bit_identical_metrics(smoke_store, cache_dir, tmp_path, monkeypatch):
    uri, _, _ = smoke_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'again.db'}")
    assert run_cli("experiment=attention_heads", "tier=smoke", "seeds=1", cache_dir=cache_dir).returncode == 0
    first, again = MlflowClient(uri), MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    for arm in ARMS:
        a = next(r for r in arm_runs(first) if r.data.tags["arm"] == arm and r.data.tags["seed"] == "0")
        b = next(r for r in arm_runs(again) if r.data.tags["arm"] == arm)
        for metric in ("train_loss", "val_loss", "grad_norm"):
            history = [(m.step, m.value) for m in first.get_metric_history(a.info.run_id, metric)]
            assert history == [(m.step, m.value) for m in again.get_metric_history(b.info.run_id, metric)]
        assert a.data.metrics["final_val_loss"] == b.data.metrics["final_val_loss"]


def test_a_terminated_experiment_marks_its_run_killed_and_resumes_without_duplicates(cache_dir, tmp_path, monkeypatch):
    import signal
    import time

    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ["experiment=attention_heads", "tier=smoke", "seeds=1", "optim.max_steps=150", "threads=1"]
    env = os.environ | {"ABLATIONS_CACHE": cache_dir}
    process = subprocess.Popen([sys.executable, "-m", "ablations", *args], env=env, stdout=subprocess.PIPE, text=True)
    client = MlflowClient(uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until the second arm is training
        experiment = client.get_experiment_by_name("attention_heads") if (tmp_path / "killed.db").exists() else None
        if experiment and any(r.data.tags.get("arm") == "h2" and r.info.status == "RUNNING" for r in arm_runs(client)):
            break
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert process.returncode != 0
    statuses = {(r.data.tags["arm"], r.info.status) for r in arm_runs(client)}
    assert ("h1", "FINISHED") in statuses and ("h2", "KILLED") in statuses

    resumed = run_cli(*args[:-1], cache_dir=cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("reused finished run") == 1  # h1 is not trained again
    finished = [(r.data.tags["arm"], r.data.tags["seed"]) for r in arm_runs(client) if r.info.status == "FINISHED"]
    assert sorted(finished) == [("h1", "0"), ("h2", "0"), ("h32", "0"), ("h4", "0"), ("h8", "0")]
    parents = client.search_runs([arm_runs(client)[0].info.experiment_id], "tags.`ablations.role` = 'experiment'")
    assert [p.info.status for p in parents] == ["FINISHED"]  # the interrupted parent, resumed: one for the invocation
    assert {r.data.tags["mlflow.parentRunId"] for r in arm_runs(client)} == {parents[0].info.run_id}
