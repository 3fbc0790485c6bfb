"""The CLI's Lightning engine (``fit_with_lightning``): one run folder written by rank 0, a schedule as
long as the optimizer steps taken, and a module and loaders that pickle for ``ddp_spawn``.

The multi-process runs start ``python -m brickzoo.cli train ...`` in a subprocess on 2 CPU processes
(gloo), with a tiny config written here; Lightning starts the second process by re-running the command.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from brickzoo.data import ShapesDataset, make_loader
from brickzoo.errors import DataError
from brickzoo.lightning import _RecipeModule, fit_with_lightning
from brickzoo.zoo import build_recipe

LR, MIN_LR = 0.002, 0.0002


def tiny_config(train_samples: int, steps_per_epoch: int | None = None, epochs: int = 2) -> dict[str, Any]:
    """A two-head shapes recipe on 32 px images (resnet10t has BatchNorm, which a batch of one breaks)."""
    train: dict[str, Any] = {
        "epochs": epochs,
        "lr": LR,
        "min_lr": MIN_LR,
        "warmup_steps": 1,
        "device": "cpu",
        "log_every": 1,
    }
    if steps_per_epoch is not None:
        train["steps_per_epoch"] = steps_per_epoch
    return {
        "name": "tiny",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False, "out_indices": [2, 3, 4]},
            "heads": {
                "classify": {"factory": "image_classification"},
                "segment": {"factory": "semantic_segmentation"},
            },
        },
        "data": {
            "dataset": "shapes",
            "args": {"image_size": 32, "max_shapes": 2},
            "train": {"num_samples": train_samples, "seed": 0},
            "val": {"num_samples": 8, "seed": 1000},
            "batch_size": 4,
        },
        "train": train,
        "export": {"enabled": False},
    }


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "tiny.yaml"
    path.write_text("# tiny: a test recipe; brickzoo train tiny.yaml\n" + yaml.safe_dump(config))
    return path


def run_cli(config: Path, out: Path, strategy: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "brickzoo.cli", "train", str(config), "--out", str(out), "--quiet"]
    command += ["--engine", "lightning", "--devices", "2", "--strategy", strategy]
    return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=out.parent)


def last_checkpoint(run: Path) -> dict[str, Any]:
    return torch.load(run / "lightning" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def check_schedule(run: Path, expected_steps: int) -> None:
    """The schedule spans exactly the optimizer steps taken, and its lr ended at min_lr on the last one."""
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == expected_steps
    assert final["schedule_steps"] == expected_steps
    assert final["lr"] == pytest.approx(MIN_LR)  # the cosine reaches min_lr on the schedule's last step
    checkpoint = last_checkpoint(run)  # what Lightning itself saved
    assert checkpoint["global_step"] == expected_steps
    (scheduler,) = checkpoint["lr_schedulers"]
    assert scheduler["last_epoch"] == expected_steps  # stepped once per optimizer step
    assert scheduler["_last_lr"][0] == pytest.approx(MIN_LR)


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_cli_lightning_engine_on_two_processes(tmp_path: Path, strategy: str) -> None:
    # 24 images on 2 processes: 12 each, 3 batches of 4, of which steps_per_epoch=2 are taken per epoch
    config = write_config(tmp_path, tiny_config(train_samples=24, steps_per_epoch=2))
    out = tmp_path / "runs"
    result = run_cli(config, out, strategy)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert [p.name for p in out.iterdir()] == ["tiny"]  # one run folder, made by rank 0
    run = out / "tiny"
    for name in ("config.json", "final_metrics.json", "graph.md", "predictions.png", "weights/backbone.pt"):
        assert (run / name).is_file(), name
    check_schedule(run, expected_steps=2 * 2)
    final = json.loads((run / "final_metrics.json").read_text())
    assert 0.0 <= final["val/classify/accuracy"] <= 1.0
    # rank 0 saved the final weights: every brick loads, and they equal Lightning's last checkpoint
    collection = build_recipe(config).model
    collection.load_bricks(run / "weights", strict=True)
    saved = {k.removeprefix("collection."): v for k, v in last_checkpoint(run)["state_dict"].items()}
    for name, value in collection.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_schedule_length_is_the_optimizer_steps_taken_in_one_process(tmp_path: Path) -> None:
    # 10 images, batches of 4 with drop_last: 2 steps per epoch, although train.steps_per_epoch asks for 5
    recipe = build_recipe(tiny_config(train_samples=10, steps_per_epoch=5, epochs=3))
    metrics = fit_with_lightning(recipe, tmp_path / "run", devices=1, quiet=True)
    check_schedule(tmp_path / "run", expected_steps=3 * 2)
    assert "val/loss" in metrics and "train/loss" in metrics


def test_a_process_without_a_training_batch_is_a_clear_error(tmp_path: Path) -> None:
    # 3 images in batches of 4 with drop_last: no optimizer step at all (on 2 processes: 6 images do the same)
    recipe = build_recipe(tiny_config(train_samples=8))
    module = _RecipeModule(recipe.model, recipe.train_config)
    loader = make_loader(ShapesDataset(3, image_size=32), batch_size=4, shuffle=True, drop_last=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False)
    with pytest.raises(DataError, match=r"gives 0 optimizer steps \(dataset of 3 samples .* batch_size 4 .*drop_last"):
        trainer.fit(module, loader)


def test_the_module_and_loaders_pickle_for_ddp_spawn() -> None:
    recipe = build_recipe(tiny_config(train_samples=8))
    module = _RecipeModule(recipe.model, recipe.train_config)
    restored = pickle.loads(pickle.dumps(module))
    # the optimizer factory travels with the collection it optimises: the unpickled module's own one
    assert restored.optimizer_factory.keywords["collection"] is restored.collection
    optimizer = restored.optimizer_factory([p for p in restored.collection.parameters() if p.requires_grad])
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in restored.collection.parameters() if p.requires_grad}
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = module.collection.eval()({"images": images}, groups="MODEL")["classify/logits"]
        after = restored.collection.eval()({"images": images}, groups="MODEL")["classify/logits"]
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    for split in ("train", "val"):
        loader = pickle.loads(pickle.dumps(recipe.loader(split)))
        batch, expected = next(iter(loader)), next(iter(recipe.loader(split)))
        assert torch.equal(batch["images"], expected["images"]), split


@pytest.mark.parametrize("native", [True, False])
def test_channels_last_and_amp_auto_map_onto_lightning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """``channels_last`` trains in that layout and is undone before the weights are written; ``amp: auto`` is
    bf16-mixed only where the device computes bfloat16."""
    from brickzoo.training import _loop

    monkeypatch.setattr(_loop, "native_bf16", lambda device: native)
    config = tiny_config(train_samples=8, epochs=1)
    config["train"].update(channels_last=True, amp="auto")
    recipe = build_recipe(config)
    seen: list[tuple[bool, torch.dtype]] = []

    def hook(module: torch.nn.Module, _: Any, output: torch.Tensor) -> None:
        if module.training and output.shape[1] > 1 and output.shape[-1] > 1:  # channels-last is visible
            seen.append((output.is_contiguous(memory_format=torch.channels_last), output.dtype))

    for module in recipe.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    fit_with_lightning(recipe, tmp_path / "run", devices=1, quiet=True)
    assert seen and {layout for layout, _ in seen} == {True}
    assert {dtype for _, dtype in seen} == {torch.bfloat16 if native else torch.float32}
    state = recipe.model.state_dict()
    assert all(v.is_contiguous() for v in state.values())  # the layout is given back
    saved = {k.removeprefix("collection."): v for k, v in last_checkpoint(tmp_path / "run")["state_dict"].items()}
    written = build_recipe(config).model
    written.load_bricks(tmp_path / "run" / "weights", strict=True)
    for name, value in written.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_channels_last_is_given_back_when_lightning_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(train_samples=8)
    config["train"]["channels_last"] = True
    recipe = build_recipe(config)
    four_d = [p for p in recipe.model.parameters() if p.ndim == 4]
    layouts: list[bool] = []

    def failing_fit(*args: Any, **kwargs: Any) -> None:
        layouts.append(all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d))
        raise RuntimeError("a worker died")

    monkeypatch.setattr(pl.Trainer, "fit", failing_fit)
    with pytest.raises(RuntimeError, match="a worker died"):
        fit_with_lightning(recipe, tmp_path / "run", devices=1, quiet=True)
    assert layouts == [True]  # trained in channels-last...
    assert four_d and all(p.is_contiguous() for p in four_d)  # ...and given back although fit raised
