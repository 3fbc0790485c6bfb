"""Tests of the object detection task family (brickzoo/bag_of_bricks/object_detection.py and _boxes.py).

References are computed independently: hand-computed points, boxes and target assignments,
torchvision.ops (batched_nms, box_iou, clip_boxes_to_image) applied per image, torchmetrics'
MeanAveragePrecision called directly, and onnxruntime.
"""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from brickzoo import BrickCollection, BrickTrainable, check_onnx_parity, export_bricks_as_onnx
from brickzoo._draw import palette
from brickzoo.bag_of_bricks import _boxes, object_detection
from brickzoo.bag_of_bricks._boxes import (
    NMS_BLOCK_SIZE,
    _blocks_keep,
    _kernel_keep,
    anchor_points,
    float32_at_most,
    greedy_nms_keep_sorted,
    level_points,
    ltrb_to_boxes,
)
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.bag_of_bricks._registry import get_factory
from brickzoo.bag_of_bricks.object_detection import (
    DetectionPostprocessor,
    DetectionVisualizer,
    FCOSHead,
    FCOSLoss,
    object_detection_bricks,
)
from brickzoo.errors import BrickDefinitionError, BrickInputError, BrickRuntimeError

LEVELS = [FeatureLevel(f"features/level{i}", channels=16, stride=2**i) for i in (3, 4, 5)]
EXAMPLE_PNG = Path("/work/notes/png/detection_example.png")
RED, GREEN = (0.9, 0.15, 0.1), (0.1, 0.8, 0.2)


class TinyPyramid(nn.Module):
    """Images [B, 3, H, W] to three feature maps of 16 channels at strides 8, 16 and 32."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(3 if i == 0 else channels, channels, 3, stride=2, padding=1), nn.ReLU()]
        self.stem = nn.Sequential(*layers)
        self.down4 = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.down5 = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        level3 = self.stem(images)  # [B, C, H/8, W/8]
        level4 = self.down4(level3)  # [B, C, H/16, W/16]
        return level3, level4, self.down5(level4)  # ..., [B, C, H/32, W/32]


def detector(num_classes: int = 2, spread_scores: bool = False, **kwargs: object) -> BrickCollection:
    """A tiny conv pyramid plus the detection bricks nested under "detect"."""
    torch.manual_seed(0)
    model = BrickCollection(
        {
            "pyramid": BrickTrainable(TinyPyramid(), ["images"], [level.name for level in LEVELS]),
            "detect": object_detection_bricks(num_classes, LEVELS, **kwargs),  # type: ignore[arg-type]
        }
    )
    if spread_scores:  # an untrained head scores every candidate alike; spread them so ranks are robust
        nn.init.normal_(cast(nn.Conv2d, model.get_submodule("detect.head.model.cls_logits")).weight, std=0.5)
    return model


def scene() -> dict[str, torch.Tensor]:
    """Two 64x64 images with coloured rectangles: image 0 one red object, image 1 a green and a red one."""
    boxes = torch.tensor([[[8.0, 8, 40, 40], [0, 0, 0, 0]], [[24, 20, 56, 60], [4, 40, 20, 60]]])
    labels = torch.tensor([[0, -1], [1, 0]])
    images = torch.full((2, 3, 64, 64), 0.25)
    for b in range(2):
        for box, label in zip(boxes[b], labels[b], strict=True):
            if label >= 0:
                x1, y1, x2, y2 = (int(v) for v in box)
                images[b, :, y1:y2, x1:x2] = torch.tensor(RED if label == 0 else GREEN)[:, None, None]
    return {"images": images, "boxes": boxes, "box_labels": labels}


# -- points and decoding -------------------------------------------------------------------------
def test_points_and_decoding_hand_computed() -> None:
    assert level_points(2, 3, stride=8).tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    points, strides = anchor_points([(8, 8), (4, 4)], [8, 16])
    assert points.shape == (80, 2) and strides[:64].eq(8).all() and strides[64:].eq(16).all()
    assert points[64 + 1 * 4 + 2].tolist() == [40.0, 24.0]  # level 1, row 1, column 2: ((2 + .5) * 16, (1 + .5) * 16)
    # distances (l, t, r, b) = (8, 16, 24, 32) from (40, 24) -> (32, 8, 64, 56)
    assert ltrb_to_boxes(torch.tensor([40.0, 24]), torch.tensor([8.0, 16, 24, 32])).tolist() == [32, 8, 64, 56]

    # through the head: zero weights and bias log(d / stride) make the distances d at every location
    head = FCOSHead(num_classes=2, in_channels=[4, 4], strides=[8, 16], head_channels=4, num_convs=1)
    with torch.no_grad():
        head.box_distances.weight.zero_()
        head.box_distances.bias.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]).log())  # type: ignore[union-attr]
    outputs = head(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 4, 4))
    assert list(outputs) == ["cls_logits", "box_regression", "centerness"]
    cls_logits, boxes, centerness = outputs["cls_logits"], outputs["box_regression"], outputs["centerness"]
    assert cls_logits.shape == (1, 80, 2) and centerness.shape == (1, 80)
    # level 1 (stride 16): distances (8, 16, 24, 32) at point (40, 24)
    torch.testing.assert_close(boxes[0, 64 + 6], torch.tensor([32.0, 8, 64, 56]))
    # level 0 (stride 8): distances (4, 8, 12, 16) at point (4, 4)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.0, -4, 16, 20]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num=st.integers(1, 50), spread=st.floats(0.5, 40.0))
def test_generalized_box_iou_loss_equals_torchvision(seed: int, num: int, spread: float) -> None:
    """Same losses and gradients as torchvision's, for overlapping, disjoint, nested and empty boxes."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(2, num, 2, generator=generator) * spread
    sizes = torch.rand(2, num, 2, generator=generator) * spread * (torch.rand(2, num, 1, generator=generator) > 0.1)
    first, second = torch.cat([corners, corners + sizes], dim=-1).requires_grad_().unbind(0)  # [K, 4] each
    ours = _boxes.generalized_box_iou_loss(first, second)
    theirs = torchvision.ops.generalized_box_iou_loss(first, second)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    ours_grads = torch.autograd.grad(ours.sum(), (first, second))
    theirs_grads = torch.autograd.grad(theirs.sum(), (first, second))
    for got, expected in zip(ours_grads, theirs_grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# -- NMS -----------------------------------------------------------------------------------------
# the eager implementations: on the CPU above one block of candidates greedy_nms_keep_sorted runs torchvision's
# kernel per label; the blocks run below that, on other devices and in half precision; the compiled single matrix
# is checked against them further down
NMS_IMPLEMENTATIONS = {"cpu kernel": _kernel_keep, "blocks": _blocks_keep}


def nms_mask(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float,
    valid: torch.Tensor | None = None,
    implementation: str = "cpu kernel",
) -> torch.Tensor:
    """An NMS implementation on candidates sorted by score here, its keep mask put back in the input order."""
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    order = scores.argsort(dim=1, descending=True, stable=True)  # [B, K]
    keep_sorted = NMS_IMPLEMENTATIONS[implementation](
        boxes.gather(1, order[..., None].expand(-1, -1, 4)),
        labels.gather(1, order),
        valid.gather(1, order),
        iou_threshold,
    )
    return torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)


