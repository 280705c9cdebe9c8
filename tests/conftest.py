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


@pytest.fixture
def cli_in_process(monkeypatch, capsys, cache_dir):
    """`python -m ablations ARGS` run inside the test process: (exit code, stdout, stderr).

    For refusals, which end before anything trains: a new process would spend most of its time importing torch,
    Lightning and MLflow. One subprocess test per entry point checks the real process end to end."""
    import signal
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from ablations import cli

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["ablations", *args, "threads=1"])
        monkeypatch.setattr(signal, "signal", lambda *_: None)  # the test process keeps its own handlers
        monkeypatch.setenv("ABLATIONS_CACHE", cache_dir)
        code = 0
        try:
            cli.run()
        except SystemExit as ended:
            code = ended.code
        finally:
            GlobalHydra.instance().clear()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
