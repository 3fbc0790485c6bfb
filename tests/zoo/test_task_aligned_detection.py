"""Tests of the task-aligned (YOLOv8-style) detection head, loss and bricks (object_detection.py, _boxes.py).

References are computed independently: torchvision's CIoU loss, NMS and box ops, Ultralytics'
``v8DetectionLoss`` and ``TaskAlignedAssigner`` called directly, hand-decoded boxes and a
hand-written distribution focal loss, onnxruntime, and the zoo config machinery.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import cast

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from test_object_detection import LEVELS, TinyPyramid, scene  # the FCOS tests' helpers (tests/zoo is on sys.path)
from torch import nn

from brickzoo import BrickCollection, BrickTrainable, check_onnx_parity, export_bricks_as_onnx
from brickzoo.bag_of_bricks._boxes import complete_box_iou
from brickzoo.bag_of_bricks.object_detection import (
    DetectionPostprocessor,
    TaskAlignedHead,
    TaskAlignedLoss,
    object_detection_bricks,
)
from brickzoo.errors import BrickDefinitionError, BrickInputError, ConfigError
from brickzoo.zoo import build_recipe
from brickzoo.zoo._config import apply_overrides, read_config

STRIDES = [8, 16, 32]
SIZES = [(8, 8), (4, 4), (2, 2)]  # the levels of a 64 px image
NUM_LOCATIONS = 64 + 16 + 4


def detector(num_classes: int = 2, spread_scores: bool = False, **kwargs: object) -> BrickCollection:
    """A tiny conv pyramid plus the task-aligned detection bricks nested under "detect"."""
    torch.manual_seed(0)
    model = BrickCollection(
        {
            "pyramid": BrickTrainable(TinyPyramid(), ["images"], [level.name for level in LEVELS]),
            "detect": object_detection_bricks(num_classes, LEVELS, head_type="task_aligned", **kwargs),  # type: ignore[arg-type]
        }
    )
    if spread_scores:  # an untrained head scores and sizes every location alike: spread both, as training would
        head = cast(TaskAlignedHead, model.get_submodule("detect.head.model"))
        for branch in [*head.cls_branches, *head.box_branches]:
            final = cast(nn.Conv2d, cast(nn.Sequential, branch)[-1])
            nn.init.normal_(final.weight, std=0.5)
            nn.init.zeros_(cast(torch.Tensor, final.bias))
        for branch in head.box_branches:  # short sides more likely: boxes of tens of pixels, not all the image
            bias = cast(torch.Tensor, cast(nn.Conv2d, cast(nn.Sequential, branch)[-1]).bias)
            bias.data = -0.5 * torch.arange(head.reg_max, dtype=bias.dtype).repeat(4)
        norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
        for norm in norms:  # running statistics of one batch of random images, so that eval mode normalises
            norm.momentum = 1.0
        with torch.no_grad():
            model.train()({"images": torch.rand(4, 3, 64, 64)}, groups={"MODEL"})
        for norm in norms:
            norm.momentum = 0.1
    return model


def hand_points(sizes: list[tuple[int, int]], strides: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres ``((col + 0.5) * s, (row + 0.5) * s)``, level after level, row-major; and their strides."""
    points = [
        [(col + 0.5) * s, (row + 0.5) * s]
        for (h, w), s in zip(sizes, strides, strict=True)
        for row in range(h)
        for col in range(w)
    ]
    point_strides = [float(s) for (h, w), s in zip(sizes, strides, strict=True) for _ in range(h * w)]
    return torch.tensor(points), torch.tensor(point_strides)


def hand_decode(distribution: torch.Tensor, sizes: list[tuple[int, int]], strides: list[int]) -> torch.Tensor:
    """Boxes [B, N, 4] from side logits [B, N, 4, R]: the softmax expectation of the bins, times the stride."""
    points, point_strides = hand_points(sizes, strides)
    bins = torch.arange(distribution.shape[-1], dtype=distribution.dtype)
    ltrb = (distribution.softmax(dim=-1) * bins).sum(dim=-1) * point_strides[:, None]  # [B, N, 4]
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


