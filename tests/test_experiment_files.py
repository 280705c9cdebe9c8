"""Every experiment file is a complete, consistent pre-registration."""

import random
import string

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ablations.data import parse_mix
from ablations.plan import arm_config, check_config, invocation, tier_arms
from ablations.spec import ExperimentSpec, experiment_names, load_spec
from ablations.store import ROOT
from ablations.training import OptimConfig

NAMES = experiment_names()


@pytest.mark.parametrize("name", NAMES)
def test_experiment_file_declares_claim_hypotheses_and_arms(name):
    spec = load_spec(name)
    assert spec.name == name and spec.id.startswith("E")
    assert spec.claim["lines"] and spec.claim["zh"] and spec.claim["en"]
    assert spec.hypotheses and len({h.id for h in spec.hypotheses}) == len(spec.hypotheses)
    for h in spec.hypotheses:
        assert h.statement and h.source and h.literature_expects in ("supported", "refuted")
        named = set(h.measured_arms) | ({h.control} if h.reference is None else set())  # a constant is no arm
        assert named <= set(spec.arms_for("quick")), "hypotheses compare quick-tier arms"


# TinyShakespeare's 65 characters: a vocabulary smaller than the bytes' 256 (E10's order task counts on it).
SHAKESPEARE_ALPHABET = "\n !$&',-.3:;?" + string.ascii_uppercase + string.ascii_lowercase


@pytest.fixture(scope="module")
def character_corpus(tmp_path_factory) -> str:
    """A text of TinyShakespeare's size and alphabet (the real one is not downloaded in tests)."""
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text("".join(random.Random(0).choices(SHAKESPEARE_ALPHABET, k=1_100_000)))
    return str(path)


@pytest.mark.parametrize("corpus", ["stdlib_prose", "characters"])
@pytest.mark.parametrize("tier", ["smoke", "quick", "full"])
@pytest.mark.parametrize("name", NAMES)
def test_every_run_of_every_tier_passes_the_checks_made_before_training(name, tier, corpus, character_corpus):
    """The checks `make experiment` makes before its first run: a bad arm would refuse the whole tier."""
    spec = load_spec(name)
    data = ["data=stdlib_prose"] if corpus == "stdlib_prose" else ["data=textfile", "data.tokenizer=char",
                                                                    f"data.path={character_corpus}"]  # fmt: skip
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"experiment={name}", f"tier={tier}", *data])
    for arm, overrides in tier_arms(spec, cfg).items():
        check_config(arm_config(cfg, arm, spec.tier_settings(tier) | overrides, seed=0))


def test_grid_axes_multiply_into_named_arms():
    spec = ExperimentSpec.from_config(
        OmegaConf.create(
            {
                "id": "E00",
                "name": "x",
                "title": "t",
                "claim": {"lines": "1", "zh": "z", "en": "e"},
                "grid": {
                    "a": {"a1": {"model.n_layer": 1}, "a2": {"model.n_layer": 2}},
                    "b": {"b1": {"model.n_head": 1}},
                },
                "hypotheses": [
                    {"id": "H", "statement": "s", "metric": "final_val_loss", "treatment": "a2-b1", "control": "a1-b1",
                     "direction": "lower", "min_effect": 0}
                ],
            }
        )
    )  # fmt: skip
    assert spec.arms_for("quick") == {
        "a1-b1": {"model.n_layer": 1, "model.n_head": 1},
        "a2-b1": {"model.n_layer": 2, "model.n_head": 1},
    }
    assert spec.axes_of("a2-b1") == {"a": "a2", "b": "b1"}


def test_an_experiment_without_a_grid_has_only_its_own_arms():
    assert set(load_spec("attention_heads").arms_for("quick")) == {"h1", "h2", "h4", "h8", "h32"}


