"""The torchbricks-compatible API: the names the seed README imports, in one place.

torchbricks users can keep their code with the import mapping ``torchbricks.bag_of_bricks.*`` ->
``brickzoo.bag_of_bricks`` and ``torchbricks.tensor_conversions`` -> ``brickzoo.tensor_conversions``;
those modules re-export what is defined here. New code should prefer the zoo's factories
(:func:`~brickzoo.bag_of_bricks.backbone_bricks`, :func:`~brickzoo.bag_of_bricks.image_classification_bricks`).

- :class:`ImageClassifier`: average pooling and a linear layer returning logits, probabilities and
  the predicted class.
- :class:`BackboneResnet` and :func:`resnet_to_brick`: a torchvision ResNet without its classifier.
- :func:`function_composer`: left-to-right function composition, for unpack functions.
- :class:`~brickzoo.BrickPerImageVisualization`: the per-image visualization brick (the seed's
  ``torchbricks.bag_of_bricks.brick_visualizer``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from brickzoo._bricks import BrickPerImageVisualization, BrickTrainable
from brickzoo.errors import BrickDefinitionError

__all__ = ["BackboneResnet", "BrickPerImageVisualization", "ImageClassifier", "function_composer", "resnet_to_brick"]


class ImageClassifier(nn.Module):
    """Global average pooling and a linear layer (the seed's classifier).

    Args:
        num_classes: number of classes.
        n_features: channels of the incoming feature map.
        use_average_pooling: pool ``[B, C, H, W]`` features to ``[B, C]`` first; set False for
            features that are already ``[B, C]``.

    Returns:
        ``(logits [B, num_classes], probabilities [B, num_classes], class_prediction [B])``.

    Example:
        >>> logits, probabilities, prediction = ImageClassifier(num_classes=3, n_features=8)(torch.zeros(2, 8, 4, 4))
        >>> logits.shape, prediction.shape
        (torch.Size([2, 3]), torch.Size([2]))
    """

    def __init__(self, num_classes: int, n_features: int, use_average_pooling: bool = True) -> None:
        super().__init__()
        self.use_average_pooling = use_average_pooling
        self.fc = nn.Linear(n_features, num_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.use_average_pooling:
            features = features.mean(dim=(2, 3))  # [B, C]
        logits = self.fc(features)  # [B, num_classes]
        probabilities = logits.softmax(dim=1)
        return logits, probabilities, probabilities.argmax(dim=1)


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


def function_composer(*functions: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Compose functions left to right: ``function_composer(f, g)(x) == g(f(x))``.

    Example:
        >>> function_composer(lambda x: x + 1, lambda x: x * 10)(1)
        20
    """

    def composed(value: Any) -> Any:
        for fn in functions:
            value = fn(value)
        return value

    return composed
