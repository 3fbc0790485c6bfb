"""Object detection data in the COCO JSON format."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brickzoo.data._common import (
    ImageSize,
    NamedDataset,
    check_index,
    image_to_tensor,
    normalize_image_size,
    open_image,
    read_header,
    readable_rows,
    resize_boxes,
)
from brickzoo.errors import DataError, DataWarning

_OWNER = "CocoDetectionDataset"
_SHOWN_IDS = 5  # annotation ids named per kind of problem


class CocoDetectionDataset(NamedDataset):
    """Boxes from a COCO-format annotation file and the images it names.

    The JSON holds ``images`` (``id``, ``file_name``, optionally ``width``/``height``),
    ``annotations`` (``image_id``, ``category_id``, ``bbox = [x, y, w, h]`` in pixels,
    optionally ``iscrowd``) and ``categories`` (``id``, ``name``). Categories sorted by id get
    the contiguous indices ``0 .. C - 1`` (``category_ids[i]`` maps back). The file is read and
    checked at construction: its structure, that every annotation points to a known image and
    category, and that every image file exists. Image sizes come from the JSON's
    ``width``/``height``, or from the image file's header (without decoding) when absent;
    images are read as displayed (EXIF orientation applied, see :func:`~brickzoo.data.load_image`).

    Boxes become xyxy in pixels, scaled to ``image_size`` when given. Bad boxes are never changed
    silently: at construction, boxes with non-positive width or height and boxes entirely outside
    their image are dropped, boxes partly outside are clipped to the image, and one
    :class:`~brickzoo.errors.DataWarning` counts each kind and names the first annotation ids
    (a JSON without an ``annotations`` list warns too); ``strict=True`` raises a DataError
    instead. Crowd annotations are dropped unless ``include_crowd``. Images without annotations
    give ``M = 0``.

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1],
    ``boxes (Tensor[M, 4])`` float32 xyxy in pixels of the returned image,
    ``box_labels (Tensor[M])`` int64 in ``[0, C)`` and ``image_id (Tensor[])`` int64 (the COCO id).

    Args:
        annotation_file: the COCO JSON file.
        image_root: the folder that ``file_name`` entries are relative to.
        image_size: output size, an int or ``(height, width)`` (aspect ratio not kept); None
            keeps each file's size (then only images of one size can be batched together).
        include_crowd: keep ``iscrowd = 1`` annotations as ordinary boxes.
        strict: raise a DataError instead of warning about bad boxes or a missing
            ``annotations`` list (``data.args.strict: true`` in a zoo config).
        skip_unreadable: decode every image at construction and leave out those that cannot be
            decoded (with their annotations), with a :class:`~brickzoo.errors.DataWarning`
            counting them and naming the first (default: fail when one is read).

    Raises:
        DataError: the JSON is missing, unreadable or malformed, an annotation names an unknown
            image or category, an image file is missing, a box is bad and ``strict``, or (in
            ``__getitem__``) an image cannot be decoded or its size differs from the
            ``width``/``height`` in the JSON. The message names the file.

    Example:
        >>> from brickzoo.data import CocoDetectionDataset
        >>> dataset = CocoDetectionDataset("annotations.json", "images", image_size=256)  # doctest: +SKIP
        >>> dataset.class_names, dataset[0]["boxes"].shape  # doctest: +SKIP
        (['cat', 'dog'], torch.Size([3, 4]))
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        image_size: ImageSize | None = None,
        include_crowd: bool = False,
        strict: bool = False,
        skip_unreadable: bool = False,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.image_size = normalize_image_size(image_size, _OWNER)
        self.strict = bool(strict)
        data = _read_json(self.annotation_file)
        where = repr(str(self.annotation_file))
        self._read_categories(data, where)
        self._read_images(data, where, skip_unreadable)
        report = _Report(no_annotations="annotations" not in data)
        self._boxes, self._labels = self._read_annotations(data, where, include_crowd, report)
        message = report.message(where, len(self.files))
        if message and self.strict:
            raise DataError(f"{message}; fix the annotations, or drop strict=True to drop and clip with a warning")
        if message:
            warnings.warn(f"{message}; pass strict=True to make this an error", DataWarning, stacklevel=2)

    def _read_categories(self, data: dict[str, Any], where: str) -> None:
        categories = _records(data, "categories", ("id", "name"), where, required=True)
        self.category_ids: list[int] = sorted(int(c["id"]) for c in categories)
        if len(set(self.category_ids)) != len(self.category_ids):
            raise DataError(f"{_OWNER}: {where} has duplicate category ids in {self.category_ids}")
        name_of = {int(c["id"]): str(c["name"]) for c in categories}
        self.class_names = [name_of[cid] for cid in self.category_ids]
        self.num_classes = len(self.class_names)
        self.tasks = {"detection": list(self.class_names)}

    def _read_images(self, data: dict[str, Any], where: str, skip_unreadable: bool) -> None:
        images = _records(data, "images", ("id", "file_name"), where, required=True)
        self.image_ids: list[int] = [int(im["id"]) for im in images]
        if len(set(self.image_ids)) != len(self.image_ids):
            raise DataError(f"{_OWNER}: {where} has duplicate image ids")
        self.files: list[Path] = [self.image_root / str(im["file_name"]) for im in images]
        missing = [str(path) for path in self.files if not path.is_file()]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise DataError(
                f"{_OWNER}: {len(missing)} image file(s) listed in {where} do not exist under "
                f"{str(self.image_root)!r}: {shown}"
            )
        self._skipped_ids: set[int] = set()  # images left out by skip_unreadable; their annotations are skipped
        if skip_unreadable:
            kept = readable_rows([[path] for path in self.files], _OWNER, where)
            self._skipped_ids = set(self.image_ids) - {self.image_ids[row] for row in kept}
            images = [images[row] for row in kept]
            self.image_ids, self.files = [self.image_ids[row] for row in kept], [self.files[row] for row in kept]
        self.sizes: list[tuple[int, int]] = []  # (width, height) as displayed
        for number, (image, path) in enumerate(zip(images, self.files, strict=True)):
            if "width" not in image or "height" not in image:
                header = read_header(path, _OWNER)
                self.sizes.append((header.width, header.height))
                continue
            width, height = image["width"], image["height"]
            if not all(_is_whole(v) and v > 0 for v in (width, height)):
                raise DataError(
                    f"{_OWNER}: {where} images[{number}] ({str(path)!r}) has width={width!r}, height={height!r}; "
                    "expected positive integers (or neither, to read the size from the file)"
                )
            self.sizes.append((int(width), int(height)))

    def _read_annotations(
        self, data: dict[str, Any], where: str, include_crowd: bool, report: _Report
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per image: boxes ``[M, 4]`` xyxy in file pixels (clipped) and labels ``[M]``; problems go to ``report``."""
        row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}
        index_of = {cid: i for i, cid in enumerate(self.category_ids)}
        boxes: list[list[list[float]]] = [[] for _ in self.files]
        labels: list[list[int]] = [[] for _ in self.files]
        for number, ann in enumerate(_records(data, "annotations", ("image_id", "category_id", "bbox"), where)):
            name = str(ann.get("id", f"#{number}"))
            if ann["image_id"] in self._skipped_ids:
                continue
            if ann["image_id"] not in row_of:
                raise DataError(
                    f"{_OWNER}: annotation {name} in {where} points to image_id {ann['image_id']!r}, "
                    f"which is not in 'images' (expected one of the {len(row_of)} image ids)"
                )
            if ann["category_id"] not in index_of:
                raise DataError(
                    f"{_OWNER}: annotation {name} in {where} has category_id {ann['category_id']!r}; "
                    f"expected one of the category ids {self.category_ids}"
                )
            bbox = ann["bbox"]
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox)
            ):
                raise DataError(
                    f"{_OWNER}: annotation {name} in {where} has bbox {bbox!r}; expected [x, y, width, height]"
                )
            report.total += 1
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            row = row_of[ann["image_id"]]
            box = report.check(name, [float(v) for v in bbox], self.sizes[row])
            if box is not None:
                boxes[row].append(box)
                labels[row].append(index_of[ann["category_id"]])
        return (
            [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes],  # [M, 4] xyxy, file pixels
            [np.asarray(lab, dtype=np.int64) for lab in labels],  # [M]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        path = self.files[index]
        image = open_image(path, _OWNER)
        width, height = image.size
        expected = self.sizes[index]
        if expected != (width, height):
            raise DataError(
                f"{_OWNER}: image {str(path)!r} is {width}x{height} (WxH) but {str(self.annotation_file)!r} says "
                f"{expected[0]}x{expected[1]}; the boxes would not match the pixels{_turned_hint(path, expected)}"
            )
        boxes = resize_boxes(self._boxes[index], width, height, self.image_size)  # [M, 4]
        return {
            "images": image_to_tensor(image, self.image_size, f"{_OWNER}: image file {str(path)!r}"),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes)),
            "box_labels": torch.from_numpy(np.ascontiguousarray(self._labels[index])),
            "image_id": torch.tensor(self.image_ids[index], dtype=torch.int64),
        }


@dataclass
class _Report:
    """The annotations changed at construction, by kind, for one warning (or error)."""

    no_annotations: bool = False
    total: int = 0
    degenerate: list[str] = field(default_factory=list)  # non-positive width or height: dropped
    outside: list[str] = field(default_factory=list)  # entirely outside the image: dropped
    clipped: list[str] = field(default_factory=list)  # partly outside the image: clipped

    def check(self, name: str, bbox: list[float], size: tuple[int, int]) -> list[float] | None:
        """The xyxy box of ``bbox = [x, y, w, h]`` clipped to ``size = (width, height)``, or None if dropped."""
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            self.degenerate.append(name)
            return None
        width, height = size
        box = [x, y, x + w, y + h]
        clipped = [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            self.outside.append(name)
            return None
        if clipped != box:
            self.clipped.append(name)
        return clipped

    def message(self, where: str, num_images: int) -> str:
        """One sentence counting every change, or "" when nothing changed."""
        if self.no_annotations:
            return (
                f"{_OWNER}: {where} has no 'annotations' list, so none of its {num_images} images has a box; "
                "expected a COCO JSON with 'annotations' (an image-info file, as for COCO's test sets, holds none)"
            )
        kinds = [
            (self.degenerate, "dropped for a non-positive width or height"),
            (self.outside, "dropped as entirely outside its image"),
            (self.clipped, "clipped to its image as partly outside"),
        ]
        parts = [f"{len(ids)} {what} ({_ids(ids)})" for ids, what in kinds if ids]
        if not parts:
            return ""
        changed = sum(len(ids) for ids, _ in kinds)
        return f"{_OWNER}: {changed} of the {self.total} annotations in {where} were changed: {', '.join(parts)}"


def _is_whole(value: Any) -> bool:
    """An int, or a float with an integral value (some tools write ``640.0``); not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
    return f"annotation id{'s' if len(ids) > 1 else ''} {shown}{more}"


def _turned_hint(path: Path, expected: tuple[int, int]) -> str:
    """Why a size may differ: the file's EXIF orientation turns it, and the JSON has the stored size."""
    try:
        header = read_header(path, _OWNER)
    except DataError:
        return ""
    if header.orientation == 1:
        return ""
    stored = (header.height, header.width) if header.orientation in (5, 6, 7, 8) else (header.width, header.height)
    matches = " (the JSON's size is the stored one)" if stored == expected else ""
    return (
        f". The file has EXIF orientation {header.orientation}: brickzoo reads it as displayed, "
        f"{header.width}x{header.height}, while its stored pixels are {stored[0]}x{stored[1]}{matches}; "
        "if the boxes were drawn on the stored pixels, save the images without the orientation tag "
        "(PIL.ImageOps.exif_transpose, then save) and re-export the annotations"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError as error:
        raise DataError(f"{_OWNER}: annotation file {str(path)!r} does not exist") from error
    except json.JSONDecodeError as error:
        raise DataError(
            f"{_OWNER}: annotation file {str(path)!r} is not valid JSON ({error.msg} at line {error.lineno}, "
            f"column {error.colno}); expected a COCO JSON object"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{_OWNER}: could not read annotation file {str(path)!r} ({error})") from error
    if not isinstance(data, dict):
        raise DataError(
            f"{_OWNER}: annotation file {str(path)!r} holds a JSON {type(data).__name__}; expected an object with "
            "'images', 'annotations' and 'categories'"
        )
    return data


def _records(
    data: dict[str, Any], key: str, fields: tuple[str, ...], where: str, required: bool = False
) -> list[dict[str, Any]]:
    """The list ``data[key]`` of objects, each checked to hold ``fields`` (those ending in "id" as ints)."""
    if key not in data:
        if required:
            raise DataError(f"{_OWNER}: {where} has no {key!r} list; expected a COCO JSON with keys {key!r}")
        return []
    records = data[key]
    if not isinstance(records, list):
        raise DataError(f"{_OWNER}: {where} has {key!r} of type {type(records).__name__}; expected a list")
    for number, record in enumerate(records):
        if not isinstance(record, dict) or any(f not in record for f in fields):
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{_OWNER}: {where} {key}[{number}] is {got}; expected an object with fields {list(fields)}"
            )
        for field_name in fields:
            if field_name.endswith("id") and (
                not isinstance(record[field_name], int) or isinstance(record[field_name], bool)
            ):
                raise DataError(
                    f"{_OWNER}: {where} {key}[{number}] has {field_name}={record[field_name]!r}; expected an integer id"
                )
    return records
