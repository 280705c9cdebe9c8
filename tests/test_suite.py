"""The suite runner: resumable, idempotent, and parallel without changing a single number."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from ablations import results, suite

SMOKE = ["tier=smoke", "seeds=1", "experiments=attention_heads"]  # 5 arms x 1 seed


def run_suite(*args: str, cache_dir: str, uri: str) -> subprocess.CompletedProcess:
    env = os.environ | {"ABLATIONS_CACHE": cache_dir, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", "ablations.suite", *args], env=env, capture_output=True, text=True, timeout=900
    )


def finished_metrics(uri: str) -> dict[tuple[str, str], float]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("attention_heads")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ablations.role` = 'arm'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    keys = [(r.data.tags["arm"], r.data.tags["seed"]) for r in finished]
    assert len(keys) == len(set(keys)), "a run was finished twice"
    return {(r.data.tags["arm"], r.data.tags["seed"]): r.data.metrics["final_val_loss"] for r in finished}


def test_the_suites_own_settings_are_parsed_and_the_rest_go_to_hydra():
    chosen, overrides = suite.suite_settings(["tier=smoke", "experiments=a,b", "seeds=1", "workers=2", "+x.y=1"])
    assert chosen == suite.SuiteSettings(experiments=["a", "b"], workers=2)
    assert overrides == ["tier=smoke", "seeds=1", "+x.y=1"]
    assert suite.suite_settings(["tier=smoke"])[0] == suite.SuiteSettings()  # every experiment, one process


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["workers=0"], "error: workers=0 must be a positive whole number"),
        (["workers=two"], "error: workers=two: Value 'two' of type 'str' could not be converted to Integer"),
    ],
)
def test_bad_workers_end_in_one_line_and_exit_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as ended:
        suite.suite_settings(argv)
    assert ended.value.code == 2 and capsys.readouterr().err == message + "\n"


def suite_in_process(*args: str, monkeypatch) -> int:
    """The suite's refusals, which come before any worker starts, run in this process: its exit code."""
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # the test process keeps its own handlers
    with pytest.raises(SystemExit) as ended:
        suite.main(list(args))
    return ended.value.code


def test_an_override_hydra_refuses_ends_in_one_line_before_anything_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    assert suite_in_process(*SMOKE, "no_such_key=1", monkeypatch=monkeypatch) == 2
    assert capsys.readouterr().err == "error: Could not override 'no_such_key'.\n"
    assert not (tmp_path / "x.db").exists()


def test_a_second_suite_run_trains_nothing_and_says_so(cache_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'suite.db'}"
    first = run_suite(*SMOKE, "threads=1", cache_dir=cache_dir, uri=uri)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trained 5" in first.stdout
    second = run_suite(*SMOKE, "threads=1", cache_dir=cache_dir, uri=uri)
    assert second.returncode == 0
    assert "nothing to train: every run was already finished; reused 5 finished runs" in second.stdout


def test_parallel_workers_give_the_same_runs_and_numbers_as_one_process(cache_dir, tmp_path):
    serial, parallel = f"sqlite:///{tmp_path / 'serial.db'}", f"sqlite:///{tmp_path / 'parallel.db'}"
    assert run_suite(*SMOKE, "threads=1", cache_dir=cache_dir, uri=serial).returncode == 0
    result = run_suite(*SMOKE, "threads=1", "workers=2", cache_dir=cache_dir, uri=parallel)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "H1" in result.stdout  # the verdicts are decided over both workers' runs
    assert finished_metrics(parallel) == finished_metrics(serial)  # bit for bit, one run per arm x seed


def test_workers_that_would_oversubscribe_the_cores_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    cores = os.cpu_count() or 1
    assert suite_in_process(*SMOKE, "threads=1", f"workers={cores + 1}", monkeypatch=monkeypatch) == 2
    stderr = capsys.readouterr().err
    assert "oversubscribe the" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "x.db").exists()


def test_a_suite_killed_mid_run_resumes_with_exactly_one_run_per_arm_and_seed(cache_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    env = os.environ | {"ABLATIONS_CACHE": cache_dir, "MLFLOW_TRACKING_URI": uri}
    args = [*SMOKE, "threads=1", "optim.max_steps=120"]
    process = subprocess.Popen([sys.executable, "-m", "ablations.suite", *args], env=env, stdout=subprocess.DEVNULL)
    client, deadline = MlflowClient(uri), time.monotonic() + 300
    while time.monotonic() < deadline:  # kill while the second run trains
        experiment = client.get_experiment_by_name("attention_heads") if (tmp_path / "killed.db").exists() else None
        if experiment and len(client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'arm'")) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_suite(*args, cache_dir=cache_dir, uri=uri)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reused 1 finished runs" in resumed.stdout
    assert len(finished_metrics(uri)) == 5
    runs = results.finished_runs(client)
    assert len(runs) == 5 and not runs.duplicated(["arm", "seed"]).any()


def test_ctrl_c_stops_a_suite_started_in_the_background(cache_dir, tmp_path):
    """A shell starts `nohup ... &` jobs with SIGINT ignored; the suite must still stop on it and mark the run."""
    uri = f"sqlite:///{tmp_path / 'sigint.db'}"
    env = os.environ | {"ABLATIONS_CACHE": cache_dir, "MLFLOW_TRACKING_URI": uri}
    process = subprocess.Popen(
        [sys.executable, "-m", "ablations.suite", *SMOKE, "threads=1", "optim.max_steps=5000"],
        env=env,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    client, deadline = MlflowClient(uri), time.monotonic() + 300
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("attention_heads") if (tmp_path / "sigint.db").exists() else None
        if experiment and client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'arm'"):
            break
        time.sleep(0.2)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) != 0
    statuses = {
        r.info.status for r in client.search_runs([client.get_experiment_by_name("attention_heads").experiment_id])
    }
    assert statuses == {"KILLED"}