def random_candidates(seed: int, batch: int, num: int, num_classes: int) -> tuple[torch.Tensor, ...]:
    """Clustered boxes (so that many overlap and suppression chains form), unique scores, labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 3, 2, generator=generator) * 48 + 8  # [B, 3, 2] three clusters per image
    cluster = torch.randint(0, 3, (batch, num), generator=generator)  # [B, K]
    centre = centres.gather(1, cluster[..., None].expand(-1, -1, 2)) + torch.randn(batch, num, 2, generator=generator)
    size = torch.rand(batch, num, 2, generator=generator) * 12 + 4  # [B, K, 2]
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)  # [B, K, 4]
    scores = torch.stack([torch.randperm(num, generator=generator) for _ in range(batch)]).float() / num + 0.01
    labels = torch.randint(0, num_classes, (batch, num), generator=generator)
    return boxes, scores, labels


@pytest.mark.parametrize("implementation", NMS_IMPLEMENTATIONS)
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    num=st.integers(1, 80),
    num_classes=st.integers(1, 3),
    iou_threshold=st.floats(0.05, 0.95),
    valid_fraction=st.floats(0.3, 1.0),
)
def test_nms_keeps_what_torchvision_batched_nms_keeps(
    implementation: str, seed: int, batch: int, num: int, num_classes: int, iou_threshold: float, valid_fraction: float
) -> None:
    boxes, scores, labels = random_candidates(seed, batch, num, num_classes)
    valid = scores > 1 - valid_fraction
    keep = nms_mask(boxes, scores, labels, iou_threshold, valid=valid, implementation=implementation)
    for b in range(batch):
        candidates = torch.nonzero(valid[b])[:, 0]
        kept = torchvision.ops.batched_nms(
            boxes[b, candidates], scores[b, candidates], labels[b, candidates], iou_threshold
        )
        assert set(candidates[kept].tolist()) == set(torch.nonzero(keep[b])[:, 0].tolist())


def chain_boxes(num: int) -> torch.Tensor:
    """Boxes [num, 4] 10 px wide, 2 px apart: IoU 8/12 with the next one, 6/14 with the one after.

    With threshold 0.5 and scores falling along the chain, greedy NMS keeps exactly the even
    indices, and deciding them takes about num / 2 rounds of parallel decisions.
    """
    x = torch.arange(num, dtype=torch.float32) * 2
    return torch.stack([x, torch.zeros(num), x + 10, torch.full((num,), 10.0)], dim=1)


@pytest.mark.parametrize("implementation", NMS_IMPLEMENTATIONS)
def test_nms_long_suppression_chain(implementation: str) -> None:
    boxes = chain_boxes(41)[None]  # [1, 41, 4]
    scores = torch.linspace(0.9, 0.5, 41)[None]
    labels = torch.zeros(1, 41, dtype=torch.int64)
    keep = nms_mask(boxes, scores, labels, 0.5, implementation=implementation)
    assert torch.nonzero(keep[0])[:, 0].tolist() == list(range(0, 41, 2))
    assert sorted(torchvision.ops.batched_nms(boxes[0], scores[0], labels[0], 0.5).tolist()) == list(range(0, 41, 2))


def torchvision_keep_sets(
    boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, iou_threshold: float
) -> list[set[int]]:
    """Per image, the indices of the valid candidates (ranked best first) that ``torchvision.ops.batched_nms`` keeps."""
    ranked_scores = torch.linspace(1.0, 0.01, boxes.shape[1], dtype=boxes.dtype)  # [K] candidate 0 is the best
    keep = []
    for b in range(boxes.shape[0]):
        index = torch.nonzero(valid[b])[:, 0]
        kept = torchvision.ops.batched_nms(boxes[b, index], ranked_scores[index], labels[b, index], iou_threshold)
        keep.append(set(index[kept].tolist()))
    return keep


@pytest.mark.parametrize("implementation", NMS_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("iou_threshold", "second"), [(0.6, [1.0, 0, 5, 1]), (0.7, [0.0, 0, 7, 1]), (0.5, [0, 0, 2, 1])]
)
def test_nms_at_an_iou_equal_to_the_float32_threshold_suppresses_like_torchvision(
    implementation: str, iou_threshold: float, second: list[float]
) -> None:
    """IoU 3/5, 7/10 and 1/2 of whole-pixel boxes, each equal to its threshold rounded to float32. float32(0.6)
    lies above the double 0.6, so torchvision's CPU kernel suppresses; float32(0.7) lies below 0.7 and 0.5 is
    exact, so both boxes stay."""
    first = [0.0, 0, 4, 1] if iou_threshold == 0.6 else [0.0, 0, 10, 1] if iou_threshold == 0.7 else [0.0, 0, 4, 1]
    boxes = torch.tensor([[first, second]])  # [1, 2, 4]
    iou = float(torchvision.ops.box_iou(boxes[0, :1], boxes[0, 1:]))
    assert iou == float(np.float32(iou_threshold))  # the case at hand: IoU is the threshold rounded to float32
    labels, valid = torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, 2, dtype=torch.bool)
    expected = torchvision_keep_sets(boxes, labels, valid, iou_threshold)[0]
    assert expected == ({0} if float(np.float32(iou_threshold)) > iou_threshold else {0, 1})
    keep = NMS_IMPLEMENTATIONS[implementation](boxes, labels, valid, iou_threshold)
    assert set(torch.nonzero(keep[0])[:, 0].tolist()) == expected
    # the threshold helper against numpy: the largest float32 not above the value
    for value in (iou_threshold, 0.05, 1 / 3, 1.0, 0.0):
        below = np.float32(float32_at_most(value))
        assert float(below) <= value < float(np.nextafter(below, np.float32(np.inf)))


@pytest.mark.parametrize("implementation", NMS_IMPLEMENTATIONS)
@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 2),
    num=st.integers(NMS_BLOCK_SIZE - 2, 3 * NMS_BLOCK_SIZE + 5),
    num_classes=st.integers(1, 3),
    iou_threshold=st.sampled_from([0.3, 0.5, 0.6, 0.7]),
    whole_pixels=st.booleans(),
)
def test_nms_over_several_blocks_keeps_what_torchvision_keeps(
    implementation: str, seed: int, batch: int, num: int, num_classes: int, iou_threshold: float, whole_pixels: bool
) -> None:
    """Enough candidates for several eager blocks, clustered so that suppressions cross block borders;
    whole-pixel boxes make IoUs equal to the threshold likely."""
    boxes, _, labels = random_candidates(seed, batch, num, num_classes)  # ranked by index below
    boxes = boxes.round() if whole_pixels else boxes
    valid = torch.rand(batch, num, generator=torch.Generator().manual_seed(seed)) > 0.15
    keep = NMS_IMPLEMENTATIONS[implementation](boxes, labels, valid, iou_threshold)
    for b, expected in enumerate(torchvision_keep_sets(boxes, labels, valid, iou_threshold)):
        assert set(torch.nonzero(keep[b])[:, 0].tolist()) == expected


def test_nms_blocks_decide_as_the_compiled_single_matrix() -> None:
    """The eager blocks and the compiled formulation (one IoU matrix in a while_loop, what ONNX runs) agree on a
    suppression chain that runs through three blocks and on clustered candidates."""
    num = 2 * NMS_BLOCK_SIZE + 45
    chain = chain_boxes(num)[None]  # [1, K, 4]: keeps the even indices
    clustered, _, labels = random_candidates(3, 1, num, 2)
    boxes = torch.cat([chain, clustered.round()])  # [2, K, 4]
    labels = torch.cat([torch.zeros(1, num, dtype=torch.int64), labels])
    valid = torch.ones(2, num, dtype=torch.bool)
    compiled = torch.compile(greedy_nms_keep_sorted, fullgraph=True, backend="aot_eager", dynamic=False)
    keep = _blocks_keep(boxes, labels, valid, 0.5)
    assert torch.equal(compiled(boxes, labels, valid, 0.5), keep)
    assert torch.equal(greedy_nms_keep_sorted(boxes, labels, valid, 0.5), keep)  # the CPU kernel path
    assert torch.nonzero(keep[0])[:, 0].tolist() == list(range(0, num, 2))
    assert [set(torch.nonzero(k)[:, 0].tolist()) for k in keep] == torchvision_keep_sets(boxes, labels, valid, 0.5)


def test_nms_in_double_precision_compares_the_double_iou_with_the_threshold() -> None:
    """float64 boxes whose IoU is exactly 3/5: torchvision's kernel compares 0.6 > 0.6 in double and keeps both
    boxes; the float32 threshold rounding must not be applied to a double IoU (it would suppress the second)."""
    boxes = torch.tensor([[[0.0, 0, 4, 1], [1.0, 0, 5, 1]]], dtype=torch.float64)  # IoU 3 / 5
    labels, valid = torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, 2, dtype=torch.bool)
    assert float(torchvision.ops.box_iou(boxes[0, :1], boxes[0, 1:])) == 0.6
    assert torchvision_keep_sets(boxes, labels, valid, 0.6) == [{0, 1}]
    for implementation in NMS_IMPLEMENTATIONS.values():
        assert implementation(boxes, labels, valid, 0.6).tolist() == [[True, True]]
    assert greedy_nms_keep_sorted(boxes.float(), labels, valid, 0.6).tolist() == [[True, False]]  # float32(0.6) > 0.6


def test_nms_with_many_sparse_labels_and_empty_images() -> None:
    """50 classes with gaps in their indices, an image without valid candidates and one with a single one."""
    boxes, _, labels = random_candidates(11, 3, 200, 50)
    labels = labels * 7 + 3  # [B, K] sparse, large class indices
    valid = torch.rand(3, 200, generator=torch.Generator().manual_seed(5)) > 0.2
    valid[1] = False
    valid[2] = False
    valid[2, 17] = True
    keep = greedy_nms_keep_sorted(boxes, labels, valid, 0.4)
    assert torch.equal(keep, _blocks_keep(boxes, labels, valid, 0.4))
    assert [set(torch.nonzero(k)[:, 0].tolist()) for k in keep] == torchvision_keep_sets(boxes, labels, valid, 0.4)
    assert keep[1].sum() == 0 and torch.nonzero(keep[2])[:, 0].tolist() == [17]


def test_eager_nms_takes_the_kernel_above_one_block_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which eager form greedy_nms_keep_sorted runs: the kernel for more than NMS_BLOCK_SIZE float candidates on
    the CPU, the blocks for one block or fewer (one tensor block decides the whole batch) and for float16."""
    taken: list[str] = []
    monkeypatch.setattr(_boxes, "_kernel_keep", lambda *args: taken.append("kernel") or _kernel_keep(*args))
    monkeypatch.setattr(_boxes, "_blocks_keep", lambda *args: taken.append("blocks") or _blocks_keep(*args))
    for num, dtype in (
        (NMS_BLOCK_SIZE + 1, torch.float32),
        (NMS_BLOCK_SIZE, torch.float32),
        (NMS_BLOCK_SIZE + 1, torch.float64),
        (NMS_BLOCK_SIZE + 1, torch.float16),
    ):
        boxes, _, labels = random_candidates(0, 2, num, 3)
        keep = greedy_nms_keep_sorted(boxes.to(dtype), labels, torch.ones(2, num, dtype=torch.bool), 0.5)
        assert keep.shape == (2, num)
    assert taken == ["kernel", "blocks", "kernel", "blocks"]


