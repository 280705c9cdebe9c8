"""Follow one smoke invocation through the package, call by call: how often control returns into the orchestrator
(experiment.py) from a module below it, and how often a module calls a module of a higher layer (ARCHITECTURE.md).

    MLFLOW_TRACKING_URI=sqlite:////tmp/trace.db python scripts/flow_trace.py [experiment=label_smoothing]

It trains the experiment's smoke tier with one seed into the store that MLFLOW_TRACKING_URI names (use a scratch one).
"""

from __future__ import annotations

import sys
from collections import Counter
from types import FrameType
from typing import Any

from hydra import compose, initialize_config_dir

from ablations import experiment
from ablations.store import ROOT

# ARCHITECTURE.md's layers, bottom up
LAYERS = [
    ["store", "files", "numerics", "resources", "metrics"],
    ["verdict", "health", "spec"],
    ["model", "data", "probes", "training", "quantization"],
    ["tracking", "decisions"],
    ["plan", "run"],
    ["parent_run", "figures"],
    ["experiment", "results", "report"],
    ["cli", "suite", "ddp"],
]
LAYER = {module: level for level, modules in enumerate(LAYERS) for module in modules}


def module_of(frame: FrameType | None) -> str:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name.removeprefix("ablations.") if name.startswith("ablations.") else ""


def trace(overrides: list[str]) -> list[tuple[str, str, str]]:
    """(event, module, calling module) of every call into and return from a function of the package."""
    events: list[tuple[str, str, str]] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "return") and (module := module_of(frame)):
            events.append((event, module, module_of(frame.f_back)))

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["experiment=label_smoothing", "tier=smoke", "seeds=1", "threads=1", *overrides])
    sys.setprofile(profile)
    try:
        experiment.run_experiment(cfg)
    finally:
        sys.setprofile(None)
    return events


def main() -> None:
    events = trace(sys.argv[1:])
    returns = sum(1 for e, module, caller in events if e == "return" and caller == "experiment" != module)
    upward = Counter(
        (caller, module)
        for e, module, caller in events
        if e == "call" and caller and module != caller and LAYER.get(module, 9) > LAYER.get(caller, 9)
    )
    print(f"modules: {sorted({m for _, m, _ in events})}")
    print(f"returns into experiment.py from below: {returns}; calls to a higher layer: {dict(upward)}")


if __name__ == "__main__":
    main()
