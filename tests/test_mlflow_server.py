"""A real `mlflow server` on loopback: a smoke experiment logs to it through MLFLOW_TRACKING_URI."""

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


@pytest.fixture
def server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("mlflow server did not come up within 120 s")
    yield uri, tmp_path
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
    assert sorted(r.data.tags["arm"] for r in runs) == ["h1", "h32", "h8"]
    assert all(r.info.status == "FINISHED" and "final_val_loss" in r.data.metrics for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "train_loss")) == 4 for r in runs)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert "verdicts.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert list((store / "artifacts").rglob("verdicts.json")), "artifacts were not proxied to the server's store"
