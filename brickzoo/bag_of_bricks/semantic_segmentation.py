"""Semantic segmentation: FPN-style decoder, loss, metrics, visualizer and the brick factory.

One pixel-wise head on top of one or several feature levels. The decoder merges the levels
top-down (coarsest to finest), classifies every pixel of the finest level and upsamples the
logits bilinearly to the size of the input images, so any input size works and the argmax
post-processing is part of the exported model.

Masks are int64 ``[B, H, W]`` class indices with 0 the background and ``ignore_index`` (255 by
default) for pixels that count nowhere (loss, metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from brickzoo._bricks import BrickInterface, BrickLoss, BrickMetrics, BrickPerImageVisualization, BrickTrainable
from brickzoo._draw import draw_label, get_font, image_to_pil, palette
from brickzoo.bag_of_bricks._checks import _shape, check_class_index_values
from brickzoo.bag_of_bricks._features import FeatureLevel, FeaturesArg, feature_levels, select_levels
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.errors import BrickDefinitionError, BrickInputError

__all__ = [
    "SemanticSegmentationDecoder",
    "SemanticSegmentationLoss",
    "SemanticSegmentationMetrics",
    "SemanticSegmentationVisualizer",
    "semantic_segmentation_bricks",
    "soft_dice_loss",
]


class SemanticSegmentationDecoder(nn.Module):
    """A light FPN-style decoder with a per-pixel classifier.

    Each level goes through a 1x1 lateral conv to ``decoder_channels``; from the coarsest level
    down, the running map is upsampled (nearest) to the next finer level and added to it. The
    merged finest map goes through a 3x3 conv + BatchNorm + ReLU and a 1x1 classifier, and the
    logits are upsampled bilinearly to the images' size.

    Args:
        num_classes: number of classes, background included.
        in_channels: channels of each feature level, finest level first.
        decoder_channels: channels of the merged maps.

    Inputs:
        images (Tensor[B, 3, H, W]): only their size is read.
        *features (Tensor[B, C_l, H_l, W_l]): one map per level, finest first (same order as
            ``in_channels``).

    Returns:
        ``{"logits": Tensor[B, num_classes, H, W], "predictions": Tensor[B, H, W] int64 argmax}``.

    Example:
        >>> decoder = SemanticSegmentationDecoder(num_classes=3, in_channels=[8, 16])
        >>> outputs = decoder(torch.zeros(2, 3, 32, 32), torch.zeros(2, 8, 8, 8), torch.zeros(2, 16, 4, 4))
        >>> outputs["logits"].shape, outputs["predictions"].shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 32, 32]))
    """

    OUTPUTS = ("logits", "predictions")
    """The keys of the dict ``forward`` returns."""

    def __init__(self, num_classes: int, in_channels: Sequence[int], decoder_channels: int = 64) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, decoder_channels, kernel_size=1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_channels, decoder_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)

    def forward(self, images: torch.Tensor, *features: torch.Tensor) -> dict[str, torch.Tensor]:
        merged = self.laterals[-1](features[-1])  # [B, D, H_L, W_L], the coarsest level
        for index in range(len(features) - 2, -1, -1):
            lateral = self.laterals[index](features[index])  # [B, D, H_l, W_l]
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
        logits = self.classifier(self.fuse(merged))  # [B, C, H_0, W_0]
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)  # [B, C, H, W]
        # max(dim=1).indices is argmax (first maximum on ties) and, on CPU, ~10x faster than argmax(dim=1)
        return {"logits": logits, "predictions": logits.max(dim=1).indices}  # [B, C, H, W], [B, H, W]


def soft_dice_loss(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """Soft multi-class Dice loss over the softmax probabilities, ignoring ``ignore_index`` pixels.

    For each class ``c``, sums run over the batch and every valid pixel:
    ``dice_c = (2 * sum(p_c * t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth)``, where ``p_c`` is
    the predicted probability and ``t_c`` the one-hot target. The loss is ``1 - mean_c(dice_c)``;
    a class absent from both targets and predictions has ``dice_c`` close to 1.

    Args:
        logits (Tensor[B, C, H, W]): raw scores.
        masks (Tensor[B, H, W]): int64 class indices in ``[0, C)`` or ``ignore_index``.
        ignore_index: mask value of pixels to leave out.
        smooth: added to numerator and denominator; keeps empty classes finite.

    Returns:
        A scalar tensor in ``[0, 1]``.
    """
    num_classes = logits.shape[1]
    valid = (masks != ignore_index).unsqueeze(1).to(logits.dtype)  # [B, 1, H, W]
    probabilities = logits.softmax(dim=1) * valid  # [B, C, H, W]
    indices = torch.where(masks == ignore_index, torch.zeros_like(masks), masks)  # [B, H, W]
    one_hot = F.one_hot(indices, num_classes).permute(0, 3, 1, 2).to(logits.dtype) * valid  # [B, C, H, W]
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))  # [C]
    cardinality = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))  # [C]
    dice = (2.0 * intersection + smooth) / (cardinality + smooth)  # [C]
    return 1.0 - dice.mean()


class SemanticSegmentationLoss(nn.Module):
    """Pixel-wise cross-entropy and ``dice_weight`` times :func:`soft_dice_loss`, as two loss terms.

    Cross-entropy is averaged over the valid pixels (those not equal to ``ignore_index``); a
    batch whose pixels are all ignored gives 0 rather than NaN.

    Args:
        num_classes: number of classes, background included.
        ignore_index: mask value of pixels to leave out.
        dice_weight: weight of the Dice term; with 0, ``loss_dice`` is a constant zero.

    Inputs:
        logits (Tensor[B, C, H, W]): raw scores.
        masks (Tensor[B, H, W]): int64 class indices in ``[0, num_classes)`` or ``ignore_index``.

    Returns:
        ``{"loss_ce": cross_entropy, "loss_dice": dice_weight * dice}``, the two terms to be summed
        (no separate total, so a trainer summing every loss output counts each term once). Both
        keys are always there: with ``dice_weight`` 0, ``loss_dice`` is a zero that costs nothing
        (Dice is not computed).

    Raises:
        BrickInputError: masks are not int64 ``[B, H, W]`` of the logits' size (``forward``), or
            hold a value that is neither a class index nor ``ignore_index`` (``check_inputs``,
            which reads the masks on the host).
    """

    OUTPUTS = ("loss_ce", "loss_dice")
    """The keys of the dict ``forward`` returns."""

    def __init__(self, num_classes: int, ignore_index: int = 255, dice_weight: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight

    def check_inputs(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        """The checks of ``forward`` plus the mask values, read on the host (once per loader)."""
        _check_masks_layout(masks, logits, "logits")
        check_class_index_values(masks, self.num_classes, what="masks", ignore_index=self.ignore_index)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_masks_layout(masks, logits, "logits")
        valid_pixels = (masks != self.ignore_index).sum().clamp(min=1)
        summed = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="sum")
        loss_ce = summed / valid_pixels
        if self.dice_weight <= 0.0:
            return {"loss_ce": loss_ce, "loss_dice": torch.zeros((), dtype=loss_ce.dtype, device=loss_ce.device)}
        loss_dice = soft_dice_loss(logits, masks, ignore_index=self.ignore_index)
        return {"loss_ce": loss_ce, "loss_dice": self.dice_weight * loss_dice}


def _check_masks_layout(masks: torch.Tensor, predicted: torch.Tensor, what: str) -> None:
    """Masks of int64 class indices ``[B, H, W]`` with the batch size and ``(H, W)`` of ``predicted``.

    ``predicted`` is the logits ``[B, C, H, W]`` or the predictions ``[B, H, W]`` (named by ``what``);
    only metadata is read.
    """
    batch_size, size = predicted.shape[0], tuple(predicted.shape[-2:])
    layout = f"int64 class indices [B, H, W] = {[batch_size, *size]}"
    if not isinstance(masks, torch.Tensor):
        raise BrickInputError(f"masks: expected {layout}, got {type(masks).__name__}")
    if masks.dtype != torch.int64 or masks.ndim != 3:
        hint = "; convert them with masks.long()" if masks.ndim == 3 and not masks.dtype.is_floating_point else ""
        raise BrickInputError(f"masks: expected {layout}, got {_shape(masks)}{hint}")
    if masks.shape[0] != batch_size or tuple(masks.shape[1:]) != size:
        raise BrickInputError(
            f"masks: expected {layout} (the size of the {what} {list(predicted.shape)}), got {_shape(masks)}; "
            "masks must have the size of the images"
        )


class SemanticSegmentationMetrics(MetricCollection):
    """Macro mean IoU (``miou``) and micro pixel accuracy (``pixel_accuracy``), ignoring ``ignore_index``.

    Args:
        num_classes: number of classes, background included.
        ignore_index: mask value of pixels left out.

    Inputs (``update`` and ``check_inputs``):
        predictions (Tensor[B, H, W]): int64 class indices.
        masks (Tensor[B, H, W]): int64 class indices in ``[0, num_classes)`` or ``ignore_index``.

    ``update`` checks the masks' layout; ``check_inputs`` also their values (on the host).

    Example:
        >>> metrics = SemanticSegmentationMetrics(num_classes=2)
        >>> metrics.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [0, 255]]]))
        >>> round(float(metrics.compute()["pixel_accuracy"]), 3)
        0.667
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__(
            {
                "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index),
                "pixel_accuracy": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
            }
        )
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def check_inputs(self, predictions: torch.Tensor, masks: torch.Tensor) -> None:
        """The checks of ``update`` plus the mask values, read on the host (once per loader)."""
        _check_masks_layout(masks, predictions, "predictions")
        check_class_index_values(masks, self.num_classes, what="masks", ignore_index=self.ignore_index)

    def update(self, predictions: torch.Tensor, masks: torch.Tensor) -> None:  # type: ignore[override]
        _check_masks_layout(masks, predictions, "predictions")
        super().update(predictions, masks)


