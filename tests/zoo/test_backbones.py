"""backbone_bricks: timm and torchvision routing, feature levels, weights, errors, torch.compile."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import timm
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torchvision.models.feature_extraction import create_feature_extractor

from brickzoo import BrickCollection, BrickNotTrainable, BrickTrainable
from brickzoo.bag_of_bricks._features import FeatureLevel, feature_levels
from brickzoo.bag_of_bricks.backbones import (
    BrickBackbone,
    BrickBackboneNotTrainable,
    backbone_bricks,
    backbone_data_config,
    check_backbone_name,
)
from brickzoo.bag_of_bricks.preprocessors import preprocessor_bricks
from brickzoo.errors import BrickDefinitionError, WeightsError, ZooError

SIZE = 64

# (name, channels per level, strides per level): torchvision values from the architectures' papers/code.
TORCHVISION_CASES = [
    ("torchvision:resnet18", [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    ("torchvision:convnext_tiny", [96, 192, 384, 768], [4, 8, 16, 32]),
    ("torchvision:mobilenet_v3_small", [16, 16, 24, 48, 576], [2, 4, 8, 16, 32]),
    ("torchvision:efficientnet_b0", [16, 24, 40, 112, 1280], [2, 4, 8, 16, 32]),
    ("torchvision:regnet_x_400mf", [32, 32, 64, 160, 400], [2, 4, 8, 16, 32]),
    ("torchvision:mobilenet_v2", [16, 24, 32, 96, 1280], [2, 4, 8, 16, 32]),
]
TIMM_CASES = ["resnet10t", "mobilenetv3_small_050"]


def _randomize_norm_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-default running statistics so that loading them is observable."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def _check_levels_and_backward(bricks: dict[str, Any], expected: list[tuple[int, int]]) -> None:
    """Forward 64x64 images, compare each level with its FeatureLevel, backward, check finite grads."""
    brick = bricks["backbone"]
    levels = brick.feature_levels
    assert [(f.channels, f.stride) for f in levels] == expected
    images = torch.randn(2, 3, SIZE, SIZE, requires_grad=True)
    outputs = BrickCollection(bricks)({"normalized": images}, return_inputs=False)
    assert list(outputs) == [f.name for f in levels]
    for level in levels:
        feature = outputs[level.name]
        assert feature.shape[:2] == (2, level.channels)
        assert (SIZE // feature.shape[2], SIZE // feature.shape[3]) == (level.stride, level.stride)
        assert feature.shape[2] * level.stride == SIZE
    loss = sum(o.float().square().mean() for o in outputs.values())
    loss.backward()  # type: ignore[union-attr]
    grads = [p.grad for p in brick.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "channels", "strides"), TORCHVISION_CASES, ids=[c[0] for c in TORCHVISION_CASES])
def test_torchvision_families(name: str, channels: list[int], strides: list[int]) -> None:
    bricks = backbone_bricks(name)
    assert isinstance(bricks["backbone"], BrickBackbone)
    assert isinstance(bricks["backbone"], BrickTrainable)
    assert [f.name for f in bricks["backbone"].feature_levels] == [f"features/level{i}" for i in range(len(channels))]
    _check_levels_and_backward(bricks, list(zip(channels, strides, strict=True)))


@pytest.mark.parametrize("model_name", TIMM_CASES)
def test_timm_models(model_name: str) -> None:
    reference = timm.create_model(model_name).feature_info  # the full model's own description
    bricks = backbone_bricks(f"timm:{model_name}")
    _check_levels_and_backward(bricks, [(int(f["num_chs"]), int(f["reduction"])) for f in reference])


@settings(max_examples=6, deadline=None)
@given(
    indices=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=5, unique=True),
    negative=st.booleans(),
    height=st.sampled_from([32, 64, 96]),
)
def test_timm_out_indices_subsets(indices: list[int], negative: bool, height: int) -> None:
    info = timm.create_model("resnet10t").feature_info
    asked = [i - 5 for i in indices] if negative else indices
    brick = backbone_bricks("timm:resnet10t", out_indices=asked, features="feats")["backbone"]
    wanted = sorted(indices)
    assert brick.feature_levels == [
        FeatureLevel(f"feats/level{i}", int(info[i]["num_chs"]), int(info[i]["reduction"])) for i in wanted
    ]
    outputs = brick({"normalized": torch.randn(1, 3, height, 64)})
    for level in brick.feature_levels:
        assert outputs[level.name].shape == (1, level.channels, height // level.stride, 64 // level.stride)


def test_single_level_writes_a_tensor_and_nesting_keeps_absolute_names() -> None:
    bricks = backbone_bricks("torchvision:resnet18", out_indices=[3])
    collection = BrickCollection({"model": {"backbone": bricks}})
    out = collection({"normalized": torch.randn(2, 3, SIZE, SIZE)}, return_inputs=False)
    assert list(out) == ["features/level3"]
    assert isinstance(out["features/level3"], torch.Tensor)
    assert out["features/level3"].shape == (2, 256, 4, 4)
    # feature_levels() of the zoo contracts accepts the dict as it is
    assert feature_levels(bricks) == [FeatureLevel("features/level3", 256, 16)]
    # the layers after the last requested stage are not kept
    assert "layer4" not in {name for name, _ in bricks["backbone"].named_modules()}


def test_not_trainable_backbone_is_frozen_and_stays_in_eval() -> None:
    brick = backbone_bricks("timm:resnet10t", out_indices=[4], trainable=False)["backbone"]
    assert isinstance(brick, BrickBackboneNotTrainable) and isinstance(brick, BrickNotTrainable)
    assert repr(brick).startswith("BrickBackboneNotTrainable(timm:resnet10t, input_names=['normalized']")
    assert not any(p.requires_grad for p in brick.parameters())
    brick.train()
    assert not any(m.training for m in brick.model.modules())
    images = torch.randn(2, 3, SIZE, SIZE, requires_grad=True)
    brick({"normalized": images})["features/level4"].sum().backward()
    assert images.grad is not None  # gradients still flow through a frozen brick


def test_data_config() -> None:
    tv = backbone_bricks("torchvision:regnet_x_400mf", out_indices=[1])["backbone"].data_config
    transforms = torchvision.models.RegNet_X_400MF_Weights.DEFAULT.transforms()
    assert tv == {"mean": tuple(transforms.mean), "std": tuple(transforms.std), "input_size": (3, 224, 224)}
    resolved = timm.data.resolve_data_config({}, model=timm.create_model("vit_tiny_patch16_224"))
    for config in (backbone_data_config("timm:vit_tiny_patch16_224"),):
        assert config == {k: tuple(resolved[k]) for k in ("mean", "std", "input_size")}
        assert config["mean"] == (0.5, 0.5, 0.5)
    timm_brick = backbone_bricks("timm:resnet10t", out_indices=[1])["backbone"]
    assert timm_brick.data_config["input_size"] == tuple(timm.create_model("resnet10t").pretrained_cfg["input_size"])


# -- weights from local files ------------------------------------------------------------------------
def test_timm_pretrained_from_local_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = timm.create_model("resnet10t")
    _randomize_norm_stats(source)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.WARNING):
        brick = backbone_bricks("timm:resnet10t", pretrained=str(path), out_indices=(1, 2, 3, 4))["backbone"]
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]  # timm's INFO lines stay hidden
    brick.eval()
    source.eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = source.forward_intermediates(images, indices=[1, 2, 3, 4], intermediates_only=True)
        got = brick({"normalized": images})
    for level, reference in zip(brick.feature_levels, expected, strict=True):
        torch.testing.assert_close(got[level.name], reference, rtol=0, atol=0)
    # a differently initialised model gives other features: the weights really came from the file
    fresh = backbone_bricks("timm:resnet10t", out_indices=(4,))["backbone"].eval()
    with torch.no_grad():
        assert not torch.allclose(fresh({"normalized": images})["features/level4"], expected[-1])


# torchvision's own feature extraction on the source model gives the reference; the nodes are read
# off the architectures (the deepest layer at each stride).
TORCHVISION_NODES = [
    ("mobilenet_v3_small", ".safetensors", ["features.0", "features.1", "features.3", "features.8", "features.12"]),
    ("resnet18", ".pth", ["relu", "layer1", "layer2", "layer3", "layer4"]),
]


@pytest.mark.parametrize(("model_name", "suffix", "nodes"), TORCHVISION_NODES, ids=[c[0] for c in TORCHVISION_NODES])
def test_torchvision_pretrained_from_local_file(tmp_path: Path, model_name: str, suffix: str, nodes: list[str]) -> None:
    source = torchvision.models.get_model(model_name)
    _randomize_norm_stats(source)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    brick = backbone_bricks(f"torchvision:{model_name}", pretrained=path)["backbone"].eval()
    reference = create_feature_extractor(source.eval(), return_nodes={n: str(i) for i, n in enumerate(nodes)})
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = reference(images)
        got = brick({"normalized": images})
    assert len(brick.feature_levels) == len(nodes)
    for i, level in enumerate(brick.feature_levels):
        torch.testing.assert_close(got[level.name], expected[str(i)], rtol=0, atol=0)


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"not a file"):
        backbone_bricks("torchvision:resnet18", pretrained=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    torch.save({"foo": torch.zeros(2)}, junk)
    with pytest.raises(WeightsError, match=r"missing keys.*unexpected keys \['foo'\]"):
        backbone_bricks("torchvision:resnet18", pretrained=junk)
    with pytest.raises(WeightsError, match=r"junk\.pth.*resnet10t.*missing from the file, e\.g\. \['conv1"):
        backbone_bricks("timm:resnet10t", pretrained=str(junk))
    # the brick's own state dict is not a timm model's: timm alone would load it silently (non-strict)
    own = tmp_path / "brick.pth"
    torch.save(backbone_bricks("timm:resnet10t")["backbone"].state_dict(), own)
    with pytest.raises(WeightsError, match=r"brick\.pth.*missing from the file"):
        backbone_bricks("timm:resnet10t", pretrained=own)
    # a file of another architecture: shapes do not fit
    other = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), other)
    with pytest.raises(WeightsError, match=r"(?s)resnet18\.pth.*RuntimeError.*size mismatch"):
        backbone_bricks("timm:resnet10t", pretrained=other)


# -- pretrained=True without internet ---------------------------------------------------------------
def test_timm_pretrained_offline_is_a_clear_zoo_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ZooError) as info:
        backbone_bricks("timm:resnet10t", pretrained=True)
    message = str(info.value)
    assert "could not be fetched" in message and "pretrained='/path/to/weights" in message
    assert "timm:resnet10t" in message


def test_torchvision_pretrained_offline_is_a_clear_zoo_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, *args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    with pytest.raises(ZooError) as info:
        backbone_bricks("torchvision:resnet18", pretrained=True)
    message = str(info.value)
    assert "could not be fetched" in message and "URLError" in message
    assert "https://download.pytorch.org/models/resnet18" in message and "pretrained='/path/to/weights" in message


# -- unknown names and bad levels --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("timm:resnet10x", ["unknown timm model 'resnet10x'", "timm:resnet10t"]),
        ("torchvision:resnet19", ["unknown torchvision model 'resnet19'", "torchvision:resnet18"]),
        ("tv:resnet18", ["unknown backbone 'tv:resnet18'", "['timm', 'torchvision']"]),
        ("resnet18", ["unknown backbone 'resnet18'", "torchvision:resnet18", "timm:resnet18"]),
        ("torchvision:vit_b_16", ["'vit_b_16' is not a supported backbone family", "'convnext*'", "timm:"]),
    ],
)
def test_unknown_names(name: str, expected: list[str]) -> None:
    with pytest.raises(ZooError) as info:
        backbone_bricks(name)
    for part in expected:
        assert part in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("timm:resnet10t", None),
        ("timm:resnet10t.c3_in1k", None),
        ("torchvision:efficientnet_v2_s", None),
        ("timm:resnet10x", "timm:resnet10t"),
        ("torchvision:vit_b_16", "not a supported backbone family"),
        ("resnet18", "expected '<prefix>:<model>'"),
    ],
)
def test_check_backbone_name(name: str, expected: str | None) -> None:
    message = check_backbone_name(name)
    if expected is None:
        assert message is None
    else:
        assert message is not None and expected in message


def test_unknown_name_for_preprocessor_is_zoo_error() -> None:
    with pytest.raises(ZooError, match="timm:resnet10t"):
        preprocessor_bricks("timm:resnet10y")


@pytest.mark.parametrize(
    ("name", "out_indices", "expected"),
    [
        ("timm:resnet10t", [5], ["out_indices=[5]", "levels [5] do not exist", "[0, 1, 2, 3, 4]"]),
        ("timm:resnet10t", [1, 1], ["repeated", "level4: 512 channels, stride 32"]),
        ("torchvision:convnext_tiny", [2, 4], ["levels [4] do not exist", "[0, 1, 2, 3]", "level3: 768 channels"]),
        ("torchvision:resnet18", [], ["empty", "[0, 1, 2, 3, 4]"]),
    ],
)
def test_bad_levels(name: str, out_indices: list[int], expected: list[str]) -> None:
    with pytest.raises(BrickDefinitionError) as info:
        backbone_bricks(name, out_indices=out_indices)
    for part in expected:
        assert part in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(BrickDefinitionError, match=r"torchvision could not build 'resnet18'.*no_such_argument"):
        backbone_bricks("torchvision:resnet18", no_such_argument=1)
    with pytest.raises(BrickDefinitionError, match=r"timm could not build.*no_such_argument"):
        backbone_bricks("timm:resnet10t", no_such_argument=1)
    with pytest.raises(BrickDefinitionError, match=r"pretrained must be True, False or the path.*got int 1"):
        backbone_bricks("timm:resnet10t", pretrained=1)  # type: ignore[arg-type]
    with pytest.raises(BrickDefinitionError, match=r"features='./feats' must be an absolute"):
        backbone_bricks("timm:resnet10t", features="./feats")


def test_model_kwargs_reach_timm() -> None:
    brick = backbone_bricks("timm:resnet10t", out_indices=[1], in_chans=1)["backbone"]
    assert brick({"normalized": torch.randn(1, 1, 32, 32)})["features/level1"].shape == (1, 64, 8, 8)


# -- torch.compile --------------------------------------------------------------------------------------
def test_compile_fullgraph_matches_eager() -> None:
    backbone = backbone_bricks("timm:resnet10t", out_indices=(1, 2, 3, 4))
    collection = BrickCollection({"preprocessor": preprocessor_bricks(backbone), "backbone": backbone}).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    torch._dynamo.reset()

    def run(images: torch.Tensor) -> dict[str, Any]:
        return collection({"images": images}, return_inputs=False)

    # aot_eager traces the whole graph like inductor (fullgraph fails on any graph break) without
    # inductor's C++ compilation, which takes ~35 s on this machine.
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = run(images)
        got = compiled(images)
        got_other_batch = compiled(torch.rand(3, 3, SIZE, SIZE))
    assert list(got) == list(expected) == ["normalized"] + [f"features/level{i}" for i in (1, 2, 3, 4)]
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
    assert got_other_batch["features/level4"].shape == (3, 512, 2, 2)
