"""A synthetic dataset of coloured shapes on textured backgrounds, with targets for every task."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from brickzoo.data._common import NamedDataset, check_index
from brickzoo.errors import DataError

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star")
"""The shape kinds drawn by default; kind ``k`` has class index ``k`` (``k + 1`` in masks)."""

AVAILABLE_SHAPE_NAMES: tuple[str, ...] = (*SHAPE_NAMES, "hexagon", "cross")
"""Every kind :class:`ShapesDataset` can draw (choose with ``shape_names=``)."""

_STAR_INNER_RADIUS = 0.45  # of the outer radius
_CROSS_HALF_WIDTH = 0.35  # of the arm length


def _regular_polygon(corners: int) -> np.ndarray:
    angles = np.arange(corners) * (2 * math.pi / corners) - math.pi / 2
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [corners, 2]


def _star() -> np.ndarray:
    angles = np.arange(10) * (math.pi / 5) - math.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, 1.0, _STAR_INNER_RADIUS)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)  # [10, 2]


def _cross() -> np.ndarray:
    w = _CROSS_HALF_WIDTH
    quarter = [(w, -1.0), (w, -w), (1.0, -w)]  # one quarter turn of the outline
    points = []
    for turn in range(4):
        c, s = math.cos(turn * math.pi / 2), math.sin(turn * math.pi / 2)
        points += [(x * c - y * s, x * s + y * c) for x, y in quarter]
    return np.asarray(points)  # [12, 2]


# Outlines with circumradius 1, centred on the origin (the circle is drawn as an ellipse).
_OUTLINES: dict[str, np.ndarray] = {
    "square": _regular_polygon(4),
    "triangle": _regular_polygon(3),
    "star": _star(),
    "hexagon": _regular_polygon(6),
    "cross": _cross(),
}


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


# Layouts drawn per sample before giving up on the label margin (a layout costs one small polygon fill).
_LAYOUT_ATTEMPTS = 200

# Area of each kind at circumradius 1: shapes are sized by area, so no kind is systematically larger.
_UNIT_AREA: dict[str, float] = {"circle": math.pi, **{k: _polygon_area(v) for k, v in _OUTLINES.items()}}


class ShapesDataset(NamedDataset):
    """Coloured shapes over textured backgrounds, generated on the fly, with targets for every task.

    Sample ``index`` depends only on ``(seed, index)``: the same index gives the same tensors in
    any worker and in any order. Each image holds ``min_shapes`` to ``max_shapes`` shapes of
    random kind, colour, area, rotation and position; later shapes occlude earlier ones. The
    background mixes a colour gradient with stripes and blotches; a light ramp and pixel noise
    cover the whole image.

    A shape's box is the extent of its *visible* pixels, in pixel-edge coordinates: a shape
    whose visible pixels span columns ``x0..x1`` and rows ``y0..y1`` has the box
    ``[x0, y0, x1 + 1, y1 + 1]``. Shapes left with fewer than ``min_visible_pixels`` visible
    pixels (occluded or clipped by the border) get no box and their pixels are 255 (ignore) in
    the mask. At least one shape is always kept.

    Every sample is a dict:

    - ``images (Tensor[3, H, W])`` float32 in [0, 1].
    - ``labels (Tensor[])`` int64: the kind of the shape with the most visible pixels. With
      ``label_margin`` (default 0.25) that shape is clearly the largest: it has at least
      ``1 + label_margin`` times the visible pixels of every shape of another kind (a layout that
      misses the margin is drawn again from the same random stream), so the label is never a
      toss-up between two kinds of nearly equal area.
    - ``masks (Tensor[H, W])`` int64: 0 background, ``k + 1`` for kind ``k``, 255 ignore.
    - ``boxes (Tensor[M, 4])`` float32 xyxy in pixels, ``box_labels (Tensor[M])`` int64 kinds,
      in drawing order (back to front).
    - ``instances (Tensor[H, W])`` int64, only with ``return_instances=True``: 0 where no kept
      shape is visible, ``i + 1`` on the visible pixels of ``boxes[i]``.
    - ``num_shapes (Tensor[])`` int64, only with ``return_counts=True``: how many shapes the image
      holds, counting those with a box (``M``, from 1 to ``max_shapes``): a classification target
      with ``max_shapes + 1`` classes.

    Args:
        num_samples: length of the dataset.
        image_size: side of the square images in pixels.
        seed: seed of the whole dataset; sample ``i`` uses the random stream ``(seed, i)``.
        min_shapes: fewest shapes drawn per image (at least 1).
        max_shapes: most shapes drawn per image.
        shape_names: kinds to draw, from :data:`AVAILABLE_SHAPE_NAMES`; their order sets the
            class indices.
        size_range: range of ``sqrt(area)`` of a shape as a fraction of the image side.
        min_visible_pixels: fewest visible pixels for a shape to be kept; default
            ``max(4, 0.004 * image_size**2)`` (16 pixels at 64x64), at most a quarter of the
            smallest shape's area.
        noise_range: range of the standard deviation of the (uniform) pixel noise; each image
            draws its own from this range.
        return_instances: add the ``"instances"`` map to each sample.
        return_counts: add ``"num_shapes"``, the number of shapes with a box, to each sample.
        label_margin: how much larger (in visible pixels) the labelled shape is than any shape of
            another kind, as a fraction: 0.25 means at least 1.25 times. 0 labels the largest shape
            however close the runner-up (ties and near-ties of two kinds then make the label
            ambiguous). A dataset whose layouts cannot meet the margin (many shapes of similar
            size) raises a DataError naming the sample.

    Attributes:
        class_names: the shape kinds (the classes of classification and detection).
        tasks: class names per task; ``num_classes_for("classification")`` and
            ``num_classes_for("detection")`` are the number of kinds, ``num_classes_for("segmentation")``
            is one more (background).

    Example:
        >>> from brickzoo.data import ShapesDataset
        >>> dataset = ShapesDataset(100, image_size=64, seed=0)
        >>> sample = dataset[0]
        >>> sample["images"].shape, sample["masks"].shape, sample["boxes"].shape[1]
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), 4)
        >>> dataset.num_classes_for("segmentation")
        5
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int = 64,
        seed: int = 0,
        min_shapes: int = 1,
        max_shapes: int = 3,
        shape_names: Sequence[str] = SHAPE_NAMES,
        size_range: tuple[float, float] = (0.15, 0.4),
        min_visible_pixels: int | None = None,
        noise_range: tuple[float, float] = (0.01, 0.06),
        return_instances: bool = False,
        return_counts: bool = False,
        label_margin: float = 0.25,
    ) -> None:
        owner = "ShapesDataset"
        if seed < 0:
            raise DataError(f"{owner}: seed must be 0 or more, got {seed}")
        if num_samples < 0:
            raise DataError(f"{owner}: num_samples must be 0 or more, got {num_samples}")
        if image_size < 8:
            raise DataError(f"{owner}: image_size must be at least 8 pixels, got {image_size}")
        if not 1 <= min_shapes <= max_shapes <= 250:
            raise DataError(
                f"{owner}: expected 1 <= min_shapes <= max_shapes <= 250, got min_shapes={min_shapes}, "
                f"max_shapes={max_shapes}"
            )
        unknown = [name for name in shape_names if name not in AVAILABLE_SHAPE_NAMES]
        if unknown or len(set(shape_names)) != len(shape_names) or not shape_names:
            raise DataError(
                f"{owner}: shape_names must be distinct names from {AVAILABLE_SHAPE_NAMES}, got {list(shape_names)}"
            )
        if not 0 < size_range[0] <= size_range[1] <= 1:
            raise DataError(f"{owner}: expected 0 < size_range[0] <= size_range[1] <= 1, got {size_range}")
        if isinstance(label_margin, bool) or not isinstance(label_margin, (int, float)):
            raise DataError(f"{owner}: label_margin must be a number from 0 to 4, got {label_margin!r}")
        if not (math.isfinite(label_margin) and 0 <= label_margin <= 4):
            raise DataError(f"{owner}: expected 0 <= label_margin <= 4, got {label_margin}")
        if not 0 <= noise_range[0] <= noise_range[1]:
            raise DataError(f"{owner}: expected 0 <= noise_range[0] <= noise_range[1], got {noise_range}")
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.min_shapes = int(min_shapes)
        self.max_shapes = int(max_shapes)
        self.shape_names = tuple(shape_names)
        self.size_range = (float(size_range[0]), float(size_range[1]))
        smallest_area = (self.size_range[0] * image_size) ** 2
        default_min = max(1, min(max(4, round(0.004 * image_size**2)), int(smallest_area / 4)))
        self.min_visible_pixels = default_min if min_visible_pixels is None else int(min_visible_pixels)
        if not 1 <= self.min_visible_pixels <= smallest_area / 4:
            raise DataError(
                f"{owner}: expected 1 <= min_visible_pixels <= a quarter of the smallest shape area "
                f"({smallest_area:.0f} pixels from size_range={size_range}), got {self.min_visible_pixels}; "
                "lower it or raise size_range"
            )
        self.noise_range = (float(noise_range[0]), float(noise_range[1]))
        self.return_instances = bool(return_instances)
        self.return_counts = bool(return_counts)
        self.label_margin = float(label_margin)
        self.class_names = list(self.shape_names)
        self.tasks = {
            "classification": list(self.class_names),
            "segmentation": ["background", *self.class_names],
            "detection": list(self.class_names),
        }
        size = self.image_size
        coords = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
        self._xx = np.broadcast_to(coords[None, :], (size, size))  # [H, W]
        self._yy = np.broadcast_to(coords[:, None], (size, size))  # [H, W]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size
        background = self._background(rng)  # [3, H, W]
        for _ in range(_LAYOUT_ATTEMPTS):
            kinds, instances, counts, centres = self._layout(rng)
            kept = counts >= self.min_visible_pixels  # [n]
            if kept.any() and self._label_is_clear(kinds, counts * kept):
                break
        else:
            raise DataError(
                f"ShapesDataset: sample {index} (seed {self.seed}): no layout of {_LAYOUT_ATTEMPTS} drawn has a "
                f"labelled shape with {1 + self.label_margin:.2f}x the visible pixels of every shape of another "
                f"kind (label_margin={self.label_margin}, max_shapes={self.max_shapes}, size_range={self.size_range}); "
                "lower label_margin or max_shapes, or widen size_range"
            )
        n = len(kinds)

        # Colour: a flat colour per shape, a light ramp over the whole image, then noise.
        colours = np.zeros((3, n + 1), dtype=np.float32)
        colours[:, 1:] = self._shape_colours(rng, background, centres).T
        image = np.where(instances[None] > 0, np.take(colours, instances, axis=1), background)  # [3, H, W]
        angle = rng.uniform(0, 2 * np.pi)
        slope = rng.uniform(0.0, 0.3) / size
        light = 1.0 + slope * (math.cos(angle) * self._xx + math.sin(angle) * self._yy - 0.5 * size)  # [H, W]
        image *= light[None]
        noise = rng.integers(-128, 128, (3, size, size), dtype=np.int8)  # uniform, std 128 / sqrt(3)
        image += noise * np.float32(rng.uniform(*self.noise_range) * math.sqrt(3) / 128)
        np.clip(image, 0.0, 1.0, out=image)

        # Targets: kept shapes renumbered 1..M in drawing order; dropped shapes are ignored in the mask.
        kept_ids = np.flatnonzero(kept)  # [M] into 0..n-1
        renumber = np.zeros(n + 1, dtype=np.int64)
        renumber[kept_ids + 1] = np.arange(1, len(kept_ids) + 1)
        visible = renumber[instances]  # [H, W] 0 or 1..M
        mask_of = np.full(n + 1, 255, dtype=np.int64)
        mask_of[0] = 0
        mask_of[kept_ids + 1] = kinds[kept_ids] + 1
        masks = mask_of[instances]  # [H, W]
        boxes = np.zeros((len(kept_ids), 4), dtype=np.float32)
        counts = np.zeros(len(kept_ids), dtype=np.int64)
        for j, shape in enumerate(kept_ids):
            ys, xs = np.nonzero(instances == shape + 1)
            boxes[j] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            counts[j] = len(xs)
        sample: dict[str, Any] = {
            "images": torch.from_numpy(image),
            "labels": torch.tensor(int(kinds[kept_ids[int(np.argmax(counts))]]), dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "boxes": torch.from_numpy(boxes),
            "box_labels": torch.from_numpy(kinds[kept_ids].astype(np.int64)),
        }
        if self.return_instances:
            sample["instances"] = torch.from_numpy(visible)
        if self.return_counts:
            sample["num_shapes"] = torch.tensor(len(kept_ids), dtype=torch.int64)
        return sample

    def _label_is_clear(self, kinds: np.ndarray, counts: np.ndarray) -> bool:
        """Whether the shape with the most visible pixels (``counts [n]``, 0 for dropped shapes) beats every kept
        shape of another kind by the margin."""
        if self.label_margin == 0:
            return True
        largest = int(np.argmax(counts))
        others = counts[kinds != kinds[largest]]
        return others.size == 0 or bool(counts[largest] >= (1 + self.label_margin) * others.max())

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A textured background ``[3, H, W]``: gradient + stripes + blotches."""
        size = self.image_size
        angle = rng.uniform(0, 2 * np.pi)
        t = math.cos(angle) * self._xx + math.sin(angle) * self._yy  # [H, W]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # [H, W] in [0, 1]
        start, end = rng.uniform(0.0, 1.0, (2, 3, 1, 1)).astype(np.float32)
        background = start + (end - start) * t[None]  # [3, H, W]
        if rng.random() < 0.7:  # stripes of a random colour, period and direction
            angle = rng.uniform(0, np.pi)
            periods = rng.uniform(1.5, 8.0)
            phase = (math.cos(angle) * self._xx + math.sin(angle) * self._yy) * (2 * math.pi * periods / size)
            wave = np.sin(phase + rng.uniform(0, 2 * math.pi))  # [H, W]
            if rng.random() < 0.5:
                wave = np.sign(wave)  # hard-edged stripes
            tint = rng.uniform(-1.0, 1.0, (3, 1, 1)).astype(np.float32)
            background += rng.uniform(0.05, 0.2) * tint * wave[None]
        if rng.random() < 0.7:  # blotches: coarse colour noise, upsampled
            cells = int(rng.integers(3, 9))
            coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
            smooth = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
            blotch = np.asarray(smooth, dtype=np.float32).transpose(2, 0, 1) / 255.0 - 0.5  # [3, H, W]
            background += rng.uniform(0.1, 0.4) * blotch
        return np.clip(background, 0.0, 1.0, out=background)

    def _layout(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw the shapes into an instance map.

        Returns:
            ``kinds (Tensor[n])`` kind indices, ``instances (Tensor[H, W])`` 0 or ``i + 1`` where shape ``i`` is
            visible, ``counts (Tensor[n])`` visible pixels per shape, ``centres (Tensor[n, 2])`` xy.
        """
        size = self.image_size
        n = int(rng.integers(self.min_shapes, self.max_shapes + 1))
        kinds = rng.integers(0, len(self.shape_names), n)  # [n]
        sides = rng.uniform(*self.size_range, n) * size  # sqrt(area) in pixels
        radii = np.array(
            [math.sqrt(side**2 / _UNIT_AREA[self.shape_names[k]]) for side, k in zip(sides, kinds, strict=True)]
        )
        margin = 0.6 * radii  # at least part of every shape inside the image
        centres = rng.uniform(margin[:, None], size - margin[:, None], (n, 2))  # [n, 2] xy
        rotations = rng.uniform(0, 2 * np.pi, n)
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for i in range(n):
            name = self.shape_names[kinds[i]]
            (x, y), r = centres[i], radii[i]
            if name == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=i + 1)
            else:
                c, s = math.cos(rotations[i]), math.sin(rotations[i])
                outline = _OUTLINES[name] @ np.array([[c, s], [-s, c]]) * r + (x, y)  # [corners, 2]
                draw.polygon([tuple(p) for p in outline.tolist()], fill=i + 1)
        instances = np.asarray(canvas, dtype=np.int64)  # [H, W] 0 or 1..n
        counts = np.bincount(instances.ravel(), minlength=n + 1)[1:]  # [n] visible pixels per shape
        return kinds, instances, counts, centres

    def _shape_colours(self, rng: np.random.Generator, background: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """One colour per shape ``[n, 3]``, redrawn a few times until it stands out from the background under it."""
        colours = rng.uniform(0.0, 1.0, (len(centres), 3)).astype(np.float32)
        last = self.image_size - 1
        for i, (x, y) in enumerate(centres):
            under = background[:, min(int(y), last), min(int(x), last)]  # [3]
            for _ in range(8):
                if np.abs(colours[i] - under).sum() > 0.6:
                    break
                colours[i] = rng.uniform(0.0, 1.0, 3)
        return colours