@pytest.mark.parametrize("implementation", NMS_IMPLEMENTATIONS)
def test_nms_with_non_finite_boxes_decides_as_torchvision(implementation: str) -> None:
    """A diverged head gives NaN or infinite coordinates: NaN IoUs compare False (nothing suppressed by or for
    them), infinite boxes get an infinite area; both forms decide as torchvision's kernel, past one block. (The
    reference is ``nms`` on the one label: ``batched_nms`` offsets coordinates by their maximum, NaN here, and so
    would keep every box.)"""
    pattern = torch.tensor([[0.0, 0, 10, 10], [float("nan"), 0, 10, 10], [1, 1, 10, 10], [0, 0, float("inf"), 10]])
    num = 4 * (NMS_BLOCK_SIZE // 4 + 2)
    boxes = pattern.repeat(num // 4, 1)[None]  # [1, K, 4]
    labels, valid = torch.zeros(1, num, dtype=torch.int64), torch.ones(1, num, dtype=torch.bool)
    keep = NMS_IMPLEMENTATIONS[implementation](boxes, labels, valid, 0.5)
    expected = torchvision.ops.nms(boxes[0], torch.linspace(1.0, 0.01, num), 0.5)
    assert set(torch.nonzero(keep[0])[:, 0].tolist()) == set(expected.tolist())
    assert keep[0, :4].tolist() == [True, True, False, True]  # the NaN and the infinite box are kept


def test_nms_in_half_precision_runs_the_blocks() -> None:
    """torchvision's CPU kernel takes float32 and float64 only: float16 boxes are decided by the blocks, here on
    whole-pixel boxes (exact in float16) as torchvision decides them in float32."""
    boxes, _, labels = random_candidates(2, 2, NMS_BLOCK_SIZE + 30, 2)
    boxes = boxes.round()
    valid = torch.ones(2, NMS_BLOCK_SIZE + 30, dtype=torch.bool)
    keep = greedy_nms_keep_sorted(boxes.half(), labels, valid, 0.5)
    assert torch.equal(keep, _blocks_keep(boxes.half(), labels, valid, 0.5))
    assert [set(torch.nonzero(k)[:, 0].tolist()) for k in keep] == torchvision_keep_sets(boxes, labels, valid, 0.5)


def reference_detections(
    cls_logits: torch.Tensor, boxes: torch.Tensor, centerness: torch.Tensor, size: tuple[int, int], post: object
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """torchvision's FCOS post-processing, image by image: threshold, top-k, clip, batched_nms, keep the best."""
    results = []
    num_classes = cls_logits.shape[-1]
    for b in range(cls_logits.shape[0]):
        scores = torch.sqrt(torch.sigmoid(cls_logits[b]) * torch.sigmoid(centerness[b])[:, None]).flatten()
        top, index = scores.topk(min(post.pre_nms_top_k, scores.numel()))  # type: ignore[attr-defined]
        above = top > post.score_threshold  # type: ignore[attr-defined]
        top, index = top[above], index[above]
        image_boxes = torchvision.ops.clip_boxes_to_image(boxes[b][index // num_classes], size)
        labels = index % num_classes
        kept = torchvision.ops.batched_nms(image_boxes, top, labels, post.nms_threshold)  # type: ignore[attr-defined]
        kept = kept[: post.max_detections]  # type: ignore[attr-defined]
        results.append((image_boxes[kept], top[kept], labels[kept]))
    return results


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(1, 4),
    max_detections=st.sampled_from([3, 10, 100]),
    pre_nms_top_k=st.sampled_from([5, 40, 1000]),
    nms_threshold=st.floats(0.2, 0.8),
)
def test_postprocessor_matches_torchvision_per_image(
    seed: int, num_classes: int, max_detections: int, pre_nms_top_k: int, nms_threshold: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, num = 3, 30
    cls_logits = torch.randn(batch, num, num_classes, generator=generator) * 2 - 1
    centerness = torch.randn(batch, num, generator=generator)
    boxes, _, _ = random_candidates(seed, batch, num, 1)
    boxes = boxes * 1.3 - 8  # some boxes cross the image border and get clipped
    post = DetectionPostprocessor(max_detections, 0.3, nms_threshold, pre_nms_top_k)
    images = torch.zeros(batch, 3, 48, 64)
    detections = post(cls_logits, boxes, centerness, images)
    assert list(detections) == ["boxes", "scores", "labels"]
    out_boxes, out_scores, out_labels = detections["boxes"], detections["scores"], detections["labels"]
    assert out_boxes.shape == (batch, max_detections, 4) and out_labels.dtype == torch.int64
    for b, (ref_boxes, ref_scores, ref_labels) in enumerate(
        reference_detections(cls_logits, boxes, centerness, (48, 64), post)
    ):
        n = len(ref_labels)
        assert out_labels[b, :n].tolist() == ref_labels.tolist()
        torch.testing.assert_close(out_boxes[b, :n], ref_boxes, rtol=0, atol=0)
        torch.testing.assert_close(out_scores[b, :n], ref_scores, rtol=0, atol=1e-6)  # 1 ulp: vectorised sqrt
        assert (out_labels[b, n:] == -1).all() and (out_scores[b, n:] == 0).all() and (out_boxes[b, n:] == 0).all()


def test_detections_are_batch_independent() -> None:
    model = detector(3, spread_scores=True).eval()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        alone = model({"images": images[:1]}, groups={"MODEL"})
        together = model({"images": images}, groups={"MODEL"})
    assert (alone["detect/labels"] >= 0).sum() > 10  # a real comparison, not of padding
    assert torch.equal(alone["detect/labels"][0], together["detect/labels"][0])
    # convolutions round differently at another batch size: equal up to float noise
    torch.testing.assert_close(alone["detect/boxes"][0], together["detect/boxes"][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(alone["detect/scores"][0], together["detect/scores"][0], rtol=0, atol=1e-5)
    # the post-processing alone on identical inputs: identical decisions, scores up to 1 ulp (vectorised sigmoid)
    post = model.get_submodule("detect.postprocess.model")
    raw = [together[f"detect/{name}"] for name in ("cls_logits", "box_regression", "centerness")]
    batched_boxes, batched_scores, batched_labels = post(*raw, images).values()
    single_boxes, single_scores, single_labels = post(*(r[1:2] for r in raw), images[1:2]).values()
    assert torch.equal(batched_labels[1:2], single_labels) and torch.equal(batched_boxes[1:2], single_boxes)
    torch.testing.assert_close(batched_scores[1:2], single_scores, rtol=0, atol=1e-6)


# -- loss ----------------------------------------------------------------------------------------
def test_target_assignment_hand_made() -> None:
    """160x160 input, strides 8 (20x20 points at 4 + 8i) and 16 (10x10 points at 8 + 16i); radius 1.5 strides.

    - A (label 2) [8, 8, 24, 24]: stride-8 points strictly inside are x, y in {12, 20}; all within 12 px of the
      centre (16, 16) and reach 12 <= 64: 4 positives. No stride-16 point is strictly inside.
    - C (label 1) [0, 0, 150, 150], centre 75: stride-16 points within 24 px are x, y in {56, 72, 88}, reach
      >= 78 > 64 (coarsest level, no upper bound): 9 positives. Its stride-8 points near the centre reach > 64.
    - B (label 0) [0, 0, 160, 160], centre 80: its stride-16 points x, y in {72, 88} are also C's, and C is
      smaller: B gets none. The padded slot (label -1) gets none. Image 1 has no objects.
    """
    loss = FCOSLoss(num_classes=3, strides=[8, 16])
    points, point_strides = anchor_points([(20, 20), (10, 10)], [8, 16])
    boxes = torch.tensor(
        [[[8.0, 8, 24, 24], [0, 0, 160, 160], [0, 0, 150, 150], [0, 0, 160, 160]], [[0.0, 0, 160, 160]] + [[0] * 4] * 3]
    )
    labels = torch.tensor([[2, 0, 1, -1], [-1, -1, -1, -1]])
    matched = loss.assign_targets(points, point_strides, boxes, labels)  # [2, 500]
    positives = {(tuple(points[i].tolist()), int(matched[0, i])) for i in torch.nonzero(matched[0] >= 0)[:, 0]}
    expected = {((x, y), 0) for x in (12.0, 20.0) for y in (12.0, 20.0)}
    expected |= {((x, y), 2) for x in (56.0, 72.0, 88.0) for y in (56.0, 72.0, 88.0)}
    assert positives == expected
    assert (matched[1] == -1).all()
    # the 9 positives of C lie on the stride-16 level, A's on the stride-8 level
    assert point_strides[matched[0] == 2].eq(16).all() and point_strides[matched[0] == 0].eq(8).all()


def reference_fcos_losses(
    loss: FCOSLoss,
    cls_logits: torch.Tensor,
    boxes: torch.Tensor,
    centerness: torch.Tensor,
    targets: torch.Tensor,
    target_labels: torch.Tensor,
    sizes: list[tuple[int, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS losses written the straightforward way: image by image, a loop over the ground-truth boxes,
    boolean indexing of the positives, torchvision's focal and GIoU losses."""
    strides, dtype = loss.strides, cls_logits.dtype
    points = torch.cat(
        [
            torch.tensor([[(x + 0.5) * s, (y + 0.5) * s] for y in range(h) for x in range(w)], dtype=dtype)
            for (h, w), s in zip(sizes, strides, strict=True)
        ]
    )  # [N, 2]
    point_strides = torch.cat(
        [torch.full((h * w,), float(s), dtype=dtype) for (h, w), s in zip(sizes, strides, strict=True)]
    )  # [N]
    lower = torch.where(point_strides == min(strides), 0.0, 4 * point_strides)
    upper = torch.where(point_strides == max(strides), math.inf, 8 * point_strides)
    px, py = points[:, 0], points[:, 1]
    cls_sum, box_numerator, box_denominator, ctr_sum, num_positive = 0.0, 0.0, 0.0, 0.0, 0
    for b in range(cls_logits.shape[0]):
        matched = torch.full((points.shape[0],), -1)
        best_area = torch.full((points.shape[0],), math.inf, dtype=dtype)
        for m in range(targets.shape[1]):
            if target_labels[b, m] < 0:
                continue
            x1, y1, x2, y2 = targets[b, m]
            sides = torch.stack([px - x1, py - y1, x2 - px, y2 - py], dim=1)  # [N, 4]
            near = torch.maximum((px - (x1 + x2) / 2).abs(), (py - (y1 + y2) / 2).abs()) < 1.5 * point_strides
            reach = sides.max(dim=1).values
            fits = (sides.min(dim=1).values > 0) & near & (reach > lower) & (reach <= upper)
            area = (x2 - x1) * (y2 - y1)
            better = fits & (area < best_area)  # strictly smaller: the first of equal boxes keeps its locations
            matched[better], best_area[better] = m, area
        positive = matched >= 0
        one_hot = torch.zeros(cls_logits.shape[1:], dtype=dtype)
        one_hot[positive, target_labels[b, matched[positive]]] = 1.0
        cls_sum = cls_sum + torchvision.ops.sigmoid_focal_loss(cls_logits[b], one_hot, reduction="sum")
        truth = targets[b, matched[positive]]  # [P, 4]
        p = points[positive]
        left, top, right, bottom = (
            p[:, 0] - truth[:, 0],
            p[:, 1] - truth[:, 1],
            truth[:, 2] - p[:, 0],
            truth[:, 3] - p[:, 1],
        )
        ctr = torch.sqrt(
            torch.minimum(left, right)
            / torch.maximum(left, right)
            * torch.minimum(top, bottom)
            / torch.maximum(top, bottom)
        )
        giou = torchvision.ops.generalized_box_iou_loss(boxes[b, positive], truth)
        box_numerator = box_numerator + (giou * ctr).sum()
        box_denominator = box_denominator + ctr.sum()
        ctr_sum = ctr_sum + F.binary_cross_entropy_with_logits(centerness[b, positive], ctr, reduction="sum")
        num_positive += int(positive.sum())
    normaliser = max(num_positive, 1)
    return cls_sum / normaliser, box_numerator / max(float(box_denominator), 1e-6), ctr_sum / normaliser


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    num_boxes=st.integers(0, 5),
    num_classes=st.integers(1, 3),
    strides=st.sampled_from([[8, 16, 32], [8, 16], [16]]),
    duplicates=st.booleans(),
)
def test_dense_loss_equals_a_per_image_reference(
    seed: int, batch: int, num_boxes: int, num_classes: int, strides: list[int], duplicates: bool
) -> None:
    """Losses and their gradients equal the straightforward per-image computation, within 1e-5 (in float64,
    so that the order of summation does not count)."""
    generator = torch.Generator().manual_seed(seed)
    double = {"generator": generator, "dtype": torch.float64}
    sizes = [(64 // s, 64 // s) for s in strides]
    num = sum(h * w for h, w in sizes)
    corner = torch.rand(batch, num_boxes, 2, **double) * 56
    extent = torch.rand(batch, num_boxes, 2, **double) * 60 + 2
    targets = torch.cat([corner, corner + extent], dim=-1)  # [B, M, 4], some leave the 64 px image
    labels = torch.randint(-1, num_classes, (batch, num_boxes), generator=generator)
    if duplicates and num_boxes > 1:  # equal boxes of other labels: ties broken towards the first
        targets[:, 1] = targets[:, 0]
        labels[:, 1] = (labels[:, 0] + 1) % num_classes
    targets[labels < 0] = math.nan  # padding slots may hold anything
    cls_logits = torch.randn(batch, num, num_classes, **double).requires_grad_()
    centers = torch.rand(batch, num, 2, **double) * 64
    boxes = torch.cat(
        [
            centers - 20 * torch.rand(batch, num, 2, **double),
            centers + 20 * torch.rand(batch, num, 2, **double),
        ],
        dim=-1,
    ).requires_grad_()
    centerness = torch.randn(batch, num, **double).requires_grad_()
    features = [torch.zeros(batch, 1, h, w) for h, w in sizes]
    loss = FCOSLoss(num_classes, strides)
    loss.check_inputs(cls_logits, boxes, centerness, targets, labels, *features)
    dense = loss(cls_logits, boxes, centerness, targets, labels, *features)
    reference = reference_fcos_losses(loss, cls_logits, boxes, centerness, targets, labels, sizes)
    wrt = (cls_logits, boxes, centerness)
    for name, expected in zip(FCOSLoss.OUTPUTS, reference, strict=True):
        assert abs(dense[name].item() - expected.item()) <= 1e-5, (name, dense[name].item(), expected.item())
        got_grads = torch.autograd.grad(dense[name], wrt, retain_graph=True, materialize_grads=True)
        expected_grads = torch.autograd.grad(expected, wrt, retain_graph=True, materialize_grads=True)
        for got, want in zip(got_grads, expected_grads, strict=True):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_zero_object_images_give_finite_losses_and_gradients() -> None:
    model = detector(3)
    named = scene()
    for boxes, labels in [
        (torch.zeros(2, 3, 4), torch.full((2, 3), -1)),  # padded slots only
        (torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.int64)),  # no slots at all
    ]:
        outputs = model({**named, "boxes": boxes, "box_labels": labels}, groups={"MODEL", "LOSS"})
        losses = model.extract_losses(outputs)
        assert sorted(losses) == ["detect/loss_box", "detect/loss_cls", "detect/loss_ctr"]
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["detect/loss_box"].item() == 0.0 and losses["detect/loss_ctr"].item() == 0.0
        model.zero_grad()
        sum(losses.values()).backward()  # type: ignore[union-attr]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    # one image with and one without objects: finite too, and the losses see the positives
    labels = torch.tensor([[0, -1], [-1, -1]])
    losses = model.extract_losses(model({**named, "box_labels": labels}, groups={"MODEL", "LOSS"}))
    assert all(torch.isfinite(v) for v in losses.values()) and losses["detect/loss_box"].item() > 0


def test_head_and_loss_run_on_a_1x1_level_with_batch_1() -> None:
    """A 32 px image gives a 1x1 stride-32 level; with 32 head channels GroupNorm had one channel (one value) per
    group there and F.group_norm raised "Expected more than 1 value per channel", in eval and in training."""
    model = detector(2, head_channels=32)
    head = cast(FCOSHead, model.get_submodule("detect.head.model"))
    named = {
        "images": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
        "boxes": torch.tensor([[[2.0, 3, 30, 29]]]),
        "box_labels": torch.tensor([[1]]),
    }
    for training in (False, True):
        model.train(training)
        outputs = model(named, groups={"MODEL", "LOSS"})
        assert outputs["detect/cls_logits"].shape == (1, 16 + 4 + 1, 2)  # 4x4 + 2x2 + 1x1 locations
        losses = model.extract_losses(outputs)
        assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()  # type: ignore[union-attr]
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    assert [m.num_groups for m in head.modules() if isinstance(m, nn.GroupNorm)] == [16, 16, 16, 16]
    # the 1x1 level's tower: each group of 2 channels normalised over its 2 values, by hand
    tower = head.cls_tower[:2]  # conv, GroupNorm
    x = torch.rand(1, 32, 1, 1, generator=torch.Generator().manual_seed(1))
    conv = tower[0](x).reshape(16, 2)  # [groups, 2]
    norm = cast(nn.GroupNorm, tower[1])
    by_hand = (conv - conv.mean(dim=1, keepdim=True)) / torch.sqrt(conv.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
    expected = by_hand.reshape(32) * norm.weight + norm.bias
    torch.testing.assert_close(tower(x).reshape(32), expected, rtol=1e-5, atol=1e-5)


def test_group_count_change_keeps_state_dicts_loadable() -> None:
    """Before the fix a 32-channel tower had GroupNorm(32, 32); GroupNorm's weights are per channel, so such a
    state dict still loads strictly (the normalisation groups are not part of it)."""
    head = FCOSHead(num_classes=3, in_channels=[16], strides=[8], head_channels=32)
    before_fix = nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1),
        nn.GroupNorm(32, 32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.GroupNorm(32, 32),
        nn.ReLU(),
    )
    head.cls_tower.load_state_dict(before_fix.state_dict(), strict=True)
    assert torch.equal(head.cls_tower[1].weight, before_fix[1].weight)
    # 64 channels and more keep torchvision's 32 groups: nothing changes there
    wide = FCOSHead(num_classes=3, in_channels=[16], strides=[8], head_channels=64)
    assert {m.num_groups for m in wide.modules() if isinstance(m, nn.GroupNorm)} == {32}
    with pytest.raises(BrickDefinitionError, match=r"head_channels must be at least 2 with num_convs=2.*got 1"):
        FCOSHead(num_classes=3, in_channels=[16], strides=[8], head_channels=1)


@pytest.mark.parametrize(
    ("change", "expected", "layout"),
    [
        ({"box_labels": torch.tensor([[0, 5], [1, 0]])}, "labels must be in [0, 1]", False),
        ({"box_labels": torch.tensor([[0, -2], [1, 0]])}, "got values from -2 to 1", False),
        ({"box_labels": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}, "expected int64 labels [B, M]", True),
        ({"boxes": torch.zeros(2, 2, 5)}, "expected float boxes [B, M, 4]", True),
        ({"boxes": torch.zeros(2, 3, 4)}, "disagree", True),
        (
            {"boxes": torch.tensor([[[8.0, 8, 4, 40], [0, 0, 0, 0]], [[24, 20, 56, 60], [4, 40, 20, 60]]])},
            "x2 < x1",
            False,
        ),
        (
            {"boxes": torch.tensor([[[8.0, 8, 40, 40], [0, 0, 0, 0]], [[24, 20, math.inf, 60], [4, 40, 20, 60]]])},
            "finite",
            False,
        ),
        ({"boxes": torch.zeros(3, 2, 4), "box_labels": torch.zeros(3, 2, dtype=torch.int64)}, "batch size 3", True),
    ],
)
def test_bad_targets_raise_with_the_brick_path(change: dict[str, torch.Tensor], expected: str, layout: bool) -> None:
    """Layout problems (dtype, shape) are found by forward itself; value problems by check_inputs (check_batch)."""
    model = detector(2)
    for run in [model.check_batch] + ([model] if layout else []):
        for groups, brick in (({"MODEL", "LOSS"}, "loss"), ({"MODEL", "METRIC"}, "metrics")):
            with pytest.raises(BrickInputError) as info:
                run({**scene(), **change}, groups=groups)
            message = str(info.value)
            assert message.startswith(f"brick 'detect/{brick}': ")
            assert expected in message


def test_unchecked_label_out_of_range_on_an_object_fails_loudly_in_forward() -> None:
    """Without check_batch, a class index >= num_classes on a matched object is an error, not a silent background."""
    model = detector(2)
    named = {**scene(), "box_labels": torch.tensor([[5, -1], [1, 0]])}
    with pytest.raises(BrickRuntimeError, match=r"brick 'detect/loss'.*IndexError"):
        model(named, groups={"MODEL", "LOSS"})


def test_padding_slots_may_hold_anything_and_good_targets_pass_the_checks() -> None:
    """Padding boxes (label -1) are never read: NaN there changes no loss, gradient or check."""
    model = detector(2)
    named = scene()
    named["box_labels"] = torch.tensor([[0, -1], [-1, -1]])  # image 1 without objects: all slots padding
    named["boxes"] = torch.tensor([[[8.0, 8, 40, 40], [0, 0, 0, 0]], [[0.0, 0, 0, 0], [0, 0, 0, 0]]])
    clean = model.extract_losses(model.check_batch(named, groups={"MODEL", "LOSS", "METRIC"}))
    model.reset_metrics()
    # slot 0, the one background locations gather (and mask out), and image 0's padded slot
    named["boxes"][1, 0] = torch.tensor([math.nan, -math.inf, math.inf, 3.0])
    named["boxes"][0, 1] = torch.tensor([math.inf, math.nan, -1.0, math.nan])
    dirty = model.extract_losses(model.check_batch(named, groups={"MODEL", "LOSS"}))
    for name, value in clean.items():
        torch.testing.assert_close(dirty[name], value, rtol=0, atol=0)
    sum(dirty.values()).backward()  # type: ignore[union-attr]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_overfits_two_images() -> None:
    model = detector(2)
    named = scene()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for _ in range(50):
        losses = model.extract_losses(model(named, groups={"MODEL", "LOSS"}))
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()  # type: ignore[union-attr]
        optimizer.step()
        totals.append(total.item())  # type: ignore[union-attr]
    assert totals[-1] < 0.5 * totals[0], totals
    model.eval()
    with torch.no_grad():
        outputs = model(named, groups={"MODEL"})
    for b in range(2):
        real = named["box_labels"][b] >= 0
        iou = torchvision.ops.box_iou(outputs["detect/boxes"][b, :1], named["boxes"][b][real])[0]  # [M]
        best = int(iou.argmax())
        assert float(iou[best]) > 0.5, (b, iou, outputs["detect/boxes"][b, :3])
        assert int(outputs["detect/labels"][b, 0]) == int(named["box_labels"][b][real][best])


# -- metrics -------------------------------------------------------------------------------------
def test_metric_perfect_predictions_and_torchmetrics_reference() -> None:
    named = scene()
    model = detector(2)
    boxes, labels = named["boxes"], named["box_labels"]
    perfect = {"detect/boxes": boxes, "detect/scores": (labels >= 0).float(), "detect/labels": labels}
    model({**named, **perfect}, groups={"METRIC"})
    summary = model.summarize(reset=True)
    assert float(summary["detect/map"]) == 1.0 and float(summary["detect/map_50"]) == 1.0
    assert all(not key.startswith("detect/MeanAverage") for key in summary)  # flat keys

    # a non-trivial case: shifted boxes, a wrong label, a duplicate, padding; two batches
    generator = torch.Generator().manual_seed(3)
    reference = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    for _ in range(2):
        shifted = boxes + torch.randn(2, 2, 4, generator=generator) * 4
        predicted_boxes = torch.cat([shifted, shifted[:, :1] + 1, torch.zeros(2, 2, 4)], dim=1)  # [2, 5, 4]
        predicted_labels = torch.cat([labels.clamp(min=0), torch.tensor([[1], [1]]), torch.full((2, 2), -1)], dim=1)
        predicted_scores = torch.rand(2, 5, generator=generator) * (predicted_labels >= 0)
        predicted = {
            "detect/boxes": predicted_boxes,
            "detect/scores": predicted_scores,
            "detect/labels": predicted_labels,
        }
        model({**named, **predicted}, groups={"METRIC"})
        reference.update(
            [
                {"boxes": predicted_boxes[b, :3], "scores": predicted_scores[b, :3], "labels": predicted_labels[b, :3]}
                for b in range(2)
            ],
            [{"boxes": boxes[b][labels[b] >= 0], "labels": labels[b][labels[b] >= 0]} for b in range(2)],
        )
    summary = model.summarize(reset=True)
    expected = reference.compute()
    assert 0.0 < float(expected["map"]) < 1.0
    assert sorted(summary) == ["detect/map", "detect/map_50", "detect/map_75", "detect/mar_100"]  # headline only
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert float(summary[f"detect/{key}"]) == pytest.approx(float(expected[key]), abs=1e-6), key
    assert model.summarize() == {}  # reset


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), slots=st.integers(0, 6))
def test_metric_drops_padding_wherever_it_sits(seed: int, batch: int, slots: int) -> None:
    """Padding (label -1) anywhere among the slots, not only last: the mAP of torchmetrics on the real entries."""
    generator = torch.Generator().manual_seed(seed)

    def random_boxes() -> tuple[torch.Tensor, torch.Tensor]:
        corner = torch.rand(batch, slots, 2, generator=generator) * 40
        boxes = torch.cat([corner, corner + 4 + torch.rand(batch, slots, 2, generator=generator) * 20], dim=-1)
        return boxes, torch.randint(-1, 2, (batch, slots), generator=generator)

    truth, truth_labels = random_boxes()
    found, found_labels = random_boxes()
    found = torch.where(torch.rand(batch, slots, 1, generator=generator) < 0.6, truth + 1.5, found)  # some hits
    scores = torch.rand(batch, slots, generator=generator)
    metric = object_detection.DetectionMeanAveragePrecision(num_classes=2)
    metric.check_inputs(found, scores, found_labels, truth, truth_labels)
    metric.update(found, scores, found_labels, truth, truth_labels)
    reference = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    reference.update(
        [
            {"boxes": found[b][k], "scores": scores[b][k], "labels": found_labels[b][k]}
            for b in range(batch)
            for k in [found_labels[b] >= 0]
        ],
        [{"boxes": truth[b][k], "labels": truth_labels[b][k]} for b in range(batch) for k in [truth_labels[b] >= 0]],
    )
    ours, theirs = metric.compute(), reference.compute()
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert float(ours[key]) == pytest.approx(float(theirs[key]), abs=1e-6), key


# -- visualization ---------------------------------------------------------------------------------
def test_visualizer_draws_boxes_and_skips_padding(tmp_path: Path) -> None:
    named = scene()
    model = detector(2, class_names=["red", "green"])
    detections = {
        "detect/boxes": torch.tensor(
            [
                [[8.0, 8, 40, 40], [0, 0, 64, 64], [44, 44, 60, 60]],
                [[24, 20, 56, 60], [4, 40, 20, 60], [40, 4, 60, 16]],
            ]
        ),
        "detect/scores": torch.tensor([[0.93, 0.0, 0.1], [0.88, 0.71, 0.45]]),
        "detect/labels": torch.tensor([[0, -1, 1], [1, 0, 0]]),
    }
    pictures = model({**named, **detections}, groups={"VISUALIZATION"})["detect/visualization"]
    assert len(pictures) == 2 and all(p.size == (256, 256) for p in pictures)  # 64 px enlarged 4x
    red, green = palette(2)
    first = np.asarray(pictures[0])
    assert tuple(first[100, 32]) == red  # left edge of [8, 8, 40, 40] * 4, below the label
    assert tuple(first[128, 0]) != red and tuple(first[128, 0]) != green  # padding (label -1) not drawn
    assert tuple(first[200, 176]) != green  # score 0.1 < min_score 0.3: not drawn
    second = np.asarray(pictures[1])
    assert tuple(second[160, 96]) == green and tuple(second[200, 16]) == red
    paths = [tmp_path / "detection_example.png"] + ([EXAMPLE_PNG] if EXAMPLE_PNG.parent.is_dir() else [])
    canvas = Image.new("RGB", (516, 256), (255, 255, 255))  # both images, 4 px apart
    canvas.paste(pictures[0], (0, 0))
    canvas.paste(pictures[1], (260, 0))
    for path in paths:
        canvas.save(path)
        assert path.stat().st_size > 0

    # numpy inputs with uint8 images work too, and class indices stand in for missing names
    drawing = DetectionVisualizer(num_classes=3)(
        np.zeros((300, 300, 3), np.uint8), np.array([[10.0, 10, 100, 100]]), np.array([0.5]), np.array([2])
    )
    assert drawing.size == (300, 300) and tuple(np.asarray(drawing)[50, 10]) == palette(3)[2]


# -- export, compile, composition ----------------------------------------------------------------------
def test_onnx_export_dynamic_batch_parity(tmp_path: Path) -> None:
    model = detector(3, spread_scores=True)
    path = export_bricks_as_onnx(tmp_path / "detect.onnx", model, {"images": torch.rand(2, 3, 64, 64)})
    assert "Loop" in {node.op_type for node in onnx.load(str(path)).graph.node}  # NMS rounds are not unrolled
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    report = check_onnx_parity(path, model, {"images": images})
    assert report.batch_size == 3
    assert report.max_abs_diff["detect/labels"] == 0
    assert report.max_abs_diff["detect/boxes"] < 1e-4 and report.max_abs_diff["detect/scores"] < 1e-4
    with torch.no_grad():
        labels = model.eval()({"images": images}, groups={"MODEL"})["detect/labels"]
    assert (labels >= 0).sum(dim=1).min() > 10  # detections, not padding, were compared


def test_onnx_postprocessor_runs_nms_rounds_until_done(tmp_path: Path) -> None:
    """Exported on random candidates, run on a 41-box suppression chain (about 20 rounds): same detections."""
    model = BrickCollection(
        {"detect": {"postprocess": object_detection_bricks(1, LEVELS, max_detections=30)["postprocess"]}}
    )
    generator = torch.Generator().manual_seed(11)
    example = {
        "detect/cls_logits": torch.randn(2, 41, 1, generator=generator),
        "detect/box_regression": chain_boxes(41)[None].repeat(2, 1, 1) + torch.rand(2, 41, 4, generator=generator),
        "detect/centerness": torch.zeros(2, 41),
        "images": torch.zeros(2, 3, 64, 96),
    }
    path = export_bricks_as_onnx(tmp_path / "post.onnx", model, example)
    chain = {
        "detect/cls_logits": torch.linspace(3, -1, 41)[None, :, None].repeat(3, 1, 1),
        "detect/box_regression": chain_boxes(41)[None].repeat(3, 1, 1),
        "detect/centerness": torch.zeros(3, 41),
        "images": torch.zeros(3, 3, 64, 96),
    }
    report = check_onnx_parity(path, model, chain)
    assert report.max_abs_diff["detect/labels"] == 0 and report.max_abs_diff["detect/boxes"] == 0, report
    assert report.max_abs_diff["detect/scores"] < 1e-6, report
    labels = model(chain, groups={"MODEL"})["detect/labels"]
    assert (labels >= 0).sum(dim=1).tolist() == [21, 21, 21]  # the even boxes of the chain


def test_model_group_compiles_fullgraph() -> None:
    model = detector(2, spread_scores=True).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    compiled = torch.compile(lambda named: model(named, groups={"MODEL"}), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = model({"images": images}, groups={"MODEL"})
        got = compiled({"images": images})
    for name in ("detect/boxes", "detect/scores", "detect/labels"):
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5)


def test_two_heads_side_by_side_do_not_collide() -> None:
    torch.manual_seed(0)
    model = BrickCollection(
        {
            "pyramid": BrickTrainable(TinyPyramid(), ["images"], [level.name for level in LEVELS]),
            "cars": object_detection_bricks(2, LEVELS, max_detections=7),
            "people": object_detection_bricks(3, LEVELS[:2], max_detections=5),
        }
    )
    outputs = model(scene(), groups={"MODEL", "LOSS", "METRIC"})
    assert outputs["cars/boxes"].shape == (2, 7, 4) and outputs["people/boxes"].shape == (2, 5, 4)
    assert outputs["cars/cls_logits"].shape == (2, 64 + 16 + 4, 2)
    assert outputs["people/cls_logits"].shape == (2, 64 + 16, 3)
    assert sorted(model.extract_losses(outputs)) == sorted(
        f"{head}/loss_{kind}" for head in ("cars", "people") for kind in ("cls", "box", "ctr")
    )
    summary = model.summarize(reset=True)
    assert "cars/map" in summary and "people/map" in summary and "map" not in summary


# -- factory -------------------------------------------------------------------------------------
def test_factory_is_registered_and_checks_its_arguments() -> None:
    assert get_factory("object_detection").factory is object_detection_bricks
    bricks = object_detection_bricks(2, LEVELS)
    assert sorted(bricks) == ["head", "loss", "metrics", "postprocess", "visualize"]
    assert {name: sorted(brick.groups) for name, brick in bricks.items()} == {
        "head": ["MODEL"],
        "postprocess": ["MODEL"],
        "loss": ["LOSS"],
        "metrics": ["METRIC"],
        "visualize": ["VISUALIZATION"],
    }
    with pytest.raises(BrickDefinitionError, match="is a tensor name, which carries no stride"):
        object_detection_bricks(2, "features")
    with pytest.raises(BrickDefinitionError, match="needs the stride of every feature level"):
        object_detection_bricks(2, FeatureLevel("features", 16, 0))
    with pytest.raises(BrickDefinitionError, match="num_classes must be an int >= 1, got 0"):
        object_detection_bricks(0, LEVELS)
    with pytest.raises(BrickDefinitionError, match=r"class_names must hold num_classes=2 names, got 1.*nms_threshold"):
        object_detection_bricks(2, LEVELS, class_names=["a"], nms_threshold=1.5)
    with pytest.raises(BrickDefinitionError, match=r"targets must be a non-empty tensor name, got \('boxes', 'l'\)"):
        object_detection_bricks(2, LEVELS, targets=("boxes", "l"))  # type: ignore[arg-type]
    with pytest.raises(BrickDefinitionError, match="target_labels must be a non-empty tensor name, got ''"):
        object_detection_bricks(2, LEVELS, target_labels="")
    model = BrickCollection({"detect": object_detection_bricks(2, LEVELS)})
    wrong_channels = {"images": torch.rand(1, 3, 64, 64)} | {
        level.name: torch.rand(1, 8, 64 // level.stride, 64 // level.stride) for level in LEVELS
    }
    with pytest.raises(BrickInputError, match=r"brick 'detect/head'.*expected \[B, 16, H, W\], got \[1, 8, 8, 8\]"):
        model(wrong_channels, groups={"MODEL"})


@pytest.mark.parametrize("module", [_boxes, object_detection])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, extraglobs={"torch": torch, "np": np, "math": math})  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
