"""The DDP proof on a shapes config: ``python tests/lightning/ddp_shapes.py train|validate OUT_DIR``.

``train`` trains ``shapes_multitask`` for a few steps with the CLI's Lightning engine on two CPU
processes (DDP over gloo) and saves the per-brick weights (rank 0). ``validate`` loads those
weights in two processes and runs Lightning's validation; rank 0 writes the metrics Lightning
logged, gathered across both processes, to ``OUT_DIR/ddp_validation.json``. Lightning starts the
second process by running this script again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from brickzoo.lightning import BrickLightningModule, fit_with_lightning
from brickzoo.zoo import build_recipe

# 16 training images (2 steps per process), 8 validation images: 4 per process, no sampler padding
OVERRIDES = [
    "train.epochs=1",
    "data.train.num_samples=16",
    "data.val.num_samples=8",
    "data.batch_size=4",
    "data.args.image_size=32",
    "train.log_every=1",
]


def train(out_dir: Path) -> None:
    recipe = build_recipe("shapes_multitask", OVERRIDES)
    fit_with_lightning(recipe, out_dir, devices=2, strategy="ddp", quiet=True)


def validate(out_dir: Path) -> None:
    recipe = build_recipe("shapes_multitask", OVERRIDES)
    recipe.model.load_bricks(out_dir / "weights")
    module = BrickLightningModule(recipe.model, optimizer_factory=lambda params: torch.optim.SGD(params, lr=0.0))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, recipe.loader("val"))
    if trainer.is_global_zero:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        (out_dir / "ddp_validation.json").write_text(json.dumps(values, indent=1))


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    {"train": train, "validate": validate}[command](folder)
