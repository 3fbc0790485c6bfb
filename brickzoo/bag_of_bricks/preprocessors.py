"""Preprocessors: raw images in, normalised tensors out.

The preprocessor sits in the MODEL group, so an exported model takes raw images (uint8 in
[0, 255] or float in [0, 1]) and normalises them itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from brickzoo._bricks import BrickInterface, BrickNotTrainable
from brickzoo.bag_of_bricks._checks import check_images
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.bag_of_bricks.backbones import backbone_data_config
from brickzoo.errors import BrickDefinitionError


class Preprocessor(nn.Module):
    """Normalise images with a per-channel mean and std (ImageNet's by default), optionally resizing them.

    uint8 images are first scaled to [0, 1]; float images are taken to be in [0, 1] already.

    Args:
        mean: per-channel mean (ImageNet's by default, ``timm.data.IMAGENET_DEFAULT_MEAN``).
        std: per-channel standard deviation, all > 0 (``timm.data.IMAGENET_DEFAULT_STD`` by default).
        size: ``(H, W)`` to resize to (bilinear, ``align_corners=False``), or None to keep the size.

    Shape:
        images ``[B, C, H, W]`` (``C = len(mean)``) in, ``[B, C, H', W']`` float32 out.

    Raises:
        BrickInputError: images that are not ``[B, len(mean), H, W]``.

    Example:
        >>> Preprocessor(size=(32, 48))(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape
        torch.Size([2, 3, 32, 48])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise BrickDefinitionError(
                f"Preprocessor: mean and std need one value per channel, got {len(mean)} means {list(mean)} "
                f"and {len(std)} stds {list(std)}"
            )
        if any(float(s) <= 0 for s in std):
            raise BrickDefinitionError(f"Preprocessor: every std must be > 0, got {list(std)}")
        if size is not None and (len(size) != 2 or any(int(v) <= 0 for v in size)):
            raise BrickDefinitionError(f"Preprocessor: size must be (H, W) with positive values, got {size!r}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, channels=self.channels)
        if images.dtype == torch.uint8:
            images = images.float() / 255.0  # [B, C, H, W] in [0, 1]
        if self.size is not None:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)  # [B, C, H', W']
        return (images - self.mean) / self.std


def _data_config_of(backbone: Any) -> dict[str, Any]:
    """The data config of a backbone given as a name, a brick with ``data_config`` or a dict holding one."""
    if backbone is None:
        return {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    if isinstance(backbone, str):
        return backbone_data_config(backbone)
    config = getattr(backbone, "data_config", None)
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(backbone, Mapping):
        if "mean" in backbone and "std" in backbone:
            return dict(backbone)
        configs = (getattr(v, "data_config", None) for v in backbone.values())
        found: list[Mapping[str, Any]] = [c for c in configs if isinstance(c, Mapping)]
        if len(found) == 1:
            return dict(found[0])
        raise BrickDefinitionError(
            f"preprocessor_bricks: backbone is a dict with keys {sorted(map(str, backbone))} holding {len(found)} "
            "bricks with a data_config; expected the dict returned by backbone_bricks (one backbone brick)"
        )
    raise BrickDefinitionError(
        "preprocessor_bricks: backbone must be None, a backbone name ('timm:resnet10t'), the bricks of "
        f"backbone_bricks or a data config with 'mean' and 'std'; got {type(backbone).__name__}"
    )


@register_factory("preprocessor", "preprocessor")
def preprocessor_bricks(
    backbone: Any = None,
    images: str = "images",
    normalized: str = "normalized",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: Sequence[int] | None = None,
) -> dict[str, BrickInterface]:
    """Image normalisation matching a backbone: ``{"preprocessor": brick}`` in the MODEL group.

    The brick reads ``images`` (``[B, 3, H, W]``, float in [0, 1] or uint8 in [0, 255]) and writes
    ``normalized`` (``[B, 3, H', W']`` float32, ``(x - mean) / std``, resized to ``size`` if given).

    Args:
        backbone: where mean and std come from: None (ImageNet's), a backbone name
            (``"timm:resnet10t"``, ``"torchvision:resnet18"``), the dict or brick returned by
            ``backbone_bricks``, or a dict with ``mean`` and ``std``.
        images: the name of the raw images it reads.
        normalized: the name of the tensor it writes.
        mean: per-channel mean, overriding the backbone's.
        std: per-channel standard deviation, overriding the backbone's.
        size: ``(H, W)`` to resize to (bilinear), or None to keep the input size.

    Returns:
        ``{"preprocessor": BrickNotTrainable(Preprocessor)}``.

    Raises:
        BrickDefinitionError: bad mean, std or size, or a ``backbone`` of an unknown kind.
        ZooError: an unknown backbone name.

    Example:
        >>> bricks = preprocessor_bricks("timm:resnet10t", size=(64, 64))
        >>> bricks["preprocessor"]({"images": torch.rand(2, 3, 80, 80)})["normalized"].shape
        torch.Size([2, 3, 64, 64])
    """
    config = _data_config_of(backbone)
    module = Preprocessor(
        mean=tuple(mean if mean is not None else config["mean"]),
        std=tuple(std if std is not None else config["std"]),
        size=size,
    )
    return {"preprocessor": BrickNotTrainable(module, input_names=[images], output_names=[normalized])}
