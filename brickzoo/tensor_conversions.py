"""Conversions between batched torch tensors, numpy arrays and pillow images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from brickzoo.errors import BrickInputError
from brickzoo.torchbricks_compat import function_composer

__all__ = [
    "batched_tensor_to_channel_last",
    "float2uint8",
    "function_composer",
    "pillow_images_to_batched_tensor",
    "torch_to_numpy",
    "uint82float",
    "unpack_batched_tensor_to_numpy",
    "unpack_batched_tensor_to_numpy_channel_last",
    "unpack_batched_tensor_to_pillow_images",
]


def float2uint8(values: np.ndarray) -> np.ndarray:
    """Map floats in [0, 1] to uint8 in [0, 255] (values outside are clipped)."""
    return (np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def uint82float(values: np.ndarray) -> np.ndarray:
    """Map uint8 in [0, 255] to float32 in [0, 1]."""
    return np.asarray(values, dtype=np.float32) / 255.0


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Detach, move to the CPU and convert to numpy (bfloat16/float16 become float32)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.numpy()


def batched_tensor_to_channel_last(tensor: torch.Tensor) -> torch.Tensor:
    """Move the channel axis (dimension 1) of a batched tensor last.

    ``[B, C]`` stays, ``[B, C, L]`` becomes ``[B, L, C]``, ``[B, C, H, W]`` becomes
    ``[B, H, W, C]`` and ``[B, C, D, H, W]`` becomes ``[B, D, H, W, C]``.

    Raises:
        BrickInputError: a tensor with fewer than 2 or more than 5 dimensions.

    Example:
        >>> batched_tensor_to_channel_last(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 4, 5, 3])
    """
    if not isinstance(tensor, torch.Tensor) or not 2 <= tensor.ndim <= 5:
        got = f"shape {list(tensor.shape)}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise BrickInputError(
            f"batched_tensor_to_channel_last: expected a batched tensor [B, C, ...] of 2 to 5 dimensions, got {got}"
        )
    return tensor.movedim(1, -1)


def unpack_batched_tensor_to_numpy(tensor: torch.Tensor) -> list[np.ndarray]:
    """One numpy array per batch entry, keeping the entry's shape (at least 1-D)."""
    return [np.atleast_1d(item) for item in torch_to_numpy(tensor)]


def unpack_batched_tensor_to_numpy_channel_last(tensor: torch.Tensor) -> list[np.ndarray]:
    """Images ``[B, C, H, W]`` become ``[H, W, C]`` arrays; other tensors one array per batch entry."""
    if tensor.ndim == 4:
        tensor = batched_tensor_to_channel_last(tensor)
    return unpack_batched_tensor_to_numpy(tensor)


def unpack_batched_tensor_to_pillow_images(tensor: torch.Tensor) -> list[Image.Image]:
    """Images ``[B, 3, H, W]`` or ``[B, 1, H, W]`` (float in [0, 1] or uint8) to pillow images."""
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise BrickInputError(
            f"unpack_batched_tensor_to_pillow_images: expected images [B, 3, H, W] or [B, 1, H, W], "
            f"got shape {list(tensor.shape)}"
        )
    arrays = torch_to_numpy(batched_tensor_to_channel_last(tensor))
    if arrays.dtype != np.uint8:
        arrays = float2uint8(arrays)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def pillow_images_to_batched_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Pillow images of one size to a float tensor ``[B, 3, H, W]`` in [0, 1].

    Every mode is read as :func:`brickzoo.data.load_image` reads files: grey, palette and CMYK
    become RGB, alpha is dropped, 16-bit grey images are scaled by 65535 (not clipped to white).

    Raises:
        BrickInputError: the images differ in size, or one has a mode that cannot become RGB.
    """
    from brickzoo.data._common import image_to_tensor
    from brickzoo.errors import DataError

    sizes = sorted({image.size for image in images})
    if len(sizes) > 1:
        raise BrickInputError(
            f"pillow_images_to_batched_tensor: expected images of one size, got the sizes (W, H) {sizes}"
        )
    try:
        tensors = [image_to_tensor(image, None, f"pillow image {i}") for i, image in enumerate(images)]
    except DataError as error:
        raise BrickInputError(f"pillow_images_to_batched_tensor: {error}") from error
    return torch.stack(tensors)  # [B, 3, H, W]
