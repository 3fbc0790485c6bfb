"""Box maths shared by the zoo's detection bricks, for what ``torchvision.ops`` does not offer.

Everything here works on batched, fixed-size tensors (``[B, K, 4]`` with a validity mask instead of
per-image lists), so it runs under ``torch.compile(fullgraph=True)`` and exports to ONNX with a
dynamic batch. Boxes are ``(x1, y1, x2, y2)`` in input pixels throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision

__all__ = [
    "NMS_BLOCK_SIZE",
    "anchor_points",
    "boxes_to_ltrb",
    "centerness_from_ltrb",
    "complete_box_iou",
    "float32_at_most",
    "generalized_box_iou_loss",
    "greedy_nms_keep_sorted",
    "level_points",
    "ltrb_to_boxes",
    "pairwise_box_iou",
]


def level_points(
    height: int, width: int, stride: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The input-pixel centres of the cells of one feature map, row-major.

    Cell ``(row, col)`` of a map with stride ``s`` covers input pixels ``[col*s, (col+1)*s)`` and its
    point is the centre ``((col + 0.5) * s, (row + 0.5) * s)``.

    Args:
        height: feature map height ``H``.
        width: feature map width ``W``.
        stride: input pixels per feature pixel.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        points (Tensor[H * W, 2]): ``(x, y)`` per cell, in the order of ``feature.flatten(2)``.

    Example:
        >>> level_points(2, 3, stride=8).tolist()
        [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0], [12.0, 12.0], [20.0, 12.0]]
    """
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride  # [W]
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride  # [H]
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)  # [H*W, 2]


def anchor_points(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The points of several feature levels, concatenated level after level.

    Args:
        sizes: ``(H_l, W_l)`` per level.
        strides: the stride of each level.
        device: device of the results.
        dtype: floating dtype of the results.

    Returns:
        ``(points, point_strides)``: points (Tensor[N, 2]) ``(x, y)`` in input pixels and
        point_strides (Tensor[N]) the stride of each point's level, where ``N = sum(H_l * W_l)``.

    Example:
        >>> points, point_strides = anchor_points([(2, 2), (1, 1)], [8, 16])
        >>> points.tolist(), point_strides.tolist()
        ([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0], [8.0, 8.0]], [8.0, 8.0, 8.0, 8.0, 16.0])
    """
    points = [level_points(h, w, s, device, dtype) for (h, w), s in zip(sizes, strides, strict=True)]
    point_strides = [
        torch.full((p.shape[0],), float(s), device=device, dtype=dtype) for p, s in zip(points, strides, strict=True)
    ]
    return torch.cat(points, dim=0), torch.cat(point_strides, dim=0)


def ltrb_to_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Decode distances from points to the four box sides into boxes.

    Args:
        points (Tensor[..., 2]): ``(x, y)``; broadcast against ``ltrb``.
        ltrb (Tensor[..., 4]): distances ``(left, top, right, bottom)`` from each point.

    Returns:
        boxes (Tensor[..., 4]): ``(x - left, y - top, x + right, y + bottom)``.

    Example:
        >>> ltrb_to_boxes(torch.tensor([[12.0, 4.0]]), torch.tensor([[2.0, 4.0, 6.0, 8.0]])).tolist()
        [[10.0, 0.0, 18.0, 12.0]]
    """
    top_left = points - ltrb[..., :2]  # [..., 2]
    bottom_right = points + ltrb[..., 2:]  # [..., 2]
    return torch.cat([top_left, bottom_right], dim=-1)


