"""Pictures of samples, and the runnable examples in the docstrings of brickzoo.data."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

from brickzoo._draw import palette
from brickzoo.data import ShapesDataset, draw_sample, preview_grid


def test_draw_sample_shows_mask_and_boxes() -> None:
    sample = {
        "images": torch.zeros(3, 10, 10),
        "labels": torch.tensor(1),
        "masks": torch.zeros(10, 10, dtype=torch.int64),
        "boxes": torch.tensor([[2.0, 2.0, 6.0, 8.0], [0.0, 0.0, 0.0, 0.0]]),
        "box_labels": torch.tensor([1, -1]),
    }
    sample["masks"][2:8, 2:6] = 2
    sample["masks"][0, 0] = 255
    picture = np.asarray(draw_sample(sample, ["a", "b"], scale=3))
    assert picture.shape == (30, 60, 3)
    colour = palette(2)[1]
    right = picture[:, 30:]
    assert tuple(right[6, 6 + 5]) == colour  # top edge of the box at y = 2 * 3
    assert tuple(right[15, 15]) == tuple(round(0.65 * c) for c in colour)  # inside the mask: blended
    assert tuple(right[1, 1]) == (166, 166, 166)  # ignore pixel: blended with white
    assert tuple(right[29, 29]) == (0, 0, 0)  # background untouched
    assert (picture[20:, :30] == 0).all()  # the image itself, below the label text


def test_preview_grid_size() -> None:
    grid = preview_grid(ShapesDataset(6, image_size=16), range(6), columns=4, scale=2, gap=3)
    assert grid.size == (4 * 64 + 3 * 3, 2 * 32 + 3)


@pytest.mark.parametrize("module", ["_collate", "_shapes", "_digits", "_preview"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(
        importlib.import_module(f"brickzoo.data.{module}"), globs={}
    )  # examples import what they use
    assert result.attempted > 0 and result.failed == 0
