"""Image classification: head, loss, metrics, visualizer and the ``image_classification_bricks`` factory.

The head pools the deepest feature map it is given and classifies it, either into one of
``num_classes`` classes (softmax) or into any subset of them (``multilabel=True``, sigmoid).

Tensor names written by the factory's bricks (relative to the collection holding them):

- ``./logits`` (Tensor[B, C]), ``./probabilities`` (Tensor[B, C]),
- ``./predictions`` (Tensor[B] int64 class index; multilabel: Tensor[B, C] int64 0/1),
- ``./scores`` (Tensor[B], the probability of the predicted class; multilabel: the largest probability),
- ``./loss`` (scalar), ``./visualization`` (one pillow image per input image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelConfusionMatrix,
    MultilabelF1Score,
)

from brickzoo._bricks import BrickInterface, BrickLoss, BrickMetrics, BrickPerImageVisualization, BrickTrainable
from brickzoo._draw import draw_label, get_font, image_to_pil, palette
from brickzoo.bag_of_bricks._checks import _shape, check_batch, check_class_index_layout, check_class_index_values
from brickzoo.bag_of_bricks._features import FeatureLevel, FeaturesArg, feature_levels, select_levels
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.errors import BrickDefinitionError, BrickInputError

__all__ = [
    "ClassificationHead",
    "ClassificationLoss",
    "ClassificationMetrics",
    "ClassificationVisualizer",
    "image_classification_bricks",
]


# -- head ------------------------------------------------------------------------------------------
class ClassificationHead(nn.Module):
    """Global average pooling, dropout and a linear layer, plus the post-processing.

    Args:
        in_channels: channels of the incoming feature map.
        num_classes: number of classes (at least 2).
        dropout: dropout probability applied to the pooled features while training.
        multilabel: score every class independently (sigmoid) instead of picking one (softmax).
        threshold: multilabel only: a class is predicted when its probability is above it.

    Inputs:
        features (Tensor[B, in_channels, H, W]): a feature map, or already pooled features
            (Tensor[B, in_channels]).

    Returns:
        A dict of named tensors:

        - ``logits`` (Tensor[B, num_classes]),
        - ``probabilities`` (Tensor[B, num_classes]): softmax, or sigmoid when multilabel,
        - ``predictions``: the class index (Tensor[B] int64, argmax); multilabel: Tensor[B, num_classes]
          int64, 1 where the probability is above ``threshold``,
        - ``scores`` (Tensor[B]): the probability of the predicted class; multilabel: the largest probability.

    Example:
        >>> head = ClassificationHead(in_channels=8, num_classes=3)
        >>> outputs = head(torch.randn(2, 8, 4, 4))
        >>> outputs["predictions"].shape, outputs["predictions"].dtype
        (torch.Size([2]), torch.int64)
    """

    OUTPUTS = ("logits", "probabilities", "predictions", "scores")
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.0,
        multilabel: bool = False,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.threshold = threshold
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        if features.ndim not in (2, 4) or features.shape[1] != self.in_channels:
            raise BrickInputError(
                f"features: expected [B, {self.in_channels}, H, W] (or pooled [B, {self.in_channels}]), "
                f"got {_shape(features)}; in_channels of the head must match the feature map"
            )
        pooled = features.mean(dim=(2, 3)) if features.ndim == 4 else features  # [B, C_in]
        logits = self.fc(self.dropout(pooled))  # [B, num_classes]
        if self.multilabel:
            probabilities = logits.sigmoid()  # [B, num_classes]
            predictions = (probabilities > self.threshold).to(torch.int64)  # [B, num_classes]
            scores = probabilities.amax(dim=1)  # [B]
        else:
            probabilities = logits.softmax(dim=1)  # [B, num_classes]
            predictions = logits.argmax(dim=1)  # [B]
            scores = probabilities.gather(1, predictions[:, None]).squeeze(1)  # [B]
        return {"logits": logits, "probabilities": probabilities, "predictions": predictions, "scores": scores}


# -- loss ------------------------------------------------------------------------------------------
def _check_targets_layout(
    targets: torch.Tensor, num_classes: int, multilabel: bool, what: str, batch_size: int
) -> None:
    """Targets of the right type, dtype and shape for ``batch_size`` samples; reads metadata only.

    Class indices Tensor[B] (with a hint for one-hot targets), or multi-hot Tensor[B, num_classes].
    """
    if multilabel:
        if not isinstance(targets, torch.Tensor):
            raise BrickInputError(
                f"{what}: expected a multi-hot tensor [B, {num_classes}], got {type(targets).__name__}"
            )
        if targets.ndim != 2 or targets.shape[1] != num_classes or targets.dtype.is_complex:
            hint = "; for class indices [B] use multilabel=False" if targets.ndim == 1 else ""
            raise BrickInputError(
                f"{what}: expected multi-hot targets [B, {num_classes}] (float in [0, 1] or int 0/1), "
                f"got {_shape(targets)}{hint}"
            )
    else:
        if isinstance(targets, torch.Tensor) and targets.ndim == 2 and targets.shape[1] == num_classes:
            raise BrickInputError(
                f"{what}: expected int64 class indices [B], got {_shape(targets)}; "
                "for multi-hot or one-hot targets use multilabel=True, or pass targets.argmax(dim=1)"
            )
        check_class_index_layout(targets, what=what)
    check_batch(targets, batch_size, what)


def _check_targets_values(targets: torch.Tensor, num_classes: int, multilabel: bool, what: str) -> None:
    """Class indices in ``[0, num_classes)``, or multi-hot values in [0, 1]; reads the targets on the host."""
    if not multilabel:
        check_class_index_values(targets, num_classes, what=what)
        return
    if targets.numel() == 0 or targets.dtype == torch.bool:
        return
    low, high = float(targets.min()), float(targets.max())
    integral = not targets.dtype.is_floating_point
    if low < 0 or high > 1:
        raise BrickInputError(
            f"{what}: multi-hot targets must be {'0 or 1' if integral else 'in [0, 1]'}; "
            f"got values from {low:g} to {high:g}"
        )


class ClassificationLoss(nn.Module):
    """Cross-entropy (optionally label-smoothed), or binary cross-entropy with logits when multilabel.

    Args:
        num_classes: number of classes.
        multilabel: use BCE-with-logits on multi-hot targets.
        label_smoothing: in [0, 1). Multiclass: as in ``F.cross_entropy``; multilabel: targets
            ``y`` become ``y * (1 - label_smoothing) + label_smoothing / 2``.
        targets_name: the targets' tensor name, used in error messages.

    Inputs:
        logits (Tensor[B, num_classes]).
        targets: class indices Tensor[B] (any integer dtype); multilabel: multi-hot Tensor[B, num_classes],
            float in [0, 1], integer 0/1 or bool.

    Returns:
        ``{"loss": the mean loss over the batch (a scalar tensor)}``.

    Raises:
        BrickInputError: targets of the wrong dtype or shape, or a batch size other than the
            logits' (``forward``); also class indices outside ``[0, num_classes)`` or multi-hot
            values outside [0, 1] (``check_inputs``, which reads the targets on the host).

    Example:
        >>> loss = ClassificationLoss(num_classes=3)
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 2]))["loss"].shape
        torch.Size([])
    """

    OUTPUTS = ("loss",)
    """The keys of the dict ``forward`` returns."""

    def __init__(
        self, num_classes: int, multilabel: bool = False, label_smoothing: float = 0.0, targets_name: str = "targets"
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.label_smoothing = label_smoothing
        self.targets_name = targets_name

    def check_inputs(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """The checks of ``forward`` plus the values of ``targets``, read on the host (once per loader)."""
        what = f"targets {self.targets_name!r}"
        _check_targets_layout(targets, self.num_classes, self.multilabel, what, logits.shape[0])
        _check_targets_values(targets, self.num_classes, self.multilabel, what)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        what = f"targets {self.targets_name!r}"
        _check_targets_layout(targets, self.num_classes, self.multilabel, what, logits.shape[0])
        if self.multilabel:
            soft = targets.to(logits.dtype)  # [B, C]
            if self.label_smoothing > 0:
                soft = soft * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            return {"loss": F.binary_cross_entropy_with_logits(logits, soft)}
        return {"loss": F.cross_entropy(logits, targets.long(), label_smoothing=self.label_smoothing)}


# -- metrics ---------------------------------------------------------------------------------------
class ClassificationMetrics(MetricCollection):
    """Accuracy (micro and macro), macro F1 and the confusion matrix of class predictions.

    Keys: ``accuracy``, ``accuracy_macro``, ``f1``, ``confusion_matrix``; torchmetrics' multilabel
    variants when ``multilabel``: the confusion matrix is then Tensor[num_classes, 2, 2], float
    targets are rounded to 0/1, and ``accuracy_macro`` equals ``accuracy`` (every label counts
    the same number of samples).

    Args:
        num_classes: number of classes.
        multilabel: multi-hot predictions and targets.
        threshold: multilabel only: passed to torchmetrics (used for float predictions).
        targets_name: the targets' tensor name, used in error messages.

    Inputs (``update`` and ``check_inputs``):
        predictions: class indices Tensor[B]; multilabel: Tensor[B, num_classes] 0/1.
        targets: class indices Tensor[B]; multilabel: multi-hot Tensor[B, num_classes].

    ``update`` checks the targets' layout; ``check_inputs`` also their values (on the host).

    Example:
        >>> metrics = ClassificationMetrics(num_classes=3)
        >>> metrics.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
        >>> round(float(metrics.compute()["accuracy"]), 3)
        0.667
    """

    def __init__(
        self, num_classes: int, multilabel: bool = False, threshold: float = 0.5, targets_name: str = "targets"
    ) -> None:
        metrics: dict[str, Any]
        if multilabel:
            metrics = {
                "accuracy": MultilabelAccuracy(num_labels=num_classes, threshold=threshold, average="micro"),
                "accuracy_macro": MultilabelAccuracy(num_labels=num_classes, threshold=threshold, average="macro"),
                "f1": MultilabelF1Score(num_labels=num_classes, threshold=threshold, average="macro"),
                "confusion_matrix": MultilabelConfusionMatrix(num_labels=num_classes, threshold=threshold),
            }
        else:
            metrics = {
                "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
                "accuracy_macro": MulticlassAccuracy(num_classes=num_classes, average="macro"),
                "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
                "confusion_matrix": MulticlassConfusionMatrix(num_classes=num_classes),
            }
        super().__init__(metrics, compute_groups=False)
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.targets_name = targets_name

    def check_inputs(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """The checks of ``update`` plus the values of ``targets``, read on the host (once per loader)."""
        what = f"targets {self.targets_name!r}"
        _check_targets_layout(targets, self.num_classes, self.multilabel, what, predictions.shape[0])
        _check_targets_values(targets, self.num_classes, self.multilabel, what)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:  # type: ignore[override]
        what = f"targets {self.targets_name!r}"
        _check_targets_layout(targets, self.num_classes, self.multilabel, what, predictions.shape[0])
        if self.multilabel:
            targets = targets.round().long() if targets.dtype.is_floating_point else targets.long()
        super().update(predictions, targets)


# -- visualizer ------------------------------------------------------------------------------------
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_MIN_FONT = 8  # pixels: below this the default font stops being legible
_MAX_FONT = 32  # pixels: large enough for big images without hiding them


def _truncate(text: str, font: Font, width: float) -> str:
    """``text`` shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if font.getlength(text) <= width:
        return text
    while len(text) > 1 and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


