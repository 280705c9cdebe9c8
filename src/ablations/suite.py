"""Run every experiment (or a chosen list) of one tier, resumably, with a progress display.

    python -m ablations.suite tier=quick [experiments=attention_heads,attention_scaling] [hydra overrides]

Each arm x seed is keyed by its resolved config and code version: finished runs in the MLflow store
are reused, never trained again, so killing the suite at any moment and starting it again loses
nothing and duplicates nothing.
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir
from omegaconf.errors import OmegaConfBaseException
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ablations.cli import experiment_names, fail, prepare_process
from ablations.experiment import ArmRun, console, planned_runs, run_experiment
from ablations.tracking import ROOT


def main(argv: list[str]) -> None:
    prepare_process()
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("experiments=")]
    overrides = [a for a in argv if not a.startswith("experiments=")]
    names = chosen[-1].split(",") if chosen else experiment_names()
    if unknown := [n for n in names if n not in experiment_names()]:
        fail(f"unknown experiments {unknown}; valid: {', '.join(experiment_names())}")
    try:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            configs = [compose("config", [f"experiment={name}", *overrides]) for name in names]
    except OmegaConfBaseException as err:
        fail(str(err).splitlines()[0])
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

        def advance(run: ArmRun) -> None:
            counts["reused" if run.reused else "trained"] += 1
            progress.advance(task)

        for name, cfg in zip(names, configs, strict=True):
            progress.update(task, description=f"suite: {name}")
            try:
                run_experiment(cfg, on_run=advance)
            except (ValueError, KeyError, OmegaConfBaseException) as err:
                fail(f"{name}: {str(err).splitlines()[0]}")
    done = (
        "nothing to train: every run was already finished" if counts["trained"] == 0 else f"trained {counts['trained']}"
    )
    console.print(f"suite finished: {len(names)} experiments, {done}; reused {counts['reused']} finished runs")


if __name__ == "__main__":
    main(sys.argv[1:])
