"""The numbers verdicts are made of, through the project's own training and evaluation steps.

Every expected value is computed here a second, simpler way: window by window or paragraph by
paragraph with plain log-softmax, never through LanguageModelTask's own loss or loops.
"""

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablations import tracking
from ablations.data import TextDataModule
from ablations.model import ModelConfig
from ablations.quantization import QuantizeConfig, quantize
from ablations.run import restore_best, score_start, trainer_options
from ablations.run_logger import RunLogger
from ablations.training import IGNORE, LanguageModelTask, OptimConfig

# make test runs two workers: this module's tests share one module fixture, so they stay on one worker
pytestmark = pytest.mark.xdist_group("trained_state")

BLOCK = 64
EVAL_BATCH = 7  # windows per evaluation batch
# Long words: after their first letters the rest is certain, so a trained model's confidences spread widely.
WORDS = "transformer attention normalization residual embedding gradient a an the of".split()


def prose(seed: int, paragraphs: int = 600) -> str:
    """Paragraphs of random words, separated by one blank line (never two), about 25 kB."""
    rng = np.random.default_rng(seed)
    return "\n\n".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(paragraphs)) + "\n"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(prose(0))
    return path


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Weights trained for 100 steps on the corpus: far from the uniform prediction, so that weightings differ."""
    tmp = tmp_path_factory.mktemp("trained")
    path = tmp / "corpus.txt"
    path.write_text(prose(0))
    data = data_module(path, tmp)
    task = task_for(data, OptimConfig(max_steps=100, warmup_steps=0, lr=1e-2, min_lr=1e-2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        run(task, data, steps=100)
    assert task.final_metrics["final_val_loss"] < 1.5  # it learned
    return copy.deepcopy(task.model.state_dict())


def data_module(path, tmp_path, **overrides) -> TextDataModule:
    settings = {"corpus": "textfile", "path": str(path), "tokenizer": "byte", "block_size": BLOCK, "batch_size": 8,
                "eval_batch_size": EVAL_BATCH, "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    data = TextDataModule(**settings | overrides)
    data.setup()
    return data


def task_for(
    data: TextDataModule, optim: OptimConfig | None = None, weights: dict | None = None, **train
) -> LanguageModelTask:
    torch.manual_seed(0)
    model = ModelConfig(vocab_size=256, block_size=BLOCK, n_layer=1, n_head=2, d_model=32, **train.pop("model", {}))
    task = LanguageModelTask(model, optim or OptimConfig(max_steps=0, warmup_steps=0), log_every=1, **train)
    if weights is not None:
        task.model.load_state_dict(weights)
    return task


def run(task: LanguageModelTask, data: TextDataModule, steps: int = 0) -> tuple[pl.Trainer, str]:
    """Fit `steps` steps (if any), then the final evaluation, logging into a real MLflow run."""
    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "metrics")).info.run_id
    options = trainer_options(
        OmegaConf.create({"optim": {"max_steps": steps, "grad_accumulation": 1}, "val_every": max(steps, 1)})
    )
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=RunLogger(run_id=run_id,
                         tracking_uri=client.tracking_uri), **options)  # fmt: skip
    if steps:
        trainer.fit(task, datamodule=data)
    trainer.test(task, datamodule=data, verbose=False)
    return trainer, run_id


# --- independent references ------------------------------------------------------------------------


def val_windows(data: TextDataModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every non-overlapping window of the validation split, from its first token."""
    ids = torch.from_numpy(data.tokens.val.astype(np.int64))
    return [(ids[s : s + BLOCK], ids[s + 1 : s + BLOCK + 1]) for s in range(0, len(ids) - BLOCK, BLOCK)]


