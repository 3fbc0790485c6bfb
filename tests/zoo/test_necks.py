"""fpn_bricks: level selection, shapes, equality with torchvision's FPN, errors, ONNX export of a whole trunk."""

from __future__ import annotations

import typing
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from brickzoo import BrickCollection, BrickInterface, BrickTrainable, check_onnx_parity, export_bricks_as_onnx
from brickzoo.bag_of_bricks._features import (
    BrickFeatureLevels,
    FeatureLevel,
    FeaturesArg,
    HasFeatureLevels,
    feature_levels,
)
from brickzoo.bag_of_bricks.backbones import BrickBackbone, BrickBackboneNotTrainable, backbone_bricks
from brickzoo.bag_of_bricks.necks import BrickNeck, fpn_bricks
from brickzoo.bag_of_bricks.preprocessors import preprocessor_bricks
from brickzoo.errors import BrickDefinitionError

SIZE = 64


@pytest.fixture(scope="module")
def bb_backbone() -> dict:
    return backbone_bricks("timm:mobilenetv3_small_050")


@pytest.mark.parametrize("extra_blocks", [False, True])
def test_fpn_on_a_subset_of_levels(bb_backbone: dict, extra_blocks: bool) -> None:
    bricks = fpn_bricks(bb_backbone, out_channels=16, levels=[2, 4], extra_blocks=extra_blocks)
    brick = bricks["fpn"]
    assert isinstance(brick, BrickNeck) and isinstance(brick, BrickTrainable)
    assert brick.input_names == ["features/level2", "features/level4"]
    expected = [FeatureLevel("pyramid/level2", 16, 8), FeatureLevel("pyramid/level4", 16, 32)]
    if extra_blocks:
        expected.append(FeatureLevel("pyramid/level5", 16, 64))
    assert brick.feature_levels == expected
    assert feature_levels(bricks) == expected
    collection = BrickCollection({"backbone": bb_backbone, "neck": bricks})
    images = torch.randn(2, 3, SIZE, SIZE, requires_grad=True)
    out = collection({"normalized": images}, return_inputs=False)
    for level in expected:
        assert out[level.name].shape == (2, 16, SIZE // level.stride, SIZE // level.stride)
    sum(out[level.name].square().mean() for level in expected).backward()  # type: ignore[union-attr]
    grads = [p.grad for p in brick.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert images.grad is not None and torch.isfinite(images.grad).all()


def test_fpn_matches_torchvision_called_directly() -> None:
    torch.manual_seed(0)
    levels = [FeatureLevel("f/level1", 8, 4), FeatureLevel("f/level2", 12, 8), FeatureLevel("f/level3", 20, 16)]
    brick = fpn_bricks(levels, out_channels=6, levels=["f/level1", "level3"], extra_blocks=True)["fpn"].eval()
    for parameter in brick.parameters():  # move away from the default init (zero biases)
        parameter.data.normal_()
    reference = FeaturePyramidNetwork([8, 20], 6, extra_blocks=LastLevelMaxPool()).eval()
    reference.load_state_dict(brick.model.fpn.state_dict())
    inputs = {"f/level1": torch.randn(2, 8, 16, 16), "f/level3": torch.randn(2, 20, 4, 4)}
    with torch.no_grad():
        expected = reference(OrderedDict([("a", inputs["f/level1"]), ("b", inputs["f/level3"])]))
        got = brick(inputs)
    assert list(got) == ["pyramid/level1", "pyramid/level3", "pyramid/level4"]
    for name, value in zip(got, expected.values(), strict=True):
        torch.testing.assert_close(got[name], value, rtol=0, atol=0)
    assert got["pyramid/level4"].shape == (2, 6, 2, 2)


def test_single_level_and_levels_without_numbers() -> None:
    levels = [FeatureLevel("a", 4, 8), FeatureLevel("b", 8, 16)]
    bricks = fpn_bricks(levels, out_channels=4, levels=[1], output="neck")
    assert bricks["fpn"].feature_levels == [FeatureLevel("neck/level1", 4, 16)]
    out = bricks["fpn"]({"b": torch.randn(1, 8, 2, 2)})
    assert isinstance(out["neck/level1"], torch.Tensor) and out["neck/level1"].shape == (1, 4, 2, 2)
    assert [f.name for f in fpn_bricks(levels, out_channels=4)["fpn"].feature_levels] == [
        "pyramid/level0",
        "pyramid/level1",
    ]


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([7], ["levels=[7]", "[7] are not among them", "2 (features/level2: 16 channels, stride 8)"]),
        (["level9"], ["['level9'] are not among them", "4 (features/level4: 288 channels, stride 32)"]),
        ([2, "features/level2"], ["repeats a level"]),
        ([], ["empty"]),
    ],
)
def test_bad_level_selection(bb_backbone: dict, levels: list, expected: list[str]) -> None:
    with pytest.raises(BrickDefinitionError) as info:
        fpn_bricks(bb_backbone, levels=levels)
    for part in expected:
        assert part in str(info.value)


