"""Object detection: an anchor-free dense head in the FCOS style, its loss, post-processing, metrics and visualizer.

The head runs a shared convolution tower over several feature levels (an FPN's, usually) and
predicts, at every feature location, class logits, the distances to the four sides of a box and
a centre-ness logit. Post-processing turns that into a fixed number of detections per image
(padded), using only fixed-shape tensor ops, so the whole MODEL group exports to ONNX with a
dynamic batch and runs under ``torch.compile(fullgraph=True)``. The loss is dense too (target
assignment and every term computed for all locations, masked to the positives), so MODEL + LOSS
compiles into one graph as well; the checks that read target values live in ``check_inputs``.

Tensor contract of the bricks built by :func:`object_detection_bricks` (``C = num_classes``,
``N = sum(H_l * W_l)`` over the levels, ``K = max_detections``, ``M`` = ground-truth slots):

- ``./cls_logits`` [B, N, C], ``./box_regression`` [B, N, 4] (boxes already decoded: xyxy in input
  pixels), ``./centerness`` [B, N] (logits).
- ``./boxes`` [B, K, 4] xyxy in input pixels, ``./scores`` [B, K] (0 for padding), ``./labels``
  [B, K] int64 (-1 for padding), best detection first.
- ``targets`` (boxes [B, M, 4] float xyxy in input pixels) and ``target_labels`` ([B, M] int64
  padded with -1).

Reference: Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", 2019; the code
follows the structure of ``torchvision/models/detection/fcos.py`` without sharing its code.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageDraw
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from brickzoo._bricks import (
    BrickInterface,
    BrickLoss,
    BrickMetricSingle,
    BrickNotTrainable,
    BrickPerImageVisualization,
    BrickTrainable,
)
from brickzoo._draw import draw_label, get_font, image_to_pil, palette
from brickzoo.bag_of_bricks._boxes import (
    anchor_points,
    boxes_to_ltrb,
    centerness_from_ltrb,
    complete_box_iou,
    generalized_box_iou_loss,
    greedy_nms_keep_sorted,
    ltrb_to_boxes,
)
from brickzoo.bag_of_bricks._features import FeatureLevel, FeaturesArg, feature_levels, select_levels
from brickzoo.bag_of_bricks._layers import conv_norm_act
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.errors import BrickDefinitionError, BrickInputError

__all__ = [
    "DetectionMeanAveragePrecision",
    "DetectionPostprocessor",
    "DetectionVisualizer",
    "FCOSHead",
    "FCOSLoss",
    "TaskAlignedHead",
    "TaskAlignedLoss",
    "object_detection_bricks",
]

# exp() of the regression output is clamped here: e^10 * stride is far beyond any image, and it
# keeps an untrained head from producing inf.
_MAX_LOG_DISTANCE = 10.0


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


def _norm_groups(channels: int) -> int:
    """GroupNorm groups for a tower of ``channels``: the largest power of two up to 32 that divides ``channels``
    and leaves at least 2 channels per group (32 from 64 channels on, as torchvision's FCOS: ``GroupNorm(32, 256)``).

    A group of one channel holds one value on a 1x1 feature map (the deepest level of a small
    image), where ``F.group_norm`` refuses to normalise; two channels per group always have two.

    Example:
        >>> [_norm_groups(c) for c in (256, 64, 32, 16, 48, 3, 2)]
        [32, 32, 16, 8, 16, 1, 1]
    """
    groups = math.gcd(32, channels)
    while groups > 1 and channels // groups < 2:
        groups //= 2
    return groups


class ContiguousGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that normalises its input in the default (contiguous) memory layout.

    Its output is contiguous whatever the input's layout. On the CPU, torch's GroupNorm kernels
    for channels-last inputs are several times slower than for contiguous ones: forward and
    backward of a ``[32, 32, 16, 16]`` bfloat16 map take 7.3 ms channels-last, 0.37 ms contiguous,
    and 1.6 ms with copies to contiguous and back (torch 2.14, one thread). A model trained with
    ``channels_last`` (:class:`~brickzoo.training.TrainConfig`) gets channels-last maps from its
    convolutions; this copy made the detection training step 1.2x faster (169 against 202 ms per
    bfloat16 batch of 32 at 64 px). For a contiguous input the copy is a no-op; the parameters and
    the state dict are ``nn.GroupNorm``'s.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)


def _conv_tower(channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, GroupNorm with at least 2 channels per group, ReLU) keeping ``channels``."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            ContiguousGroupNorm(_norm_groups(channels), channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _check_head_levels(owner: str, in_channels: Sequence[int], strides: Sequence[int]) -> None:
    """A dense head's definition: one stride per input level, at least one level."""
    if len(in_channels) != len(strides) or not strides:
        raise BrickDefinitionError(
            f"{owner}: expected one stride per input level, got {len(in_channels)} in_channels "
            f"{list(in_channels)} and {len(strides)} strides {list(strides)}"
        )


def _check_head_features(
    owner: str, features: Sequence[torch.Tensor], in_channels: Sequence[int], strides: Sequence[int]
) -> None:
    """A dense head's inputs: one ``[B, in_channels[l], H_l, W_l]`` map per level (metadata only)."""
    if len(features) != len(strides):
        raise BrickInputError(
            f"{owner}: expected {len(strides)} feature levels (strides {list(strides)}), got {len(features)}"
        )
    for level, (x, channels, stride) in enumerate(zip(features, in_channels, strides, strict=True)):
        if x.ndim != 4 or x.shape[1] != channels:
            raise BrickInputError(
                f"{owner}: feature level {level} (stride {stride}): expected [B, {channels}, H, W], got {_describe(x)}"
            )


# -- head ---------------------------------------------------------------------------------------
class FCOSHead(nn.Module):
    """Dense anchor-free detection head shared over feature levels.

    Each level is first projected to ``head_channels`` with a 1x1 convolution (only where its
    channels differ), then a classification tower and a regression tower (``num_convs`` x conv,
    GroupNorm, ReLU; shared by all levels) feed three 3x3 convolutions: class logits, box side
    distances and centre-ness. Distances are ``exp(scale_l * x) * stride_l`` with one learnable
    scale per level, measured from the centre of each feature cell (see
    :func:`~brickzoo.bag_of_bricks._boxes.level_points`), and decoded to boxes here.

    Args:
        num_classes: number of object classes ``C`` (no background class).
        in_channels: channels of each input level.
        strides: stride of each input level, in input pixels.
        head_channels: channels of the towers, normalised by GroupNorm in groups of at least 2
            channels (32 groups from 64 channels on), so at least 2 when ``num_convs > 0``.
        num_convs: convolutions per tower.
        prior_probability: initial foreground probability of the class logits.

    Shape:
        - features: one ``[B, in_channels[l], H_l, W_l]`` tensor per level, in the order given.
        - returns ``{"cls_logits": [B, N, C], "box_regression": [B, N, 4], "centerness": [B, N]}``
          where ``box_regression`` holds the decoded boxes (xyxy in input pixels), ``centerness``
          logits and ``N = sum(H_l * W_l)``, locations ordered level by level, row-major within a level.

    Example:
        >>> head = FCOSHead(num_classes=3, in_channels=[8, 8], strides=[8, 16], head_channels=16)
        >>> outputs = head(torch.rand(2, 8, 8, 8), torch.rand(2, 8, 4, 4))
        >>> [tuple(outputs[key].shape) for key in FCOSHead.OUTPUTS]
        [(2, 80, 3), (2, 80, 4), (2, 80)]
    """

    OUTPUTS = ("cls_logits", "box_regression", "centerness")
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        strides: Sequence[int],
        head_channels: int = 64,
        num_convs: int = 2,
        prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        _check_head_levels("FCOSHead", in_channels, strides)
        if num_convs > 0 and head_channels < 2:
            raise BrickDefinitionError(
                f"FCOSHead: head_channels must be at least 2 with num_convs={num_convs} (GroupNorm needs two "
                f"channels per group to normalise a 1x1 feature map), got {head_channels}"
            )
        self.num_classes = num_classes
        self.in_channels = [int(c) for c in in_channels]
        self.strides = [int(s) for s in strides]
        self.inputs = nn.ModuleList(
            nn.Identity() if c == head_channels else nn.Conv2d(c, head_channels, kernel_size=1)
            for c in self.in_channels
        )
        self.cls_tower = _conv_tower(head_channels, num_convs)
        self.reg_tower = _conv_tower(head_channels, num_convs)
        self.cls_logits = nn.Conv2d(head_channels, num_classes, kernel_size=3, padding=1)
        self.box_distances = nn.Conv2d(head_channels, 4, kernel_size=3, padding=1)
        self.centerness = nn.Conv2d(head_channels, 1, kernel_size=3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(self.strides)))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))  # type: ignore[arg-type]

    def forward(self, *features: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_head_features("FCOSHead", features, self.in_channels, self.strides)
        all_logits, all_boxes, all_centerness = [], [], []
        for level, (x, project, stride) in enumerate(zip(features, self.inputs, self.strides, strict=True)):
            x = project(x)  # [B, D, H, W]
            height, width = x.shape[-2:]
            cls_logits = self.cls_logits(self.cls_tower(x))  # [B, C, H, W]
            regression = self.reg_tower(x)  # [B, D, H, W]
            log_distances = (self.scales[level] * self.box_distances(regression)).clamp(max=_MAX_LOG_DISTANCE)
            distances = torch.exp(log_distances) * stride  # [B, 4, H, W]
            centerness = self.centerness(regression)  # [B, 1, H, W]
            points = anchor_points([(height, width)], [stride], device=x.device, dtype=distances.dtype)[0]  # [HW, 2]
            all_logits.append(cls_logits.flatten(2).transpose(1, 2))  # [B, HW, C]
            all_boxes.append(ltrb_to_boxes(points, distances.flatten(2).transpose(1, 2)))  # [B, HW, 4]
            all_centerness.append(centerness.flatten(1))  # [B, HW]
        return {
            "cls_logits": torch.cat(all_logits, dim=1),  # [B, N, C]
            "box_regression": torch.cat(all_boxes, dim=1),  # [B, N, 4]
            "centerness": torch.cat(all_centerness, dim=1),  # [B, N]
        }


# -- post-processing ------------------------------------------------------------------------------
class DetectionPostprocessor(nn.Module):
    """Dense predictions to at most ``max_detections`` padded detections per image.

    Per image: ``scores = sqrt(sigmoid(cls_logits) * sigmoid(centerness))`` for every (location,
    class), or ``sigmoid(cls_logits)`` without centre-ness (:class:`TaskAlignedHead`), the
    ``pre_nms_top_k`` best, boxes clipped to the image, candidates at or below
    ``score_threshold`` dropped, class-aware NMS (exactly what ``torchvision.ops.batched_nms``
    keeps, see :func:`~brickzoo.bag_of_bricks._boxes.greedy_nms_keep_sorted`), then the
    ``max_detections`` best. Fixed-shape tensor ops only: an image's detections never depend on
    the other images of its batch, and the module exports to ONNX with a dynamic batch and runs
    under ``torch.compile(fullgraph=True)``. Gradients are not tracked.

    Args:
        max_detections: detections per image ``K`` (the output size).
        score_threshold: candidates need a score above it.
        nms_threshold: IoU above which the lower-scored box of a class is suppressed.
        pre_nms_top_k: candidates per image entering NMS: compiled or exported, NMS holds a
            ``pre_nms_top_k ** 2`` matrix per image; eager on the CPU above 128 candidates,
            torchvision's NMS kernel per image and label; otherwise blocks of 128 rows of the matrix.

    Shape:
        - cls_logits ``[B, N, C]``, boxes ``[B, N, 4]`` xyxy in input pixels, centerness (optional)
          ``[B, N]`` logits, images (optional) ``[B, 3, H, W]``, only read for ``H, W`` to clip the boxes.
        - returns ``{"boxes": [B, K, 4], "scores": [B, K], "labels": [B, K] int64}``, best first;
          padding has zero boxes, score 0 and label -1.

    Example:
        >>> post = DetectionPostprocessor(max_detections=5)
        >>> detections = post(torch.zeros(2, 10, 3), torch.rand(2, 10, 4), torch.zeros(2, 10))
        >>> detections["boxes"].shape, detections["scores"].shape, detections["labels"].dtype
        (torch.Size([2, 5, 4]), torch.Size([2, 5]), torch.int64)
    """

    OUTPUTS = ("boxes", "scores", "labels")
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self,
        max_detections: int = 100,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.6,
        pre_nms_top_k: int = 1000,
    ) -> None:
        super().__init__()
        self.max_detections = max_detections
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.pre_nms_top_k = pre_nms_top_k

    def top_candidates(
        self,
        cls_logits: torch.Tensor,
        boxes: torch.Tensor,
        centerness: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``k = min(pre_nms_top_k, N * C)`` best (location, class) pairs of each image, best first.

        Args:
            cls_logits (Tensor[B, N, C]): class logits.
            boxes (Tensor[B, N, 4]): decoded boxes, xyxy in input pixels.
            centerness (Tensor[B, N], optional): centre-ness logits; without, the scores are the class
                probabilities.
            images (Tensor[B, 3, H, W], optional): only read for ``H, W``, to clip the boxes.

        Returns:
            ``(boxes, scores, labels)``: boxes (Tensor[B, k, 4]) clipped to the images when given,
            scores (Tensor[B, k]) and labels (Tensor[B, k] int64), sorted by decreasing score.
        """
        cls_logits, boxes = cls_logits.detach(), boxes.detach()
        num_classes = cls_logits.shape[2]
        if centerness is None:
            scores = torch.sigmoid(cls_logits)  # [B, N, C]
        else:
            scores = torch.sqrt(torch.sigmoid(cls_logits) * torch.sigmoid(centerness.detach())[..., None])
        scores = scores.flatten(1)  # [B, N*C]
        scores, index = scores.topk(min(self.pre_nms_top_k, scores.shape[1]), dim=1)  # [B, k] best first
        location = torch.div(index, num_classes, rounding_mode="floor")  # [B, k]
        labels = index - location * num_classes  # [B, k]
        boxes = boxes.gather(1, location[..., None].expand(-1, -1, 4))  # [B, k, 4]
        if images is not None:
            height, width = images.shape[-2:]
            x = boxes[..., 0::2].clamp(min=0, max=width)  # [B, k, 2]
            y = boxes[..., 1::2].clamp(min=0, max=height)  # [B, k, 2]
            boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)  # [B, k, 4]
        return boxes, scores, labels

    def forward(
        self,
        cls_logits: torch.Tensor,
        boxes: torch.Tensor,
        centerness: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        boxes, scores, labels = self.top_candidates(cls_logits, boxes, centerness, images)  # [B, k, ...]
        keep = greedy_nms_keep_sorted(boxes, labels, scores > self.score_threshold, self.nms_threshold)  # [B, k]

        # the kept candidates in rank order: a unique positive key per kept candidate, 0 otherwise
        num_candidates = scores.shape[1]
        rank = torch.arange(num_candidates, 0, -1, device=scores.device, dtype=scores.dtype)  # [k]
        num_outputs = min(self.max_detections, num_candidates)
        key, pick = torch.where(keep, rank, 0).topk(num_outputs, dim=1)  # [B, K']
        found = key > 0  # [B, K']
        boxes = torch.where(found[..., None], boxes.gather(1, pick[..., None].expand(-1, -1, 4)), 0)  # [B, K', 4]
        scores = torch.where(found, scores.gather(1, pick), 0)  # [B, K']
        labels = torch.where(found, labels.gather(1, pick), -1)  # [B, K']
        missing = self.max_detections - num_outputs
        if missing > 0:  # fewer candidates than max_detections: pad to the fixed output size
            boxes = F.pad(boxes, (0, 0, 0, missing))
            scores = F.pad(scores, (0, missing))
            labels = F.pad(labels, (0, missing), value=-1)
        return {"boxes": boxes, "scores": scores, "labels": labels}


# -- loss ------------------------------------------------------------------------------------------
def _check_targets_layout(
    targets: Any, target_labels: Any, batch_size: int, names: tuple[str, str] = ("boxes", "box_labels")
) -> None:
    """Ground truth as float boxes ``[B, M, 4]`` and int64 labels ``[B, M]`` for ``batch_size`` images.

    Reads metadata only, so it runs on every call; ``names`` are the tensors' names for the messages.
    """
    boxes_name, labels_name = names
    if (
        not isinstance(targets, torch.Tensor)
        or not targets.is_floating_point()
        or targets.ndim != 3
        or targets.shape[-1] != 4
    ):
        raise BrickInputError(
            f"{boxes_name}: expected float boxes [B, M, 4] (x1, y1, x2, y2 in input pixels), got {_describe(targets)}"
        )
    if not isinstance(target_labels, torch.Tensor) or target_labels.dtype != torch.int64 or target_labels.ndim != 2:
        raise BrickInputError(
            f"{labels_name}: expected int64 labels [B, M] padded with -1, got {_describe(target_labels)}"
        )
    if target_labels.shape != targets.shape[:2]:
        raise BrickInputError(
            f"{boxes_name} {_describe(targets)} and {labels_name} {_describe(target_labels)} disagree: "
            "expected boxes [B, M, 4] and labels [B, M] with the same B and M"
        )
    if targets.shape[0] != batch_size:
        raise BrickInputError(f"{boxes_name}: batch size {targets.shape[0]} differs from the predictions' {batch_size}")


def _check_target_values(
    targets: torch.Tensor,
    target_labels: torch.Tensor,
    num_classes: int | None,
    names: tuple[str, str] = ("boxes", "box_labels"),
) -> None:
    """Labels in ``[0, num_classes)`` or -1, finite boxes with ``x2 >= x1`` and ``y2 >= y1`` for real objects.

    Reads the targets on the host: for ``check_inputs``, never for ``forward``.
    """
    boxes_name, labels_name = names
    if target_labels.numel() == 0:
        return
    low, high = int(target_labels.min()), int(target_labels.max())
    if low < -1 or (num_classes is not None and high >= num_classes):
        expected = f"in [0, {num_classes - 1}] (num_classes={num_classes})" if num_classes is not None else ">= 0"
        raise BrickInputError(
            f"{labels_name}: labels must be {expected} or -1 for padding; got values from {low} to {high}"
        )
    real = targets[target_labels >= 0]  # [P, 4]
    if not bool(torch.isfinite(real).all()):
        raise BrickInputError(f"{boxes_name}: boxes of real objects (label >= 0) must be finite, got NaN or inf")
    inverted = (real[:, 2] < real[:, 0]) | (real[:, 3] < real[:, 1])  # [P]
    if bool(inverted.any()):
        first = [round(float(v), 2) for v in real[inverted][0]]
        raise BrickInputError(
            f"{boxes_name}: expected boxes as (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, got "
            f"{int(inverted.sum())} with x2 < x1 or y2 < y1, e.g. {first}; convert (x, y, w, h) boxes with "
            "torchvision.ops.box_convert"
        )


def _check_levels(cls_logits: torch.Tensor, features: Sequence[torch.Tensor], strides: Sequence[int]) -> None:
    """Raise :class:`BrickInputError` unless ``features`` are one map per stride giving ``cls_logits``' locations."""
    if len(features) != len(strides):
        raise BrickInputError(
            f"features: expected {len(strides)} feature levels (strides {list(strides)}), got {len(features)}"
        )
    sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
    if sum(h * w for h, w in sizes) != cls_logits.shape[1]:
        raise BrickInputError(
            f"features: predictions have {cls_logits.shape[1]} locations but the feature levels of sizes {sizes} give "
            f"{sum(h * w for h, w in sizes)}; expected the head's outputs for these features"
        )


class FCOSLoss(nn.Module):
    """FCOS target assignment and losses, dense over every location and free of host reads.

    A location is positive for a ground-truth box when its point lies inside the box, within
    ``center_sampling_radius * stride`` of the box centre (in both x and y; None disables this),
    and the largest distance from the point to the box sides fits the level's scale range
    ``(4 * stride, 8 * stride]`` (from 0 for the finest level, unbounded for the coarsest). A
    location matching several boxes takes the smallest. Losses, normalised over the batch:

    - ``loss_cls``: sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``) over all
      locations and classes, divided by the number of positives (at least 1);
    - ``loss_box``: GIoU loss (:func:`~brickzoo.bag_of_bricks._boxes.generalized_box_iou_loss`) of
      the positives' decoded boxes, weighted by their centre-ness targets (weighted mean);
    - ``loss_ctr``: BCE between centre-ness logits and targets over the positives, divided by
      the number of positives (at least 1).

    Every term is computed for every location and masked to the positives (no boolean
    indexing), so shapes never depend on the data: ``forward`` never waits on the device and
    compiles into one graph. Background locations compute on a stand-in unit box, so neither
    the losses nor their gradients see NaN or inf whatever values sit there (padding slots,
    far-off predictions). Images without objects give finite losses (only ``loss_cls`` is
    non-zero).

    Args:
        num_classes: number of object classes ``C``.
        strides: stride of each feature level, in the order of the head's levels.
        center_sampling_radius: radius of centre sampling in strides, or None.
        focal_alpha: ``alpha`` of the focal loss.
        focal_gamma: ``gamma`` of the focal loss.
        targets_name: the name of the ground-truth boxes tensor, used in error messages.
        target_labels_name: the name of the ground-truth labels tensor, used in error messages.

    Shape:
        - cls_logits ``[B, N, C]``, boxes ``[B, N, 4]`` (decoded xyxy), centerness ``[B, N]``.
        - targets ``[B, M, 4]`` float xyxy in input pixels, target_labels ``[B, M]`` int64
          padded with -1 (``M`` may be 0).
        - features: the head's input levels, only read for their sizes ``(H_l, W_l)``.
        - returns ``{"loss_cls", "loss_box", "loss_ctr"}``, scalars.

    Raises:
        BrickInputError: targets of the wrong type, shape or dtype, or feature levels that do not
            give the predictions' locations (``forward``); also labels outside ``[-1, num_classes)``,
            non-finite or inverted boxes (``check_inputs``, which reads the targets on the host).

    Example:
        >>> loss = FCOSLoss(num_classes=2, strides=[8])
        >>> losses = loss(torch.zeros(1, 4, 2), torch.rand(1, 4, 4) * 16, torch.zeros(1, 4),
        ...               torch.tensor([[[0.0, 0, 16, 16]]]), torch.tensor([[1]]), torch.zeros(1, 8, 2, 2))
        >>> round(float(losses["loss_ctr"]), 3)
        0.693
    """

    OUTPUTS = ("loss_cls", "loss_box", "loss_ctr")
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self,
        num_classes: int,
        strides: Sequence[int],
        center_sampling_radius: float | None = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        targets_name: str = "boxes",
        target_labels_name: str = "box_labels",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = [int(s) for s in strides]
        self.center_sampling_radius = center_sampling_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.targets_name = targets_name
        self.target_labels_name = target_labels_name

    def check_inputs(
        self,
        cls_logits: torch.Tensor,
        boxes: torch.Tensor,
        centerness: torch.Tensor,
        targets: torch.Tensor,
        target_labels: torch.Tensor,
        *features: torch.Tensor,
    ) -> None:
        """The checks of ``forward`` plus the target values (label range, finite and ordered boxes), on the host."""
        self._check_layout(cls_logits, targets, target_labels, features)
        _check_target_values(targets, target_labels, self.num_classes, (self.targets_name, self.target_labels_name))

    def _check_layout(
        self, cls_logits: torch.Tensor, targets: Any, target_labels: Any, features: Sequence[torch.Tensor]
    ) -> None:
        """Raise :class:`BrickInputError` unless the inputs' types and shapes follow the contract (metadata only)."""
        _check_targets_layout(targets, target_labels, cls_logits.shape[0], (self.targets_name, self.target_labels_name))
        _check_levels(cls_logits, features, self.strides)

    def assign_targets(
        self, points: torch.Tensor, point_strides: torch.Tensor, target_boxes: torch.Tensor, target_labels: torch.Tensor
    ) -> torch.Tensor:
        """The ground-truth box each location is responsible for.

        Args:
            points (Tensor[N, 2]): location points ``(x, y)`` in input pixels.
            point_strides (Tensor[N]): stride of each location's level.
            target_boxes (Tensor[B, M, 4]): xyxy in input pixels.
            target_labels (Tensor[B, M]): labels, -1 for padding.

        Returns:
            matched (Tensor[B, N]): int64 index into M of the matched box, -1 for background.
        """
        batch_size, num_boxes = target_labels.shape
        if num_boxes == 0:
            return torch.full((batch_size, points.shape[0]), -1, dtype=torch.int64, device=points.device)
        ltrb = boxes_to_ltrb(points[None, :, None, :], target_boxes[:, None, :, :])  # [B, N, M, 4]
        match = ltrb.min(dim=-1).values > 0  # [B, N, M] inside the box
        if self.center_sampling_radius is not None:
            centers = (target_boxes[..., :2] + target_boxes[..., 2:]) / 2  # [B, M, 2]
            offset = (points[None, :, None, :] - centers[:, None, :, :]).abs().max(dim=-1).values  # [B, N, M]
            match &= offset < self.center_sampling_radius * point_strides[None, :, None]
        finest, coarsest = min(self.strides), max(self.strides)
        lower = torch.where(point_strides == finest, 0.0, 4 * point_strides)  # [N]
        upper = torch.where(point_strides == coarsest, math.inf, 8 * point_strides)  # [N]
        reach = ltrb.max(dim=-1).values  # [B, N, M]
        match &= (reach > lower[None, :, None]) & (reach <= upper[None, :, None])
        match &= (target_labels >= 0)[:, None, :]
        area = (target_boxes[..., 2] - target_boxes[..., 0]) * (target_boxes[..., 3] - target_boxes[..., 1])  # [B, M]
        cost = torch.where(match, area[:, None, :], math.inf)  # [B, N, M]
        best_cost, best = cost.min(dim=-1)  # [B, N], the first of equal costs
        return torch.where(torch.isfinite(best_cost), best, -1)

    def forward(
        self,
        cls_logits: torch.Tensor,
        boxes: torch.Tensor,
        centerness: torch.Tensor,
        targets: torch.Tensor,
        target_labels: torch.Tensor,
        *features: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        self._check_layout(cls_logits, targets, target_labels, features)
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        points, point_strides = anchor_points(
            sizes, self.strides, device=boxes.device, dtype=boxes.dtype
        )  # [N, 2], [N]
        targets = targets.to(boxes.dtype)
        if targets.shape[1] == 0:  # no box slots at all: one padding slot keeps the gathers below defined
            targets = targets.new_zeros((targets.shape[0], 1, 4))
            target_labels = target_labels.new_full((target_labels.shape[0], 1), -1)
        matched = self.assign_targets(points, point_strides, targets, target_labels)  # [B, N], -1 for background
        positive = matched >= 0  # [B, N]
        normaliser = positive.sum().clamp(min=1).to(cls_logits.dtype)
        index = matched.clamp(min=0)  # [B, N]: background reads slot 0, masked out below

        labels = torch.where(positive, target_labels.gather(1, index), 0)  # [B, N]
        # rows of the identity: a positive's label outside [0, C) fails the lookup (IndexError, or a device-side
        # assert on GPU) rather than training on no class, and without reading the labels on the host
        identity = torch.eye(cls_logits.shape[2], dtype=cls_logits.dtype, device=cls_logits.device)  # [C, C]
        one_hot = torch.where(positive[..., None], identity[labels], 0.0)  # [B, N, C]
        loss_cls = torchvision.ops.sigmoid_focal_loss(
            cls_logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )

        # background locations compute on a unit box in place of their prediction and target
        unit = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)  # [4]
        gt_boxes = targets.gather(1, index[..., None].expand(-1, -1, 4))  # [B, N, 4]
        gt_boxes = torch.where(positive[..., None], gt_boxes, unit)  # [B, N, 4]
        gt_ltrb = torch.where(positive[..., None], boxes_to_ltrb(points, gt_boxes), 1.0)  # [B, N, 4], > 0
        gt_centerness = torch.where(positive, centerness_from_ltrb(gt_ltrb), 0.0)  # [B, N]
        giou = generalized_box_iou_loss(torch.where(positive[..., None], boxes, unit), gt_boxes)  # [B, N]
        loss_box = torch.where(positive, giou * gt_centerness, 0.0).sum() / gt_centerness.sum().clamp(min=1e-6)
        bce = F.binary_cross_entropy_with_logits(centerness, gt_centerness, reduction="none")  # [B, N]
        loss_ctr = torch.where(positive, bce, 0.0).sum()
        return {"loss_cls": loss_cls / normaliser, "loss_box": loss_box, "loss_ctr": loss_ctr / normaliser}


# -- task-aligned head and loss (TOOD / YOLOv8 style) ----------------------------------------------
# class probability of an untrained head: about 5 objects per 640 x 640 pixels, spread over the classes
_PRIOR_OBJECTS_PER_PIXEL = 5 / 640**2
HEAD_TYPES = ("fcos", "task_aligned")
"""The dense heads :func:`object_detection_bricks` builds (``head_type``)."""


class TaskAlignedHead(nn.Module):
    """Dense anchor-free detection head with one branch pair per feature level and box sides as distributions.

    The head of YOLOv8 (Jocher et al., Ultralytics, 2023), written here: each level has its own
    regression branch (``num_convs`` x 3x3 conv, BatchNorm, SiLU, then a 1x1 conv to ``4 * reg_max``
    logits) and its own classification branch (``num_convs`` x depthwise 3x3 conv and 1x1 conv, each
    with BatchNorm and SiLU, then a 1x1 conv to the class logits). Branches are not shared between
    levels, so BatchNorm's running statistics never mix levels. Each box side is a distribution
    over the distances ``0, 1, ..., reg_max - 1`` strides (Li et al., "Generalized Focal Loss",
    2020); its expectation times the stride, measured from the centre of the feature cell (see
    :func:`~brickzoo.bag_of_bricks._boxes.level_points`), gives the decoded box. Train it with
    :class:`TaskAlignedLoss`; its scores are the class probabilities (no centre-ness).

    Args:
        num_classes: number of object classes ``C`` (no background class).
        in_channels: channels of each input level.
        strides: stride of each input level, in input pixels.
        head_channels: channels of both branches.
        num_convs: convolution blocks per branch (at least 1).
        reg_max: bins of each box side's distribution: sides reach ``(reg_max - 1) * stride``.

    Shape:
        - features: one ``[B, in_channels[l], H_l, W_l]`` tensor per level, in the order given.
        - returns ``{"cls_logits": [B, N, C], "box_regression": [B, N, 4], "box_distribution":
          [B, N, 4, reg_max]}``: class logits, the decoded boxes (xyxy in input pixels) and the
          side distributions' logits (left, top, right, bottom), ``N = sum(H_l * W_l)``, locations
          ordered level by level, row-major within a level.

    Example:
        >>> head = TaskAlignedHead(num_classes=3, in_channels=[8, 8], strides=[8, 16], head_channels=16)
        >>> outputs = head(torch.rand(2, 8, 8, 8), torch.rand(2, 8, 4, 4))
        >>> [tuple(outputs[key].shape) for key in TaskAlignedHead.OUTPUTS]
        [(2, 80, 3), (2, 80, 4), (2, 80, 4, 16)]
    """

    OUTPUTS = ("cls_logits", "box_regression", "box_distribution")
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        strides: Sequence[int],
        head_channels: int = 64,
        num_convs: int = 2,
        reg_max: int = 16,
    ) -> None:
        super().__init__()
        _check_head_levels("TaskAlignedHead", in_channels, strides)
        if num_convs < 1 or head_channels < 1 or reg_max < 2:
            raise BrickDefinitionError(
                "TaskAlignedHead: expected num_convs >= 1, head_channels >= 1 and reg_max >= 2, got "
                f"num_convs={num_convs}, head_channels={head_channels}, reg_max={reg_max}"
            )
        self.num_classes = num_classes
        self.in_channels = [int(c) for c in in_channels]
        self.strides = [int(s) for s in strides]
        self.reg_max = reg_max

        def box_branch(channels: int) -> nn.Sequential:
            blocks = [conv_norm_act(channels if i == 0 else head_channels, head_channels, 3) for i in range(num_convs)]
            return nn.Sequential(*blocks, nn.Conv2d(head_channels, 4 * reg_max, kernel_size=1))

        def cls_branch(channels: int) -> nn.Sequential:
            blocks = []
            for i in range(num_convs):
                width = channels if i == 0 else head_channels
                blocks += [conv_norm_act(width, width, 3, groups=width), conv_norm_act(width, head_channels, 1)]
            return nn.Sequential(*blocks, nn.Conv2d(head_channels, num_classes, kernel_size=1))

        self.box_branches = nn.ModuleList(box_branch(c) for c in self.in_channels)
        self.cls_branches = nn.ModuleList(cls_branch(c) for c in self.in_channels)
        for stride, branch in zip(self.strides, self.cls_branches, strict=True):
            prior = _PRIOR_OBJECTS_PER_PIXEL * stride**2 / num_classes
            logits = typing.cast(nn.Conv2d, typing.cast(nn.Sequential, branch)[-1])
            nn.init.constant_(typing.cast(torch.Tensor, logits.bias), math.log(prior))
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def forward(self, *features: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_head_features("TaskAlignedHead", features, self.in_channels, self.strides)
        all_logits, all_boxes, all_distributions = [], [], []
        for level, (x, stride) in enumerate(zip(features, self.strides, strict=True)):
            batch_size, _, height, width = x.shape
            if self.training and batch_size * height * width == 1:
                raise BrickInputError(
                    f"TaskAlignedHead: feature level {level} (stride {stride}) is 1x1 at batch 1; in training its "
                    "BatchNorm needs more than one value per channel; expected a batch of at least 2 or images of "
                    f"more than {stride} pixels a side (evaluation takes any size)"
                )
            cls_logits = self.cls_branches[level](x)  # [B, C, H, W]
            distribution = self.box_branches[level](x)  # [B, 4 * R, H, W]
            distribution = distribution.reshape(batch_size, 4, self.reg_max, height * width).permute(0, 3, 1, 2)
            ltrb = distribution.softmax(dim=-1) @ self.bins.to(distribution.dtype) * stride  # [B, HW, 4]
            points = anchor_points([(height, width)], [stride], device=x.device, dtype=ltrb.dtype)[0]  # [HW, 2]
            all_logits.append(cls_logits.flatten(2).transpose(1, 2))  # [B, HW, C]
            all_boxes.append(ltrb_to_boxes(points, ltrb))  # [B, HW, 4]
            all_distributions.append(distribution)  # [B, HW, 4, R]
        return {
            "cls_logits": torch.cat(all_logits, dim=1),  # [B, N, C]
            "box_regression": torch.cat(all_boxes, dim=1),  # [B, N, 4]
            "box_distribution": torch.cat(all_distributions, dim=1),  # [B, N, 4, R]
        }


class TaskAlignedLoss(nn.Module):
    """Task-aligned assignment with BCE, CIoU and distribution focal losses, dense and free of host reads.

    The training objective of YOLOv8 (TOOD's assignment: Feng et al., "TOOD: Task-aligned One-stage
    Object Detection", 2021), written here. For each ground-truth box, the candidate locations
    are the points strictly inside it (a box narrower or lower than ``min_candidate_size``, by
    default the second-finest stride, counts as that wide or high around its centre, so a small
    box keeps some points). Each candidate scores ``t = p^alpha * CIoU^beta`` from the predicted
    probability ``p`` of the box's class and the CIoU of the predicted box with it; the box takes
    its ``top_k`` best candidates over all levels. A location taken by several boxes keeps the one
    its prediction overlaps most. A positive's classification target is ``t`` rescaled so that
    each box's best location gets that location's CIoU (``t * CIoU_best / (t_best + 1e-9)``, a
    soft label); the others get 0.
    Losses, normalised by the sum ``S`` of the soft labels (at least 1):

    - ``loss_cls``: binary cross-entropy over all locations and classes against the soft labels,
      over ``S``, times ``cls_weight``;
    - ``loss_box``: ``1 - CIoU`` of each positive, weighted by its soft label, over ``S``, times
      ``box_weight``;
    - ``loss_dfl``: the distribution focal loss of the four side distributions (cross-entropy
      with the two bins around the target distance, in strides, clamped to ``reg_max - 1.01``,
      weighted by the distance to each), mean over the sides, weighted like ``loss_box``, times
      ``dfl_weight``.

    The defaults are YOLOv8's (top 10, alpha 0.5, beta 6, gains 0.5 / 7.5 / 1.5). Every term is
    computed for every location and masked to the positives; background locations compute on a
    stand-in unit box, so no NaN or inf reaches the losses or their gradients. Images without
    objects give finite losses (only ``loss_cls`` is non-zero).

    Args:
        num_classes: number of object classes ``C``.
        strides: stride of each feature level, in the order of the head's levels.
        reg_max: bins of the head's side distributions.
        top_k: locations each ground-truth box takes.
        alpha: exponent of the class probability in the alignment score.
        beta: exponent of the CIoU in the alignment score.
        cls_weight: gain of ``loss_cls``.
        box_weight: gain of ``loss_box``.
        dfl_weight: gain of ``loss_dfl``.
        min_candidate_size: see above; None: the second-finest stride (the only one for one level).
        targets_name: the name of the ground-truth boxes tensor, used in error messages.
        target_labels_name: the name of the ground-truth labels tensor, used in error messages.

    Shape:
        - cls_logits ``[B, N, C]``, boxes ``[B, N, 4]`` (decoded xyxy), box_distribution ``[B, N, 4, R]``.
        - targets ``[B, M, 4]`` float xyxy in input pixels, target_labels ``[B, M]`` int64
          padded with -1 (``M`` may be 0).
        - features: the head's input levels, only read for their sizes ``(H_l, W_l)``.
        - returns ``{"loss_cls", "loss_box", "loss_dfl"}``, scalars.

    Raises:
        BrickDefinitionError: arguments out of range (``reg_max < 2``, ``top_k < 1``, no strides,
            negative exponents or gains).
        BrickInputError: targets of the wrong type, shape or dtype, feature levels that do not give
            the predictions' locations, or distributions of another number of bins (``forward``); also
            labels outside ``[-1, num_classes)``, non-finite or inverted boxes (``check_inputs``).

    Example:
        >>> loss = TaskAlignedLoss(num_classes=2, strides=[8], reg_max=4)
        >>> losses = loss(torch.zeros(1, 4, 2), torch.tensor([[[0.0, 0, 8, 8]] * 4]), torch.zeros(1, 4, 4, 4),
        ...               torch.tensor([[[0.0, 0, 16, 16]]]), torch.tensor([[1]]), torch.zeros(1, 8, 2, 2))
        >>> sorted(losses)
        ['loss_box', 'loss_cls', 'loss_dfl']
    """

    OUTPUTS = ("loss_cls", "loss_box", "loss_dfl")
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self,
        num_classes: int,
        strides: Sequence[int],
        reg_max: int = 16,
        top_k: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        cls_weight: float = 0.5,
        box_weight: float = 7.5,
        dfl_weight: float = 1.5,
        min_candidate_size: float | None = None,
        targets_name: str = "boxes",
        target_labels_name: str = "box_labels",
    ) -> None:
        super().__init__()
        problems = []
        if not strides:
            problems.append("strides must name at least one level")
        for name, value, least in (("reg_max", reg_max, 2), ("top_k", top_k, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                problems.append(f"{name} must be an int >= {least}, got {value!r}")
        numbers = {"alpha": alpha, "beta": beta, "cls_weight": cls_weight, "box_weight": box_weight}
        for name, number in {**numbers, "dfl_weight": dfl_weight}.items():
            if not isinstance(number, (int, float)) or not math.isfinite(number) or number < 0:
                problems.append(f"{name} must be a finite number >= 0, got {number!r}")
        if problems:
            raise BrickDefinitionError("TaskAlignedLoss: " + "; ".join(problems))
        self.num_classes = num_classes
        self.strides = [int(s) for s in strides]
        self.reg_max = reg_max
        self.top_k = top_k
        self.alpha = alpha
        self.beta = beta
        self.cls_weight = cls_weight
        self.box_weight = box_weight
        self.dfl_weight = dfl_weight
        ordered = sorted(self.strides)
        default_size = float(ordered[1] if len(ordered) > 1 else ordered[0])
        self.min_candidate_size = default_size if min_candidate_size is None else float(min_candidate_size)
        self.targets_name = targets_name
        self.target_labels_name = target_labels_name

    def check_inputs(
        self,
        cls_logits: torch.Tensor,
        boxes: torch.Tensor,
        box_distribution: torch.Tensor,
        targets: torch.Tensor,
        target_labels: torch.Tensor,
        *features: torch.Tensor,
    ) -> None:
        """The checks of ``forward`` plus the target values (label range, finite and ordered boxes), on the host."""
        self._check_layout(cls_logits, box_distribution, targets, target_labels, features)
        _check_target_values(targets, target_labels, self.num_classes, (self.targets_name, self.target_labels_name))

    def _check_layout(
        self,
        cls_logits: torch.Tensor,
        box_distribution: torch.Tensor,
        targets: Any,
        target_labels: Any,
        features: Sequence[torch.Tensor],
    ) -> None:
        names = (self.targets_name, self.target_labels_name)
        _check_targets_layout(targets, target_labels, cls_logits.shape[0], names)
        _check_levels(cls_logits, features, self.strides)
        expected = (*cls_logits.shape[:2], 4, self.reg_max)
        if tuple(box_distribution.shape) != expected:
            raise BrickInputError(
                f"box_distribution: expected {list(expected)} (reg_max={self.reg_max}), "
                f"got {_describe(box_distribution)}"
            )

    def assign_targets(
        self,
        scores: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        target_boxes: torch.Tensor,
        target_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ground-truth box of each location and its soft label (no gradient).

        Args:
            scores (Tensor[B, N, C]): predicted class probabilities.
            boxes (Tensor[B, N, 4]): predicted boxes, xyxy in input pixels.
            points (Tensor[N, 2]): location points ``(x, y)`` in input pixels.
            target_boxes (Tensor[B, M, 4]): xyxy in input pixels, ``M >= 1``.
            target_labels (Tensor[B, M]): labels, -1 for padding.

        Returns:
            ``(matched, quality)``: matched (Tensor[B, N] int64) index into ``M`` of each location's
            box, -1 for background; quality (Tensor[B, N]) its soft label, 0 for background.
        """
        with torch.no_grad():
            num_points = scores.shape[1]
            valid = target_labels >= 0  # [B, M]
            centres = (target_boxes[..., :2] + target_boxes[..., 2:]) / 2  # [B, M, 2]
            half = (target_boxes[..., 2:] - target_boxes[..., :2]).clamp(min=self.min_candidate_size) / 2
            grown = torch.cat([centres - half, centres + half], dim=-1)  # [B, M, 4]
            inside = boxes_to_ltrb(points[None, :, None, :], grown[:, None, :, :]).min(dim=-1).values > 1e-9
            candidate = inside & valid[:, None, :]  # [B, N, M]
            labels = target_labels.clamp(min=0)[:, None, :].expand(-1, num_points, -1)  # [B, N, M]
            class_score = scores.gather(2, labels)  # [B, N, M]
            ciou = complete_box_iou(boxes[:, :, None, :], target_boxes[:, None, :, :]).clamp(min=0)  # [B, N, M]
            ciou = torch.where(candidate, ciou.nan_to_num(0.0), 0.0)
            align = torch.where(candidate, class_score.pow(self.alpha) * ciou.pow(self.beta), 0.0)  # [B, N, M]
            top = align.topk(min(self.top_k, num_points), dim=1).indices  # [B, k, M]
            chosen = torch.zeros_like(candidate).scatter_(1, top, True) & candidate  # [B, N, M]
            # a location chosen by several boxes keeps the one it overlaps most
            matched = torch.where(chosen, ciou, -1.0).argmax(dim=-1)  # [B, N]
            positive = chosen.any(dim=-1)  # [B, N]
            box_index = torch.arange(target_labels.shape[1], device=scores.device)
            kept = chosen & (box_index[None, None, :] == matched[..., None])  # [B, N, M]
            kept_align = torch.where(kept, align, 0.0)
            best_align = kept_align.amax(dim=1, keepdim=True)  # [B, 1, M]
            box_best_overlap = torch.where(kept, ciou, 0.0).amax(dim=1, keepdim=True)  # [B, 1, M]
            quality = (kept_align * box_best_overlap / (best_align + 1e-9)).amax(dim=-1)  # [B, N]
            return torch.where(positive, matched, -1), torch.where(positive, quality, 0.0)

    def forward(
        self,
        cls_logits: torch.Tensor,
        boxes: torch.Tensor,
        box_distribution: torch.Tensor,
        targets: torch.Tensor,
        target_labels: torch.Tensor,
        *features: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        self._check_layout(cls_logits, box_distribution, targets, target_labels, features)
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        points, point_strides = anchor_points(sizes, self.strides, device=boxes.device, dtype=boxes.dtype)
        targets = targets.to(boxes.dtype)
        if targets.shape[1] == 0:  # no box slots at all: one padding slot keeps the gathers below defined
            targets = targets.new_zeros((targets.shape[0], 1, 4))
            target_labels = target_labels.new_full((target_labels.shape[0], 1), -1)
        scores = cls_logits.detach().float().sigmoid()
        matched, quality = self.assign_targets(
            scores, boxes.detach().float(), points.float(), targets.float(), target_labels
        )
        positive = matched >= 0  # [B, N]
        normaliser = quality.sum().clamp(min=1)  # float32, as every term below
        index = matched.clamp(min=0)  # [B, N]: background reads slot 0, masked out below

        labels = torch.where(positive, target_labels.gather(1, index), 0)  # [B, N]
        identity = torch.eye(cls_logits.shape[2], device=cls_logits.device)  # [C, C]
        soft_labels = torch.where(positive[..., None], identity[labels], 0.0) * quality[..., None]  # [B, N, C]
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits.float(), soft_labels, reduction="sum") / normaliser

        # box terms in float32 like the others, whatever the predictions' dtype: in bfloat16 a distance clamped
        # to 14.99 rounds to 15, whose right-hand bin does not exist, and CIoU keeps two significant digits
        unit = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device)  # [4]
        gt_boxes = targets.float().gather(1, index[..., None].expand(-1, -1, 4))  # [B, N, 4]
        gt_boxes = torch.where(positive[..., None], gt_boxes, unit)
        ciou = complete_box_iou(torch.where(positive[..., None], boxes.float(), unit), gt_boxes)  # [B, N]
        loss_box = torch.where(positive, (1 - ciou) * quality, 0.0).sum() / normaliser

        # distribution focal loss: the target distance (in strides) splits between its two neighbouring bins
        distance = boxes_to_ltrb(points.float(), gt_boxes) / point_strides.float()[:, None]  # [B, N, 4]
        distance = distance.clamp(0, self.reg_max - 1.01)
        left_bin = distance.floor()  # [B, N, 4]
        right_weight = distance - left_bin
        log_p = F.log_softmax(box_distribution.float(), dim=-1)  # [B, N, 4, R]
        left = left_bin.long()[..., None]
        left_term = log_p.gather(-1, left).squeeze(-1) * (1 - right_weight)
        right_term = log_p.gather(-1, left + 1).squeeze(-1) * right_weight
        dfl = -(left_term + right_term).mean(dim=-1)  # [B, N]
        loss_dfl = torch.where(positive, dfl * quality, 0.0).sum() / normaliser
        return {
            "loss_cls": loss_cls * self.cls_weight,
            "loss_box": loss_box * self.box_weight,
            "loss_dfl": loss_dfl * self.dfl_weight,
        }


# -- metrics -------------------------------------------------------------------------------------
class DetectionMeanAveragePrecision(MeanAveragePrecision):
    """COCO mAP (``torchmetrics`` ``MeanAveragePrecision``, pycocotools backend) fed from padded tensors.

    ``update`` drops the padding (label -1) and builds the per-image lists of dicts torchmetrics
    needs; ``compute`` returns ``map``, ``map_50``, ``map_75`` and ``mar_100``.

    Args:
        num_classes: the number of classes, for ``check_inputs`` to check the target labels'
            range (only that they are >= -1 when None).
        targets_name: the name of the ground-truth boxes tensor, used in error messages.
        target_labels_name: the name of the ground-truth labels tensor, used in error messages.
        **kwargs: passed to ``MeanAveragePrecision`` (``iou_thresholds``, ``class_metrics``...);
            the box format is xyxy, the IoU type bbox and the backend pycocotools.

    Shape:
        update(boxes ``[B, K, 4]``, scores ``[B, K]``, labels ``[B, K]``, targets ``[B, M, 4]``,
        target_labels ``[B, M]``), xyxy in input pixels, labels -1 for padding.

    ``update`` checks the shapes; ``check_inputs`` (same arguments) also the target values on the
    host: labels in range, real boxes finite with ``x2 >= x1`` and ``y2 >= y1``.

    Example:
        >>> metric = DetectionMeanAveragePrecision()
        >>> boxes, labels = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 0, 0]]]), torch.tensor([[1, -1]])
        >>> metric.update(boxes, torch.tensor([[0.9, 0.0]]), labels, boxes, labels)
        >>> float(metric.compute()["map_50"])
        1.0
    """

    HEADLINE = ("map", "map_50", "map_75", "mar_100")
    PER_CLASS = ("map_per_class", "mar_100_per_class", "classes")

    def __init__(
        self,
        num_classes: int | None = None,
        targets_name: str = "boxes",
        target_labels_name: str = "box_labels",
        **kwargs: Any,
    ) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", backend="pycocotools", **kwargs)
        self.num_classes = num_classes
        self.targets_name = targets_name
        self.target_labels_name = target_labels_name

    def compute(self) -> dict[str, torch.Tensor]:
        """The headline values ``map``, ``map_50``, ``map_75`` and ``mar_100`` (plus the per-class
        values when ``class_metrics=True``); torchmetrics' per-size values and ``-1`` sentinels
        are left out so logs and plots stay readable."""
        values = super().compute()
        keep = self.HEADLINE + (self.PER_CLASS if self.class_metrics else ())
        return {key: value for key, value in values.items() if key in keep}

    def update(  # type: ignore[override]
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor,
        target_labels: torch.Tensor,
    ) -> None:
        self._check_layout(boxes, scores, labels, targets, target_labels)
        boxes, scores = _real_first(labels, boxes.detach(), scores.detach())
        targets, target_labels = _real_first(target_labels, targets, target_labels)
        labels = _real_first(labels, labels)[0]
        # how many entries of each image are real: the update's one host read (not one per image)
        counts = torch.stack([(labels >= 0).sum(dim=1), (target_labels >= 0).sum(dim=1)], dim=1).tolist()
        predictions = [
            {"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]} for i, (n, _) in enumerate(counts)
        ]
        truths = [{"boxes": targets[i, :m], "labels": target_labels[i, :m]} for i, (_, m) in enumerate(counts)]
        super().update(predictions, truths)

    def check_inputs(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor,
        target_labels: torch.Tensor,
    ) -> None:
        """The checks of ``update`` plus the target values (label range, finite and ordered boxes), on the host."""
        self._check_layout(boxes, scores, labels, targets, target_labels)
        names = (self.targets_name, self.target_labels_name)
        _check_target_values(targets, target_labels, self.num_classes, names)

    def _check_layout(self, boxes: Any, scores: Any, labels: Any, targets: Any, target_labels: Any) -> None:
        """Detections ``[B, K, 4]``, ``[B, K]``, ``[B, K]`` and targets for the same B (metadata only)."""
        tensors = all(isinstance(t, torch.Tensor) for t in (boxes, scores, labels))
        if not tensors or boxes.ndim != 3 or boxes.shape[:2] != labels.shape or scores.shape != labels.shape:
            raise BrickInputError(
                "DetectionMeanAveragePrecision: expected detections as boxes [B, K, 4], scores [B, K] and labels "
                f"[B, K]; got {_describe(boxes)}, {_describe(scores)}, {_describe(labels)}"
            )
        _check_targets_layout(targets, target_labels, boxes.shape[0], (self.targets_name, self.target_labels_name))


def _real_first(labels: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``values`` (``[B, K, ...]``) reordered so that each image's real entries (``labels >= 0``) come first,
    in their order: fixed-shape ops only, so dropping the padding then takes a slice per image."""
    order = (labels < 0).to(torch.uint8).argsort(dim=1, stable=True)  # [B, K] real entries first
    return tuple(
        value.gather(1, order.reshape(*order.shape, *[1] * (value.ndim - 2)).expand_as(value)) for value in values
    )


