"""brickzoo.zoo.export_onnx: the heads' results as outputs, the contract as metadata, dynamic sizes checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import brickzoo
from brickzoo import BrickCollection, BrickTrainable
from brickzoo.bag_of_bricks import (
    image_classification_bricks,
    object_detection_bricks,
    preprocessor_bricks,
    semantic_segmentation_bricks,
)
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.errors import ExportError
from brickzoo.zoo import export_onnx
from brickzoo.zoo._export import METADATA_KEYS

LEVELS = [FeatureLevel("features/s4", 8, 4), FeatureLevel("features/s8", 16, 8)]
RESULTS = [
    "classify/probabilities",
    "classify/predictions",
    "segment/predictions",
    "detect/boxes",
    "detect/scores",
    "detect/labels",
    "detect/num_detections",
]


class Trunk(nn.Module):
    """Two feature levels, strides 4 and 8."""

    def __init__(self) -> None:
        super().__init__()
        self.s4 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.s8 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        s4 = self.s4(images)  # [B, 8, H/4, W/4]
        return {"s4": s4, "s8": self.s8(s4)}  # and [B, 16, H/8, W/8]


def tiny_model() -> BrickCollection:
    torch.manual_seed(0)
    return BrickCollection(
        {
            **preprocessor_bricks(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)),
            "trunk": BrickTrainable(Trunk(), ["normalized"], {"s4": "features/s4", "s8": "features/s8"}),
            "classify": image_classification_bricks(3, LEVELS, class_names=["cat", "dog", "cow"]),
            "segment": semantic_segmentation_bricks(num_classes=2, features=LEVELS, class_names=["bg", "thing"]),
            "detect": object_detection_bricks(
                2,
                LEVELS,
                class_names=["cat", "dog"],
                head_channels=8,
                num_convs=1,
                max_detections=5,
                score_threshold=0.0,
            ),
        }
    ).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[BrickCollection, brickzoo.zoo.ZooExport]:
    model = tiny_model()
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return model, export_onnx(model, path, input_size=(32, 48), resize="letterbox", config_name="tiny")


def _metadata(path: Path) -> dict[str, object]:
    """The file's metadata read with the onnx package itself, JSON values decoded."""
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return {k: (json.loads(v) if v.startswith(("[", "{")) or v in ("true", "false") else v) for k, v in props.items()}


def test_the_outputs_are_the_heads_results(exported) -> None:
    _, result = exported
    assert [o.name for o in onnx.load(str(result.path)).graph.output] == RESULTS == result.outputs
    assert [i.name for i in onnx.load(str(result.path)).graph.input] == ["images"]


def test_the_contract_travels_as_metadata(exported) -> None:
    _, result = exported
    metadata = _metadata(result.path)
    assert set(metadata) == set(METADATA_KEYS) - {"fixed_size_reason", "pretrained"}  # pretrained: fine-tunes only
    assert metadata["brickzoo_version"] == brickzoo.__version__ and metadata["config"] == "tiny"
    assert (metadata["input_name"], metadata["input_dtype"], metadata["input_layout"]) == ("images", "float32", "NCHW")
    assert metadata["input_channels"] == "RGB" and metadata["input_range"] == [0.0, 1.0]
    assert metadata["input_size"] == [32, 48] and metadata["resize"] == "letterbox"
    assert metadata["letterbox"]["pad_value"] == pytest.approx(114 / 255, abs=1e-6)
    assert metadata["eval_transforms"] == [{"letterbox": {"size": [32, 48]}}]
    assert metadata["dynamic_image_size"] is True and metadata["dynamic_batch_size"] is True
    assert metadata["normalization"].startswith("inside the graph")
    assert metadata["mean"] == [0.4, 0.5, 0.6] and metadata["std"] == [0.2, 0.25, 0.3]
    assert metadata["class_names"] == {
        "classify": ["cat", "dog", "cow"],
        "segment": ["bg", "thing"],
        "detect": ["cat", "dog"],
    }
    assert metadata["heads"]["detect"] == {
        "task": "detection",
        "outputs": {
            "boxes": "detect/boxes",
            "scores": "detect/scores",
            "labels": "detect/labels",
            "num_detections": "detect/num_detections",
        },
    }
    assert list(metadata["outputs"]) == RESULTS and "padding" in metadata["outputs"]["detect/labels"]
    assert result.parity[0].metadata == {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}


def test_parity_is_checked_at_two_sizes_and_holds_at_a_third(exported) -> None:
    model, result = exported
    assert [r.input_shapes["images"] for r in result.parity] == [[3, 3, 32, 48], [1, 3, 96, 80]]
    # an independent run at yet another size and batch: onnxruntime against eager torch
    images = torch.rand(2, 3, 40, 72, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = dict(zip(RESULTS, session.run(None, {"images": images.numpy()}), strict=True))
    with torch.no_grad():
        expected = model({"images": images}, groups="MODEL")
    assert got["segment/predictions"].shape == (2, 40, 72)
    for name in RESULTS[:-1]:
        np.testing.assert_allclose(got[name], expected[name].numpy(), atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(got["detect/num_detections"], (expected["detect/labels"] >= 0).sum(dim=1).numpy())
    assert "dynamic height and width (checked at 2 sizes)" in result.describe()


def test_outputs_chooses_the_graphs_outputs(tmp_path: Path) -> None:
    result = export_onnx(
        tiny_model(),
        tmp_path / "m.onnx",
        input_size=32,
        outputs=["detect/boxes", "segment/logits"],
        dynamic_image_size=False,
    )
    assert [o.name for o in onnx.load(str(result.path)).graph.output] == ["detect/boxes", "segment/logits"]
    metadata = _metadata(result.path)
    assert metadata["outputs"]["segment/logits"] == "an intermediate tensor of the model"
    assert metadata["heads"]["detect"]["outputs"] == {"boxes": "detect/boxes"}
    assert metadata["dynamic_image_size"] is False and metadata["fixed_size_reason"] == "not asked"
    with pytest.raises(ExportError, match=r"\['segment/logit'\] are not tensors.*did you mean \['segment/logits'"):
        export_onnx(
            tiny_model(), tmp_path / "m.onnx", input_size=32, outputs=["segment/logit"], dynamic_image_size=False
        )


def test_a_head_that_needs_a_fixed_size_is_exported_at_it_and_says_so(tmp_path: Path) -> None:
    flatten = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8))  # the size is in the weights
    model = BrickCollection(
        {
            "flatten": BrickTrainable(flatten, ["images"], ["flat"]),
            "classify": image_classification_bricks(2, "flat", in_channels=8),
        }
    ).eval()
    result = export_onnx(model, tmp_path / "fixed.onnx", input_size=16)
    assert not result.dynamic_image_size and result.fixed_size_reason.startswith("dynamic height and width failed")
    metadata = _metadata(result.path)
    assert metadata["dynamic_image_size"] is False and metadata["fixed_size_reason"] == result.fixed_size_reason
    assert metadata["normalization"].startswith("none") and "mean" not in metadata
    assert [r.input_shapes["images"] for r in result.parity] == [[3, 3, 16, 16]]
    assert "fixed height and width [16, 16] (dynamic height and width failed" in result.describe()
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    session.run(None, {"images": np.random.rand(5, 3, 16, 16).astype(np.float32)})  # any batch
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"images": np.random.rand(1, 3, 24, 24).astype(np.float32)})


def test_a_collection_needs_its_input_size(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="input_size is required: the size the model expects"):
        export_onnx(tiny_model(), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"example images must be \[N, 3, 32, 32\]"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", input_size=32, example_images=torch.rand(2, 3, 16, 16))
