"""Transforms keep images, masks and boxes aligned: letterbox and flips against hand computations, counted drops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as torch_f
from torchvision.transforms import v2

from brickzoo.data import ShapesDataset
from brickzoo.data.transforms import (
    PAD_FILL,
    SanitizeBoxes,
    apply_transforms,
    build_transforms,
    letterbox_params,
    pipeline_letterbox_params,
    stretch_params,
    to_tv_tensors,
    undo_letterbox_boxes,
    undo_letterbox_masks,
)
from brickzoo.errors import DataError

WIDTH, HEIGHT = 300, 170  # a photo-sized image, wider than high
BOX = [30.0, 40.0, 130.0, 101.0]  # xyxy pixel edges


def _photo(width: int = WIDTH, height: int = HEIGHT) -> dict[str, torch.Tensor]:
    """An image with a smooth gradient, a mask with a rectangle of class 2 under BOX and a patch of 255."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = torch.stack([xs / width, ys / height, torch.rand(height, width, generator=generator)]).float()
    mask = torch.zeros(height, width, dtype=torch.int64)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    mask[y1:y2, x1:x2] = 2
    mask[5:9, 250:297] = 255
    mask[150:, :10] = 1
    return {
        "images": image,
        "masks": mask,
        "boxes": torch.tensor([BOX]),
        "box_labels": torch.tensor([2]),
        "labels": torch.tensor(1),
    }


def _close(got: torch.Tensor, expected: object, atol: float) -> bool:
    return np.allclose(got.numpy(), np.asarray(expected, dtype=np.float64), atol=atol, rtol=0)


def _nearest_exact(source: int, target: int) -> np.ndarray:
    """Source index of each target pixel of a nearest-exact resize: the pixel under the target pixel's centre."""
    return np.floor((np.arange(target) + 0.5) * source / target).astype(int)


def test_letterbox_300x170_to_320_matches_a_hand_computation() -> None:
    sample = _photo()
    out = apply_transforms(build_transforms([{"letterbox": {"size": 320}}]), sample)
    # scale = min(320 / 170, 320 / 300) = 320 / 300; height round(170 * 320 / 300) = round(181.33) = 181;
    # 139 rows of padding: 69 on top, 70 at the bottom (the odd row goes to the bottom)
    assert letterbox_params((HEIGHT, WIDTH), 320) == ((HEIGHT, WIDTH), (181, 320), (320, 320), 0, 69)
    assert out["images"].shape == (3, 320, 320) and out["masks"].shape == (320, 320)
    expected_box = [30 * 320 / 300, 40 * 181 / 170 + 69, 130 * 320 / 300, 101 * 181 / 170 + 69]
    assert _close(out["boxes"], [expected_box], 1e-4)
    assert out["box_labels"].tolist() == [2] and int(out["labels"]) == 1 and int(out["boxes_dropped"]) == 0
    # the image: bilinear, antialiased resize in the middle rows, neutral grey padding
    reference = torch_f.interpolate(sample["images"][None], (181, 320), mode="bilinear", antialias=True)[0]
    assert torch.allclose(out["images"][:, 69:250], reference.clamp(0, 1), atol=1e-5)
    assert torch.all(out["images"][:, :69] == PAD_FILL) and torch.all(out["images"][:, 250:] == PAD_FILL)
    # the mask: nearest-exact (pixel centres) in the middle, 255 (ignore) in the padding
    rows, cols = _nearest_exact(HEIGHT, 181), _nearest_exact(WIDTH, 320)
    assert np.array_equal(out["masks"][69:250].numpy(), sample["masks"].numpy()[rows][:, cols])
    assert torch.all(out["masks"][:69] == 255) and torch.all(out["masks"][250:] == 255)


def test_letterbox_undone_gives_the_original_box_and_mask() -> None:
    sample = _photo()
    out = apply_transforms(build_transforms([{"letterbox": {"size": 320}}]), sample)
    params = letterbox_params((HEIGHT, WIDTH), 320)
    assert _close(undo_letterbox_boxes(out["boxes"], params), [BOX], 1e-3)
    # enlarged on both axes: nearest-exact there and back returns every pixel to its place
    assert torch.equal(undo_letterbox_masks(out["masks"], params), sample["masks"])


def test_letterbox_shrinking_round_trip_is_exact_where_nearest_allows() -> None:
    sample = _photo(600, 340)  # twice the photo: shrunk to 320 x 181, then enlarged back
    params = letterbox_params((340, 600), 320)
    assert params == ((340, 600), (181, 320), (320, 320), 0, 69)
    out = apply_transforms(build_transforms([{"letterbox": {"size": 320}}]), sample)
    back = undo_letterbox_masks(out["masks"], params).numpy()
    rows = _nearest_exact(340, 181)[_nearest_exact(181, 340)]  # original row each pixel's value comes from
    cols = _nearest_exact(600, 320)[_nearest_exact(320, 600)]
    assert np.array_equal(back, sample["masks"].numpy()[rows][:, cols])
    assert np.abs(rows - np.arange(340)).max() <= 1 and np.abs(cols - np.arange(600)).max() <= 1


