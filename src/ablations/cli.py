"""The one entry point: `python -m ablations experiment=<name> [tier=...] [hydra overrides ...]`."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ablations.tracking import ROOT

EXPERIMENTS_DIR = ROOT / "experiments"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ablations.experiment import run_experiment

    try:
        run_experiment(cfg)
    except (ValueError, KeyError, OmegaConfBaseException) as err:  # bad input: one line, no traceback
        fail(str(err).strip("'\"").splitlines()[0])


def prepare_process() -> None:
    """What every entry point sets up: SIGTERM handling and output limited to runs and verdicts."""
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so the current run is marked KILLED, not left RUNNING.
    # SIGINT too, explicitly: a shell starts background jobs (`nohup ... &`) with SIGINT ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # keep the output to runs and verdicts
    warnings.filterwarnings("ignore", message=".*training_step.* returned `None`")  # how a divergence stops
    warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one per checkpoint download


def run() -> None:
    """Check the experiment name before Hydra composes anything, so a typo lists the valid names."""
    prepare_process()
    chosen = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("experiment=")]
    if not chosen:
        fail(f"choose an experiment: experiment=<name>; valid: {', '.join(experiment_names())}")
    if chosen[-1] not in experiment_names():
        fail(f"unknown experiment {chosen[-1]!r}; valid: {', '.join(experiment_names())}")
    main()
