"""The datasets a zoo config can name, and how their splits are made."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from brickzoo.errors import ConfigError
from brickzoo.zoo._validate import Problems, check_arguments

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset class a config may name.

    Attributes:
        factory: the class (its constructor's signature is what configs are checked against).
        split_argument: the constructor argument that takes the split name, if any.
        tasks: the tasks its samples carry targets for.
    """

    factory: Callable[..., Dataset[Any]]
    split_argument: str | None
    tasks: tuple[str, ...]


@functools.cache
def dataset_entries() -> dict[str, DatasetEntry]:
    """Name -> dataset entry; imported on first use so loading a config module stays cheap."""
    from brickzoo.data import (
        CocoDetectionDataset,
        DigitsDataset,
        ImageFolderDataset,
        SegmentationFolderDataset,
        ShapesDataset,
        VocDetectionDataset,
        YoloDetectionDataset,
    )

    return {
        "shapes": DatasetEntry(ShapesDataset, None, ("classification", "segmentation", "detection")),
        "digits": DatasetEntry(DigitsDataset, "split", ("classification",)),
        "image_folder": DatasetEntry(ImageFolderDataset, None, ("classification",)),
        "coco": DatasetEntry(CocoDetectionDataset, None, ("detection",)),
        "yolo": DatasetEntry(YoloDetectionDataset, None, ("detection",)),
        "voc": DatasetEntry(VocDetectionDataset, None, ("detection",)),
        "segmentation_folder": DatasetEntry(SegmentationFolderDataset, None, ("segmentation",)),
    }


def split_arguments(name: str, data: Mapping[str, Any], split: str) -> dict[str, Any] | None:
    """The constructor arguments of one split, or None when the config has no such split."""
    entry = dataset_entries()[name]
    if split not in data and not (entry.split_argument and split in ("train", "val")):
        return None
    arguments = dict(data.get("args") or {})
    arguments.update(data.get(split) or {})
    if entry.split_argument:
        arguments.setdefault(entry.split_argument, split)
    return arguments


def dataset_problems(problems: Problems, name: str, data: Mapping[str, Any], tasks_needed: Mapping[str, str]) -> None:
    """Add everything wrong with the ``data`` section of a config to ``problems``.

    Args:
        problems: where the problems go, each with its key path.
        name: the dataset's registered name (known to :func:`dataset_entries`).
        data: the ``data`` section.
        tasks_needed: ``{head name: task}`` of the heads whose targets the dataset must carry.
    """
    entry = dataset_entries()[name]
    for key in ("args", *SPLITS):
        if key in data and not isinstance(data[key], dict):
            problems.add(f"data.{key}", f"expected a mapping of {entry.factory.__name__} arguments, got {data[key]!r}")
    if not isinstance(data.get("train"), dict) and not entry.split_argument:
        problems.add("data.train", f"missing; give the {entry.factory.__name__} arguments of the training split")
    for split in SPLITS:
        arguments = split_arguments(name, data, split) if isinstance(data.get(split, {}), dict) else None
        if arguments is not None and isinstance(data.get("args", {}), dict):
            check_arguments(problems, f"data.{split}", entry.factory, arguments, set())
    for head, task in tasks_needed.items():
        if task not in entry.tasks:
            problems.add(
                f"model.heads.{head}",
                f"a {task} head needs {task} targets, but dataset {name!r} has only {list(entry.tasks)}",
            )


def build_datasets(name: str, data: Mapping[str, Any]) -> dict[str, Dataset[Any]]:
    """Instantiate every split the config describes."""
    entry = dataset_entries()[name]
    built: dict[str, Dataset[Any]] = {}
    for split in SPLITS:
        arguments = split_arguments(name, data, split)
        if arguments is not None:
            built[split] = entry.factory(**arguments)
    if "train" not in built:
        raise ConfigError(f"data: dataset {name!r} has no training split")
    return built
