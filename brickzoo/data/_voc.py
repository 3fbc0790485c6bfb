"""Object detection data in the Pascal VOC layout: Annotations/*.xml, JPEGImages/ and ImageSets/Main/<split>.txt."""

from __future__ import annotations

import difflib
import math
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brickzoo.data._common import (
    IMAGE_EXTENSIONS,
    ImageSize,
    NamedDataset,
    check_index,
    image_to_tensor,
    normalize_image_size,
    open_image,
    orientation_note,
    readable_rows,
    resize_boxes,
)
from brickzoo.errors import DataError, DataWarning

_OWNER = "VocDetectionDataset"
_SHOWN = 5  # objects named per kind of change in the warning

VOC_CLASS_NAMES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 Pascal VOC classes, in the usual index order."""


class VocDetectionDataset(NamedDataset):
    """Boxes from Pascal VOC XML: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<split>.txt``.

    The split file lists one image id per line. Each id's XML gives the image ``size``
    (``width``, ``height``; required) and its ``object`` elements (``name``, ``difficult``,
    ``bndbox`` with ``xmin``, ``ymin``, ``xmax``, ``ymax``). VOC coordinates are 1-based pixel
    indices, both ends included, so a box becomes ``[xmin - 1, ymin - 1, xmax, ymax]`` in
    brickzoo's pixel-edge coordinates (as detectron2 reads VOC). The image is
    ``JPEGImages/<id>`` with any image extension; it is read as displayed (EXIF orientation
    applied) and must have the XML's size.

    Every XML file is read and checked at construction. A DataError names the file (and the
    object's number) for: a file that does not parse, no ``size``, an object without ``name`` or
    ``bndbox``, a coordinate that is not a number, ``xmax < xmin`` or ``ymax < ymin``, a class
    name not in ``class_names`` (with close matches). Boxes reaching outside the image's
    ``size`` are clipped to it, counted in one :class:`~brickzoo.errors.DataWarning`
    (``strict=True`` raises instead).

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1],
    ``boxes (Tensor[M, 4])`` float32 xyxy in pixels of the returned image and
    ``box_labels (Tensor[M])`` int64.

    Args:
        root: the VOC folder (e.g. ``VOCdevkit/VOC2012``) holding ``Annotations``, ``JPEGImages``
            and ``ImageSets/Main``.
        split: the name of the id list, ``ImageSets/Main/<split>.txt`` (``train``, ``val``, ``trainval``...).
        class_names: the classes and their index order; default the 20 VOC classes.
        image_size: output size, an int or ``(height, width)`` (stretched; use a letterbox
            transform to keep the aspect ratio); None keeps each file's size.
        keep_difficult: keep objects marked ``difficult`` (as detectron2 does for training); False
            drops them (as the VOC evaluation ignores them).
        skip_unreadable: decode every image at construction and leave out those that cannot be
            decoded, with a DataWarning counting them (default: fail when one is read).
        strict: raise a DataError instead of clipping boxes with a warning.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from brickzoo.data import VocDetectionDataset
        >>> root = Path(tempfile.mkdtemp())
        >>> for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        ...     (root / folder).mkdir(parents=True)
        >>> Image.new("RGB", (64, 48)).save(root / "JPEGImages/a.jpg")
        >>> _ = (root / "ImageSets/Main/train.txt").write_text("a\\n")
        >>> _ = (root / "Annotations/a.xml").write_text(
        ...     "<annotation><size><width>64</width><height>48</height></size><object><name>dog</name>"
        ...     "<bndbox><xmin>1</xmin><ymin>11</ymin><xmax>32</xmax><ymax>40</ymax></bndbox></object></annotation>")
        >>> sample = VocDetectionDataset(root, split="train")[0]
        >>> sample["boxes"], sample["box_labels"]
        (tensor([[ 0., 10., 32., 40.]]), tensor([11]))
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_names: Sequence[str] = VOC_CLASS_NAMES,
        image_size: ImageSize | None = None,
        keep_difficult: bool = True,
        skip_unreadable: bool = False,
        strict: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = normalize_image_size(image_size, _OWNER)
        self.class_names = list(class_names)
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"{_OWNER}: class_names must be distinct names, got {self.class_names}")
        self.num_classes = len(self.class_names)
        self.tasks = {"detection": list(self.class_names)}
        self.ids = _read_ids(self.root, split)
        self.files = [_image_file(self.root, image_id) for image_id in self.ids]
        if skip_unreadable:
            kept = readable_rows([[f] for f in self.files], _OWNER, repr(str(self.root / "JPEGImages")))
            self.ids, self.files = [self.ids[i] for i in kept], [self.files[i] for i in kept]
        clipped: list[str] = []
        self.sizes: list[tuple[int, int]] = []  # (width, height) from the XML
        self._boxes: list[np.ndarray] = []  # per image [M, 4] xyxy pixel edges, clipped
        self._labels: list[np.ndarray] = []  # per image [M]
        total = 0
        for image_id in self.ids:
            size, objects = _read_annotation(self.root / "Annotations" / f"{image_id}.xml", self.class_names)
            kept_objects = [o for o in objects if keep_difficult or not o[2]]
            total += len(kept_objects)
            boxes = np.asarray([o[1] for o in kept_objects], dtype=np.float32).reshape(-1, 4)  # [M, 4]
            limits = np.array([0, 0, 0, 0], dtype=np.float32), np.array([size[0], size[1]] * 2, dtype=np.float32)
            inside = np.clip(boxes, *limits)
            clipped += [
                f"{image_id}.xml object {o[3]}"
                for o, changed in zip(kept_objects, (inside != boxes).any(1), strict=True)
                if changed
            ]
            self.sizes.append(size)
            self._boxes.append(inside)
            self._labels.append(np.asarray([o[0] for o in kept_objects], dtype=np.int64))
        self._warn(clipped, total, strict)

    def _warn(self, clipped: list[str], total: int, strict: bool) -> None:
        if not clipped:
            return
        shown = ", ".join(clipped[:_SHOWN]) + (f" and {len(clipped) - _SHOWN} more" if len(clipped) > _SHOWN else "")
        message = (
            f"{_OWNER}: {len(clipped)} of the {total} boxes of split {self.split!r} in {str(self.root)!r} reach "
            f"outside their image's size and were clipped to it ({shown})"
        )
        if strict:
            raise DataError(f"{message}; fix the annotations, or drop strict=True to clip with a warning")
        warnings.warn(f"{message}; pass strict=True to make this an error", DataWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        path = self.files[index]
        image = open_image(path, _OWNER)
        width, height = self.sizes[index]
        if image.size != (width, height):
            raise DataError(
                f"{_OWNER}: image {str(path)!r} is {image.width}x{image.height} (WxH) but "
                f"{str(self.root / 'Annotations' / (self.ids[index] + '.xml'))!r} says {width}x{height}; the boxes "
                f"would not match the pixels{orientation_note(path, _OWNER)}"
            )
        boxes = resize_boxes(self._boxes[index], width, height, self.image_size)  # [M, 4]
        return {
            "images": image_to_tensor(image, self.image_size, f"{_OWNER}: image file {str(path)!r}"),
            "boxes": torch.from_numpy(boxes),
            "box_labels": torch.from_numpy(self._labels[index].copy()),
        }


def _read_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        found = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
        raise DataError(
            f"{_OWNER}: split file {str(path)!r} does not exist (splits found: {found[:20]}); expected a VOC folder "
            "with ImageSets/Main/<split>.txt listing one image id per line"
        )
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{_OWNER}: split file {str(path)!r} lists no image ids")
    return ids


def _image_file(root: Path, image_id: str) -> Path:
    for extension in (".jpg", *IMAGE_EXTENSIONS):
        path = root / "JPEGImages" / f"{image_id}{extension}"
        if path.is_file():
            return path
    raise DataError(
        f"{_OWNER}: no image for id {image_id!r}: expected {str(root / 'JPEGImages' / image_id)!r}.jpg (or another "
        f"image extension: {', '.join(IMAGE_EXTENSIONS)})"
    )


def _number(element: ElementTree.Element, tag: str, where: str) -> float:
    """The finite number in the child ``tag`` of ``element``."""
    text = element.findtext(tag)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{_OWNER}: {where} has {tag}={text!r}; expected a number")
    return value


def _read_annotation(
    path: Path, class_names: list[str]
) -> tuple[tuple[int, int], list[tuple[int, list[float], bool, int]]]:
    """``((width, height), [(class index, xyxy pixel edges, difficult, object number), ...])`` of one XML file."""
    try:
        tree = ElementTree.parse(path)
    except FileNotFoundError as error:
        raise DataError(f"{_OWNER}: annotation file {str(path)!r} does not exist") from error
    except ElementTree.ParseError as error:
        line, column = error.position
        raise DataError(f"{_OWNER}: {str(path)!r} is not valid XML (line {line}, column {column}: {error})") from error
    size = tree.find("size")
    if size is None:
        raise DataError(
            f"{_OWNER}: {str(path)!r} has no <size>; expected <size><width>..</width><height>..</height></size>"
        )
    width, height = (_number(size, tag, f"{str(path)!r} <size>") for tag in ("width", "height"))
    if width < 1 or height < 1 or not (width.is_integer() and height.is_integer()):
        raise DataError(f"{_OWNER}: {str(path)!r} has size {width}x{height}; expected positive whole pixels")
    objects = []
    for number, element in enumerate(tree.findall("object")):
        where = f"{str(path)!r} object {number}"
        name, bndbox = element.findtext("name"), element.find("bndbox")
        if name is None or bndbox is None:
            raise DataError(f"{_OWNER}: {where} has no <name> or <bndbox>; expected both")
        if name.strip() not in class_names:
            close = difflib.get_close_matches(name.strip(), class_names, n=3, cutoff=0.6)
            hint = f"did you mean {close}?" if close else f"expected one of {class_names}"
            raise DataError(f"{_OWNER}: {where} has the class name {name!r}, which is not in class_names; {hint}")
        xmin, ymin, xmax, ymax = (_number(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(
                f"{_OWNER}: {where} has xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}; expected "
                "xmax >= xmin and ymax >= ymin (1-based pixel indices, both ends included)"
            )
        difficult = (element.findtext("difficult") or "0").strip() == "1"
        objects.append((class_names.index(name.strip()), [xmin - 1, ymin - 1, xmax, ymax], difficult, number))
    return (int(width), int(height)), objects
