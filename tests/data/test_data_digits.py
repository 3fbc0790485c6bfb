"""DigitsDataset: sizes, split, upscaling (checked with a numpy bilinear resize) and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from brickzoo.data import DigitsDataset
from brickzoo.errors import DataError

DIGITS = load_digits()


def _bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of a square image, written out by hand."""
    n = image.shape[0]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, n - 1)
    w = src - low
    rows = image[low] * (1 - w)[:, None] + image[high] * w[:, None]  # [size, n]
    return rows[:, low] * (1 - w)[None] + rows[:, high] * w[None]  # [size, size]


def test_all_has_1797_real_digits_with_labels() -> None:
    dataset = DigitsDataset("all", image_size=8)
    assert len(dataset) == 1797 and dataset.num_classes == 10
    assert dataset.num_classes_for("classification") == 10
    for i in (0, 500, 1796):
        sample = dataset[i]
        assert sample["images"].shape == (3, 8, 8) and sample["images"].dtype == torch.float32
        assert sample["labels"].dtype == torch.int64 and sample["labels"].shape == ()
        assert int(sample["labels"]) == DIGITS.target[i]
        np.testing.assert_allclose(sample["images"][1].numpy(), DIGITS.images[i] / 16.0, atol=1e-6)


@pytest.mark.parametrize("size", [32, 20])
def test_upscaling_is_bilinear_and_grey_is_repeated(size: int) -> None:
    dataset = DigitsDataset("val", image_size=size, seed=3)
    for i in (0, 7, len(dataset) - 1):
        image = dataset[i]["images"]
        assert image.shape == (3, size, size)
        assert float(image.min()) >= 0 and float(image.max()) <= 1
        expected = _bilinear(DIGITS.images[dataset.indices[i]] / 16.0, size)
        for channel in range(3):
            np.testing.assert_allclose(image[channel].numpy(), expected, atol=1e-5)


def test_split_sizes_disjoint_stratified_and_deterministic() -> None:
    splits = {name: DigitsDataset(name, seed=0) for name in ("train", "val", "test")}
    indices = {name: set(d.indices.tolist()) for name, d in splits.items()}
    assert sum(len(d) for d in splits.values()) == 1797
    assert set().union(*indices.values()) == set(range(1797))
    assert not (
        indices["train"] & indices["val"] or indices["train"] & indices["test"] or indices["val"] & indices["test"]
    )
    per_class = np.bincount(DIGITS.target, minlength=10)
    expected_val = sum(round(n * 0.2) for n in per_class)
    assert len(splits["val"]) == len(splits["test"]) == expected_val
    overall = per_class / per_class.sum()
    for dataset in splits.values():
        labels = dataset.labels.numpy()
        assert set(labels.tolist()) == set(range(10))
        assert np.abs(np.bincount(labels, minlength=10) / len(labels) - overall).max() < 0.01
        assert (labels == DIGITS.target[dataset.indices]).all()
    assert np.array_equal(DigitsDataset("val", seed=0).indices, splits["val"].indices)
    assert not np.array_equal(DigitsDataset("val", seed=1).indices, splits["val"].indices)


def test_fractions_change_split_sizes() -> None:
    small_val = DigitsDataset("val", val_fraction=0.1, test_fraction=0.3)
    per_class = np.bincount(DIGITS.target, minlength=10)
    assert len(small_val) == sum(round(n * 0.1) for n in per_class)
    assert len(DigitsDataset("test", val_fraction=0.1, test_fraction=0.3)) == sum(round(n * 0.3) for n in per_class)


def test_augmentation_shifts_by_at_most_two_pixels_with_zero_fill() -> None:
    plain = DigitsDataset("train", image_size=16)
    augmented = DigitsDataset("train", image_size=16, augment=True)
    torch.manual_seed(0)
    shifts = set()
    for i in range(40):
        original = plain[i]["images"].numpy()
        moved = augmented[i]["images"].numpy()
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = np.pad(original, ((0, 0), (2, 2), (2, 2)))
                candidate = padded[:, 2 - dy : 2 - dy + 16, 2 - dx : 2 - dx + 16]
                if np.array_equal(candidate, moved):
                    found.append((dx, dy))
        assert found, f"sample {i} is not a shift of the original by at most 2 pixels"
        shifts.update(found)
    assert len(shifts) > 5  # shifts do vary
    torch.manual_seed(123)
    a = augmented[3]["images"]
    torch.manual_seed(123)
    assert torch.equal(a, augmented[3]["images"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "training"}, "split must be one of"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum < 1"),
        ({"image_size": 4}, "at least 8"),
        ({"seed": -2}, "seed must be 0 or more, got -2"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        DigitsDataset(**kwargs)  # type: ignore[arg-type]
