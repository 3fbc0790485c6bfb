"""scikit-learn's handwritten digits (1797 real 8x8 images) as a small classification dataset."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from brickzoo.data._common import NamedDataset, check_index
from brickzoo.errors import DataError

SPLITS = ("train", "val", "test", "all")


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All digits: images ``[1797, 8, 8]`` float32 in [0, 1] and labels ``[1797]`` int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)  # [N, 8, 8]
    return images, np.asarray(digits.target, dtype=np.int64)


def split_indices(labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """A stratified split of ``range(len(labels))`` with scikit-learn's ``train_test_split(stratify=labels)``.

    "test" takes ``ceil(test_fraction * N)`` samples, then "val" takes ``val_fraction`` of all
    samples from the rest, each with every class in proportion (within a sample or two per
    class); "train" is what is left and "all" is everything. The splits are disjoint, depend
    only on ``seed`` and hold sorted indices.

    Raises:
        DataError: a split too small to hold every class (or a class with one sample).
    """
    everything = np.arange(len(labels))
    try:
        rest, test = _stratified_cut(everything, labels, test_fraction, seed)
        # val_fraction of all samples, as a fraction of what the test split left
        train, val = _stratified_cut(rest, labels, val_fraction / (1.0 - test_fraction), seed)
    except ValueError as error:
        raise DataError(
            f"split_indices: cannot make stratified splits with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} of {len(labels)} samples in {len(np.unique(labels))} classes "
            f"(scikit-learn: {error}); every split needs at least one sample per class, raise the fractions"
        ) from error
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "all": everything}


def _stratified_cut(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` cut into (kept, taken) with ``fraction`` of them taken, stratified by ``labels[indices]``."""
    if fraction <= 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split

    kept, taken = train_test_split(indices, test_size=fraction, stratify=labels[indices], random_state=seed)
    return np.asarray(kept), np.asarray(taken)


class DigitsDataset(NamedDataset):
    """scikit-learn's ``load_digits()``: 1797 real 8x8 handwritten digits, upscaled, with labels 0-9.

    The 8x8 grey images (values 0-16) are scaled to [0, 1], upscaled with bilinear
    interpolation to ``image_size`` and repeated to 3 channels. The split is stratified
    (scikit-learn's ``train_test_split(stratify=...)``) and deterministic for a given ``seed``;
    "train", "val" and "test" are disjoint and together make "all".

    Every sample is a dict with ``images (Tensor[3, S, S])`` float32 in [0, 1] and
    ``labels (Tensor[])`` int64 in 0..9.

    Args:
        split: "train", "val", "test" or "all".
        image_size: side ``S`` of the output images.
        seed: seed of the split.
        val_fraction: fraction of the digits (and of each class, within a sample or two) in "val".
        test_fraction: fraction of the digits (and of each class, within a sample or two) in "test".
        augment: shift each image by up to ``max_shift`` pixels in x and y (zero fill), drawn
            from torch's random generator (seeded per worker by the DataLoader); for training.
        max_shift: largest shift in output pixels when ``augment`` is on.

    Example:
        >>> from brickzoo.data import DigitsDataset
        >>> train = DigitsDataset("train", image_size=32)
        >>> train[0]["images"].shape, train.num_classes
        (torch.Size([3, 32, 32]), 10)
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 32,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        augment: bool = False,
        max_shift: int = 2,
    ) -> None:
        owner = "DigitsDataset"
        if split not in SPLITS:
            raise DataError(f"{owner}: split must be one of {SPLITS}, got {split!r}")
        if image_size < 8:
            raise DataError(f"{owner}: image_size must be at least 8 (the digits are 8x8), got {image_size}")
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise DataError(
                f"{owner}: expected val_fraction >= 0, test_fraction >= 0 and their sum < 1, "
                f"got val_fraction={val_fraction}, test_fraction={test_fraction}"
            )
        if seed < 0:
            raise DataError(f"{owner}: seed must be 0 or more, got {seed}")
        if max_shift < 0:
            raise DataError(f"{owner}: max_shift must be 0 or more, got {max_shift}")
        self.split = split
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.max_shift = int(max_shift)
        images, labels = _load_digits()
        self.indices = split_indices(labels, seed, val_fraction, test_fraction)[split]  # into the 1797 digits
        self._images = torch.from_numpy(images[self.indices])  # [N, 8, 8]
        self._labels = torch.from_numpy(labels[self.indices])  # [N]
        self.class_names = [str(d) for d in range(10)]
        self.num_classes = 10
        self.tasks = {"classification": self.class_names}

    @property
    def labels(self) -> torch.Tensor:
        """Labels of the whole split ``[N]`` int64, without loading images."""
        return self._labels.clone()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        size = self.image_size
        small = self._images[index][None, None]  # [1, 1, 8, 8]
        image = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[0]  # [1, S, S]
        if self.augment and self.max_shift > 0:
            dx, dy = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
            image = _shift(image, dx, dy)
        return {
            "images": image.clamp(0.0, 1.0).expand(3, size, size).contiguous(),
            "labels": self._labels[index].clone(),
        }


def _shift(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move ``image (Tensor[C, H, W])`` by ``dx`` columns and ``dy`` rows, filling with zeros."""
    out = torch.zeros_like(image)
    _, height, width = image.shape
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out
