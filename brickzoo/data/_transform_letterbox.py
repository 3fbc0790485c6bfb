"""Letterbox resizing (long side to the model size, aspect ratio kept, padded) and its inverse for predictions."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from brickzoo.errors import DataError

PAD_FILL: float = 114 / 255
"""Neutral grey that pads images (the value Ultralytics pads with, 114 of 255)."""

MASK_FILL: int = 255
"""Mask value of padded pixels: the ignore index, so padding is never learnt as background."""

SizeArgument = int | Sequence[int]
"""A target size: one int for a square, or ``(height, width)``."""


def as_size(size: Any, owner: str) -> tuple[int, int]:
    """``size`` (an int or ``(height, width)``) as a ``(height, width)`` tuple of positive ints."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif (
        isinstance(size, Sequence | torch.Size)
        and len(size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size)
    ):
        pair = (int(size[0]), int(size[1]))
    else:
        raise DataError(f"{owner}: size must be an int or (height, width), got {size!r}")
    if min(pair) < 1:
        raise DataError(f"{owner}: size must be positive, got {size!r}")
    return pair


class LetterboxParams(NamedTuple):
    """Where an image of ``original_size`` lands in a letterboxed (or stretched) image of ``output_size``.

    The whole original image is resized to ``resized_size`` and placed with its top-left corner at
    ``(pad_left, pad_top)``; the rest of ``output_size`` is padding. A point ``x`` of the original
    (pixel-edge coordinates) lands at ``x * scale_x + pad_left``. A plain resize (stretch) is the
    case ``resized_size == output_size`` with no padding. All sizes are ``(height, width)``.

    Attributes:
        original_size: size of the original image.
        resized_size: size the original image is resized to.
        output_size: size of the output (resized image plus padding).
        pad_left: padding columns on the left.
        pad_top: padding rows on the top.

    Example:
        >>> from brickzoo.data.transforms import letterbox_params
        >>> params = letterbox_params((100, 200), 400)
        >>> params.scale_x, params.scale_y, params.padding
        (2.0, 2.0, (0, 100, 0, 100))
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    output_size: tuple[int, int]
    pad_left: int
    pad_top: int

    @property
    def scale_x(self) -> float:
        """Horizontal scale from original to output pixels."""
        return self.resized_size[1] / self.original_size[1]

    @property
    def scale_y(self) -> float:
        """Vertical scale from original to output pixels."""
        return self.resized_size[0] / self.original_size[0]

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` padding, as ``torchvision.transforms.v2.functional.pad`` takes it."""
        right = self.output_size[1] - self.resized_size[1] - self.pad_left
        bottom = self.output_size[0] - self.resized_size[0] - self.pad_top
        return self.pad_left, self.pad_top, right, bottom