def val_paragraphs(path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The validation split's paragraphs (the last 10% of the bytes), each cut to BLOCK + 1 tokens."""
    raw = path.read_bytes()
    parts = raw[int(len(raw) * 0.9) :].split(b"\n\n")
    docs = [p + b"\n\n" for p in parts[:-1]] + [parts[-1]]
    docs = [torch.tensor(list(d[: BLOCK + 1])) for d in docs if len(d) >= 2]
    return [(d[:-1], d[1:]) for d in docs]


def mean_nll(model: torch.nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Sum of -log p(target) over every target token, divided by their number: one sequence at a time."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in pairs:
            log_p = model(x[None])[0].double().log_softmax(-1)
            total -= log_p[torch.arange(len(y)), y].sum().item()
            count += len(y)
    return total / count


# --- the final evaluation ---------------------------------------------------------------------------


def test_final_val_loss_is_the_token_weighted_nll_over_every_window_of_the_validation_split(
    corpus, tmp_path, trained_state
):
    data = data_module(corpus, tmp_path)
    task = task_for(data, weights=trained_state)
    run(task, data)
    windows = val_windows(data)
    assert len(windows) % EVAL_BATCH != 0  # a short last batch: a mean of batch means would be off
    assert task.final_metrics["final_val_loss"] == pytest.approx(mean_nll(task.model, windows), abs=1e-5)
    assert task.final_metrics["final_val_ppl"] == pytest.approx(math.exp(mean_nll(task.model, windows)), rel=1e-5)


def test_with_padded_paragraphs_every_real_token_weighs_the_same_and_padding_none(corpus, tmp_path, trained_state):
    data = data_module(corpus, tmp_path, packing="documents")
    task = task_for(data, weights=trained_state)
    run(task, data)
    paragraphs = val_paragraphs(corpus)
    lengths = {len(y) for _, y in paragraphs}
    assert len(lengths) > 3  # batches of very different real token counts
    per_batch = [mean_nll(task.model, paragraphs[i : i + EVAL_BATCH]) for i in range(0, len(paragraphs), EVAL_BATCH)]
    expected = mean_nll(task.model, paragraphs)
    assert abs(np.mean(per_batch) - expected) > 1e-4  # the wrong weighting would show, 10x the tolerance
    assert task.final_metrics["final_val_loss"] == pytest.approx(expected, abs=1e-5)


def test_with_a_domain_corpus_the_general_and_domain_losses_are_each_their_own_corpus(corpus, tmp_path):
    domain = tmp_path / "domain.txt"
    domain.write_text("".join(f"x = {i} * {i % 7} + {i // 3}\n" for i in range(600)))
    data = data_module(corpus, tmp_path, domain="textfile", domain_path=str(domain), mix="1:1")
    task = task_for(data, OptimConfig(max_steps=30, warmup_steps=0, lr=1e-2, min_lr=1e-2))
    run(task, data, steps=30)  # trained a little on both, so that the two losses differ clearly
    general = mean_nll(task.model, val_windows(data))
    ids = torch.from_numpy(data.domain_tokens.val.astype(np.int64))
    domain_windows = [(ids[s : s + BLOCK], ids[s + 1 : s + BLOCK + 1]) for s in range(0, len(ids) - BLOCK, BLOCK)]
    specific = mean_nll(task.model, domain_windows)
    assert abs(general - specific) > 0.05
    assert task.final_metrics["final_val_loss"] == pytest.approx(general, abs=1e-5)
    assert task.final_metrics["final_domain_val_loss"] == pytest.approx(specific, abs=1e-5)


# --- the training loss and the schedule -------------------------------------------------------------


def test_training_steps_use_the_smoothed_loss_and_the_evaluation_the_plain_nll(corpus, tmp_path, trained_state):
    """The first logged train_loss is PyTorch's smoothed form (1 - eps) NLL + eps mean_V(-log p) of the first batch."""
    data = data_module(corpus, tmp_path)
    eps = 0.3
    task = task_for(data, OptimConfig(max_steps=3, warmup_steps=0), trained_state, label_smoothing=eps)
    initial = copy.deepcopy(task.model)
    x, y = next(iter(data.train_dataloader()))
    _, run_id = run(task, data, steps=3)
    with torch.no_grad():
        log_p = initial(x).double().log_softmax(-1)
    nll = -log_p.gather(-1, y[..., None]).mean().item()
    smoothed = (1 - eps) * nll + eps * -log_p.mean(-1).mean().item()
    history = MlflowClient(tracking.tracking_uri()).get_metric_history(run_id, "train_loss")
    first = next(m.value for m in history if m.step == 1)
    assert first == pytest.approx(smoothed, abs=1e-5)
    assert abs(smoothed - nll) > 0.1
    assert task.final_metrics["final_val_loss"] == pytest.approx(mean_nll(task.model, val_windows(data)), abs=1e-5)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1 / 5), (3, 4 / 5), (4, 1.0), (9, 0.1 + 0.5 * 0.9), (14, 0.1), (40, 0.1)],
)
def test_the_schedule_is_linear_warmup_then_cosine_to_min_lr(step, expected):
    """lr 1, min_lr 0.1, 4 warm-up steps, 14 steps: halfway through the decay (step 9) the cosine is 0."""
    assert OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=14).lr_at(step) == pytest.approx(expected)


