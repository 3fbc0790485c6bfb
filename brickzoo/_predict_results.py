"""Per-image prediction results in the original image's pixels, as data (see :mod:`brickzoo.predict`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from brickzoo._predict_heads import CLASSIFICATION, DETECTION, SEGMENTATION, HeadSpec
from brickzoo.errors import DataError

BOX_DECIMALS = 2  # JSON rounds box coordinates to 0.01 pixel
SCORE_DECIMALS = 4  # and scores and probabilities to 1e-4


def _score(value: float) -> float:
    return round(float(value), SCORE_DECIMALS)


@dataclass
class ClassificationResult:
    """One image's classification by one head.

    Attributes:
        head: the head's spec (name, class names, visualizer).
        probabilities: ``Tensor[C]`` float, the probability of every class (softmax; multilabel:
            independent sigmoids).
        predicted: ``Tensor[C]`` bool, the classes the head predicts (one for single-label heads;
            multilabel: those above its threshold, possibly none).
        top_k: how many of the best classes :meth:`to_dict` lists.
    """

    head: HeadSpec
    probabilities: torch.Tensor
    predicted: torch.Tensor
    top_k: int = 5

    @property
    def class_index(self) -> int:
        """The most probable class."""
        return int(self.probabilities.argmax())

    @property
    def class_name(self) -> str:
        """The name of the most probable class."""
        return self.head.class_names[self.class_index]

    @property
    def score(self) -> float:
        """The probability of the most probable class."""
        return float(self.probabilities.max())

    def best(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` (default ``top_k``) most probable classes as ``(name, probability)``, best first."""
        count = min(k if k is not None else self.top_k, len(self.head.class_names))
        values, indices = self.probabilities.topk(count)  # [k], [k]
        return [(self.head.class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """``{"task", "class", "index", "score", "top_k": [{"class", "score"}...]}`` (+ ``"predicted"`` names
        for multilabel heads)."""
        record: dict[str, Any] = {
            "task": CLASSIFICATION,
            "class": self.class_name,
            "index": self.class_index,
            "score": _score(self.score),
            "top_k": [{"class": name, "score": _score(value)} for name, value in self.best()],
        }
        if self.head.multilabel:
            record["predicted"] = [self.head.class_names[int(i)] for i in torch.nonzero(self.predicted).flatten()]
        return record

    def draw(self, image: np.ndarray) -> Image.Image:
        """The head's visualizer on ``image`` (``[H, W, 3]`` float in [0, 1])."""
        from brickzoo.bag_of_bricks.image_classification import ClassificationVisualizer

        drawer = self.head.visualizer or ClassificationVisualizer(self.head.class_names, self.head.multilabel)
        if self.head.multilabel:
            return drawer(image, self.predicted.long().numpy(), self.probabilities.numpy())
        return drawer(image, np.array([self.class_index]), np.array([self.score]))


@dataclass
class DetectionResult:
    """One image's detections by one head, in the original image's pixels, best first.

    Attributes:
        head: the head's spec.
        boxes: ``Tensor[K, 4]`` float ``[x1, y1, x2, y2]`` in pixels of the original image
            (pixel edges: a box covering the whole image is ``[0, 0, width, height]``), clipped
            to it.
        scores: ``Tensor[K]`` float.
        labels: ``Tensor[K]`` int64 class indices.
        dropped_in_padding: detections dropped because they lay wholly in the letterbox padding
            (nothing of them is left inside the image).
    """

    head: HeadSpec
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    dropped_in_padding: int = 0

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.head.class_name(int(label)) for label in self.labels]

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to_dict(self) -> dict[str, Any]:
        """``{"task", "detections": [{"box", "class", "index", "score"}...], "dropped_in_padding"}``."""
        rows = [
            {
                "box": [round(float(v), BOX_DECIMALS) for v in box],
                "class": name,
                "index": int(label),
                "score": _score(score),
            }
            for box, name, label, score in zip(self.boxes, self.names, self.labels, self.scores, strict=True)
        ]
        return {"task": DETECTION, "detections": rows, "dropped_in_padding": self.dropped_in_padding}

    def draw(self, image: np.ndarray) -> Image.Image:
        """The head's visualizer on ``image`` (``[H, W, 3]`` float in [0, 1])."""
        from brickzoo.bag_of_bricks.object_detection import DetectionVisualizer

        drawer = self.head.visualizer or DetectionVisualizer(len(self.head.class_names), self.head.class_names)
        return drawer(image, self.boxes.numpy(), self.scores.numpy(), self.labels.numpy())


@dataclass
class SegmentationResult:
    """One image's semantic segmentation by one head, at the original image's size.

    Attributes:
        head: the head's spec (class names: background first).
        mask: ``Tensor[H, W]`` int64 class indices, ``(H, W)`` the original image's size.
    """

    head: HeadSpec
    mask: torch.Tensor

    @property
    def pixel_counts(self) -> dict[str, int]:
        """Pixels of each class (every class listed, zeros included), in class order."""
        counts = torch.bincount(self.mask.flatten(), minlength=len(self.head.class_names))  # [C]
        return {name: int(count) for name, count in zip(self.head.class_names, counts, strict=False)}

    def to_dict(self, mask_file: str | None = None) -> dict[str, Any]:
        """``{"task", "class_names", "pixel_counts"}`` and ``"mask"`` (the mask PNG's name) when written."""
        record: dict[str, Any] = {"task": SEGMENTATION}
        if mask_file is not None:
            record["mask"] = mask_file
        record["class_names"] = list(self.head.class_names)
        record["pixel_counts"] = self.pixel_counts
        return record

    def draw(self, image: np.ndarray) -> Image.Image:
        """The head's visualizer on ``image`` (``[H, W, 3]`` float in [0, 1])."""
        from brickzoo.bag_of_bricks.semantic_segmentation import SemanticSegmentationVisualizer

        drawer = self.head.visualizer or SemanticSegmentationVisualizer(self.head.class_names)
        return drawer(image, self.mask.numpy())


HeadResult = ClassificationResult | DetectionResult | SegmentationResult


@dataclass
class ImagePrediction:
    """Everything the heads predict for one image, in the original image's pixels.

    Attributes:
        file: the image file, or None for pillow images and tensors.
        width: width of the original image (as displayed: EXIF orientation applied).
        height: height of the original image.
        heads: ``{head name: result}``.
        transform: how the image was brought to the model: ``{"resize": "letterbox" | "stretch",
            "input_size": [H, W], "scale": [sx, sy], "offset": [left, top]}`` (a point ``x`` of
            the original lands at ``x * sx + left``); classification-only models may leave out
            scale and offset.
        image: the original image, ``Tensor[3, H, W]`` float in [0, 1], to draw on.
    """

    file: Path | None
    width: int
    height: int
    heads: dict[str, HeadResult]
    transform: dict[str, Any] = field(default_factory=dict)
    image: torch.Tensor | None = field(default=None, repr=False)

    @property
    def orig_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the original image."""
        return self.height, self.width

    def to_dict(self, files: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The record written to ``predictions.jsonl``.

        Args:
            files: names of the files written for this image: ``"<head>/mask"`` for a
                segmentation head's mask, ``"<head>/visualization"`` for each picture.

        Returns:
            ``{"file", "width", "height", "transform", "heads": {name: head record}, "pictures"}``
            (``pictures``: ``{head: file}``, when pictures were written).
        """
        files = dict(files or {})
        heads: dict[str, Any] = {}
        for name, result in self.heads.items():
            if isinstance(result, SegmentationResult):
                heads[name] = result.to_dict(files.get(f"{name}/mask"))
            else:
                heads[name] = result.to_dict()
        record: dict[str, Any] = {
            "file": None if self.file is None else str(self.file),
            "width": self.width,
            "height": self.height,
            "transform": self.transform,
            "heads": heads,
        }
        pictures = {name: files[f"{name}/visualization"] for name in self.heads if f"{name}/visualization" in files}
        if pictures:
            record["pictures"] = pictures
        return record

    def to_json(self, files: Mapping[str, str] | None = None, **dumps: Any) -> str:
        """:meth:`to_dict` as JSON (keyword arguments go to ``json.dumps``, e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(files), **dumps)

    def draw(self) -> dict[str, Image.Image]:
        """Every head's picture, drawn by its visualizer on the original image at its own resolution.

        (The detection visualizer enlarges images whose shorter side is under 256 pixels, so
        that labels stay readable.)

        Raises:
            DataError: the prediction holds no image (made with ``keep_images=False``).
        """
        if self.image is None:
            raise DataError(f"ImagePrediction of {self.file or 'an image'}: no image kept to draw on")
        array = self.image.permute(1, 2, 0).numpy()  # [H, W, 3] float in [0, 1]
        return {name: result.draw(array) for name, result in self.heads.items()}