class ClassificationVisualizer:
    """Draws the predicted class name(s) and score(s) in the top-left corner of an image.

    The font grows with the image (12 pixels on a 64x64 image, at most 32), shrinks by up to a
    quarter to fit the widest label, and longer class names are then truncated with an
    ellipsis, so labels stay legible on 64x64 images. Each label sits on a box in its class's
    palette colour; multilabel lines that do not fit are summarised as ``+N more``.

    Args:
        class_names: one name per class.
        multilabel: draw one line per predicted class, each with its probability.

    Inputs (one image of the batch, as :class:`BrickPerImageVisualization` splits them):
        image (ndarray[H, W, 3]): float in [0, 1] or uint8.
        prediction: the class index (ndarray[1]); multilabel: 0/1 per class (ndarray[C]).
        score: the probability of the predicted class (ndarray[1]); multilabel: the probability
            of every class (ndarray[C]).

    Returns:
        A pillow RGB image of size ``W x H``.

    Example:
        >>> draw = ClassificationVisualizer(["cat", "dog"])
        >>> draw(np.zeros((64, 64, 3), np.float32), np.array([1]), np.array([0.9])).size
        (64, 64)
    """

    def __init__(self, class_names: Sequence[str], multilabel: bool = False) -> None:
        self.class_names = list(class_names)
        self.multilabel = multilabel
        self.colours = palette(len(self.class_names))

    def _lines(self, prediction: np.ndarray, score: np.ndarray) -> list[tuple[str, str, tuple[int, int, int]]]:
        """(class name, score text, colour) for each label to draw."""
        prediction, score = np.asarray(prediction).reshape(-1), np.asarray(score, dtype=np.float64).reshape(-1)
        if not self.multilabel:
            index = int(prediction[0])
            return [(self.class_names[index], f"{float(score[0]):.2f}", self.colours[index])]
        chosen = sorted(np.flatnonzero(prediction), key=lambda i: -score[i])
        if not chosen:
            return [("none", f"{float(score.max()):.2f}", (96, 96, 96))]
        return [(self.class_names[i], f"{float(score[i]):.2f}", self.colours[i]) for i in chosen]

    def __call__(self, image: np.ndarray, prediction: np.ndarray, score: np.ndarray) -> Image.Image:
        picture = image_to_pil(image)
        width, height = picture.size
        lines = self._lines(prediction, score)
        margin = 2  # pixels between the label box and the image border
        room = width - 2 * margin - 2  # the label box adds 2 pixels left and right of the text
        # font: 12 px on 64 px images, growing slowly up to 32 px; shrinks by a quarter at most
        # to fit the widest label, longer class names are then truncated
        size = min(_MAX_FONT, _MIN_FONT + round(min(width, height) / 16))
        smallest = max(_MIN_FONT, round(0.75 * size))
        widest = max((f"{name} {value}" for name, value, _ in lines), key=get_font(size).getlength)
        while size > smallest and get_font(size).getlength(widest) > room:
            size -= 1
        font = get_font(size)
        _, top, _, bottom = font.getbbox("Ag")
        step = int(bottom - top) + 3  # line height: text plus the box's padding
        fitting = max(1, (height - margin) // step)
        if len(lines) > fitting:  # keep the most probable labels, then say how many are hidden
            hidden = len(lines) - fitting + 1
            more = [(f"+{hidden} more", "", (96, 96, 96))] if fitting > 1 else []
            lines = lines[: max(1, fitting - 1)] + more
        draw = ImageDraw.Draw(picture)
        for i, (name, value, colour) in enumerate(lines):
            suffix = f" {value}" if value else ""
            text = _truncate(name, font, room - font.getlength(suffix)) + suffix
            draw_label(draw, (margin, margin + i * step - top + 1), text, colour, font)
        return picture


# -- factory ---------------------------------------------------------------------------------------
def _deepest(levels: list[FeatureLevel]) -> FeatureLevel:
    """The level with the largest stride; the last one given among equals."""
    best = levels[0]
    for level in levels[1:]:
        if level.stride >= best.stride:
            best = level
    return best


def _check_arguments(
    num_classes: int,
    class_names: Sequence[str] | None,
    label_smoothing: float,
    dropout: float,
    threshold: float,
) -> list[str]:
    """Raise one BrickDefinitionError listing every bad argument; return the class names."""
    problems = []
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        problems.append(
            f"num_classes must be an integer >= 2, got {num_classes!r} (torchmetrics' classification metrics need "
            "2 classes or more; for a single yes/no output use num_classes=2)"
        )
    names: list[str] = []
    if class_names is not None:
        names = [str(name) for name in class_names]
        if isinstance(class_names, str):
            problems.append(f"class_names must be a list of names, got the string {class_names!r}")
        elif isinstance(num_classes, int) and len(names) != num_classes:
            problems.append(f"class_names has {len(names)} names but num_classes is {num_classes}: {names[:10]}")
    elif isinstance(num_classes, int):
        names = [f"class {i}" for i in range(max(num_classes, 0))]
    for name, value, low_open, interval in (
        ("label_smoothing", label_smoothing, False, "[0, 1)"),
        ("dropout", dropout, False, "[0, 1)"),
        ("threshold", threshold, True, "(0, 1)"),
    ):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not (0.0 < value < 1.0 or (value == 0.0 and not low_open)):
            problems.append(f"{name} must be a number in {interval}, got {value!r}")
    if problems:
        raise BrickDefinitionError("image_classification_bricks: " + "; ".join(problems))
    return names


@register_factory("image_classification", "head")
def image_classification_bricks(
    num_classes: int,
    features: FeaturesArg,
    targets: str = "labels",
    images: str = "images",
    in_channels: int | None = None,
    class_names: Sequence[str] | None = None,
    multilabel: bool = False,
    label_smoothing: float = 0.0,
    dropout: float = 0.0,
    threshold: float = 0.5,
    strides: Sequence[int] | None = None,
) -> dict[str, BrickInterface]:
    """Image classification head: classifier, loss, metrics and visualizer bricks.

    The head pools the deepest of the given feature levels (the largest stride; ``strides``
    narrows the choice, e.g. ``[8]`` pools the stride-8 level of an FPN). Nest the returned
    dict in a collection under a key (``"head0"``) and its tensors are named ``head0/logits`` etc.

    Args:
        num_classes: number of classes (at least 2).
        features: the feature map to classify: a tensor name (then ``in_channels`` is needed), a
            ``FeatureLevel``, a list of them, or the dict returned by ``backbone_bricks``/``fpn_bricks``.
        targets: name of the targets: class indices Tensor[B] int64, or multi-hot Tensor[B, C]
            when ``multilabel``.
        images: name of the images Tensor[B, 3, H, W] in [0, 1] the visualizer draws on.
        in_channels: channels of ``features`` when it is a tensor name.
        class_names: one name per class, for the visualizer; ``"class 0"``, ``"class 1"``... by default.
        multilabel: independent sigmoid per class, BCE-with-logits loss and multilabel metrics.
        label_smoothing: in [0, 1); see :class:`ClassificationLoss`.
        dropout: dropout probability on the pooled features, in [0, 1).
        threshold: multilabel only: a class is predicted when its probability is above it.
        strides: pool the deepest of the levels with these strides (all levels when None), e.g.
            ``[8]`` for the stride-8 level of an FPN.

    Returns:
        ``{"classify", "loss", "metrics", "visualize"}``:

        - ``classify`` (MODEL) reads ``features``; writes ``./logits`` [B, C], ``./probabilities``
          [B, C], ``./predictions`` ([B] int64; multilabel [B, C] int64 0/1) and ``./scores`` [B].
        - ``loss`` (LOSS) reads ``./logits`` and ``targets``; writes ``./loss``.
        - ``metrics`` (METRIC) reads ``./predictions`` and ``targets``; summarizes to ``accuracy``,
          ``accuracy_macro``, ``f1`` and ``confusion_matrix``.
        - ``visualize`` (VISUALIZATION) reads ``images``, ``./predictions`` and ``./scores``
          (multilabel: ``./probabilities``); writes ``./visualization``, a list of pillow images.

    Raises:
        BrickDefinitionError: ``num_classes < 2``, ``len(class_names) != num_classes``,
            ``label_smoothing`` or ``dropout`` outside [0, 1), ``threshold`` outside (0, 1), or
            ``features`` that ``feature_levels`` does not accept.

    Example:
        >>> from brickzoo import BrickCollection
        >>> model = BrickCollection({"head0": image_classification_bricks(3, "features", in_channels=8)})
        >>> outputs = model({"features": torch.randn(2, 8, 4, 4)}, groups={"MODEL"})
        >>> outputs["head0/predictions"].shape
        torch.Size([2])
    """
    names = _check_arguments(num_classes, class_names, label_smoothing, dropout, threshold)
    owner = "image_classification_bricks"
    level = _deepest(select_levels(feature_levels(features, in_channels, owner=owner), strides, owner))
    head = ClassificationHead(
        in_channels=level.channels,
        num_classes=num_classes,
        dropout=dropout,
        multilabel=multilabel,
        threshold=threshold,
    )
    scores = "./probabilities" if multilabel else "./scores"
    return {
        "classify": BrickTrainable(
            head,
            input_names=[level.name],
            output_names={key: f"./{key}" for key in ClassificationHead.OUTPUTS},
        ),
        "loss": BrickLoss(
            ClassificationLoss(num_classes, multilabel, label_smoothing, targets_name=targets),
            input_names=["./logits", targets],
            output_names={key: f"./{key}" for key in ClassificationLoss.OUTPUTS},
        ),
        "metrics": BrickMetrics(
            ClassificationMetrics(num_classes, multilabel, float(threshold), targets_name=targets),
            input_names=["./predictions", targets],
        ),
        "visualize": BrickPerImageVisualization(
            ClassificationVisualizer(names, multilabel=multilabel),
            input_names=[images, "./predictions", scores],
            output_names=["./visualization"],
        ),
    }
