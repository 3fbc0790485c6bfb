"""What the datasets share: the base class, image sizes and reading image files as they are displayed.

Every image brickzoo reads goes through :func:`open_image` and :func:`image_to_tensor` (or the
public :func:`load_image`, which chains them), so the datasets and ``brickzoo predict`` see the
same pixels:

- **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a phone photo stored
  sideways with orientation 6 is read upright, as image viewers show it. Masks are turned the
  same way, so a mask stays aligned with its image.
- **8-bit modes** (``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``...)
  become RGB with Pillow's ``convert``; grey levels are repeated on the three channels and
  ``CMYK`` uses ``R = (255 - C) * (255 - K) / 255``. **Alpha is dropped**: a transparent pixel
  keeps the colour stored under it, as ``torchvision.io.decode_image(mode=ImageReadMode.RGB)``
  and torchvision's ``ImageFolder`` loader do, so a model sees what it would see in torchvision.
- **16-bit grey** (modes ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; this Pillow opens a 16-bit
  grey PNG or TIFF as ``I;16``) is divided by 65535, not clipped to white. Mode ``I`` (32-bit
  signed integers) is what older Pillow versions give for 16-bit PNGs and what this one gives
  for 16-bit PGM files (scaled to 0..65535 by Pillow), so ``I`` is also divided by 65535, but
  only when the file does not declare more than 16 bits per sample and every value lies in
  ``[0, 65535]``; a 32-bit integer image has no known range and is refused with a DataError.
  16-bit colour PNGs are reduced to 8 bits per channel by Pillow itself (the high byte is kept).
- **32-bit float grey** (mode ``F``) is taken as is when every value is finite and in [0, 1],
  and refused with a DataError otherwise (its intended range cannot be known).

Resizing is bilinear (Pillow's, which smooths when shrinking), on 8-bit RGB for 8-bit files and
on float32 for 16-bit and float files, so no precision is lost before the resize.
"""

from __future__ import annotations

import numbers
import struct
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torch.utils.data import Dataset

from brickzoo.errors import DataError, DataWarning

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File extensions (lower case) the folder datasets read as images."""

ImageSize = int | tuple[int, int]
"""An output image size: one int for square images, or ``(height, width)``."""

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_SIXTEEN_BIT_MAX = 65535.0
_TIFF_BITS_PER_SAMPLE = 258
_BITS_KEY = "brickzoo_bits_per_sample"  # open_image notes a TIFF's declared depth in ``info`` (the copy loses tags)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees
_SHOWN_UNREADABLE = 5  # unreadable files named in the warning of skip_unreadable


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


def _is_int(value: object) -> TypeGuard[int]:
    """An int or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_image_size(image_size: ImageSize | Sequence[int] | None, owner: str) -> tuple[int, int] | None:
    """``image_size`` as ``(height, width)``, or None to keep each file's own size."""
    if image_size is None:
        return None
    if _is_int(image_size):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, Sequence) and len(image_size) == 2 and all(_is_int(v) for v in image_size):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(f"{owner}: image_size must be an int or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise DataError(f"{owner}: image_size must be positive, got {image_size!r}")
    return size


class ImageHeader(NamedTuple):
    """What an image file's header says, read without decoding the pixels.

    Attributes:
        width: width of the image as displayed (after its EXIF orientation).
        height: height of the image as displayed.
        orientation: the EXIF orientation (1 when absent; 5 to 8 swap width and height).
    """

    width: int
    height: int
    orientation: int


def _read_error(path: Path, owner: str, error: BaseException, header_only: bool = False) -> DataError:
    """The DataError for a file that could not be opened (``header_only``) or decoded."""
    if isinstance(error, FileNotFoundError):
        return DataError(f"{owner}: image file {str(path)!r} does not exist (expected a readable image)")
    if isinstance(error, IsADirectoryError):
        return DataError(f"{owner}: {str(path)!r} is a folder; expected an image file")
    if isinstance(error, PermissionError):
        return DataError(f"{owner}: image file {str(path)!r} cannot be read: permission denied")
    if header_only:
        return DataError(f"{owner}: image file {str(path)!r} is not a readable image ({type(error).__name__}: {error})")
    return DataError(
        f"{owner}: could not decode image file {str(path)!r} ({type(error).__name__}: {error}); "
        f"expected an image in one of the formats {', '.join(IMAGE_EXTENSIONS)}"
    )


def open_image(path: Path, owner: str) -> Image.Image:
    """Open and fully decode an image file, turned as displayed (EXIF orientation applied).

    The mode is kept (a palette mask keeps its indices). DataError naming the file when it
    cannot be read.
    """
    try:
        with Image.open(path) as image:
            turned = ImageOps.exif_transpose(image)  # decodes; a copy when there is no orientation
            declared = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE)
    except _DECODE_ERRORS as error:
        raise _read_error(path, owner, error) from error
    if declared is not None:
        turned.info[_BITS_KEY] = max(declared) if isinstance(declared, tuple) else int(declared)
    return turned