def test_letterbox_top_left_and_tall_images() -> None:
    top_left = letterbox_params((170, 300), 320, center=False)
    assert (top_left.pad_left, top_left.pad_top, top_left.padding) == (0, 0, (0, 0, 0, 139))
    tall = letterbox_params((300, 100), (200, 160))  # scale min(200 / 300, 160 / 100) = 2 / 3
    assert tall.resized_size == (200, 67) and (tall.pad_left, tall.pad_top) == (46, 0)  # 93 columns: 46 + 47
    boxes = torch.tensor([[0.0, 0.0, 67.0, 200.0], [-5.0, 10.0, 500.0, 20.0]]) + torch.tensor([46.0, 0, 46, 0])
    back = undo_letterbox_boxes(boxes, tall)
    assert _close(back, [[0, 0, 100, 300], [0, 15, 100, 30]], 1e-4)  # clipped to the original


def test_stretch_params_undo_a_plain_resize() -> None:
    sample = _photo()
    out = apply_transforms(build_transforms([{"resize": {"size": [128, 256]}}]), sample)
    params = stretch_params((HEIGHT, WIDTH), (128, 256))
    assert out["images"].shape == (3, 128, 256)
    assert _close(undo_letterbox_boxes(out["boxes"], params), [BOX], 1e-3)
    assert undo_letterbox_masks(out["masks"], params).shape == (HEIGHT, WIDTH)


def test_undo_checks_shapes() -> None:
    params = letterbox_params((10, 20), 32)
    with pytest.raises(DataError, match=r"\[\.\.\., 4\]"):
        undo_letterbox_boxes(torch.zeros(3, 5), params)
    with pytest.raises(DataError, match=r"\[\.\.\., 32, 32\]"):
        undo_letterbox_masks(torch.zeros(30, 32), params)
    batch = undo_letterbox_masks(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), params)
    assert batch.shape == (2, 3, 10, 20) and batch.dtype == torch.uint8


def test_pipeline_letterbox_params_read_the_evaluation_geometry() -> None:
    pipeline = build_transforms(
        [{"resize": {"size": 100}}, {"color_jitter": {"brightness": 0.1}}, {"letterbox": {"size": 320}}]
    )
    # resize: shorter side 170 -> 100, longer int(300 * 100 / 170) = 176;
    # letterbox 100x176 -> round(100 * 320 / 176) = 182 rows
    assert pipeline_letterbox_params(pipeline, (HEIGHT, WIDTH)) == ((HEIGHT, WIDTH), (182, 320), (320, 320), 0, 69)
    assert pipeline_letterbox_params(build_transforms([]), (5, 7)) == ((5, 7), (5, 7), (5, 7), 0, 0)
    for specs in ([{"center_crop": {"size": 32}}], ["horizontal_flip"]):
        with pytest.raises(DataError, match="cannot be mapped back"):
            pipeline_letterbox_params(build_transforms(specs), (64, 64))


@pytest.mark.parametrize(("name", "flip"), [("horizontal_flip", np.fliplr), ("vertical_flip", np.flipud)])
def test_flip_matches_numpy_and_the_hand_flipped_box(name: str, flip: object) -> None:
    sample = _photo()
    out = apply_transforms(build_transforms([{name: {"p": 1.0}}]), sample)
    for channel in range(3):
        assert np.array_equal(out["images"][channel].numpy(), flip(sample["images"][channel].numpy()))  # type: ignore[operator]
    assert np.array_equal(out["masks"].numpy(), flip(sample["masks"].numpy()))  # type: ignore[operator]
    x1, y1, x2, y2 = BOX
    hand = [WIDTH - x2, y1, WIDTH - x1, y2] if name == "horizontal_flip" else [x1, HEIGHT - y2, x2, HEIGHT - y1]
    assert out["boxes"].tolist() == [hand]


def test_crop_clips_boxes_and_counts_the_dropped_ones() -> None:
    sample = {
        "images": torch.rand(3, 64, 64),
        "masks": torch.zeros(64, 64, dtype=torch.int64),
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 64.0, 64.0], [20.0, 30.0, 40.0, 31.5]]),
        "box_labels": torch.tensor([1, 2, 3]),
        "labels": torch.tensor(2),
    }
    out = apply_transforms(build_transforms([{"center_crop": {"size": 32}}]), sample)  # keeps [16, 48)
    assert out["boxes"].tolist() == [[0.0, 0.0, 32.0, 32.0], [4.0, 14.0, 24.0, 15.5]]  # clipped, not dropped
    assert out["box_labels"].tolist() == [1, 3] and int(out["boxes_dropped"]) == 1  # the corner box left
    assert int(out["labels"]) == 2  # the classification label is not a box label
    strict = apply_transforms(
        build_transforms([{"center_crop": {"size": 32}}, {"sanitize_boxes": {"min_size": 2}}]), sample
    )
    assert strict["box_labels"].tolist() == [1] and int(strict["boxes_dropped"]) == 2  # 1.5 px high: too small