# -- CIoU ----------------------------------------------------------------------------------------
def reference_ciou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """torchvision's ``1 - complete_box_iou_loss``; for a box without width and height (0 / 0 in torchvision's
    aspect term, which gives NaN there) the same formula from DIoU with the aspect angle ``atan2(w, h)``."""
    theirs = 1 - torchvision.ops.complete_box_iou_loss(boxes1, boxes2)
    w1, h1 = boxes1[..., 2] - boxes1[..., 0], boxes1[..., 3] - boxes1[..., 1]
    w2, h2 = boxes2[..., 2] - boxes2[..., 0], boxes2[..., 3] - boxes2[..., 1]
    diou = 1 - torchvision.ops.distance_box_iou_loss(boxes1, boxes2)
    iou = torchvision.ops.box_iou(boxes1.reshape(-1, 4), boxes2.reshape(-1, 4)).diagonal().reshape(diou.shape)
    aspect = 4 / math.pi**2 * (torch.atan2(w2, h2) - torch.atan2(w1, h1)) ** 2
    by_hand = diou - aspect / (1 - iou.nan_to_num(0.0) + aspect + 1e-7) * aspect
    return torch.where(torch.isfinite(theirs), theirs, by_hand)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num=st.integers(1, 40),
    spread=st.floats(1.0, 60.0),
    empty_fraction=st.floats(0.0, 0.4),
)
def test_complete_box_iou_equals_one_minus_torchvision_ciou_loss(
    seed: int, num: int, spread: float, empty_fraction: float
) -> None:
    """Overlapping, disjoint, nested, identical, empty (a point or a line) boxes; also broadcast [K, 1] x [1, K]."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(2, num, 2, generator=generator) * spread
    sizes = (0.5 + torch.rand(2, num, 2, generator=generator) * spread) * (
        torch.rand(2, num, 2, generator=generator) >= empty_fraction
    )  # each side 0 or at least half a pixel
    boxes = torch.cat([corners, corners + sizes], dim=-1)  # [2, K, 4]
    identical = torch.rand(num, generator=generator) < 0.2
    boxes[1, identical] = boxes[0, identical]
    first, second = boxes.requires_grad_().unbind(0)  # [K, 4] each
    ours = complete_box_iou(first, second)
    assert ours.shape == (num,) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, reference_ciou(first, second), rtol=1e-5, atol=1e-5)
    assert (ours <= 1 + 1e-6).all() and (ours > -1.5).all()
    both_real = (sizes > 0).all(dim=-1).all(dim=0)  # [K] torchvision's gradient is defined there
    ours_grads = torch.autograd.grad(ours.sum(), (first, second))
    theirs = 1 - torchvision.ops.complete_box_iou_loss(first, second)
    theirs_grads = torch.autograd.grad(theirs.sum(), (first, second))
    for got, expected in zip(ours_grads, theirs_grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got[both_real], expected[both_real], rtol=1e-4, atol=1e-4)
    # broadcasting: every pair, as the pairwise loop computes it
    pairwise = complete_box_iou(first[:, None, :], second[None, :, :])  # [K, K]
    assert pairwise.shape == (num, num)
    expected_pairs = reference_ciou(first.detach().repeat_interleave(num, 0), second.detach().repeat(num, 1))
    torch.testing.assert_close(pairwise.detach(), expected_pairs.reshape(num, num), rtol=1e-5, atol=1e-5)


def test_complete_box_iou_of_identical_and_empty_boxes_has_finite_gradients() -> None:
    box = torch.tensor([[2.0, 3, 12, 9]])
    point = torch.tensor([[5.0, 5, 5, 5]])
    line = torch.tensor([[1.0, 4, 9, 4]])  # no height
    for first, second, expected in [
        (box, box, 1.0),  # identical: IoU 1, no distance, no aspect difference
        (point, point, 0.0),  # two identical points: no overlap, no distance, no aspect
        (line, line, 0.0),
        (point, box, None),
        (line, box, None),
    ]:
        a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
        ciou = complete_box_iou(a, b)
        torch.testing.assert_close(ciou.detach(), reference_ciou(first, second), rtol=1e-5, atol=1e-5)
        if expected is not None:
            assert ciou.item() == pytest.approx(expected, abs=1e-5)
        ciou.sum().backward()
        assert a.grad is not None and b.grad is not None
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all(), (first, second, a.grad, b.grad)
    # the docstring's example by hand: IoU 2/6, centres 1 px apart, enclosing diagonal^2 = 9 + 4, equal aspects
    pair = complete_box_iou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 0, 3, 2]))
    assert pair.item() == pytest.approx(2 / 6 - 1 / 13, abs=1e-6)


# -- head ----------------------------------------------------------------------------------------
def tiny_head(reg_max: int = 5, num_classes: int = 3) -> TaskAlignedHead:
    torch.manual_seed(0)
    return TaskAlignedHead(
        num_classes, in_channels=[4, 4, 4], strides=STRIDES, head_channels=4, num_convs=1, reg_max=reg_max
    )


def test_head_decodes_one_dominant_bin_per_side_by_hand() -> None:
    """Zero weights and a bias of 30 on one bin per side: each side is that bin times the stride, from the
    cell centre. Levels of 4x8, 3x4 and 2x1 cells (rows x columns) so that a transposition would show."""
    head = tiny_head(reg_max=5).eval()
    bins = {0: (1, 2, 3, 0), 1: (0, 1, 2, 4), 2: (4, 3, 2, 1)}  # level: dominant bin of (left, top, right, bottom)
    with torch.no_grad():
        for level, sides in bins.items():
            final = cast(nn.Conv2d, cast(nn.Sequential, head.box_branches[level])[-1])
            final.weight.zero_()
            bias = torch.zeros(4, 5)
            bias[torch.arange(4), torch.tensor(sides)] = 30.0
            cast(torch.Tensor, final.bias).copy_(bias.flatten())  # channel = side * reg_max + bin
    features = [torch.rand(2, 4, 4, 8), torch.rand(2, 4, 3, 4), torch.rand(2, 4, 2, 1)]
    outputs = head(*features)
    assert list(outputs) == ["cls_logits", "box_regression", "box_distribution"]
    assert outputs["cls_logits"].shape == (2, 32 + 12 + 2, 3)
    assert outputs["box_regression"].shape == (2, 46, 4)
    assert outputs["box_distribution"].shape == (2, 46, 4, 5)
    boxes = outputs["box_regression"]
    # level 0 (stride 8), row 2, column 5: point (44, 20), sides (8, 16, 24, 0)
    torch.testing.assert_close(boxes[:, 2 * 8 + 5], torch.tensor([[36.0, 4, 68, 20]] * 2), rtol=0, atol=1e-4)
    # level 1 (stride 16), row 2, column 1: point (24, 40), sides (0, 16, 32, 64)
    torch.testing.assert_close(boxes[:, 32 + 2 * 4 + 1], torch.tensor([[24.0, 24, 56, 104]] * 2), rtol=0, atol=1e-4)
    # level 2 (stride 32), row 1, column 0: point (16, 48), sides (128, 96, 64, 32)
    torch.testing.assert_close(boxes[:, 32 + 12 + 1], torch.tensor([[-112.0, -48, 80, 80]] * 2), rtol=0, atol=1e-4)
    # every location of level 0 has the same box around its own centre
    points, _ = hand_points([(4, 8)], [8])
    expected = torch.cat([points - torch.tensor([8.0, 16]), points + torch.tensor([24.0, 0])], dim=-1)  # [32, 4]
    torch.testing.assert_close(boxes[0, :32], expected, rtol=0, atol=1e-4)


def test_head_boxes_are_the_softmax_expectation_and_outputs_run_level_by_level() -> None:
    head = tiny_head(reg_max=6).train()
    with torch.no_grad():
        for branch in [*head.box_branches, *head.cls_branches]:
            final = cast(nn.Conv2d, cast(nn.Sequential, branch)[-1])
            nn.init.normal_(final.weight, std=1.0)
            nn.init.normal_(cast(torch.Tensor, final.bias), std=1.0)
    sizes = [(4, 8), (3, 4), (2, 1)]
    features = [torch.randn(2, 4, h, w, generator=torch.Generator().manual_seed(h * w)) for h, w in sizes]
    outputs = head(*features)
    distribution = outputs["box_distribution"]
    torch.testing.assert_close(
        outputs["box_regression"], hand_decode(distribution, sizes, STRIDES), rtol=1e-5, atol=1e-4
    )
    # the layout: location (level, row, col) of the outputs is (row, col) of that level's maps; channel side * R + bin
    offset = 0
    for level, ((h, w), x) in enumerate(zip(sizes, features, strict=True)):
        raw_boxes = head.box_branches[level](x)  # [B, 4 * R, h, w]
        raw_logits = head.cls_branches[level](x)  # [B, C, h, w]
        for row in range(h):
            for col in range(w):
                index = offset + row * w + col
                torch.testing.assert_close(distribution[:, index], raw_boxes[:, :, row, col].reshape(2, 4, 6))
                torch.testing.assert_close(outputs["cls_logits"][:, index], raw_logits[:, :, row, col])
        offset += h * w
    assert offset == distribution.shape[1]


def test_head_class_prior_and_separate_branches_per_level() -> None:
    head = TaskAlignedHead(num_classes=3, in_channels=[4, 6, 8], strides=STRIDES, head_channels=5, num_convs=2)
    for level, stride in enumerate(STRIDES):
        final = cast(nn.Conv2d, cast(nn.Sequential, head.cls_branches[level])[-1])
        # about 5 objects per 640 x 640 pixels, one cell of stride**2 pixels, spread over 3 classes
        expected = math.log(5 * stride**2 / (640 * 640 * 3))
        torch.testing.assert_close(final.bias, torch.full((3,), expected), rtol=0, atol=1e-6)
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    # per level: 2 box blocks, 2 x (depthwise + pointwise) class blocks, each its own BatchNorm
    assert len(norms) == 3 * (2 + 4) and len({id(m) for m in norms}) == len(norms)
    # levels with very different statistics: each BatchNorm's running mean moves to its own level's batch mean
    head.train()
    features = [torch.randn(2, c, 8 // 2**i, 8 // 2**i) * (i + 1) + 4 * (i - 1) for i, c in enumerate([4, 6, 8])]
    with torch.no_grad():
        head(*features)
        for level, x in enumerate(features):
            for branch in (head.box_branches[level], head.cls_branches[level]):
                block = cast(nn.Sequential, cast(nn.Sequential, branch)[0])  # conv, BatchNorm, SiLU
                conv, norm = block[0], cast(nn.BatchNorm2d, block[1])
                expected_mean = 0.1 * conv(x).mean(dim=(0, 2, 3))  # momentum 0.1 from a zero start
                torch.testing.assert_close(norm.running_mean, expected_mean, rtol=1e-5, atol=1e-5)


# -- loss against Ultralytics ----------------------------------------------------------------------
def ultralytics_module(name: str) -> ModuleType:
    """Import an Ultralytics module offline, quiet, with its settings file in a temporary folder."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "brickzoo_tests_ultralytics"))
    return pytest.importorskip(name)