# -- visualization ---------------------------------------------------------------------------------
class DetectionVisualizer:
    """Draw one image's detections: boxes in class colours with ``"name score"`` labels.

    Images smaller than ``min_size`` (shorter side) are enlarged first so labels stay readable.
    Padding (label -1) and detections scoring below ``min_score`` are skipped; the best
    detections are drawn last, on top.

    Args:
        num_classes: number of classes (fixes the palette).
        class_names: a name per class; the class index is written when None.
        min_score: detections scoring below it are not drawn.
        min_size: the shorter side of the drawing is enlarged to at least this many pixels.
        line_width: box outline width in pixels of the drawing.

    Shape:
        ``__call__(image [H, W, 3] (float in [0, 1] or uint8), boxes [K, 4] xyxy in input pixels,
        scores [K], labels [K])`` (numpy arrays or tensors) returns a ``PIL.Image.Image``.

    Example:
        >>> draw = DetectionVisualizer(num_classes=2, class_names=["cat", "dog"])
        >>> image = draw(np.zeros((32, 32, 3)), np.array([[4.0, 4, 20, 20]]), np.array([0.9]), np.array([1]))
        >>> image.size
        (256, 256)
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        min_score: float = 0.3,
        min_size: int = 256,
        line_width: int = 2,
    ) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.min_score = min_score
        self.min_size = min_size
        self.line_width = line_width

    def _name(self, label: int) -> str:
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def __call__(self, image: Any, boxes: Any, scores: Any, labels: Any) -> Image.Image:
        picture = image_to_pil(image)
        width, height = picture.size
        zoom = max(1, math.ceil(self.min_size / max(1, min(width, height))))
        if zoom > 1:
            picture = picture.resize((width * zoom, height * zoom), Image.Resampling.NEAREST)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * zoom  # [K, 4] in drawing pixels
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)  # [K]
        labels = np.asarray(labels).reshape(-1).astype(np.int64)  # [K]
        colours = palette(max(1, self.num_classes))
        font = get_font(max(10, min(16, picture.size[1] // 20)))
        draw = ImageDraw.Draw(picture)
        shown = [i for i in np.argsort(scores, kind="stable") if labels[i] >= 0 and scores[i] >= self.min_score]
        for i in shown:
            colour = colours[int(labels[i]) % len(colours)]
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            x2, y2 = max(x1, x2), max(y1, y2)
            # a dark 1 px rim on both sides keeps the outline visible on objects of the same colour
            draw.rectangle((x1 - 1, y1 - 1, x2 + 1, y2 + 1), outline=(0, 0, 0), width=self.line_width + 2)
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=self.line_width)
            text = f"{self._name(int(labels[i]))} {scores[i]:.2f}"
            text_height = draw.textbbox((0, 0), text, font=font)[3]
            top = y1 - text_height - 3 if y1 - text_height - 3 >= 0 else y1 + 2  # above the box, else inside
            draw_label(draw, (x1 + 2, top), text, colour, font)
        return picture


# -- factory -------------------------------------------------------------------------------------
def _check_factory_arguments(
    num_classes: int,
    class_names: Sequence[str] | None,
    targets: str,
    target_labels: str,
    head_channels: int,
    num_convs: int,
    max_detections: int,
    score_threshold: float,
    nms_threshold: float,
    pre_nms_top_k: int,
    head_type: str,
    reg_max: int | None,
) -> None:
    owner = "object_detection_bricks"
    problems = []
    if head_type not in HEAD_TYPES:
        problems.append(f"head_type must be one of {list(HEAD_TYPES)}, got {head_type!r}")
    elif head_type == "task_aligned" and num_convs < 1:
        problems.append(f"num_convs must be >= 1 with head_type='task_aligned', got {num_convs!r}")
    elif head_type != "task_aligned" and reg_max is not None:  # would be ignored: say so rather than train without it
        problems.append(f"reg_max applies to head_type='task_aligned' only, got reg_max={reg_max!r} with {head_type!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        problems.append(f"num_classes must be an int >= 1, got {num_classes!r}")
    elif class_names is not None and len(class_names) != num_classes:
        problems.append(f"class_names must hold num_classes={num_classes} names, got {len(class_names)}")
    for what, name in (("targets", targets), ("target_labels", target_labels)):
        if not isinstance(name, str) or not name:
            problems.append(f"{what} must be a non-empty tensor name, got {name!r}")
    for name, value, least in [
        ("head_channels", head_channels, 1),
        ("num_convs", num_convs, 0),
        ("max_detections", max_detections, 1),
        ("pre_nms_top_k", pre_nms_top_k, 1),
        ("reg_max", 16 if reg_max is None else reg_max, 2),
    ]:
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            problems.append(f"{name} must be an int >= {least}, got {value!r}")
    for name, threshold in [("score_threshold", score_threshold), ("nms_threshold", nms_threshold)]:
        if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            problems.append(f"{name} must be a number in [0, 1], got {threshold!r}")
    if problems:
        raise BrickDefinitionError(f"{owner}: " + "; ".join(problems))


def _detection_levels(features: FeaturesArg, strides: Sequence[int] | None, owner: str) -> list[FeatureLevel]:
    """The levels ``features`` names (those of ``strides`` when given), each with its stride."""
    if isinstance(features, str):
        raise BrickDefinitionError(
            f"{owner}: features={features!r} is a tensor name, which carries no stride, and detection needs the "
            "stride of every feature level; pass FeatureLevel(name, channels, stride) objects or the bricks of "
            "backbone_bricks/fpn_bricks"
        )
    levels = select_levels(feature_levels(features, owner=owner), strides, owner)
    no_stride = [level.name for level in levels if level.stride <= 0]
    if no_stride:
        raise BrickDefinitionError(
            f"{owner}: detection needs the stride of every feature level, got none for {no_stride}; pass "
            "FeatureLevel(name, channels, stride) objects or the bricks of backbone_bricks/fpn_bricks"
        )
    return levels


@register_factory("object_detection", "head")
def object_detection_bricks(
    num_classes: int,
    features: FeaturesArg,
    targets: str = "boxes",
    target_labels: str = "box_labels",
    images: str = "images",
    class_names: Sequence[str] | None = None,
    head_channels: int = 64,
    num_convs: int = 2,
    max_detections: int = 100,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.6,
    pre_nms_top_k: int = 1000,
    strides: Sequence[int] | None = None,
    head_type: str = "fcos",
    reg_max: int | None = None,
) -> dict[str, BrickInterface]:
    """Bricks of an anchor-free dense object detector over several feature levels: FCOS or task-aligned.

    Nest the returned dict under a key (``{"detect": object_detection_bricks(...)}``): its outputs
    are relative names, and at the root ``./boxes`` would be the dataset's ``boxes``.

    Reads: the feature levels (absolute names from ``features``), ``images`` (``[B, 3, H, W]``,
    for clipping and drawing), ``targets`` (boxes ``[B, M, 4]`` float xyxy in input pixels) and
    ``target_labels`` (``[B, M]`` int64 padded with -1). Writes, relative to where the dict is nested:

    - ``head`` (MODEL, :class:`FCOSHead`): ``./cls_logits`` [B, N, C], ``./box_regression``
      [B, N, 4] (decoded boxes, xyxy in input pixels), ``./centerness`` [B, N] logits; with
      ``head_type="task_aligned"`` (:class:`TaskAlignedHead`) ``./box_distribution``
      [B, N, 4, reg_max] logits in place of ``./centerness``;
    - ``postprocess`` (MODEL, :class:`DetectionPostprocessor`): ``./boxes`` [B, K, 4],
      ``./scores`` [B, K], ``./labels`` [B, K] int64, ``K = max_detections``, padding with
      score 0 and label -1;
    - ``loss`` (LOSS, :class:`FCOSLoss`): ``./loss_cls``, ``./loss_box``, ``./loss_ctr``; with
      ``head_type="task_aligned"`` (:class:`TaskAlignedLoss`) ``./loss_dfl`` in place of ``./loss_ctr``;
    - ``metrics`` (METRIC, :class:`DetectionMeanAveragePrecision`): ``summarize()`` gives
      ``<path>/map``, ``<path>/map_50``, ``<path>/map_75``, ``<path>/mar_100``...;
    - ``visualize`` (VISUALIZATION, :class:`DetectionVisualizer`): ``./visualization``, one
      pillow image per image.

    Args:
        num_classes: number of object classes (no background class).
        features: the levels to detect on, with their strides: a list of ``FeatureLevel``, or the
            bricks of ``fpn_bricks``/``backbone_bricks`` (anything ``feature_levels()`` accepts
            that carries strides).
        targets: name of the ground-truth boxes.
        target_labels: name of the ground-truth labels.
        images: name of the input images.
        class_names: one name per class, for the visualizer.
        head_channels: channels of the head's towers (branches).
        num_convs: convolutions per tower (convolution blocks per branch, at least 1, for ``task_aligned``).
        max_detections: detections per image after post-processing.
        score_threshold: detections need a score above it.
        nms_threshold: IoU above which NMS drops the lower-scored box of a class.
        pre_nms_top_k: candidates per image entering NMS.
        strides: detect only on the levels with these strides (all levels when None), e.g.
            ``[8, 16, 32]`` to skip a stride-4 level that holds most of the locations and so most
            of the head's cost; the finest kept level then takes every object up to its range.
        head_type: ``"fcos"`` (FCOS: towers shared by the levels with GroupNorm, centre-ness, FCOS's
            assignment by centre and scale range, focal + GIoU losses) or ``"task_aligned"``
            (YOLOv8's design: a BatchNorm/SiLU branch pair per level, box sides as ``reg_max``-bin
            distributions, task-aligned assignment, BCE + CIoU + distribution focal losses). At
            320 px, 256 steps of the shapes data (benchmarks/README.md): mAP@0.5 0.47 with
            ``fcos`` against 0.66 with ``task_aligned`` on the same mobilenetv3 + PAN features.
        reg_max: bins of each box side's distribution (``task_aligned`` only; None: 16): sides
            reach ``(reg_max - 1) * stride``. Given with the FCOS head, it is refused, not ignored.

    Returns:
        ``{"head", "postprocess", "loss", "metrics", "visualize"}`` bricks.

    Raises:
        BrickDefinitionError: invalid arguments, ``features`` given as a tensor name or a level
            without a stride.

    Example:
        >>> from brickzoo import BrickCollection
        >>> from brickzoo.bag_of_bricks._features import FeatureLevel
        >>> levels = [FeatureLevel("features/level3", 16, 8), FeatureLevel("features/level4", 16, 16)]
        >>> model = BrickCollection({"detect": object_detection_bricks(num_classes=3, features=levels)})
        >>> named = {"images": torch.rand(2, 3, 64, 64), "features/level3": torch.rand(2, 16, 8, 8),
        ...          "features/level4": torch.rand(2, 16, 4, 4)}
        >>> outputs = model(named, groups={"MODEL"})
        >>> outputs["detect/boxes"].shape, outputs["detect/scores"].shape, outputs["detect/labels"].shape
        (torch.Size([2, 100, 4]), torch.Size([2, 100]), torch.Size([2, 100]))
    """
    owner = "object_detection_bricks"
    _check_factory_arguments(
        num_classes,
        class_names,
        targets,
        target_labels,
        head_channels,
        num_convs,
        max_detections,
        score_threshold,
        nms_threshold,
        pre_nms_top_k,
        head_type,
        reg_max,
    )
    levels = _detection_levels(features, strides, owner)
    level_names = [level.name for level in levels]
    strides = [level.stride for level in levels]
    in_channels = [level.channels for level in levels]
    detections = [f"./{key}" for key in DetectionPostprocessor.OUTPUTS]
    post = DetectionPostprocessor(max_detections, score_threshold, nms_threshold, pre_nms_top_k)
    head: nn.Module
    loss: nn.Module
    if head_type == "task_aligned":
        bins = 16 if reg_max is None else reg_max
        head = TaskAlignedHead(num_classes, in_channels, strides, head_channels, num_convs, bins)
        loss = TaskAlignedLoss(num_classes, strides, bins, targets_name=targets, target_labels_name=target_labels)
        post_inputs: list[str] | dict[str, str] = {
            "cls_logits": "./cls_logits",
            "boxes": "./box_regression",
            "images": images,
        }
    else:
        head = FCOSHead(num_classes, in_channels, strides, head_channels, num_convs)
        loss = FCOSLoss(num_classes, strides, targets_name=targets, target_labels_name=target_labels)
        post_inputs = ["./cls_logits", "./box_regression", "./centerness", images]
    raw = [f"./{key}" for key in head.OUTPUTS]
    return {
        "head": BrickTrainable(head, input_names=level_names, output_names={key: f"./{key}" for key in head.OUTPUTS}),
        "postprocess": BrickNotTrainable(
            post, input_names=post_inputs, output_names={key: f"./{key}" for key in DetectionPostprocessor.OUTPUTS}
        ),
        "loss": BrickLoss(
            loss,
            input_names=[*raw, targets, target_labels, *level_names],
            output_names={key: f"./{key}" for key in loss.OUTPUTS},
        ),
        "metrics": BrickMetricSingle(
            DetectionMeanAveragePrecision(num_classes, targets_name=targets, target_labels_name=target_labels),
            input_names=[*detections, targets, target_labels],
        ),
        "visualize": BrickPerImageVisualization(
            DetectionVisualizer(num_classes, class_names),
            input_names=[images, *detections],
            output_names=["./visualization"],
        ),
    }