def test_the_optimizer_follows_the_schedule(corpus, tmp_path):
    data = data_module(corpus, tmp_path)
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=4, max_steps=9)
    task = task_for(data, optim)
    trainer, _ = run(task, data, steps=9)
    # after 9 updates the scheduler has stepped 9 times: the end of the cosine, min_lr
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


# --- calibration and BatchNorm's train/eval gap -----------------------------------------------------


def test_calibration_metrics_match_a_direct_computation(corpus, tmp_path, trained_state):
    data = data_module(corpus, tmp_path)
    task = task_for(data, weights=trained_state, calibration=True)  # trained: confidences spread over the bins
    _, run_id = run(task, data)
    confidence, correct = [], []
    with torch.no_grad():
        for x, y in val_windows(data):
            probs = task.model(x[None])[0].double().softmax(-1)
            confidence.append(probs.max(-1).values)
            correct.append(probs.argmax(-1) == y)
    confidence, correct = torch.cat(confidence).numpy(), torch.cat(correct).numpy().astype(float)
    bins = np.minimum((confidence * 15).astype(int), 14)  # 15 equal-width bins over [0, 1]
    assert len(set(bins)) >= 4
    ece = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean() for b in set(bins))
    metrics = task.final_metrics
    assert metrics["final_top1_acc"] == pytest.approx(correct.mean(), abs=1e-6)
    assert metrics["final_mean_confidence"] == pytest.approx(confidence.mean(), abs=1e-5)
    assert metrics["final_ece"] == pytest.approx(ece, abs=1e-5)
    client = MlflowClient(tracking.tracking_uri())
    counts = {m.step: m.value for m in client.get_metric_history(run_id, "reliability_count")}
    assert counts == {b: float((bins == b).sum()) for b in range(15)}


def test_train_eval_gap_is_the_eval_mode_loss_minus_the_train_mode_loss_on_the_same_batches(corpus, tmp_path):
    """BatchNorm in train mode normalizes each evaluation batch (EVAL_BATCH windows, in order) by its own statistics."""
    data = data_module(corpus, tmp_path)
    optim = OptimConfig(max_steps=20, warmup_steps=0, lr=1e-2, min_lr=1e-2)
    task = task_for(data, optim, eval_train_mode=True, model={"norm": "batchnorm"})
    run(task, data, steps=20)
    windows = val_windows(data)
    eval_loss = mean_nll(task.model.eval(), windows)
    train_mode = copy.deepcopy(task.model).train()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), EVAL_BATCH):
            chunk = windows[i : i + EVAL_BATCH]
            x, y = torch.stack([w[0] for w in chunk]), torch.stack([w[1] for w in chunk])
            log_p = train_mode(x).double().log_softmax(-1)
            total -= log_p.gather(-1, y[..., None]).sum().item()
            count += y.numel()
    metrics = task.final_metrics
    assert metrics["final_val_loss"] == pytest.approx(eval_loss, abs=1e-5)
    assert metrics["final_val_loss_train_mode"] == pytest.approx(total / count, abs=1e-5)
    assert metrics["train_eval_gap"] == pytest.approx(eval_loss - total / count, abs=1e-5)
    assert abs(metrics["train_eval_gap"]) > 1e-3


