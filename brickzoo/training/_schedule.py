"""The learning-rate schedule: linear warm-up, then a cosine down to ``min_lr``."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from brickzoo.training._config import TrainConfig


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    """The number of warm-up steps: ``warmup_steps``, or ``warmup_fraction`` of ``total_steps`` rounded."""
    if config.warmup_fraction:
        return round(config.warmup_fraction * total_steps)
    return min(config.warmup_steps, total_steps)


def lr_factor(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """The schedule's multiplier of the peak learning rate for the optimizer step ``step`` (0-based).

    Steps ``0 .. warmup-1`` rise linearly to 1: ``(step + 1) / warmup``. The remaining steps
    follow a half cosine from 1 at step ``warmup`` to ``min_ratio`` at the last step
    ``total_steps - 1``: ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with
    ``t = (step - warmup) / (total_steps - 1 - warmup)``. Steps past the end stay at ``min_ratio``.

    Example:
        >>> [round(lr_factor(s, 5, 1, 0.0), 3) for s in range(5)]
        [1.0, 1.0, 0.75, 0.25, 0.0]
    """
    if step < warmup:
        return (step + 1) / warmup
    span = total_steps - 1 - warmup
    if span <= 0:
        return 1.0
    t = min((step - warmup) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`, stepped once after every optimizer step.

    The factor multiplies each param group's own learning rate, so groups with an lr multiplier
    (see :func:`~brickzoo.training.build_optimizer`) keep their ratio to the others throughout,
    and end at ``min_lr`` times their multiplier.
    """
    warmup = warmup_steps(config, total_steps)
    min_ratio = config.min_lr / config.lr
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, min_ratio))
