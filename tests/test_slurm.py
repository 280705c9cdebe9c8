"""`make sweep launcher=slurm` on a real one-node SLURM cluster (tests/slurm_cluster.py) that logs to a real MLflow
server: a job cancelled mid-run leaves its run KILLED; the next sweep trains only the runs not finished, the jobs
leave their logs and the launching process decides the verdicts; an identical sweep then trains nothing.

Skipped where Debian's slurm-wlm and munge are absent; `.ci/run` installs them."""

import os
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient
from slurm_cluster import PARTITION, SlurmCluster, missing
from test_mlflow_server import free_port, start_server

from ablations.store import ROOT

pytestmark = [
    pytest.mark.skipif(bool(missing()), reason=f"a SLURM cluster needs {', '.join(missing())}"),
    pytest.mark.xdist_group("slurm"),
]

ARMS = {"h1", "h2", "h4", "h8", "h32"}
# What a one-node CPU cluster needs instead of conf/hydra/launcher/slurm.yaml's GPU partition; 200 steps
# keep each run long enough to be cancelled while it trains.
SWEEP = ["make", "sweep", "name=attention_heads", "launcher=slurm", "jobs=2", "tier=smoke", "seeds=1",
         "optim.max_steps=200", "threads=1", f"hydra.launcher.partition={PARTITION}", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster_and_server(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("slurm")
    cluster = SlurmCluster.in_temporary_folder().start()
    port = free_port()
    server = start_server(port, folder)
    env = cluster.env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "ABLATIONS_CACHE": cache_dir}
    yield env, folder
    server.terminate()
    server.wait(timeout=30)
    cluster.stop()


def sweep(env: dict, folder) -> subprocess.Popen:
    command = [*SWEEP, f"hydra.sweep.dir={folder / 'jobs'}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def arm_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("attention_heads")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'arm'")


SHARD_0 = {"h1", "h4", "h32"}  # shard 0/2 takes every other run: h1, h4, h32 (shard 1/2: h2, h8)


def cancel_shard_0_while_it_trains(env: dict, client: MlflowClient, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(r.info.status == "RUNNING" and r.data.tags["arm"] in SHARD_0 for r in arm_runs(client)):
        assert time.monotonic() < deadline, "shard 0 never started training"
        time.sleep(0.5)
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split()
    (job,) = [j for j in jobs if j.endswith("_0")]
    subprocess.run(["scancel", job], env=env, check=True)


def wait_for_an_empty_queue(env: dict, timeout: float = 300) -> None:
    """The launcher stops at the first failed job; the other job of the array may still be training."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the jobs did not end"
        time.sleep(1)


def test_a_slurm_sweep_resumes_after_a_cancelled_job_decides_and_then_trains_nothing(cluster_and_server):
    env, folder = cluster_and_server
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])

    cancelled = sweep(env, folder)
    cancel_shard_0_while_it_trains(env, client)
    wait_for_an_empty_queue(env)
    try:  # the launcher fails on the cancelled job, or, where it left no result, learns of it only from SLURM's
        _, stderr = cancelled.communicate(timeout=60)  # accounting, which this test cluster does not run: stop it
    except subprocess.TimeoutExpired:
        cancelled.terminate()
        _, stderr = cancelled.communicate(timeout=60)
    assert cancelled.returncode != 0  # nothing is decided on a partial set of runs
    (killed,) = [r for r in arm_runs(client) if r.info.status == "KILLED"]
    assert killed.data.tags["arm"] in SHARD_0 and killed.data.tags["ablations.status"] == "killed", stderr[-3000:]
    finished_before = {r.data.tags["arm"] for r in arm_runs(client) if r.info.status == "FINISHED"}
    assert {"h2", "h8"} <= finished_before and killed.data.tags["arm"] not in finished_before

    started = time.monotonic()
    resumed = sweep(env, folder)
    stdout, stderr = resumed.communicate(timeout=600)
    print(f"the resumed sweep under SLURM: {time.monotonic() - started:.0f} s")
    assert resumed.returncode == 0, stderr[-3000:]
    finished = [r for r in arm_runs(client) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["arm"] for r in finished) == sorted(ARMS)  # each arm x seed once
    assert stdout.count("reused finished run") == len(ARMS)  # the launching process decides over the jobs' runs
    assert "H1" in stdout
    assert len(list((folder / "jobs" / ".submitit").glob("*/*_log.out"))) == 4  # 2 jobs x 2 sweeps

    again = sweep(env, folder)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert len([r for r in arm_runs(client) if r.info.status == "FINISHED"]) == len(ARMS)  # nothing trained
    assert stdout.count("reused finished run") == len(ARMS)


def test_the_cluster_runs_jobs_on_loopback_only(cluster_and_server):
    env, _ = cluster_and_server
    conf = open(env["SLURM_CONF"]).read()
    assert "NodeAddr=127.0.0.1" in conf and "(127.0.0.1)" in conf
    assert os.path.exists(env["SLURM_CONF"])