def letterbox_params(original_size: SizeArgument, size: SizeArgument, center: bool = True) -> LetterboxParams:
    """The letterbox of an image of ``original_size`` into ``size``.

    The image is scaled by ``min(H / h, W / w)`` (up or down) so that its long side (relative to
    the target) fills the target; the resized size is rounded to whole pixels, and the rest is
    padding, split evenly with the odd pixel on the right/bottom (``center=True``, as Ultralytics
    does) or all on the right/bottom (``center=False``).

    Args:
        original_size: ``(height, width)`` of the original image (or an int for a square).
        size: the model's input size, an int or ``(height, width)``.
        center: centre the image; False places it at the top-left corner.

    Returns:
        The parameters, to undo with :func:`undo_letterbox_boxes` and :func:`undo_letterbox_masks`.

    Example:
        >>> from brickzoo.data.transforms import letterbox_params
        >>> params = letterbox_params((170, 300), 320)
        >>> params.resized_size, params.pad_left, params.pad_top
        ((181, 320), 0, 69)
    """
    height, width = as_size(original_size, "letterbox_params original_size")
    out_h, out_w = as_size(size, "letterbox_params size")
    scale = min(out_h / height, out_w / width)
    resized = (min(out_h, max(1, round(height * scale))), min(out_w, max(1, round(width * scale))))
    free_h, free_w = out_h - resized[0], out_w - resized[1]
    left, top = (free_w // 2, free_h // 2) if center else (0, 0)
    return LetterboxParams((height, width), resized, (out_h, out_w), left, top)


def stretch_params(original_size: SizeArgument, size: SizeArgument) -> LetterboxParams:
    """The parameters of a plain resize (aspect ratio not kept) of ``original_size`` to ``size``.

    Example:
        >>> from brickzoo.data.transforms import stretch_params
        >>> stretch_params((170, 300), 320).scale_x
        1.0666666666666667
    """
    original = as_size(original_size, "stretch_params original_size")
    output = as_size(size, "stretch_params size")
    return LetterboxParams(original, output, output, 0, 0)


def undo_letterbox_boxes(boxes: torch.Tensor, params: LetterboxParams) -> torch.Tensor:
    """Map boxes from letterboxed pixels back to the original image's pixels, clipped to it.

    Args:
        boxes: ``Tensor[..., 4]`` xyxy in pixels of the letterboxed image.
        params: what :func:`letterbox_params` (or :func:`stretch_params`) gave for the image.

    Returns:
        ``Tensor[..., 4]`` xyxy in pixels of the original image, float, clipped to
        ``[0, width] x [0, height]`` of the original.

    Example:
        >>> import torch
        >>> from brickzoo.data.transforms import letterbox_params, undo_letterbox_boxes
        >>> params = letterbox_params((100, 200), 400)  # resized to 200x400, 100 rows of padding on top
        >>> undo_letterbox_boxes(torch.tensor([[0.0, 100.0, 40.0, 120.0]]), params)
        tensor([[ 0.,  0., 20., 10.]])
    """
    if boxes.shape[-1:] != (4,):
        raise DataError(f"undo_letterbox_boxes: expected boxes of shape [..., 4], got {list(boxes.shape)}")
    boxes = boxes.float()
    offset = boxes.new_tensor([params.pad_left, params.pad_top, params.pad_left, params.pad_top])
    scale = boxes.new_tensor([params.scale_x, params.scale_y, params.scale_x, params.scale_y])
    height, width = params.original_size
    upper = boxes.new_tensor([width, height, width, height])
    return ((boxes - offset) / scale).clamp(min=torch.zeros_like(upper), max=upper)  # [..., 4]


def undo_letterbox_masks(masks: torch.Tensor, params: LetterboxParams) -> torch.Tensor:
    """Map masks (class indices) from letterboxed pixels back to the original image's pixels.

    The padding is cropped away and the rest resized with nearest-exact interpolation (pixel
    centres, as the image's bilinear resize aligns them), so no class index is mixed and a mask
    letterboxed by :class:`Letterbox` comes back unchanged wherever the letterbox enlarged it.

    Args:
        masks: ``Tensor[..., H, W]`` of any integer (or float) dtype, ``(H, W) == params.output_size``.
        params: what :func:`letterbox_params` (or :func:`stretch_params`) gave for the image.

    Returns:
        ``Tensor[..., h, w]`` with ``(h, w) == params.original_size``, same dtype.

    Example:
        >>> import torch
        >>> from brickzoo.data.transforms import letterbox_params, undo_letterbox_masks
        >>> params = letterbox_params((2, 4), 8)  # resized to 4x8, two rows of padding on top
        >>> undo_letterbox_masks(torch.arange(64).reshape(8, 8), params).shape
        torch.Size([2, 4])
    """
    if masks.ndim < 2 or tuple(masks.shape[-2:]) != params.output_size:
        raise DataError(
            f"undo_letterbox_masks: expected masks of shape [..., {params.output_size[0]}, {params.output_size[1]}] "
            f"(the letterboxed size), got {list(masks.shape)}"
        )
    top, left = params.pad_top, params.pad_left
    inner = masks[..., top : top + params.resized_size[0], left : left + params.resized_size[1]]  # [..., rh, rw]
    flat = inner.reshape(-1, 1, *inner.shape[-2:])  # [N, 1, rh, rw]
    resized = F.resize(
        tv_tensors.Mask(flat), list(params.original_size), interpolation=v2.InterpolationMode.NEAREST_EXACT
    )  # [N, 1, h, w]
    return resized.as_subclass(torch.Tensor).reshape(*masks.shape[:-2], *params.original_size)


class Letterbox(v2.Transform):
    """Resize keeping the aspect ratio so the image fits ``size``, then pad to exactly ``size``.

    Images are resized bilinearly (antialiased) and padded with ``fill`` (neutral grey by
    default); masks are resized with nearest-exact interpolation and padded with 255 (ignore);
    boxes are scaled and shifted with the image. See :func:`letterbox_params` for the arithmetic
    and :meth:`params_for` for the parameters of one image, to undo the letterbox on predictions.

    Args:
        size: the output size, an int or ``(height, width)``.
        center: centre the resized image (True) or place it at the top-left corner (False).
        fill: image value of the padding, in the image's range (one value or one per channel).
        mask_fill: mask value of the padding.

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> from brickzoo.data.transforms import Letterbox
        >>> image = tv_tensors.Image(torch.rand(3, 170, 300))
        >>> boxes = tv_tensors.BoundingBoxes([[0.0, 0.0, 300.0, 170.0]], format="XYXY", canvas_size=(170, 300))
        >>> out = Letterbox(320)({"images": image, "boxes": boxes})
        >>> out["images"].shape, out["boxes"].tolist()
        (torch.Size([3, 320, 320]), [[0.0, 69.0, 320.0, 250.0]])
    """

    def __init__(
        self,
        size: SizeArgument,
        center: bool = True,
        fill: float | Sequence[float] = PAD_FILL,
        mask_fill: int = MASK_FILL,
    ) -> None:
        super().__init__()
        self.size = as_size(size, "Letterbox")
        self.center = bool(center)
        self.fill = list(fill) if isinstance(fill, Sequence) else float(fill)
        self.mask_fill = int(mask_fill)

    def params_for(self, original_size: SizeArgument) -> LetterboxParams:
        """The letterbox parameters of an image of ``original_size`` (``(height, width)``)."""
        return letterbox_params(original_size, self.size, self.center)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """The letterbox parameters for the inputs' common size."""
        return {"letterbox": self.params_for(v2.query_size(flat_inputs))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Resize then pad one input (image, mask, boxes)."""
        letterbox: LetterboxParams = params["letterbox"]
        is_mask = isinstance(inpt, tv_tensors.Mask)
        mode = v2.InterpolationMode.NEAREST_EXACT if is_mask else v2.InterpolationMode.BILINEAR
        resized = F.resize(inpt, list(letterbox.resized_size), interpolation=mode, antialias=True)
        fill = self.mask_fill if is_mask else self.fill
        return F.pad(resized, list(letterbox.padding), fill=fill, padding_mode="constant")

    def extra_repr(self) -> str:
        """The arguments, for ``repr``."""
        return f"size={self.size}, center={self.center}, fill={self.fill}, mask_fill={self.mask_fill}"


_GEOMETRIC = (Letterbox, v2.Resize, v2.Pad)  # deterministic: their effect on the image can be undone
_PIXEL_ONLY = (
    v2.ColorJitter,
    v2.RandomPhotometricDistort,
    v2.GaussianBlur,
    v2.GaussianNoise,
    v2.RandomGrayscale,
    v2.Grayscale,
    v2.Normalize,
    v2.ToDtype,
    v2.Identity,
    v2.SanitizeBoundingBoxes,
    v2.ClampBoundingBoxes,
)


def _flatten(transform: Any) -> list[Any]:
    if isinstance(transform, v2.Compose):
        return [inner for t in transform.transforms for inner in _flatten(t)]
    return [transform]


def pipeline_letterbox_params(pipeline: Any, original_size: SizeArgument) -> LetterboxParams:
    """Where an image of ``original_size`` lands after an evaluation pipeline, to undo it on predictions.

    The pipeline may hold any number of ``letterbox``, ``resize`` and ``pad`` steps and
    transforms that change only pixel values (colour, blur, sanitize); their combined geometry is
    read by sending the image's outline through them as a box.

    Args:
        pipeline: a v2 transform or ``v2.Compose`` (e.g. ``build_transforms(config eval specs)``).
        original_size: ``(height, width)`` of the image before the pipeline.

    Returns:
        The parameters for :func:`undo_letterbox_boxes` and :func:`undo_letterbox_masks`.

    Raises:
        DataError: the pipeline holds a transform whose geometry cannot be undone (a crop, a
            flip, anything random that moves pixels); the message names it.

    Example:
        >>> from brickzoo.data.transforms import build_transforms, pipeline_letterbox_params
        >>> pipeline_letterbox_params(build_transforms([{"letterbox": {"size": 320}}]), (170, 300)).pad_top
        69
    """
    height, width = as_size(original_size, "pipeline_letterbox_params original_size")
    probe: Any = tv_tensors.BoundingBoxes(
        [[0.0, 0.0, float(width), float(height)]], format="XYXY", canvas_size=(height, width)
    )
    for transform in _flatten(pipeline):
        if isinstance(transform, _GEOMETRIC):
            probe = transform(probe)
        elif not isinstance(transform, _PIXEL_ONLY):
            raise DataError(
                f"pipeline_letterbox_params: {type(transform).__name__} moves pixels in a way predictions cannot be "
                "mapped back from; an evaluation pipeline may hold only letterbox, resize, pad and pixel-value "
                "transforms (colour, blur, sanitize_boxes)"
            )
    x1, y1, x2, y2 = probe[0].tolist()
    resized = (round(y2 - y1), round(x2 - x1))
    return LetterboxParams((height, width), resized, tuple(probe.canvas_size), round(x1), round(y1))