def ultralytics_losses(
    cls_logits: torch.Tensor,
    distribution: torch.Tensor,
    targets: torch.Tensor,
    target_labels: torch.Tensor,
    image_size: int = 64,
) -> torch.Tensor:
    """``v8DetectionLoss`` on the same predictions: ``[box, cls, dfl]`` per image (Ultralytics multiplies by B)."""
    loss_module = ultralytics_module("ultralytics.utils.loss")
    batch_size, num, num_classes = cls_logits.shape
    reg_max = distribution.shape[-1]
    detect = SimpleNamespace(stride=torch.tensor([float(s) for s in STRIDES]), nc=num_classes, reg_max=reg_max)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))
            self.model = [detect]
            self.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)

    criterion = loss_module.v8DetectionLoss(Model())
    index = torch.nonzero(target_labels >= 0)  # [P, 2] (image, slot)
    real = targets[index[:, 0], index[:, 1]]  # [P, 4]
    batch = {
        "batch_idx": index[:, 0].float(),
        "cls": target_labels[index[:, 0], index[:, 1]].float(),
        "bboxes": torch.cat([(real[:, :2] + real[:, 2:]) / 2, real[:, 2:] - real[:, :2]], dim=1) / image_size,
    }
    preds = {
        "boxes": distribution.reshape(batch_size, num, 4 * reg_max).permute(0, 2, 1),
        "scores": cls_logits.permute(0, 2, 1),
        "feats": [torch.zeros(batch_size, 1, h, w) for h, w in SIZES],
    }
    total, _ = criterion(preds, batch)
    return total / batch_size


