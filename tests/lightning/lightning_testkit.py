"""Small collections and synthetic named-dict data shared by the Lightning tests and the DDP example.

The model is a tiny conv net (``images`` [B, 3, 16, 16] -> ``head/logits`` [B, C]); the reference
helpers below call its ``nn.Module`` parts directly, without the brick runtime or Lightning, so the
tests compare the code under test with an independent computation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import MetricCollection
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

from brickzoo import (
    METRIC,
    BrickCollection,
    BrickLoss,
    BrickMetrics,
    BrickMetricSingle,
    BrickNotTrainable,
    BrickTrainable,
)

NUM_CLASSES = 3
IMAGE_SIZE = 16


class NamedTensorDataset(Dataset[dict[str, torch.Tensor]]):
    """Item ``i`` is ``{name: tensor[i]}``; the default collate stacks items into a named batch."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: tensor[index] for name, tensor in self.tensors.items()}


def make_tensors(num_samples: int, seed: int, with_labels: bool = True) -> dict[str, torch.Tensor]:
    """``images`` [N, 3, 16, 16] in [0, 1], ``labels`` [N] (the brightest channel) and ``index`` [N]."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(num_samples, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.arange(num_samples) % NUM_CLASSES  # balanced classes
    images[torch.arange(num_samples), labels] += 0.1  # the label's channel is brighter
    images = images.clamp(0, 1)
    tensors = {"images": images, "index": torch.arange(num_samples)}
    if with_labels:
        tensors["labels"] = labels
    return tensors


def make_dataset(num_samples: int, seed: int, with_labels: bool = True) -> NamedTensorDataset:
    return NamedTensorDataset(make_tensors(num_samples, seed, with_labels))


class Normalize(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - 0.5) / 0.25


class TinyConvNet(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, channels]``."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(2, channels)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x)))).flatten(1)  # [B, C]


class MeanSquare(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.pow(2).mean()


class Softmax(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=1)


class Ones(nn.Module):
    """One per sample, so a SumMetric over it counts the samples a metric copy saw."""

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.ones(labels.shape[0], dtype=torch.float32, device=labels.device)


def build_collection(
    num_classes: int = NUM_CLASSES, seed: int = 0, with_loss: bool = True, with_l2_loss: bool = False
) -> BrickCollection:
    """Preprocess, backbone and a head with a loss, metrics (accuracy, macro F1, AUROC, sample count)."""
    torch.manual_seed(seed)
    head: dict[str, Any] = {
        "classify": BrickTrainable(nn.Linear(8, num_classes), input_names=["features"], output_names=["./logits"]),
        "probabilities": BrickNotTrainable(Softmax(), input_names=["./logits"], output_names=["./probabilities"]),
        "ones": BrickNotTrainable(Ones(), input_names=["labels"], output_names=["./ones"], group=METRIC),
        "metrics": BrickMetrics(
            MetricCollection(
                {
                    "accuracy": MulticlassAccuracy(num_classes, average="micro"),
                    "f1_macro": MulticlassF1Score(num_classes, average="macro"),
                    "auroc": MulticlassAUROC(num_classes, average="macro", thresholds=None),
                },
                compute_groups=False,
            ),
            input_names=["./logits", "labels"],
        ),
        "count": BrickMetricSingle(SumMetric(), input_names=["./ones"], metric_name="count"),
    }
    if with_loss:
        head["loss"] = BrickLoss(nn.CrossEntropyLoss(), input_names=["./logits", "labels"], output_names=["./loss_ce"])
    if with_l2_loss:
        head["loss_l2"] = BrickLoss(MeanSquare(), input_names=["./logits"], output_names=["./loss_l2"])
    return BrickCollection(
        {
            "preprocess": BrickNotTrainable(Normalize(), input_names=["images"], output_names=["normalized"]),
            "backbone": BrickTrainable(TinyConvNet(), input_names=["normalized"], output_names=["features"]),
            "head": head,
        }
    )


def reference_logits(collection: BrickCollection, images: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` logits computed by calling the wrapped modules directly (eval mode, no bricks)."""
    backbone = collection["backbone"].model
    classify = collection["head"]["classify"].model
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        logits = classify(backbone((images - 0.5) / 0.25))
    backbone.train(was_training)
    return logits
