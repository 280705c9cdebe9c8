"""trainer=ddp on two CPU processes (gloo): one set of metrics in MLflow, the fit of one process."""

import os

import pytest
from mlflow.tracking import MlflowClient
from test_end_to_end import run_cli

# One of the experiment's three runs (shard 1/3: the arm ls01, label smoothing 0.1): each data-parallel fit starts
# two processes of its own, which pay the imports of torch, Lightning and MLflow again.
COMMON = ["experiment=label_smoothing", "tier=smoke", "seeds=1", "optim.max_steps=60", "shard=1/3"]


def arm_histories(uri: str) -> dict[str, tuple[float, list[tuple[int, float]], float]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("label_smoothing")
    runs = client.search_runs([experiment.experiment_id], "tags.`ablations.role` = 'arm'")
    return {
        r.data.tags["arm"]: (
            r.data.metrics["final_val_loss"],
            sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train_loss")),
            r.data.metrics["train_tokens"],
        )
        for r in runs
        if r.info.status == "FINISHED"
    }


def test_ddp_on_two_cpu_processes_logs_once_from_rank_zero_and_trains_as_one_process(cache_dir, tmp_path, monkeypatch):
    """Two ranks of batch 4 share out the batches of 8 that one process draws, and average their gradients:
    the same fit as one process of batch 8, up to the order of floating-point sums."""
    ddp_uri, single_uri = f"sqlite:///{tmp_path / 'ddp.db'}", f"sqlite:///{tmp_path / 'single.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ddp_uri)
    ddp = run_cli(*COMMON, "trainer=ddp", "trainer.devices=2", "data.batch_size=4", cache_dir=cache_dir)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", single_uri)
    single = run_cli(*COMMON, "data.batch_size=8", cache_dir=cache_dir)  # the same global batch
    assert single.returncode == 0, single.stderr[-3000:]
    parallel, one = arm_histories(ddp_uri), arm_histories(single_uri)
    assert set(parallel) == set(one) == {"ls01"}
    for arm in one:
        ddp_loss, ddp_curve, ddp_tokens = parallel[arm]
        loss, curve, tokens = one[arm]
        assert [s for s, _ in ddp_curve] == [s for s, _ in curve] == list(range(5, 61, 5))  # once per step: rank 0 only
        assert ddp_tokens == tokens == 60 * 8 * 32  # both ranks' tokens counted
        assert ddp_loss == pytest.approx(loss, abs=1e-4)  # the same weights at the end: the same final loss


def test_a_run_that_diverges_under_ddp_is_recorded_as_diverged_on_every_rank_without_hanging(cache_dir, tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    result = run_cli(*COMMON, "trainer=ddp", "trainer.devices=2", "data.batch_size=4", "optim.lr=1e5",
                     "optim.min_lr=0", cache_dir=cache_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("label_smoothing").experiment_id
    runs = client.search_runs([experiment_id], "tags.`ablations.role` = 'arm'")
    assert len(runs) == 1 and {r.data.tags["ablations.status"] for r in runs} == {"diverged"}
    for run in runs:  # the ranks agreed on the step, and stopped there instead of training on to max_steps
        assert {m.value for m in client.get_metric_history(run.info.run_id, "diverged_step")} == {
            run.data.metrics["diverged_step"]
        }
        assert run.data.metrics["diverged_step"] < 60 and "final_val_loss" not in run.data.metrics