def separate_boxes(generator: torch.Generator, count: int, min_size: float = 16.0) -> list[list[float]]:
    """Up to ``count`` boxes of 10 to 60 px in a 64 px image whose candidate regions (sides grown to
    ``min_size`` about the centre) share no point: no location can be a candidate of two boxes."""
    boxes: list[list[float]] = []
    grown: list[list[float]] = []
    for _ in range(count * 4):
        if len(boxes) == count:
            break
        size = 10 + torch.rand(2, generator=generator) * 50
        corner = torch.rand(2, generator=generator) * (64 - size)
        x1, y1, x2, y2 = [*corner.tolist(), *(corner + size).tolist()]
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, min_size) / 2, max(y2 - y1, min_size) / 2
        g = [cx - hw, cy - hh, cx + hw, cy + hh]
        if all(g[2] <= o[0] or o[2] <= g[0] or g[3] <= o[1] or o[3] <= g[1] for o in grown):
            boxes.append([x1, y1, x2, y2])
            grown.append(g)
    return boxes


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    num_boxes=st.integers(0, 5),
    num_classes=st.integers(1, 3),
    reg_max=st.sampled_from([4, 8, 16]),
    nan_padding=st.booleans(),
)
def test_loss_equals_ultralytics_v8_detection_loss(
    seed: int, batch: int, num_boxes: int, num_classes: int, reg_max: int, nan_padding: bool
) -> None:
    """Losses and gradients (w.r.t. class logits and side logits, through the decoded boxes) equal Ultralytics',
    for boxes whose candidate regions do not overlap; padding slots (anywhere, NaN or not) are never read."""
    generator = torch.Generator().manual_seed(seed)
    slots = num_boxes + 1
    targets = torch.zeros(batch, slots, 4)
    labels = torch.full((batch, slots), -1)
    for b in range(batch):
        real_boxes = separate_boxes(generator, num_boxes)
        where = torch.randperm(slots, generator=generator)[: len(real_boxes)]  # padding between real slots too
        targets[b, where] = torch.tensor(real_boxes).reshape(-1, 4)
        labels[b, where] = torch.randint(0, num_classes, (len(real_boxes),), generator=generator)
    if nan_padding:
        targets[labels < 0] = math.nan
    cls_logits = (torch.randn(batch, NUM_LOCATIONS, num_classes, generator=generator) * 2 - 1).requires_grad_()
    decay = torch.rand(1, generator=generator) * 0.8  # favour short sides, so predicted boxes are plausible
    distribution = torch.randn(batch, NUM_LOCATIONS, 4, reg_max, generator=generator) * 2
    distribution = (distribution - decay * torch.arange(reg_max)).requires_grad_()
    boxes = hand_decode(distribution, SIZES, STRIDES)
    features = [torch.zeros(batch, 1, h, w) for h, w in SIZES]
    loss = TaskAlignedLoss(num_classes, STRIDES, reg_max)
    loss.check_inputs(cls_logits, boxes, distribution, targets, labels, *features)
    ours = loss(cls_logits, boxes, distribution, targets, labels, *features)
    assert list(ours) == ["loss_cls", "loss_box", "loss_dfl"]
    theirs = ultralytics_losses(cls_logits, distribution, targets.nan_to_num(0.0), labels)  # [box, cls, dfl]
    has_objects = bool((labels >= 0).any())
    for name, expected in zip(("loss_box", "loss_cls", "loss_dfl"), theirs, strict=True):
        torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-5, msg=name)
        wrt = (cls_logits, distribution)
        got_grads = torch.autograd.grad(ours[name], wrt, retain_graph=True, materialize_grads=True)
        want_grads = torch.autograd.grad(expected, wrt, retain_graph=True, materialize_grads=True)
        for got, want in zip(got_grads, want_grads, strict=True):
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
        if not has_objects and name != "loss_cls":
            assert ours[name].item() == 0.0


def test_a_location_taken_by_several_boxes_stays_with_one_that_took_it() -> None:
    """One location P, the only candidate of A and of B (top_k=1), lies inside C too, and its prediction
    overlaps C most; C takes another location Q. brickzoo gives P to A (the box among A and B its prediction
    overlaps most); Ultralytics re-assigns it to C, which did not take it (the documented difference)."""
    points = torch.tensor([[20.0, 20], [50.0, 50], [4.0, 60]])  # P, Q, a background point
    targets = torch.tensor([[[10.0, 10, 30, 30], [12, 12, 28, 28], [15, 15, 60, 60]]])  # A, B, C
    labels = torch.tensor([[0, 1, 2]])
    predicted = torch.tensor([[[15.0, 15, 45, 45], [15, 15, 60, 60], [0, 50, 8, 64]]])  # at P, Q, background
    scores = torch.tensor([[[0.5, 0.5, 0.01], [0.5, 0.5, 0.9], [0.5, 0.5, 0.5]]])
    loss = TaskAlignedLoss(num_classes=3, strides=[8], top_k=1)
    matched, quality = loss.assign_targets(scores, predicted, points, targets, labels)
    ciou = 1 - torchvision.ops.complete_box_iou_loss(predicted[0, 0].expand(3, 4), targets[0])  # [3] at P: A, B, C
    assert ciou[2] > ciou[0] > ciou[1] > 0  # C overlaps P's prediction most, then A
    assert matched.tolist() == [[0, 2, -1]]
    # each box keeps one location, its best: the soft label is that location's CIoU (t * CIoU / (t + 1e-9) with
    # the alignment t = p^0.5 * CIoU^6, tiny here, so the 1e-9 shows)
    align = 0.5**0.5 * ciou[0] ** 6
    torch.testing.assert_close(quality[0, 0], ciou[0] * align / (align + 1e-9), rtol=1e-5, atol=1e-7)
    assert quality[0, 1].item() == pytest.approx(1.0, abs=1e-5) and quality[0, 2].item() == 0.0

    tal = ultralytics_module("ultralytics.utils.tal")
    assigner = tal.TaskAlignedAssigner(topk=1, num_classes=3, alpha=0.5, beta=6.0, stride=[8])
    _, _, _, fg_mask, target_gt_idx = assigner(
        scores, predicted, points, labels[..., None].float(), targets, torch.ones(1, 3, 1)
    )
    assert fg_mask.tolist() == [[True, True, False]]
    assert target_gt_idx[0, :2].tolist() == [2, 2]  # Ultralytics: P goes to C


