"""Predictions on images of any size, as data in the pixels of the original image.

:func:`predict` (or a :class:`Predictor` built once and called many times) reads images (files,
pillow images or tensors) as brickzoo's datasets read them, brings each to the model's input
size the way the model was evaluated (``letterbox``: aspect ratio kept, padded; or ``stretch``),
runs the model's heads and maps every result back to the original image, in the spirit of
Ultralytics' ``Results``:

- classification: the class name, index and probability, and the ``top_k`` best;
- detection: boxes ``[x1, y1, x2, y2]`` in the original image's pixels (letterbox scale and
  padding undone, or the stretch), with class names and scores; padding rows are dropped;
- segmentation: a mask of class indices at the original size, and pixels per class.

Each :class:`ImagePrediction` carries ``file``, ``width`` and ``height`` (``orig_shape``),
serialises with :meth:`ImagePrediction.to_json`, and draws every head's picture on the original
image at its own resolution with :meth:`ImagePrediction.draw`. :class:`PredictionWriter` writes
what ``brickzoo predict`` writes: one JSON Lines file, mask PNGs and pictures, all or nothing.

Example:
    >>> from brickzoo.predict import predict
    >>> from brickzoo.zoo import build_recipe
    >>> recipe = build_recipe("shapes_multitask")  # doctest: +SKIP
    >>> results = predict(recipe, ["photo.jpg"])  # doctest: +SKIP
    >>> results[0].heads["detect"].boxes  # Tensor[K, 4] in the pixels of photo.jpg  # doctest: +SKIP
"""

from __future__ import annotations

from brickzoo._predict_files import MASK_SUFFIX, PREDICTIONS_FILE, PredictionWriter, mask_image
from brickzoo._predict_heads import HeadSpec, find_heads
from brickzoo._predict_results import (
    ClassificationResult,
    DetectionResult,
    HeadResult,
    ImagePrediction,
    SegmentationResult,
)
from brickzoo._predict_run import RESIZE_MODES, ImageInput, Predictor, predict

__all__ = [
    "MASK_SUFFIX",
    "PREDICTIONS_FILE",
    "RESIZE_MODES",
    "ClassificationResult",
    "DetectionResult",
    "HeadResult",
    "HeadSpec",
    "ImageInput",
    "ImagePrediction",
    "PredictionWriter",
    "Predictor",
    "SegmentationResult",
    "find_heads",
    "mask_image",
    "predict",
]
