"""ShapesDataset: determinism, targets consistent with each other (checked with numpy), ranges and balance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brickzoo.data import AVAILABLE_SHAPE_NAMES, SHAPE_NAMES, ShapesDataset, make_loader
from brickzoo.errors import DataError


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def _check_sample(sample: dict[str, torch.Tensor], dataset: ShapesDataset) -> None:
    """Every invariant of one sample, recomputed with numpy from the returned tensors."""
    size, num_kinds = dataset.image_size, len(dataset.shape_names)
    images, masks = sample["images"], sample["masks"]
    boxes, box_labels, labels = sample["boxes"], sample["box_labels"], sample["labels"]
    assert images.dtype == torch.float32 and images.shape == (3, size, size)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert masks.dtype == torch.int64 and masks.shape == (size, size)
    assert labels.dtype == torch.int64 and labels.shape == ()
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert box_labels.dtype == torch.int64 and box_labels.shape == (boxes.shape[0],)
    assert 1 <= boxes.shape[0] <= dataset.max_shapes
    assert set(np.unique(masks.numpy())) <= {0, 255, *range(1, num_kinds + 1)}
    assert int(box_labels.min()) >= 0 and int(box_labels.max()) < num_kinds

    mask = masks.numpy()
    instances = sample["instances"].numpy()
    counts = []
    for i, (box, kind) in enumerate(zip(boxes.numpy(), box_labels.numpy(), strict=True)):
        ys, xs = np.nonzero(instances == i + 1)
        counts.append(len(xs))
        assert len(xs) >= dataset.min_visible_pixels
        # The box is the exact pixel-edge extent of the shape's visible pixels.
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        # The mask gives those pixels the shape's kind + 1.
        assert (mask[ys, xs] == kind + 1).all()
    assert instances.max() == len(counts)
    # Pixels of no kept shape are background or ignore, and ignore pixels belong to no kept shape.
    assert set(np.unique(mask[instances == 0])) <= {0, 255}
    # Per kind, without the instance map: the mask pixels of kind k span exactly the union of k's boxes.
    for kind in range(num_kinds):
        ys, xs = np.nonzero(mask == kind + 1)
        kind_boxes = boxes.numpy()[box_labels.numpy() == kind]
        if len(kind_boxes) == 0:
            assert len(xs) == 0
            continue
        union = [kind_boxes[:, 0].min(), kind_boxes[:, 1].min(), kind_boxes[:, 2].max(), kind_boxes[:, 3].max()]
        np.testing.assert_array_equal(union, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    # The label is the kind of the shape with the most visible pixels.
    assert int(labels) == int(box_labels[int(np.argmax(counts))])


def test_same_seed_and_index_give_identical_samples_in_any_order() -> None:
    forward = ShapesDataset(12, image_size=48, seed=3)
    backward = ShapesDataset(12, image_size=48, seed=3)
    first = [forward[i] for i in range(12)]
    second = {i: backward[i] for i in reversed(range(12))}
    for i in range(12):
        _assert_same(first[i], second[i])
        _assert_same(first[i], forward[i])  # asked again
    assert torch.equal(forward[-1]["images"], first[11]["images"])


def test_different_seeds_and_indices_differ() -> None:
    a, b = ShapesDataset(4, seed=0), ShapesDataset(4, seed=1)
    for i in range(4):
        assert not torch.equal(a[i]["images"], b[i]["images"])
    assert not torch.equal(a[0]["images"], a[1]["images"])


def test_instances_flag_changes_nothing_else() -> None:
    plain = ShapesDataset(5, image_size=40, seed=7)
    with_instances = ShapesDataset(5, image_size=40, seed=7, return_instances=True)
    for i in range(5):
        sample = with_instances[i]
        assert sample.pop("instances").dtype == torch.int64
        _assert_same(plain[i], sample)


def test_worker_processes_give_the_same_batches_as_the_main_process() -> None:
    dataset = ShapesDataset(8, image_size=32, seed=5)
    in_main = list(make_loader(dataset, batch_size=4, shuffle=False, num_workers=0))
    in_workers = list(make_loader(dataset, batch_size=4, shuffle=False, num_workers=2))
    for a, b in zip(in_main, in_workers, strict=True):
        _assert_same(a, b)


def test_targets_are_consistent_on_many_samples() -> None:
    dataset = ShapesDataset(60, image_size=64, seed=11, max_shapes=5, return_instances=True)
    for i in range(len(dataset)):
        _check_sample(dataset[i], dataset)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    index=st.integers(0, 1000),
    image_size=st.integers(16, 96),
    min_shapes=st.integers(1, 3),
    extra=st.integers(0, 4),
    kinds=st.lists(st.sampled_from(AVAILABLE_SHAPE_NAMES), min_size=1, max_size=6, unique=True),
)
def test_targets_are_consistent_for_any_parameters(
    seed: int, index: int, image_size: int, min_shapes: int, extra: int, kinds: list[str]
) -> None:
    dataset = ShapesDataset(
        1001,
        image_size=image_size,
        seed=seed,
        min_shapes=min_shapes,
        max_shapes=min_shapes + extra,
        shape_names=kinds,
        return_instances=True,
    )
    _check_sample(dataset[index], dataset)


def _visible_pixels_per_kept_shape(sample: dict[str, torch.Tensor]) -> np.ndarray:
    """Visible pixels of each boxed shape, counted on the instance map (independent of the label rule)."""
    instances = sample["instances"].numpy()
    return np.array([(instances == i + 1).sum() for i in range(len(sample["boxes"]))])


def _largest_and_runner_up(sample: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Visible pixels of the largest shape (its kind must be the label) and of the largest of another kind (0: none)."""
    pixels, kinds = _visible_pixels_per_kept_shape(sample), sample["box_labels"].numpy()
    label = int(sample["labels"])
    assert label == kinds[int(np.argmax(pixels))]
    others = pixels[kinds != label]
    return int(pixels.max()), int(others.max()) if others.size else 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 64, "max_shapes": 3},
        {"image_size": 160, "min_shapes": 2, "max_shapes": 8, "size_range": (0.06, 0.2)},
    ],
)
def test_the_labelled_shape_is_clearly_the_largest(kwargs: dict[str, object]) -> None:
    dataset = ShapesDataset(150, seed=5, return_instances=True, **kwargs)  # type: ignore[arg-type]
    assert dataset.label_margin == 0.25
    for i in range(len(dataset)):
        largest, runner_up = _largest_and_runner_up(dataset[i])
        assert largest >= 1.25 * runner_up, (i, largest, runner_up)


