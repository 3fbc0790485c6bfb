"""Every backbone family x every registered head, driven by the registry.

Each combination builds, runs forward and backward with a finite loss, summarizes its metrics and
draws its visualizations; for each family the three-task model (every head on one backbone)
exports to ONNX with a dynamic batch and onnxruntime matches torch at another batch size, with
detections that do not depend on the other images of the batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from brickzoo import BrickCollection, Stage, check_onnx_parity, export_bricks_as_onnx
from brickzoo.bag_of_bricks import backbone_bricks, fpn_bricks, get_factory, list_factories, preprocessor_bricks
from brickzoo.bag_of_bricks.backbones import TORCHVISION_FAMILIES
from brickzoo.data import ShapesDataset, make_loader
from brickzoo.zoo._config import HEAD_TASKS

# the smallest member of every family brickzoo supports
BACKBONES = {
    "timm:resnet10t": "timm",
    "timm:mobilenetv3_small_050": "timm",
    "torchvision:resnet18": "resnet",
    "torchvision:resnext50_32x4d": "resnext",
    "torchvision:wide_resnet50_2": "wide_resnet",
    "torchvision:convnext_tiny": "convnext",
    "torchvision:mobilenet_v2": "mobilenet_v2",
    "torchvision:mobilenet_v3_small": "mobilenet_v3",
    "torchvision:efficientnet_b0": "efficientnet",
    "torchvision:regnet_x_400mf": "regnet",
    "brickzoo:csp_darknet_n": "brickzoo",
}
HEADS = [entry.name for entry in list_factories("head")]
DATA = ShapesDataset(num_samples=3, image_size=64, seed=3)


def test_every_family_and_head_is_in_the_matrix() -> None:
    assert set(BACKBONES.values()) == {"timm", "brickzoo", *TORCHVISION_FAMILIES}
    assert set(HEADS) == set(HEAD_TASKS) == {"image_classification", "semantic_segmentation", "object_detection"}


def build(backbone_name: str, heads: list[str]) -> BrickCollection:
    torch.manual_seed(0)
    backbone = backbone_bricks(backbone_name)
    neck = fpn_bricks(backbone, out_channels=32)
    bricks = {**preprocessor_bricks(backbone), **backbone, **neck}
    for head in heads:
        task = HEAD_TASKS[head]
        features = backbone if task == "classification" else neck  # a head reads any levels it is given
        bricks[head] = get_factory(head).factory(
            num_classes=DATA.num_classes_for(task), features=features, class_names=DATA.class_names_for(task)
        )
    model = BrickCollection(bricks)
    if "object_detection" in heads:
        # an untrained head scores all candidates almost alike, so float noise (1e-7) between torch and
        # onnxruntime reorders near-ties before NMS; spread the scores as training does (without saturating)
        torch.nn.init.normal_(model.get_submodule("object_detection.head.model.cls_logits").weight, std=0.05)
    return model


def batch(size: int) -> dict[str, torch.Tensor]:
    return next(iter(make_loader(DATA, batch_size=size, shuffle=False)))


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone_name", list(BACKBONES))
def test_family_and_head_train_summarize_and_visualize(backbone_name: str, head: str) -> None:
    model = build(backbone_name, [head]).train()
    inputs = batch(2)
    outputs = model(inputs, groups=Stage.TRAIN)
    losses = model.extract_losses(outputs)
    total = sum(losses.values())
    assert losses and math.isfinite(total.item())
    total.backward()
    grads = [p.grad for p in model["backbone"].parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    metrics = model.summarize(reset=True)
    assert metrics and all(key.startswith(f"{head}/") for key in metrics)
    model.eval()
    with torch.no_grad():
        drawn = model(inputs, groups={"MODEL", "VISUALIZATION"})[f"{head}/visualization"]
    assert len(drawn) == 2 and all(isinstance(image, Image.Image) for image in drawn)
    for image in drawn:  # the input size, or a whole multiple of it (small images are enlarged to read labels)
        scale = image.width / 64
        assert scale == int(scale) and image.size == (64 * scale, 64 * scale)


@pytest.mark.parametrize("backbone_name", list(BACKBONES))
def test_three_task_model_exports_with_parity(backbone_name: str, tmp_path: Path) -> None:
    model = build(backbone_name, HEADS).eval()
    path = export_bricks_as_onnx(tmp_path / "model.onnx", model, batch(2))
    three = {"images": batch(3)["images"]}
    report = check_onnx_parity(path, model, three)
    assert report.batch_size == 3
    for name in ("image_classification/logits", "image_classification/probabilities", "semantic_segmentation/logits"):
        assert report.max_abs_diff[name] < 1e-4, (name, report.max_abs_diff[name])
    for name in ("semantic_segmentation/predictions", "object_detection/labels"):
        assert report.max_abs_diff[name] == 0, name
    assert report.max_abs_diff["object_detection/boxes"] < 1e-3
    # an image's detections do not depend on the other images of its batch, in torch and in onnxruntime
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    alone = dict(zip(names, session.run(None, {"images": three["images"][:1].numpy()}), strict=True))
    together = dict(zip(names, session.run(None, {"images": three["images"].numpy()}), strict=True))
    with torch.no_grad():
        torch_alone = model({"images": three["images"][:1]}, groups="MODEL")
        torch_together = model(three, groups="MODEL")
    name = "object_detection/labels"
    np.testing.assert_array_equal(alone[name][0], together[name][0])
    torch.testing.assert_close(torch_alone[name][0], torch_together[name][0], atol=0, rtol=0)
    for name in ("object_detection/boxes", "object_detection/scores"):  # equal up to float32 rounding
        np.testing.assert_allclose(alone[name][0], together[name][0], atol=1e-4, rtol=1e-6, err_msg=name)
        torch.testing.assert_close(torch_alone[name][0], torch_together[name][0], atol=1e-4, rtol=1e-6)
