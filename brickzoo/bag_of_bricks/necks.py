"""Necks: modules between a backbone and the heads that remix its feature levels.

:func:`fpn_bricks` builds a feature pyramid network (``torchvision.ops.FeaturePyramidNetwork``)
over any subset of a backbone's levels; :func:`pan_bricks` adds a bottom-up path after the
top-down one (path aggregation, the neck of YOLOv5/v8). Heads read their ``feature_levels`` like
a backbone's.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from brickzoo._bricks import BrickInterface, BrickTrainable
from brickzoo.bag_of_bricks._features import BrickFeatureLevels, FeatureLevel, FeaturesArg, feature_levels
from brickzoo.bag_of_bricks._layers import CrossStagePartial, conv_norm_act
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.errors import BrickDefinitionError, BrickInputError

_LEVEL_SUFFIX = re.compile(r"(?:^|/)level(\d+)$")


class FeaturePyramid(nn.Module):
    """A feature pyramid network taking and returning feature maps as positional tensors.

    Args:
        in_channels: channels of each input level, from fine to coarse.
        out_channels: channels of every output level.
        extra_blocks: add a coarser level by max pooling the coarsest output (stride x2).

    Shape:
        ``len(in_channels)`` tensors ``[B, in_channels[i], H_i, W_i]`` in; a tuple of
        ``[B, out_channels, H_i, W_i]`` out, plus ``[B, out_channels, ceil(H_last/2), ceil(W_last/2)]``
        with ``extra_blocks``.

    Example:
        >>> fpn = FeaturePyramid([8, 16], out_channels=4)
        >>> [tuple(t.shape) for t in fpn(torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4))]
        [(1, 4, 8, 8), (1, 4, 4, 4)]
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, extra_blocks: bool = False) -> None:
        super().__init__()
        self.keys = [str(i) for i in range(len(in_channels))]
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=list(in_channels),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks else None,
        )

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = OrderedDict(zip(self.keys, features, strict=True))  # level -> [B, C_i, H_i, W_i]
        return tuple(self.fpn(named).values())  # each [B, out_channels, H_i, W_i]


