"""Drawing helpers shared by the zoo's pillow visualizers."""

from __future__ import annotations

import colorsys
import functools

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from brickzoo.tensor_conversions import float2uint8


@functools.lru_cache(maxsize=16)
def get_font(size: int = 12) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font at ``size`` pixels; available on every machine."""
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=64)
def palette(num_colours: int) -> list[tuple[int, int, int]]:
    """``num_colours`` well separated RGB colours (golden-ratio hues), stable for a given count."""
    colours = []
    for i in range(num_colours):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def image_to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    """One image ``[3, H, W]`` / ``[H, W, 3]`` (uint8, or float in [0, 1]) to an RGB pillow image."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = float2uint8(array)
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def draw_label(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """Text on a filled box of ``colour`` with its top-left corner at ``xy``, readable on any image."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=colour)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text(xy, text, fill=(0, 0, 0) if luminance > 150 else (255, 255, 255), font=font)