class SemanticSegmentationVisualizer:
    """Draw one image with its predicted classes blended over it and a legend of the classes present.

    Background (class 0) pixels are left as they are; every other class is blended with its
    palette colour (``alpha`` of colour) and outlined in the full colour, so regions stay visible
    on backgrounds of a similar hue. The legend, in the top-left corner, lists the classes
    present in the prediction, each name on its colour.

    Args:
        class_names: one name per class, background first.
        alpha: opacity of the class colours, in ``[0, 1]``.

    Inputs (one image):
        image (ndarray[H, W, 3]): float in ``[0, 1]`` or uint8.
        prediction (ndarray[H, W]): class indices.

    Returns:
        An RGB ``PIL.Image.Image`` of size ``W x H``.

    Example:
        >>> visualizer = SemanticSegmentationVisualizer(["background", "cat"])
        >>> visualizer(np.zeros((32, 48, 3), np.float32), np.ones((32, 48), np.int64)).size
        (48, 32)
    """

    def __init__(self, class_names: Sequence[str], alpha: float = 0.5) -> None:
        self.class_names = list(class_names)
        self.alpha = alpha
        self.colours = np.array(palette(len(self.class_names)), dtype=np.float32)  # [C, 3]

    def __call__(self, image: np.ndarray, prediction: np.ndarray) -> Image.Image:
        pil = image_to_pil(image)
        rgb = np.asarray(pil, dtype=np.float32)  # [H, W, 3]
        prediction = np.asarray(prediction).astype(np.int64)  # [H, W]
        in_range = (prediction > 0) & (prediction < len(self.class_names))  # [H, W]
        coloured = self.colours[np.where(in_range, prediction, 0)]  # [H, W, 3]
        blended = np.where(in_range[..., None], (1.0 - self.alpha) * rgb + self.alpha * coloured, rgb)
        edge = _class_edges(prediction) & in_range  # [H, W], outlines in the full class colour
        blended[edge] = coloured[edge]
        out = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
        present = [int(c) for c in np.unique(prediction[in_range])]
        self._draw_legend(out, present)
        return out

    def _draw_legend(self, image: Image.Image, classes: list[int]) -> None:
        if not classes:
            return
        width, height = image.size
        font = get_font(min(20, max(8, min(width, height) // 9)))  # readable from 64 px images up
        draw = ImageDraw.Draw(image)
        _, top, _, bottom = draw.textbbox((0, 0), "Ag", font=font)
        row = int(bottom - top) + 4  # text height plus the label box's margins and a gap
        rows = max(1, (height - 2) // row)
        if len(classes) > rows:  # keep the last row for how many classes do not fit
            shown, hidden = classes[: rows - 1], len(classes) - (rows - 1)
        else:
            shown, hidden = classes, 0
        y = 2.0 - top
        for c in shown:
            colour = tuple(int(v) for v in self.colours[c])
            draw_label(draw, (3.0, y), self.class_names[c], (colour[0], colour[1], colour[2]), font)
            y += row
        if hidden:
            draw_label(draw, (3.0, y), f"+{hidden} more", (40, 40, 40), font)


def _class_edges(prediction: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels with a 4-neighbour of another class (the outline of each region)."""
    edge = np.zeros(prediction.shape, dtype=bool)
    vertical = prediction[1:, :] != prediction[:-1, :]  # [H-1, W]
    horizontal = prediction[:, 1:] != prediction[:, :-1]  # [H, W-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def _check_factory_arguments(
    num_classes: int,
    class_names: Sequence[str] | None,
    ignore_index: int,
    decoder_channels: int,
    dice_weight: float,
    alpha: float,
    targets: str,
    images: str,
) -> list[str]:
    """Every problem with the factory's arguments, as messages (empty when all is fine)."""
    problems = []
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        problems.append(f"num_classes must be an int >= 2 (background and at least one class), got {num_classes!r}")
    elif class_names is not None and len(class_names) != num_classes:
        problems.append(f"class_names has {len(class_names)} names, expected num_classes={num_classes}")
    if class_names is not None and not all(isinstance(n, str) for n in class_names):
        problems.append(f"class_names must be strings, got {list(class_names)!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        problems.append(f"ignore_index must be an int, got {ignore_index!r}")
    if isinstance(decoder_channels, bool) or not isinstance(decoder_channels, int) or decoder_channels < 1:
        problems.append(f"decoder_channels must be an int >= 1, got {decoder_channels!r}")
    if not isinstance(dice_weight, (int, float)) or not math.isfinite(dice_weight) or dice_weight < 0:
        problems.append(f"dice_weight must be a finite number >= 0, got {dice_weight!r}")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        problems.append(f"alpha must be in [0, 1], got {alpha!r}")
    for what, name in (("targets", targets), ("images", images)):
        if not isinstance(name, str) or not name:
            problems.append(f"{what} must be a non-empty tensor name, got {name!r}")
    return problems


def _ordered_levels(levels: list[FeatureLevel], owner: str) -> list[FeatureLevel]:
    """The levels finest first; several levels need distinct known strides to be ordered."""
    if len(levels) == 1:
        return levels
    strides = [level.stride for level in levels]
    names = [level.name for level in levels]
    if any(s <= 0 for s in strides) or len(set(strides)) != len(strides):
        raise BrickDefinitionError(
            f"{owner}: several feature levels need distinct positive strides to be merged; got strides {strides} "
            f"for {names}; pass FeatureLevel objects with their strides (or a single level)"
        )
    if len(set(names)) != len(names):
        raise BrickDefinitionError(f"{owner}: feature level names must be distinct, got {names}")
    return sorted(levels, key=lambda level: level.stride)


@register_factory("semantic_segmentation", "head")
def semantic_segmentation_bricks(
    num_classes: int,
    features: FeaturesArg,
    targets: str = "masks",
    images: str = "images",
    in_channels: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    decoder_channels: int = 64,
    dice_weight: float = 0.0,
    alpha: float = 0.5,
    strides: Sequence[int] | None = None,
) -> dict[str, BrickInterface]:
    """Semantic segmentation head: FPN-style decoder, CE (+ Dice) loss, mIoU/pixel accuracy, overlay drawing.

    Bricks (names relative to where the dict is nested):

    - ``"decode"`` (MODEL): reads ``images`` (for their size) and the feature levels; writes
      ``"./logits"`` ``[B, num_classes, H, W]`` and ``"./predictions"`` ``[B, H, W]`` int64 (argmax).
    - ``"loss"`` (LOSS): reads ``"./logits"`` and ``targets`` (int64 masks ``[B, H, W]``); writes
      the two terms to sum, ``"./loss_ce"`` and ``"./loss_dice"`` (already weighted by ``dice_weight``;
      0 when ``dice_weight`` is 0).
    - ``"metrics"`` (METRIC): macro mean IoU ``"miou"`` and micro ``"pixel_accuracy"`` over
      ``"./predictions"`` and ``targets``, both ignoring ``ignore_index``.
    - ``"visualize"`` (VISUALIZATION): reads ``images`` and ``"./predictions"``; writes
      ``"./visualization"``, one PIL image per image.

    Args:
        num_classes: number of classes, background (class 0) included; at least 2.
        features: the levels to decode: a tensor name (with ``in_channels``), a
            :class:`FeatureLevel`, a list of them (strides tell their scale) or the dict of
            ``backbone_bricks``/``fpn_bricks``.
        targets: name of the masks ``[B, H, W]`` int64.
        images: name of the input images ``[B, 3, H, W]``; the logits get their size.
        in_channels: channels of ``features`` when it is a tensor name.
        class_names: one name per class; ``"class 0"``, ``"class 1"``... by default.
        ignore_index: mask value of pixels ignored by loss and metrics.
        decoder_channels: channels inside the decoder.
        dice_weight: weight of the soft Dice term added to cross-entropy; 0 turns it off (``./loss_dice`` is 0).
        alpha: opacity of the class colours in the visualization.
        strides: decode only the levels with these strides (all levels when None), e.g.
            ``[8, 16]`` for a cheaper decoder.

    Returns:
        ``{"decode", "loss", "metrics", "visualize"}`` bricks, to nest under a head name.

    Raises:
        BrickDefinitionError: invalid arguments (all problems are listed in one message).

    Example:
        >>> from brickzoo import BrickCollection
        >>> levels = [FeatureLevel("features/level2", 8, 4), FeatureLevel("features/level3", 16, 8)]
        >>> head = BrickCollection({"seg": semantic_segmentation_bricks(num_classes=3, features=levels)})
        >>> named = {"images": torch.rand(2, 3, 32, 32), "features/level2": torch.rand(2, 8, 8, 8),
        ...          "features/level3": torch.rand(2, 16, 4, 4)}
        >>> head(named, groups={"MODEL"})["seg/predictions"].shape
        torch.Size([2, 32, 32])
    """
    owner = "semantic_segmentation_bricks"
    problems = _check_factory_arguments(
        num_classes, class_names, ignore_index, decoder_channels, dice_weight, alpha, targets, images
    )
    if problems:
        raise BrickDefinitionError(f"{owner}: " + "; ".join(problems))
    levels = _ordered_levels(select_levels(feature_levels(features, in_channels, owner=owner), strides, owner), owner)
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]

    decoder = SemanticSegmentationDecoder(num_classes, [level.channels for level in levels], decoder_channels)
    return {
        "decode": BrickTrainable(
            decoder,
            input_names=[images, *(level.name for level in levels)],
            output_names={key: f"./{key}" for key in SemanticSegmentationDecoder.OUTPUTS},
        ),
        "loss": BrickLoss(
            SemanticSegmentationLoss(num_classes, ignore_index=ignore_index, dice_weight=float(dice_weight)),
            input_names=["./logits", targets],
            output_names={key: f"./{key}" for key in SemanticSegmentationLoss.OUTPUTS},
        ),
        "metrics": BrickMetrics(
            SemanticSegmentationMetrics(num_classes, ignore_index), input_names=["./predictions", targets]
        ),
        "visualize": BrickPerImageVisualization(
            SemanticSegmentationVisualizer(names, alpha=float(alpha)),
            input_names=[images, "./predictions"],
            output_names=["./visualization"],
        ),
    }