# --- quantized evaluation ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["none", "dynamic_int8", "weight_int4"])
def test_a_quantized_evaluation_scores_the_quantized_copy_and_its_kl_from_the_original(
    corpus, tmp_path, trained_state, method
):
    data = data_module(corpus, tmp_path)
    task = task_for(data, weights=trained_state)
    original = copy.deepcopy(task.model).eval()
    quantized = quantize(task.model, QuantizeConfig(method=method))
    task.evaluate_with(quantized)
    run(task, data)
    # Dynamic int8 quantizes activations with the range of the whole batch: score the evaluation's batches.
    windows = val_windows(data)
    batches = [
        (torch.stack([x for x, _ in chunk]), torch.stack([y for _, y in chunk]))
        for chunk in (windows[i : i + EVAL_BATCH] for i in range(0, len(windows), EVAL_BATCH))
    ]
    kl, nll, count = 0.0, 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            log_p, log_q = (m(x).double().log_softmax(-1) for m in (original, quantized))
            kl += (log_p.exp() * (log_p - log_q)).sum().item()  # KL(original || quantized), summed over tokens
            nll -= log_q.gather(-1, y[..., None]).sum().item()
            count += y.numel()
    metrics = task.final_metrics
    assert metrics["final_val_loss"] == pytest.approx(nll / count, abs=1e-5)
    assert metrics["final_kl_to_reference"] == pytest.approx(kl / count, abs=1e-6)
    if method == "none":
        assert metrics["final_kl_to_reference"] == pytest.approx(0, abs=1e-9)
    else:
        assert metrics["final_kl_to_reference"] > 1e-6
        assert abs(metrics["final_val_loss"] - mean_nll(original, windows)) > 1e-6


# --- pairing: the same seed, the same batches -------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{}, {"packing": "documents"}, {"packing": "buckets", "epochs": 1}, {"domain": "textfile", "mix": "1:5"}],
    ids=["windows", "documents", "buckets", "mixed"],
)
def test_two_arms_with_the_same_seed_train_on_the_same_batches(corpus, tmp_path, settings):
    """The paired test assumes it: whatever else an arm changes (here the model), seed s draws the same data."""
    if "domain" in settings:
        settings = settings | {"domain_path": str(corpus)}

    def batches(seed: int, model: dict) -> list[torch.Tensor]:
        data = data_module(corpus, tmp_path, seed=seed, **settings)
        task_for(data, model=model)  # building a model consumes the global random state differently
        stream = iter(data.train_dataloader())
        return [torch.cat(next(stream)) for _ in range(5)]

    arm_a, arm_b = batches(3, {}), batches(3, {"d_ff": 64, "norm": "rmsnorm"})
    assert all(torch.equal(a, b) for a, b in zip(arm_a, arm_b, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(arm_a, batches(4, {}), strict=False))


def test_test_windows_limits_the_final_evaluation_to_that_many_windows_spread_over_the_split(corpus, tmp_path):
    """The smoke tier's plumbing setting; every tier that decides verdicts scores the whole split (null)."""
    whole, limited = data_module(corpus, tmp_path), data_module(corpus, tmp_path, test_windows=4)
    assert sum(len(x) for x, _ in whole.test_dataloader()) == len(val_windows(whole))
    x = torch.cat([x for x, _ in limited.test_dataloader()])
    firsts = [w[0] for w in val_windows(whole)]
    assert len(x) == 4 and torch.equal(x[0], firsts[0]) and torch.equal(x[-1], firsts[-1])


def test_max_documents_trains_on_the_first_paragraphs_only(corpus, tmp_path):
    """The smoke tier's short epochs: 10 paragraphs in batches of 4 are 3 steps an epoch."""
    limited = data_module(corpus, tmp_path, packing="fixed", epochs=1, max_documents=10, batch_size=4)
    whole = data_module(corpus, tmp_path, packing="fixed", epochs=1, batch_size=4)
    assert limited.steps_per_epoch() == 3 and whole.steps_per_epoch() > 100
    assert all(torch.equal(a, b) for a, b in zip(limited.train_docs, whole.train_docs[:10], strict=True))


def test_the_softmax_jacobian_probe_matches_autograd():
    from ablations.model import GPT, ModelConfig
    from ablations.probes import softmax_jacobian

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, d_model=16, attn_scale="none"))
    x = torch.randint(0, 30, (3, 8))
    found = softmax_jacobian(model, (x, x))["softmax_jacobian_norm"]
    attn = model.blocks[0].attn
    attn.record = True
    with torch.no_grad():
        model(x)
    attn.record = False
    logits = attn.recorded["logits"].double()
    norms = []
    for b, h, i in itertools.product(range(3), range(2), range(1, 8)):
        row = logits[b, h, i, : i + 1]
        norms.append(torch.autograd.functional.jacobian(lambda r: r.softmax(-1), row).norm().item())
    assert found == pytest.approx(sum(norms) / len(norms), rel=1e-6)  # float32 weights against float64


