"""ONNX export of a group selection and the onnxruntime parity check."""

from __future__ import annotations

import difflib
import io
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from brickzoo._groups import MODEL, Stage
from brickzoo.errors import ExportError

if TYPE_CHECKING:
    from brickzoo._collection import BrickCollection


class _TensorAdapter(nn.Module):
    """Positional tensors in, a tuple of tensors out: the calling convention ONNX export needs."""

    def __init__(
        self,
        collection: BrickCollection,
        input_names: list[str],
        output_names: list[str],
        groups: Any,
        stage: Stage | None,
    ) -> None:
        super().__init__()
        self.collection = collection
        self.input_names = input_names
        self.output_names = output_names
        self.groups = groups
        self.stage = stage

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names, tensors, strict=True))
        outputs = self.collection(named, groups=self.groups, stage=self.stage, return_inputs=False)
        return tuple(outputs[name] for name in self.output_names)


def _selection(
    brick_collection: BrickCollection,
    named_inputs: dict[str, Any],
    groups: Any,
    stage: Stage | None,
    outputs: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """The tensor inputs the selection needs and the tensor outputs to export (eager run)."""
    required = set(brick_collection.required_inputs(groups))
    missing = sorted(required - named_inputs.keys())
    if missing:
        raise ExportError(
            f"export needs inputs {sorted(required)} for groups {groups!r}; "
            f"missing {missing}, got {sorted(named_inputs)}"
        )
    input_names = [name for name in named_inputs if name in required]
    bad = [n for n in input_names if not isinstance(named_inputs[n], torch.Tensor)]
    if bad:
        raise ExportError(f"export inputs must be tensors; {bad} are not")
    with torch.no_grad():
        written_outputs = brick_collection(
            {n: named_inputs[n] for n in input_names}, groups=groups, stage=stage, return_inputs=False
        )
    written = [name for name, value in written_outputs.items() if isinstance(value, torch.Tensor)]
    if not written:
        raise ExportError(f"groups {groups!r} write no tensors; nothing to export")
    if outputs is None:
        return input_names, written
    return input_names, _chosen_outputs(outputs, written, groups)


def _chosen_outputs(outputs: Sequence[str], written: list[str], groups: Any) -> list[str]:
    """``outputs`` checked against the tensors the selection writes."""
    if isinstance(outputs, str) or not outputs:
        raise ExportError(f"outputs must be a non-empty list of tensor names, got {outputs!r}; available: {written}")
    unknown = [name for name in outputs if name not in written]
    if unknown:
        hints = {n: difflib.get_close_matches(n, written, n=2, cutoff=0.6) for n in unknown}
        raise ExportError(
            f"outputs {unknown} are not tensors written by groups {groups!r}"
            + "".join(f"; {n!r}: did you mean {h}?" for n, h in hints.items() if h)
            + f"; available: {written}"
        )
    if len(set(outputs)) != len(outputs):
        raise ExportError(f"outputs lists a name twice: {list(outputs)}")
    return list(outputs)


def _dynamic_shapes(args: tuple[torch.Tensor, ...], batch: bool, image_size: bool) -> Any:
    """``dynamic_shapes`` for torch.export: the batch dimension and/or the height and width of 4-D inputs."""
    if not batch and not image_size:
        return None
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    height, width = torch.export.Dim("height", min=8, max=8192), torch.export.Dim("width", min=8, max=8192)
    shapes = []
    for arg in args:
        dims: dict[int, Any] = {0: batch_dim} if batch else {}
        if image_size and arg.ndim == 4:
            dims.update({2: height, 3: width})
        shapes.append(dims)
    return (tuple(shapes),)  # one entry: the *tensors parameter of the adapter


def export_bricks_as_onnx(
    path_onnx: str | Path,
    brick_collection: BrickCollection,
    named_inputs: dict[str, Any],
    dynamic_batch_size: bool = True,
    groups: str | Iterable[str] | Stage | None = MODEL,
    stage: Stage | None = Stage.EXPORT,
    opset_version: int | None = None,
    verbose: bool = False,
    *,
    outputs: Sequence[str] | None = None,
    dynamic_image_size: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Export a group selection of a collection to an ONNX file.

    The ONNX graph's inputs and outputs carry the tensor names of the collection. Inputs that
    the selection does not read (such as targets) are dropped; every tensor the selection
    writes becomes an output (non-tensor outputs such as pillow images are left out), unless
    ``outputs`` names the ones to keep.

    Args:
        path_onnx: the file to write.
        brick_collection: the collection to export (switched to eval mode for the export and
            restored afterwards).
        named_inputs: example inputs used to trace the collection.
        dynamic_batch_size: make the first dimension of every input and output dynamic.
        groups: the groups to export, ``"MODEL"`` by default.
        stage: the stage given to bricks that read ``"stage"``.
        opset_version: the ONNX opset; the exporter's default if None.
        verbose: print the exporter's messages.
        outputs: the tensor names to export, in this order; all tensors written when None.
        dynamic_image_size: also make the height and width (dimensions 2 and 3) of 4-D inputs
            dynamic. Export raises :class:`ExportError` if a brick's computation depends on a
            fixed size.
        metadata: key/value pairs stored in the file's ``metadata_props`` (values that are not
            strings are stored as JSON); read them back with :func:`read_onnx_metadata`.

    Returns:
        The path written.

    Raises:
        ExportError: inputs missing, ``outputs`` naming tensors the selection does not write
            (with close matches), or the exporter failing (its message included).
    """
    path_onnx = Path(path_onnx)
    if path_onnx.is_dir():
        raise ExportError(f"export_bricks_as_onnx: {path_onnx} is a folder; expected the path of an .onnx file")
    path_onnx.parent.mkdir(parents=True, exist_ok=True)
    was_training = brick_collection.training
    brick_collection.eval()
    try:
        input_names, output_names = _selection(brick_collection, named_inputs, groups, stage, outputs)
        adapter = _TensorAdapter(brick_collection, input_names, output_names, groups, stage)
        args = tuple(named_inputs[name] for name in input_names)
        dynamic_shapes = _dynamic_shapes(args, dynamic_batch_size, dynamic_image_size)
        sink = io.StringIO()
        try:
            with warnings.catch_warnings(), redirect_stdout(sink if not verbose else None):
                if not verbose:
                    warnings.simplefilter("ignore")
                torch.onnx.export(
                    adapter,
                    args,
                    str(path_onnx),
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_shapes=dynamic_shapes,
                    opset_version=opset_version,
                    dynamo=True,
                    external_data=False,
                    verbose=verbose,
                )
        except Exception as exc:
            raise ExportError(
                f"ONNX export of groups {groups!r} failed (inputs {input_names}, outputs {output_names}"
                f"{', dynamic height and width' if dynamic_image_size else ''}): "
                f"{type(exc).__name__}: {str(exc)[:2000]}"
            ) from exc
    finally:
        brick_collection.train(was_training)
    if metadata:
        write_onnx_metadata(path_onnx, metadata)
    return path_onnx


def write_onnx_metadata(path_onnx: str | Path, metadata: Mapping[str, Any]) -> None:
    """Store key/value pairs in an ONNX file's ``metadata_props`` (non-strings as JSON), replacing equal keys."""
    import onnx

    model = onnx.load(str(path_onnx))
    values = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    kept = [prop for prop in model.metadata_props if prop.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path_onnx))


