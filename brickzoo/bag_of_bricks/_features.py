"""Feature levels: how a backbone or neck tells what it produces, so that what follows sizes itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from brickzoo.errors import BrickDefinitionError


@dataclass(frozen=True)
class FeatureLevel:
    """One feature map written by a backbone or neck.

    Attributes:
        name: the absolute tensor name it is written under (e.g. ``"features/level3"``).
        channels: its number of channels.
        stride: how many input pixels one feature pixel spans (4, 8, 16, 32...).
    """

    name: str
    channels: int
    stride: int


FeaturesArg = str | FeatureLevel | Sequence[FeatureLevel] | Mapping[str, Any] | Any


def feature_levels(
    features: FeaturesArg, in_channels: int | None = None, owner: str = "features"
) -> list[FeatureLevel]:
    """Normalise a ``features=`` argument of a factory to a list of :class:`FeatureLevel`.

    Accepts a tensor name (then ``in_channels`` is required and the stride is unknown, 0), a
    :class:`FeatureLevel`, a list of them, a brick with a ``feature_levels`` attribute, or the
    dict returned by ``backbone_bricks``/``fpn_bricks`` (which holds such a brick).

    Raises:
        BrickDefinitionError: the argument is none of these, or a name comes without ``in_channels``.
    """
    if isinstance(features, str):
        if in_channels is None:
            raise BrickDefinitionError(
                f"{owner}: features={features!r} is a tensor name, so in_channels is needed; "
                "or pass the backbone/neck bricks (or their feature_levels) to size the head automatically"
            )
        return [FeatureLevel(name=features, channels=int(in_channels), stride=0)]
    if isinstance(features, FeatureLevel):
        return [features]
    levels = getattr(features, "feature_levels", None)
    if levels is not None:
        return list(levels)
    if isinstance(features, Mapping):
        found: list[Sequence[FeatureLevel]] = [
            levels for v in features.values() if (levels := getattr(v, "feature_levels", None)) is not None
        ]
        if len(found) == 1:
            return list(found[0])
        raise BrickDefinitionError(
            f"{owner}: expected a dict holding one brick with feature_levels (from backbone_bricks or fpn_bricks), "
            f"got a dict with keys {sorted(features)} and {len(found)} such bricks"
        )
    if isinstance(features, Sequence) and features and all(isinstance(f, FeatureLevel) for f in features):
        return list(features)
    raise BrickDefinitionError(
        f"{owner}: features must be a tensor name, a FeatureLevel, a list of them or the bricks of "
        f"backbone_bricks/fpn_bricks; got {type(features).__name__}"
    )


def select_levels(levels: Sequence[FeatureLevel], strides: Sequence[int] | None, owner: str) -> list[FeatureLevel]:
    """Keep the levels whose stride is in ``strides`` (all of them when ``strides`` is None).

    The levels keep their given order. Heads take this as their ``strides=`` argument, so that a
    recipe can, for example, detect on strides 8-32 of a neck that also writes stride 4 for
    segmentation.

    Raises:
        BrickDefinitionError: ``strides`` is empty, repeats a stride, holds something other than a
            positive integer, or asks for a stride the levels do not have (or do not know).
    """
    if strides is None:
        return list(levels)
    available = ", ".join(f"{level.stride} ({level.name})" for level in levels)
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or not strides:
        raise BrickDefinitionError(
            f"{owner}: strides must be a non-empty list of feature strides such as [8, 16, 32], got {strides!r}; "
            f"available strides: {available}"
        )
    wanted: list[int] = []
    for stride in strides:
        if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
            raise BrickDefinitionError(
                f"{owner}: strides must hold positive integers, got {stride!r} in {list(strides)}; "
                f"available strides: {available}"
            )
        if stride in wanted:
            raise BrickDefinitionError(f"{owner}: strides repeats {stride} in {list(strides)}; give each stride once")
        wanted.append(stride)
    have = {level.stride for level in levels}
    missing = [stride for stride in wanted if stride not in have]
    if missing:
        raise BrickDefinitionError(
            f"{owner}: strides {missing} asked for in strides={list(strides)} are not among the feature levels; "
            f"available strides: {available}"
        )
    return [level for level in levels if level.stride in wanted]