def test_context_losses_score_long_windows_and_the_same_tokens_at_the_training_context():
    """E10's extrapolation metric by hand: windows 2x the context, and the same tokens cut into context windows."""
    import contextlib

    import torch.nn.functional as F

    from ablations.model import GPT
    from ablations.training import context_losses

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, d_model=16, pos_encoding="rope"))
    ids = torch.randint(50, (200,))
    metrics = context_losses(model, ids, [2], limit=None, batch_size=4, precision=contextlib.nullcontext)
    starts = range(0, (200 - 1) // 16 * 16, 16)
    x = torch.stack([ids[s : s + 16] for s in starts])
    y = torch.stack([ids[s + 1 : s + 17] for s in starts])
    with torch.no_grad():
        long = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
        chunked = F.cross_entropy(model(x.reshape(-1, 8)).flatten(0, 1), y.flatten()).item()
    assert metrics["final_val_loss_ctx2x"] == pytest.approx(long, rel=1e-5)
    assert metrics["ctx2x_loss_increase"] == pytest.approx(long - chunked, rel=1e-4, abs=1e-6)


def test_gradient_accumulation_counts_updates_and_budgets_the_sequences_of_an_update(tmp_path):
    from ablations.run import budget

    cfg = OmegaConf.create({"val_every": 50, "optim": {"max_steps": 100, "grad_accumulation": 4}})
    options = trainer_options(cfg)
    assert options["accumulate_grad_batches"] == 4 and options["val_check_interval"] == 200  # micro-batches
    (tmp_path / "t.txt").write_text("some text to train on " * 400)
    data = TextDataModule(
        "textfile", path=str(tmp_path / "t.txt"), block_size=16, batch_size=3, cache_dir=str(tmp_path)
    )
    data.load()
    settings = {"max_tokens": 16 * 12 * 10, "grad_accumulation": 4, "lr_scaling": "linear", "lr_reference_batch": 12}
    optim = budget(settings, data, 16)
    assert optim.max_steps == 10  # updates of 4 x 3 sequences of 16 tokens
    assert optim.lr == pytest.approx(1e-3)  # scaled by the update's 12 sequences, not the micro-batch's 3


@pytest.mark.parametrize(("trained", "lr"), [(True, 3.0), (False, 0.01)], ids=["trained start, lr 3", "init, lr 0.01"])
def test_keep_best_start_keeps_the_starting_weights_when_no_later_evaluation_scores_lower(
    corpus, tmp_path, trained_state, trained, lr
):
    """train.keep_best_start (E24's amendment of 2026-12-05): the starting weights are scored before the first
    update. From trained weights at lr 3 every later evaluation is worse, so the run ends on its starting weights,
    unchanged, at best_step 0; from the initialization at lr 0.01 training helps and a later evaluation wins."""
    data = data_module(corpus, tmp_path)
    optim = OptimConfig(max_steps=20, warmup_steps=0, lr=lr, min_lr=lr)
    task = task_for(data, optim, trained_state if trained else None, keep_best="val_loss", keep_best_start=True)
    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "metrics")).info.run_id
    cfg = {"optim": {"max_steps": 20, "grad_accumulation": 1}, "val_every": 5, "train": {"keep_best": "val_loss"}}
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=RunLogger(run_id=run_id,
                         tracking_uri=client.tracking_uri), **trainer_options(OmegaConf.create(cfg)))  # fmt: skip
    start = score_start(task, trainer, data)
    trainer.fit(task, datamodule=data)
    trainer.logger.finalize("success")
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    assert sorted(history) == [0, 5, 10, 15, 20] and history[0] == pytest.approx(start.loss)
    restore_best(task, trainer, start)
    lowest = min(history, key=history.get)
    assert (lowest == 0) == trained
    assert task.final_metrics["best_step"] == lowest
    assert task.final_metrics["best_eval_loss"] == pytest.approx(history[lowest])
    kept = task.state_dict()
    assert all(torch.equal(kept[k], start.state_dict[k]) for k in kept) == trained


