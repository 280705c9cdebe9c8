"""Two-stage experiments: checkpoints as MLflow artifacts, the mixture sampler (E09), quantization (E08)."""

import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import pytest
import torch
from mlflow.tracking import MlflowClient
from test_end_to_end import run_cli

from ablations import plan, tracking
from ablations.data import MixedWindows, parse_mix
from ablations.model import GPT, ModelConfig
from ablations.quantization import (
    METHODS,
    QuantizeConfig,
    StaticInt8Linear,
    block_bytes,
    block_linears,
    calibrate_inputs,
    quantize,
)

# --- the mixture sampler -------------------------------------------------------------------------


# The domain share of each ratio, written out by hand (not computed by parse_mix, which is under test).
SHARES = {"1:0": Fraction(1), "20:1": Fraction(20, 21), "1:1": Fraction(1, 2), "1:5": Fraction(1, 6),
          "1:10": Fraction(1, 11), "0:1": Fraction(0)}  # fmt: skip


@pytest.mark.parametrize("mix", list(SHARES))
def test_parse_mix_gives_the_domain_share_of_a_ratio(mix):
    assert parse_mix(mix) == pytest.approx(float(SHARES[mix]), abs=1e-12)


@pytest.mark.parametrize("mix", list(SHARES))
@pytest.mark.parametrize("batch_size", [12, 7])
def test_the_mixture_sampler_places_exactly_floor_k_b_share_domain_windows_in_the_first_k_batches(mix, batch_size):
    domain, general = torch.zeros(500, dtype=torch.long), torch.ones(500, dtype=torch.long)
    share = SHARES[mix]
    stream = iter(MixedWindows(domain, general, block_size=8, batch_size=batch_size, share=float(share), seed=0))
    seen = 0
    for k in range(1, 301):
        x, y = next(stream)
        assert x.shape == y.shape == (batch_size, 8)
        assert ((x == 0).all(1) | (x == 1).all(1)).all()  # every window from one corpus
        seen += int((x[:, 0] == 0).sum())
        assert seen == math.floor(k * batch_size * share), f"after {k} batches"