def test_every_pipeline_ends_by_dropping_degenerate_boxes() -> None:
    sample = {
        "images": torch.rand(3, 8, 8),
        "boxes": torch.tensor([[1.0, 1, 5, 5], [3, 3, 3, 6]]),
        "box_labels": torch.tensor([0, 1]),
    }
    out = apply_transforms(build_transforms([]), sample)
    assert out["box_labels"].tolist() == [0] and int(out["boxes_dropped"]) == 1


def test_padding_is_grey_in_images_and_ignore_in_masks() -> None:
    sample = {"images": torch.zeros(3, 10, 20), "masks": torch.ones(10, 20, dtype=torch.int64)}
    out = apply_transforms(build_transforms([{"random_crop": {"size": 30, "pad_if_needed": True}}]), sample, seed=0)
    assert out["images"].shape == (3, 30, 30) and "boxes_dropped" not in out  # no boxes, nothing counted
    padded = out["masks"] == 255
    assert int((out["masks"] == 1).sum()) == 200  # the whole 10 x 20 image is inside the crop
    assert torch.all(out["images"][:, padded] == PAD_FILL) and torch.all(out["images"][:, ~padded] == 0)


def test_sanitize_leaves_semantic_masks_whole_when_their_height_equals_the_box_count() -> None:
    boxes = torch.tensor([[0.0, 0, 2, 2], [1, 1, 1, 2], [0, 0, 4, 3]])  # 3 boxes, the second degenerate
    sample = {
        "images": torch.rand(3, 3, 4),
        "masks": torch.arange(12).reshape(3, 4),
        "boxes": boxes,
        "box_labels": torch.tensor([5, 6, 7]),
        "labels": torch.tensor(0),
    }
    out = SanitizeBoxes()(to_tv_tensors(sample))
    assert out["masks"].shape == (3, 4) and torch.equal(out["masks"].as_subclass(torch.Tensor), sample["masks"])
    assert out["box_labels"].tolist() == [5, 7] and out["labels"].tolist() == 0


def test_instances_follow_the_kept_boxes() -> None:
    dataset = ShapesDataset(6, image_size=48, max_shapes=5, return_instances=True)
    pipeline = build_transforms([{"random_resized_crop": {"size": 40, "scale": [0.2, 0.5]}}])
    for index in range(len(dataset)):
        out = apply_transforms(pipeline, dataset[index], seed=index)
        kept = len(out["boxes"])
        assert set(out["instances"].unique().tolist()) <= set(range(kept + 1))
        for i, box in enumerate(out["boxes"].tolist()):
            ys, xs = torch.nonzero(out["instances"] == i + 1, as_tuple=True)
            if len(xs):  # the pixel extent of instance i lies in box i (nearest resizing: within a pixel)
                assert box[0] - 1 <= xs.min() and xs.max() + 1 <= box[2] + 1
                assert box[1] - 1 <= ys.min() and ys.max() + 1 <= box[3] + 1


def test_bad_samples_and_failing_transforms_are_named() -> None:
    with pytest.raises(DataError, match=r"'masks' has shape \[4, 4\], expected the image's \[8, 8\]"):
        apply_transforms(build_transforms([]), {"images": torch.rand(3, 8, 8), "masks": torch.zeros(4, 4)})
    with pytest.raises(DataError, match=r"expected 'images' float \[3, H, W\]"):
        apply_transforms(build_transforms([]), {"images": torch.zeros(8, 8, dtype=torch.uint8)})
    with pytest.raises(DataError, match=r"my sample: the transform pipeline failed .*'images': \[3, 8, 8\]"):
        apply_transforms(build_transforms(["random_iou_crop"]), {"images": torch.rand(3, 8, 8)}, owner="my sample")


def test_seeded_calls_restore_the_global_generator() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    sample = _photo()
    pipeline = build_transforms([{"random_resized_crop": {"size": 64}}, "horizontal_flip"])
    first = apply_transforms(pipeline, sample, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = apply_transforms(pipeline, sample, seed=7)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not math.isclose(
        float(first["images"].sum()), float(apply_transforms(pipeline, sample, seed=8)["images"].sum())
    )


def test_a_pipeline_that_changes_the_image_dtype_is_refused() -> None:
    with pytest.raises(DataError, match=r"images of dtype torch\.uint8; expected float images in \[0, 1\]"):
        apply_transforms(v2.ToDtype(torch.uint8, scale=True), {"images": torch.rand(3, 4, 4)})
