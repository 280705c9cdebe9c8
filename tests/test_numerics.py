"""The code part of the run key: NUMERICS_VERSION, and the golden numbers that force a bump when numbers change."""

import ast
import hashlib
import inspect
import json

import golden
import pytest
import torch

from ablations import data, numerics, quantization, tracking, training

pytestmark = pytest.mark.xdist_group("golden")


@pytest.fixture(scope="module")
def recorded():
    return json.loads(golden.GOLDEN.read_text())


def test_the_numbers_of_every_switch_are_the_golden_ones(recorded):
    found = golden.compute()
    changed = golden.changed_numbers(found, recorded)
    assert not changed, (
        f"{len(changed)} numbers changed (numbers recorded on {recorded.get('cpu')} unless golden.json's case_cpus "
        f"says otherwise, this is {golden.cpu_signature()}), first: {changed[:5]}. If the change is meant, bump "
        "ablations.numerics.NUMERICS_VERSION (every committed run becomes stale) and run `make golden`."
    )


# A GPU's float32 kernels differ from a CPU's in the last bits, which 16 steps at lr 3e-2 carry on (across CPUs up
# to 0.5 %, see golden.SAME_CPU): the losses must agree within 1 %, which a bug of device placement would not give.
GPU_LOSS_TOLERANCE = (1e-2, 1e-4)


def comparable_on_a_gpu(case: str, metric: str) -> bool:
    """A loss the GPU must reproduce: dropout's training losses are not, the CUDA generator draws other masks (seen
    on an H200: 1.0-1.4 % apart at steps 6-16, its evaluation losses within 1 %)."""
    return "loss" in metric and not (golden.CASES[case].get("model", {}).get("dropout") and "train_loss" in metric)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (trainer=gpu)")
def test_every_switch_trains_on_a_gpu_to_the_cpu_losses(recorded):
    """What `trainer=gpu` runs: every case but the int8/int4 ones (CPU kernels) trained, probed and tested on the
    GPU, with the losses the CPU recorded."""
    cases = [case for case in golden.CASES if not case.startswith("quantize_")]
    found = golden.compute(cases, accelerator="gpu")

    def comparable(numbers_of: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {case: {k: v for k, v in numbers_of[case].items() if comparable_on_a_gpu(case, k)} for case in cases}

    losses, expected = comparable(found), comparable(recorded["cases"])
    changed = golden.differences(losses, expected, GPU_LOSS_TOLERANCE)
    assert not changed, f"{len(changed)} losses differ on the GPU, first: {changed[:5]}"


def test_the_golden_numbers_were_written_for_this_numerics_version(recorded):
    assert recorded["numerics_version"] == numerics.NUMERICS_VERSION


def test_the_run_key_is_the_config_and_the_numerics_version_only(monkeypatch):
    config = {"model": {"n_head": 8}, "seed": 0}
    expected = json.dumps({"config": config, "code": numerics.NUMERICS_VERSION}, sort_keys=True)
    assert tracking.run_key(config) == hashlib.sha256(expected.encode()).hexdigest()[:16]
    key = tracking.run_key(config)
    monkeypatch.setattr(tracking, "NUMERICS_VERSION", "a bumped version")
    assert tracking.run_key(config) != key


def mutate(monkeypatch, module, old: str, new: str) -> None:
    """Run `module` with `old` replaced by `new` in its source: its functions, classes and constants swapped in."""
    source = inspect.getsource(module)
    assert source.count(old) == 1, f"{old!r} must occur once in {module.__name__}"
    namespace = dict(vars(module))
    exec(compile(source.replace(old, new), module.__file__, "exec"), namespace)  # noqa: S102
    for node in ast.parse(source).body:
        names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)] + [getattr(node, "name", "")]
        for name in filter(None, names):
            current = getattr(module, name)
            if inspect.isclass(current):  # other modules hold the old class: change its methods too (but super())
                for attribute, value in vars(namespace[name]).items():
                    if inspect.isfunction(value) and "__class__" not in value.__code__.co_freevars:
                        monkeypatch.setattr(current, attribute, value)
            monkeypatch.setattr(module, name, namespace[name])


@pytest.mark.parametrize(
    ("module", "old", "new", "case"),
    [
        (training, "label_smoothing=label_smoothing)", "label_smoothing=label_smoothing * 0.5)", "label_smoothing"),
        (quantization, "2 ** (activation_bits - 1) - 1", "2 ** (activation_bits - 1) - 2", "quantize_static_minmax"),
        (data, "TRAIN_FRACTION = 0.9", "TRAIN_FRACTION = 0.8", "base"),
        (training, "return self.lr * (step + 1) / (self.warmup_steps + 1)", "return self.lr", "base"),
    ],
    ids=["loss", "quantizer", "split", "schedule"],
)
def test_a_change_to_the_numbers_fails_the_golden_test(monkeypatch, module, old, new, case):
    """On one CPU (numbers recorded on another CPU are compared at a looser tolerance: see golden.ACROSS_CPUS)."""
    unchanged = golden.compute([case])
    mutate(monkeypatch, module, old, new)
    assert golden.differences(golden.compute([case]), unchanged)


def test_only_the_named_unstable_numbers_of_a_case_are_left_out():
    recorded = {"lora_all": {"grad_norm@2": 0.2, "train_loss@2": 5.0}, "base": {"grad_norm@2": 0.2}}
    found = {"lora_all": {"grad_norm@2": 0.3, "train_loss@2": 5.0}, "base": {"grad_norm@2": 0.3}}
    assert golden.differences(found, recorded, golden.ACROSS_CPUS, golden.UNSTABLE_ACROSS_CPUS) == [
        "base: grad_norm@2 0.2 -> 0.3"
    ]
    found["lora_all"]["train_loss@2"] = 5.1
    assert len(golden.differences(found, recorded, golden.ACROSS_CPUS, golden.UNSTABLE_ACROSS_CPUS)) == 2


def test_a_refactor_that_keeps_the_numbers_passes(monkeypatch):
    """The same loss written another way: the golden numbers hold, so every committed run stays reusable."""
    unchanged = golden.compute(["label_smoothing"])
    old = "return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), label_smoothing=label_smoothing)"
    new = "return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), label_smoothing=label_smoothing)"  # noqa: E501
    mutate(monkeypatch, training, old, new)
    assert not golden.differences(golden.compute(["label_smoothing"]), unchanged)


def test_each_case_is_compared_at_the_tolerance_of_the_cpu_that_recorded_it():
    """`--add` on another machine records its cases' CPU: exact comparison only where they were computed."""
    recorded = {"cpu": golden.cpu_signature(), "case_cpus": {"b": "another CPU"},
                "cases": {"a": {"x": 1.0}, "b": {"x": 1.0}}}  # fmt: skip
    assert golden.changed_numbers({"a": {"x": 1.0001}, "b": {"x": 1.0001}}, recorded) == ["a: x 1.0 -> 1.0001"]
