"""The user's own images: one folder per class, or images with per-pixel class masks."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
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
    normalize_image_size,
    open_image,
    orientation_note,
    read_image,
    readable_rows,
    verify_image,
)
from brickzoo.errors import DataError, DataWarning

MASK_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".png", ".tif", ".tiff")
"""Lossless formats accepted for masks (a JPEG would change the class indices)."""

_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")

_RARE_CLASS_FRACTION = 0.001
"""With ``num_classes`` inferred, a class value held by fewer than this fraction of the masks is warned about."""


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class ImageFolderDataset(NamedDataset):
    """Classification images stored one folder per class: ``root/<class name>/<image>``.

    Class folders sorted by name give the class indices, unless ``class_names`` sets them
    (then only those folders are read, in that order). Images are found recursively inside each
    class folder by extension (:data:`IMAGE_EXTENSIONS`, any case); hidden files are skipped.

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1] (RGB, resized
    bilinearly to ``image_size`` when given) and ``labels (Tensor[])`` int64. Images are read as
    :func:`~brickzoo.data.load_image` reads them: EXIF orientation applied, alpha dropped,
    16-bit grey scaled by 65535.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: output size, an int or ``(height, width)``; None keeps each file's size
            (then only images of one size can be batched together).
        class_names: the classes to read and their order; default: every sub-folder, sorted.
        verify: read every file's header at construction, so an unreadable file fails at once
            rather than during training.
        skip_unreadable: decode every file at construction and leave out those that cannot be
            decoded, with a :class:`~brickzoo.errors.DataWarning` counting them and naming the
            first (default: fail when one is read).

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
        skip_unreadable: bool = False,
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
        if skip_unreadable:
            kept = readable_rows([[path] for path, _ in self.samples], owner, repr(str(self.root)))
            self.samples = [self.samples[row] for row in kept]
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
            "images": read_image(path, self.image_size, "ImageFolderDataset"),
            "labels": torch.tensor(label, dtype=torch.int64),
        }


class SegmentationFolderDataset(NamedDataset):
    """Images with per-pixel class masks, matched by file stem: ``image_dir/a.jpg`` with ``mask_dir/a.png``.

    A mask is a single-channel lossless image (:data:`MASK_EXTENSIONS`; modes 1, L, P, I, I;16)
    whose pixel values are class indices: 0 background, ``1 .. num_classes - 1`` objects and
    255 ignore (palette PNGs as in Pascal VOC give their palette indices). Images and masks are
    both turned by their EXIF orientation (as :func:`~brickzoo.data.load_image` reads images),
    so a mask drawn on the displayed photo stays aligned with it. Images are resized bilinearly
    and masks with nearest neighbour. Masks without an image are not read.

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1] and
    ``masks (Tensor[H, W])`` int64.

    Args:
        image_dir: folder of images (not recursive).
        mask_dir: folder of masks.
        image_size: output size, an int or ``(height, width)``; None keeps each file's size.
        num_classes: classes including background; every mask is checked against it when read.
            None reads every mask once at construction and takes the largest index + 1; then a
            :class:`~brickzoo.errors.DataWarning` names every class value in that range held by
            fewer than 0.1% of the masks (a stray value such as an anti-aliased 254, or a gap
            in the class indices), since each becomes a class the model must predict.
        class_names: optional names, ``num_classes`` of them (default "background", "class_1", ...).
        ignore_index: the mask value that marks pixels to ignore.
        skip_unreadable: decode every image and mask at construction and leave out the pairs
            where one cannot be decoded, with a :class:`~brickzoo.errors.DataWarning` counting
            them and naming the first (default: fail when one is read).

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
        skip_unreadable: bool = False,
    ) -> None:
        owner = "SegmentationFolderDataset"
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir)
        self.image_size = normalize_image_size(image_size, owner)
        self.ignore_index = int(ignore_index)
        self.pairs: list[tuple[Path, Path]] = _pair_files(self.image_dir, self.mask_dir, owner)
        if skip_unreadable:
            self.pairs = [self.pairs[row] for row in readable_rows(self.pairs, owner, repr(str(self.image_dir)))]
        if num_classes is None:
            num_classes = self._infer_num_classes(class_names)
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

    def _infer_num_classes(self, class_names: Sequence[str] | None) -> int:
        """Largest mask value + 1 (at least ``len(class_names)``); warns about rare values when nothing was named."""
        presence: Counter[int] = Counter()  # class value -> number of masks holding it
        examples: dict[int, list[str]] = {}  # class value -> the first few masks holding it
        for _, mask_path in self.pairs:
            values = np.unique(self._read_mask(mask_path))
            for value in values[(values != self.ignore_index) & (values >= 0)].tolist():
                presence[value] += 1
                if len(examples.setdefault(value, [])) < 3:
                    examples[value].append(str(mask_path))
        largest = max(presence, default=0)
        if class_names is not None:
            return max(largest + 1, len(class_names))
        rare = rare_classes(presence, len(self.pairs), largest + 1, self.ignore_index)
        if rare:
            warnings.warn(self._rare_message(rare, examples, largest), DataWarning, stacklevel=3)
        return largest + 1

    def _rare_message(self, rare: list[tuple[int, int]], examples: Mapping[int, list[str]], largest: int) -> str:
        absent = [value for value, count in rare if count == 0]
        held = [(value, count) for value, count in rare if count > 0]
        parts = [f"no mask holds class value(s) {_ranges(absent)}"] if absent else []
        parts += [f"{value} is in {count} mask(s) (e.g. {_preview(examples[value], 2)})" for value, count in held[:10]]
        if len(held) > 10:
            parts.append(f"and {len(held) - 10} more rare values")
        return (
            f"SegmentationFolderDataset: num_classes was inferred as {largest + 1} from the largest mask value "
            f"{largest} in {str(self.mask_dir)!r}, but {len(rare)} class value(s) in [0, {largest}] appear in fewer "
            f"than {_RARE_CLASS_FRACTION:.1%} of the {len(self.pairs)} masks: {'; '.join(parts)}. Such a value is "
            "usually a stray (anti-aliased or smoothed mask edges) or a gap in the class indices, and each becomes a "
            "class the model must learn. Pass num_classes=<classes including background> to check every mask "
            f"against it, and ignore_index=<value> (now {self.ignore_index}) for a value that marks pixels to ignore"
        )

    def _read_mask(self, path: Path) -> np.ndarray:
        """The mask's class indices ``[H, W]`` (not resized, EXIF-turned); DataError if it is not single-channel."""
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
                f"{orientation_note(image_path, owner)}{orientation_note(mask_path, owner)}"
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
        source = f"{owner}: image file {str(image_path)!r}"
        return {"images": image_to_tensor(image, self.image_size, source), "masks": torch.from_numpy(values)}


