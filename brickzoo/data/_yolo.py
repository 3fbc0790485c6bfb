"""Object detection data in the Ultralytics YOLO layout: images/, labels/*.txt and a data.yaml."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from brickzoo.data._common import (
    IMAGE_EXTENSIONS,
    ImageSize,
    NamedDataset,
    check_index,
    image_to_tensor,
    normalize_image_size,
    open_image,
    readable_rows,
)
from brickzoo.errors import DataError, DataWarning

_OWNER = "YoloDetectionDataset"
_SHOWN = 5  # places named per kind of change in the warning
_TOLERANCE = 1e-6  # float error of cx +- w / 2 at the border is not counted as clipping


class YoloDetectionDataset(NamedDataset):
    """Boxes in the Ultralytics YOLO layout: ``images/``, ``labels/*.txt`` and a ``data.yaml``.

    ``data.yaml`` holds ``names`` (a list, or a mapping ``{0: name, 1: name, ...}``), optionally
    ``nc`` (checked against ``names``), ``path`` (the dataset root, relative to the YAML's folder;
    default that folder) and the splits ``train``/``val``/``test``: each a folder of images
    (searched recursively), a ``.txt`` file listing image paths (relative to the list's folder),
    or a list of those, relative to the root. A split the YAML does not name is read from
    ``images/<split>`` under the root.

    An image's labels are found as Ultralytics finds them: the last ``images`` folder of its path
    replaced by ``labels`` and the extension by ``.txt`` (``images/train/a.jpg`` ->
    ``labels/train/a.txt``). Each line is ``class cx cy w h``: a class index into ``names`` and the
    box centre and size as fractions of the image's width and height (as displayed, EXIF
    orientation applied). An image without a label file has no objects (listed in
    ``background_images``); blank lines are skipped.

    Every label file is read and checked at construction. Malformed lines raise a DataError naming
    the file and line: a wrong number of fields (5 expected; segmentation polygons are not read), a
    value that does not parse or is not finite, a class index that is not a whole number in
    ``[0, len(names))``. Coordinates outside [0, 1] are clipped to the image, and boxes with no
    width or height inside it dropped; one :class:`~brickzoo.errors.DataWarning` counts both and
    names the first files and lines (``strict=True`` raises instead).

    Every sample is a dict with ``images (Tensor[3, H, W])`` float32 in [0, 1],
    ``boxes (Tensor[M, 4])`` float32 xyxy in pixels of the returned image and
    ``box_labels (Tensor[M])`` int64.

    Args:
        root: the dataset folder holding ``data.yaml``, or the YAML file itself.
        split: the split to read (``train``, ``val``, ``test`` or another key of the YAML).
        image_size: output size, an int or ``(height, width)`` (stretched; use a letterbox
            transform to keep the aspect ratio); None keeps each file's size.
        skip_unreadable: decode every image at construction and leave out those that cannot be
            decoded, with a DataWarning counting them (default: fail when one is read).
        strict: raise a DataError instead of clipping or dropping boxes with a warning.

    Raises:
        DataError: the YAML is missing or malformed, the split has no images, an image is not
            under an ``images`` folder, a label line is malformed, or (in ``__getitem__``) an
            image cannot be decoded. The message names the file (and line).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from brickzoo.data import YoloDetectionDataset
        >>> root = Path(tempfile.mkdtemp())
        >>> for folder in ("images/train", "labels/train"):
        ...     (root / folder).mkdir(parents=True)
        >>> Image.new("RGB", (64, 48)).save(root / "images/train/a.png")
        >>> _ = (root / "labels/train/a.txt").write_text("1 0.5 0.5 0.25 0.5\\n")  # class cx cy w h
        >>> _ = (root / "data.yaml").write_text("names: [cat, dog]\\n")
        >>> sample = YoloDetectionDataset(root, split="train")[0]
        >>> sample["boxes"], sample["box_labels"]
        (tensor([[24., 12., 40., 36.]]), tensor([1]))
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: ImageSize | None = None,
        skip_unreadable: bool = False,
        strict: bool = False,
    ) -> None:
        self.yaml_file = _find_yaml(Path(root))
        self.image_size = normalize_image_size(image_size, _OWNER)
        self.split = split
        config = _read_yaml(self.yaml_file)
        self.class_names = _class_names(config, self.yaml_file)
        self.num_classes = len(self.class_names)
        self.tasks = {"detection": list(self.class_names)}
        self.root = self.yaml_file.parent / str(config.get("path") or ".")
        self.files = _split_images(config, self.root, split, self.yaml_file)
        if skip_unreadable:
            self.files = [
                self.files[row]
                for row in readable_rows(
                    [[f] for f in self.files], _OWNER, f"split {split!r} of {str(self.yaml_file)!r}"
                )
            ]
        self.label_files = [_label_path(path) for path in self.files]
        self.background_images = [
            path for path, label in zip(self.files, self.label_files, strict=True) if not label.is_file()
        ]
        report = _Report()
        self._boxes: list[np.ndarray] = []  # per image [M, 4] xyxy as fractions of the image size
        self._labels: list[np.ndarray] = []  # per image [M]
        for label_file in self.label_files:
            boxes, labels = _read_labels(label_file, self.num_classes, report)
            self._boxes.append(boxes)
            self._labels.append(labels)
        message = report.message(split, self.yaml_file)
        if message and strict:
            raise DataError(f"{message}; fix the label files, or drop strict=True to clip and drop with a warning")
        if message:
            warnings.warn(f"{message}; pass strict=True to make this an error", DataWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        path = self.files[index]
        image = open_image(path, _OWNER)
        height, width = self.image_size if self.image_size is not None else (image.height, image.width)
        boxes = self._boxes[index] * np.array([width, height, width, height], dtype=np.float32)  # [M, 4] pixels
        return {
            "images": image_to_tensor(image, self.image_size, f"{_OWNER}: image file {str(path)!r}"),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "box_labels": torch.from_numpy(self._labels[index].copy()),
        }


@dataclass
class _Report:
    """Boxes changed while reading the label files, as ``file:line`` per kind."""

    total: int = 0
    clipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def message(self, split: str, yaml_file: Path) -> str:
        kinds = [
            (self.clipped, "clipped to the image (coordinates outside [0, 1])"),
            (self.dropped, "dropped (no width or height inside the image)"),
        ]
        parts = [
            f"{len(where)} {what}: {', '.join(where[:_SHOWN])}{' ...' if len(where) > _SHOWN else ''}"
            for where, what in kinds
            if where
        ]
        if not parts:
            return ""
        changed = len(self.clipped) + len(self.dropped)
        return (
            f"{_OWNER}: {changed} of the {self.total} boxes of split {split!r} ({str(yaml_file)!r}) were changed: "
            + "; ".join(parts)
        )


def _find_yaml(root: Path) -> Path:
    if root.is_file():
        return root
    if root.is_dir():
        if (root / "data.yaml").is_file():
            return root / "data.yaml"
        found = sorted(p.name for p in root.glob("*.y*ml"))
        raise DataError(
            f"{_OWNER}: {str(root)!r} holds no data.yaml (YAML files there: {found}); expected the dataset folder with "
            "data.yaml, or the path of the YAML file"
        )
    raise DataError(
        f"{_OWNER}: {str(root)!r} does not exist; expected a dataset folder with data.yaml or its YAML file"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{_OWNER}: could not read {str(path)!r} ({error})") from error
    except yaml.YAMLError as error:
        raise DataError(f"{_OWNER}: {str(path)!r} is not valid YAML ({error})") from error
    if not isinstance(config, dict):
        raise DataError(f"{_OWNER}: {str(path)!r} holds {type(config).__name__}; expected a mapping with 'names'")
    return config


def _class_names(config: dict[str, Any], path: Path) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        keys = sorted(names) if all(isinstance(k, int) and not isinstance(k, bool) for k in names) else None
        if keys != list(range(len(names))):
            raise DataError(
                f"{_OWNER}: {str(path)!r} has names with keys {list(names)}; expected the class indices "
                f"0 .. {len(names) - 1}"
            )
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str | int) for n in names):
        raise DataError(
            f"{_OWNER}: {str(path)!r} has names={names!r}; expected a non-empty list of class names or a mapping "
            "{0: name, 1: name, ...}"
        )
    if "nc" in config and config["nc"] != len(names):
        raise DataError(
            f"{_OWNER}: {str(path)!r} has nc={config['nc']!r} but {len(names)} names; expected them to agree"
        )
    return [str(n) for n in names]


def _split_images(config: dict[str, Any], root: Path, split: str, yaml_file: Path) -> list[Path]:
    """The image files of ``split``, sorted within each source."""
    entry = config.get(split)
    sources = (
        [root / "images" / split]
        if entry is None
        else [root / str(e) for e in (entry if isinstance(entry, list) else [entry])]
    )
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif source.is_file() and source.suffix == ".txt":
            lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
            files += [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
        else:
            named = f"names {split}: {entry!r}" if entry is not None else f"does not name split {split!r}"
            raise DataError(
                f"{_OWNER}: {str(yaml_file)!r} {named}, but {str(source)!r} is neither a folder of images nor a .txt "
                f"list of them (splits in the YAML: {[k for k in ('train', 'val', 'test') if k in config]})"
            )
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise DataError(f"{_OWNER}: {len(missing)} image(s) of split {split!r} do not exist: {missing[:_SHOWN]}")
    if not files:
        raise DataError(
            f"{_OWNER}: split {split!r} of {str(yaml_file)!r} holds no images ({[str(s) for s in sources]})"
        )
    return files


def _label_path(image: Path) -> Path:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (the last ``images`` folder), as Ultralytics finds labels."""
    parts = image.parts
    if "images" not in parts[:-1]:
        raise DataError(
            f"{_OWNER}: image {str(image)!r} is not under a folder named 'images'; its labels are found by replacing "
            "that folder with 'labels' (images/train/a.jpg -> labels/train/a.txt)"
        )
    at = len(parts) - 2 - parts[:-1][::-1].index("images")
    return Path(*parts[:at], "labels", *parts[at + 1 : -1], Path(parts[-1]).stem + ".txt")


def _parse_line(fields: list[str], num_classes: int, where: str) -> tuple[int, list[float]]:
    """``(class index, [cx, cy, w, h])`` of one label line; DataError naming ``where`` when malformed."""
    if len(fields) != 5:
        polygon = " (a segmentation polygon? only detection lines are read)" if len(fields) > 5 else ""
        raise DataError(f"{_OWNER}: {where} has {len(fields)} fields; expected 5: class cx cy w h{polygon}")
    try:
        values = [float(v) for v in fields]
    except ValueError as error:
        raise DataError(
            f"{_OWNER}: {where} has a value that is not a number ({error}); expected class cx cy w h"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{_OWNER}: {where} has a value that is not finite: {' '.join(fields)}")
    if not values[0].is_integer() or not 0 <= values[0] < num_classes:
        raise DataError(
            f"{_OWNER}: {where} has class {fields[0]!r}; expected a class index in [0, {num_classes - 1}] "
            f"(data.yaml names {num_classes} classes)"
        )
    return int(values[0]), values[1:]


def _read_labels(path: Path, num_classes: int, report: _Report) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[M, 4]`` xyxy as fractions (clipped to [0, 1]) and labels ``[M]`` of one label file (none if absent)."""
    boxes: list[list[float]] = []
    labels: list[int] = []
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{str(path)!r} line {number}"
        label, (cx, cy, w, h) = _parse_line(line.split(), num_classes, where)
        report.total += 1
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        clipped = [min(max(v, 0.0), 1.0) for v in box]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            report.dropped.append(f"{path.name}:{number}")
            continue
        if any(abs(a - b) > _TOLERANCE for a, b in zip(clipped, box, strict=True)):
            report.clipped.append(f"{path.name}:{number}")
        boxes.append(clipped)
        labels.append(label)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)