def boxes_to_ltrb(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances from points to the sides of boxes, the inverse of :func:`ltrb_to_boxes`.

    Args:
        points (Tensor[..., 2]): ``(x, y)``; broadcast against ``boxes``.
        boxes (Tensor[..., 4]): ``(x1, y1, x2, y2)``.

    Returns:
        ltrb (Tensor[..., 4]): ``(x - x1, y - y1, x2 - x, y2 - y)``; all positive iff the point
        lies strictly inside the box.
    """
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def centerness_from_ltrb(ltrb: torch.Tensor) -> torch.Tensor:
    """FCOS centre-ness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

    Args:
        ltrb (Tensor[..., 4]): positive distances to the box sides.

    Returns:
        centerness (Tensor[...]): 1 at the box centre, falling to 0 at its border.
    """
    left_right = ltrb[..., [0, 2]]  # [..., 2]
    top_bottom = ltrb[..., [1, 3]]  # [..., 2]
    ratio = (left_right.min(dim=-1).values / left_right.max(dim=-1).values) * (
        top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values
    )
    return ratio.clamp(min=0).sqrt()


def generalized_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU loss ``1 - GIoU`` of paired boxes, elementwise over any leading dimensions.

    The formula of ``torchvision.ops.generalized_box_iou_loss`` (same ``eps`` placement, so the
    same numbers), with the intersection computed as ``clamp(width, 0) * clamp(height, 0)``
    instead of torchvision's boolean-mask assignment, whose data-dependent shape breaks
    ``torch.compile`` graphs. Finite for any finite boxes, empty ones included.

    Args:
        boxes1 (Tensor[..., 4]): ``(x1, y1, x2, y2)``.
        boxes2 (Tensor[..., 4]): ``(x1, y1, x2, y2)``, same shape.
        eps: added to the union and to the enclosing area before dividing.

    Returns:
        loss (Tensor[...]): in ``[0, 2]`` for proper boxes; 0 for identical ones (up to ``eps``).

    Example:
        >>> generalized_box_iou_loss(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 0, 3, 2])).item()
        0.6666666269302368
    """
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # [...] each
    u1, v1, u2, v2 = boxes2.unbind(dim=-1)  # [...] each
    width = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)  # [...]
    height = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)  # [...]
    intersection = width * height
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - intersection
    iou = intersection / (union + eps)
    enclosing = (torch.maximum(x2, u2) - torch.minimum(x1, u1)) * (torch.maximum(y2, v2) - torch.minimum(y1, v1))
    return 1 - (iou - (enclosing - union) / (enclosing + eps))


def complete_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """CIoU of paired boxes, elementwise with broadcasting: IoU minus a centre-distance and an aspect term.

    ``CIoU = IoU - d^2 / c^2 - alpha * v`` where ``d`` is the distance between the box centres,
    ``c`` the diagonal of the smallest box enclosing both, ``v = 4 / pi^2 * (atan(w2 / h2) -
    atan(w1 / h1))^2`` and ``alpha = v / (1 - IoU + v)``, taken without gradient (as in the CIoU
    paper and ``torchvision.ops.complete_box_iou_loss``, which gives ``1 - CIoU`` of the same
    pairs, except for a box without width and height, whose aspect angle is 0 here and NaN there).
    Scale-invariant, finite for any finite boxes, empty ones included.

    Args:
        boxes1 (Tensor[..., 4]): ``(x1, y1, x2, y2)``.
        boxes2 (Tensor[..., 4]): ``(x1, y1, x2, y2)``, broadcast against ``boxes1``.
        eps: keeps the divisions finite: added to the union, the squared diagonal and the heights.

    Returns:
        ciou (Tensor[...]): in ``(-1.5, 1]``; 1 for identical boxes (up to ``eps``).

    Example:
        >>> round(complete_box_iou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 0, 3, 2])).item(), 4)
        0.2564
    """
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # [...] each
    u1, v1, u2, v2 = boxes2.unbind(dim=-1)  # [...] each
    width1, height1 = x2 - x1, y2 - y1
    width2, height2 = u2 - u1, v2 - v1
    inter_width = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)
    inter_height = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    intersection = inter_width * inter_height
    iou = intersection / (width1 * height1 + width2 * height2 - intersection + eps)
    enclosing_width = torch.maximum(x2, u2) - torch.minimum(x1, u1)
    enclosing_height = torch.maximum(y2, v2) - torch.minimum(y1, v1)
    diagonal = enclosing_width**2 + enclosing_height**2
    distance = ((u1 + u2 - x1 - x2) ** 2 + (v1 + v2 - y1 - y2) ** 2) / 4
    aspect = (4 / math.pi**2) * (torch.atan(width2 / (height2 + eps)) - torch.atan(width1 / (height1 + eps))) ** 2
    with torch.no_grad():
        alpha = aspect / (1 - iou + aspect + eps)
    return iou - distance / (diagonal + eps) - alpha * aspect


