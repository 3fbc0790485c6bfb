"""ONNX export of zoo models for deployers: the heads' results as outputs, the model's contract as metadata.

:func:`export_onnx` exports a recipe's (or a collection's) MODEL group so that a deployer gets
what they need and nothing else: the graph's outputs are the heads' results
(``classify/probabilities``, ``classify/predictions``, ``segment/predictions``,
``detect/boxes``, ``detect/scores``, ``detect/labels`` and ``detect/num_detections``), height
and width are dynamic where the graph allows it (checked against torch at a second size; a
model that cannot is exported at a fixed size, and the file and the report say why), and the
file's metadata says how to feed the model and read its outputs (see :data:`METADATA_KEYS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brickzoo._bricks import BrickNotTrainable
from brickzoo._collection import BrickCollection
from brickzoo._export import ParityReport, check_onnx_parity, export_bricks_as_onnx, write_onnx_metadata
from brickzoo._groups import MODEL
from brickzoo._predict_heads import CLASSIFICATION, DETECTION, SEGMENTATION, HeadSpec, find_heads, head_results
from brickzoo.errors import ExportError

NUM_DETECTIONS = "num_detections"
"""A detection head's count of valid rows per image, ``<head>/num_detections`` (``Tensor[B]`` int64)."""

FLOAT_TOLERANCE = 1e-3
"""Largest |onnxruntime - torch| of a float output at the second size before height and width are fixed."""

METADATA_KEYS: dict[str, str] = {
    "brickzoo_version": "the brickzoo version that wrote the file",
    "config": "the zoo config (recipe) name",
    "input_name": "the graph's image input",
    "input_dtype": "float32",
    "input_layout": "NCHW",
    "input_channels": "RGB",
    "input_range": "[0, 1]: un-normalised pixel values divided by 255",
    "input_size": "[H, W] the model was trained and evaluated at",
    "resize": "letterbox (scale the long side to input_size, keep the aspect ratio, pad), stretch, or another "
    "evaluation resize (center_crop, none, custom: see eval_transforms)",
    "letterbox": "letterbox only: pad value and placement",
    "eval_transforms": "the evaluation pipeline as brickzoo transform specs: what an image goes through first",
    "dynamic_batch_size": "true: any batch size",
    "dynamic_image_size": "true: any height and width (export at input_size for the trained behaviour)",
    "fixed_size_reason": "only when dynamic_image_size is false: why",
    "normalization": "where mean/std are applied: inside the graph, or nowhere",
    "mean": "per-channel mean the graph subtracts (informational when inside the graph)",
    "std": "per-channel std the graph divides by",
    "class_names": "{head: [class names]}",
    "heads": "{head: {task, outputs: {result: tensor name}}}",
    "outputs": "{output name: dtype, shape and meaning}",
    "pretrained": "only for a model that started from a prebuilt zoo entry: the entry's name, source, class "
    "names, metrics on its held-out set, preprocessing, provenance, licence and the bricks loaded from it",
}
"""The metadata keys :func:`export_onnx` writes (values: strings, JSON for lists and dicts) and what each holds."""


class CountDetections(nn.Module):
    """The number of valid (non-padding) detections per image: ``labels [B, K]`` -> ``Tensor[B]`` int64."""

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels >= 0).sum(dim=1)  # [B]


