"""Necks: modules between a backbone and the heads that remix its feature levels.

:func:`fpn_bricks` builds a feature pyramid network (``torchvision.ops.FeaturePyramidNetwork``)
over any subset of a backbone's levels. Heads read its ``feature_levels`` like a backbone's.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from brickzoo._bricks import BrickInterface, BrickTrainable
from brickzoo.bag_of_bricks._features import BrickFeatureLevels, FeatureLevel, FeaturesArg, feature_levels
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.errors import BrickDefinitionError

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


def _select_levels(available: list[FeatureLevel], levels: Sequence[int | str] | None) -> list[tuple[int, FeatureLevel]]:
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
            f"fpn_bricks: levels={list(levels)}: {problem}; the available levels are {described}; "
            "select them by number or by name"
        )
    return [pair for pair in numbered if pair in chosen]


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
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels <= 0:
        raise BrickDefinitionError(f"fpn_bricks: out_channels must be a positive int, got {out_channels!r}")
    if output.startswith("."):
        raise BrickDefinitionError(
            f"fpn_bricks: output={output!r} must be an absolute name prefix (the levels are written as "
            "'<output>/level<i>'); drop the leading './' or '../'"
        )
    selected = _select_levels(feature_levels(features, owner="fpn_bricks"), levels)
    inputs = [level for _, level in selected]
    bad = [f.name for f in inputs if f.channels <= 0]
    if bad:
        raise BrickDefinitionError(f"fpn_bricks: levels {bad} declare no channel count; expected channels > 0")
    outputs = [FeatureLevel(f"{output}/level{n}", out_channels, f.stride) for n, f in selected]
    if extra_blocks:
        last_number, last = selected[-1]
        outputs.append(FeatureLevel(f"{output}/level{last_number + 1}", out_channels, last.stride * 2))
    module = FeaturePyramid([f.channels for f in inputs], out_channels, extra_blocks=extra_blocks)
    return {"fpn": BrickNeck(module, inputs=inputs, feature_levels=outputs)}
