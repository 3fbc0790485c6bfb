"""Convolution blocks shared by the zoo's own backbone, necks and heads."""

from __future__ import annotations

import torch
from torch import nn


def conv_norm_act(
    in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Convolution without bias (``groups``: depthwise when equal to the channels), BatchNorm, SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.SiLU(inplace=True),
    )


class _Refine(nn.Sequential):
    """Two 3x3 convolutions, added to their input when ``shortcut`` is set (YOLOv8's bottleneck).

    A Sequential, so that its weights keep the keys ``0.*`` and ``1.*`` of the pair it replaced.
    """

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__(conv_norm_act(channels, channels, 3), conv_norm_act(channels, channels, 3))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        refined = super().forward(x)
        return x + refined if self.shortcut else refined


class CrossStagePartial(nn.Module):
    """A cross-stage partial block: the C2f of YOLOv8 (its backbone with shortcuts, its neck without).

    A 1x1 convolution to ``2h`` channels (``h = out_channels // 2``, at least 1) is split into two
    halves; ``num_blocks`` pairs of 3x3 convolutions refine the second half one after the other
    (each pair added to its input when ``shortcut`` is set), and a 1x1 convolution mixes the two
    halves and every refinement back to ``out_channels``.

    Shape:
        ``[B, in_channels, H, W]`` in, ``[B, out_channels, H, W]`` out.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, shortcut: bool = False) -> None:
        super().__init__()
        hidden = max(1, out_channels // 2)
        self.split = conv_norm_act(in_channels, 2 * hidden)
        self.blocks = nn.ModuleList(_Refine(hidden, shortcut) for _ in range(num_blocks))
        self.merge = conv_norm_act((2 + num_blocks) * hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.split(x).chunk(2, dim=1))  # 2 x [B, h, H, W]
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.merge(torch.cat(parts, dim=1))  # [B, out_channels, H, W]