def test_scoring_the_start_leaves_training_as_it_would_be_without_it(corpus, tmp_path):
    """score_start evaluates before the fit and restores the random state: every later evaluation is the same."""

    def curve(score_first: bool) -> dict[int, float]:
        data = data_module(corpus, tmp_path)
        task = task_for(data, OptimConfig(max_steps=10, warmup_steps=0, lr=0.01, min_lr=0.01),
                        keep_best="val_loss", keep_best_start=score_first, model={"dropout": 0.2})  # fmt: skip
        client = tracking.client()
        run_id = client.create_run(tracking.experiment_id(client, "metrics")).info.run_id
        cfg = {"optim": {"max_steps": 10, "grad_accumulation": 1}, "val_every": 5, "train": {"keep_best": "val_loss"}}
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=RunLogger(run_id=run_id,
                             tracking_uri=client.tracking_uri), **trainer_options(OmegaConf.create(cfg)))  # fmt: skip
        if score_first:
            score_start(task, trainer, data)
        trainer.fit(task, datamodule=data)
        return {m.step: m.value for m in client.get_metric_history(run_id, "val_loss") if m.step > 0}

    assert curve(score_first=True) == curve(score_first=False)


def test_a_position_target_replaces_every_batchs_targets_with_the_positions():
    """E10's order task: each token predicts its index in the window (padding stays ignored)."""
    task = LanguageModelTask(ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, d_model=16),
                             OptimConfig(max_steps=1, warmup_steps=0), target="position")  # fmt: skip
    x = torch.randint(50, (2, 8))
    y = x.clone()
    y[1, 6:] = -100
    _, targets = task.on_before_batch_transfer((x, y), 0)
    assert targets[0].tolist() == list(range(8)) and targets[1].tolist() == [0, 1, 2, 3, 4, 5, -100, -100]
    with pytest.raises(ValueError, match="train.target"):
        LanguageModelTask(ModelConfig(vocab_size=4, block_size=8), OptimConfig(), target="position")


def test_keep_best_evaluates_the_weights_of_the_lowest_periodic_evaluation(corpus, tmp_path):
    """Early stopping (train.keep_best, E24's amendment): at lr 0.5 without decay the loss falls and then climbs
    back, so the lowest of the evaluations every 5 steps is not the last; the weights restored are those that
    scored it, and the checkpoint's folder is removed."""
    data = data_module(corpus, tmp_path)
    task = task_for(data, OptimConfig(max_steps=60, warmup_steps=0, lr=0.5, min_lr=0.5), keep_best="val_loss")
    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "metrics")).info.run_id
    cfg = {"optim": {"max_steps": 60, "grad_accumulation": 1}, "val_every": 5, "train": {"keep_best": "val_loss"}}
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=RunLogger(run_id=run_id,
                         tracking_uri=client.tracking_uri), **trainer_options(OmegaConf.create(cfg)))  # fmt: skip
    trainer.fit(task, datamodule=data)
    trainer.logger.finalize("success")
    history = client.get_metric_history(run_id, "val_loss")
    lowest = min(history, key=lambda m: m.value)
    assert lowest.step < max(m.step for m in history)
    folder = trainer.checkpoint_callback.dirpath
    restore_best(task, trainer)
    assert task.final_metrics["best_step"] == lowest.step
    assert task.final_metrics["best_eval_loss"] == pytest.approx(lowest.value)
    task.eval()
    with torch.no_grad():
        scored = [(task.loss(batch).item(), int((batch[1] != IGNORE).sum())) for batch in data.val_dataloader()]
    assert sum(loss * n for loss, n in scored) / sum(n for _, n in scored) == pytest.approx(lowest.value, rel=1e-5)
    assert not Path(folder).exists()
