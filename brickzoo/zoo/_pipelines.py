"""The data pipelines of a zoo config: ``data.transforms.train`` / ``.eval``, per-task defaults, the input size.

A config may give ``data.transforms.train`` (the training split's augmentation) and
``data.transforms.eval`` (the val and test splits' resizing, also what prediction applies), each a
list of registered transforms (:func:`brickzoo.data.transforms.list_transforms`); ``[]`` means no
transform. A key left out gets the default pipeline of the tasks the dataset's samples carry
(:func:`brickzoo.data.transforms.default_transform_specs`) at the model's input size.

**The model's input size** is, in this order: ``data.image_size``; the size the given eval (then
train) pipeline leaves images at, when that can be read off the specs (``letterbox``,
``resize [h, w]``, ``center_crop``...); the ``image_size`` the dataset's arguments give its images.

Nothing here reads a dataset: everything is decided from the config, so a recipe can be rebuilt
for prediction without its data.
"""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from brickzoo.errors import ConfigError
from brickzoo.zoo._datasets import SPLITS, dataset_entries, split_arguments
from brickzoo.zoo._validate import Problems

if TYPE_CHECKING:
    from torchvision.transforms import v2

Size = tuple[int, int]
TRANSFORM_KEYS: dict[str, str] = {
    "train": "the training split's augmentation",
    "eval": "the val and test splits' resizing (also applied by prediction)",
}
VARIES = "varies"  # a size state: differs from sample to sample
# How each built-in transform changes the image size (a transform registered elsewhere: unknown).
_FIXES = {"letterbox", "center_crop", "random_resized_crop", "random_crop"}  # output exactly `size`
_VARIES = {"scale_jitter", "random_resize", "random_zoom_out", "random_iou_crop"}  # a random size
_KEEPS = {
    "horizontal_flip",
    "vertical_flip",
    "color_jitter",
    "photometric_distort",
    "gaussian_blur",
    "random_grayscale",
    "sanitize_boxes",
}
# Random built-ins: an evaluation pipeline holding one gives metrics and predictions that depend on chance.
_RANDOM = (_VARIES | {"random_resized_crop", "random_crop", "horizontal_flip", "vertical_flip"}) | {
    "color_jitter",
    "photometric_distort",
    "random_grayscale",
}
_ENDINGS = "letterbox, resize with [height, width], random_crop or center_crop"


@dataclass(frozen=True)
class DataPipelines:
    """The transform specs a recipe uses, defaults filled in, and what they mean for the model's input.

    Attributes:
        specs: ``{"train": [...], "eval": [...]}``, spec lists as a config writes them.
        input_size: the model's input size ``(height, width)``; None when nothing fixes it.
        resize_mode: how the eval pipeline brings an image to ``input_size``, from its last
            geometric step: ``"letterbox"`` (long side scaled, aspect ratio kept, padded),
            ``"stretch"`` (``resize`` to ``[height, width]``), ``"center_crop"`` (the default of
            classification: shorter side resized, then the centre cropped), ``"none"`` (no
            resizing: images must come at the input size) or ``"custom"`` (another step last,
            e.g. ``pad`` or ``resize`` of the shorter side).
    """

    specs: dict[str, list[Any]]
    input_size: Size | None
    resize_mode: str

    def build(self, key: str, origin: str) -> v2.Compose:
        """The pipeline of ``key`` (``"train"`` or ``"eval"``); an empty spec list gives an identity pipeline."""
        from brickzoo.data.transforms import build_transforms

        return build_transforms(self.specs[key], path=f"data.transforms.{key}", origin=origin)


def _entries(specs: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, arguments)`` of each entry of a valid spec list."""
    parsed = []
    for item in specs:
        name, arguments = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        parsed.append((name, dict(arguments or {})))
    return parsed


def _as_size(value: Any) -> Size | None:
    """An int or ``[height, width]`` of positive ints as ``(height, width)``; None for anything else."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            return None
        pair = (int(value[0]), int(value[1]))
    else:
        return None
    return pair if min(pair) >= 1 else None


