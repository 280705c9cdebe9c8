"""`make sweep`: an experiment's runs as Hydra launcher jobs (submitit), then one pass that decides."""

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ablations.tracking import ROOT

SWEEP = ("--multirun", "experiment=attention_heads", "tier=smoke", "seeds=1")


def sweep(*args: str, tmp_path, cache_dir: str) -> subprocess.CompletedProcess:
    env = os.environ | {"ABLATIONS_CACHE": cache_dir, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'sweep.db'}"}
    command = [sys.executable, "-m", "ablations", *SWEEP]
    return subprocess.run(
        [*command, "threads=1", "hydra/launcher=local", f"hydra.sweep.dir={tmp_path / 'jobs'}", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_local_submitit_jobs_train_each_run_once_then_the_launcher_decides(tmp_path, cache_dir):
    first = sweep("shard=0/2,1/2", tmp_path=tmp_path, cache_dir=cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    logs = sorted((tmp_path / "jobs" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # two submitit jobs, each with its own log
    assert all("reused" not in log.read_text() and "finished" in log.read_text() for log in logs)
    assert "H1" in first.stdout and "reused finished run" in first.stdout  # decided here, over the jobs' runs

    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep.db'}")
    experiment_id = client.get_experiment_by_name("attention_heads").experiment_id
    arms = client.search_runs([experiment_id], "tags.`ablations.role` = 'arm'")
    assert sorted((r.data.tags["arm"], r.data.tags["seed"]) for r in arms) == sorted(
        (arm, "0") for arm in ("h1", "h2", "h4", "h8", "h32")
    )  # one run per arm x seed, none twice
    parents = client.search_runs([experiment_id], "tags.`ablations.role` = 'experiment'")
    assert sum("shard" in p.info.run_name for p in parents) == 2
    assert [p.data.tags["verdict.H1"] for p in parents if "verdict.H1" in p.data.tags]  # one decided
    # that a second sweep trains nothing is checked under a real SLURM cluster (test_slurm.py)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["shard=0/3,1/3"], "every share 0/n,...,n-1/n exactly once, not 0/3,1/3"),
        (["shard=0/2,1/2", "optim.lr=1e-3,1e-2"], "may also sweep experiment, nothing else"),
        ([f"shard={','.join(f'{i}/{os.cpu_count() + 1}' for i in range(os.cpu_count() + 1))}"], "oversubscribe"),
    ],
)
def test_a_bad_sharded_sweep_is_refused_before_anything_starts(args, error, tmp_path, cli_in_process, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'sweep.db'}")
    code, _, stderr = cli_in_process(*SWEEP, "hydra/launcher=local", f"hydra.sweep.dir={tmp_path / 'jobs'}", *args)
    assert (code, stderr.count("\n")) == (2, 1) and error in stderr, stderr
    assert not (tmp_path / "sweep.db").exists() and not (tmp_path / "jobs").exists()


def test_a_cluster_sweep_without_a_tracking_server_is_refused(tmp_path, cli_in_process, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli_in_process("-m", "experiment=attention_heads", "shard=0/1", "hydra/launcher=slurm")
    assert code == 2
    assert "need a shared tracking server: export MLFLOW_TRACKING_URI" in stderr


def test_the_slurm_launcher_sends_jobs_to_the_shared_tracking_server(monkeypatch):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["experiment=attention_heads", "hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.name, launcher.gpus_per_node, launcher.tasks_per_node) == ("attention_heads", 1, 1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.cluster:5000")
    assert OmegaConf.to_container(launcher, resolve=True)["setup"] == [
        "export MLFLOW_TRACKING_URI=http://tracking.cluster:5000"
    ]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(InterpolationResolutionError, match="MLFLOW_TRACKING_URI"):
        OmegaConf.to_container(launcher, resolve=True)  # no server: nothing is submitted
