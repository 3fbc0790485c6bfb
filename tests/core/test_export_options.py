"""ONNX export options: chosen outputs, metadata in the file, dynamic height and width."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from brickzoo import (
    BrickCollection,
    BrickNotTrainable,
    BrickTrainable,
    check_onnx_parity,
    export_bricks_as_onnx,
    read_onnx_metadata,
)
from brickzoo.errors import ExportError


class Upsampled(nn.Module):
    """A size-following module: conv features, upsampled back to the input size (like a segmentation head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.conv(images)  # [B, 4, H/2, W/2]
        return nn.functional.interpolate(features, size=images.shape[-2:], mode="bilinear", align_corners=False)


def make_model() -> BrickCollection:
    torch.manual_seed(0)
    return BrickCollection(
        {
            "features": BrickTrainable(Upsampled(), ["images"], ["maps"]),
            "pool": BrickNotTrainable(lambda maps: maps.mean(dim=(2, 3)), ["maps"], ["pooled"]),
            "argmax": BrickNotTrainable(lambda maps: maps.argmax(dim=1), ["maps"], ["predictions"]),
        }
    ).eval()


def test_outputs_chooses_what_the_graph_returns_in_that_order(tmp_path: Path) -> None:
    model = make_model()
    path = export_bricks_as_onnx(
        tmp_path / "m.onnx", model, {"images": torch.rand(2, 3, 8, 8)}, outputs=["predictions", "pooled"]
    )
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["predictions", "pooled"]
    report = check_onnx_parity(path, model, {"images": torch.rand(3, 3, 8, 8)})
    assert report.max_abs_diff["predictions"] == 0 and report.max_abs_diff["pooled"] < 1e-5
    # the seed's behaviour without outputs=: every tensor written
    every = export_bricks_as_onnx(tmp_path / "all.onnx", model, {"images": torch.rand(2, 3, 8, 8)})
    assert [o.name for o in onnx.load(str(every)).graph.output] == ["maps", "pooled", "predictions"]


def test_unknown_outputs_and_folder_paths_are_refused(tmp_path: Path) -> None:
    model = make_model()
    with pytest.raises(ExportError, match=r"outputs \['predictons'\] are not tensors.*did you mean \['predictions'\]"):
        export_bricks_as_onnx(tmp_path / "m.onnx", model, {"images": torch.rand(1, 3, 8, 8)}, outputs=["predictons"])
    with pytest.raises(ExportError, match="is a folder; expected the path of an .onnx file"):
        export_bricks_as_onnx(tmp_path, model, {"images": torch.rand(1, 3, 8, 8)})


def test_metadata_is_stored_in_the_file_and_read_back(tmp_path: Path) -> None:
    model = make_model()
    metadata = {"config": "tiny", "class_names": {"segment": ["background", "cat"]}, "input_size": [8, 8]}
    path = export_bricks_as_onnx(tmp_path / "m.onnx", model, {"images": torch.rand(1, 3, 8, 8)}, metadata=metadata)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}  # read with the onnx package itself
    assert props["config"] == "tiny"
    assert json.loads(props["class_names"]) == {"segment": ["background", "cat"]}
    assert json.loads(props["input_size"]) == [8, 8]
    assert read_onnx_metadata(path) == props
    assert check_onnx_parity(path, model, {"images": torch.rand(2, 3, 8, 8)}).metadata == props


def test_dynamic_image_size_runs_at_other_heights_and_widths(tmp_path: Path) -> None:
    model = make_model()
    path = export_bricks_as_onnx(
        tmp_path / "m.onnx", model, {"images": torch.rand(2, 3, 16, 24)}, dynamic_image_size=True
    )
    for shape in [(1, 3, 16, 24), (3, 3, 40, 18), (2, 3, 33, 65)]:
        report = check_onnx_parity(path, model, {"images": torch.rand(shape)})
        assert report.worst < 1e-5, (shape, report)
        assert report.input_shapes == {"images": list(shape)}
    # without it the size is fixed: onnxruntime refuses another size
    fixed = export_bricks_as_onnx(tmp_path / "fixed.onnx", model, {"images": torch.rand(2, 3, 16, 24)})
    session = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"images": np.random.rand(1, 3, 20, 20).astype(np.float32)})
