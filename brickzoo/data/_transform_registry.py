"""The named transforms a config may list, their validation with key paths, and the default pipelines per task."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from torchvision import tv_tensors
from torchvision.transforms import v2

from brickzoo.data._transform_dataset import SanitizeBoxes
from brickzoo.data._transform_letterbox import MASK_FILL, PAD_FILL, Letterbox, as_size
from brickzoo.errors import ConfigError, DataError, ZooError

if TYPE_CHECKING:
    from brickzoo.zoo._validate import Problems

Interpolation = Literal["nearest", "nearest-exact", "bilinear", "bicubic"]
PaddingMode = Literal["constant", "edge", "reflect", "symmetric"]
Fill = float | list[float]
Size = int | list[int]
TASKS = ("classification", "segmentation", "detection")


def _fill(fill: Fill) -> dict[type, Any]:
    """The v2 fill of images (``fill``) and masks (255, ignore)."""
    return {tv_tensors.Image: list(fill) if isinstance(fill, list) else float(fill), tv_tensors.Mask: MASK_FILL}


def _range(value: Sequence[float], name: str, owner: str, low: float = 0.0) -> tuple[float, float]:
    """``value`` as ``(min, max)`` with ``low <= min <= max``; ConfigError otherwise."""
    first, second = float(value[0]), float(value[1])
    if not low <= first <= second:
        raise ConfigError(f"{owner}: {name} must be [min, max] with {low} <= min <= max, got {list(value)}")
    return first, second


def _size(size: Size, owner: str) -> list[int]:
    try:
        return list(as_size(size, owner))
    except DataError as error:
        raise ConfigError(str(error)) from None


# ---- builders: one per registered name, arguments in the torchvision.transforms.v2 vocabulary ----


def letterbox(size: Size, center: bool = True, fill: Fill = PAD_FILL) -> v2.Transform:
    """:class:`Letterbox`: long side to ``size``, aspect ratio kept, padded with grey (masks with 255)."""
    return Letterbox(_size(size, "letterbox"), center=center, fill=fill)


def resize(
    size: Size, max_size: int | None = None, interpolation: Interpolation = "bilinear", antialias: bool = True
) -> v2.Transform:
    """``v2.Resize``: an int resizes the shorter side (aspect kept), ``[height, width]`` stretches."""
    target = [_size(size, "resize")[0]] if isinstance(size, int) else _size(size, "resize")
    mode = v2.InterpolationMode(interpolation)
    return v2.Resize(target, interpolation=mode, max_size=max_size, antialias=antialias)


def random_resized_crop(
    size: Size,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: Interpolation = "bilinear",
    antialias: bool = True,
) -> v2.Transform:
    """``v2.RandomResizedCrop``: a random area ``scale`` and aspect ``ratio`` of the image, resized to ``size``."""
    scale_range = _range(scale, "scale", "random_resized_crop")
    ratio_range = _range(ratio, "ratio", "random_resized_crop")
    mode = v2.InterpolationMode(interpolation)
    return v2.RandomResizedCrop(_size(size, "random_resized_crop"), scale_range, ratio_range, mode, antialias)


def scale_jitter(
    target_size: Size,
    scale_range: tuple[float, float] = (0.1, 2.0),
    interpolation: Interpolation = "bilinear",
    antialias: bool = True,
) -> v2.Transform:
    """``v2.ScaleJitter``: fit into ``target_size`` (``[height, width]``) times a random scale, aspect kept."""
    height, width = _size(target_size, "scale_jitter")
    scales = _range(scale_range, "scale_range", "scale_jitter")
    mode = v2.InterpolationMode(interpolation)
    return v2.ScaleJitter((width, height), scales, interpolation=mode, antialias=antialias)  # v2 reads (w, h)


def random_resize(
    min_size: int, max_size: int, interpolation: Interpolation = "bilinear", antialias: bool = True
) -> v2.Transform:
    """``v2.RandomResize``: the shorter side to a random size in ``[min_size, max_size)``, aspect kept."""
    if not 1 <= min_size < max_size:
        raise ConfigError(f"random_resize: expected 1 <= min_size < max_size, got {min_size} and {max_size}")
    return v2.RandomResize(min_size, max_size, interpolation=v2.InterpolationMode(interpolation), antialias=antialias)


def random_zoom_out(
    side_range: tuple[float, float] = (1.0, 4.0), p: float = 0.5, fill: Fill = PAD_FILL
) -> v2.Transform:
    """``v2.RandomZoomOut``: place the image in a canvas up to ``side_range`` times larger (keeps every object)."""
    return v2.RandomZoomOut(fill=_fill(fill), side_range=_range(side_range, "side_range", "random_zoom_out", 1.0), p=p)


def random_iou_crop(
    min_scale: float = 0.3,
    max_scale: float = 1.0,
    min_aspect_ratio: float = 0.5,
    max_aspect_ratio: float = 2.0,
    sampler_options: list[float] | None = None,
    trials: int = 40,
) -> v2.Transform:
    """``v2.RandomIoUCrop`` (SSD): a crop overlapping the boxes by a random minimum IoU; needs boxes."""
    _range((min_scale, max_scale), "[min_scale, max_scale]", "random_iou_crop")
    _range((min_aspect_ratio, max_aspect_ratio), "[min_aspect_ratio, max_aspect_ratio]", "random_iou_crop")
    return v2.RandomIoUCrop(min_scale, max_scale, min_aspect_ratio, max_aspect_ratio, sampler_options, trials)


def random_crop(
    size: Size,
    padding: int | list[int] | None = None,
    pad_if_needed: bool = False,
    fill: Fill = PAD_FILL,
    padding_mode: PaddingMode = "constant",
) -> v2.Transform:
    """``v2.RandomCrop``: a crop of ``size`` at a random place; ``pad_if_needed`` pads smaller images first."""
    return v2.RandomCrop(_size(size, "random_crop"), padding, pad_if_needed, _fill(fill), padding_mode)


def center_crop(size: Size) -> v2.Transform:
    """``v2.CenterCrop``: the central ``size`` of the image (padded with 0 where the image is smaller)."""
    return v2.CenterCrop(_size(size, "center_crop"))


def pad(padding: int | list[int], fill: Fill = PAD_FILL, padding_mode: PaddingMode = "constant") -> v2.Transform:
    """``v2.Pad``: ``padding`` pixels on each side (or ``[left, top, right, bottom]``)."""
    return v2.Pad(padding, fill=_fill(fill), padding_mode=padding_mode)


def horizontal_flip(p: float = 0.5) -> v2.Transform:
    """``v2.RandomHorizontalFlip``: mirror left-right with probability ``p``."""
    return v2.RandomHorizontalFlip(p)


def vertical_flip(p: float = 0.5) -> v2.Transform:
    """``v2.RandomVerticalFlip``: mirror top-bottom with probability ``p``."""
    return v2.RandomVerticalFlip(p)


def color_jitter(
    brightness: float | tuple[float, float] | None = None,
    contrast: float | tuple[float, float] | None = None,
    saturation: float | tuple[float, float] | None = None,
    hue: float | tuple[float, float] | None = None,
) -> v2.Transform:
    """``v2.ColorJitter``: random brightness, contrast, saturation and hue (a number x means [1 - x, 1 + x])."""
    return v2.ColorJitter(brightness, contrast, saturation, hue)


def photometric_distort(
    brightness: tuple[float, float] = (0.875, 1.125),
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue: tuple[float, float] = (-0.05, 0.05),
    p: float = 0.5,
) -> v2.Transform:
    """``v2.RandomPhotometricDistort`` (SSD): each colour change applied with probability ``p``."""
    return v2.RandomPhotometricDistort(brightness, contrast, saturation, hue, p)


def gaussian_blur(kernel_size: int | list[int], sigma: float | tuple[float, float] = (0.1, 2.0)) -> v2.Transform:
    """``v2.GaussianBlur``: blur with an odd ``kernel_size`` and a random ``sigma`` in the range."""
    return v2.GaussianBlur(kernel_size, sigma)


def random_grayscale(p: float = 0.1) -> v2.Transform:
    """``v2.RandomGrayscale``: grey levels (on three channels) with probability ``p``."""
    return v2.RandomGrayscale(p)


def sanitize_boxes(min_size: float = 1.0, min_area: float = 1.0) -> v2.Transform:
    """:class:`SanitizeBoxes`: drop boxes narrower than ``min_size`` or smaller than ``min_area`` pixels."""
    return SanitizeBoxes(min_size, min_area)


@dataclass(frozen=True)
class TransformEntry:
    """A transform a config may name.

    Attributes:
        builder: makes the transform; its signature is what configs are checked against.
        crops: it can cut objects out of the image (so boxes may be dropped, and a classification
            label that depends on the objects, such as the shapes dataset's largest shape, may no
            longer be true).

    Example:
        >>> from brickzoo.data.transforms import transform_entry
        >>> entry = transform_entry("random_iou_crop")
        >>> entry.crops, entry.builder(min_scale=0.5).min_scale
        (True, 0.5)
    """

    builder: Callable[..., v2.Transform]
    crops: bool = False


_REGISTRY: dict[str, TransformEntry] = {}


def register_transform(name: str, builder: Callable[..., v2.Transform], crops: bool = False) -> None:
    """Make ``builder`` available to configs as ``name``; its typed signature defines the arguments.

    Raises:
        ZooError: ``name`` is already registered.

    Example:
        >>> from torchvision.transforms import v2
        >>> from brickzoo.data.transforms import list_transforms, register_transform
        >>> def invert(p: float = 0.5) -> v2.Transform:
        ...     return v2.RandomInvert(p)
        >>> register_transform("invert_example", invert)
        >>> "invert_example" in list_transforms()
        True
    """
    if name in _REGISTRY:
        raise ZooError(f"register_transform: a transform named {name!r} is already registered")
    _REGISTRY[name] = TransformEntry(builder, crops)


_BUILT_IN: list[tuple[Callable[..., v2.Transform], bool]] = [
    (letterbox, False),
    (resize, False),
    (random_resized_crop, True),
    (scale_jitter, False),
    (random_resize, False),
    (random_zoom_out, False),
    (random_iou_crop, True),
    (random_crop, True),
    (center_crop, True),
    (pad, False),
    (horizontal_flip, False),
    (vertical_flip, False),
    (color_jitter, False),
    (photometric_distort, False),
    (gaussian_blur, False),
    (random_grayscale, False),
    (sanitize_boxes, False),
]
for _builder, _crops in _BUILT_IN:
    register_transform(_builder.__name__, _builder, _crops)


def list_transforms(crops: bool | None = None) -> list[str]:
    """Names of the registered transforms, sorted; ``crops=False`` lists those that never cut objects out.

    Example:
        >>> from brickzoo.data.transforms import list_transforms
        >>> list_transforms(crops=True)
        ['center_crop', 'random_crop', 'random_iou_crop', 'random_resized_crop']
    """
    return sorted(name for name, entry in _REGISTRY.items() if crops is None or entry.crops == crops)


def _close_names(name: str) -> str:
    """The registered names close to ``name`` (typos), or all of them."""
    close = difflib.get_close_matches(name, list(_REGISTRY), n=2, cutoff=0.75)
    return f"did you mean {close}?" if close else f"expected one of {list_transforms()}"


def transform_entry(name: str) -> TransformEntry:
    """The registry entry of ``name``; ZooError with close matches when unknown.

    Example:
        >>> from brickzoo.data.transforms import transform_entry
        >>> transform_entry("letterbox").crops
        False
    """
    if name not in _REGISTRY:
        raise ZooError(f"unknown transform {name!r}; {_close_names(name)}")
    return _REGISTRY[name]


def create_transform(name: str, **arguments: Any) -> v2.Transform:
    """Build the registered transform ``name`` with ``arguments`` (checked like a config entry).

    Raises:
        ZooError: unknown name. ConfigError: an unknown, missing or badly typed argument.

    Example:
        >>> from brickzoo.data.transforms import create_transform
        >>> create_transform("horizontal_flip", p=1.0)
        RandomHorizontalFlip(p=1.0)
    """
    transform_entry(name)
    return build_transforms([{name: arguments}], path="", origin=f"create_transform({name!r})").transforms[0]


def _parse_entry(problems: Problems, path: str, item: Any) -> tuple[str, dict[str, Any]] | None:
    """``(name, arguments)`` of one spec entry, or None after recording why it is not one."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and len(item) == 1:
        name, arguments = next(iter(item.items()))
        if not isinstance(name, str):
            problems.add(path, f"expected a transform name as the key, got {name!r}")
            return None
        if arguments is None:
            return name, {}
        if not isinstance(arguments, Mapping):
            problems.add(
                f"{path}.{name}", f"expected a mapping of arguments, got {type(arguments).__name__} {arguments!r}"
            )
            return None
        return name, dict(arguments)
    problems.add(path, f"expected a transform name or {{name: {{arguments}}}} with one key, got {item!r}")
    return None


