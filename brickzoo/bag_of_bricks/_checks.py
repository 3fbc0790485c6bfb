"""Input checks shared by the zoo's modules.

Two kinds: layout checks (type, dtype, ndim, shape) read only tensor metadata, so they run in
every ``forward``/``update`` at no cost and trace into ``torch.compile`` graphs as guards; value
checks (:func:`check_class_index_values`) read tensor data on the host, so they only run from a
module's ``check_inputs`` (called by ``BrickCollection.check_batch`` on the first batch of each
loader). Messages say what was got and what was expected; the collection puts the brick path in
front of them.
"""

from __future__ import annotations

import torch

from brickzoo.errors import BrickInputError


def _shape(tensor: torch.Tensor) -> str:
    return f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def check_images(images: torch.Tensor, what: str = "images", channels: int | None = 3) -> None:
    """``[B, C, H, W]`` images (``C == channels`` unless None)."""
    if not isinstance(images, torch.Tensor):
        raise BrickInputError(f"{what}: expected a tensor [B, {channels or 'C'}, H, W], got {type(images).__name__}")
    if images.ndim != 4 or (channels is not None and images.shape[1] != channels):
        raise BrickInputError(
            f"{what}: expected shape [B, {channels or 'C'}, H, W], got {_shape(images)}"
            + ("; convert grayscale images to 3 channels" if images.ndim == 4 and images.shape[1] == 1 else "")
        )


def check_class_index_layout(targets: torch.Tensor, what: str = "targets", ndim: int = 1) -> None:
    """Integer class indices of ``ndim`` dimensions (metadata only, no data is read)."""
    if not isinstance(targets, torch.Tensor):
        raise BrickInputError(f"{what}: expected an int64 tensor of class indices, got {type(targets).__name__}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.ndim != ndim:
        layout = "[B]" if ndim == 1 else "[B, H, W]" if ndim == 3 else f"{ndim}-D"
        raise BrickInputError(f"{what}: expected int64 class indices {layout}, got {_shape(targets)}")


def check_class_index_values(
    targets: torch.Tensor, num_classes: int, what: str = "targets", ignore_index: int | None = None
) -> None:
    """Class indices in ``[0, num_classes)`` (``ignore_index`` allowed); reads the data on the host."""
    valid = targets if ignore_index is None else targets[targets != ignore_index]
    if valid.numel() == 0:
        return
    low, high = int(valid.min()), int(valid.max())
    if low < 0 or high >= num_classes:
        raise BrickInputError(
            f"{what}: class indices must be in [0, {num_classes - 1}]"
            + (f" or {ignore_index} (ignored)" if ignore_index is not None else "")
            + f"; got values from {low} to {high}"
        )


def check_batch(value: torch.Tensor, batch_size: int, what: str) -> None:
    """``value`` holds ``batch_size`` samples (its first dimension)."""
    if value.shape[0] != batch_size:
        raise BrickInputError(f"{what}: batch size {value.shape[0]} differs from the predictions' {batch_size}")