def read_onnx_metadata(path_onnx: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (values as stored: JSON for non-strings).

    Raises:
        ExportError: the file cannot be read as an ONNX model.
    """
    import onnx

    try:
        model = onnx.load(str(path_onnx), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"cannot read {path_onnx} as an ONNX model: {type(exc).__name__}: {exc}") from exc
    return {prop.key: prop.value for prop in model.metadata_props}


@dataclass
class ParityReport:
    """Largest absolute difference between onnxruntime and torch, per output.

    Attributes:
        max_abs_diff: ``{output name: largest |onnxruntime - torch|}`` (booleans: the count of
            differing entries).
        batch_size: the batch size of the check.
        input_shapes: the shape of every input fed.
        metadata: the file's ``metadata_props`` (see :func:`read_onnx_metadata`).
    """

    max_abs_diff: dict[str, float]
    batch_size: int
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)

    def __str__(self) -> str:
        rows = [f"  {name}: {diff:.3g}" for name, diff in self.max_abs_diff.items()]
        shapes = ", ".join(f"{name} {shape}" for name, shape in self.input_shapes.items())
        return f"onnxruntime vs torch on {shapes or f'batch {self.batch_size}'}, largest |difference|:\n" + "\n".join(
            rows
        )


def check_onnx_parity(
    path_onnx: str | Path,
    brick_collection: BrickCollection,
    named_inputs: dict[str, Any],
    groups: str | Iterable[str] | Stage | None = MODEL,
    stage: Stage | None = Stage.EXPORT,
) -> ParityReport:
    """Run an exported model in onnxruntime and in torch on the same inputs and compare.

    Use a batch size other than the export's to check that the batch dimension is dynamic.

    Raises:
        ExportError: the ONNX model cannot be loaded or run, or an output is missing or has
            another shape than in torch.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path_onnx), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path_onnx}: {exc}") from exc
    onnx_inputs = [i.name for i in session.get_inputs()]
    missing = [n for n in onnx_inputs if n not in named_inputs]
    if missing:
        raise ExportError(f"{path_onnx} needs inputs {onnx_inputs}; missing {missing}")
    feeds = {n: named_inputs[n].detach().cpu().numpy() for n in onnx_inputs}
    try:
        results = session.run(None, feeds)
    except Exception as exc:
        raise ExportError(
            f"onnxruntime failed to run {path_onnx} on shapes { {k: list(v.shape) for k, v in feeds.items()} }: {exc}"
        ) from exc
    was_training = brick_collection.training
    brick_collection.eval()
    try:
        with torch.no_grad():
            reference = brick_collection(
                {n: named_inputs[n] for n in onnx_inputs}, groups=groups, stage=stage, return_inputs=False
            )
    finally:
        brick_collection.train(was_training)
    diffs: dict[str, float] = {}
    for meta, value in zip(session.get_outputs(), results, strict=True):
        if meta.name not in reference:
            raise ExportError(f"ONNX output {meta.name!r} is not written by the collection")
        expected = reference[meta.name].detach().cpu().numpy()
        if expected.shape != value.shape:
            raise ExportError(
                f"output {meta.name!r}: onnxruntime shape {list(value.shape)}, torch shape {list(expected.shape)}"
            )
        if expected.size == 0:
            diffs[meta.name] = 0.0
        elif expected.dtype == np.bool_:
            diffs[meta.name] = float(np.sum(expected != value))
        else:
            diffs[meta.name] = float(np.max(np.abs(expected.astype(np.float64) - value.astype(np.float64))))
    batch = next(iter(feeds.values())).shape[0] if feeds else 0
    return ParityReport(
        max_abs_diff=diffs,
        batch_size=int(batch),
        input_shapes={name: list(value.shape) for name, value in feeds.items()},
        metadata=read_onnx_metadata(path_onnx),
    )
