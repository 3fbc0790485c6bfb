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
from brickzoo.errors import BrickDefinitionError, WeightsError, WeightsNotFoundError, ZooError

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
    brick = backbone_bricks("timm:resnet10t", out_indices=asked, output="feats")["backbone"]
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


def _timm_features(brick: Any, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = brick.eval()({"normalized": images})
    return [out[level.name] for level in brick.feature_levels]


def test_timm_file_with_another_classifier_loads_the_rest(tmp_path: Path) -> None:
    # a file saved from a model fine-tuned on 7 classes: only the classifier differs, and the backbone has none
    source = timm.create_model("resnet10t", num_classes=7)
    _randomize_norm_stats(source)
    path = tmp_path / "resnet10t_7_classes.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    brick = backbone_bricks("timm:resnet10t", pretrained=path, out_indices=(2,))["backbone"]
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        (expected,) = source.eval().forward_intermediates(images, indices=[2], intermediates_only=True)
    torch.testing.assert_close(_timm_features(brick, images)[0], expected, rtol=0, atol=0)


def test_timm_truncated_file_is_refused_without_reading_timm_logs(tmp_path: Path) -> None:
    state = timm.create_model("resnet10t").state_dict()
    truncated = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    path = tmp_path / "truncated.pth"
    torch.save(truncated, path)
    timm_logger = logging.getLogger("timm.models._builder")
    timm_logger.disabled = True  # timm's log lines are not how a missing tensor is found
    try:
        with pytest.raises(WeightsError) as info:
            backbone_bricks("timm:resnet10t", pretrained=path)
    finally:
        timm_logger.disabled = False
    message = str(info.value)
    # what torch itself reports missing (BatchNorm's num_batches_tracked has a default, so it is not)
    missing = timm.create_model("resnet10t").load_state_dict(truncated, strict=False).missing_keys
    assert len(missing) > 10 and all(k.startswith("layer4.") for k in missing)
    assert f"'{path}'" in message and "timm model 'resnet10t'" in message
    assert f"{len(missing)} tensors the backbone needs are missing from it, e.g. {missing[:5]}" in message
    assert "not in the model" not in message and "another shape" not in message


def test_timm_file_of_another_model_names_the_shapes(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    theirs = timm.create_model("resnet18").state_dict()
    torch.save(theirs, path)
    with pytest.raises(WeightsError) as info:
        backbone_bricks("timm:resnet10t", pretrained=str(path))
    message = str(info.value)
    assert f"the weight file '{path}' does not fit timm model 'resnet10t'" in message
    # resnet18 has a plain stem conv1 where resnet10t has a deep stem conv1.0, conv1.3, conv1.6
    assert "missing from it, e.g. ['conv1.0.weight'" in message and "not in the model, e.g. ['conv1.weight'" in message
    # resnet10t downsamples with average pooling then a 1x1 conv (downsample.1), resnet18 with a conv then BatchNorm
    ours = timm.create_model("resnet10t").state_dict()
    key = "layer2.0.downsample.1.weight"
    assert f"{key} ({list(theirs[key].shape)} in the file, {list(ours[key].shape)} in the model)" in message


def test_timm_brick_state_dict_is_not_a_timm_file(tmp_path: Path) -> None:
    # the brick's own keys carry its prefixes: timm alone would load nothing of it, silently (non-strict)
    path = tmp_path / "brick.pth"
    torch.save(backbone_bricks("timm:resnet10t")["backbone"].state_dict(), path)
    with pytest.raises(WeightsError) as info:
        backbone_bricks("timm:resnet10t", pretrained=path)
    assert "missing from it, e.g. ['conv1.0.weight'" in str(info.value)
    assert "not in the model, e.g. ['model.model.conv1.0.weight'" in str(info.value)


def test_timm_file_adapted_to_one_input_channel(tmp_path: Path) -> None:
    source = timm.create_model("resnet10t")
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    brick = backbone_bricks("timm:resnet10t", pretrained=path, out_indices=(1,), in_chans=1)["backbone"]
    stem = dict(brick.named_parameters())["model.model.conv1.0.weight"]
    # timm's adaptation to one channel sums the RGB filters
    expected = source.conv1[0].weight.detach().sum(dim=1, keepdim=True)
    torch.testing.assert_close(stem.detach(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        dict(brick.named_parameters())["model.model.layer1.0.conv1.weight"].detach(),
        source.layer1[0].conv1.weight.detach(),
        rtol=0,
        atol=0,
    )


def test_torchvision_file_with_another_classifier_loads_the_rest(tmp_path: Path) -> None:
    source = torchvision.models.resnet18(num_classes=10)
    _randomize_norm_stats(source)
    path = tmp_path / "resnet18_10_classes.pth"
    torch.save(source.state_dict(), path)
    brick = backbone_bricks("torchvision:resnet18", pretrained=path, out_indices=(4,))["backbone"].eval()
    reference = create_feature_extractor(source.eval(), return_nodes={"layer4": "out"})
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(brick({"normalized": images})["features/level4"], reference(images)["out"])


def test_torchvision_files_that_do_not_fit(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    torch.save({"foo": torch.zeros(2)}, junk)
    with pytest.raises(WeightsError) as info:
        backbone_bricks("torchvision:resnet18", pretrained=junk)
    message = str(info.value)
    assert f"the weight file '{junk}' does not fit torchvision model 'resnet18'" in message
    assert "tensors the backbone needs are missing from it, e.g. ['conv1.weight'" in message
    assert "1 of its tensors are not in the model, e.g. ['foo']" in message
    other = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), other)  # same shapes, more blocks
    with pytest.raises(WeightsError, match=r"resnet34\.pth.*not in the model, e\.g\. \['layer1\.2\.conv1\.weight'"):
        backbone_bricks("torchvision:resnet18", pretrained=other)


# -- weight files that cannot be read -------------------------------------------------------------
def _write_unreadable(path: Path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "module":  # a pickled model, not its state dict: weights_only loading refuses it
        torch.save(torch.nn.Linear(2, 2), path)


UNREADABLE = [
    ("garbage", ".pth", "it is not a torch.save file holding only tensors (UnpicklingError"),
    ("text", ".pth", "it is not a torch.save file holding only tensors ("),  # the error depends on the text
    ("empty", ".pt", "the file is empty"),
    ("list", ".pth", "it holds a list, not a dict of named tensors"),
    ("module", ".bin", "it is not a torch.save file holding only tensors (UnpicklingError: Weights only load failed)"),
    ("garbage", ".safetensors", "it is not a safetensors file (SafetensorError: Error while deserializing header"),
]


@pytest.mark.parametrize("backbone", ["timm:resnet10t", "torchvision:resnet18"])
@pytest.mark.parametrize(("kind", "suffix", "reason"), UNREADABLE, ids=[f"{k}{s}" for k, s, _ in UNREADABLE])
def test_unreadable_weight_file_is_a_weights_error(
    tmp_path: Path, backbone: str, kind: str, suffix: str, reason: str
) -> None:
    path = tmp_path / f"weights{suffix}"
    _write_unreadable(path, kind)
    with pytest.raises(WeightsError) as info:
        backbone_bricks(backbone, pretrained=path)
    message = str(info.value)
    library, _, model = backbone.partition(":")
    assert message.startswith(f"backbone_bricks('{backbone}'): cannot read the weight file '{path}': {reason}")
    assert message.endswith(
        f"expected a state dict of the full {library} model '{model}': a .pth/.pt/.bin file "
        "(torch.save(model.state_dict(), path)) or a .safetensors file"
    )
    assert "\n" not in message and "\x1b" not in message


def test_training_checkpoint_and_ddp_prefixes_are_read_like_timm(tmp_path: Path) -> None:
    source = torchvision.models.resnet18()
    _randomize_norm_stats(source)
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}  # saved from DistributedDataParallel
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": wrapped, "optimizer": {"lr": torch.tensor(0.1)}}, path)
    assert timm.models.load_state_dict(str(path)).keys() == source.state_dict().keys()  # timm reads it so
    brick = backbone_bricks("torchvision:resnet18", pretrained=path, out_indices=[1])["backbone"].eval()
    reference = create_feature_extractor(source.eval(), return_nodes={"layer1": "out"})
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(brick({"normalized": images})["features/level1"], reference(images)["out"])


@pytest.mark.parametrize("backbone", ["timm:resnet10t", "torchvision:resnet18"])
def test_missing_weight_file_and_folder(tmp_path: Path, backbone: str) -> None:
    missing = tmp_path / "missing.pth"
    with pytest.raises(WeightsNotFoundError, match=r"'.*missing\.pth' does not exist") as info:
        backbone_bricks(backbone, pretrained=missing)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        backbone_bricks(backbone, pretrained=str(missing))
    with pytest.raises(WeightsError) as folder:
        backbone_bricks(backbone, pretrained=tmp_path)
    assert not isinstance(folder.value, (FileNotFoundError, NotADirectoryError))
    assert f"pretrained='{tmp_path}' is a folder, expected a weight file" in str(folder.value)
    assert "load_bricks" in str(folder.value)


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
        ("tv:resnet18", ["unknown backbone 'tv:resnet18'", "['timm', 'torchvision', 'brickzoo']"]),
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
    with pytest.raises(BrickDefinitionError, match=r"output='./feats' must be an absolute"):
        backbone_bricks("timm:resnet10t", output="./feats")


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
