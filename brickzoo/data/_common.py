"""What the datasets share: the base class, image sizes and reading image files with clear errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from brickzoo.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File extensions (lower case) the folder datasets read as images."""

ImageSize = int | tuple[int, int]
"""An output image size: one int for square images, or ``(height, width)``."""

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class NamedDataset(Dataset[dict[str, Any]]):
    """A dataset whose samples are dicts of named tensors (no batch dimension).

    Subclasses set ``tasks`` (task name -> the class names of that task's targets), which
    gives :meth:`num_classes_for` and :meth:`class_names_for`.
    """

    tasks: dict[str, list[str]]

    def num_classes_for(self, task: str) -> int:
        """Number of classes of ``task`` ("classification", "segmentation" or "detection")."""
        return len(self.class_names_for(task))

    def class_names_for(self, task: str) -> list[str]:
        """Class names of ``task`` in index order (segmentation includes "background" at 0)."""
        if task not in self.tasks:
            raise DataError(
                f"{type(self).__name__}: no task {task!r}; this dataset provides targets for {sorted(self.tasks)}"
            )
        return list(self.tasks[task])

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every sample in index order."""
        for index in range(len(self)):
            yield self[index]


def check_index(dataset: NamedDataset, index: int) -> int:
    """``index`` as a non-negative int; IndexError (which ends iteration) when out of range."""
    length = len(dataset)
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"{type(dataset).__name__}: index {index} out of range for {length} samples")
    return index


def normalize_image_size(image_size: ImageSize | None, owner: str) -> tuple[int, int] | None:
    """``image_size`` as ``(height, width)``, or None to keep each file's own size."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, Sequence) and len(image_size) == 2:
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(f"{owner}: image_size must be an int or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise DataError(f"{owner}: image_size must be positive, got {image_size!r}")
    return size


def open_image(path: Path, owner: str) -> Image.Image:
    """Open and fully decode an image file; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError as error:
        raise DataError(f"{owner}: image file {str(path)!r} does not exist (expected a readable image)") from error
    except _DECODE_ERRORS as error:
        raise DataError(
            f"{owner}: could not decode image file {str(path)!r} ({type(error).__name__}: {error}); "
            f"expected an image in one of the formats {', '.join(IMAGE_EXTENSIONS)}"
        ) from error


def verify_image(path: Path, owner: str) -> tuple[int, int]:
    """Read only the header of an image file; return its ``(width, height)`` or raise DataError naming it."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError as error:
        raise DataError(f"{owner}: image file {str(path)!r} does not exist (expected a readable image)") from error
    except _DECODE_ERRORS as error:
        raise DataError(
            f"{owner}: image file {str(path)!r} is not a readable image ({type(error).__name__}: {error})"
        ) from error


def image_to_tensor(image: Image.Image, size: tuple[int, int] | None) -> torch.Tensor:
    """An RGB float image ``[3, H, W]`` in [0, 1], resized (bilinear) to ``size = (H, W)`` if given."""
    image = image.convert("RGB")
    if size is not None and (image.height, image.width) != size:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)  # [3, H, W]


def load_image(path: Path, size: tuple[int, int] | None, owner: str) -> torch.Tensor:
    """Read an image file as float ``[3, H, W]`` in [0, 1]; DataError naming the file when it fails."""
    return image_to_tensor(open_image(path, owner), size)


def list_images(folder: Path, owner: str) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, case-insensitive), sorted by name."""
    if not folder.is_dir():
        raise DataError(f"{owner}: expected a folder of images at {str(folder)!r}, but it is not a directory")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
