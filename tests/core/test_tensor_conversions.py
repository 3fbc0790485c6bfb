"""Tensor, numpy and pillow conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from brickzoo import BrickCollection, BrickOutputError, BrickPerImageVisualization
from brickzoo.tensor_conversions import (
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
