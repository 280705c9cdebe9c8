"""Run every experiment (or a chosen list) of one tier, resumably, with a progress display.

    python -m ablations.suite tier=quick [experiments=attention_heads,attention_scaling] [workers=2 threads=1]
                              [hydra overrides]

workers=N trains the runs of each experiment in N processes (each with `threads` torch threads;
N x threads may not exceed the cores), then decides the verdicts over all of them.

Each arm x seed is keyed by its resolved config and code version: finished runs in the MLflow store
are reused, never trained again, so killing the suite at any moment and starting it again loses
nothing and duplicates nothing.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ablations import settings, tracking
from ablations.cli import fail, prepare_process
from ablations.experiment import console, run_experiment
from ablations.plan import planned_runs
from ablations.resources import check_local_processes
from ablations.spec import experiment_names
from ablations.tracking import ROOT


def _shard_worker(overrides: list[str], name: str, shard: tuple[int, int], events: multiprocessing.Queue) -> None:
    """One parallel worker: train its share of one experiment's runs, reporting each as it ends."""
    prepare_process()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"experiment={name}", *overrides])
    run_experiment(cfg, on_run=lambda run: events.put(run.reused), shard=shard)


def train_in_parallel(overrides: list[str], name: str, workers: int, advance: Callable[[bool], None]) -> None:
    """Train the runs of one experiment in `workers` processes; stop them all if this process is stopped."""
    tracking.experiment_id(tracking.client(), name)  # create the store here: concurrent creation races
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    events = context.Queue()
    processes = [
        context.Process(target=_shard_worker, args=(overrides, name, (i, workers), events)) for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(p.is_alive() for p in processes) or not events.empty():
            try:
                advance(events.get(timeout=0.5))
            except queue.Empty:
                pass
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker marks its current run KILLED
            process.join()
    if failed := [p.exitcode for p in processes if p.exitcode != 0]:
        raise RuntimeError(f"{len(failed)} of {workers} workers failed (exit codes {failed})")


@dataclass
class SuiteSettings:
    experiments: list[str] = field(default_factory=list)  # none named: every experiment
    workers: int = 1


def suite_settings(argv: list[str]) -> tuple[SuiteSettings, list[str]]:
    """The suite's own settings, and the rest of argv: Hydra overrides of every experiment's config."""
    own = {f.name for f in fields(SuiteSettings)}
    mine = [a for a in argv if a.partition("=")[0] in own or a in settings.HELP]
    chosen = settings.parse(mine, SuiteSettings(), __doc__)
    if chosen.workers < 1:
        fail(f"workers={chosen.workers} must be a positive whole number")
    return chosen, [a for a in argv if a not in mine]


def main(argv: list[str]) -> None:
    prepare_process()
    chosen, overrides = suite_settings(argv)
    names = chosen.experiments or experiment_names()
    if unknown := [n for n in names if n not in experiment_names()]:
        fail(f"unknown experiments {unknown}; valid: {', '.join(experiment_names())}")
    try:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            configs = [compose("config", [f"experiment={name}", *overrides]) for name in names]
    except (OmegaConfBaseException, HydraException) as err:  # a key no config has, a value of the wrong type
        fail(str(err).splitlines()[0])
    try:
        check_local_processes(chosen.workers, configs[0].threads, "workers")
    except ValueError as err:
        fail(str(err))
    counts = {"trained": 0, "reused": 0}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("suite", total=sum(planned_runs(c) for c in configs))

        def advance(reused: bool) -> None:
            counts["reused" if reused else "trained"] += 1
            progress.advance(task)

        for name, cfg in zip(names, configs, strict=True):
            progress.update(task, description=f"suite: {name}")
            try:
                if chosen.workers > 1:
                    train_in_parallel(overrides, name, chosen.workers, advance)
                    run_experiment(cfg)  # every run is finished now: this pass reuses them and decides
                else:
                    run_experiment(cfg, on_run=lambda run: advance(run.reused))
            except (ValueError, KeyError, OmegaConfBaseException, RuntimeError) as err:
                fail(f"{name}: {str(err).splitlines()[0]}")
    done = (
        "nothing to train: every run was already finished" if counts["trained"] == 0 else f"trained {counts['trained']}"
    )
    console.print(f"suite finished: {len(names)} experiments, {done}; reused {counts['reused']} finished runs")


if __name__ == "__main__":
    main(sys.argv[1:])
