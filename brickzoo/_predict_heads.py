"""Finding a collection's task heads: their task, result tensors, class names and visualizer.

Shared by :mod:`brickzoo.predict` (results in the user's pixels) and the zoo's ONNX export (the
heads' results as the graph's outputs, their class names in the metadata).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brickzoo._collection import BrickCollection
from brickzoo._names import resolve_name
from brickzoo.errors import BrickDefinitionError

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
DETECTION = "detection"
TASKS = (CLASSIFICATION, SEGMENTATION, DETECTION)

# task -> the results a deployer needs, in the order the ONNX graph lists them
RESULT_KEYS: dict[str, tuple[str, ...]] = {
    CLASSIFICATION: ("probabilities", "predictions"),
    SEGMENTATION: ("predictions",),
    DETECTION: ("boxes", "scores", "labels"),
}


@dataclass(frozen=True)
class HeadSpec:
    """One task head of a collection, as found by :func:`find_heads`.

    Attributes:
        name: the head's path in the collection (``"classify"``); its tensors are ``<name>/...``.
        task: ``"classification"``, ``"segmentation"`` or ``"detection"``.
        outputs: result key (``"probabilities"``, ``"boxes"``...) -> absolute tensor name.
        class_names: one name per class (segmentation: background first).
        multilabel: classification only: independent classes (sigmoid), predictions ``[B, C]`` 0/1.
        visualizer: the head's visualizer object (``ClassificationVisualizer``...), or None.
    """

    name: str
    task: str
    outputs: dict[str, str]
    class_names: list[str]
    multilabel: bool = False
    visualizer: Callable[..., Any] | None = field(default=None, compare=False)

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (``class <index>`` beyond the known names)."""
        return self.class_names[index] if 0 <= index < len(self.class_names) else f"class {index}"


def _head_modules() -> dict[type, str]:
    """Head module type -> task (imported here: the heads import timm and torchvision)."""
    from brickzoo.bag_of_bricks.image_classification import ClassificationHead
    from brickzoo.bag_of_bricks.object_detection import DetectionPostprocessor
    from brickzoo.bag_of_bricks.semantic_segmentation import SemanticSegmentationDecoder

    return {
        ClassificationHead: CLASSIFICATION,
        SemanticSegmentationDecoder: SEGMENTATION,
        DetectionPostprocessor: DETECTION,
    }


def _visualizers() -> dict[type, str]:
    from brickzoo.bag_of_bricks.image_classification import ClassificationVisualizer
    from brickzoo.bag_of_bricks.object_detection import DetectionVisualizer
    from brickzoo.bag_of_bricks.semantic_segmentation import SemanticSegmentationVisualizer

    return {
        ClassificationVisualizer: CLASSIFICATION,
        SemanticSegmentationVisualizer: SEGMENTATION,
        DetectionVisualizer: DETECTION,
    }


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _num_classes(module: Any, task: str, visualizer: Any, siblings: list[Any]) -> int:
    """How many classes a head module predicts (detection: its visualizer's or its dense head's count; 0 if unknown)."""
    if task == CLASSIFICATION:
        return int(module.num_classes)
    if task == SEGMENTATION:
        return int(module.classifier.out_channels)
    counts = [getattr(visualizer, "num_classes", None), *(getattr(m, "num_classes", None) for m in siblings)]
    return next((int(c) for c in counts if isinstance(c, int) and not isinstance(c, bool)), 0)


def _class_names(spec_name: str, task: str, count: int, given: Sequence[str] | None, visualizer: Any) -> list[str]:
    """The head's class names: given, else its visualizer's, else ``class 0``, ``class 1``..."""
    names = list(given) if given is not None else getattr(visualizer, "class_names", None)
    if names is None:
        return [f"class {i}" for i in range(count)]
    if count and len(names) != count:
        raise BrickDefinitionError(
            f"head {spec_name!r} ({task}) predicts {count} classes but has {len(names)} class names: {list(names)[:10]}"
        )
    return [str(name) for name in names]


def find_heads(
    collection: BrickCollection, class_names: Mapping[str, Sequence[str]] | None = None
) -> dict[str, HeadSpec]:
    """The classification, segmentation and detection heads of a collection, in brick order.

    A head is a brick whose module is a ``ClassificationHead``, ``SemanticSegmentationDecoder``
    or ``DetectionPostprocessor`` (what the zoo's head factories build), or a subclass of one; its name is the path of
    the collection holding it (``classify`` for ``classify/classify``). Its visualizer is the
    visualization brick of the same collection drawing that task.

    Args:
        collection: the model.
        class_names: ``{head name: class names}`` overriding the names the visualizers carry
            (a recipe's ``class_names``); heads without any get ``class 0``, ``class 1``...

    Returns:
        ``{head name: HeadSpec}``.

    Raises:
        BrickDefinitionError: a head's class names do not match its number of classes.
    """
    modules, drawers = _head_modules(), _visualizers()
    found: dict[str, tuple[str, Any, str, Any]] = {}  # head -> (task, module, brick path, brick)
    visualizers: dict[tuple[str, str], Any] = {}
    modules_in: dict[str, list[Any]] = {}  # parent path -> the modules of its bricks
    for path, brick in collection.named_bricks():
        modules_in.setdefault(_parent(path), []).append(getattr(brick, "model", None))
        drawer = getattr(brick, "callable", None)
        drawn = next((task for kind, task in drawers.items() if isinstance(drawer, kind)), None)
        if drawn is not None:
            visualizers.setdefault((_parent(path), drawn), drawer)
        module = getattr(brick, "model", None)
        task = next((task for kind, task in modules.items() if isinstance(module, kind)), None)
        if task is not None:
            found.setdefault(_parent(path) or path, (task, module, path, brick))
    heads: dict[str, HeadSpec] = {}
    given = dict(class_names or {})
    for name, (task, module, path, brick) in found.items():
        visualizer = visualizers.get((_parent(path), task))
        outputs = brick.output_names
        keys = outputs if isinstance(outputs, dict) else dict(zip(RESULT_KEYS[task], outputs, strict=False))
        resolved = {key: resolve_name(value, _parent(path), path) for key, value in keys.items()}
        count = _num_classes(module, task, visualizer, modules_in.get(_parent(path), []))
        names = _class_names(name, task, count, given.get(name), visualizer)
        multilabel = bool(getattr(module, "multilabel", False))
        heads[name] = HeadSpec(name, task, resolved, names, multilabel, visualizer)
    return heads


def head_results(heads: Mapping[str, HeadSpec]) -> list[str]:
    """The tensor names of every head's results (:data:`RESULT_KEYS`), heads in order."""
    return [spec.outputs[key] for spec in heads.values() for key in RESULT_KEYS[spec.task] if key in spec.outputs]
