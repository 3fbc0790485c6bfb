"""Image classification: the classifier module."""

from __future__ import annotations

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """Global average pooling and a linear layer.

    Args:
        num_classes: number of classes.
        n_features: channels of the incoming feature map.
        use_average_pooling: pool ``[B, C, H, W]`` features to ``[B, C]`` first; set False for
            features that are already ``[B, C]``.

    Returns:
        ``(logits [B, num_classes], probabilities [B, num_classes], class_prediction [B])``.
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
