"""The one entry point: `python -m ablations experiment=<name> [tier=...] [hydra overrides ...]`.

With `--multirun` and a sweep over `shard` (what `make sweep` runs), a Hydra launcher runs the shares
of one experiment's arms x seeds as separate jobs (submitit: SLURM, or local processes); when they
have all finished, `DecideAfterShardedSweep` decides the verdicts over the runs they left in MLflow.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ablations import tracking
from ablations.experiment import run_experiment
from ablations.plan import check_overrides, parse_shard
from ablations.resources import check_local_processes
from ablations.settings import fail
from ablations.spec import ExperimentSpec, experiment_names
from ablations.tracking import ROOT

BAD_INPUT = (ValueError, KeyError, OmegaConfBaseException)


def fail_on_bad_input(err: Exception) -> None:
    """Bad input ends in one line, without the quotes a KeyError adds, and no traceback."""
    fail(str(err).strip("'\"").splitlines()[0])


@hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    prepare_process()  # again: a launcher's job (submitit) calls this function in a process of its own
    try:
        check_overrides(ExperimentSpec.from_config(cfg.experiment), cfg.tier, list(HydraConfig.get().overrides.task))
        run_experiment(cfg, shard=parse_shard(cfg.shard))
    except BAD_INPUT as err:
        fail_on_bad_input(err)
    except KeyboardInterrupt:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # a launcher's job (scancel, a time limit): the launcher
            raise JobInterruptedError("interrupted by SIGTERM or SIGINT; its run is marked KILLED") from None
        raise


class JobInterruptedError(RuntimeError):
    """A sweep's job was stopped. Raised as an error, not KeyboardInterrupt, so that submitit records the job as
    failed (it reports Exceptions) and the launching process stops instead of waiting for a result forever."""


def prepare_process() -> None:
    """What every entry point sets up: SIGTERM handling and output limited to runs and verdicts."""
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so the current run is marked KILLED, not left RUNNING.
    # SIGINT too, explicitly: a shell starts background jobs (`nohup ... &`) with SIGINT ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # keep the output to runs and verdicts
    warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
    # Lightning's hint on any machine with SLURM installed, also outside a job: a sweep submits its own jobs
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")
    # The task sets the targets of every batch (training.LanguageModelTask); the data module has no such hook to lose.
    warnings.filterwarnings("ignore", message="You have overridden `on_before_batch_transfer` in `LightningModule`")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one per checkpoint download


class DecideAfterShardedSweep(Callback):
    """After a sweep over `shard` (`--multirun experiment=X shard=0/n,...,n-1/n`), decide the verdicts.

    Each job trained its share of the runs and decided nothing; this pass, in the launching process,
    finds every run finished in the MLflow store, trains nothing, and decides as `make experiment`
    would. When a job fails, Hydra raises its error before this point: no verdict is ever decided on
    a partial set of runs, and the next sweep trains only what is missing. Hydra turns exceptions of
    callbacks into warnings, so bad input ends the process here with `fail`.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = self._overrides(config)
        if "shard" not in overrides:
            return
        if sweeps := sorted(k for k, o in overrides.items() if o.is_sweep_override() and k not in SHARDED_SWEEP):
            fail(f"a sweep over shard may also sweep experiment, nothing else (this one sweeps {sweeps})")
        shard = overrides["shard"]
        shares = list(shard.sweep_string_iterator()) if shard.is_sweep_override() else [str(shard.value())]
        count = shares[0].partition("/")[2]
        if sorted(shares) != sorted(f"{i}/{count}" for i in range(int(count) if count.isdigit() else 0)):
            fail(f"shard must sweep every share 0/n,...,n-1/n exactly once, not {','.join(shares)}")
        local = config.hydra.launcher.get("_target_", "").endswith("LocalLauncher")
        if local:
            try:
                check_local_processes(len(shares), config.threads, "local jobs")
            except ValueError as err:
                fail(str(err))
        if not local and not os.environ.get("MLFLOW_TRACKING_URI"):  # many writers on one SQLite file over NFS
            fail("jobs on other machines need a shared tracking server: export MLFLOW_TRACKING_URI=http://host:port")
        for name in self._experiments(overrides):
            tracking.experiment_id(tracking.client(), name)  # create the store here: concurrent creation races

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = self._overrides(config)
        if "shard" not in overrides:
            return
        fixed = [o.input_line for key, o in overrides.items() if key not in SHARDED_SWEEP]
        for name in self._experiments(overrides):
            try:
                run_experiment(compose("config", [f"experiment={name}", *fixed]))
            except BAD_INPUT as err:
                fail_on_bad_input(err)

    @staticmethod
    def _overrides(config: DictConfig) -> dict[str, Any]:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        return {o.key_or_group: o for o in parsed}

    @staticmethod
    def _experiments(overrides: dict[str, Any]) -> list[str]:
        experiment = overrides["experiment"]
        return list(experiment.sweep_string_iterator()) if experiment.is_sweep_override() else [experiment.value()]


SHARDED_SWEEP = ("experiment", "shard")


def run() -> None:
    """Check the experiment names before Hydra composes anything, so a typo lists the valid names."""
    prepare_process()
    chosen = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("experiment=")]
    if not chosen:
        fail(f"choose an experiment: experiment=<name>; valid: {', '.join(experiment_names())}")
    for name in chosen[-1].split(","):  # a comma-separated list is a --multirun sweep
        if name not in experiment_names():
            fail(f"unknown experiment {name!r}; valid: {', '.join(experiment_names())}")
    if not any(arg.startswith("-") for arg in sys.argv[1:]):
        check_composes(sys.argv[1:])
    main()


def check_composes(overrides: list[str]) -> None:
    """A key no config has or a value of the wrong type: one line and exit 2 (Hydra's own report takes several
    lines and exits 1)."""
    try:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            compose("config", overrides)
    except (OmegaConfBaseException, HydraException) as err:
        fail(str(err).splitlines()[0])
