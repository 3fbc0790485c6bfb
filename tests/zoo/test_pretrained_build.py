"""python -m brickzoo.zoo.build on a tiny schedule: train, publish float16, measure the stored weights on the
held-out split (all of it and its first images), publish the card with those metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from brickzoo import Stage
from brickzoo.data import make_loader
from brickzoo.zoo import PretrainedEntry, build_recipe, load_pretrained
from brickzoo.zoo.build import BUILDS, ZooBuild, build_entry, threads_for_load

TINY = (
    "model.backbone.out_indices=[1,2]",
    "model.neck.out_channels=16",
    "model.heads.detect.head_channels=16",
    "data.args.image_size=32",
    "data.train={num_samples: 16, seed: 0}",
    "data.val={num_samples: 8, seed: 1}",
    "data.test={num_samples: 12, seed: 2}",
    "data.batch_size=8",
    "data.num_workers=0",
    "train.epochs=1",
    "train.device=cpu",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[PretrainedEntry, Path]:
    folder = tmp_path_factory.mktemp("build")
    build = ZooBuild("tiny_shapes", "shapes_multitask", TINY, held_out="test", subset=5, description="tiny")
    return build_entry(build, folder / "zoo", folder / "runs"), folder / "runs"


def test_the_build_publishes_float16_weights_measured_on_the_held_out_split(
    built: tuple[PretrainedEntry, Path],
) -> None:
    entry, runs = built
    card = entry.card
    assert entry.folder.name == "tiny_shapes" and card.storage_dtype == "float16"
    assert card.metrics.weights == "stored weights" and card.onnx_latency is not None
    assert card.metrics.dataset == "shapes test split (image_size=32, max_shapes=3, num_samples=12, seed=2)"
    assert card.command == "python -m brickzoo.zoo.build --only tiny_shapes" and card.description == "tiny"
    assert card.metrics.subset is not None and card.metrics.subset.num_samples == 5
    assert set(card.metrics.values) == set(card.metrics.subset.values) >= {"classify/accuracy", "detect/map"}
    pretrained = load_pretrained(entry.folder, progress=False)
    recipe = build_recipe(entry.folder / "config.yaml")
    for count, values in ((12, card.metrics.values), (5, card.metrics.subset.values)):
        (batch,) = list(make_loader(Subset(recipe.datasets["test"], range(count)), batch_size=count, shuffle=False))
        with torch.no_grad():
            predicted = pretrained.model({"images": batch["images"]}, stage=Stage.INFERENCE)["classify/predictions"]
        accuracy = float(np.mean((predicted == batch["labels"]).numpy()))  # by hand, on the stored weights
        assert values["classify/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    run_config = json.loads((runs / "tiny_shapes" / "config.json").read_text())  # trained with the overrides
    assert run_config["model"]["backbone"]["out_indices"] == [1, 2]


def test_the_shipped_builds_name_their_held_out_split_and_fit_the_budget() -> None:
    assert [b.name for b in BUILDS] == ["shapes_multitask", "digits_classification"]
    for build in BUILDS:
        recipe = build_recipe(build.config, build.overrides, with_data=False)
        assert build.held_out == "test" and "test" in recipe.config["data"] and build.subset >= 32
        assert sum(p.numel() for p in recipe.model.parameters()) * 2 < 5_000_000  # float16 bytes of each model
    assert threads_for_load(1) == 1
