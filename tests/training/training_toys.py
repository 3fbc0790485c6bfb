"""Small hand-made collections and synthetic named-dict data for the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from brickzoo import (
    BrickCollection,
    BrickLoss,
    BrickMetrics,
    BrickNotTrainable,
    BrickPerImageVisualization,
    BrickTrainable,
)
from brickzoo._draw import draw_label, get_font, image_to_pil, palette

CHANNELS = 8


class ColourDataset(Dataset):
    """Images ``[3, size, size]`` in [0, 1] whose class is the colour channel that is brightest."""

    def __init__(self, n: int, seed: int, num_classes: int = 3, size: int = 32, shift: float = 0.4) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (n,), generator=generator)  # [N]
        images = torch.rand(n, 3, size, size, generator=generator) * (1 - shift)  # [N, 3, H, W]
        images[torch.arange(n), self.labels % 3] += shift  # the class's channel is brighter by `shift`
        self.images = images

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index], "labels": self.labels[index]}


def loader(n: int = 64, seed: int = 0, batch_size: int = 16, shuffle: bool = True, **kwargs: Any) -> DataLoader:
    return DataLoader(ColourDataset(n, seed, **kwargs), batch_size=batch_size, shuffle=shuffle)


class RenamingLoader:
    """A loader whose batches carry other names (to provoke missing-input errors)."""

    def __init__(self, inner: DataLoader, renames: dict[str, str]) -> None:
        self.inner, self.renames = inner, renames
        self.batches_read = 0

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.inner:
            self.batches_read += 1
            yield {self.renames.get(k, k): v for k, v in batch.items()}


class InterruptingLoader:
    """Wraps a DataLoader and raises KeyboardInterrupt when its ``at``-th batch (counted over epochs) is asked."""

    def __init__(self, inner: DataLoader, at: int) -> None:
        self.inner, self.at, self.count = inner, at, 0
        self.sampler = inner.sampler  # so that fit seeds the data order as for the plain loader

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.inner:
            if self.count == self.at:
                raise KeyboardInterrupt
            self.count += 1
            yield batch


def draw_prediction(image: np.ndarray, prediction: np.ndarray) -> Image.Image:
    """The image with its predicted class written on it."""
    picture = image_to_pil(image)
    label = int(prediction[0])
    draw_label(ImageDraw.Draw(picture), (2, 2), f"class {label}", palette(3)[label % 3], get_font(9))
    return picture


def backbone() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, CHANNELS, 3, stride=2, padding=1),  # [B, 8, H/2, W/2]
        nn.BatchNorm2d(CHANNELS),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),  # [B, 8, 1, 1]
        nn.Flatten(),  # [B, 8]
        nn.Dropout(0.1),  # makes the global RNG state matter for exact resumption
    )


def head_bricks(num_classes: int = 3, visualize: bool = True) -> dict[str, Any]:
    bricks: dict[str, Any] = {
        "classify": BrickTrainable(nn.Linear(CHANNELS, num_classes), ["features"], ["./logits"]),
        "predict": BrickNotTrainable(lambda logits: logits.argmax(dim=1), ["./logits"], ["./predictions"]),
        "loss": BrickLoss(nn.CrossEntropyLoss(), ["./logits", "labels"], ["./loss"]),
        "metrics": BrickMetrics(
            MetricCollection(
                {
                    "accuracy": MulticlassAccuracy(num_classes, average="micro"),
                    "confusion": MulticlassConfusionMatrix(num_classes),
                }
            ),
            ["./predictions", "labels"],
        ),
    }
    if visualize:
        bricks["visualize"] = BrickPerImageVisualization(
            draw_prediction, ["images", "./predictions"], ["./visualization"]
        )
    return bricks


def toy_collection(seed: int = 0, num_classes: int = 3, visualize: bool = True) -> BrickCollection:
    """backbone (conv + BN + pooling) writing ``features`` [B, 8], and ``head0`` classifying them."""
    torch.manual_seed(seed)
    return BrickCollection(
        {
            "backbone": BrickTrainable(backbone(), ["images"], ["features"]),
            "head0": head_bricks(num_classes, visualize),
        }
    )


def weights(collection: BrickCollection) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in collection.state_dict().items()}
