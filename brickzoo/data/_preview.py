"""Pictures of dataset samples, to look at the data before training on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from brickzoo._draw import draw_label, get_font, image_to_pil, palette
from brickzoo.errors import DataError

_IGNORE_COLOUR = (255, 255, 255)


def draw_sample(
    sample: Mapping[str, Any], class_names: Sequence[str] | None = None, scale: int = 1, ignore_index: int = 255
) -> Image.Image:
    """Draw one sample: the image, and beside it the mask overlay, boxes and label (those present).

    Args:
        sample: a per-sample dict with ``images (Tensor[3, H, W])`` and optionally ``labels (Tensor[])``,
            ``masks (Tensor[H, W])`` (class ``k`` drawn in the colour of ``class_names[k - 1]``),
            ``boxes (Tensor[M, 4])`` and ``box_labels (Tensor[M])`` (entries with label < 0 are padding).
        class_names: names of the classification/detection classes, for the text.
        scale: integer upscaling (nearest) so that small images stay readable.
        ignore_index: mask value drawn in white.

    Returns:
        One RGB image, ``H * scale`` high and ``W * scale`` (image only) or ``2 * W * scale`` wide.

    Example:
        >>> from brickzoo.data import ShapesDataset, draw_sample
        >>> dataset = ShapesDataset(4, image_size=32)
        >>> draw_sample(dataset[0], dataset.class_names, scale=2).size
        (128, 64)
    """
    if "images" not in sample:
        raise DataError(f"draw_sample: expected a sample with 'images', got keys {sorted(sample)}")
    image = image_to_pil(sample["images"])
    width, height = image.size
    names = list(class_names) if class_names is not None else None
    has_mask = "masks" in sample
    mask = (
        np.asarray(sample["masks"].cpu() if isinstance(sample["masks"], torch.Tensor) else sample["masks"])
        if has_mask
        else None
    )
    has_boxes = "boxes" in sample and "box_labels" in sample
    num_colours = len(names) if names else 1
    if mask is not None:
        num_colours = max(num_colours, int(mask[mask != ignore_index].max(initial=0)))
    if has_boxes and len(sample["box_labels"]):
        num_colours = max(num_colours, int(sample["box_labels"].max()) + 1)
    colours = palette(max(num_colours, 1))
    right = image.copy()
    if mask is not None:
        overlay = np.asarray(right, dtype=np.float32).copy()  # [H, W, 3]
        for value in np.unique(mask):
            if value == 0:
                continue
            colour = _IGNORE_COLOUR if value == ignore_index else colours[(int(value) - 1) % len(colours)]
            overlay[mask == value] = 0.35 * overlay[mask == value] + 0.65 * np.asarray(colour, dtype=np.float32)
        right = Image.fromarray(overlay.round().astype(np.uint8))
    canvas = Image.new("RGB", ((2 if has_mask or has_boxes else 1) * width * scale, height * scale))
    canvas.paste(image.resize((width * scale, height * scale), Image.Resampling.NEAREST), (0, 0))
    font = get_font(max(10, 4 * scale))
    draw = ImageDraw.Draw(canvas)
    if has_mask or has_boxes:
        canvas.paste(right.resize((width * scale, height * scale), Image.Resampling.NEAREST), (width * scale, 0))
    if has_boxes:
        for box, label in zip(sample["boxes"].tolist(), sample["box_labels"].tolist(), strict=True):
            if label < 0:
                continue
            x0, y0, x1, y1 = (v * scale for v in box)
            colour = colours[label % len(colours)]
            draw.rectangle((x0 + width * scale, y0, x1 + width * scale - 1, y1 - 1), outline=colour, width=2)
    if "labels" in sample and isinstance(sample["labels"], torch.Tensor) and sample["labels"].ndim == 0:
        label = int(sample["labels"])
        text = names[label] if names and 0 <= label < len(names) else str(label)
        draw_label(draw, (2, 2), text, colours[label % len(colours)], font)
    return canvas


def preview_grid(
    dataset: Any,
    indices: Iterable[int] = range(16),
    columns: int = 4,
    class_names: Sequence[str] | None = None,
    scale: int = 2,
    gap: int = 4,
) -> Image.Image:
    """Draw several samples of ``dataset`` with :func:`draw_sample` on one image, ``columns`` per row.

    Args:
        dataset: a dataset of per-sample dicts (its ``class_names`` attribute is used if present).
        indices: which samples to draw.
        columns: samples per row.
        class_names: overrides the dataset's class names.
        scale: integer upscaling of each sample.
        gap: pixels between the drawings.

    Example:
        >>> from brickzoo.data import ShapesDataset, preview_grid
        >>> preview_grid(ShapesDataset(4, image_size=32), range(4), columns=2, scale=1, gap=0).size
        (128, 64)
    """
    names = class_names if class_names is not None else getattr(dataset, "class_names", None)
    cells = [draw_sample(dataset[i], names, scale=scale) for i in indices]
    if not cells:
        raise DataError("preview_grid: expected at least one index, got none")
    cell_w = max(c.width for c in cells)
    cell_h = max(c.height for c in cells)
    rows = (len(cells) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell_w + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), (40, 40, 40))
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % columns) * (cell_w + gap), (i // columns) * (cell_h + gap)))
    return grid