def pairwise_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of boxes, batched (``torchvision.ops.box_iou`` for ``[..., N, 4]`` inputs), for NMS.

    The arithmetic is the one of torchvision's NMS kernel (``inter / (area1 + area2 - inter)``),
    so thresholding it gives the same decisions bit for bit. Two empty boxes give NaN, which
    compares False with any threshold (as in torchvision). Computed without gradients, in place
    on its own ``[..., N, M]`` intermediates (fewer large allocations: 1.1x to 2x less CPU time).

    Args:
        boxes1 (Tensor[..., N, 4]): ``(x1, y1, x2, y2)``.
        boxes2 (Tensor[..., M, 4]): ``(x1, y1, x2, y2)``, same leading dimensions.

    Returns:
        iou (Tensor[..., N, M]).

    Example:
        >>> pairwise_box_iou(torch.tensor([[0.0, 0, 4, 1]]), torch.tensor([[1.0, 0, 5, 1], [4, 0, 5, 1]])).tolist()
        [[0.6000000238418579, 0.0]]
    """
    with torch.no_grad():
        # one [..., N, M] tensor per coordinate rather than [..., N, M, 2] ones: about 3x faster on CPU
        x1, y1, x2, y2 = (c[..., :, None] for c in boxes1.unbind(-1))  # [..., N, 1] each
        u1, v1, u2, v2 = (c[..., None, :] for c in boxes2.unbind(-1))  # [..., 1, M] each
        area1 = (x2 - x1) * (y2 - y1)  # [..., N, 1]
        area2 = (u2 - u1) * (v2 - v1)  # [..., 1, M]
        width = torch.minimum(x2, u2).sub_(torch.maximum(x1, u1)).clamp_(min=0)  # [..., N, M]
        height = torch.minimum(y2, v2).sub_(torch.maximum(y1, v1)).clamp_(min=0)  # [..., N, M]
        inter = width.mul_(height)  # [..., N, M]
        return inter.div_((area1 + area2).sub_(inter))  # [..., N, M]


NMS_BLOCK_SIZE = 128
"""Candidates whose NMS decisions eager :func:`greedy_nms_keep_sorted` takes together (one IoU block)."""


def float32_at_most(value: float) -> float:
    """The largest float32 not above ``value`` (as a Python float): a threshold for float32 tensors.

    torchvision's CPU NMS compares the float32 IoU with the threshold as a double, so it
    suppresses a box whose IoU is ``float32(0.6)`` (0.6000000238, above the double 0.6). A float32
    tensor compared with the Python float 0.6 rounds the threshold to that same float32 and keeps
    the box. For a float32 ``x``, ``x > float32_at_most(t)`` holds exactly when ``x > t`` does.

    Example:
        >>> float32_at_most(0.6), float32_at_most(0.5)
        (0.5999999642372131, 0.5)
    """
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def _suppressors(boxes: torch.Tensor, labels: torch.Tensor, start: int, stop: int, threshold: float) -> torch.Tensor:
    """Which candidates may suppress candidates ``start`` to ``stop - 1``.

    Args:
        boxes (Tensor[B, K, 4]): sorted by decreasing score.
        labels (Tensor[B, K]): their classes.
        start: first candidate of the rows.
        stop: one past the last; the columns are candidates ``0`` to ``stop - 1``.
        threshold: a float32 value (see :func:`float32_at_most`).

    Returns:
        overlaps (Tensor[B, stop - start, stop]): bool, True at ``[b, a, j]`` when candidate ``j``
        ranks above candidate ``start + a``, has its label and overlaps it with IoU > ``threshold``.
    """
    iou = pairwise_box_iou(boxes[:, start:stop], boxes[:, :stop])  # [B, R, stop]
    overlaps = iou > threshold  # [B, R, stop]
    overlaps &= labels[:, start:stop, None] == labels[:, None, :stop]
    overlaps[..., start:].tril_(diagonal=-1)  # every column before ``start`` ranks above the rows; in theirs, j < a
    return overlaps


def _undecided_left(kept: torch.Tensor, suppressed: torch.Tensor) -> torch.Tensor:
    return (~(kept | suppressed)).any()


def _overlapped(weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """For each candidate, whether a ``chosen`` one overlaps it: ``(overlaps & chosen[:, None, :]).any(-1)``.

    Computed as a matrix-vector product of 0/1 ``weights`` (``[B, R, R]``, float), whose counts are
    exact (and a positive count never rounds to 0) in any float type: one ``MatMul`` in an ONNX
    graph instead of an ``And`` and a ``ReduceMax`` over ``[B, R, R]`` per round, 3x faster in
    onnxruntime at 1000 candidates.
    """
    return torch.matmul(weights, chosen.to(weights.dtype)[..., None])[..., 0] > 0  # [B, R]


def _decide_round(
    weights: torch.Tensor, kept: torch.Tensor, suppressed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of greedy NMS on all candidates at once; decisions already taken never change.

    A candidate is suppressed once a kept, better candidate overlaps it, and kept once every
    better candidate that overlaps it is suppressed. The best undecided candidate is always
    decided, so at most K rounds are needed; in practice a handful. ``weights`` is the
    overlap matrix of :func:`_suppressors` as 0/1 floats (see :func:`_overlapped`).
    """
    undecided = ~(kept | suppressed)  # [B, K]
    hit = _overlapped(weights, kept)  # [B, K] a kept better box overlaps
    suppressed = suppressed | (undecided & hit)
    blocked = _overlapped(weights, ~suppressed)  # [B, K] an open better box overlaps
    kept = kept | (undecided & ~hit & ~blocked)
    return kept, suppressed


