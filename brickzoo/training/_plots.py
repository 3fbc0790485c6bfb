"""Pictures of a run drawn with pillow only: loss/metric curves and a grid of visualizations."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from brickzoo._draw import get_font, palette

Series = dict[str, list[tuple[float, float]]]  # {label: [(x, y), ...]}

_BACKGROUND = (255, 255, 255)
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
_PANEL_SIZE = (560, 360)  # the plotting area plus its margins, per panel
_MARGIN = {"left": 70, "right": 20, "top": 40, "bottom": 48}


@dataclass
class Panel:
    """One chart: a title, axis labels and named series of (x, y) points."""

    title: str
    series: Series = field(default_factory=dict)
    x_label: str = "epoch"
    y_label: str = ""


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high].

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9)
    last = max(math.ceil(high / step - 1e-9), first + 1)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _tick_text(value: float, step: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.1e}"
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0))
    return f"{value:.{decimals}f}"


def _draw_panel(image: Image.Image, origin: tuple[int, int], panel: Panel) -> None:
    draw = ImageDraw.Draw(image)
    font, title_font = get_font(12), get_font(15)
    width, height = _PANEL_SIZE
    left, top = origin[0] + _MARGIN["left"], origin[1] + _MARGIN["top"]
    right, bottom = origin[0] + width - _MARGIN["right"], origin[1] + height - _MARGIN["bottom"]
    draw.text(((left + right) / 2, origin[1] + 12), panel.title, fill=_INK, font=title_font, anchor="mt")

    points = [(x, y) for pts in panel.series.values() for x, y in pts if math.isfinite(y)]
    if not points:
        draw.rectangle((left, top, right, bottom), outline=_INK)
        draw.text(((left + right) / 2, (top + bottom) / 2), "no data", fill=_INK, font=font, anchor="mm")
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if min(xs) == max(xs):  # a single epoch: centre it
        x_ticks = [min(xs) - 1, min(xs), min(xs) + 1]
    else:
        x_ticks = [t for t in nice_ticks(min(xs), max(xs), 6) if float(t).is_integer()]
    x_low, x_high = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y_low, y_high = min(ys), max(ys)
    if y_low >= 0 and y_high <= 1 and panel.y_label != "loss":
        y_ticks = nice_ticks(0.0, 1.0)  # rates and accuracies: the whole [0, 1] range
    else:
        pad = (y_high - y_low) * 0.05 or abs(y_high) * 0.1 or 1.0
        y_ticks = nice_ticks(max(y_low - pad, 0.0) if y_low >= 0 else y_low - pad, y_high + pad)
    y_low, y_high = y_ticks[0], y_ticks[-1]

    inner = 10  # pixels between the frame and the data range, so points on the range's edge stay visible

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (
            left + inner + (x - x_low) / (x_high - x_low) * (right - left - 2 * inner),
            bottom - inner - (y - y_low) / (y_high - y_low) * (bottom - top - 2 * inner),
        )

    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for tick in y_ticks:
        _, py = to_pixel(x_low, tick)
        draw.line((left, py, right, py), fill=_GRID)
        draw.line((left - 4, py, left, py), fill=_INK)
        draw.text((left - 7, py), _tick_text(tick, y_step), fill=_INK, font=font, anchor="rm")
    for tick in x_ticks:
        px, _ = to_pixel(tick, y_low)
        draw.line((px, top, px, bottom), fill=_GRID)
        draw.line((px, bottom, px, bottom + 4), fill=_INK)
        draw.text((px, bottom + 7), f"{tick:g}", fill=_INK, font=font, anchor="mt")
    draw.rectangle((left, top, right, bottom), outline=_INK)
    draw.text(((left + right) / 2, bottom + 26), panel.x_label, fill=_INK, font=font, anchor="mt")
    if panel.y_label:
        label = Image.new("RGBA", (int(font.getlength(panel.y_label)) + 4, 16), (0, 0, 0, 0))
        ImageDraw.Draw(label).text((2, 1), panel.y_label, fill=_INK, font=font)
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (origin[0] + 4, int((top + bottom) / 2 - rotated.height / 2)), rotated)

    colours = palette(max(len(panel.series), 1))
    drawn: list[tuple[float, float]] = []
    for colour, pts in zip(colours, panel.series.values(), strict=False):
        pixels = [to_pixel(x, y) for x, y in pts if math.isfinite(y)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=3, joint="curve")
        for px, py in pixels:
            draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=colour)
        drawn += _densify(pixels)
    _draw_legend(draw, panel, colours, (left, top, right, bottom), font, drawn)


def _densify(pixels: Sequence[tuple[float, float]], step: float = 6.0) -> list[tuple[float, float]]:
    """Points every ``step`` pixels along a polyline, to find where it runs."""
    points = list(pixels[:1])
    for (x0, y0), (x1, y1) in itertools.pairwise(pixels):
        count = max(1, int(math.hypot(x1 - x0, y1 - y0) / step))
        points += [(x0 + (x1 - x0) * i / count, y0 + (y1 - y0) * i / count) for i in range(1, count + 1)]
    return points


def _draw_legend(
    draw: ImageDraw.ImageDraw,
    panel: Panel,
    colours: Sequence[tuple[int, int, int]],
    box: tuple[float, float, float, float],
    font: Any,
    drawn: Sequence[tuple[float, float]],
) -> None:
    """A legend box in the corner of the plotting area that covers the fewest drawn points."""
    labels = list(panel.series)
    line_height = 16
    width = max(font.getlength(label) for label in labels) + 34
    height = line_height * len(labels) + 6
    left_x, right_x = box[0] + 6, box[2] - 6 - width
    top_y, bottom_y = box[1] + 6, box[3] - 6 - height
    corners = [(right_x, top_y), (right_x, bottom_y), (left_x, top_y), (left_x, bottom_y)]

    def covered(corner: tuple[float, float]) -> int:
        x, y = corner
        return sum(x - 4 <= px <= x + width + 4 and y - 4 <= py <= y + height + 4 for px, py in drawn)

    left, top = min(corners, key=covered)  # the first of the least covered corners
    draw.rectangle((left, top, left + width, top + height), fill=(255, 255, 255), outline=_GRID)
    for i, (label, colour) in enumerate(zip(labels, colours, strict=False)):
        y = top + 4 + i * line_height + line_height / 2
        draw.line((left + 6, y, left + 24, y), fill=colour, width=3)
        draw.text((left + 28, y), label, fill=_INK, font=font, anchor="lm")


def plot_panels(panels: Sequence[Panel]) -> Image.Image:
    """Draw panels side by side, each with axes, ticks, grid lines and a legend."""
    width, height = _PANEL_SIZE
    image = Image.new("RGB", (width * max(len(panels), 1), height), _BACKGROUND)
    for i, panel in enumerate(panels):
        _draw_panel(image, (i * width, 0), panel)
    return image


def plot_loss_curves(history: Sequence[Mapping[str, Any]], loss_names: Sequence[str] = ()) -> Image.Image:
    """The curves of a run's epoch records (as written to ``metrics.jsonl``).

    The left panel shows the total training and validation losses (``train/loss``, ``val/loss``)
    and, when there are several losses, each loss's training curve; the right panel shows every
    scalar validation metric (``val/...`` keys other than losses), or the training metrics when
    there is no validation.

    Args:
        history: one record per epoch with an ``epoch`` key and scalar values.
        loss_names: the loss names (``head0/loss``...), to tell losses from metrics.
    """
    losses = Panel("Loss", y_label="loss")
    metrics = Panel("Validation metrics", y_label="value")
    loss_keys = {"loss", *loss_names}

    def add(panel: Panel, label: str, key: str) -> None:
        points = [(float(r["epoch"]), float(r[key])) for r in history if isinstance(r.get(key), (int, float))]
        if points:
            panel.series[label] = points

    add(losses, "train loss", "train/loss")
    add(losses, "val loss", "val/loss")
    if len(loss_names) > 1:
        for name in loss_names:
            add(losses, f"train {name}", f"train/{name}")
    keys = [k for k in (history[-1] if history else {}) if isinstance(k, str)]
    prefix = "val/" if any(k.startswith("val/") for k in keys) else "train/"
    if prefix == "train/":
        metrics.title = "Training metrics"
    for key in keys:
        name = key.removeprefix(prefix)
        if key.startswith(prefix) and name not in loss_keys and name not in ("images_per_second", "boxes_dropped"):
            add(metrics, name, key)
    return plot_panels([losses, metrics] if metrics.series else [losses])


def predictions_grid(
    rows: Mapping[str, Sequence[Image.Image]], max_images: int = 8, min_side: int = 128, max_side: int = 256
) -> Image.Image:
    """A grid with one captioned row per visualization output and one column per image.

    Every image is scaled (nearest-neighbour up, smooth down) so its longer side is the same: the
    largest longer side among the images, kept between ``min_side`` and ``max_side`` pixels; at
    most ``max_images`` per row.

    Args:
        rows: ``{output name: [one pillow image per input image]}``.
        max_images: columns at most.
        min_side: the common longer side is at least this.
        max_side: the common longer side is at most this.
    """

    font = get_font(14)
    largest = max((max(im.size) for images in rows.values() for im in images[:max_images]), default=min_side)
    side = min(max(largest, min_side), max_side)  # one size for every cell, so rows line up
    cells = {name: [_fit(im.convert("RGB"), side) for im in images[:max_images]] for name, images in rows.items()}
    columns = max((len(c) for c in cells.values()), default=0)
    cell_w = max((im.width for c in cells.values() for im in c), default=min_side)
    cell_h = max((im.height for c in cells.values() for im in c), default=min_side)
    gap, caption_h, header_h = 8, 24, 22
    width = gap + columns * (cell_w + gap)
    height = header_h + sum(caption_h + cell_h + gap for _ in cells) + gap
    grid = Image.new("RGB", (max(width, 200), height), (245, 245, 245))
    draw = ImageDraw.Draw(grid)
    for column in range(columns):
        draw.text(
            (gap + column * (cell_w + gap) + cell_w / 2, header_h / 2 + 2),
            f"image {column}",
            fill=_INK,
            font=font,
            anchor="mm",
        )
    y = header_h
    for name, images in cells.items():
        draw.text((gap, y + caption_h / 2), name, fill=_INK, font=font, anchor="lm")
        y += caption_h
        for column, im in enumerate(images):
            x = gap + column * (cell_w + gap)
            grid.paste(im, (x + (cell_w - im.width) // 2, y + (cell_h - im.height) // 2))
        y += cell_h + gap
    return grid


def _fit(image: Image.Image, side: int) -> Image.Image:
    """Scale ``image`` so its longer side is ``side``: nearest-neighbour up (crisp pixels), smooth down."""
    longest = max(image.size)
    if longest == side:
        return image
    scale = side / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