def check_transforms(problems: Problems, path: str, specs: Any) -> None:
    """Add every problem of a transform spec list to ``problems``, each with its key path.

    A spec list holds registered names, alone (``horizontal_flip``) or with arguments
    (``{color_jitter: {brightness: 0.2}}``). Reported: a spec that is not a list, an entry of the
    wrong form, an unknown name (with close matches), unknown, missing or badly typed arguments
    (with close matches, by the config validator's ``check_arguments``), and values the transform
    refuses (``p: 1.5``). Key paths look like ``data.transforms.train[2].color_jitter.brightnes``.

    Args:
        problems: a :class:`brickzoo.zoo._validate.Problems` collecting the config's problems.
        path: key path of the list (``"data.transforms.train"``).
        specs: the list as read from YAML.

    Example:
        >>> from brickzoo.zoo._validate import Problems
        >>> from brickzoo.data.transforms import check_transforms
        >>> problems = Problems("recipe.yaml")
        >>> check_transforms(problems, "data.transforms.train", ["horizontal_flip", {"colour_jitter": {}}])
        >>> problems.items
        [('data.transforms.train[1].colour_jitter', "unknown transform; did you mean ['color_jitter']?")]
    """
    from brickzoo.zoo._validate import check_arguments

    if not isinstance(specs, list):
        problems.add(path, f"expected a list of transforms (names or {{name: {{arguments}}}}), got {specs!r}")
        return
    for number, item in enumerate(specs):
        parsed = _parse_entry(problems, f"{path}[{number}]", item)
        if parsed is None:
            continue
        name, arguments = parsed
        where = f"{path}[{number}].{name}"
        if name not in _REGISTRY:
            problems.add(where, f"unknown transform; {_close_names(name)}")
            continue
        builder = _REGISTRY[name].builder
        before = len(problems.items)
        check_arguments(problems, where, builder, arguments, set())
        if len(problems.items) == before:
            try:
                builder(**arguments)
            except (ValueError, TypeError) as error:
                problems.add(where, f"refused by {name}: {error}")


