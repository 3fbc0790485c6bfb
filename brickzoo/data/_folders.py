"""The user's own images: one folder per class, or images with per-pixel class masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from brickzoo.data._common import (
    IMAGE_EXTENSIONS,
    ImageSize,
    NamedDataset,
    check_index,
    image_to_tensor,
    list_images,
    load_image,
    normalize_image_size,
    open_image,
    verify_image,
)
from brickzoo.errors import DataError

MASK_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".png", ".tif", ".tiff")
"""Lossless formats accepted for masks (a JPEG would change the class indices)."""

_MASK_MODES = ("1", "L", "P", "I", "I;16")


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class ImageFolderDataset(NamedDataset):
    """Classification images stored one folder per class: ``root/<class name>/<image>``.

    Class folders sorted by name give the class indices, unless ``class_names`` sets them
    (then only those folders are read, in that order). Images are found recursively inside each
    class folder by extension (:data:`IMAGE_EXTENSIONS`, any case); hidden files are skipped.

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1] (RGB, resized
    bilinearly to ``image_size`` when given) and ``labels (Tensor[])`` int64.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: output size, an int or ``(height, width)``; None keeps each file's size
            (then only images of one size can be batched together).
        class_names: the classes to read and their order; default: every sub-folder, sorted.
        verify: read every file's header at construction, so an unreadable file fails at once
            rather than during training.

    Raises:
        DataError: ``root`` is not a folder, has no class folders, a class folder is missing
            or holds no images, or (with ``verify``) a file is not a readable image. Reading a
            corrupt file in ``__getitem__`` raises DataError naming it.

    Example:
        >>> from brickzoo.data import ImageFolderDataset
        >>> dataset = ImageFolderDataset("photos", image_size=64)  # doctest: +SKIP
        >>> dataset.class_names, dataset[0]["images"].shape  # doctest: +SKIP
        (['cat', 'dog'], torch.Size([3, 64, 64]))
    """

    def __init__(
        self,
        root: str | Path,
        image_size: ImageSize | None = None,
        class_names: Sequence[str] | None = None,
        verify: bool = False,
    ) -> None:
        owner = "ImageFolderDataset"
        self.root = Path(root)
        self.image_size = normalize_image_size(image_size, owner)
        if not self.root.is_dir():
            raise DataError(f"{owner}: expected a folder with one sub-folder per class at {str(self.root)!r}")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if class_names is None:
            if not folders:
                raise DataError(
                    f"{owner}: {str(self.root)!r} holds no class folders; expected root/<class name>/<image files>"
                )
            names = folders
        else:
            names = list(class_names)
            missing = [n for n in names if n not in folders]
            if missing or len(set(names)) != len(names):
                raise DataError(
                    f"{owner}: class_names must be distinct sub-folders of {str(self.root)!r}; "
                    f"missing folders {missing}, got class_names {names}, found folders {folders}"
                )
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(names):
            folder = self.root / name
            files = sorted(
                p
                for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )
            if not files:
                raise DataError(
                    f"{owner}: class folder {str(folder)!r} holds no images; expected files ending in "
                    f"{', '.join(IMAGE_EXTENSIONS)}"
                )
            self.samples += [(path, label) for path in files]
        if verify:
            for path, _ in self.samples:
                verify_image(path, owner)
        self.class_names = names
        self.num_classes = len(names)
        self.tasks = {"classification": list(names)}

    @property
    def labels(self) -> torch.Tensor:
        """Labels of every sample ``[N]`` int64, without reading images."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[check_index(self, index)]
        return {
            "images": load_image(path, self.image_size, "ImageFolderDataset"),
            "labels": torch.tensor(label, dtype=torch.int64),
        }


