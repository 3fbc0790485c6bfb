"""Train a brick collection on two CPU processes with DDP, recording what each process saw.

The README's own example is run as written by ``test_readme_lightning.py``; this script is the
same set-up on a tiny hand-made model, instrumented for the checks of ``test_ddp.py``.

``test_ddp.py`` runs ``python tests/lightning/ddp_example.py OUT_DIR``; Lightning starts the second
process by running this script again (with ``LOCAL_RANK=1``). Besides training, every process writes
what it saw to ``OUT_DIR`` (``rank<i>.json``, ``rank<i>_state.pt``, and on rank 0
``probe_outputs.pt``) so that the test can check the run from the outside.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning_testkit import build_collection, make_dataset, make_tensors
from torch.utils.data import DataLoader

from brickzoo.lightning import BrickLightningModule

TRAIN_SAMPLES = 32  # 2 processes x 4 batches of 4
VAL_SAMPLES = 24  # 2 processes x 3 batches of 4: no padding by the DistributedSampler
PROBE_SEED = 7


def train(out_dir: str, devices: int = 2, extra_callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    """The README's set-up on the tiny model: the same module on one CPU, several GPUs or several nodes."""
    pl.seed_everything(0)
    collection = build_collection()  # any BrickCollection with MODEL, LOSS (and METRIC) bricks
    module = BrickLightningModule(
        collection,
        optimizer_factory=partial(torch.optim.AdamW, lr=0.05),  # called as optimizer_factory(params)
        scheduler_factory=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    trainer = pl.Trainer(
        accelerator="cpu",  # "gpu" on GPU machines
        devices=devices,  # processes per machine (GPUs per node)
        num_nodes=1,  # machines; launch the same script on each (torchrun, SLURM)
        strategy="ddp",  # gloo on CPU, NCCL on GPUs; "fsdp" shards large models
        precision="32-true",  # "bf16-mixed" on GPUs that support it
        max_epochs=2,
        logger=CSVLogger(out_dir, name="ddp"),
        callbacks=[ModelCheckpoint(dirpath=f"{out_dir}/checkpoints", save_last=True), *(extra_callbacks or [])],
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    train_loader = DataLoader(make_dataset(TRAIN_SAMPLES, seed=1), batch_size=4, shuffle=True)
    val_loader = DataLoader(make_dataset(VAL_SAMPLES, seed=2), batch_size=4)
    trainer.fit(module, train_loader, val_loader)
    return trainer


class RecordRanks(pl.Callback):
    """Write, per process, the samples it saw, its backend, its final weights and metric summaries."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.train_indices: list[int] = []
        self.val_indices: list[int] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_indices = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_indices = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, _: int) -> None:
        self.train_indices += batch["index"].tolist()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.val_indices += batch["index"].tolist()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, BrickLightningModule)
        rank = trainer.global_rank
        collection = pl_module.collection
        torch.save(collection.state_dict(), self.out_dir / f"rank{rank}_state.pt")
        record = {
            "rank": rank,
            "world_size": trainer.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "global_step": trainer.global_step,
            "train_indices_last_epoch": self.train_indices,
            "val_indices_last_epoch": self.val_indices,
            "epoch_metrics": {
                stage: {k: v.tolist() for k, v in values.items()} for stage, values in pl_module.epoch_metrics.items()
            },
            "lr": [group["lr"] for group in trainer.optimizers[0].param_groups],
        }
        (self.out_dir / f"rank{rank}.json").write_text(json.dumps(record))
        if rank == 0:
            collection.eval()
            with torch.no_grad():
                probe = {"images": make_tensors(6, seed=PROBE_SEED, with_labels=False)["images"]}
                outputs = collection(probe, groups="MODEL", return_inputs=False)
            torch.save(outputs, self.out_dir / "probe_outputs.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    train(str(out), devices=int(sys.argv[2]) if len(sys.argv) > 2 else 2, extra_callbacks=[RecordRanks(out)])