def build_transforms(specs: Any, path: str = "transforms", origin: str = "transforms") -> v2.Compose:
    """Check a transform spec list (every problem at once) and build its pipeline.

    Args:
        specs: the list, e.g. ``[{"letterbox": {"size": 320}}, "horizontal_flip"]``.
        path: key path of the list in messages (``"data.transforms.train"``).
        origin: what holds the list (a config file name), first in the error message.

    Returns:
        A ``v2.Compose`` over dicts of tv_tensors (an empty list gives an identity pipeline).

    Raises:
        ConfigError: listing every problem with its key path (see :func:`check_transforms`).

    Example:
        >>> from brickzoo.data.transforms import build_transforms
        >>> build_transforms([{"letterbox": {"size": 320}}, "horizontal_flip"])
        Compose(
              Letterbox(size=(320, 320), center=True, fill=0.4470588235294118, mask_fill=255)
              RandomHorizontalFlip(p=0.5)
        )
    """
    from brickzoo.zoo._validate import Problems

    problems = Problems(origin)
    check_transforms(problems, path, specs)
    problems.raise_if_any()
    built: list[v2.Transform] = []
    for item in specs:
        name, arguments = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        built.append(_REGISTRY[name].builder(**(arguments or {})))
    return v2.Compose(built or [v2.Identity()])