def test_a_hypothesis_naming_a_missing_arm_is_refused():
    with pytest.raises(ValueError, match="names arms"):
        ExperimentSpec.from_config(
            OmegaConf.create(
                {
                    "id": "E00", "name": "x", "title": "t", "claim": {}, "arms": {"a": {}},
                    "hypotheses": [{"id": "H", "statement": "s", "metric": "final_val_loss", "treatment": "a",
                                    "control": "b", "direction": "lower", "min_effect": 0}],
                }
            )
        )  # fmt: skip


def test_a_constant_reference_names_no_arm_and_the_treatment_still_must_exist():
    def spec(treatment: str) -> ExperimentSpec:
        hypothesis = {
            "id": "H",
            "statement": "s",
            "metric": "final_val_loss",
            "treatment": treatment,
            "control": "quadratic",
            "direction": "equal",
            "min_effect": 0.25,
            "reference": 2.0,
        }
        return ExperimentSpec.from_config(OmegaConf.create(
            {"id": "E00", "name": "x", "title": "t", "claim": {}, "arms": {"a": {}}, "hypotheses": [hypothesis]}
        ))  # fmt: skip

    assert spec("a").hypotheses[0].measured_arms == ("a",)
    with pytest.raises(ValueError, match=r"names arms \['b'\]"):
        spec("b")


def test_an_arm_overriding_a_missing_key_is_refused():
    cfg = OmegaConf.create({"model": {"n_head": 1}})
    with pytest.raises(KeyError, match="not a config key"):
        arm_config(cfg, "bad", {"model.n_heads": 2}, seed=0)


def test_tier_grid_changes_a_grid_option_for_its_tier_only():
    spec = OmegaConf.create(
        {
            "id": "E0", "name": "t", "title": "t", "claim": {}, "hypotheses": [],
            "grid": {"size": {"s": {"model.d_model": 32}, "l": {"model.d_model": 64}},
                     "budget": {"short": {"optim.max_steps": 100}}},
            "tier_grid": {"smoke": {"budget": {"short": {"optim.max_steps": 5}}}},
        }
    )  # fmt: skip
    arms = ExperimentSpec.from_config(spec)
    assert arms.arms_for("smoke") == {"s-short": {"model.d_model": 32, "optim.max_steps": 5},
                                      "l-short": {"model.d_model": 64, "optim.max_steps": 5}}  # fmt: skip
    assert arms.arms_for("quick")["l-short"] == {"model.d_model": 64, "optim.max_steps": 100}
    spec.tier_grid.smoke.budget = {"long": {"optim.max_steps": 5}}
    with pytest.raises(ValueError, match=r"tier_grid.smoke.budget .* \['long'\]"):
        ExperimentSpec.from_config(spec)


@pytest.mark.parametrize("tier", ["quick", "full"])
def test_e09s_general_only_arms_take_as_many_updates_as_their_mix(tier):
    """The steps written in the file equal what a token budget gives the mix (ablations.run.resolve's rule)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["experiment=forgetting_data_mixing", f"tier={tier}"])
    spec = load_spec("forgetting_data_mixing")
    arms = spec.arms_for(tier)
    for mix in ("d1g5", "d1g10"):
        run_cfg = arm_config(cfg, mix, spec.tier_settings(tier) | arms[mix], seed=0)
        share = parse_mix(run_cfg.data.mix)
        optim = OptimConfig(**run_cfg.optim).for_batch(
            run_cfg.data.batch_size, run_cfg.data.batch_size * run_cfg.model.block_size * share
        )
        assert arms[f"g_as_{mix}"]["optim.max_steps"] == optim.max_steps


def test_runs_are_tagged_with_the_tokenizer_their_experiment_file_sets():
    """E18 trains on a BPE whatever the command line's tokenizer; its runs were tagged "byte", and the report's setup
    table said so beside a 4,096-token vocabulary's parameter count."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["experiment=repetition_and_decoding", "tier=smoke", "data=stdlib_prose"])
        plain = compose("config", ["experiment=attention_heads", "tier=smoke", "data=stdlib_prose"])
    assert cfg.data.tokenizer == "byte" and invocation(cfg).tags["tokenizer"] == "bpe"
    assert invocation(plain).tags["tokenizer"] == "byte"
