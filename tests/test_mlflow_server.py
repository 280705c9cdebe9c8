"""A real `mlflow server` on loopback: a smoke experiment logs to it through MLFLOW_TRACKING_URI."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, store: Path) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'server.db'}",
         "--artifacts-destination", str(store / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no GenAI job workers: tracking only
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    pytest.fail("mlflow server did not come up within 120 s")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    process = start_server(port, tmp_path)
    yield f"http://127.0.0.1:{port}", tmp_path
    process.terminate()
    process.wait(timeout=30)


def test_smoke_experiment_logs_to_a_real_tracking_server(server, cache_dir):
    uri, store = server
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "ABLATIONS_CACHE": cache_dir}
    result = subprocess.run(
        [sys.executable, "-m", "ablations", "experiment=attention_heads", "tier=smoke", "seeds=1", "threads=1"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("attention_heads")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ablations.role` = 'arm'")
    assert sorted(r.data.tags["arm"] for r in runs) == ["h1", "h2", "h32", "h4", "h8"]
    assert all(r.info.status == "FINISHED" and "final_val_loss" in r.data.metrics for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "train_loss")) == 4 for r in runs)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert "verdicts.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert list((store / "artifacts").rglob("verdicts.json")), "artifacts were not proxied to the server's store"


def test_metrics_logged_while_the_server_is_down_are_buffered_and_sent_when_it_returns(tmp_path, monkeypatch):
    from ablations.run_logger import RunLogger
    from ablations.tracking import TrackingServerError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast instead of MLflow's minutes of retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    process = start_server(port, tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    logger = RunLogger(tracking_uri=uri, run_id=run_id)
    logger.log_metrics({"train_loss": 3.0}, step=1)
    process.terminate()
    process.wait(timeout=30)
    with pytest.warns(UserWarning, match="buffering"):
        logger.log_metrics({"train_loss": 2.0}, step=2)
    logger.log_metrics({"train_loss": 1.5}, step=3)
    assert len(logger.unsent) == 2
    with pytest.raises(TrackingServerError, match="2 metrics"):
        logger.flush(tmp_path / "unsent")
    assert len(json.loads((tmp_path / "unsent" / f"{run_id}.json").read_text())) == 2

    process = start_server(port, tmp_path)  # the server comes back with the same store
    try:
        logger.log_metrics({"train_loss": 1.0}, step=4)
        logger.flush(tmp_path / "unsent")
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")]
        assert sorted(history) == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.0)]  # nothing lost, nothing doubled
    finally:
        process.terminate()
        process.wait(timeout=30)
