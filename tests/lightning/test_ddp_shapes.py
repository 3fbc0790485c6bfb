"""DDP on a shapes config: two CPU processes train shapes_multitask through the CLI's Lightning
engine, and validation metrics gathered across two processes equal one process on the same data
and weights (torchmetrics' synchronisation), for accuracy, mIoU and COCO mAP alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_shapes import OVERRIDES

from brickzoo import Stage
from brickzoo.training import evaluate
from brickzoo.zoo import build_recipe

HERE = Path(__file__).resolve().parent


def launch(command: str, out_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_shapes.py"), command, str(out_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("ddp_shapes")
    launch("train", out_dir)
    launch("validate", out_dir)
    return out_dir


def test_ddp_training_on_a_shapes_config_saves_loadable_weights(ddp_run: Path) -> None:
    assert (ddp_run / "weights" / "backbone.pt").is_file()
    assert (ddp_run / "lightning" / "checkpoints" / "last.ckpt").is_file()
    recipe = build_recipe("shapes_multitask", OVERRIDES)
    report = recipe.model.load_bricks(ddp_run / "weights")
    assert not report.missing and not report.partial and not report.skipped
    with torch.no_grad():
        outputs = recipe.model.eval()({"images": torch.rand(2, 3, 32, 32)}, groups=Stage.INFERENCE)
    assert torch.isfinite(outputs["classify/logits"]).all()


def test_gathered_validation_equals_one_process(ddp_run: Path) -> None:
    gathered = json.loads((ddp_run / "ddp_validation.json").read_text())
    recipe = build_recipe("shapes_multitask", OVERRIDES)
    recipe.model.load_bricks(ddp_run / "weights")
    single = evaluate(recipe.model, recipe.loader("val"), device="cpu", stage=Stage.VALIDATION)
    checked = [
        "classify/accuracy",
        "classify/f1",
        "segment/miou",
        "segment/pixel_accuracy",
        "detect/map",
        "detect/map_50",
    ]
    for key in checked:
        assert gathered[f"val/{key}"] == pytest.approx(single[key], abs=1e-6), key
    # (the losses are not compared: detection losses are normalised per batch, and the distributed
    # sampler interleaves the images, so the two runs average over differently composed batches)