def test_distribution_focal_loss_by_hand() -> None:
    """One location (a 1x1 stride-8 level, point (4, 4)) and one box: its soft label is its CIoU ``q`` (it is
    its box's best location) and the normaliser is max(q, 1) = 1, so every loss has a closed form."""
    reg_max = 4
    logits = torch.tensor([[1.0, 0.5, -1.0, -2.0], [0.2, 1.5, 0.1, -1.0], [-1.0, 0.5, 1.0, 0.0], [0.0, 0.2, 1.0, 2.0]])
    distribution = logits[None, None].clone().requires_grad_()  # [1, 1, 4, R]
    cls_logits = torch.tensor([[[0.3, -0.7]]], requires_grad=True)  # [1, 1, C]
    target = torch.tensor([1.0, 2.0, 14.5, 32.0])  # sides from (4, 4): 3, 2, 10.5, 28 px = 0.375, 0.25, 1.3125, 3.5
    probabilities = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    expectation = [sum(p * i for i, p in enumerate(row)) * 8 for row in probabilities]
    predicted = torch.tensor([4 - expectation[0], 4 - expectation[1], 4 + expectation[2], 4 + expectation[3]])
    quality = 1 - torchvision.ops.complete_box_iou_loss(predicted, target).item()
    assert 0 < quality < 1
    dfl = 0.0
    for side, distance in enumerate([0.375, 0.25, 1.3125, min(3.5, reg_max - 1.01)]):  # clamped below the last bin
        left = math.floor(distance)
        dfl -= (left + 1 - distance) * math.log(probabilities[side][left])
        dfl -= (distance - left) * math.log(probabilities[side][left + 1])
    dfl /= 4
    bce = -math.log(1 - 1 / (1 + math.exp(-0.3))) - (
        quality * math.log(1 / (1 + math.exp(0.7))) + (1 - quality) * math.log(1 - 1 / (1 + math.exp(0.7)))
    )
    loss = TaskAlignedLoss(num_classes=2, strides=[8], reg_max=reg_max)
    boxes = hand_decode(distribution, [(1, 1)], [8])
    torch.testing.assert_close(boxes[0, 0].detach(), predicted, rtol=0, atol=1e-5)
    losses = loss(cls_logits, boxes, distribution, target[None, None], torch.tensor([[1]]), torch.zeros(1, 8, 1, 1))
    assert losses["loss_dfl"].item() == pytest.approx(1.5 * quality * dfl, rel=1e-5)
    assert losses["loss_box"].item() == pytest.approx(7.5 * quality * (1 - quality), rel=1e-5)
    assert losses["loss_cls"].item() == pytest.approx(0.5 * bce, rel=1e-5)
    # the gradient w.r.t. the side logits: softmax minus the two-bin target, weighted (no gradient reaches
    # the soft label q, the assignment runs without it)
    (grad,) = torch.autograd.grad(losses["loss_dfl"], distribution)
    two_bins = torch.zeros(4, reg_max)
    for side, distance in enumerate([0.375, 0.25, 1.3125, reg_max - 1.01]):
        left = math.floor(distance)
        two_bins[side, left], two_bins[side, left + 1] = left + 1 - distance, distance - left
    expected_grad = 1.5 * quality / 4 * (torch.tensor(probabilities) - two_bins)
    torch.testing.assert_close(grad[0, 0], expected_grad, rtol=1e-4, atol=1e-6)


def test_zero_object_images_give_finite_losses_and_gradients() -> None:
    model = detector(3)
    named = scene()
    for boxes, labels in [
        (torch.zeros(2, 3, 4), torch.full((2, 3), -1)),  # padded slots only
        (torch.full((2, 3, 4), math.nan), torch.full((2, 3), -1)),  # padded slots holding NaN
        (torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.int64)),  # no slots at all
    ]:
        outputs = model.check_batch({**named, "boxes": boxes, "box_labels": labels}, groups={"MODEL", "LOSS"})
        losses = model.extract_losses(outputs)
        assert sorted(losses) == ["detect/loss_box", "detect/loss_cls", "detect/loss_dfl"]
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["detect/loss_box"].item() == 0.0 and losses["detect/loss_dfl"].item() == 0.0
        # only background: BCE against 0 everywhere, summed, over the normaliser 1, times 0.5
        expected_cls = 0.5 * F.binary_cross_entropy_with_logits(
            outputs["detect/cls_logits"], torch.zeros_like(outputs["detect/cls_logits"]), reduction="sum"
        )
        torch.testing.assert_close(losses["detect/loss_cls"], expected_cls)
        model.zero_grad()
        sum(losses.values()).backward()  # type: ignore[union-attr]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    # one image with and one without objects: finite too, and the losses see the positives
    losses = model.extract_losses(
        model({**named, "box_labels": torch.tensor([[0, -1], [-1, -1]])}, groups={"MODEL", "LOSS"})
    )
    assert all(torch.isfinite(v) for v in losses.values()) and losses["detect/loss_dfl"].item() > 0


