"""MLflow plumbing: where the store is, what every run is tagged with, and how finished runs are found."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ablations import store
from ablations.numerics import NUMERICS_VERSION

ROOT = store.ROOT

ROLE, ARM_ROLE, EXPERIMENT_ROLE = "ablations.role", "arm", "experiment"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set (a shared server), else the SQLite store inside the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or PROJECT_STORE_URI


PROJECT_STORE_URI = f"sqlite:///{store.DATABASE}"


class TrackingServerError(ValueError):
    """MLFLOW_TRACKING_URI names a server that does not answer."""


def client() -> MlflowClient:
    """A client of the store, checked first: a server that does not answer is a clear error, not minutes of retries."""
    uri = tracking_uri()
    if uri == PROJECT_STORE_URI:
        store.make_portable()  # a store written by an older version names its artifacts by absolute paths
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:  # noqa: S310
                response.read()
        except OSError as err:
            raise TrackingServerError(
                f"the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI) is unreachable: {err}"
            ) from None
    mlflow.set_tracking_uri(uri)
    return StoreClient(uri)


@contextmanager
def uninterrupted(hold: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block has run, then deliver them (`hold` false: a plain block).

    An interrupt that lands inside a store call leaves SQLite's transaction open on a pooled connection (MLflow
    rolls back on Exception, not on KeyboardInterrupt): the process keeps the database's lock, and marking its
    run KILLED then fails with "database is locked"."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    # Only the main thread receives signals; a handler installed outside Python (None) cannot be put back.
    if not hold or threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    held: list[int] = []
    for number in previous:
        signal.signal(number, lambda number, _frame: held.append(number))
    try:
        yield
    finally:
        try:  # both handlers go back even if a signal arrives for the first one meanwhile
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
        finally:
            signal.signal(signal.SIGTERM, previous[signal.SIGTERM])
        for number in held:
            signal.raise_signal(number)


def _uninterrupted_call(method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self: StoreClient, *args: Any, **kwargs: Any) -> Any:
        with uninterrupted(self.holds_interrupts):
            return method(self, *args, **kwargs)

    return call


class StoreClient(MlflowClient):
    """An MlflowClient whose every call to a SQLite store runs whole: Ctrl-C or a scheduler's SIGTERM takes effect
    after it. A tracking server keeps its own transactions, so there an interrupt is not held (a call that retries
    an unreachable server for minutes must not outlast a scheduler's kill)."""

    def __init__(self, tracking_uri: str | None = None, registry_uri: str | None = None):
        super().__init__(tracking_uri, registry_uri)
        self.holds_interrupts = self.tracking_uri.startswith("sqlite:")


for _name, _method in vars(MlflowClient).items():
    if inspect.isfunction(_method) and not _name.startswith("_"):
        setattr(StoreClient, _name, _uninterrupted_call(_method))


# MLflow's UI opens an experiment of this kind on its runs table, not on its GenAI traces page.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        for key, value in EXPERIMENT_KIND.items():
            if found.tags.get(key) != value:  # an experiment made by an older version
                mlflow_client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    uri = mlflow_client.tracking_uri
    # The project's store addresses its artifacts relative to itself (ablations.store); another local SQLite
    # store keeps them beside its database; a server decides for itself.
    if uri == PROJECT_STORE_URI:
        location = store.artifact_location(name)
    elif uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / name).as_uri()
    else:
        location = None
    return mlflow_client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def environment_tags() -> dict[str, str]:
    return {
        "git_commit": git_commit(),
        "code_version": NUMERICS_VERSION,
        "hardware": hardware(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values, as MLflow params."""
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def run_key(config: dict[str, Any]) -> str:
    """Identity of a run: its resolved config plus the version of the numbers (ablations.numerics).

    The run's budget and every setting enter through its resolved config; a change of code that changes a
    number bumps NUMERICS_VERSION (the golden-number test demands it), and nothing else makes a run stale."""
    blob = json.dumps({"config": config, "code": NUMERICS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mark_abandoned_runs(mlflow_client: MlflowClient, exp_id: str, key: str) -> None:
    """Runs with this key still RUNNING were killed before they could end (SIGKILL, power loss): say so."""
    for run in mlflow_client.search_runs(
        [exp_id], filter_string=f"tags.`ablations.run_key` = '{key}' and attributes.status = 'RUNNING'"
    ):
        mlflow_client.set_tag(run.info.run_id, "ablations.status", "killed")
        mlflow_client.set_terminated(run.info.run_id, "KILLED")


def find_finished_run(mlflow_client: MlflowClient, exp_id: str, key: str) -> Run | None:
    runs = mlflow_client.search_runs(
        [exp_id],
        filter_string=f"tags.`ablations.run_key` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


CHECKPOINT_DIR, CHECKPOINT_FILE, CHECKPOINT_TAG = "checkpoint", "model.pt", "checkpoint_sha256"


def find_finished_run_elsewhere(mlflow_client: MlflowClient, exp_id: str, key: str) -> Run | None:
    """The newest finished run with this key in another experiment of the store: the same config, corpora and code
    (two experiments that share an arm, such as one base model)."""
    others = [e.experiment_id for e in mlflow_client.search_experiments() if e.experiment_id != exp_id]
    runs = mlflow_client.search_runs(
        others,
        filter_string=f"tags.`ablations.run_key` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    ) if others else []  # fmt: skip
    return runs[0] if runs else None


COPIED_FROM = "ablations.copied_from"  # "<experiment id>/<run id>" of the run a copy's numbers come from
PROVENANCE_TAGS = ("git_commit", "hardware", "ablations.status", "ablations.health")


def copy_run_record(mlflow_client: MlflowClient, source: Run, run_id: str) -> None:
    """Give the open run `run_id` everything `source` recorded: its params, every metric's whole history, where and
    by what code it ran, its checkpoint; then end it as source ended. Its own tags (experiment, arm, key) stay."""
    params = sorted(source.data.params.items())
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=[Param(k, v) for k, v in params[i : i + 100]])
    points = [m for key in source.data.metrics for m in mlflow_client.get_metric_history(source.info.run_id, key)]
    for i in range(0, len(points), 1000):
        mlflow_client.log_batch(run_id, metrics=points[i : i + 1000])
    for tag in PROVENANCE_TAGS:
        if tag in source.data.tags:
            mlflow_client.set_tag(run_id, tag, source.data.tags[tag])
    if CHECKPOINT_TAG in source.data.tags:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}"
            local = mlflow_client.download_artifacts(source.info.run_id, path, tmp)
            mlflow_client.log_artifact(run_id, local, CHECKPOINT_DIR)
        mlflow_client.set_tag(run_id, CHECKPOINT_TAG, source.data.tags[CHECKPOINT_TAG])
    mlflow_client.set_tag(run_id, COPIED_FROM, f"{source.info.experiment_id}/{source.info.run_id}")
    mlflow_client.set_terminated(run_id, "FINISHED")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match its recorded hash."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(mlflow_client: MlflowClient, run_id: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Store the weights as the run's artifact checkpoint/model.pt, then tag the run with their sha256.

    The tag is written last: a write that fails (a full disk) raises before it, and a checkpoint
    without the tag, or whose bytes do not hash to it, is never loaded.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_FILE
        torch.save(state_dict, path)
        digest = _sha256_file(path)
        mlflow_client.log_artifact(run_id, str(path), CHECKPOINT_DIR)
    mlflow_client.set_tag(run_id, CHECKPOINT_TAG, digest)


def has_checkpoint(mlflow_client: MlflowClient, run: Run) -> bool:
    """Whether the run finished writing a checkpoint that is still in the artifact store."""
    if CHECKPOINT_TAG not in run.data.tags:
        return False
    stored = mlflow_client.list_artifacts(run.info.run_id, CHECKPOINT_DIR)
    return any(f.path == f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}" for f in stored)


def load_checkpoint(mlflow_client: MlflowClient, run: Run) -> dict[str, torch.Tensor]:
    """The weights a finished run saved, after checking their hash; tensors only (weights_only=True)."""
    digest = run.data.tags.get(CHECKPOINT_TAG)
    if digest is None:
        raise CheckpointError(f"run {run.info.run_id} has no complete checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow_client.download_artifacts(run.info.run_id, f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}", tmp))
        except (OSError, MlflowException) as err:
            raise CheckpointError(f"the checkpoint of run {run.info.run_id} cannot be read: {err}") from None
        if (actual := _sha256_file(local)) != digest:
            raise CheckpointError(
                f"the checkpoint of run {run.info.run_id} is corrupt (sha256 {actual[:12]}, recorded {digest[:12]}); "
                "refusing to load it"
            )
        return torch.load(local, map_location="cpu", weights_only=True)
