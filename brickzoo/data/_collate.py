"""Collation of per-sample dicts into batches of named tensors, and a seeded DataLoader."""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from brickzoo.errors import DataError

DEFAULT_PAD_VALUES: dict[str, float | int] = {"boxes": 0.0, "box_labels": -1}
"""Entries whose first dimension varies per sample (objects), with the value they are padded with."""


def collate_named(
    samples: Sequence[Mapping[str, Any]], pad_values: Mapping[str, float | int] | None = None
) -> dict[str, Any]:
    """Turn a list of per-sample dicts into one batch dict.

    Tensors are stacked along a new batch dimension. Entries named in ``pad_values``
    (default: "boxes" padded with 0 and "box_labels" padded with -1) may have a different
    first dimension per sample; they are padded to the largest one in the batch, so
    ``boxes (Tensor[M_i, 4])`` becomes ``boxes (Tensor[B, M, 4])`` with ``M = max M_i`` and
    ``box_labels (Tensor[M_i])`` becomes ``box_labels (Tensor[B, M])`` (``M`` may be 0).
    Anything that is not a tensor is kept as a list with one entry per sample.

    Args:
        samples: per-sample dicts with the same keys.
        pad_values: entries to pad and their padding value; replaces the default.

    Returns:
        The batch dict, with the keys of the samples.

    Raises:
        DataError: no samples, samples with different keys, or tensors that cannot be stacked
            (the message names the entry and the shapes got).

    Example:
        >>> import torch
        >>> from brickzoo.data import collate_named
        >>> a = {"boxes": torch.ones(2, 4), "box_labels": torch.tensor([1, 2])}
        >>> b = {"boxes": torch.zeros(0, 4), "box_labels": torch.zeros(0, dtype=torch.int64)}
        >>> collate_named([a, b])["box_labels"].tolist()
        [[1, 2], [-1, -1]]
    """
    if len(samples) == 0:
        raise DataError("collate_named: expected at least one sample, got an empty list")
    pads = DEFAULT_PAD_VALUES if pad_values is None else pad_values
    keys = list(samples[0].keys())
    for i, sample in enumerate(samples[1:], start=1):
        if set(sample.keys()) != set(keys):
            raise DataError(
                f"collate_named: sample {i} has keys {sorted(sample.keys())}, expected the keys of sample 0 "
                f"{sorted(keys)} (missing {sorted(set(keys) - set(sample))}, extra {sorted(set(sample) - set(keys))})"
            )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        if not all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = values
        elif key in pads:
            batch[key] = _pad_stack(key, values, pads[key])
        else:
            batch[key] = _stack(key, values)
    return batch


def _shapes(values: Sequence[torch.Tensor]) -> str:
    shapes = [list(v.shape) for v in values]
    return ", ".join(str(s) for s in shapes[:8]) + (f", ... ({len(shapes)} in all)" if len(shapes) > 8 else "")


def _stack(key: str, values: Sequence[torch.Tensor]) -> torch.Tensor:
    first = values[0]
    if any(v.shape != first.shape for v in values):
        hint = "; pass image_size= to the dataset so all images get one size" if first.ndim >= 2 else ""
        raise DataError(f"collate_named: cannot stack {key!r}, the samples have shapes {_shapes(values)}{hint}")
    if any(v.dtype != first.dtype for v in values):
        dtypes = sorted({str(v.dtype) for v in values})
        raise DataError(f"collate_named: cannot stack {key!r}, the samples have different dtypes {dtypes}")
    return torch.stack(list(values))


def _pad_stack(key: str, values: Sequence[torch.Tensor], pad_value: float | int) -> torch.Tensor:
    """``values[i] (Tensor[M_i, ...])`` padded with ``pad_value`` to ``Tensor[B, max M_i, ...]``."""
    first = values[0]
    if first.ndim == 0 or any(v.ndim != first.ndim or v.shape[1:] != first.shape[1:] for v in values):
        raise DataError(
            f"collate_named: cannot pad {key!r}, expected [M_i, ...] with equal trailing dimensions per sample, "
            f"got shapes {_shapes(values)}"
        )
    if any(v.dtype != first.dtype for v in values):
        dtypes = sorted({str(v.dtype) for v in values})
        raise DataError(f"collate_named: cannot pad {key!r}, the samples have different dtypes {dtypes}")
    return pad_sequence(list(values), batch_first=True, padding_value=pad_value)  # [B, M, ...]


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from the seed torch gave that worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pad_values: Mapping[str, float | int] | None = None,
) -> DataLoader[Any]:
    """A DataLoader batching with :func:`collate_named` whose order depends only on ``seed``.

    The shuffling generator is seeded with ``seed``, so two loaders made with the same seed
    give the same sequence of batches, epoch after epoch (each epoch draws a new order from the
    generator). Workers seed numpy and ``random`` from their torch seed, which also derives
    from ``seed``.

    Args:
        dataset: a dataset of per-sample dicts.
        batch_size: samples per batch.
        shuffle: draw a new random order every epoch.
        num_workers: worker processes (0 loads in the main process).
        seed: seed of the shuffling generator and of the workers.
        drop_last: drop the last incomplete batch.
        pad_values: passed to :func:`collate_named`.

    Example:
        >>> from brickzoo.data import ShapesDataset, make_loader
        >>> batch = next(iter(make_loader(ShapesDataset(8, image_size=32), batch_size=4, shuffle=True)))
        >>> batch["images"].shape
        torch.Size([4, 3, 32, 32])
    """
    if batch_size < 1:
        raise DataError(f"make_loader: batch_size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise DataError(f"make_loader: num_workers must be 0 or more, got {num_workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=functools.partial(collate_named, pad_values=pad_values),
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