def read_header(path: Path, owner: str) -> ImageHeader:
    """The displayed size and EXIF orientation of an image file, without decoding its pixels.

    Raises:
        DataError: the file is missing or not a readable image; the message names it.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except _DECODE_ERRORS as error:
        raise _read_error(path, owner, error, header_only=True) from error
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(width, height, orientation)


def verify_image(path: Path, owner: str) -> tuple[int, int]:
    """Read only the header of an image file; return its displayed ``(width, height)`` or raise DataError naming it."""
    header = read_header(path, owner)
    return header.width, header.height


def orientation_note(path: Path, owner: str) -> str:
    """A sentence for size-mismatch errors when ``path`` carries an EXIF orientation, else ""."""
    try:
        header = read_header(path, owner)
    except DataError:
        return ""
    if header.orientation == 1:
        return ""
    return (
        f" ({str(path)!r} has EXIF orientation {header.orientation}: brickzoo reads it as displayed, "
        f"{header.width}x{header.height}; its stored pixels are turned)"
    )


def _grey_levels(image: Image.Image, source: str) -> np.ndarray:
    """Grey levels ``[H, W]`` float32 in [0, 1] of a 16-bit integer or 32-bit float image."""
    values = np.asarray(image)  # [H, W] uint16 (any byte order), int32 or float32
    if image.mode == "F":
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not np.isfinite(values).all() or low < 0.0 or high > 1.0:
            raise DataError(
                f"{source}: 32-bit float image (mode F) holds values in [{low}, {high}]; expected finite values "
                "in [0, 1], the only range brickzoo can read a float image in; scale it to [0, 1] or save it as 8- "
                "or 16-bit"
            )
        return values.astype(np.float32)
    if image.mode == "I":
        bits = image.info.get(_BITS_KEY)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if (isinstance(bits, int) and bits > 16) or low < 0 or high > _SIXTEEN_BIT_MAX:
            raise DataError(
                f"{source}: 32-bit integer image (mode I, {bits or 'undeclared'} bits per sample) holds values in "
                f"[{low}, {high}]; expected a 16-bit image (values in [0, 65535]), since the range of 32-bit "
                "integers is unknown; save it as 8- or 16-bit"
            )
    return values.astype(np.float32) / np.float32(_SIXTEEN_BIT_MAX)


def _rgb(image: Image.Image, source: str) -> Image.Image:
    """An 8-bit image converted to RGB; alpha is dropped (the colour under it is kept)."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # the palette's colours; avoids Pillow's warning on palette transparency
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise DataError(
            f"{source}: image mode {image.mode} cannot be converted to RGB ({error}); expected an RGB, grey, "
            "palette, CMYK or 16-bit grey image"
        ) from error


def image_to_tensor(image: Image.Image, size: tuple[int, int] | None, source: str = "image") -> torch.Tensor:
    """An RGB float image ``[3, H, W]`` in [0, 1], resized (bilinear) to ``size = (H, W)`` if given.

    Args:
        image: an image as :func:`open_image` gives it (any mode listed in the module docstring).
        size: output ``(height, width)``; None keeps the image's size.
        source: what the image is, for error messages (e.g. "ImageFolderDataset: image file 'a.png'").

    Raises:
        DataError: a mode that cannot become RGB, a float image outside [0, 1] or a 32-bit integer image.
    """
    if image.mode == "F" or image.mode == "I" or image.mode in _SIXTEEN_BIT_MODES:
        plane = Image.fromarray(_grey_levels(image, source))  # mode F, [H, W]
        if size is not None and (plane.height, plane.width) != size:
            plane = plane.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        grey = torch.from_numpy(np.asarray(plane, dtype=np.float32).copy())  # [H, W]
        return grey.clamp_(0.0, 1.0).expand(3, *grey.shape).contiguous()  # [3, H, W]
    rgb = _rgb(image, source)
    if size is not None and (rgb.height, rgb.width) != size:
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)  # [3, H, W]


