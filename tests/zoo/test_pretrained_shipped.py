"""The prebuilt models shipped in brickzoo/zoo/pretrained/: every card against its files and its config, the
10 MB budget, float16 storage loaded into float32, and the three-task model reproducing its card's metrics on
the first images of its held-out set, measured here with torchmetrics and numpy on the model's raw outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from torch.utils.data import Subset
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.detection import MeanAveragePrecision

import brickzoo
from brickzoo import Stage
from brickzoo.data import SHAPE_NAMES, make_loader
from brickzoo.zoo import build_recipe, list_pretrained, load_pretrained, pretrained_cards, verify_pretrained

PACKAGE = Path(brickzoo.__file__).parent / "zoo" / "pretrained"
SHIPPED = sorted(p.name for p in PACKAGE.iterdir() if (p / "card.json").is_file())
TOLERANCE = 0.01
RESULTS = ("classify/predictions", "segment/predictions", "detect/boxes", "detect/scores", "detect/labels")
TARGETS = ("labels", "masks", "boxes", "box_labels")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_promised_models_are_shipped_and_listed() -> None:
    assert {"shapes_multitask", "digits_classification"} <= set(SHIPPED)
    assert list_pretrained() == SHIPPED and list(pretrained_cards()) == SHIPPED
    heads = {name: {n: h.task for n, h in card.heads.items()} for name, card in pretrained_cards().items()}
    assert heads["shapes_multitask"] == {"classify": "classification", "segment": "segmentation", "detect": "detection"}
    assert heads["digits_classification"] == {"classify": "classification"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_card_matches_its_files_and_its_config(name: str) -> None:
    folder = PACKAGE / name
    card = json.loads((folder / "card.json").read_text())
    weights = sorted(p.relative_to(folder).as_posix() for p in (folder / "weights").rglob("*") if p.is_file())
    assert sorted(card["files"]) == sorted(["config.yaml", *weights])  # every file listed, nothing else shipped
    for relative, record in card["files"].items():
        assert record == {"sha256": sha256(folder / relative), "bytes": (folder / relative).stat().st_size}, relative
    lines = sorted((folder / "checksums.sha256").read_text().splitlines())
    assert lines == sorted(f"{r['sha256']}  {f}" for f, r in card["files"].items())
    assert card["file_size_mb"] == round(sum((folder / f).stat().st_size for f in weights) / 1e6, 3)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config == card["config"] and config["name"] == name
    for head, head_card in card["heads"].items():
        assert head_card["num_classes"] == config["model"]["heads"][head]["num_classes"]
        assert head_card["class_names"] == config["model"]["heads"][head]["class_names"]
    assert verify_pretrained(name, progress=False) == {f: r["sha256"] for f, r in sorted(card["files"].items())}
    recipe = build_recipe(folder / "config.yaml", with_data=False)
    assert sum(p.numel() for p in recipe.model.parameters()) == card["num_params"]
    assert card["command"] == f"python -m brickzoo.zoo.build --only {name}"
    data = config["data"]
    if data["dataset"] == "shapes":  # the held-out images are drawn with a seed of their own
        seeds = {split: {**data["args"], **data[split]}["seed"] for split in ("train", "val", "test")}
        assert len(set(seeds.values())) == 3, seeds


def test_the_shipped_weights_take_at_most_10_mb() -> None:
    files = [p for p in PACKAGE.glob("*/weights/**/*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) <= 10_000_000


@pytest.mark.parametrize("name", SHIPPED)
def test_float16_files_load_into_a_float32_model_exactly(name: str) -> None:
    pretrained = load_pretrained(name, progress=False)
    assert pretrained.card.storage_dtype == "float16" and not pretrained.model.training
    bricks = dict(pretrained.model.named_bricks())
    for file in sorted((PACKAGE / name / "weights").rglob("*.safetensors")):
        path = file.relative_to(PACKAGE / name / "weights").with_suffix("").as_posix()
        state = bricks[path].state_dict()
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                stored = handle.get_tensor(key)
                if stored.is_floating_point():
                    assert stored.dtype == torch.float16 and state[key].dtype == torch.float32, (path, key)
                assert torch.equal(state[key], stored.to(state[key].dtype)), (path, key)


def accuracy(got: dict[str, Any]) -> float:
    pairs = zip(got["classify/predictions"], got["labels"], strict=True)
    return float(np.mean([int(predicted) == int(target) for predicted, target in pairs]))


def real(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One image's boxes without the padding rows (label -1) of the collated or predicted tensors."""
    keep = labels >= 0
    found = {"boxes": boxes.reshape(-1, 4)[keep], "labels": labels[keep]}
    return found if scores is None else {**found, "scores": scores[keep]}


def _raw_outputs(name: str) -> tuple[Any, dict[str, Any]]:
    """The card, and the model's INFERENCE outputs with the targets on the card's first held-out images."""
    pretrained = load_pretrained(name, progress=False)
    card = pretrained.card
    recipe = build_recipe(PACKAGE / name / "config.yaml")  # its datasets behind their eval pipelines
    dataset = recipe.config["data"]["dataset"]
    assert card.metrics.subset is not None and card.metrics.dataset.startswith(f"{dataset} test split")
    subset = Subset(recipe.datasets["test"], range(card.metrics.subset.num_samples))
    collected: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in make_loader(subset, batch_size=16, shuffle=False):
            outputs = pretrained.model({"images": batch["images"]}, stage=Stage.INFERENCE)
            found = {k: v for k, v in outputs.items() if k in RESULTS}
            found.update({k: batch[k] for k in TARGETS if k in batch})
            for key, values in found.items():
                collected.setdefault(key, []).extend(values)  # one entry per image
    return card, collected


def test_the_three_task_model_reproduces_its_card_on_the_first_held_out_images() -> None:
    card, got = _raw_outputs("shapes_multitask")
    expected = card.metrics.subset.values
    count = card.metrics.subset.num_samples
    assert count >= 32 and len(got["labels"]) == count
    assert abs(accuracy(got) - expected["classify/accuracy"]) <= TOLERANCE
    miou = MulticlassJaccardIndex(len(SHAPE_NAMES) + 1, average="macro", ignore_index=255)
    miou.update(torch.stack(got["segment/predictions"]), torch.stack(got["masks"]))
    assert abs(float(miou.compute()) - expected["segment/miou"]) <= TOLERANCE
    predicted = zip(got["detect/boxes"], got["detect/labels"], got["detect/scores"], strict=True)
    detections = [real(boxes, labels, scores) for boxes, labels, scores in predicted]
    truths = [real(boxes, labels) for boxes, labels in zip(got["boxes"], got["box_labels"], strict=True)]
    mean_ap = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    mean_ap.update(detections, truths)
    values = mean_ap.compute()
    assert abs(float(values["map"]) - expected["detect/map"]) <= TOLERANCE
    assert abs(float(values["map_50"]) - expected["detect/map_50"]) <= TOLERANCE
    assert set(card.metrics.values) == set(expected) and card.metrics.weights == "stored weights"


def test_the_digits_classifier_reproduces_its_card_on_the_first_held_out_images() -> None:
    card, got = _raw_outputs("digits_classification")
    assert abs(accuracy(got) - card.metrics.subset.values["classify/accuracy"]) <= TOLERANCE
