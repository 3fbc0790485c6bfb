"""What every training step shares, whichever engine runs it (:func:`~brickzoo.training.fit`,
:func:`~brickzoo.training.evaluate`, :class:`~brickzoo.lightning.BrickLightningModule`): the batch
must be a dict, its size, the checks of the losses and their weighted total, the epoch of the
datasets' augmentation and the boxes it dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from brickzoo.errors import BrickDefinitionError, BrickOutputError, DataError

TOTAL_LOSS = "loss"
"""The name under which the weighted total of the losses is logged (``train/loss``, ``val/loss``)."""

BOXES_DROPPED = "boxes_dropped"
"""The batch entry (``Tensor[B]`` int64) counting the boxes each sample's transforms dropped, and the name of
its sum per epoch (``train/boxes_dropped``, ``val/boxes_dropped``)."""


def require_named_batch(batch: Any, source: str) -> None:
    """Raise unless ``batch`` is a dict of named values.

    Raises:
        DataError: naming ``source`` (``"train_loader"``) and the type it got.
    """
    if not isinstance(batch, Mapping):
        raise DataError(
            f"{source} must yield dicts of named tensors such as {{'images': Tensor[B, 3, H, W], 'labels': "
            f"Tensor[B]}}, got a {type(batch).__name__}; make the dataset return such dicts"
        )


def batch_size(batch: Mapping[str, Any]) -> int | None:
    """The number of images of a batch: ``images``' first dimension, else the first batched tensor's.

    None when the batch holds no tensor with a batch dimension.
    """
    images = batch.get("images")
    if isinstance(images, torch.Tensor) and images.ndim:
        return int(images.shape[0])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    return None


def check_loss_names(loss_names: Iterable[str], where: str) -> None:
    """Refuse a loss named like the total (``loss``) next to other losses: the two would be confused.

    Raises:
        BrickDefinitionError: naming ``where`` and the loss names.
    """
    names = list(loss_names)
    if TOTAL_LOSS in names and len(names) > 1:
        raise BrickDefinitionError(
            f"{where}: a loss brick writes '{TOTAL_LOSS}', the name under which the total of all losses {names} "
            "is logged; give that loss another output name (e.g. './loss_main')"
        )


def check_losses(losses: Mapping[str, Any], where: str) -> None:
    """Each loss must be a scalar floating tensor (metadata only: no value is read, no device sync).

    Raises:
        BrickOutputError: naming ``where``, the loss and what it is.
    """
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 0 or not value.dtype.is_floating_point:
            got = (
                f"Tensor{list(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            )
            raise BrickOutputError(
                f"{where}: loss {name!r} must be a scalar float tensor to minimise, got {got}; "
                "reduce it in the loss brick (e.g. .mean())"
            )


def total_loss(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The weighted sum of the losses (weight 1 for names not in ``weights``); a 0-d tensor.

    Example:
        >>> total_loss({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, {"b": 0.5})
        tensor(2.)
    """
    terms = [value * weights[name] if name in weights else value for name, value in losses.items()]
    if not terms:
        raise BrickOutputError(f"no loss to sum: the loss bricks wrote nothing (weights given for {sorted(weights)})")
    return torch.stack(terms).sum() if len(terms) > 1 else terms[0]


def loss_terms(total: torch.Tensor, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"loss": total, <loss name>: loss, ...}``: what is logged of one step's losses."""
    return {TOTAL_LOSS: total} | {name: value for name, value in losses.items() if name != TOTAL_LOSS}


class LossMeans:
    """Sums losses weighted by batch size on the device (no sync per batch) and averages them per image."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.images = 0

    def add(self, terms: Mapping[str, torch.Tensor], size: int) -> None:
        """Add one batch's ``terms`` (see :func:`loss_terms`), each the mean over its ``size`` images."""
        self.images += size
        for name, value in terms.items():
            value = value.detach().float() * size  # summed per image
            self.sums[name] = self.sums[name] + value if name in self.sums else value

    def means(self) -> dict[str, float]:
        """Each loss averaged over every image added (one device sync per loss)."""
        return {name: float(total) / max(self.images, 1) for name, total in self.sums.items()}


def epoch_datasets(loader: Any) -> list[Any]:
    """The datasets of ``loader`` that have ``set_epoch``: its ``dataset`` and the datasets that one wraps.

    Wrapped datasets are found through ``.dataset`` (``Subset``,
    :class:`~brickzoo.data.transforms.TransformedDataset`) and ``.datasets`` (``ConcatDataset``).
    """
    found: list[Any] = []
    seen: set[int] = set()
    stack = [getattr(loader, "dataset", None)]
    while stack:
        dataset = stack.pop()
        if dataset is None or id(dataset) in seen:
            continue
        seen.add(id(dataset))
        if callable(getattr(dataset, "set_epoch", None)):
            found.append(dataset)
        inner = [getattr(dataset, "dataset", None), *getattr(dataset, "datasets", [])]
        stack.extend(d for d in inner if isinstance(d, Dataset))
    return found


def set_data_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on every dataset of ``loader`` that has it (see :func:`epoch_datasets`).

    Call it before iterating the loader for the epoch: a
    :class:`~brickzoo.data.transforms.TransformedDataset` then draws the augmentations of
    ``(seed, index, epoch)``, in DataLoader workers too.
    """
    for dataset in epoch_datasets(loader):
        dataset.set_epoch(epoch)


def boxes_dropped(batch: Mapping[str, Any]) -> int | None:
    """The boxes the batch's transforms dropped (the sum of its ``boxes_dropped``); None when it has no count.

    Reads the tensor's value: call it on the host batch, before it moves to the device.
    """
    value = batch.get(BOXES_DROPPED)
    return int(value.sum()) if isinstance(value, torch.Tensor) else None


def add_count(total: int | None, count: int | None) -> int | None:
    """``total + count`` where None means "no count yet" (so a loader without counts reports none)."""
    if count is None:
        return total
    return count if total is None else total + count
