"""One data-parallel fit of a suite run, in processes of its own.

    python -m ablations.ddp RUN_CONFIG RUN_ID START_WEIGHTS END_STATE

`train_arm` starts this when the trainer has more than one device, and Lightning's DDP strategy
re-launches the same command once for every further rank (gloo on CPU, NCCL on GPU). Every rank
trains on its share of the batch one process with the global batch would draw (TextDataModule), so
the fit sees the same data as a single process of devices x data.batch_size. Rank 0 alone logs to
the run's MLflow record, and writes the final weights and the training counters to END_STATE for the
suite process to evaluate and record.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ablations import tracking
from ablations.cli import prepare_process
from ablations.run import build_task, data_module, trainer_options
from ablations.run_logger import RunLogger


def main(config_path: str, run_id: str, start_path: str, end_path: str) -> None:
    prepare_process()
    run_cfg = OmegaConf.load(config_path)
    torch.set_num_threads(run_cfg.threads or 1)
    data = data_module(run_cfg)
    task = build_task(run_cfg, data.load().vocab_size)
    task.model.load_state_dict(torch.load(start_path, map_location="cpu", weights_only=True))
    trainer = instantiate(
        run_cfg.trainer,
        logger=RunLogger(tracking_uri=tracking.tracking_uri(), run_id=run_id),
        use_distributed_sampler=False,  # the ranks share out the batches themselves (TextDataModule)
        **trainer_options(run_cfg),
    )
    trainer.fit(task, datamodule=data)
    if trainer.global_rank == 0:
        state = {
            "model": task.model.state_dict(),
            "trained_steps": torch.tensor(task.trained_steps),
            "diverged_at": torch.tensor(-1 if task.diverged_at is None else task.diverged_at),
            "train_tokens": task.train_tokens * trainer.world_size,  # every rank trains on as many tokens
            "train_slots": torch.tensor(task.train_slots * trainer.world_size),
            "train_seconds": torch.tensor(task.train_seconds),
            "final_metrics": {k: torch.tensor(v) for k, v in task.final_metrics.items()},
        }
        torch.save(state, Path(end_path))


if __name__ == "__main__":
    main(*sys.argv[1:5])