def test_mixed_windows_are_consecutive_tokens_of_their_corpus_drawn_by_the_seed_alone():
    domain, general = torch.arange(0, 300), torch.arange(1000, 1300)  # every window tells where it starts

    def draw(seed: int, global_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(global_seed)  # the global random state must not matter
        stream = iter(MixedWindows(domain, general, block_size=8, batch_size=6, share=0.5, seed=seed))
        return [torch.cat(next(stream), 1) for _ in range(20)]

    batches = draw(0, global_seed=1)
    for batch in batches:
        x, y = batch[:, :8], batch[:, 8:]
        assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)  # consecutive, target = next token
        assert ((x < 300).all(1) | (x >= 1000).all(1)).all()
    starts = torch.cat([b[:, 0] for b in batches])
    for corpus in (starts[starts < 300], starts[starts >= 1000]):  # every offset of each corpus can start one
        assert (corpus % 2 == 1).any() and (corpus % 2 == 0).any()
    assert all(torch.equal(a, b) for a, b in zip(batches, draw(0, global_seed=2), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(batches, draw(1, global_seed=1), strict=True))


@pytest.mark.parametrize("mix", ["0:0", "a:b", "-1:2", "1", "1:2:3"])
def test_a_bad_mixing_ratio_is_refused(mix):
    with pytest.raises(ValueError, match="data.mix"):
        parse_mix(mix)


# --- checkpoints ------------------------------------------------------------------------------------


@pytest.fixture
def store_run():
    client = tracking.client()
    exp_id = tracking.experiment_id(client, "checkpoints")
    run = client.create_run(exp_id, tags={"ablations.run_key": "k1"})
    return client, run.info.run_id


def small_state() -> dict[str, torch.Tensor]:
    return GPT(ModelConfig(n_layer=1, d_model=32, n_head=2, block_size=16)).state_dict()


def test_a_checkpoint_round_trips_through_mlflow(store_run):
    client, run_id = store_run
    state = small_state()
    tracking.save_checkpoint(client, run_id, state)
    loaded = tracking.load_checkpoint(client, client.get_run(run_id))
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_corrupt_checkpoint_is_never_loaded(store_run):
    client, run_id = store_run
    tracking.save_checkpoint(client, run_id, small_state())
    stored = client.get_run(run_id).info.artifact_uri.removeprefix("file://") + "/checkpoint/model.pt"
    with open(stored, "r+b") as f:  # a flipped byte, as a bad disk or a half-copied file would leave
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(tracking.CheckpointError, match="corrupt"):
        tracking.load_checkpoint(client, client.get_run(run_id))


def test_a_checkpoint_written_on_a_full_disk_is_never_loaded(store_run, tmp_path):
    """A real write failure: the file-size limit makes the checkpoint write fail part-way (EFBIG)."""
    client, run_id = store_run
    script = textwrap.dedent(
        f"""
        import resource, signal, torch
        from ablations import tracking
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with an error instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
        client = tracking.client()
        try:
            tracking.save_checkpoint(client, {run_id!r}, {{"w": torch.zeros(4 << 20)}})  # 16 MB
        except Exception as err:  # torch.save reports a short write as a RuntimeError, not an OSError
            print("write failed:", type(err).__name__, err)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ)
    assert "write failed" in result.stdout, result.stderr[-2000:]
    with pytest.raises(tracking.CheckpointError, match="no complete checkpoint"):
        tracking.load_checkpoint(client, client.get_run(run_id))


def test_checkpoints_load_tensors_only(store_run, tmp_path):
    """weights_only=True: a pickle that would run code on load is refused, not executed."""
    client, run_id = store_run

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "model.pt"
    torch.save({"w": Exploit()}, path)
    client.log_artifact(run_id, str(path), "checkpoint")
    client.set_tag(run_id, tracking.CHECKPOINT_TAG, tracking._sha256_file(path))
    with pytest.raises(Exception, match="Weights only load failed"):
        tracking.load_checkpoint(client, client.get_run(run_id))
    assert not (tmp_path / "pwned").exists()


# --- quantization --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_like_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=256, n_layer=2, d_model=128, n_head=4, block_size=32)).eval()


@pytest.mark.parametrize(
    "overrides",
    [{"method": m} for m in METHODS]
    + [{"method": "dynamic_int8", "per_channel": False}]
    + [{"method": "static_int8", "calibration": c, "entropy_stride": 8} for c in ("percentile", "entropy")],
)  # entropy_stride 8: every 8th candidate threshold, as the smoke tier (the full search takes 40 s here)
def test_quantized_models_run_and_keep_the_output_shape(trained_like_model, overrides):
    x = torch.randint(0, 256, (3, 32))
    calibration = [torch.randint(0, 256, (4, 32)) for _ in range(2)]
    before = {k: v.clone() for k, v in trained_like_model.state_dict().items()}
    types_before = [(name, type(m)) for name, m in trained_like_model.named_modules()]
    with torch.no_grad():
        reference = trained_like_model(x)
    quantized = quantize(trained_like_model, QuantizeConfig(**overrides), calibration)
    with torch.no_grad():
        output = quantized(x)
    assert output.shape == reference.shape == (3, 32, 256)
    assert torch.isfinite(output).all()
    relative = (output - reference).norm() / reference.norm()
    assert relative < (0.2 if overrides["method"] == "weight_int4" else 0.05)
    # The original is untouched: the same modules, the same tensors, the same outputs.
    assert [(name, type(m)) for name, m in trained_like_model.named_modules()] == types_before
    after = trained_like_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        torch.testing.assert_close(trained_like_model(x), reference, rtol=0, atol=0)
    assert quantized is not trained_like_model


@pytest.mark.parametrize("per_channel", [True, False])
def test_dynamic_int8_scales_weights_per_output_channel_or_per_tensor_as_configured(trained_like_model, per_channel):
    quantized = quantize(trained_like_model, QuantizeConfig(method="dynamic_int8", per_channel=per_channel))
    linears = [
        m
        for name, m in quantized.named_modules()
        if name.startswith("blocks.") and callable(getattr(m, "weight", None))
    ]
    schemes = {m.weight().qscheme() for m in linears}
    assert len(schemes) == 1 and len(linears) == 4 * 2  # qkv, out, mlp in, mlp out in each of 2 blocks
    expected = torch.per_channel_affine if per_channel else torch.per_tensor_affine
    assert schemes == {expected} and {m.weight().dtype for m in linears} == {torch.qint8}


def test_static_activations_use_the_grid_of_their_bits():
    """7 bits: inputs rounded to multiples of amax / 63 and clipped to [-amax, amax], by hand; coarser than 8 bits."""
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(16, 8, bias=False), torch.randn(4, 16)
    errors = {}
    for bits, levels in ((7, 63), (8, 127)):
        step = 2.0 / levels  # amax 2.0: some inputs beyond it are clipped
        by_hand = torch.nn.functional.linear(
            (x / step).round().clamp(-levels, levels) * step,
            StaticInt8Linear(linear, 2.0, bits).weight_int8.float()
            * StaticInt8Linear(linear, 2.0).weight_scale[:, None],
        )
        with torch.no_grad():
            found = StaticInt8Linear(linear, 2.0, bits)(x)
            errors[bits] = (found - linear(x)).norm()
        torch.testing.assert_close(found, by_hand)
    assert errors[7] > errors[8]


def test_int4_blocks_are_stored_quantized_on_their_own_coarser_grid(trained_like_model):
    """torchao keeps int4 values one per byte on CPU (not packed two per byte): about 1.2 bytes per weight."""
    n_weights = sum(m.weight.numel() for m in block_linears(trained_like_model).values())
    int4 = quantize(trained_like_model, QuantizeConfig(method="weight_int4"))
    assert block_bytes(int4) < 1.5 * n_weights + 0.05 * block_bytes(trained_like_model)  # not fp32's 4 bytes
    int8 = quantize(trained_like_model, QuantizeConfig(method="weight_int8"))
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        reference, error4, error8 = trained_like_model(x), int4(x), int8(x)
    assert (error4 - reference).norm() > 3 * (error8 - reference).norm()  # 16 levels err more than 256


@pytest.mark.parametrize("method", ["dynamic_int8", "weight_int8", "static_int8"])
def test_int8_blocks_take_about_one_byte_per_linear_weight(trained_like_model, method):
    n_weights = sum(m.weight.numel() for m in block_linears(trained_like_model).values())
    fp32 = block_bytes(trained_like_model)
    assert fp32 >= 4 * n_weights
    quantized = block_bytes(quantize(trained_like_model, QuantizeConfig(method=method), [torch.zeros(2, 32).long()]))
    assert n_weights <= quantized < 1.15 * n_weights + 0.05 * fp32  # weights, scales and norms, nothing in fp32


def test_clipping_calibrations_choose_a_narrower_range_than_min_max(trained_like_model):
    batches = [torch.randint(0, 256, (8, 32)) for _ in range(2)]
    ranges = {
        c: calibrate_inputs(trained_like_model, batches, QuantizeConfig(calibration=c, entropy_stride=8))
        for c in ("minmax", "percentile", "entropy")
    }
    for name, amax in ranges["minmax"].items():
        assert ranges["percentile"][name] <= amax * 1.001
        assert ranges["entropy"][name] <= amax * 1.001


@pytest.mark.parametrize("bad", [{"method": "int3"}, {"calibration": "mse"}, {"percentile": 0}, {"entropy_stride": 0}])
def test_a_bad_quantization_setting_is_refused(bad):
    with pytest.raises(ValueError, match="quantize."):
        QuantizeConfig(**bad)


# --- the two stages end to end --------------------------------------------------------------------


def test_a_two_stage_experiment_trains_its_base_once_and_starts_every_arm_from_it(cache_dir):
    first = run_cli("experiment=forgetting_data_mixing", "tier=smoke", "seeds=1", cache_dir=cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("forgetting_data_mixing")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ablations.role` = 'arm'")
    by_arm = {r.data.tags["arm"]: r for r in runs}
    assert set(by_arm) == {"base", "d1g0", "d20g1", "d1g1", "d1g5", "d1g10", "g_as_d1g5", "g_as_d1g10"}
    assert len(runs) == 8
    base = by_arm["base"]
    assert tracking.CHECKPOINT_TAG in base.data.tags
    for arm, run in by_arm.items():
        assert "final_domain_val_loss" in run.data.metrics
        if arm != "base":
            assert run.data.params["init_from"] == base.data.tags["ablations.run_key"]
    # 1:10 trains 11 times the steps of 1:0 for the same domain tokens
    assert int(by_arm["d1g10"].data.params["optim.max_steps"]) == 11 * int(
        by_arm["d1g0"].data.params["optim.max_steps"]
    )
    for mix in ("d1g5", "d1g10"):  # the general-only arms take as many updates as their mix
        steps = by_arm[mix].data.params["optim.max_steps"]
        assert by_arm[f"g_as_{mix}"].data.params["optim.max_steps"] == steps
        assert by_arm[f"g_as_{mix}"].data.params["data.mix"] == "0:1"
    second = run_cli("experiment=forgetting_data_mixing", "tier=smoke", "seeds=1", cache_dir=cache_dir)
    assert second.returncode == 0 and second.stdout.count("reused finished run") == 8
    # Checkpoints are not committed: in a fresh clone the base is trained again (bit-identically), its arms reused.
    stored = base.info.artifact_uri.removeprefix("file://") + "/checkpoint/model.pt"
    os.remove(stored)
    third = run_cli("experiment=forgetting_data_mixing", "tier=smoke", "seeds=1", cache_dir=cache_dir)
    assert third.returncode == 0 and third.stdout.count("reused finished run") == 7
    retrained = client.search_runs(
        [experiment.experiment_id], filter_string="tags.arm = 'base' and attributes.status = 'FINISHED'"
    )
    assert len(retrained) == 2
    assert {r.data.metrics["final_val_loss"] for r in retrained} == {base.data.metrics["final_val_loss"]}


def test_a_second_stage_can_start_from_scratch_or_adapt_with_lora(cache_dir):
    """E24's scratch arm ignores the base, its fine-tuned arm records the loss it started from; E17's LoRA arms
    count their adapters (pruning: tests/test_adaptation.py and the golden cases)."""
    for name in ("pretrain_then_finetune", "lora_vs_full_finetune"):
        done = run_cli(f"experiment={name}", "tier=smoke", "seeds=1", cache_dir=cache_dir)
        assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])

    def arms(name: str) -> dict:
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ablations.role` = 'arm'")
        return {r.data.tags["arm"]: r for r in runs}

    e24 = arms("pretrain_then_finetune")
    assert set(e24) == {"base", "finetuned", "scratch"} | {f"{arm}_es{start}" for arm in ("finetuned", "scratch")
                                                          for start in ("", "_start")}  # fmt: skip
    # The smoke tier's one update comes before any periodic evaluation: early stopping keeps the starting weights.
    kept = e24["finetuned_es_start"].data.metrics
    assert kept["best_step"] == 0
    assert kept["final_domain_val_loss"] == pytest.approx(e24["base"].data.metrics["final_domain_val_loss"])
    assert e24["scratch_es"].data.params["train.keep_best"] == "domain_val_loss"
    assert e24["scratch_es"].data.params["init_from"] == "None"
    assert e24["finetuned"].data.params["init_from"] == e24["base"].data.tags["ablations.run_key"]
    assert e24["finetuned"].data.metrics["start_val_loss"] == e24["base"].data.metrics["final_val_loss"]
    assert e24["scratch"].data.params["init_from"] == "None" and "start_val_loss" not in e24["scratch"].data.metrics
    assert e24["scratch"].data.params["data.domain_tokens_limit"] == "81920"
    e17 = arms("lora_vs_full_finetune")
    assert "trainable_fraction" not in e17["full"].data.metrics
    fractions = {arm: e17[arm].data.metrics["trainable_fraction"] for arm in ("lora_r4", "lora_r8", "lora_r32")}
    assert fractions["lora_r4"] < fractions["lora_r8"] < fractions["lora_r32"] < 1
    assert e17["lora_r8_qv"].data.metrics["trainable_params"] < e17["lora_r8"].data.metrics["trainable_params"]
    # alpha scales the adapters' output, not their size: H7's equal-scale arm counts as r = 32 does.
    assert e17["lora_r32_a64"].data.params["finetune.lora_alpha"] == "64"
    assert e17["lora_r32_a64"].data.metrics["trainable_params"] == e17["lora_r32"].data.metrics["trainable_params"]


def test_a_run_finished_in_another_experiment_is_copied_whole_not_trained_again(cache_dir, tmp_path, monkeypatch):
    """E08, E18 and E25 train the same base (one key): the first to run trains it, the others copy it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    from hydra import compose, initialize_config_dir

    from ablations import run as run_module

    with initialize_config_dir(str(tracking.ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["experiment=label_smoothing", "tier=smoke", f"data.cache_dir={cache_dir}"])
    run_cfg = plan.invocation(cfg).run_cfgs[0]
    run_cfg.save_checkpoint = True
    client = MlflowClient(tracking.tracking_uri())
    first, other = (tracking.experiment_id(client, name) for name in ("first", "other"))
    trained = run_module.train_arm(run_cfg.copy(), client, first, {"experiment": "first"})
    monkeypatch.setattr(run_module, "build_task", lambda *a, **k: pytest.fail("a copied run trains nothing"))
    copied = run_module.train_arm(run_cfg.copy(), client, other, {"experiment": "other"})
    assert copied.reused and copied.key == trained.key and copied.run_id != trained.run_id
    assert copied.copied_from == f"{first}/{trained.run_id}"
    source, copy = client.get_run(trained.run_id), client.get_run(copied.run_id)
    assert copy.info.experiment_id == other and copy.info.status == "FINISHED"
    assert copy.data.tags[tracking.COPIED_FROM] == f"{first}/{trained.run_id}"
    assert copy.data.tags["experiment"] == "other" and copy.data.tags["ablations.run_key"] == trained.key
    assert copy.data.metrics == source.data.metrics and copy.data.params == source.data.params
    assert [m.value for m in client.get_metric_history(copy.info.run_id, "val_loss")] == [
        m.value for m in client.get_metric_history(source.info.run_id, "val_loss")]  # fmt: skip
    weights = tracking.load_checkpoint(client, copy)  # the hash checked against the source's
    assert all(torch.equal(w, tracking.load_checkpoint(client, source)[k]) for k, w in weights.items())
    again = run_module.train_arm(run_cfg.copy(), client, other, {"experiment": "other"})
    assert again.run_id == copied.run_id  # now a finished run of this experiment: reused, not copied twice