class PathAggregation(nn.Module):
    """A path aggregation network (PANet): FPN's top-down path, then a bottom-up path.

    Each input level is first projected to ``out_channels`` (1x1 convolution, BatchNorm, SiLU).
    Top-down, from the coarsest level: the coarser result is upsampled (nearest) to the finer
    level's size, concatenated with it and fused by a cross-stage partial block. Bottom-up, from
    the finest result: a 3x3 stride-2 convolution brings it to the next level, where it is
    concatenated with that level's top-down result and fused again. So every output sees every
    input level, and the finest level's detail reaches the coarse outputs in a few layers (in an
    FPN only the top-down direction exists). This is the neck of YOLOv5/YOLOv8 at a uniform width.

    Consecutive levels must differ by a stride of 2 (checked by :func:`pan_bricks`); a stride-2
    convolution of an odd-sized map is one row or column larger than a backbone level that rounds
    down, and is cropped to it.

    Args:
        in_channels: channels of each input level, from fine to coarse (at least one level).
        out_channels: channels of every output level.
        num_blocks: pairs of 3x3 convolutions in each fusion block.

    Shape:
        ``len(in_channels)`` tensors ``[B, in_channels[i], H_i, W_i]`` in; a tuple of
        ``[B, out_channels, H_i, W_i]`` out.

    Example:
        >>> pan = PathAggregation([8, 16], out_channels=4)
        >>> [tuple(t.shape) for t in pan(torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4))]
        [(1, 4, 8, 8), (1, 4, 4, 4)]
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_blocks: int = 1) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        if not self.in_channels:
            raise BrickDefinitionError("PathAggregation: expected at least one input level, got none")
        between = len(self.in_channels) - 1
        self.laterals = nn.ModuleList(conv_norm_act(c, out_channels) for c in self.in_channels)
        self.top_down = nn.ModuleList(
            CrossStagePartial(2 * out_channels, out_channels, num_blocks) for _ in range(between)
        )
        self.downsample = nn.ModuleList(conv_norm_act(out_channels, out_channels, 3, 2) for _ in range(between))
        self.bottom_up = nn.ModuleList(
            CrossStagePartial(2 * out_channels, out_channels, num_blocks) for _ in range(between)
        )

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(features) != len(self.in_channels):
            raise BrickInputError(
                f"PathAggregation: expected {len(self.in_channels)} feature levels, got {len(features)}"
            )
        levels = [lateral(x) for lateral, x in zip(self.laterals, features, strict=True)]  # [B, D, H_i, W_i]
        top_down = levels[-1:]  # coarsest first while going down
        for index in range(len(levels) - 2, -1, -1):
            finer = levels[index]
            coarser = F.interpolate(top_down[-1], size=finer.shape[-2:], mode="nearest")
            top_down.append(self.top_down[index](torch.cat([coarser, finer], dim=1)))
        top_down.reverse()  # fine to coarse
        outputs = [top_down[0]]
        for index in range(1, len(levels)):
            target = top_down[index]
            down = self.downsample[index - 1](outputs[-1])[..., : target.shape[-2], : target.shape[-1]]
            outputs.append(self.bottom_up[index - 1](torch.cat([down, target], dim=1)))
        return tuple(outputs)


class BrickNeck(BrickFeatureLevels, BrickTrainable):
    """A trainable neck brick: feature levels in, feature levels out.

    Args:
        model: a module taking one tensor per input level and returning a tuple with one tensor
            per output level.
        inputs: the levels it reads, in the order the module takes them.
        feature_levels: the levels it writes; their names are the output names.
    """

    def __init__(
        self, model: nn.Module, inputs: Sequence[FeatureLevel], feature_levels: Sequence[FeatureLevel]
    ) -> None:
        BrickTrainable.__init__(
            self, model, input_names=[f.name for f in inputs], output_names=[f.name for f in feature_levels]
        )
        self.feature_levels = list(feature_levels)


def _level_number(level: FeatureLevel, position: int) -> int:
    """The ``i`` of a level named ``.../level<i>``, else its position in the list."""
    match = _LEVEL_SUFFIX.search(level.name)
    return int(match.group(1)) if match else position


def _select_levels(
    available: list[FeatureLevel], levels: Sequence[int | str] | None, owner: str
) -> list[tuple[int, FeatureLevel]]:
    numbered = [(_level_number(f, i), f) for i, f in enumerate(available)]
    if levels is None:
        return numbered
    if isinstance(levels, (int, str)):
        levels = [levels]
    by_key: dict[int | str, tuple[int, FeatureLevel]] = {}
    for number, level in numbered:
        by_key[number] = (number, level)
        by_key[level.name] = (number, level)
        by_key[level.name.rpartition("/")[2]] = (number, level)
    unknown = [key for key in levels if isinstance(key, bool) or key not in by_key]
    chosen = sorted({by_key[key][0]: by_key[key] for key in levels if key not in unknown}.values(), key=lambda p: p[0])
    if unknown or not chosen or len(chosen) != len(list(levels)):
        problem = f"{unknown} are not among them" if unknown else "the selection is empty or repeats a level"
        described = ", ".join(f"{n} ({f.name}: {f.channels} channels, stride {f.stride})" for n, f in numbered)
        raise BrickDefinitionError(
            f"{owner}: levels={list(levels)}: {problem}; the available levels are {described}; "
            "select them by number or by name"
        )
    return [pair for pair in numbered if pair in chosen]


def _neck_inputs(
    owner: str, features: FeaturesArg, levels: Sequence[int | str] | None, output: str, **sizes: int
) -> list[tuple[int, FeatureLevel]]:
    """The selected ``(number, level)`` pairs of a neck factory, after checking its ``sizes`` (positive ints),
    its ``output`` prefix (absolute) and the selected levels' channel counts."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BrickDefinitionError(f"{owner}: {name} must be a positive int, got {value!r}")
    if output.startswith("."):
        raise BrickDefinitionError(
            f"{owner}: output={output!r} must be an absolute name prefix (the levels are written as "
            "'<output>/level<i>'); drop the leading './' or '../'"
        )
    selected = _select_levels(feature_levels(features, owner=owner), levels, owner=owner)
    bad = [level.name for _, level in selected if level.channels <= 0]
    if bad:
        raise BrickDefinitionError(f"{owner}: levels {bad} declare no channel count; expected channels > 0")
    return selected


