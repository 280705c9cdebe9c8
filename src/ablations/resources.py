"""The cores a process may use, and the one rule for sharing them between local processes."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (a SLURM job's allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_local_processes(processes: int, threads: int | None, what: str = "processes") -> None:
    """Refuse `processes` local processes of `threads` torch threads each when together they oversubscribe the
    cores: on CPU that runs 10-50x slower, not faster (threads None: each takes every core)."""
    cores = available_cores()
    if processes > 1 and processes * (threads or cores) > cores:
        raise ValueError(f"{processes} {what} x threads={threads} oversubscribe the {cores} cores: set threads=1")
