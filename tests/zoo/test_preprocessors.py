"""preprocessor_bricks and Preprocessor: statistics from backbones, uint8/float input, resizing, errors, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from brickzoo import MODEL, BrickCollection, BrickNotTrainable, check_onnx_parity, export_bricks_as_onnx
from brickzoo.bag_of_bricks.backbones import backbone_bricks, backbone_data_config
from brickzoo.bag_of_bricks.preprocessors import Preprocessor, preprocessor_bricks
from brickzoo.errors import BrickDefinitionError, BrickInputError, BrickzooError, ZooError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _statistics(bricks: dict[str, BrickNotTrainable]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    module = bricks["preprocessor"].model
    return tuple(module.mean.flatten().tolist()), tuple(module.std.flatten().tolist())


def _approx(values: tuple[float, ...]) -> list[float]:
    return pytest.approx(list(values), abs=1e-7)  # type: ignore[no-any-return]


def test_brick_contract() -> None:
    bricks = preprocessor_bricks()
    brick = bricks["preprocessor"]
    assert list(bricks) == ["preprocessor"]
    assert isinstance(brick, BrickNotTrainable)
    assert brick.groups == frozenset({MODEL})
    assert brick.input_names == ["images"] and brick.output_names == ["normalized"]
    renamed = preprocessor_bricks(images="raw", normalized="./norm")["preprocessor"]
    out = BrickCollection({"pre": {"p": renamed}})({"raw": torch.rand(1, 3, 8, 8)}, return_inputs=False)
    assert list(out) == ["pre/norm"]


def test_statistics_match_timm_resolve_data_config() -> None:
    config = timm.data.resolve_data_config({}, model=timm.create_model("vit_tiny_patch16_224"))
    mean, std = _statistics(preprocessor_bricks("timm:vit_tiny_patch16_224"))
    assert mean == _approx(config["mean"]) and std == _approx(config["std"])
    assert mean == _approx((0.5, 0.5, 0.5))  # not ImageNet's: the config really came from the model


def test_statistics_from_backbone_bricks_and_explicit_values() -> None:
    backbone = backbone_bricks("timm:resnet10t", out_indices=[4])
    config = timm.data.resolve_data_config({}, model=timm.create_model("resnet10t"))
    for source in (backbone, backbone["backbone"], backbone["backbone"].data_config):
        mean, std = _statistics(preprocessor_bricks(source))
        assert mean == _approx(config["mean"]) and std == _approx(config["std"])
    assert _statistics(preprocessor_bricks()) == (_approx(IMAGENET[0]), _approx(IMAGENET[1]))
    assert _statistics(preprocessor_bricks("torchvision:resnet18")) == (_approx(IMAGENET[0]), _approx(IMAGENET[1]))
    mean, std = _statistics(preprocessor_bricks("timm:vit_tiny_patch16_224", std=(0.25, 0.5, 1.0)))
    assert mean == _approx((0.5, 0.5, 0.5)) and std == _approx((0.25, 0.5, 1.0))


def test_torchvision_model_without_weights_gets_imagenet_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights(name: str) -> None:
        raise ValueError(f"no weights for {name}")

    monkeypatch.setattr(torchvision.models, "get_model_weights", no_weights)
    config = backbone_data_config("torchvision:resnet18")
    assert config == {"mean": _approx(IMAGENET[0]), "std": _approx(IMAGENET[1]), "input_size": (3, 224, 224)}
    assert _statistics(preprocessor_bricks("torchvision:resnet18")) == (_approx(IMAGENET[0]), _approx(IMAGENET[1]))


def test_default_preprocessor_is_unchanged() -> None:
    images = torch.rand(2, 3, 5, 7)
    expected = (images.numpy() - np.array(IMAGENET[0]).reshape(1, 3, 1, 1)) / np.array(IMAGENET[1]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(Preprocessor()(images).numpy(), expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    mean=st.lists(st.floats(-1, 1), min_size=3, max_size=3),
    std=st.lists(st.floats(0.05, 2), min_size=3, max_size=3),
)
def test_uint8_and_float_inputs_agree_with_numpy(seed: int, batch: int, mean: list[float], std: list[float]) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(batch, 3, 6, 5), dtype=np.uint8)
    brick = preprocessor_bricks(mean=mean, std=std)["preprocessor"]
    from_uint8 = brick({"images": torch.from_numpy(raw)})["normalized"]
    from_float = brick({"images": torch.from_numpy(raw.astype(np.float32) / 255.0)})["normalized"]
    expected = (raw / 255.0 - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1)
    assert from_uint8.dtype == torch.float32
    np.testing.assert_allclose(from_uint8.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_float.numpy(), from_uint8.numpy(), rtol=0, atol=1e-6)


def test_resize() -> None:
    images = torch.rand(2, 3, 16, 24)
    brick = preprocessor_bricks(mean=(0, 0, 0), std=(1, 1, 1), size=(8, 12))["preprocessor"]
    out = brick({"images": images})["normalized"]
    assert out.shape == (2, 3, 8, 12)
    # halving with bilinear interpolation (align_corners=False, no antialiasing) samples between
    # pixels: each output pixel is the mean of a 2x2 block
    blocks = images.numpy().reshape(2, 3, 8, 2, 12, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(out.numpy(), blocks, rtol=0, atol=1e-6)
    upscaled = preprocessor_bricks(size=(40, 30))["preprocessor"]({"images": torch.rand(1, 3, 20, 10)})
    assert upscaled["normalized"].shape == (1, 3, 40, 30)
    constant = torch.full((1, 3, 9, 13), 0.5)
    flat = preprocessor_bricks(mean=(0.5, 0.5, 0.5), size=(4, 4))["preprocessor"]({"images": constant})
    assert torch.equal(flat["normalized"], torch.zeros(1, 3, 4, 4))


def test_one_channel_image_is_an_input_error() -> None:
    brick = preprocessor_bricks()["preprocessor"]
    with pytest.raises(BrickInputError) as info:
        brick({"images": torch.rand(2, 1, 32, 32)})
    message = str(info.value)
    assert "[2, 1, 32, 32] float32" in message and "[B, 3, H, W]" in message and "grayscale" in message
    collection = BrickCollection({"pre": preprocessor_bricks()})
    with pytest.raises(BrickzooError) as info:
        collection({"images": torch.rand(2, 1, 32, 32)})
    assert "pre/preprocessor" in str(info.value) and "[2, 1, 32, 32]" in str(info.value)
    with pytest.raises(BrickInputError, match=r"got \[3, 32, 32\]"):
        brick({"images": torch.rand(3, 32, 32)})


def test_bad_arguments() -> None:
    with pytest.raises(BrickDefinitionError, match=r"every std must be > 0, got \[0.1, 0.0, 0.1\]"):
        preprocessor_bricks(std=(0.1, 0.0, 0.1))
    with pytest.raises(BrickDefinitionError, match=r"one value per channel, got 2 means"):
        preprocessor_bricks(mean=(0.1, 0.2))
    with pytest.raises(BrickDefinitionError, match=r"size must be \(H, W\).*\(32,\)"):
        preprocessor_bricks(size=(32,))
    with pytest.raises(BrickDefinitionError, match=r"got int"):
        preprocessor_bricks(backbone=3)
    with pytest.raises(ZooError, match=r"unknown torchvision model 'resnet180'.*torchvision:resnet18"):
        preprocessor_bricks("torchvision:resnet180")


def test_onnx_export_takes_raw_uint8_images_with_a_dynamic_batch(tmp_path: Path) -> None:
    collection = BrickCollection({"pre": preprocessor_bricks(size=(16, 16))})
    images = torch.randint(0, 256, (2, 3, 24, 20), dtype=torch.uint8)
    path = export_bricks_as_onnx(tmp_path / "pre.onnx", collection, {"images": images})
    other = torch.randint(0, 256, (5, 3, 24, 20), dtype=torch.uint8)
    report = check_onnx_parity(path, collection, {"images": other})
    assert report.batch_size == 5 and list(report.max_abs_diff) == ["normalized"]
    assert report.worst < 1e-5