def default_transform_specs(
    tasks: Sequence[str], image_size: int | Sequence[int], train: bool
) -> list[str | dict[str, dict[str, Any]]]:
    """The pipeline a sample with targets for ``tasks`` gets when the config names none, as a spec list.

    Chosen as the anchors do (torchvision's classification and detection references, LSJ):

    - **classification only** (the label describes the whole image): training
      ``random_resized_crop`` (scale 0.08-1), ``horizontal_flip``, ``color_jitter`` 0.4;
      evaluation ``resize`` of the shorter side to ``size / 0.875`` and ``center_crop``.
    - **detection and/or segmentation**: training ``scale_jitter`` (0.5-1.5 of the letterbox
      scale), ``random_crop`` to the size (padding smaller images with grey / 255), flip and
      colour jitter, ``sanitize_boxes``; evaluation ``letterbox``. Crops clip boxes; boxes left
      too small are dropped and counted in ``boxes_dropped``.
    - **classification with detection or segmentation** (one pipeline safe for every task; the
      shapes dataset labels its largest shape, which a crop could cut away): as above, but the
      scale jitter stays within 0.6-1.0, so ``random_crop`` only pads and places the image at a
      random position and never cuts an object; evaluation ``letterbox``.

    Args:
        tasks: the tasks the samples carry targets for (a dataset's ``tasks``), not only the
            heads trained: the pipeline must keep every target of the sample true.
        image_size: the model's input size, an int or ``(height, width)``.
        train: the training pipeline (random) or the evaluation one (deterministic).

    Returns:
        A spec list for :func:`build_transforms`.

    Example:
        >>> from brickzoo.data.transforms import default_transform_specs
        >>> default_transform_specs(["detection"], 320, train=False)
        [{'letterbox': {'size': [320, 320]}}]
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise DataError(
            f"default_transform_specs: tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}"
        )
    size = list(as_size(image_size if isinstance(image_size, int) else tuple(image_size), "default_transform_specs"))
    jitter = {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}}
    if set(tasks) == {"classification"}:
        if not train:
            return [{"resize": {"size": round(max(size) / 0.875)}}, {"center_crop": {"size": size}}]
        return [{"random_resized_crop": {"size": size}}, "horizontal_flip", jitter]
    if not train:
        return [{"letterbox": {"size": size}}]
    scales = [0.6, 1.0] if "classification" in tasks else [0.5, 1.5]
    tail = ["sanitize_boxes"] if "detection" in tasks else []
    return [
        {"scale_jitter": {"target_size": size, "scale_range": scales}},
        {"random_crop": {"size": size, "pad_if_needed": True}},
        "horizontal_flip",
        jitter,
        *tail,
    ]