class SegmentationFolderDataset(NamedDataset):
    """Images with per-pixel class masks, matched by file stem: ``image_dir/a.jpg`` with ``mask_dir/a.png``.

    A mask is a single-channel lossless image (:data:`MASK_EXTENSIONS`; modes L, P, I, I;16)
    whose pixel values are class indices: 0 background, ``1 .. num_classes - 1`` objects and
    255 ignore (palette PNGs as in Pascal VOC give their palette indices). Images are resized
    bilinearly and masks with nearest neighbour. Masks without an image are not read.

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1] and
    ``masks (Tensor[H, W])`` int64.

    Args:
        image_dir: folder of images (not recursive).
        mask_dir: folder of masks.
        image_size: output size, an int or ``(height, width)``; None keeps each file's size.
        num_classes: classes including background; every mask is checked against it when read.
            None reads every mask once at construction and takes the largest index + 1.
        class_names: optional names, ``num_classes`` of them (default "background", "class_1", ...).
        ignore_index: the mask value that marks pixels to ignore.

    Raises:
        DataError: a folder is missing or empty, two files share a stem, an image has no mask,
            a mask is lossy (JPEG) or not single-channel, a mask's size differs from its image's,
            or a mask holds a value outside ``[0, num_classes)`` other than ``ignore_index``.
            The message names the file.

    Example:
        >>> from brickzoo.data import SegmentationFolderDataset
        >>> dataset = SegmentationFolderDataset("images", "masks", image_size=128, num_classes=3)  # doctest: +SKIP
        >>> dataset[0]["masks"].shape  # doctest: +SKIP
        torch.Size([128, 128])
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        image_size: ImageSize | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
    ) -> None:
        owner = "SegmentationFolderDataset"
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir)
        self.image_size = normalize_image_size(image_size, owner)
        self.ignore_index = int(ignore_index)
        images = list_images(self.image_dir, owner)
        if not images:
            raise DataError(
                f"{owner}: image folder {str(self.image_dir)!r} holds no images "
                f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        masks = list_images(self.mask_dir, owner)
        image_by_stem = _by_stem(images, owner, "image")
        mask_by_stem = _by_stem(masks, owner, "mask")
        unmatched = [path.name for stem, path in image_by_stem.items() if stem not in mask_by_stem]
        if unmatched:
            raise DataError(
                f"{owner}: {len(unmatched)} image(s) in {str(self.image_dir)!r} have no mask with the same stem in "
                f"{str(self.mask_dir)!r}: {_preview(unmatched)}; expected e.g. {Path(unmatched[0]).stem}.png"
            )
        self.pairs: list[tuple[Path, Path]] = [(path, mask_by_stem[stem]) for stem, path in image_by_stem.items()]
        lossy = [mask.name for _, mask in self.pairs if mask.suffix.lower() not in MASK_EXTENSIONS]
        if lossy:
            raise DataError(
                f"{owner}: masks must be stored losslessly ({', '.join(MASK_EXTENSIONS)}), but got {_preview(lossy)} "
                f"in {str(self.mask_dir)!r}; lossy compression changes class indices"
            )
        if num_classes is None:
            largest = 0
            for _, mask_path in self.pairs:
                values = np.unique(self._read_mask(mask_path))
                values = values[values != self.ignore_index]
                largest = max(largest, int(values.max(initial=0)))
            num_classes = largest + 1 if class_names is None else max(largest + 1, len(class_names))
        if num_classes < 1:
            raise DataError(f"{owner}: num_classes must be at least 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise DataError(f"{owner}: got {len(class_names)} class_names for num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.class_names = (
            list(class_names)
            if class_names is not None
            else ["background", *(f"class_{i}" for i in range(1, self.num_classes))]
        )
        self.tasks = {"segmentation": list(self.class_names)}

    def _read_mask(self, path: Path) -> np.ndarray:
        """The mask's class indices ``[H, W]`` (not resized); DataError if it is not single-channel."""
        return _mask_array(open_image(path, "SegmentationFolderDataset"), path)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        owner = "SegmentationFolderDataset"
        image_path, mask_path = self.pairs[check_index(self, index)]
        image = open_image(image_path, owner)
        mask = open_image(mask_path, owner)
        _mask_array(mask, mask_path)  # checks the mode
        if mask.size != image.size:
            raise DataError(
                f"{owner}: mask {str(mask_path)!r} is {mask.width}x{mask.height} (WxH) but its image "
                f"{str(image_path)!r} is {image.width}x{image.height}; expected the same size"
            )
        if self.image_size is not None and (mask.height, mask.width) != self.image_size:
            mask = mask.resize((self.image_size[1], self.image_size[0]), Image.Resampling.NEAREST)
        values = _mask_array(mask, mask_path)  # [H, W]
        bad = ((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)
        if bad.any():
            found = sorted({int(v) for v in np.unique(values[bad])})
            raise DataError(
                f"{owner}: mask {str(mask_path)!r} holds values {found[:10]} outside [0, {self.num_classes - 1}] "
                f"(num_classes={self.num_classes}) that are not the ignore index {self.ignore_index}"
            )
        return {"images": image_to_tensor(image, self.image_size), "masks": torch.from_numpy(values)}


def _by_stem(paths: list[Path], owner: str, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            raise DataError(
                f"{owner}: two {what} files share the stem {path.stem!r}: {str(found[path.stem])!r} and "
                f"{str(path)!r}; expected one {what} per stem"
            )
        found[path.stem] = path
    return found


def _mask_array(mask: Image.Image, path: Path) -> np.ndarray:
    """Class indices ``[H, W]`` int64 of a single-channel mask image."""
    if mask.mode not in _MASK_MODES:
        raise DataError(
            f"SegmentationFolderDataset: mask {str(path)!r} has mode {mask.mode} ({len(mask.getbands())} channels); "
            f"expected a single-channel image of class indices (mode {', '.join(_MASK_MODES)})"
        )
    return np.asarray(mask).astype(np.int64)
