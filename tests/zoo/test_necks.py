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
from brickzoo.bag_of_bricks.necks import BrickNeck, fpn_bricks, pan_bricks
from brickzoo.bag_of_bricks.preprocessors import preprocessor_bricks
from brickzoo.errors import BrickDefinitionError, BrickInputError, ConfigError
from brickzoo.zoo import build_model, load_config

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


# -- pan_bricks ----------------------------------------------------------------------------------------
def _reference_block(block: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """conv (no bias), BatchNorm with running statistics, SiLU, written out with the functional ops."""
    conv, norm = block[0], block[1]
    x = torch.nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    x = (x - norm.running_mean[:, None, None]) * scale[:, None, None] + norm.bias[:, None, None]
    return x * torch.sigmoid(x)


def _reference_fuse(fuse: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = _reference_block(fuse.split, x)  # type: ignore[arg-type]
    half = y.shape[1] // 2
    parts = [y[:, :half], y[:, half:]]
    for pair in fuse.blocks:  # type: ignore[union-attr]
        parts.append(_reference_block(pair[1], _reference_block(pair[0], parts[-1])))
    return _reference_block(fuse.merge, torch.cat(parts, dim=1))  # type: ignore[arg-type]


def _reference_pan(pan: torch.nn.Module, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """PANet by hand: laterals, top-down (nearest x2 upsampling, concat, fuse), bottom-up (stride-2 conv, concat,
    fuse), each step spelled out from the paper's description rather than the module's loops."""
    lateral = [_reference_block(block, x) for block, x in zip(pan.laterals, features, strict=True)]  # type: ignore[arg-type]
    p5 = lateral[2]
    p4 = _reference_fuse(
        pan.top_down[1], torch.cat([p5.repeat_interleave(2, 2).repeat_interleave(2, 3), lateral[1]], 1)
    )  # type: ignore[index]
    p3 = _reference_fuse(
        pan.top_down[0], torch.cat([p4.repeat_interleave(2, 2).repeat_interleave(2, 3), lateral[0]], 1)
    )  # type: ignore[index]
    n4 = _reference_fuse(pan.bottom_up[0], torch.cat([_reference_block(pan.downsample[0], p3), p4], 1))  # type: ignore[index]
    n5 = _reference_fuse(pan.bottom_up[1], torch.cat([_reference_block(pan.downsample[1], n4), p5], 1))  # type: ignore[index]
    return [p3, n4, n5]


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_pan_matches_a_hand_written_panet(num_blocks: int) -> None:
    torch.manual_seed(0)
    levels = [FeatureLevel("f/level2", 6, 8), FeatureLevel("f/level3", 10, 16), FeatureLevel("f/level4", 14, 32)]
    brick = pan_bricks(levels, out_channels=8, num_blocks=num_blocks)["pan"]
    for module in brick.modules():  # BatchNorm away from its identity start, so that every term counts
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    brick.eval()
    inputs = [torch.randn(2, 6, 16, 16), torch.randn(2, 10, 8, 8), torch.randn(2, 14, 4, 4)]
    with torch.no_grad():
        got = brick(dict(zip(["f/level2", "f/level3", "f/level4"], inputs, strict=True)))
        expected = _reference_pan(brick.model, inputs)
    assert list(got) == ["pyramid/level2", "pyramid/level3", "pyramid/level4"]
    for name, value in zip(got, expected, strict=True):
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5)


def test_pan_reaches_the_coarsest_output_from_the_finest_input_where_fpn_does_not(bb_backbone: dict) -> None:
    levels = bb_backbone["backbone"].feature_levels[2:]  # strides 8, 16, 32
    inputs = {
        f.name: torch.randn(2, f.channels, SIZE // f.stride, SIZE // f.stride, requires_grad=True) for f in levels
    }
    for factory, reaches in ((pan_bricks, True), (fpn_bricks, False)):
        (brick,) = factory(levels, out_channels=8).values()
        out = brick(inputs)
        (gradient,) = torch.autograd.grad(out["pyramid/level4"].sum(), inputs["features/level2"], allow_unused=True)
        assert (gradient is not None and bool(gradient.abs().sum() > 0)) is reaches, factory.__name__


@pytest.mark.parametrize("size", [64, 70, 97])
def test_pan_on_a_backbone_keeps_every_level_size_also_for_odd_images(bb_backbone: dict, size: int) -> None:
    bricks = pan_bricks(bb_backbone, out_channels=16, levels=[2, 3, 4])
    brick = bricks["pan"]
    assert isinstance(brick, BrickNeck) and isinstance(brick, BrickTrainable)
    assert brick.input_names == ["features/level2", "features/level3", "features/level4"]
    expected = [FeatureLevel(f"pyramid/level{i}", 16, 2**i * 2) for i in (2, 3, 4)]
    assert brick.feature_levels == feature_levels(bricks) == expected
    collection = BrickCollection({"backbone": bb_backbone, "neck": bricks})
    images = torch.randn(2, 3, size, size, requires_grad=True)
    out = collection({"normalized": images}, return_inputs=False)
    for level in expected:
        backbone_level = out[level.name.replace("pyramid", "features")]
        assert out[level.name].shape == (2, 16, *backbone_level.shape[-2:])
    sum(out[level.name].square().mean() for level in expected).backward()  # type: ignore[union-attr]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in brick.parameters())


def test_pan_bad_arguments(bb_backbone: dict) -> None:
    with pytest.raises(BrickDefinitionError, match=r"pan_bricks: out_channels must be a positive int, got 0"):
        pan_bricks(bb_backbone, out_channels=0)
    with pytest.raises(BrickDefinitionError, match=r"pan_bricks: num_blocks must be a positive int, got True"):
        pan_bricks(bb_backbone, num_blocks=True)
    with pytest.raises(BrickDefinitionError, match=r"pan_bricks: output='./p' must be an absolute"):
        pan_bricks(bb_backbone, output="./p")
    with pytest.raises(BrickDefinitionError, match=r"pan_bricks: levels=\[7\]: \[7\] are not among them"):
        pan_bricks(bb_backbone, levels=[7])
    message = r"features/level2 \(stride 8\), features/level4 \(stride 32\) must each have twice the stride"
    with pytest.raises(BrickDefinitionError, match=message):
        pan_bricks(bb_backbone, levels=[2, 4])
    with pytest.raises(BrickInputError, match=r"PathAggregation: expected 3 feature levels, got 2"):
        pan_bricks(bb_backbone, levels=[2, 3, 4])["pan"].model(torch.zeros(1, 16, 8, 8), torch.zeros(1, 24, 4, 4))


def test_onnx_export_of_backbone_and_pan(tmp_path: Path) -> None:
    backbone = backbone_bricks("timm:mobilenetv3_small_050", out_indices=(2, 3, 4))
    collection = BrickCollection(
        {
            "preprocessor": preprocessor_bricks(backbone),
            "backbone": backbone,
            "neck": pan_bricks(backbone, out_channels=8),
        }
    ).eval()
    path = export_bricks_as_onnx(tmp_path / "trunk.onnx", collection, {"images": torch.rand(2, 3, SIZE, SIZE)})
    report = check_onnx_parity(path, collection, {"images": torch.rand(3, 3, SIZE, SIZE)})
    assert {f"pyramid/level{i}" for i in (2, 3, 4)} <= set(report.max_abs_diff)
    assert report.worst < 1e-4, str(report)


def test_a_recipe_names_the_pan_neck() -> None:

    config, _ = load_config(
        "shapes_detection",
        ["model.neck.factory=pan", "model.neck.out_channels=16", "model.heads.detect.num_classes=4"],
    )
    model, _ = build_model(config)
    assert type(model["pan"].model).__name__ == "PathAggregation"
    outputs = model({"images": torch.rand(1, 3, SIZE, SIZE)}, groups="MODEL")
    assert [outputs[f"pyramid/level{i}"].shape for i in (1, 2, 3)] == [(1, 16, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4)]
    assert outputs["detect/boxes"].shape == (1, 20, 4)
    with pytest.raises(ConfigError, match=r"model.neck.num_block.*did you mean \['num_blocks'\]"):
        load_config("shapes_detection", ["model.neck.factory=pan", "model.neck.num_block=2"])
    for override, message in [
        ("model.neck.out_channels=abc", r"model.neck.out_channels: expected int, got str 'abc'"),
        ("model.neck.num_blocks=1.5", r"model.neck.num_blocks: expected int, got float 1.5"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config("shapes_detection", ["model.neck.factory=pan", override])
