"""Backbones: feature extractors wrapped as bricks."""

from __future__ import annotations

import torch
from torch import nn

from brickzoo._bricks import BrickTrainable
from brickzoo.errors import BrickDefinitionError


class BackboneResnet(nn.Module):
    """A torchvision ResNet without its pooling and classification layers.

    Attributes:
        n_backbone_features: channels of the output feature map (512 for resnet18/34, 2048 for resnet50+).

    Shape:
        images ``[B, 3, H, W]`` in, features ``[B, n_backbone_features, H/32, W/32]`` out.
    """

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        needed = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc"]
        missing = [name for name in needed if not hasattr(resnet, name)]
        if missing:
            raise BrickDefinitionError(
                f"BackboneResnet: expected a torchvision ResNet, got {type(resnet).__name__} without {missing}"
            )
        self.n_backbone_features = int(resnet.fc.in_features)  # type: ignore[union-attr,arg-type]
        self.conv1: nn.Module = resnet.conv1  # type: ignore[assignment]
        self.bn1: nn.Module = resnet.bn1  # type: ignore[assignment]
        self.relu: nn.Module = resnet.relu  # type: ignore[assignment]
        self.maxpool: nn.Module = resnet.maxpool  # type: ignore[assignment]
        self.layer1: nn.Module = resnet.layer1  # type: ignore[assignment]
        self.layer2: nn.Module = resnet.layer2  # type: ignore[assignment]
        self.layer3: nn.Module = resnet.layer3  # type: ignore[assignment]
        self.layer4: nn.Module = resnet.layer4  # type: ignore[assignment]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # [B, 64, H/4, W/4]
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, C, H/32, W/32]


def resnet_to_brick(resnet: nn.Module, input_name: str, output_name: str) -> BrickTrainable:
    """Wrap a torchvision ResNet, minus pooling and classifier, as a trainable backbone brick.

    Example:
        >>> import torchvision
        >>> brick = resnet_to_brick(torchvision.models.resnet18(), "images", "features")
        >>> brick.model.n_backbone_features
        512
    """
    return BrickTrainable(BackboneResnet(resnet), input_names=[input_name], output_names=[output_name])
