import os

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Tests never touch the project's MLflow store; one thread keeps them deterministic and uncontended."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A corpus cache shared by the tests of one session (the project's own .cache when it exists)."""
    return os.environ.get("ABLATIONS_CACHE") or str(tmp_path_factory.mktemp("cache"))
