"""Object detection data in the COCO JSON format."""

from __future__ import annotations

import json
import math
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
)
from brickzoo.errors import DataError

_OWNER = "CocoDetectionDataset"


class CocoDetectionDataset(NamedDataset):
    """Boxes from a COCO-format annotation file and the images it names.

    The JSON holds ``images`` (``id``, ``file_name``, optionally ``width``/``height``),
    ``annotations`` (``image_id``, ``category_id``, ``bbox = [x, y, w, h]`` in pixels,
    optionally ``iscrowd``) and ``categories`` (``id``, ``name``). Categories sorted by id get
    the contiguous indices ``0 .. C - 1`` (``category_ids[i]`` maps back). The file is read and
    checked at construction: its structure, that every annotation points to a known image and
    category, and that every image file exists.

    Boxes become xyxy, clipped to the image, scaled to ``image_size`` when given; boxes of zero
    width or height (after clipping) are dropped, and so are crowd annotations unless
    ``include_crowd``. Images without annotations give ``M = 0``.

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1],
    ``boxes (Tensor[M, 4])`` float32 xyxy in pixels of the returned image,
    ``box_labels (Tensor[M])`` int64 in ``[0, C)`` and ``image_id (Tensor[])`` int64 (the COCO id).

    Args:
        annotation_file: the COCO JSON file.
        image_root: the folder that ``file_name`` entries are relative to.
        image_size: output size, an int or ``(height, width)`` (aspect ratio not kept); None
            keeps each file's size (then only images of one size can be batched together).
        include_crowd: keep ``iscrowd = 1`` annotations as ordinary boxes.

    Raises:
        DataError: the JSON is missing, unreadable or malformed, an annotation names an unknown
            image or category, an image file is missing, or (in ``__getitem__``) an image cannot
            be decoded or its size differs from the ``width``/``height`` in the JSON.

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
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.image_size = normalize_image_size(image_size, _OWNER)
        data = _read_json(self.annotation_file)
        where = repr(str(self.annotation_file))

        categories = _records(data, "categories", ("id", "name"), where, required=True)
        self.category_ids: list[int] = sorted(int(c["id"]) for c in categories)
        if len(set(self.category_ids)) != len(self.category_ids):
            raise DataError(f"{_OWNER}: {where} has duplicate category ids in {self.category_ids}")
        name_of = {int(c["id"]): str(c["name"]) for c in categories}
        index_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.class_names = [name_of[cid] for cid in self.category_ids]
        self.num_classes = len(self.class_names)
        self.tasks = {"detection": list(self.class_names)}

        images = _records(data, "images", ("id", "file_name"), where, required=True)
        self.image_ids: list[int] = [int(im["id"]) for im in images]
        if len(set(self.image_ids)) != len(self.image_ids):
            raise DataError(f"{_OWNER}: {where} has duplicate image ids")
        self.files: list[Path] = [self.image_root / str(im["file_name"]) for im in images]
        self.sizes: list[tuple[int, int] | None] = [
            (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None for im in images
        ]
        missing = [str(path) for path in self.files if not path.is_file()]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise DataError(
                f"{_OWNER}: {len(missing)} image file(s) listed in {where} do not exist under "
                f"{str(self.image_root)!r}: {shown}"
            )

        row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}
        boxes: list[list[list[float]]] = [[] for _ in images]
        labels: list[list[int]] = [[] for _ in images]
        for number, ann in enumerate(_records(data, "annotations", ("image_id", "category_id", "bbox"), where)):
            name = f"annotation {ann.get('id', f'#{number}')}"
            if ann["image_id"] not in row_of:
                raise DataError(
                    f"{_OWNER}: {name} in {where} points to image_id {ann['image_id']!r}, "
                    f"which is not in 'images' (expected one of the {len(row_of)} image ids)"
                )
            if ann["category_id"] not in index_of:
                raise DataError(
                    f"{_OWNER}: {name} in {where} has category_id {ann['category_id']!r}; "
                    f"expected one of the category ids {self.category_ids}"
                )
            bbox = ann["bbox"]
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox)
            ):
                raise DataError(f"{_OWNER}: {name} in {where} has bbox {bbox!r}; expected [x, y, width, height]")
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                continue
            row = row_of[ann["image_id"]]
            boxes[row].append([x, y, x + w, y + h])
            labels[row].append(index_of[ann["category_id"]])
        self._boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]  # [M, 4] xyxy, file pixels
        self._labels = [np.asarray(lab, dtype=np.int64) for lab in labels]  # [M]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        path = self.files[index]
        image = open_image(path, _OWNER)
        width, height = image.size
        expected = self.sizes[index]
        if expected is not None and expected != (width, height):
            raise DataError(
                f"{_OWNER}: image {str(path)!r} is {width}x{height} (WxH) but {str(self.annotation_file)!r} says "
                f"{expected[0]}x{expected[1]}; the boxes would not match the pixels"
            )
        boxes = self._boxes[index].copy()  # [M, 4]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], self._labels[index][keep]
        if self.image_size is not None:
            out_h, out_w = self.image_size
            boxes *= np.array([out_w / width, out_h / height, out_w / width, out_h / height], dtype=np.float32)
        return {
            "images": image_to_tensor(image, self.image_size),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes)),
            "box_labels": torch.from_numpy(np.ascontiguousarray(labels)),
            "image_id": torch.tensor(self.image_ids[index], dtype=torch.int64),
        }


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
        for field in fields:
            if field.endswith("id") and (not isinstance(record[field], int) or isinstance(record[field], bool)):
                raise DataError(
                    f"{_OWNER}: {where} {key}[{number}] has {field}={record[field]!r}; expected an integer id"
                )
    return records