def rare_classes(
    presence: Mapping[int, int], num_masks: int, num_classes: int, ignore_index: int
) -> list[tuple[int, int]]:
    """The class values in ``[0, num_classes)`` held by fewer than 0.1% of ``num_masks`` masks.

    Args:
        presence: class value -> number of masks holding it.
        num_masks: number of masks read.
        num_classes: the classes to check, ``0 .. num_classes - 1``.
        ignore_index: a value never reported.

    Returns:
        ``(class value, number of masks holding it)`` in increasing value order.
    """
    counts = ((value, presence.get(value, 0)) for value in range(num_classes) if value != ignore_index)
    return [(value, count) for value, count in counts if count < _RARE_CLASS_FRACTION * num_masks]


def _ranges(values: Sequence[int]) -> str:
    """Sorted ints as runs: ``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _pair_files(image_dir: Path, mask_dir: Path, owner: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs matched by stem, in image name order; DataError naming what does not fit."""
    images = list_images(image_dir, owner)
    if not images:
        raise DataError(
            f"{owner}: image folder {str(image_dir)!r} holds no images "
            f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
        )
    image_by_stem = _by_stem(images, owner, "image")
    mask_by_stem = _by_stem(list_images(mask_dir, owner), owner, "mask")
    unmatched = [path.name for stem, path in image_by_stem.items() if stem not in mask_by_stem]
    if unmatched:
        raise DataError(
            f"{owner}: {len(unmatched)} image(s) in {str(image_dir)!r} have no mask with the same stem in "
            f"{str(mask_dir)!r}: {_preview(unmatched)}; expected e.g. {Path(unmatched[0]).stem}.png"
        )
    pairs = [(path, mask_by_stem[stem]) for stem, path in image_by_stem.items()]
    lossy = [mask.name for _, mask in pairs if mask.suffix.lower() not in MASK_EXTENSIONS]
    if lossy:
        raise DataError(
            f"{owner}: masks must be stored losslessly ({', '.join(MASK_EXTENSIONS)}), but got {_preview(lossy)} "
            f"in {str(mask_dir)!r}; lossy compression changes class indices"
        )
    return pairs


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
            f"SegmentationFolderDataset: mask {str(path)!r} has mode {mask.mode} "
            f"({len(mask.getbands())} channels); expected a single-channel image of class indices "
            f"(mode {', '.join(_MASK_MODES)})"
        )
    return np.asarray(mask).astype(np.int64)
