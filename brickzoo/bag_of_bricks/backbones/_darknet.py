"""brickzoo's own backbones (``brickzoo:<model>``): CSP-Darknet, the backbone of YOLOv8.

timm and torchvision have no backbone of this kind at YOLOv8n's size, and at 320 px on the CPU
it is what detection needs: on the shapes data, under brickzoo's PAN and task-aligned head,
``csp_darknet_n`` reaches mAP@0.5 0.90 after 256 steps (YOLOv8n: 0.90) against 0.66 for timm's
mobilenetv3_small_100, and trains faster than YOLOv8n (``benchmarks/README.md``). The models
are written here from the published architecture, in the sizes of YOLOv8 (n, s, m, l, x); there
are no downloadable weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from brickzoo.bag_of_bricks._layers import CrossStagePartial, conv_norm_act
from brickzoo.bag_of_bricks.backbones._common import (
    BackboneParts,
    PretrainedArg,
    check_levels,
    close_matches,
    describe_levels,
)
from brickzoo.bag_of_bricks.backbones._torchvision import StagedFeatures
from brickzoo.bag_of_bricks.backbones._weights import (
    SUFFIXES,
    check_pretrained_file,
    load_fitting_state_dict,
    read_state_dict,
)
from brickzoo.errors import BrickDefinitionError, ZooError

# Images in [0, 1] without normalisation, as YOLOv8 takes them; input_size is YOLOv8's training size.
DARKNET_DATA_CONFIG: dict[str, Any] = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": (3, 640, 640)}


class DarknetSize(NamedTuple):
    """A size of CSP-Darknet: the multipliers YOLOv8 applies to its base widths and depths."""

    depth: float  # of the base numbers of blocks (3, 6, 6, 3)
    width: float  # of the base widths (64, 128, 256, 512, 1024)
    max_channels: int  # the widest level is capped at this before ``width`` applies


_BASE_WIDTHS = (64, 128, 256, 512, 1024)
_BASE_DEPTHS = (3, 6, 6, 3)
DARKNET_SIZES: dict[str, DarknetSize] = {
    "csp_darknet_n": DarknetSize(0.33, 0.25, 1024),
    "csp_darknet_s": DarknetSize(0.33, 0.50, 1024),
    "csp_darknet_m": DarknetSize(0.67, 0.75, 768),
    "csp_darknet_l": DarknetSize(1.00, 1.00, 512),
    "csp_darknet_x": DarknetSize(1.00, 1.25, 512),
}


class SpatialPyramidPoolFast(nn.Module):
    """YOLOv5/v8's SPPF: three chained 5x5 max pools (receptive fields 5, 9, 13) concatenated and mixed.

    Shape:
        ``[B, in_channels, H, W]`` in, ``[B, out_channels, H, W]`` out.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.reduce = conv_norm_act(in_channels, hidden)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.merge = conv_norm_act(4 * hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [self.reduce(x)]  # [B, hidden, H, W]
        for _ in range(3):
            pooled.append(self.pool(pooled[-1]))
        return self.merge(torch.cat(pooled, dim=1))


class CSPDarknet(nn.Module):
    """CSP-Darknet as in YOLOv8: a stride-2 stem, then four stages of a stride-2 convolution and a C2f block.

    The last stage ends with SPPF. Each C2f block's 3x3 pairs are added to their input. Five
    levels, as timm numbers its ``feature_info``: level 0 is the stem (stride 2), levels 1-4 the
    stages (strides 4-32). Its BatchNorms use YOLOv8's ``eps=1e-3`` and ``momentum=0.03``.

    Args:
        widths: channels of the five levels.
        depths: 3x3 pairs in the C2f block of each of the four stages.
        in_channels: channels of the images.

    Shape:
        images ``[B, in_channels, H, W]`` in; ``stages[i]`` maps level ``i - 1`` to level ``i``
        (``[B, widths[i], H/2^(i+1), W/2^(i+1)]``, sizes rounded up); ``forward`` returns the five levels.

    Example:
        >>> model = csp_darknet("csp_darknet_n")
        >>> [tuple(t.shape[1:]) for t in model(torch.zeros(1, 3, 64, 64))]
        [(16, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]
    """

    def __init__(self, widths: Sequence[int], depths: Sequence[int], in_channels: int = 3) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 4:
            raise BrickDefinitionError(
                f"CSPDarknet: expected 5 widths and 4 depths, got widths={list(widths)}, depths={list(depths)}"
            )
        self.widths = [int(w) for w in widths]
        stages: list[nn.Module] = [conv_norm_act(in_channels, self.widths[0], 3, 2)]
        for index, depth in enumerate(depths):
            before, width = self.widths[index], self.widths[index + 1]
            blocks = [conv_norm_act(before, width, 3, 2), CrossStagePartial(width, width, int(depth), shortcut=True)]
            if index == len(depths) - 1:
                blocks.append(SpatialPyramidPoolFast(width, width))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = 1e-3, 0.03

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels: list[torch.Tensor] = []
        x = images
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return tuple(levels)


def csp_darknet(model_name: str, in_channels: int = 3) -> CSPDarknet:
    """The CSP-Darknet of one of :data:`DARKNET_SIZES` (``"csp_darknet_n"`` is YOLOv8n's backbone, 1.3 M parameters)."""
    check_darknet_name(f"brickzoo:{model_name}", model_name)
    size = DARKNET_SIZES[model_name]
    widths = [max(1, round(min(w, size.max_channels) * size.width)) for w in _BASE_WIDTHS]
    depths = [max(1, round(d * size.depth)) for d in _BASE_DEPTHS]
    return CSPDarknet(widths, depths, in_channels)


def _hint(model_name: str) -> str:
    close = close_matches(model_name, "brickzoo")
    known = [f"brickzoo:{n}" for n in DARKNET_SIZES]
    return f"did you mean {close}?" if close else f"brickzoo's own backbones are {known}"


def check_darknet_name(name: str, model_name: str) -> None:
    """Raise a ZooError naming brickzoo's backbones if ``model_name`` is not one of them."""
    if model_name not in DARKNET_SIZES:
        raise ZooError(f"unknown brickzoo model {model_name!r} in backbone name {name!r}; {_hint(model_name)}")


def darknet_backbone(
    name: str,
    model_name: str,
    pretrained: PretrainedArg,
    out_indices: Sequence[int] | None,
    model_kwargs: Mapping[str, Any],
) -> BackboneParts:
    """The stages of a CSP-Darknet up to the last of ``out_indices``, and the description of the levels."""
    check_darknet_name(name, model_name)
    owner = f"backbone_bricks({name!r})"
    unknown = sorted(set(model_kwargs) - {"in_channels"})
    in_channels = model_kwargs.get("in_channels", 3)
    if unknown or not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        got = f"unknown arguments {unknown}" if unknown else f"in_channels={in_channels!r}"
        raise BrickDefinitionError(f"{owner}: got {got}; brickzoo's backbones take only in_channels (an int >= 1)")
    model = csp_darknet(model_name, in_channels)
    if pretrained is True:
        raise ZooError(
            f"{owner}: brickzoo's own backbones have no downloadable weights; pass pretrained=False, or the path of "
            f"a state dict of the full model (torch.save(csp_darknet({model_name!r}).state_dict(), path) after "
            "training it)"
        )
    if pretrained is not False:
        path = check_pretrained_file(owner, pretrained)
        expected = f"a state dict of the full brickzoo model {model_name!r}: {SUFFIXES}"
        state = read_state_dict(owner, path, expected)
        target = f"brickzoo model {model_name!r}"
        source = f"the weight file '{path}'"
        load_fitting_state_dict(owner, model, state, source=source, target=target, expected=expected)
    strides = [2 ** (i + 1) for i in range(len(model.widths))]
    indices = check_levels(name, out_indices, len(model.widths), describe_levels(model.widths, strides))
    module = StagedFeatures(list(model.stages), indices)
    channels = [model.widths[i] for i in indices]
    return BackboneParts(module, channels, [strides[i] for i in indices], indices, dict(DARKNET_DATA_CONFIG))
