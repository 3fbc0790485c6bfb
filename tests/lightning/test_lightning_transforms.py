"""BrickLightningModule with augmented data: each epoch's augmentations, the boxes the transforms dropped."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning_testkit import NamedTensorDataset, build_collection, make_tensors

from brickzoo.data import make_loader
from brickzoo.data.transforms import TransformedDataset, build_transforms
from brickzoo.lightning import BrickLightningModule

AUGMENT = ["horizontal_flip", {"color_jitter": {"brightness": 0.5}}]


class BoxDataset(NamedTensorDataset):
    """The testkit's samples with two boxes each: one real, one of zero width (which every pipeline drops)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(index)
        sample["boxes"] = torch.tensor([[1.0, 1.0, 9.0, 9.0], [4.0, 4.0, 4.0, 8.0]])
        sample["box_labels"] = torch.tensor([0, 2])
        return sample


class RecordingDataset(TransformedDataset):
    """Records the epoch of the augmentation of every sample it gives (in this process: no workers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epochs: list[int] = []

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.epochs.append(self.epoch)
        return super().__getitem__(index)


def test_each_epoch_augments_anew_and_dropped_boxes_are_logged_per_epoch(tmp_path: Path) -> None:
    train = RecordingDataset(BoxDataset(make_tensors(12, seed=1)), build_transforms(AUGMENT), seed=0)
    val = TransformedDataset(BoxDataset(make_tensors(6, seed=2)), build_transforms([]))
    module = BrickLightningModule(build_collection(), lambda params: torch.optim.SGD(params, lr=0.1))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        logger=CSVLogger(tmp_path, name="logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(module, make_loader(train, 4, shuffle=True), make_loader(val, 3, shuffle=False))
    assert train.epochs == [0] * 12 + [1] * 12 + [2] * 12
    (path,) = tmp_path.glob("logs/version_*/metrics.csv")
    with path.open() as file:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(file)]
    # one zero-width box per sample: 12 per training epoch, 6 per validation
    assert [r["train/boxes_dropped"] for r in rows if "train/boxes_dropped" in r] == [12.0, 12.0, 12.0]
    assert [r["val/boxes_dropped"] for r in rows if "val/boxes_dropped" in r] == [6.0, 6.0, 6.0]