def resize_boxes(boxes: np.ndarray, width: int, height: int, size: tuple[int, int] | None) -> np.ndarray:
    """Boxes ``[M, 4]`` xyxy in the pixels of a ``width x height`` image, in those of ``size = (H, W)`` if given.

    The same stretch as :func:`image_to_tensor` applies to the image; a new array, the input untouched.
    """
    if size is None:
        return boxes.copy()
    out_h, out_w = size
    return boxes * np.array([out_w / width, out_h / height, out_w / width, out_h / height], dtype=np.float32)


def read_image(path: Path, size: tuple[int, int] | None, owner: str) -> torch.Tensor:
    """Read an image file as displayed, float ``[3, H, W]`` in [0, 1]; DataError naming the file when it fails."""
    return image_to_tensor(open_image(path, owner), size, f"{owner}: image file {str(path)!r}")


def load_image(path: str | Path, image_size: int | Sequence[int] | None = None) -> torch.Tensor:
    """Read one image file as it is displayed: ``Tensor[3, H, W]`` float32 RGB in [0, 1].

    This is how every brickzoo dataset reads images: EXIF orientation applied, alpha dropped,
    palette, grey, CMYK and 16-bit grey files converted by their real range (the rules are in
    the docstring of ``brickzoo.data._common``).

    Args:
        path: the image file.
        image_size: output size, an int or ``(height, width)`` (any sequence of two ints, e.g.
            a ``torch.Size``), resized bilinearly (aspect ratio not kept); None keeps the
            displayed size.

    Returns:
        The image, ``[3, H, W]`` float32 in [0, 1].

    Raises:
        DataError: the file does not exist, is a folder, cannot be read or decoded, or holds
            values whose range cannot be known (32-bit integers, floats outside [0, 1]); the
            message names the file.

    Example:
        >>> from brickzoo.data import load_image
        >>> load_image("photo.jpg", image_size=224).shape  # doctest: +SKIP
        torch.Size([3, 224, 224])
    """
    path = Path(path)
    return read_image(path, normalize_image_size(image_size, f"load_image({str(path)!r})"), "load_image")


def list_images(folder: Path, owner: str) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, case-insensitive), sorted by name."""
    if not folder.is_dir():
        raise DataError(f"{owner}: expected a folder of images at {str(folder)!r}, but it is not a directory")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be decoded as an image (``"OSError: image file is truncated"``), or None if it can.

    Every byte of the file is decoded (JPEGs at 1/8 scale, which still reads all their data), so
    a truncated or corrupt file is found; this costs about a quarter of reading the image.
    """
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))  # JPEG only
            image.load()
    except _DECODE_ERRORS as error:
        return f"{type(error).__name__}: {error}"
    return None


def readable_rows(paths: Sequence[Sequence[Path]], owner: str, where: str) -> list[int]:
    """Indices of the rows whose files all decode; one DataWarning counts and names the others.

    For the ``skip_unreadable=True`` option of the datasets: each row holds the files of one
    sample (an image, or an image and its mask), decoded with :func:`decode_error`.

    Args:
        paths: per sample, the files it reads.
        owner: the dataset class, for messages.
        where: the folder or annotation file the samples come from, for messages.

    Raises:
        DataError: no row is readable (nothing would be left to train on).
    """
    kept: list[int] = []
    skipped: list[str] = []
    for row, files in enumerate(paths):
        errors = [f"{str(path)!r} ({error})" for path in files if (error := decode_error(path)) is not None]
        if errors:
            skipped.append(errors[0])
        else:
            kept.append(row)
    if not kept and paths:
        raise DataError(f"{owner}: none of the {len(paths)} images in {where} can be decoded, e.g. {skipped[0]}")
    if skipped:
        shown = "; ".join(skipped[:_SHOWN_UNREADABLE])
        more = f"; and {len(skipped) - _SHOWN_UNREADABLE} more" if len(skipped) > _SHOWN_UNREADABLE else ""
        warnings.warn(
            f"{owner}: skipped {len(skipped)} of the {len(paths)} samples in {where} because a file cannot be decoded "
            f"(skip_unreadable=True; re-save or remove these files): {shown}{more}",
            DataWarning,
            stacklevel=3,
        )
    return kept
