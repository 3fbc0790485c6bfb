"""Writing predictions to a folder, all or nothing: one JSON Lines file, mask PNGs and pictures."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TextIO

import numpy as np
import torch
from PIL import Image

from brickzoo._draw import palette
from brickzoo._predict_results import ImagePrediction, SegmentationResult
from brickzoo.errors import OutputError

PREDICTIONS_FILE = "predictions.jsonl"
"""The JSON Lines file of a run: one :meth:`ImagePrediction.to_dict` record per image, in input order."""

MASK_SUFFIX = "mask"
"""Mask PNGs are named ``<image>_<head>_mask.png``; pictures ``<image>_<head>_visualization.png``."""

_STAGING_PREFIX = ".brickzoo-predict-"
_PALETTE_SIZE = 256


def mask_image(mask: torch.Tensor, num_classes: int) -> Image.Image:
    """A mask of class indices as a PNG-ready pillow image whose pixel values are the class indices.

    Up to 256 classes: mode ``P`` (one byte per pixel, values = class indices) with a palette for
    viewers: class 0 (background) black, class ``k`` the colour the segmentation visualizer
    gives it, 255 white. More classes: mode ``I;16`` (16-bit grey, values = class indices).

    Args:
        mask: ``Tensor[H, W]`` integer class indices in ``[0, num_classes)``.
        num_classes: number of classes of the head (background included).

    Returns:
        A ``W x H`` pillow image; ``np.asarray(Image.open(saved))`` gives the class indices back.

    Example:
        >>> import numpy as np, torch
        >>> image = mask_image(torch.tensor([[0, 1], [2, 1]]), num_classes=3)
        >>> image.mode, np.asarray(image).tolist()
        ('P', [[0, 1], [2, 1]])
    """
    values = mask.detach().cpu().numpy()  # [H, W]
    if num_classes > _PALETTE_SIZE:
        return Image.fromarray(values.astype(np.uint16))  # mode I;16
    image = Image.fromarray(values.astype(np.uint8))  # mode L, becomes P with the palette
    colours = [(0, 0, 0), *palette(num_classes)[1:]]
    table = colours + [(0, 0, 0)] * (_PALETTE_SIZE - 1 - len(colours)) + [(255, 255, 255)]
    image.putpalette([channel for colour in table for channel in colour])
    return image


class PredictionWriter:
    """Writes predictions into a folder as ``brickzoo predict`` does, leaving nothing half-written.

    Inside ``folder``: :data:`PREDICTIONS_FILE` with one JSON record per image (in the order
    written), and per image ``<name>_<head>_mask.png`` for each segmentation head (see
    :func:`mask_image`) and ``<name>_<head>_visualization.png`` for each head's picture (drawn on
    the original image). The record names these files (``heads.<head>.mask``, ``pictures``).

    Everything is written to a hidden staging folder inside ``folder`` first and moved into
    place when the ``with`` block ends without an error; when it ends with one, the staging
    folder is removed and ``folder`` is left as it was (removed again if the writer created it).
    Files of an earlier run with the same names are replaced.

    Args:
        folder: the output folder (created if needed).
        pictures: write each head's picture.
        masks: write each segmentation head's mask PNG.

    Attributes:
        written: the final paths of the files written (set when the block ends).

    Example:
        >>> from brickzoo.predict import PredictionWriter, predict
        >>> with PredictionWriter("predictions") as writer:  # doctest: +SKIP
        ...     for result in predict(recipe, ["a.jpg", "b.png"]):
        ...         writer.write(result, result.file.stem)
    """

    def __init__(self, folder: str | Path, pictures: bool = True, masks: bool = True) -> None:
        self.folder = Path(folder)
        self.pictures = pictures
        self.masks = masks
        self.written: list[Path] = []
        self._staged: list[str] = []
        self._taken: set[str] = {PREDICTIONS_FILE}
        self._staging: Path | None = None
        self._lines: TextIO | None = None
        self._created = False

    def __enter__(self) -> PredictionWriter:
        try:
            self._created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.folder))
            self._lines = (self._staging / PREDICTIONS_FILE).open("w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"predictions folder {self.folder}: cannot write there ({exc.strerror or exc})") from exc
        return self

    def _unique(self, stem: str) -> str:
        """``<stem>.png``, or ``<stem>_2.png``... when an earlier file of this run took the name."""
        name, number = f"{stem}.png", 1
        while name in self._taken:
            number += 1
            name = f"{stem}_{number}.png"
        self._taken.add(name)
        return name

    def write(self, prediction: ImagePrediction, name: str) -> dict[str, str]:
        """Stage one image's mask PNGs, pictures and JSON record.

        Returns:
            The file names written, ``{"<head>/mask" or "<head>/visualization": file}``.
        """
        if self._staging is None or self._lines is None:
            raise OutputError("PredictionWriter.write: use the writer in a with block")
        files: dict[str, str] = {}
        for head, result in prediction.heads.items():
            if self.masks and isinstance(result, SegmentationResult):
                file = self._unique(f"{name}_{head.replace('/', '_')}_{MASK_SUFFIX}")
                mask_image(result.mask, len(result.head.class_names)).save(self._staging / file)
                files[f"{head}/mask"] = file
        if self.pictures:
            for head, picture in prediction.draw().items():
                file = self._unique(f"{name}_{head.replace('/', '_')}_visualization")
                picture.save(self._staging / file)
                files[f"{head}/visualization"] = file
        self._staged += list(files.values())
        self._lines.write(json.dumps(prediction.to_dict(files)) + "\n")
        return files

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        staging, self._staging = self._staging, None
        if staging is None:
            return
        try:
            if self._lines is not None:
                self._lines.close()
            if kind is None:
                for file in [*self._staged, PREDICTIONS_FILE]:
                    os.replace(staging / file, self.folder / file)
                    self.written.append(self.folder / file)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if kind is not None and self._created:
                with contextlib.suppress(OSError):  # the folder this writer created, if nothing else is in it
                    self.folder.rmdir()