def test_without_a_margin_near_ties_of_two_kinds_occur() -> None:
    """label_margin=0 keeps the plain rule (the largest shape), and then about 1 in 15 images is a toss-up."""
    dataset = ShapesDataset(300, image_size=64, seed=5, label_margin=0, return_instances=True)
    near_ties = 0
    for i in range(len(dataset)):
        largest, runner_up = _largest_and_runner_up(dataset[i])
        near_ties += int(largest < 1.1 * runner_up)
    assert 5 <= near_ties <= 60, near_ties


def test_a_margin_no_layout_can_meet_names_the_sample() -> None:
    # six shapes of one size: one of them with five times the visible pixels of all the others is (nearly) impossible
    dataset = ShapesDataset(1, image_size=64, min_shapes=6, max_shapes=6, size_range=(0.15, 0.15), label_margin=4)
    with pytest.raises(DataError, match=r"sample 0 \(seed 0\).*label_margin=4.0.*lower label_margin"):
        dataset[0]


def test_occluded_remnants_are_ignored_not_boxed() -> None:
    dataset = ShapesDataset(150, image_size=48, seed=2, min_shapes=6, max_shapes=8, return_instances=True)
    images_with_ignore = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        ignored = sample["masks"] == 255
        if ignored.any():
            images_with_ignore += 1
            assert (sample["instances"][ignored] == 0).all()
            # each dropped shape leaves fewer than min_visible_pixels pixels
            assert int(ignored.sum()) < dataset.min_visible_pixels * (8 - len(sample["boxes"]))
    assert images_with_ignore > 0  # crowded images do produce dropped shapes


def test_background_is_textured_and_shapes_are_flat() -> None:
    dataset = ShapesDataset(30, image_size=64, seed=4, max_shapes=1, noise_range=(0.0, 0.0))
    background_std, shape_std = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        image, mask = sample["images"].numpy(), sample["masks"].numpy()
        background_std.append(image[:, mask == 0].std(axis=1).mean())
        shape_std.append(image[:, mask > 0].std(axis=1).mean())
    # without noise a shape only carries the image-wide light ramp; the background varies much more
    assert np.median(background_std) > 0.05
    assert np.median(shape_std) < np.median(background_std) / 2


def test_classes_are_roughly_balanced() -> None:
    dataset = ShapesDataset(400, image_size=32, seed=0)
    labels = np.array([int(dataset[i]["labels"]) for i in range(len(dataset))])
    frequencies = np.bincount(labels, minlength=4) / len(labels)
    assert frequencies.min() > 0.15 and frequencies.max() < 0.35, frequencies


def test_num_classes_and_names_per_task() -> None:
    dataset = ShapesDataset(1)
    assert dataset.class_names == list(SHAPE_NAMES) == ["circle", "square", "triangle", "star"]
    assert dataset.num_classes_for("classification") == 4
    assert dataset.num_classes_for("detection") == 4
    assert dataset.num_classes_for("segmentation") == 5
    assert dataset.class_names_for("segmentation") == ["background", *SHAPE_NAMES]
    six = ShapesDataset(1, shape_names=AVAILABLE_SHAPE_NAMES)
    assert six.num_classes_for("segmentation") == 7
    with pytest.raises(DataError, match="'depth'.*classification"):
        dataset.num_classes_for("depth")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_shapes": 0}, "min_shapes"),
        ({"min_shapes": 3, "max_shapes": 2}, "max_shapes=2"),
        ({"shape_names": ["circle", "blob"]}, "blob"),
        ({"shape_names": ["circle", "circle"]}, "distinct"),
        ({"size_range": (0.5, 0.2)}, "size_range"),
        ({"image_size": 4}, "image_size"),
        ({"min_visible_pixels": 10_000}, "min_visible_pixels"),
        ({"seed": -1}, "seed must be 0 or more, got -1"),
        ({"label_margin": -0.1}, "label_margin <= 4, got -0.1"),
        ({"label_margin": float("nan")}, "label_margin <= 4, got nan"),
        ({"label_margin": "0.25"}, "label_margin must be a number from 0 to 4, got '0.25'"),
        ({"label_margin": True}, "label_margin must be a number from 0 to 4, got True"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        ShapesDataset(10, **kwargs)  # type: ignore[arg-type]


def test_index_out_of_range_raises_index_error() -> None:
    dataset = ShapesDataset(3)
    with pytest.raises(IndexError, match="index 3 out of range for 3"):
        dataset[3]
    assert [int(s["labels"]) for s in dataset] == [int(dataset[i]["labels"]) for i in range(3)]
