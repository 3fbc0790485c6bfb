"""brickzoo's own backbone, CSP-Darknet, against Ultralytics' YOLOv8 backbone and by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from brickzoo.bag_of_bricks import list_zoo
from brickzoo.bag_of_bricks.backbones import (
    DARKNET_SIZES,
    CSPDarknet,
    backbone_bricks,
    backbone_data_config,
    check_backbone_name,
    csp_darknet,
)
from brickzoo.bag_of_bricks.preprocessors import preprocessor_bricks
from brickzoo.errors import BrickDefinitionError, WeightsError, ZooError
from tests.zoo.test_task_aligned_detection import ultralytics_module

# Ultralytics' backbone layers whose outputs are the levels (stem, then the C2f of each stage, SPPF last)
ULTRALYTICS_TAPS = [0, 2, 4, 6, 9]


def ultralytics_backbone(size: str) -> nn.Sequential:
    """Layers 0-9 of Ultralytics' YOLOv8<size> built from its YAML: the backbone, up to SPPF."""
    tasks = ultralytics_module("ultralytics.nn.tasks")
    torch.manual_seed(1)
    return nn.Sequential(*tasks.DetectionModel(f"yolov8{size}.yaml", verbose=False).model[:10])


def _in_order(model: nn.Module, images: torch.Tensor, kinds: tuple[type, ...]) -> list[nn.Module]:
    """The modules of ``kinds`` in the order a forward pass runs them."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return order


def copy_in_execution_order(source: nn.Module, target: nn.Module, images: torch.Tensor) -> None:
    """Copy the convolutions and BatchNorms of ``source`` into ``target`` pairing them by execution order."""
    kinds = (nn.Conv2d, nn.BatchNorm2d)
    pairs = list(zip(_in_order(source, images, kinds), _in_order(target, images, kinds), strict=True))
    for theirs, ours in pairs:
        assert type(theirs) is type(ours)
        ours.load_state_dict(theirs.state_dict())
        if isinstance(theirs, nn.BatchNorm2d):
            assert isinstance(ours, nn.BatchNorm2d)
            assert (ours.eps, ours.momentum) == (theirs.eps, theirs.momentum) == (1e-3, 0.03)


def _randomize(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that every tensor counts."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


def _ultralytics_levels(layers: nn.Sequential, images: torch.Tensor) -> list[torch.Tensor]:
    outputs, x = [], images
    for layer in layers:
        x = layer(x)
        outputs.append(x)
    return [outputs[i] for i in ULTRALYTICS_TAPS]


@pytest.mark.parametrize("size", ["n", "s"])
def test_equals_ultralytics_yolov8_backbone(size: str) -> None:
    theirs = ultralytics_backbone(size)
    ours = csp_darknet(f"csp_darknet_{size}")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    _randomize(theirs)
    images = torch.rand(2, 3, 96, 64)
    copy_in_execution_order(theirs, ours, images)
    for mode in (False, True):  # running statistics, then batch statistics
        theirs.train(mode)
        ours.train(mode)
        with torch.no_grad():
            expected = _ultralytics_levels(theirs, images)
            got = ours(images)
        assert len(got) == 5
        for level, (a, b) in enumerate(zip(got, expected, strict=True)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"level {level}, train={mode}")
    # and the running statistics they updated in that training pass agree
    torch.testing.assert_close(ours.stages[4][2].merge[1].running_mean, theirs[9].cv2.bn.running_mean)


@pytest.mark.parametrize("size", ["m", "l", "x"])
def test_larger_sizes_have_ultralytics_parameter_counts(size: str) -> None:
    theirs = ultralytics_backbone(size)
    ours = csp_darknet(f"csp_darknet_{size}")
    assert [p.shape for p in ours.parameters()] != []
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    expected_widths = {"m": [48, 96, 192, 384, 576], "l": [64, 128, 256, 512, 512], "x": [80, 160, 320, 640, 640]}
    assert ours.widths == expected_widths[size]


@settings(max_examples=8, deadline=None)
@given(
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    indices=st.lists(st.integers(0, 4), min_size=1, max_size=5, unique=True),
)
def test_levels_of_any_image_size(height: int, width: int, indices: list[int]) -> None:
    brick = backbone_bricks("brickzoo:csp_darknet_n", out_indices=indices)["backbone"].eval()
    channels = [16, 32, 64, 128, 256]
    levels = brick.feature_levels
    assert [(f.name, f.channels, f.stride) for f in levels] == [
        (f"features/level{i}", channels[i], 2 ** (i + 1)) for i in sorted(indices)
    ]
    with torch.no_grad():
        outputs = brick({"normalized": torch.rand(1, 3, height, width)})
    for level in levels:  # a 3x3 stride-2 convolution with padding 1 rounds up, once per level
        steps = int(math.log2(level.stride))
        expected_height, expected_width = height, width
        for _ in range(steps):
            expected_height, expected_width = (expected_height + 1) // 2, (expected_width + 1) // 2
        assert outputs[level.name].shape == (1, level.channels, expected_height, expected_width)
    assert len(brick.model.stages) == max(indices) + 1  # stages after the last level are not kept


def test_trains_and_is_listed_and_configured() -> None:
    bricks = backbone_bricks("brickzoo:csp_darknet_n", out_indices=[2, 3, 4])
    brick = bricks["backbone"].train()
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    outputs = brick({"normalized": images})
    sum(o.square().mean() for o in outputs.values()).backward()  # type: ignore[union-attr]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in brick.parameters())
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert "brickzoo:csp_darknet_n" in str(brick)
    assert any("brickzoo:csp_darknet_n" in line for line in list_zoo()["backbone_names"])
    # images in [0, 1], unnormalised, as YOLOv8 takes them: the preprocessor uses mean 0 and std 1
    config = backbone_data_config("brickzoo:csp_darknet_s")
    assert config == {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": (3, 640, 640)}
    assert brick.data_config == config
    for source in (bricks, "brickzoo:csp_darknet_n"):
        preprocessor = preprocessor_bricks(source)["preprocessor"]
        raw = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
        torch.testing.assert_close(preprocessor({"images": raw})["normalized"], raw.float() / 255)
    frozen = backbone_bricks("brickzoo:csp_darknet_n", trainable=False)["backbone"]
    assert not any(p.requires_grad for p in frozen.parameters())


def test_in_channels() -> None:
    brick = backbone_bricks("brickzoo:csp_darknet_n", out_indices=[0], in_channels=1)["backbone"]
    assert brick({"normalized": torch.rand(1, 1, 16, 16)})["features/level0"].shape == (1, 16, 8, 8)
    for bad in (0, 1.5, True, "3"):
        with pytest.raises(BrickDefinitionError, match=rf"in_channels={bad!r}.*take only in_channels"):
            backbone_bricks("brickzoo:csp_darknet_n", in_channels=bad)
    with pytest.raises(BrickDefinitionError, match=r"unknown arguments \['depth', 'in_chans'\]"):
        backbone_bricks("brickzoo:csp_darknet_n", in_chans=1, depth=2)
    with pytest.raises(BrickDefinitionError, match=r"expected 5 widths and 4 depths, got widths=\[8, 16\]"):
        CSPDarknet([8, 16], [1, 1, 1, 1])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_file(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = csp_darknet("csp_darknet_n")
    _randomize(source)
    path = tmp_path / f"darknet{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    brick = backbone_bricks("brickzoo:csp_darknet_n", pretrained=path, out_indices=[1, 4])["backbone"].eval()
    images = torch.rand(2, 3, 64, 64)
    source.eval()
    with torch.no_grad():
        expected = source(images)
        got = brick({"normalized": images})
    torch.testing.assert_close(got["features/level1"], expected[1], rtol=0, atol=0)
    torch.testing.assert_close(got["features/level4"], expected[4], rtol=0, atol=0)
    fresh = backbone_bricks("brickzoo:csp_darknet_n", out_indices=[4])["backbone"].eval()
    with torch.no_grad():
        assert not torch.allclose(fresh({"normalized": images})["features/level4"], expected[4])


def test_weight_files_that_do_not_fit(tmp_path: Path) -> None:
    other = tmp_path / "small.pth"
    torch.save(csp_darknet("csp_darknet_s").state_dict(), other)
    with pytest.raises(WeightsError) as info:
        backbone_bricks("brickzoo:csp_darknet_n", pretrained=other)
    message = str(info.value)
    assert "backbone_bricks('brickzoo:csp_darknet_n')" in message and str(other) in message
    assert "tensors have another shape" in message and "'csp_darknet_n'" in message
    partial = tmp_path / "partial.pth"
    state = csp_darknet("csp_darknet_n").state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("stages.4.")}, partial)
    with pytest.raises(WeightsError, match=r"tensors the backbone needs are missing from it, e.g. \['stages.4"):
        backbone_bricks("brickzoo:csp_darknet_n", pretrained=partial)
    with pytest.raises(ZooError, match=r"no downloadable weights.*torch.save\(csp_darknet\('csp_darknet_n'\)"):
        backbone_bricks("brickzoo:csp_darknet_n", pretrained=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("brickzoo:csp_darknet_q", ["unknown brickzoo model 'csp_darknet_q'", "brickzoo:csp_darknet_n"]),
        ("brickzoo:resnet18", ["unknown brickzoo model", "'brickzoo:csp_darknet_n', 'brickzoo:csp_darknet_s'"]),
        ("csp_darknet_n", ["unknown backbone 'csp_darknet_n'", "brickzoo:csp_darknet_n"]),
        ("bz:csp_darknet_n", ["prefix one of ['timm', 'torchvision', 'brickzoo']"]),
    ],
)
def test_unknown_names(name: str, expected: list[str]) -> None:
    with pytest.raises(ZooError) as info:
        backbone_bricks(name)
    for part in expected:
        assert part in str(info.value)
    message = check_backbone_name(name)
    assert message is not None and expected[0] in message
    with pytest.raises(ZooError, match="unknown"):
        backbone_data_config(name)


def test_every_size_is_named() -> None:
    assert sorted(DARKNET_SIZES) == [f"csp_darknet_{s}" for s in "lmnsx"]
    for name in DARKNET_SIZES:
        assert check_backbone_name(f"brickzoo:{name}") is None


def test_levels_that_do_not_exist_and_unknown_sizes() -> None:
    with pytest.raises(BrickDefinitionError) as info:
        backbone_bricks("brickzoo:csp_darknet_n", out_indices=[2, 5])
    message = str(info.value)
    assert "backbone_bricks('brickzoo:csp_darknet_n')" in message and "levels [5] do not exist" in message
    assert "level4: 256 channels, stride 32" in message
    with pytest.raises(ZooError, match=r"unknown brickzoo model 'csp_darknet_q'.*brickzoo:csp_darknet_n"):
        csp_darknet("csp_darknet_q")