def test_bad_arguments(bb_backbone: dict) -> None:
    with pytest.raises(BrickDefinitionError, match=r"out_channels must be a positive int, got 0"):
        fpn_bricks(bb_backbone, out_channels=0)
    with pytest.raises(BrickDefinitionError, match=r"output='./p' must be an absolute"):
        fpn_bricks(bb_backbone, output="./p")
    with pytest.raises(BrickDefinitionError, match=r"in_channels is needed"):
        fpn_bricks("features/level3")
    with pytest.raises(BrickDefinitionError, match=r"declare no channel count"):
        fpn_bricks([FeatureLevel("x", 0, 8)])


def test_onnx_export_of_preprocessor_backbone_and_fpn(tmp_path: Path) -> None:
    backbone = backbone_bricks("timm:resnet10t", out_indices=(2, 3, 4))
    collection = BrickCollection(
        {
            "preprocessor": preprocessor_bricks(backbone),
            "backbone": backbone,
            "neck": fpn_bricks(backbone, out_channels=16, extra_blocks=True),
        }
    )
    path = export_bricks_as_onnx(tmp_path / "trunk.onnx", collection, {"images": torch.rand(2, 3, SIZE, SIZE)})
    report = check_onnx_parity(path, collection, {"images": torch.rand(3, 3, SIZE, SIZE)})
    expected = ["normalized"] + [f"features/level{i}" for i in (2, 3, 4)] + [f"pyramid/level{i}" for i in (2, 3, 4, 5)]
    assert sorted(report.max_abs_diff) == sorted(expected)
    assert report.batch_size == 3
    assert report.worst < 1e-4, str(report)


def test_feature_level_bricks_share_one_base_and_every_form_of_features_is_accepted(bb_backbone: dict) -> None:
    neck = fpn_bricks(bb_backbone, out_channels=8, levels=[3, 4])
    for brick_class in (BrickBackbone, BrickBackboneNotTrainable, BrickNeck):
        assert issubclass(brick_class, BrickFeatureLevels)
    levels = bb_backbone["backbone"].feature_levels
    # the forms FeaturesArg names: the factories' dict, a brick, a list of levels, one level, a name
    for features in (bb_backbone, bb_backbone["backbone"], levels, tuple(levels)):
        assert fpn_bricks(features, out_channels=8)["fpn"].input_names == [f.name for f in levels]
    assert fpn_bricks(levels[2], out_channels=8)["fpn"].input_names == ["features/level2"]
    assert feature_levels("x", in_channels=5) == [FeatureLevel("x", 5, 0)]
    assert feature_levels(neck) == feature_levels(neck["fpn"]) == neck["fpn"].feature_levels


def test_features_arg_is_a_closed_union_that_mypy_can_check() -> None:
    # no Any among the forms, so mypy rejects features=3 in the factories
    assert set(typing.get_args(FeaturesArg)) == {
        str,
        FeatureLevel,
        Sequence[FeatureLevel],
        HasFeatureLevels,
        Mapping[str, BrickInterface],
    }
    assert typing.Any not in typing.get_args(FeaturesArg)
    with pytest.raises(BrickDefinitionError, match=r"features must be a tensor name.*got int"):
        fpn_bricks(3)  # type: ignore[arg-type]