# -- bad inputs ------------------------------------------------------------------------------------
def loss_inputs(reg_max: int = 16, batch: int = 2) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    cls_logits = torch.randn(batch, NUM_LOCATIONS, 2, generator=generator)
    distribution = torch.randn(batch, NUM_LOCATIONS, 4, reg_max, generator=generator)
    return cls_logits, hand_decode(distribution, SIZES, STRIDES), distribution


def test_loss_rejects_inputs_that_do_not_fit_naming_the_tensor() -> None:
    loss = TaskAlignedLoss(num_classes=2, strides=STRIDES, reg_max=16)
    cls_logits, boxes, distribution = loss_inputs()
    features = [torch.zeros(2, 1, h, w) for h, w in SIZES]
    targets, labels = scene()["boxes"], scene()["box_labels"]
    wrong_bins = loss_inputs(reg_max=8)[2]
    cases = [
        ((cls_logits, boxes, wrong_bins, targets, labels, *features), r"box_distribution: expected \[2, 84, 4, 16\]"),
        (
            (cls_logits, boxes, distribution, targets, labels, *features[:2]),
            r"features: expected 3 feature levels \(strides \[8, 16, 32\]\), "
            "got 2",
        ),
        (
            (cls_logits, boxes, distribution, targets, labels, features[0], features[1], torch.zeros(2, 1, 3, 3)),
            r"features: predictions have 84 locations but the feature levels of sizes "
            r"\[\(8, 8\), \(4, 4\), \(3, 3\)\] give 89",
        ),
        ((cls_logits, boxes, distribution, targets, labels.float(), *features), "box_labels: expected int64 labels"),
        ((cls_logits, boxes, distribution, targets.long(), labels, *features), "boxes: expected float boxes"),
        (
            (cls_logits, boxes, distribution, targets.repeat(2, 1, 1), labels.repeat(2, 1), *features),
            "boxes: batch size 4 differs from the predictions' 2",
        ),
    ]
    for arguments, message in cases:
        for run in (loss, loss.check_inputs):
            with pytest.raises(BrickInputError, match=message):
                run(*arguments)
    # value checks run on the host, in check_inputs only
    for bad_labels, message in [
        (torch.tensor([[0, -1], [2, 0]]), r"box_labels: labels must be in \[0, 1\] \(num_classes=2\) or -1"),
        (torch.tensor([[0, -3], [1, 0]]), "got values from -3 to 1"),
    ]:
        with pytest.raises(BrickInputError, match=message):
            loss.check_inputs(cls_logits, boxes, distribution, targets, bad_labels, *features)
    inverted = targets.clone()
    inverted[1, 0] = torch.tensor([56.0, 20, 24, 60])
    with pytest.raises(BrickInputError, match="x2 < x1"):
        loss.check_inputs(cls_logits, boxes, distribution, inverted, labels, *features)
    loss.check_inputs(cls_logits, boxes, distribution, targets, labels, *features)  # the good ones pass


@pytest.mark.parametrize(
    ("change", "expected", "layout"),
    [
        ({"box_labels": torch.tensor([[0, 5], [1, 0]])}, "labels must be in [0, 1]", False),
        ({"box_labels": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}, "expected int64 labels [B, M]", True),
        ({"boxes": torch.zeros(3, 2, 4), "box_labels": torch.zeros(3, 2, dtype=torch.int64)}, "batch size 3", True),
    ],
)
def test_bad_targets_raise_with_the_brick_path(change: dict[str, torch.Tensor], expected: str, layout: bool) -> None:
    model = detector(2)
    for run in [model.check_batch] + ([model] if layout else []):
        with pytest.raises(BrickInputError) as info:
            run({**scene(), **change}, groups={"MODEL", "LOSS"})
        assert str(info.value).startswith("brick 'detect/loss': ") and expected in str(info.value)


def test_head_rejects_wrong_levels() -> None:
    head = tiny_head()
    with pytest.raises(
        BrickInputError, match=r"TaskAlignedHead: expected 3 feature levels \(strides \[8, 16, 32\]\), got 2"
    ):
        head(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 4, 4))
    with pytest.raises(
        BrickInputError, match=r"feature level 1 \(stride 16\): expected \[B, 4, H, W\], got \[1, 5, 4, 4\]"
    ):
        head(torch.rand(1, 4, 8, 8), torch.rand(1, 5, 4, 4), torch.rand(1, 4, 2, 2))
    with pytest.raises(BrickDefinitionError, match="reg_max=1"):
        TaskAlignedHead(2, [4], [8], reg_max=1)
    with pytest.raises(BrickDefinitionError, match="one stride per input level"):
        TaskAlignedHead(2, [4, 4], [8])


def test_a_1x1_level_at_batch_1_trains_only_with_a_clear_error_and_evaluates() -> None:
    """BatchNorm cannot normalise one value per channel in training: a 32-px image at batch 1 gives a 1x1
    stride-32 level. The head says so (the FCOS head, with GroupNorm, trains there); evaluation works."""
    head = tiny_head()
    levels = (torch.rand(1, 4, 4, 4), torch.rand(1, 4, 2, 2), torch.rand(1, 4, 1, 1))
    with pytest.raises(BrickInputError, match=r"feature level 2 \(stride 32\) is 1x1 at batch 1.*batch of at least 2"):
        head.train()(*levels)
    outputs = head.eval()(*levels)
    assert outputs["box_regression"].shape == (1, 16 + 4 + 1, 4)
    assert bool(torch.isfinite(outputs["box_regression"]).all())
    head.train()(*(torch.cat([level, level]) for level in levels))  # batch 2 trains


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"reg_max": 1}, "reg_max must be an int >= 2, got 1"),
        ({"top_k": 0}, "top_k must be an int >= 1, got 0"),
        ({"strides": []}, "strides must name at least one level"),
        ({"beta": -1.0}, "beta must be a finite number >= 0, got -1.0"),
        ({"dfl_weight": float("nan")}, "dfl_weight must be a finite number >= 0, got nan"),
    ],
)
def test_loss_checks_its_arguments(arguments: dict[str, object], expected: str) -> None:
    kwargs: dict[str, object] = {"num_classes": 2, "strides": STRIDES, **arguments}
    with pytest.raises(BrickDefinitionError, match=rf"TaskAlignedLoss: .*{expected}"):
        TaskAlignedLoss(**kwargs)  # type: ignore[arg-type]