@dataclass
class ZooExport:
    """What :func:`export_onnx` wrote and checked.

    Attributes:
        path: the ONNX file.
        outputs: the graph's outputs, in order.
        metadata: the metadata written into the file (values before JSON encoding).
        parity: onnxruntime against torch, at the export size and (dynamic) at a second size.
        dynamic_image_size: whether height and width are dynamic.
        fixed_size_reason: why they are not, when they are not.
    """

    path: Path
    outputs: list[str]
    metadata: dict[str, Any]
    parity: list[ParityReport] = field(default_factory=list)
    dynamic_image_size: bool = False
    fixed_size_reason: str | None = None

    def describe(self) -> str:
        """The export as the ``brickzoo export`` command prints it: size mode, metadata, parity."""
        import json

        if self.dynamic_image_size:
            size = f"dynamic height and width (checked at {len(self.parity)} sizes)"
        else:
            size = f"fixed height and width {self.metadata['input_size']} ({self.fixed_size_reason})"
        lines = [f"exported {self.path}: outputs {', '.join(self.outputs)}; {size}", "metadata:"]
        for key, value in self.metadata.items():
            if isinstance(value, dict):
                lines.append(f"  {key}:")
                lines += [f"    {k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
            else:
                lines.append(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}")
        return "\n".join(lines + [str(report) for report in self.parity])


def _preprocessing(model: BrickCollection) -> dict[str, Any]:
    """Where the model normalises its images: mean and std of its Preprocessor brick, if it has one."""
    from brickzoo.bag_of_bricks.preprocessors import Preprocessor

    for _, brick in model.named_bricks():
        module = getattr(brick, "model", None)
        if isinstance(module, Preprocessor) and MODEL in brick.groups:
            return {
                "normalization": "inside the graph (a preprocessor brick): feed un-normalised RGB in [0, 1]",
                "mean": [round(float(v), 6) for v in module.mean.flatten()],
                "std": [round(float(v), 6) for v in module.std.flatten()],
            }
    return {"normalization": "none: the graph takes RGB in [0, 1] as it is"}


def _output_descriptions(heads: Mapping[str, HeadSpec]) -> dict[str, str]:
    """What each head result means, by tensor name."""
    described: dict[str, str] = {}
    for name, spec in heads.items():
        out = spec.outputs
        if spec.task == CLASSIFICATION:
            kind = "sigmoid, multilabel" if spec.multilabel else "softmax"
            described[out["probabilities"]] = f"float32 [B, C]: probability of each class ({kind})"
            described[out["predictions"]] = (
                "int64 [B, C]: 1 for each predicted class" if spec.multilabel else "int64 [B]: the predicted class"
            )
        elif spec.task == SEGMENTATION:
            described[out["predictions"]] = "int64 [B, H, W]: class index of each pixel of the model input"
        else:
            described[out["boxes"]] = (
                "float32 [B, K, 4]: x1, y1, x2, y2 in pixels of the model input, best first; rows from "
                f"{name}/{NUM_DETECTIONS} on are padding (zeros)"
            )
            described[out["scores"]] = "float32 [B, K]: score of each box (0 for padding)"
            described[out["labels"]] = "int64 [B, K]: class of each box (-1 for padding)"
            described[f"{name}/{NUM_DETECTIONS}"] = "int64 [B]: valid rows of the detections of each image"
    return described


def _with_counts(model: BrickCollection, heads: Mapping[str, HeadSpec]) -> BrickCollection:
    """The model plus a ``<head>/num_detections`` brick per detection head (the model's bricks shared, not copied)."""
    counters: dict[str, Any] = {}
    for name, spec in heads.items():
        if spec.task == DETECTION:
            key = f"{name.replace('/', '_')}_{NUM_DETECTIONS}"
            while key in model or key in counters:
                key = f"_{key}"
            counters[key] = BrickNotTrainable(
                CountDetections(), input_names=[spec.outputs["labels"]], output_names=[f"{name}/{NUM_DETECTIONS}"]
            )
    if not counters:
        return model
    wrapper = BrickCollection({**dict(model.items()), **counters})
    wrapper.train(model.training)  # a new module starts in training mode; export restores this state
    return wrapper


def default_outputs(heads: Mapping[str, HeadSpec]) -> list[str]:
    """The heads' results, with ``<head>/num_detections`` after each detection head's labels."""
    names: list[str] = []
    for name in head_results(heads):
        names.append(name)
        for head, spec in heads.items():
            if spec.task == DETECTION and name == spec.outputs["labels"]:
                names.append(f"{head}/{NUM_DETECTIONS}")
    return names


def _head_record(name: str, spec: HeadSpec, outputs: Sequence[str]) -> dict[str, Any]:
    """``{"task", "outputs": {result: tensor name}}`` of one head, listing the results that are graph outputs."""
    results = dict(spec.outputs)
    if spec.task == DETECTION:
        results[NUM_DETECTIONS] = f"{name}/{NUM_DETECTIONS}"
    return {"task": spec.task, "outputs": {key: value for key, value in results.items() if value in outputs}}


def build_metadata(
    model: BrickCollection,
    heads: Mapping[str, HeadSpec],
    input_size: Sequence[int],
    resize: str,
    config_name: str | None,
    outputs: Sequence[str],
    eval_transforms: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The metadata :func:`export_onnx` writes (see :data:`METADATA_KEYS`); size keys are set by the export."""
    import brickzoo
    from brickzoo.data.transforms import PAD_FILL

    (input_name,) = model.required_inputs(MODEL)
    metadata: dict[str, Any] = {
        "brickzoo_version": brickzoo.__version__,
        "config": config_name or "",
        "input_name": input_name,
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "input_channels": "RGB",
        "input_range": [0.0, 1.0],
        "input_size": [int(input_size[0]), int(input_size[1])],
        "resize": resize,
    }
    if resize == "letterbox":
        metadata["letterbox"] = {
            "pad_value": round(PAD_FILL, 6),
            "placement": "centred; the odd padding pixel goes right/bottom",
        }
    if eval_transforms is None:
        eval_transforms = [{"letterbox" if resize == "letterbox" else "resize": {"size": metadata["input_size"]}}]
    metadata["eval_transforms"] = list(eval_transforms)
    metadata["dynamic_batch_size"] = True
    metadata.update(_preprocessing(model))
    metadata["class_names"] = {name: spec.class_names for name, spec in heads.items()}
    metadata["heads"] = {name: _head_record(name, spec, outputs) for name, spec in heads.items()}
    described = _output_descriptions(heads)
    metadata["outputs"] = {name: described.get(name, "an intermediate tensor of the model") for name in outputs}
    return metadata


def _other_sizes(size: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The sizes a dynamic export is traced at and checked at besides ``size``: larger, other aspect ratios.

    Tracing above the input size keeps every feature map larger than 1x1 (a 1x1 map would be
    specialised by the tracer and break other sizes).
    """
    height, width = int(size[0]), int(size[1])
    return (height + 32, width + 64), (height + 64, width + 32)


def _short(error: Exception) -> str:
    """The first line of an error, at most 300 characters: the reason given for a fixed size."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= 300 else line[:297] + "..."


def _float_outputs(path: Path) -> set[str]:
    """The outputs of an ONNX file that hold floating-point values."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    graph = onnx.load(str(path), load_external_data=False).graph
    return {output.name for output in graph.output if output.type.tensor_type.elem_type in floats}


def _resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _try_dynamic(
    path: Path,
    graph: BrickCollection,
    name: str,
    images: tuple[torch.Tensor, torch.Tensor],
    outputs: list[str],
    opset: int | None,
) -> tuple[str | None, list[ParityReport]]:
    """Export with dynamic height and width and check it: ``(None, reports)``, or ``(reason, [])`` when it fails.

    ``images`` are the export batch and the check batch, at the input size. The graph is traced
    at a larger size (:func:`_other_sizes`) and checked at the input size (check batch) and at a
    third size (one image). The model failing at the traced size, an export or onnxruntime
    failure, or a float output differing by more than :data:`FLOAT_TOLERANCE` is the reason to
    fix the size.
    """
    import onnxruntime as ort

    export_images, check_images = images
    traced, other = _other_sizes(export_images.shape[-2:])
    feeds = [check_images, _resized(check_images[:1], other)]
    ort.set_default_logger_severity(4)  # a failure is expected and reported here; onnxruntime would print it too
    try:
        export_bricks_as_onnx(
            path,
            graph,
            {name: _resized(export_images, traced)},
            outputs=outputs,
            dynamic_image_size=True,
            opset_version=opset,
        )
        reports = [check_onnx_parity(path, graph, {name: feed}) for feed in feeds]
    except (ExportError, RuntimeError, ValueError) as error:  # also the model itself failing at the traced size
        return f"dynamic height and width failed (traced at {list(traced)}): {_short(error)}", []
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings
    floats = _float_outputs(path)
    for report in reports:
        differing = {
            out: diff for out, diff in report.max_abs_diff.items() if out in floats and not diff <= FLOAT_TOLERANCE
        }
        if differing:
            return (
                f"at {report.input_shapes[name]} onnxruntime differs from torch by {differing} (more than "
                f"{FLOAT_TOLERANCE}): the graph depends on the size it was traced at",
                [],
            )
    return None, reports


def _source(source: Any) -> tuple[BrickCollection, dict[str, Any]]:
    """The model and what a recipe says about it (input size, resize, class names, name, export settings)."""
    if isinstance(source, BrickCollection):
        return source, {}
    from brickzoo._predict_run import recipe_settings
    from brickzoo.zoo._recipe import Recipe

    if not isinstance(source, Recipe):
        raise ExportError(f"export_onnx: expected a Recipe or a BrickCollection, got {type(source).__name__}")
    export = source.export_settings
    settings = {
        **recipe_settings(source),
        "config_name": source.name,
        "batch_size": export["batch_size"],
        "check_batch_size": export["check_batch_size"],
        "opset_version": export["opset_version"],
        "eval_transforms": source.pipelines.specs["eval"],
    }
    if source.input_size is not None:  # evaluation images (random pixels for a recipe built without data)
        settings["example_images"] = source.example_inputs(max(export["batch_size"], export["check_batch_size"]))
    return source.model, settings


def export_onnx(
    source: Any,
    path: str | Path,
    *,
    input_size: int | Sequence[int] | None = None,
    resize: str | None = None,
    class_names: Mapping[str, Sequence[str]] | None = None,
    config_name: str | None = None,
    outputs: Sequence[str] | None = None,
    dynamic_image_size: bool = True,
    example_images: torch.Tensor | None = None,
    batch_size: int | None = None,
    check_batch_size: int | None = None,
    opset_version: int | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> ZooExport:
    """Export a zoo model to ONNX for deployment: head results out, the model's contract in the metadata.

    The MODEL group is exported with a dynamic batch and, when ``dynamic_image_size`` (the
    default), dynamic height and width: traced at a larger size (32 rows and 64 columns more),
    then checked against torch in onnxruntime at ``input_size`` with ``check_batch_size`` images
    and at a third size (64 rows and 32 columns more, one image). When the dynamic export fails
    or its outputs differ, the model is traced and exported at ``input_size`` instead, and
    ``fixed_size_reason`` (in the result and the file's metadata) says why. The metadata
    (:data:`METADATA_KEYS`) is readable with :func:`brickzoo.read_onnx_metadata` or
    ``onnx.load(path).metadata_props``.

    Args:
        source: a :class:`~brickzoo.zoo.Recipe` (its input size, resize mode, class names,
            name and ``export`` settings are used) or a :class:`~brickzoo.BrickCollection`.
        path: the ``.onnx`` file to write.
        input_size: ``(H, W)`` (or an int) the model expects; required for a collection.
        resize: ``"letterbox"`` or ``"stretch"``: how callers should bring images to ``input_size``
            (default: a recipe's evaluation pipeline, else letterbox).
        class_names: ``{head: names}`` overriding the heads' own.
        config_name: stored as ``config``.
        outputs: the tensor names to export (default: the heads' results, see :func:`default_outputs`).
        dynamic_image_size: try dynamic height and width.
        example_images: ``Tensor[N, 3, H, W]`` at ``input_size`` to trace and check with
            (default: a recipe's evaluation images, random for a recipe built without data, else
            seeded uniform noise).
        batch_size: images traced (default 2).
        check_batch_size: images of the parity check at the export size (default 3).
        opset_version: the ONNX opset (the exporter's default if None).
        extra_metadata: more metadata keys, e.g. ``{"pretrained": ...}`` (the prebuilt entry the
            model started from, see :meth:`~brickzoo.zoo.ModelCard.metadata`); a key the export
            writes itself is refused.

    Returns:
        A :class:`ZooExport` (``describe()`` gives what ``brickzoo export`` prints).

    Raises:
        ExportError: the model cannot be exported at all, ``outputs`` names tensors it does not write, or
            ``extra_metadata`` repeats a key the export writes.

    Example:
        >>> from brickzoo.zoo import build_recipe, export_onnx
        >>> result = export_onnx(build_recipe("shapes_detection"), "detector.onnx")  # doctest: +SKIP
        >>> result.outputs  # doctest: +SKIP
        ['detect/boxes', 'detect/scores', 'detect/labels', 'detect/num_detections']
    """
    model, settings = _source(source)
    size = input_size if input_size is not None else settings.get("input_size")
    if size is None:
        raise ExportError(
            "export_onnx: input_size is required: the size the model expects (a recipe gives it when its config "
            "sets data.image_size or an evaluation pipeline that fixes the size)"
        )
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    heads = find_heads(model, class_names if class_names is not None else settings.get("class_names"))
    graph = _with_counts(model, heads)
    chosen = list(outputs) if outputs is not None else default_outputs(heads)
    metadata = build_metadata(
        model,
        heads,
        size,
        resize or settings.get("resize", "letterbox"),
        config_name or settings.get("config_name"),
        chosen,
        settings.get("eval_transforms") if resize is None else None,
    )
    clashes = sorted(set(extra_metadata or {}) & (set(metadata) | {"dynamic_image_size", "fixed_size_reason"}))
    if clashes:
        raise ExportError(f"export_onnx: extra_metadata keys {clashes} are written by the export itself; rename them")
    metadata.update(extra_metadata or {})
    batches = (batch_size or settings.get("batch_size", 2), check_batch_size or settings.get("check_batch_size", 3))
    images = _images(metadata["input_name"], size, max(batches), example_images, settings.get("example_images"))
    pair = (images[: batches[0]], images[: batches[1]])
    opset = opset_version if opset_version is not None else settings.get("opset_version")
    return _export_checked(Path(path), graph, pair, chosen, opset, metadata, dynamic_image_size)


def _images(
    name: str, size: tuple[int, int], count: int, given: torch.Tensor | None, recipe: Mapping[str, torch.Tensor] | None
) -> torch.Tensor:
    """``Tensor[count, 3, H, W]``: the given images, a recipe's, or seeded noise (repeated to ``count`` rows)."""
    if given is not None:
        images = given
    elif recipe is not None and name in recipe:
        images = recipe[name]
    else:
        images = torch.rand(count, 3, *size, generator=torch.Generator().manual_seed(0))
    if images.ndim != 4 or tuple(images.shape[-2:]) != size:
        raise ExportError(
            f"export_onnx: example images must be [N, 3, {size[0]}, {size[1]}] (the input size), "
            f"got {list(images.shape)}"
        )
    repeats = -(-count // images.shape[0])
    return images.repeat(repeats, 1, 1, 1)[:count]


def _export_checked(
    path: Path,
    graph: BrickCollection,
    images: tuple[torch.Tensor, torch.Tensor],
    outputs: list[str],
    opset: int | None,
    metadata: dict[str, Any],
    dynamic: bool,
) -> ZooExport:
    """Export (dynamic size first when asked, else or on failure fixed), write the metadata, return the checks."""
    from brickzoo._export import read_onnx_metadata

    name = metadata["input_name"]
    reason, reports = _try_dynamic(path, graph, name, images, outputs, opset) if dynamic else ("not asked", [])
    if reason is not None:
        export_bricks_as_onnx(path, graph, {name: images[0]}, outputs=outputs, opset_version=opset)
        reports = [check_onnx_parity(path, graph, {name: images[1]})]
    metadata["dynamic_image_size"] = reason is None
    if reason is not None:
        metadata["fixed_size_reason"] = reason
    write_onnx_metadata(path, metadata)
    stored = read_onnx_metadata(path)
    for report in reports:
        report.metadata = stored
    return ZooExport(path, list(outputs), metadata, reports, reason is None, reason)