@register_factory("fpn", "neck")
def fpn_bricks(
    features: FeaturesArg,
    out_channels: int = 64,
    levels: Sequence[int | str] | None = None,
    output: str = "pyramid",
    extra_blocks: bool = False,
) -> dict[str, BrickInterface]:
    """A feature pyramid network over some of a backbone's levels: ``{"fpn": brick}``.

    The brick reads the selected levels (``[B, C_i, H/s_i, W/s_i]``) and writes
    ``"<output>/level<i>"`` (``[B, out_channels, H/s_i, W/s_i]``) for each, keeping the level
    numbers of its input; with ``extra_blocks`` it also writes the next level (max pooled, stride x2).
    It exposes ``feature_levels`` for the heads that follow.

    Args:
        features: the backbone's levels: the dict or brick of ``backbone_bricks`` or a list of
            :class:`FeatureLevel`.
        out_channels: channels of every output level.
        levels: which levels to use, by number (``3`` for ``features/level3``) or name; all by default.
        output: the prefix of the absolute names it writes.
        extra_blocks: add a coarser level with ``torchvision.ops.feature_pyramid_network.LastLevelMaxPool``.

    Returns:
        ``{"fpn": BrickNeck(FeaturePyramid)}``.

    Raises:
        BrickDefinitionError: a level selection naming levels that are not available, or bad features.

    Example:
        >>> from brickzoo.bag_of_bricks.backbones import backbone_bricks
        >>> backbone = backbone_bricks("timm:resnet10t")
        >>> neck = fpn_bricks(backbone, out_channels=32, levels=[3, 4], extra_blocks=True)
        >>> [(f.name, f.channels, f.stride) for f in neck["fpn"].feature_levels]
        [('pyramid/level3', 32, 16), ('pyramid/level4', 32, 32), ('pyramid/level5', 32, 64)]
    """
    selected = _neck_inputs("fpn_bricks", features, levels, output, out_channels=out_channels)
    inputs = [level for _, level in selected]
    outputs = [FeatureLevel(f"{output}/level{n}", out_channels, f.stride) for n, f in selected]
    if extra_blocks:
        last_number, last = selected[-1]
        outputs.append(FeatureLevel(f"{output}/level{last_number + 1}", out_channels, last.stride * 2))
    module = FeaturePyramid([f.channels for f in inputs], out_channels, extra_blocks=extra_blocks)
    return {"fpn": BrickNeck(module, inputs=inputs, feature_levels=outputs)}


@register_factory("pan", "neck")
def pan_bricks(
    features: FeaturesArg,
    out_channels: int = 64,
    levels: Sequence[int | str] | None = None,
    output: str = "pyramid",
    num_blocks: int = 1,
) -> dict[str, BrickInterface]:
    """A path aggregation network (FPN top-down, then bottom-up) over some of a backbone's levels: ``{"pan": brick}``.

    Like :func:`fpn_bricks`, the brick reads the selected levels and writes
    ``"<output>/level<i>"`` (``[B, out_channels, H/s_i, W/s_i]``) for each, keeping the level
    numbers of its input, and exposes ``feature_levels`` for the heads. See
    :class:`PathAggregation` for what it computes; it costs about three times an FPN of the same
    width and, at 320 px, gives the detection head better features (``benchmarks/README.md``).

    Args:
        features: the backbone's levels: the dict or brick of ``backbone_bricks`` or a list of
            :class:`FeatureLevel`.
        out_channels: channels of every output level.
        levels: which levels to use, by number or name; all by default. Consecutive selected
            levels must differ by a stride of 2.
        output: the prefix of the absolute names it writes.
        num_blocks: pairs of 3x3 convolutions in each fusion block.

    Returns:
        ``{"pan": BrickNeck(PathAggregation)}``.

    Raises:
        BrickDefinitionError: bad arguments, levels that are not available, or selected levels
            whose strides do not double from one to the next.

    Example:
        >>> from brickzoo.bag_of_bricks.backbones import backbone_bricks
        >>> backbone = backbone_bricks("timm:resnet10t")
        >>> neck = pan_bricks(backbone, out_channels=32, levels=[2, 3, 4])
        >>> [(f.name, f.channels, f.stride) for f in neck["pan"].feature_levels]
        [('pyramid/level2', 32, 8), ('pyramid/level3', 32, 16), ('pyramid/level4', 32, 32)]
    """
    owner = "pan_bricks"
    selected = _neck_inputs(owner, features, levels, output, out_channels=out_channels, num_blocks=num_blocks)
    inputs = [level for _, level in selected]
    strides = [f.stride for f in inputs]
    if any(coarse != 2 * fine for fine, coarse in itertools.pairwise(strides)):
        described = ", ".join(f"{f.name} (stride {f.stride})" for f in inputs)
        raise BrickDefinitionError(
            f"{owner}: the selected levels {described} must each have twice the stride of the one before "
            "(the bottom-up path goes from one to the next with a stride-2 convolution); select consecutive levels"
        )
    outputs = [FeatureLevel(f"{output}/level{n}", out_channels, f.stride) for n, f in selected]
    module = PathAggregation([f.channels for f in inputs], out_channels, num_blocks=num_blocks)
    return {"pan": BrickNeck(module, inputs=inputs, feature_levels=outputs)}