def test_factory_checks_head_type_and_its_arguments() -> None:
    with pytest.raises(BrickDefinitionError, match=r"head_type must be one of \['fcos', 'task_aligned'\], got 'yolo'"):
        object_detection_bricks(2, LEVELS, head_type="yolo")
    with pytest.raises(BrickDefinitionError, match="reg_max must be an int >= 2, got 1"):
        object_detection_bricks(2, LEVELS, head_type="task_aligned", reg_max=1)
    with pytest.raises(BrickDefinitionError, match="num_convs must be >= 1 with head_type='task_aligned', got 0"):
        object_detection_bricks(2, LEVELS, head_type="task_aligned", num_convs=0)
    # the FCOS head has no distributions: reg_max with it is refused, not silently ignored
    with pytest.raises(BrickDefinitionError, match="reg_max applies to head_type='task_aligned' only, got reg_max=8"):
        object_detection_bricks(2, LEVELS, reg_max=8)
    with pytest.raises(BrickDefinitionError, match=r"head_type must be one of .*got \['task_aligned'\]"):
        object_detection_bricks(2, LEVELS, head_type=["task_aligned"])  # type: ignore[arg-type]
    bins = object_detection_bricks(2, LEVELS, head_type="task_aligned", reg_max=8)["head"].model
    assert cast(TaskAlignedHead, bins).reg_max == 8
    default = object_detection_bricks(2, LEVELS, head_type="task_aligned")["head"].model
    assert cast(TaskAlignedHead, default).reg_max == 16
    # problems are listed together
    with pytest.raises(BrickDefinitionError, match=r"head_type must be one of.*num_classes must be an int >= 1"):
        object_detection_bricks(0, LEVELS, head_type="bogus")
    bricks = object_detection_bricks(2, LEVELS, head_type="task_aligned", reg_max=8)
    assert isinstance(bricks["head"].model, TaskAlignedHead) and bricks["head"].model.reg_max == 8
    assert isinstance(bricks["loss"].model, TaskAlignedLoss) and bricks["loss"].model.reg_max == 8
    assert bricks["loss"].output_names == {f"loss_{k}": f"./loss_{k}" for k in ("cls", "box", "dfl")}
    # the FCOS default is untouched
    assert type(object_detection_bricks(2, LEVELS)["head"].model).__name__ == "FCOSHead"


# -- bricks ------------------------------------------------------------------------------------------
def test_model_group_outputs_and_loss_names() -> None:
    model = detector(2, max_detections=7)
    outputs = model(scene(), groups={"MODEL", "LOSS"})
    assert outputs["detect/cls_logits"].shape == (2, NUM_LOCATIONS, 2)
    assert outputs["detect/box_regression"].shape == (2, NUM_LOCATIONS, 4)
    assert outputs["detect/box_distribution"].shape == (2, NUM_LOCATIONS, 4, 16)
    assert "detect/centerness" not in outputs
    assert outputs["detect/boxes"].shape == (2, 7, 4) and outputs["detect/scores"].shape == (2, 7)
    assert outputs["detect/labels"].shape == (2, 7) and outputs["detect/labels"].dtype == torch.int64
    assert sorted(model.extract_losses(outputs)) == ["detect/loss_box", "detect/loss_cls", "detect/loss_dfl"]
    torch.testing.assert_close(
        outputs["detect/box_regression"],
        hand_decode(outputs["detect/box_distribution"], SIZES, STRIDES),
        rtol=1e-5,
        atol=1e-4,
    )


def test_overfits_two_images() -> None:
    model = detector(2)
    named = scene()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for _ in range(100):
        losses = model.extract_losses(model(named, groups={"MODEL", "LOSS"}))
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()  # type: ignore[union-attr]
        optimizer.step()
        totals.append(total.item())  # type: ignore[union-attr]
    assert totals[-1] < 0.5 * totals[0], totals
    model.eval()  # BatchNorm on its running statistics from here
    with torch.no_grad():
        outputs = model(named, groups={"MODEL"})
    for b in range(2):
        real = named["box_labels"][b] >= 0
        iou = torchvision.ops.box_iou(outputs["detect/boxes"][b, :1], named["boxes"][b][real])[0]  # [M]
        best = int(iou.argmax())
        assert float(iou[best]) > 0.5, (b, iou, outputs["detect/boxes"][b, :3])
        assert int(outputs["detect/labels"][b, 0]) == int(named["box_labels"][b][real][best])
        # every object is found: a detection of its class above 0.5 IoU among the confident ones
        confident = outputs["detect/scores"][b] > 0.3
        for box, label in zip(named["boxes"][b][real], named["box_labels"][b][real], strict=True):
            same_class = confident & (outputs["detect/labels"][b] == label)
            overlaps = torchvision.ops.box_iou(box[None], outputs["detect/boxes"][b][same_class])
            assert overlaps.numel() > 0 and float(overlaps.max()) > 0.5, (b, box, label, outputs["detect/boxes"][b, :3])