def _decide(overlaps: torch.Tensor, suppressed: torch.Tensor) -> torch.Tensor:
    """Rounds of :func:`_decide_round` until every candidate is decided: the kept ones, ``[B, R]`` bool.

    ``overlaps`` is ``[B, R, R]`` (the candidates among themselves), ``suppressed`` the ones already out.
    """
    weights = overlaps.to(torch.float32)  # [B, R, R] 0/1
    kept = torch.zeros_like(suppressed)
    if torch.compiler.is_compiling():

        def body(kept: torch.Tensor, suppressed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return _decide_round(weights, kept, suppressed)

        kept, suppressed = torch.while_loop(_undecided_left, body, (kept, suppressed))
    else:  # eager: the same rounds, without compiling a while_loop on every call
        while bool(_undecided_left(kept, suppressed)):
            kept, suppressed = _decide_round(weights, kept, suppressed)
    return kept


def greedy_nms_keep_sorted(
    boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Exact class-aware greedy NMS of candidates already sorted by decreasing score, per image.

    Keeps what ``torchvision.ops.batched_nms`` (its CPU kernel, class by class) keeps on each
    image's valid candidates: going from the best candidate down, a candidate is dropped when a
    kept candidate of the same label overlaps it with IoU > ``iou_threshold`` (the IoU in the
    boxes' dtype compared with the threshold as a double, see :func:`float32_at_most`). Images never
    influence each other. Three implementations of these same decisions:

    - eager on the CPU with more than :data:`NMS_BLOCK_SIZE` candidates (float32 or float64
      boxes): torchvision's NMS kernel itself, once per image and label present
      (:func:`_kernel_keep`), 11x faster than the blocks at K = 1000;
    - eager otherwise (up to one block of candidates, where one tensor block decides a whole
      batch faster than a kernel call per image and label; CUDA, whose kernel compares in
      float32; half precision): the candidates are decided block after block of
      :data:`NMS_BLOCK_SIZE` (:func:`_blocks_keep`);
    - compiled or exported: one ``[B, K, K]`` IoU matrix decided in a ``torch.while_loop`` of
      parallel rounds (:func:`_decide_round`, an ONNX ``Loop`` of matrix-vector products), only
      fixed-size tensor ops.

    Args:
        boxes (Tensor[B, K, 4]): ``(x1, y1, x2, y2)``, sorted by decreasing score along K.
        labels (Tensor[B, K]): class of each candidate; only equal labels suppress each other.
        valid (Tensor[B, K]): bool, the candidates taking part (e.g. above a score threshold).
        iou_threshold: overlap above which the worse candidate is dropped.

    Returns:
        keep (Tensor[B, K]): bool, True for the candidates that survive.

    Example:
        >>> boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]])
        >>> greedy_nms_keep_sorted(boxes, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool),
        ...                        iou_threshold=0.5).tolist()
        [[True, False, True]]
    """
    if torch.compiler.is_compiling():
        return _decide(_suppressors(boxes, labels, 0, boxes.shape[1], _threshold(iou_threshold, boxes)), ~valid)
    if boxes.shape[1] > NMS_BLOCK_SIZE and _kernel_applies(boxes):
        return _kernel_keep(boxes, labels, valid, iou_threshold)
    return _blocks_keep(boxes, labels, valid, iou_threshold)


def _threshold(iou_threshold: float, boxes: torch.Tensor) -> float:
    """The threshold to compare IoUs in the boxes' dtype with so that it acts as the double ``iou_threshold``:
    itself for float64, else :func:`float32_at_most` (float16 and bfloat16 values are float32 values too)."""
    return iou_threshold if boxes.dtype == torch.float64 else float32_at_most(iou_threshold)


def _kernel_applies(boxes: torch.Tensor) -> bool:
    """Whether torchvision's CPU NMS kernel can decide ``boxes``: CPU, float32 or float64, not traced by TorchScript."""
    tracing = torch.jit.is_tracing() or torch.jit.is_scripting()
    return boxes.device.type == "cpu" and boxes.dtype in (torch.float32, torch.float64) and not tracing


