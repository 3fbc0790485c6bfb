"""End to end: a tiny detector trained here finds a circle drawn at known pixels of photo-sized images.

The detector is trained for a few seconds on 64-px synthetic circles (square images, no
padding); the photos are 300x170 and 170x300, so the prediction goes through a letterbox with 14
rows (or columns) of padding and a scale of 64/300. The box must come back in the photo's own
pixels within a few pixels: forgetting the padding would move it by 66 pixels, a stretch by 30.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from brickzoo import BrickCollection, BrickTrainable, Stage
from brickzoo.bag_of_bricks import object_detection_bricks, preprocessor_bricks
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.data import ShapesDataset, collate_named
from brickzoo.predict import predict

STEPS = 200
TOLERANCE = 8.0  # pixels of the photo; one pixel of the 64-px model input spans 4.7 of them (errors seen: up to 5)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 2, 1), nn.BatchNorm2d(out_channels), nn.ReLU())


@pytest.fixture(scope="module")
def detector() -> BrickCollection:
    """A stride-8 conv stack and the zoo's FCOS head, trained on 64-px images of one circle each."""
    torch.manual_seed(0)
    trunk = nn.Sequential(_block(3, 16), _block(16, 32), _block(32, 32), nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU())
    model = BrickCollection(
        {
            **preprocessor_bricks(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
            "trunk": BrickTrainable(trunk, ["normalized"], ["features/stride8"]),
            "detect": object_detection_bricks(
                1,
                [FeatureLevel("features/stride8", 32, 8)],
                class_names=["circle"],
                head_channels=32,
                num_convs=1,
                max_detections=5,
            ),
        }
    )
    circles = ShapesDataset(512, image_size=64, seed=0, min_shapes=1, max_shapes=1, shape_names=["circle"])
    samples = [circles[i] for i in range(len(circles))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(STEPS):
        batch = collate_named([samples[i] for i in torch.randint(0, len(samples), (16,), generator=order).tolist()])
        losses = model.extract_losses(model(batch, groups={"MODEL", "LOSS"}, stage=Stage.TRAIN))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return model.eval()


def _photo(path: Path, size: tuple[int, int], circle: tuple[int, int, int, int]) -> list[float]:
    """Save a photo with a yellow circle on blue; return the circle's box in pixel edges."""
    image = Image.new("RGB", size, (60, 90, 140))
    ImageDraw.Draw(image).ellipse(circle, fill=(230, 200, 40))  # covers pixels x0..x1 and y0..y1 inclusive
    image.save(path)
    x0, y0, x1, y1 = circle
    return [x0, y0, x1 + 1, y1 + 1]


@pytest.mark.parametrize(
    ("size", "circle"),
    [((300, 170), (150, 40, 230, 120)), ((170, 300), (20, 180, 100, 260))],
    ids=["landscape", "portrait"],
)
def test_the_circle_is_found_at_its_pixels_in_the_photo(
    detector: BrickCollection, tmp_path: Path, size: tuple[int, int], circle: tuple[int, int, int, int]
) -> None:
    truth = _photo(tmp_path / "photo.png", size, circle)
    result = predict(detector, tmp_path / "photo.png", input_size=64, resize="letterbox")[0]
    assert (result.width, result.height) == size
    detect = result.heads["detect"]
    assert detect.names[0] == "circle" and float(detect.scores[0]) > 0.4
    found = detect.boxes[0].tolist()
    assert np.all(np.abs(np.array(found) - np.array(truth)) <= TOLERANCE), (found, truth)
