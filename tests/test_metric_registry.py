"""The metric registry: every metric named anywhere is registered, and a diverged run scores by its rule."""

import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ablations import metrics
from ablations.metrics import UnknownMetricError, lookup, value_of
from ablations.spec import ExperimentSpec, load_spec
from ablations.store import ROOT


def test_a_diverged_run_counts_as_the_uniform_loss_and_perplexity_of_its_vocabulary():
    logged = {"vocab_size": 65.0, "n_params": 1000.0}
    assert value_of("diverged", logged, "final_val_loss") == pytest.approx(math.log(65))
    assert value_of("diverged", logged, "final_val_ppl") == 65
    assert value_of("diverged", logged, "n_params") == 1000  # facts of the model are kept
    assert math.isnan(value_of("diverged", logged, "final_ece"))  # never measured: not invented
    assert value_of("finished", {"final_val_loss": 1.9}, "final_val_loss") == 1.9
    with pytest.raises(KeyError):
        value_of("finished", {"final_val_loss": 1.9}, "final_ece")  # a finished run must have measured it


def test_families_match_by_pattern_and_exact_names_win():
    assert lookup("latency_ratio_b32").name == "latency_ratio_b*"
    assert lookup("log_latency_ratio_b1").name == "log_latency_ratio_b*"  # not latency_ratio_b*
    assert lookup("init_grad_norm_layer17").produced_by == "probes"
    assert lookup("final_val_loss").at_divergence == "uniform_loss"
    with pytest.raises(UnknownMetricError, match="final_val_los"):
        lookup("final_val_los")


PREFIXES = "final|init|train|log|block|latency|baseline"
NOT_METRICS = {"final_metrics", "train_slots", "train_split"}  # state a data-parallel fit hands back; a setting


def logged_by_the_code() -> set[str]:
    """Metric names written as string literals where runs log them (the modules the registry names)."""
    names = set()
    for module in ("training", "quantization", "probes", "health", "run"):
        path = ROOT / "src" / "ablations" / f"{module}.py"
        if path.exists():
            names |= set(
                re.findall(r'"((?:final|init|train|log|block|latency|baseline)_[a-z0-9_]+)"', path.read_text())
            )
    return names


def test_every_metric_the_code_names_is_registered():
    unknown = {name for name in logged_by_the_code() - NOT_METRICS if not metrics.is_known(name)}
    assert not unknown, f"register these in ablations.metrics: {sorted(unknown)}"


def test_every_committed_metric_is_registered():
    import sqlite3

    store = sqlite3.connect(f"file:{ROOT / 'mlruns' / 'mlflow.db'}?mode=ro", uri=True)
    arm_metrics = {
        key
        for (key,) in store.execute(
            "select distinct m.key from latest_metrics m join tags t on t.run_uuid = m.run_uuid "
            "where t.key = 'ablations.role' and t.value = 'arm'"
        )
    }
    assert arm_metrics, "the committed store holds arm runs"
    assert not {k for k in arm_metrics if not metrics.is_known(k)}


def test_every_experiment_names_registered_metrics_only():
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        load_spec(path.stem)  # raises on an unknown metric


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hypotheses": [{"metric": "final_val_los"}]}, "unknown metric 'final_val_los'"),
        ({"report_metrics": ["final_ec"]}, "unknown metric 'final_ec'"),
        ({"figures": [{"x": "scale", "y": "init_attn_entropie"}]}, "unknown metric 'init_attn_entropie'"),
        (
            {"figures": [{"kind": "layers", "metrics": ["init_grad_norm_layr"]}]},
            "unknown metric 'init_grad_norm_layr0'",
        ),
        ({"figures": [{"kind": "layers"}]}, "layers figure of attention_scaling needs metrics"),
        ({"figures": [{"kind": "series", "metrics": ["final_val_loss"], "x": "n"}]}, "and as many x_values"),
        ({"figures": [{"kind": "series", "metrics": ["final_val_los"], "x": "n", "x_values": [1]}]}, "'final_val_los'"),
    ],
    ids=[
        "hypothesis",
        "report table",
        "figure",
        "layers figure",
        "layers figure without metrics",
        "series figure without x_values",
        "series figure",
    ],  # fmt: skip
)
def test_an_experiment_naming_an_unknown_metric_is_refused_when_loaded(change, message):
    raw = OmegaConf.to_container(OmegaConf.load(Path(ROOT / "experiments" / "attention_scaling.yaml")).experiment)
    for key, value in change.items():
        if key == "hypotheses":
            raw["hypotheses"][0] |= value[0]
        else:
            raw[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        ExperimentSpec.from_config(OmegaConf.create(raw))