def _kernel_keep(boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`greedy_nms_keep_sorted` by ``torchvision.ops.nms`` on each image's valid candidates of each label.

    The scores handed to the kernel are the ranks (``K`` down to 1, exact in float32 up to 2**24),
    so it visits the candidates in the given order, ties included. Class by class rather than
    ``batched_nms``'s coordinate offset, which rounds the offset coordinates and so can decide a
    pair whose IoU lies at the threshold differently.
    """
    keep = torch.zeros_like(valid)  # [B, K]
    rank = torch.arange(boxes.shape[1], 0, -1, dtype=boxes.dtype)  # [K] strictly decreasing
    for b in range(boxes.shape[0]):
        index = torch.nonzero(valid[b])[:, 0]  # [V] the valid candidates, best first
        if index.numel() == 0:
            continue
        by_label = index[torch.argsort(labels[b, index], stable=True)]  # [V] grouped by label, best first in each
        _, counts = torch.unique_consecutive(labels[b, by_label], return_counts=True)
        for members in torch.split(by_label, counts.tolist()):
            kept = torchvision.ops.nms(boxes[b, members], rank[members], iou_threshold)
            keep[b, members[kept]] = True
    return keep


def _blocks_keep(boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`greedy_nms_keep_sorted` block by block of :data:`NMS_BLOCK_SIZE` candidates (eager, any device).

    Each block takes its ``[B, R, <= K]`` IoUs with the candidates above it (half the matrix in
    all), is suppressed by the kept candidates of the earlier blocks, then decides within itself
    in rounds. The same decisions as the single matrix, about 6x less time at K = 1000.
    """
    threshold = _threshold(iou_threshold, boxes)
    num = boxes.shape[1]
    kept = torch.zeros_like(valid)  # [B, K]
    for start in range(0, num, NMS_BLOCK_SIZE):
        stop = min(start + NMS_BLOCK_SIZE, num)
        overlaps = _suppressors(boxes, labels, start, stop, threshold)  # [B, R, stop]
        # the candidates above the block are decided: a kept one that overlaps a candidate suppresses it
        suppressed = ~valid[:, start:stop] | (overlaps[..., :start] & kept[:, None, :start]).any(dim=-1)  # [B, R]
        kept[:, start:stop] = _decide(overlaps[..., start:], suppressed)
    return kept
