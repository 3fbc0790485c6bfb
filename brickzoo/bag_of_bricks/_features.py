"""Feature levels: how a backbone or neck tells what it produces, so that what follows sizes itself.

:class:`FeatureLevel` describes one feature map (name, channels, stride); :class:`BrickFeatureLevels`
is the base of the bricks that write them (backbones and necks); :func:`feature_levels` reads the
``features=`` argument of a neck or head factory, typed :data:`FeaturesArg`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from brickzoo._bricks import BrickInterface, BrickModule, Step
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


class HasFeatureLevels(Protocol):
    """Anything that tells the levels it writes: a backbone or neck brick (:class:`BrickFeatureLevels`)."""

    @property
    def feature_levels(self) -> Sequence[FeatureLevel]: ...


FeaturesArg = str | FeatureLevel | Sequence[FeatureLevel] | HasFeatureLevels | Mapping[str, BrickInterface]
"""What a factory's ``features=`` (its input levels) accepts: a tensor name (with ``in_channels``), one
:class:`FeatureLevel` or a list of them, a brick with ``feature_levels``, or the dict returned by
``backbone_bricks``/``fpn_bricks``."""


class BrickFeatureLevels(BrickModule):
    """Base of bricks whose module returns one tensor per feature level (backbones, necks).

    The module returns a tuple with one ``[B, C_i, H/s_i, W/s_i]`` tensor per entry of
    :attr:`feature_levels`, in order; the brick writes them under the levels' names. With a single
    level the tuple's only tensor is written.

    Attributes:
        feature_levels: name, channels and stride of every tensor written.
    """

    feature_levels: list[FeatureLevel]
    source_name: str | None = None

    def _describe_levels(
        self, feature_levels: Sequence[FeatureLevel], data_config: Mapping[str, Any], source_name: str | None
    ) -> None:
        self.feature_levels = list(feature_levels)
        self.data_config = dict(data_config)
        self.source_name = source_name

    def model_name(self) -> str:
        """The backbone's name (``timm:resnet10t``) when known, else the module's class name."""
        return self.source_name or super().model_name()

    def make_step(self, input_names: tuple[str, ...], output_names: tuple[str, ...], path: str) -> Step:
        if len(output_names) != 1:
            return super().make_step(input_names, output_names, path)
        fn: Callable[..., Any] = self.model
        if not self.calculate_gradients:
            fn = torch.no_grad()(fn)
        (out,) = output_names
        ins = input_names

        def step_single_level(named: dict[str, Any]) -> None:
            named[out] = fn(*[named[n] for n in ins])[0]

        return step_single_level


def feature_levels(
    features: FeaturesArg, in_channels: int | None = None, owner: str = "features"
) -> list[FeatureLevel]:
    """Normalise a ``features=`` argument of a factory to a list of :class:`FeatureLevel`.

    Accepts a tensor name (then ``in_channels`` is required and the stride is unknown, 0), a
    :class:`FeatureLevel`, a list of them, a brick with a ``feature_levels`` attribute, or the
    dict returned by ``backbone_bricks``/``fpn_bricks`` (which holds such a brick).

    Raises:
        BrickDefinitionError: the argument is none of these, or a name comes without ``in_channels``.

    Example:
        >>> feature_levels("features/level4", in_channels=512)
        [FeatureLevel(name='features/level4', channels=512, stride=0)]
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
    # no str comes here, but without `not str` mypy narrows the HasFeatureLevels protocol by Sequence to str
    if (
        isinstance(features, Sequence)
        and not isinstance(features, str)
        and features
        and all(isinstance(f, FeatureLevel) for f in features)
    ):
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

    Example:
        >>> levels = [FeatureLevel("pyramid/level2", 32, 4), FeatureLevel("pyramid/level3", 32, 8)]
        >>> select_levels(levels, [8], owner="detect")
        [FeatureLevel(name='pyramid/level3', channels=32, stride=8)]
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