def test_onnx_export_dynamic_batch_parity(tmp_path: Path) -> None:
    model = detector(3, spread_scores=True)
    path = export_bricks_as_onnx(tmp_path / "detect.onnx", model, {"images": torch.rand(2, 3, 64, 64)})
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    report = check_onnx_parity(path, model, {"images": images})
    assert report.batch_size == 3
    assert report.max_abs_diff["detect/labels"] == 0
    assert report.max_abs_diff["detect/boxes"] < 1e-4 and report.max_abs_diff["detect/scores"] < 1e-4
    with torch.no_grad():
        labels = model.eval()({"images": images}, groups={"MODEL"})["detect/labels"]
    assert (labels >= 0).sum(dim=1).min() > 10  # detections, not padding, were compared


def test_model_group_compiles_fullgraph() -> None:
    model = detector(2, spread_scores=True).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    compiled = torch.compile(lambda named: model(named, groups={"MODEL"}), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = model({"images": images}, groups={"MODEL"})
        got = compiled({"images": images})
    assert (expected["detect/labels"] >= 0).sum() > 10
    for name in ("detect/boxes", "detect/scores", "detect/labels"):
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5)


# -- post-processing without centre-ness -----------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(1, 3),
    max_detections=st.sampled_from([3, 100]),
    pre_nms_top_k=st.sampled_from([7, 1000]),
    nms_threshold=st.floats(0.2, 0.8),
)
def test_postprocessor_without_centerness_matches_torchvision_per_image(
    seed: int, num_classes: int, max_detections: int, pre_nms_top_k: int, nms_threshold: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, num = 2, 30
    cls_logits = torch.randn(batch, num, num_classes, generator=generator) * 2 - 1
    centres = torch.rand(batch, 3, 2, generator=generator) * 48 + 8  # three clusters: overlaps to suppress
    centre = (
        centres[:, torch.randint(0, 3, (num,), generator=generator)]
        + torch.randn(batch, num, 2, generator=generator) * 2
    )
    size = torch.rand(batch, num, 2, generator=generator) * 16 + 4
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1) * 1.3 - 8  # some cross the border
    post = DetectionPostprocessor(max_detections, 0.3, nms_threshold, pre_nms_top_k)
    images = torch.zeros(batch, 3, 48, 64)
    out = post(cls_logits, boxes, images=images)
    assert out["boxes"].shape == (batch, max_detections, 4)
    for b in range(batch):
        scores = torch.sigmoid(cls_logits[b]).flatten()  # [N * C], location-major
        top, index = scores.topk(min(pre_nms_top_k, scores.numel()))
        keep = top > 0.3
        top, index = top[keep], index[keep]
        image_boxes = torchvision.ops.clip_boxes_to_image(boxes[b][index // num_classes], (48, 64))
        labels = index % num_classes
        kept = torchvision.ops.batched_nms(image_boxes, top, labels, nms_threshold)[:max_detections]
        n = len(kept)
        assert out["labels"][b, :n].tolist() == labels[kept].tolist()
        torch.testing.assert_close(out["boxes"][b, :n], image_boxes[kept], rtol=0, atol=0)
        torch.testing.assert_close(out["scores"][b, :n], top[kept], rtol=0, atol=1e-6)
        assert (out["labels"][b, n:] == -1).all() and (out["scores"][b, n:] == 0).all()
    # positional None is the same as leaving centre-ness out
    same = post(cls_logits, boxes, None, images)
    assert all(torch.equal(same[k], out[k]) for k in out)


# -- zoo config ----------------------------------------------------------------------------------------
def test_a_recipe_builds_the_task_aligned_head_and_rejects_an_unknown_one() -> None:
    config, _ = read_config("shapes_multitask_320")
    recipe = build_recipe(apply_overrides(config, ["model.heads.detect.head_type=task_aligned"]), with_data=False)
    head = recipe.model.get_submodule("detect.head.model")
    assert isinstance(head, TaskAlignedHead)
    assert isinstance(recipe.model.get_submodule("detect.loss.model"), TaskAlignedLoss)
    recipe.model.eval()
    with torch.no_grad():
        outputs = recipe.model({"images": torch.rand(1, 3, 64, 64)}, groups="MODEL")
    num_classes = head.num_classes
    assert outputs["detect/box_distribution"].shape == (1, 64 + 16 + 4, 4, 16)
    assert outputs["detect/cls_logits"].shape == (1, 64 + 16 + 4, num_classes)
    assert outputs["detect/boxes"].shape == (1, 50, 4)  # max_detections of the config
    for override, message in [
        (
            "model.heads.detect.head_type=bogus",
            r"model.heads.detect.*head_type must be one of \['fcos', 'task_aligned'\], got 'bogus'",
        ),
        ("model.heads.detect.reg_max=1", r"model.heads.detect.*reg_max must be an int >= 2, got 1"),
        ("model.heads.detect.reg_max=sixteen", r"model.heads.detect.*reg_max"),
        ("model.heads.detect.head_type=[task_aligned]", r"model.heads.detect.*head_type"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_recipe(
                apply_overrides(config, ["model.heads.detect.head_type=task_aligned", override]), with_data=False
            )
    # reg_max in an FCOS recipe would be ignored: refused with the key named
    fcos = apply_overrides(config, ["model.heads.detect.head_type=fcos", "model.heads.detect.reg_max=8"])
    with pytest.raises(ConfigError, match=r"model.heads.detect.*reg_max applies to head_type='task_aligned' only"):
        build_recipe(fcos, with_data=False)