def _shorter_side(size: Size, target: int, max_size: int | None) -> Size:
    """``v2.Resize(int)``'s output size for an image of ``size``: the shorter side to ``target``, aspect kept."""
    short, long = min(size), max(size)
    new_short, new_long = target, int(target * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if size[0] <= size[1] else (new_long, new_short)


def _padded(size: Size, padding: Any) -> Size:
    """The size after ``v2.Pad(padding)`` (an int, ``[left/right, top/bottom]`` or ``[left, top, right, bottom]``)."""
    pads = [padding] * 4 if isinstance(padding, int) else list(padding)
    left, top, right, bottom = pads * 2 if len(pads) == 2 else pads
    return size[0] + top + bottom, size[1] + left + right


def size_after(specs: Sequence[Any], start: Size | None) -> tuple[Size | str | None, str | None]:
    """The image size a valid spec list leaves, read off the specs.

    Args:
        specs: a spec list that :func:`~brickzoo.data.transforms.check_transforms` accepts.
        start: the size of the images going in (None: unknown, e.g. files of their own sizes).

    Returns:
        ``(size, culprit)``: ``size`` is ``(height, width)`` when every sample leaves at that
        size, :data:`VARIES` when the samples certainly leave at different sizes (``culprit``
        then names the transform, e.g. ``"scale_jitter ([0])"``) and None when it cannot be told.
    """
    state: Size | str | None = start
    culprit = None
    for index, (name, arguments) in enumerate(_entries(specs)):
        if name in _FIXES:
            state, culprit = _as_size(arguments["size"]), None
        elif name == "resize":
            size = arguments["size"]
            if not isinstance(size, int):
                state, culprit = _as_size(size), None
            else:
                state = _shorter_side(state, size, arguments.get("max_size")) if isinstance(state, tuple) else None
        elif name == "pad":
            state = _padded(state, arguments["padding"]) if isinstance(state, tuple) else state
        elif name in _VARIES:
            state, culprit = VARIES, f"{name} ([{index}])"
        elif name not in _KEEPS:
            state, culprit = None, None  # a transform registered elsewhere
    return state, culprit


def resize_mode(specs: Sequence[Any]) -> str:
    """How a valid eval spec list resizes images, from its last geometric entry (see :class:`DataPipelines`)."""
    mode = "none"
    for name, arguments in _entries(specs):
        if name in _KEEPS:
            continue
        if name == "letterbox":
            mode = "letterbox"
        elif name == "resize" and not isinstance(arguments["size"], int):
            mode = "stretch"
        elif name == "center_crop":
            mode = "center_crop"
        else:
            mode = "custom"
    return mode


def split_image_size(name: str, data: Mapping[str, Any], split: str) -> Size | None:
    """The size the dataset gives the images of ``split``: its ``image_size`` argument or that argument's default."""
    arguments = split_arguments(name, data, split) or {}
    if "image_size" in arguments:
        return _as_size(arguments["image_size"])
    parameter = inspect.signature(dataset_entries()[name].factory).parameters.get("image_size")
    return _as_size(parameter.default) if parameter is not None else None


def _present_splits(name: str, data: Mapping[str, Any], key: str) -> list[str]:
    splits = ["train"] if key == "train" else ["val", "test"]
    return [split for split in splits if split_arguments(name, data, split) is not None]


def input_size(name: str, data: Mapping[str, Any]) -> Size | None:
    """The model's input size of a valid ``data`` section (see the module's docstring for the order)."""
    if data.get("image_size") is not None:
        return _as_size(data["image_size"])
    transforms = data.get("transforms") or {}
    for key in ("eval", "train"):
        if key in transforms:
            splits = _present_splits(name, data, key) or ["train"]
            state, _ = size_after(transforms[key], split_image_size(name, data, splits[0]))
            if isinstance(state, tuple):
                return state
    for split in (*_present_splits(name, data, "eval"), "train"):
        size = split_image_size(name, data, split)
        if size is not None:
            return size
    return None


def data_pipelines(name: str, data: Mapping[str, Any]) -> DataPipelines:
    """The pipelines of a validated ``data`` section: the given spec lists, the per-task defaults for the others.

    Raises:
        ConfigError: a default is needed but no input size is known (validation reports it first).
    """
    from brickzoo.data.transforms import default_transform_specs

    size = input_size(name, data)
    given = data.get("transforms") or {}
    tasks = dataset_entries()[name].tasks
    specs: dict[str, list[Any]] = {}
    for key in TRANSFORM_KEYS:
        if key in given:
            specs[key] = copy.deepcopy(list(given[key]))
        elif size is None:
            raise ConfigError(_missing_size_message(name, key))
        else:
            specs[key] = default_transform_specs(list(tasks), size, train=key == "train")
    return DataPipelines(specs, size, resize_mode(specs["eval"]))


def _missing_size_message(name: str, key: str) -> str:
    return (
        f"data.transforms.{key} is not given, so the default pipeline of dataset {name!r} is used, and it needs "
        "the model's input size, which nothing in the config sets; give data.image_size (e.g. 320), the dataset's "
        f"image_size, or data.transforms.{key} itself ([] for no transform)"
    )


def check_pipelines(problems: Problems, name: str, data: Mapping[str, Any]) -> None:
    """Add every problem of ``data.image_size`` and ``data.transforms`` to ``problems``, with key paths.

    Besides each spec list's entries (:func:`~brickzoo.data.transforms.check_transforms`): a
    pipeline that leaves images of different sizes, which the loader cannot batch; a random
    transform in the eval pipeline; an eval pipeline whose size contradicts ``data.image_size``;
    a default pipeline without a known input size.
    """
    from brickzoo.data.transforms import check_transforms

    size_given = data.get("image_size") is not None
    if size_given and _as_size(data["image_size"]) is None:
        problems.add("data.image_size", f"expected a positive int or [height, width], got {data['image_size']!r}")
    transforms = data.get("transforms") or {}
    if not isinstance(transforms, dict):
        problems.add("data.transforms", f"expected a mapping with 'train' and/or 'eval' spec lists, got {transforms!r}")
        return
    problems.unknown_keys("data.transforms", transforms, TRANSFORM_KEYS)
    given = {key: transforms[key] for key in TRANSFORM_KEYS if key in transforms}
    before = len(problems.items)
    for key, specs in given.items():
        check_transforms(problems, f"data.transforms.{key}", specs)
    readable = all(isinstance(data.get(key) or {}, dict) for key in ("args", *SPLITS))
    if len(problems.items) > before or not readable or (size_given and _as_size(data["image_size"]) is None):
        return  # no size can be read off invalid spec lists, split arguments or image_size (reported already)
    for key, specs in given.items():
        _check_sizes(problems, name, data, key, specs)
    if len(given) < len(TRANSFORM_KEYS) and input_size(name, data) is None:
        missing = next(key for key in TRANSFORM_KEYS if key not in given)
        problems.add("data.image_size", "missing; " + _missing_size_message(name, missing))


def _check_sizes(problems: Problems, name: str, data: Mapping[str, Any], key: str, specs: list[Any]) -> None:
    """The size problems of one valid spec list over each split it serves."""
    path = f"data.transforms.{key}"
    wanted = _as_size(data["image_size"]) if data.get("image_size") is not None else None
    for split in _present_splits(name, data, key):
        state, culprit = size_after(specs, split_image_size(name, data, split))
        if state == VARIES:
            problems.add(
                path,
                f"leaves the {split} images at different sizes ({culprit} resizes each sample differently and no "
                f"later transform fixes the size), but the loader stacks them into batches; end the pipeline with "
                f"{_ENDINGS} (e.g. {{random_crop: {{size: 320, pad_if_needed: true}}}})",
            )
        elif key == "eval" and wanted is not None and isinstance(state, tuple) and state != wanted:
            problems.add(
                path,
                f"leaves the {split} images at {list(state)}, but data.image_size (the model's input size) is "
                f"{list(wanted)}; make them agree",
            )
    if key == "eval":
        for index, (entry, _) in enumerate(_entries(specs)):
            if entry in _RANDOM:
                problems.add(
                    f"{path}[{index}].{entry}",
                    "a random transform in the evaluation pipeline makes metrics and predictions depend on chance "
                    "(and predictions cannot be mapped back to the image); move it to data.transforms.train, "
                    "or use letterbox, resize or center_crop here",
                )
