"""DigitsDataset: sizes, stratified split, upscaling (checked with a numpy bilinear resize) and augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from brickzoo.data import DigitsDataset
from brickzoo.data._digits import split_indices
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


def _assert_stratified(split: np.ndarray, labels: np.ndarray, fraction: float, tolerance: float) -> None:
    """Each class holds ``fraction`` of its samples in ``split``, within ``tolerance`` samples (counted by numpy)."""
    per_class = np.bincount(labels, minlength=labels.max() + 1)
    in_split = np.bincount(labels[split], minlength=labels.max() + 1)
    assert np.abs(in_split - fraction * per_class).max() <= tolerance, (in_split, fraction * per_class)


def test_split_sizes_disjoint_stratified_and_deterministic() -> None:
    splits = {name: DigitsDataset(name, seed=0) for name in ("train", "val", "test")}
    indices = {name: set(d.indices.tolist()) for name, d in splits.items()}
    assert sum(len(d) for d in splits.values()) == 1797
    assert set().union(*indices.values()) == set(range(1797))
    assert not (
        indices["train"] & indices["val"] or indices["train"] & indices["test"] or indices["val"] & indices["test"]
    )
    # scikit-learn takes ceil(fraction * n): 360 for test, then ceil(0.25 * 1437) = 360 for val
    assert len(splits["test"]) == math.ceil(0.2 * 1797) == 360
    assert len(splits["val"]) == math.ceil(0.2 / 0.8 * (1797 - 360)) == 360
    for name, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        _assert_stratified(splits[name].indices, DIGITS.target, fraction, tolerance=2)
        labels = splits[name].labels.numpy()
        assert (labels == DIGITS.target[splits[name].indices]).all()
    assert np.array_equal(DigitsDataset("val", seed=0).indices, splits["val"].indices)
    assert not np.array_equal(DigitsDataset("val", seed=1).indices, splits["val"].indices)


def test_split_is_scikit_learn_stratified_split() -> None:
    test_part = train_test_split(np.arange(1797), test_size=0.2, stratify=DIGITS.target, random_state=4)[1]
    assert np.array_equal(DigitsDataset("test", seed=4).indices, np.sort(test_part))


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(10, 60), min_size=2, max_size=6),
    val_fraction=st.floats(0.1, 0.4),
    test_fraction=st.floats(0.1, 0.4),
    seed=st.integers(0, 2**31 - 1),
)
def test_split_indices_stratified_disjoint_and_seeded(
    counts: list[int], val_fraction: float, test_fraction: float, seed: int
) -> None:
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    splits = split_indices(labels, seed, val_fraction, test_fraction)
    parts = [splits[name] for name in ("train", "val", "test")]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))  # disjoint, cover everything
    assert all(np.array_equal(np.sort(part), part) for part in parts)
    assert len(splits["test"]) == math.ceil(test_fraction * len(labels))
    assert abs(len(splits["val"]) - val_fraction * len(labels)) <= 2
    # bounds of scikit-learn's per-class rounding: one sample per cut, plus the drift of the two cuts
    _assert_stratified(splits["test"], labels, test_fraction, tolerance=2)
    _assert_stratified(splits["val"], labels, val_fraction, tolerance=4)
    _assert_stratified(splits["train"], labels, 1 - val_fraction - test_fraction, tolerance=6)
    again = split_indices(labels, seed, val_fraction, test_fraction)
    assert all(np.array_equal(splits[name], again[name]) for name in splits)


def test_fractions_change_split_sizes() -> None:
    small_val = DigitsDataset("val", val_fraction=0.1, test_fraction=0.3)
    test = DigitsDataset("test", val_fraction=0.1, test_fraction=0.3)
    assert len(test) == math.ceil(0.3 * 1797)
    assert abs(len(small_val) - 0.1 * 1797) <= 1
    _assert_stratified(small_val.indices, DIGITS.target, 0.1, tolerance=2)
    _assert_stratified(test.indices, DIGITS.target, 0.3, tolerance=2)
    assert len(DigitsDataset("val", val_fraction=0.0)) == 0
    with pytest.raises(DataError, match=r"val_fraction=0\.001.*10 classes.*raise the fractions"):
        DigitsDataset("val", val_fraction=0.001)


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
