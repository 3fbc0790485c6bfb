"""Tensor, numpy and pillow conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from brickzoo import BrickCollection, BrickDefinitionError, BrickOutputError, BrickPerImageVisualization
from brickzoo.errors import BrickInputError
from brickzoo.tensor_conversions import (
    batched_tensor_to_channel_last,
    float2uint8,
    function_composer,
    pillow_images_to_batched_tensor,
    uint82float,
    unpack_batched_tensor_to_numpy_channel_last,
    unpack_batched_tensor_to_pillow_images,
)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=64))
def test_uint8_float_round_trip(values: list[int]) -> None:
    array = np.array(values, dtype=np.uint8)
    np.testing.assert_array_equal(float2uint8(uint82float(array)), array)


def test_float2uint8_clips() -> None:
    np.testing.assert_array_equal(float2uint8(np.array([-1.0, 0.5, 2.0])), np.array([0, 128, 255], dtype=np.uint8))


def test_pillow_round_trip_and_channel_last() -> None:
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    pil = unpack_batched_tensor_to_pillow_images(images)
    assert [im.size for im in pil] == [(7, 5), (7, 5)]
    torch.testing.assert_close(pillow_images_to_batched_tensor(pil), images.float() / 255)
    arrays = unpack_batched_tensor_to_numpy_channel_last(images.float())
    assert arrays[0].shape == (5, 7, 3)
    np.testing.assert_array_equal(arrays[1][2, 3], images[1, :, 2, 3].float().numpy())
    with pytest.raises(ValueError, match=r"got shape \[2, 5, 7\]"):
        unpack_batched_tensor_to_pillow_images(images[:, 0])


def test_function_composer_applies_left_to_right() -> None:
    assert function_composer(lambda x: x + 1, lambda x: x * 10)(1) == 20


def test_per_image_visualization_splits_batches_and_lists() -> None:
    def draw(image: np.ndarray, label: np.ndarray, caption: str) -> Image.Image:
        assert image.shape == (4, 6, 3) and label.shape == (1,)
        return Image.new("RGB", (6, 4), (int(label[0]), 0, 0))

    brick = BrickPerImageVisualization(draw, ["images", "labels", "captions"], ["drawn"])
    collection = BrickCollection({"vis": brick})
    out = collection(
        {"images": torch.zeros(3, 3, 4, 6), "labels": torch.tensor([1, 2, 3]), "captions": ["a", "b", "c"]}
    )
    assert [im.getpixel((0, 0))[0] for im in out["drawn"]] == [1, 2, 3]
    with pytest.raises(BrickOutputError, match=r"brick 'vis': inputs hold different numbers of images"):
        collection({"images": torch.zeros(3, 3, 4, 6), "labels": torch.tensor([1, 2]), "captions": ["a", "b", "c"]})


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((2, 3), (2, 3)), ((2, 3, 5), (2, 5, 3)), ((2, 3, 4, 5), (2, 4, 5, 3)), ((2, 3, 4, 5, 6), (2, 4, 5, 6, 3))],
)
def test_batched_tensor_to_channel_last_moves_dimension_one_last(shape, expected) -> None:
    tensor = torch.arange(int(np.prod(shape))).reshape(shape)
    moved = batched_tensor_to_channel_last(tensor)
    assert tuple(moved.shape) == expected
    reference = np.moveaxis(tensor.numpy(), 1, -1)  # numpy's own axis move as the reference
    np.testing.assert_array_equal(moved.numpy(), reference)


@pytest.mark.parametrize("shape", [(4,), (), (1, 2, 3, 4, 5, 6)])
def test_batched_tensor_to_channel_last_refuses_other_ranks(shape) -> None:
    with pytest.raises(BrickInputError, match=rf"2 to 5 dimensions, got shape {list(shape)}".replace("[", r"\[")):
        batched_tensor_to_channel_last(torch.zeros(shape))


def test_visualizer_passes_the_whole_dict_for_all_names() -> None:
    seen = []

    def draw(everything: dict, image: np.ndarray) -> str:
        seen.append(sorted(everything))
        return f"{image.shape}"

    brick = BrickPerImageVisualization(draw, ["__all__", "images"], ["drawn"])
    collection = BrickCollection({"vis": brick})
    out = collection({"images": torch.zeros(2, 3, 4, 6), "title": "run 1"})
    assert out["drawn"] == ["(4, 6, 3)", "(4, 6, 3)"]
    assert seen == [["images", "title"], ["images", "title"]]


def test_visualizer_none_unpack_passes_the_value_unsplit() -> None:
    brick = BrickPerImageVisualization(
        lambda image, classes: tuple(classes.shape),
        ["images", "classes"],
        ["shapes"],
        unpack_functions_for_input_name={"classes": None},
    )
    out = brick({"images": torch.zeros(3, 3, 2, 2), "classes": torch.zeros(3, 7)})
    assert out["shapes"] == [(3, 7)] * 3


def test_visualizer_passes_non_batched_values_to_every_image() -> None:
    def draw(image: np.ndarray, title: str, options: dict, scale: torch.Tensor) -> tuple:
        return title, options["colour"], float(scale)

    brick = BrickPerImageVisualization(draw, ["images", "title", "options", "scale"], ["drawn"])
    out = brick(
        {
            "images": torch.zeros(2, 3, 2, 2),
            "title": "epoch 3",
            "options": {"colour": "red"},
            "scale": torch.tensor(2.0),
        }
    )
    assert out["drawn"] == [("epoch 3", "red", 2.0)] * 2
    with pytest.raises(BrickOutputError, match="none of the inputs .* holds a batch"):
        BrickCollection({"vis": brick})({"images": "x", "title": "t", "options": {}, "scale": 1.0})
    with pytest.raises(BrickDefinitionError, match="must map names to a function or None"):
        BrickPerImageVisualization(draw, ["images"], ["d"], unpack_functions_for_input_name={"images": 3})


def test_visualizer_attribute_change_after_a_forward_is_used() -> None:
    brick = BrickPerImageVisualization(lambda image: "old", ["images"], ["drawn"])
    collection = BrickCollection({"vis": brick})
    assert collection({"images": torch.zeros(1, 3, 2, 2)})["drawn"] == ["old"]
    brick.callable = lambda image: "new"
    assert collection({"images": torch.zeros(1, 3, 2, 2)})["drawn"] == ["new"]


def test_pillow_images_to_batched_tensor_scales_16_bit_and_refuses_mixed_sizes() -> None:
    values = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)  # a 16-bit grey image
    batch = pillow_images_to_batched_tensor([image])
    expected = torch.from_numpy(values.astype(np.float32) / 65535).expand(3, 2, 2)
    torch.testing.assert_close(batch[0], expected)
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))  # alpha dropped, colour kept
    torch.testing.assert_close(pillow_images_to_batched_tensor([rgba])[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255)
    with pytest.raises(BrickInputError, match=r"one size, got the sizes \(W, H\) \[\(2, 2\), \(3, 2\)\]"):
        pillow_images_to_batched_tensor([rgba, Image.new("RGB", (3, 2))])
