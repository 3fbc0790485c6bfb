"""The backbone bricks: images in, one tensor per feature level out, trainable or frozen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from brickzoo._bricks import BrickNotTrainable, BrickTrainable
from brickzoo.bag_of_bricks._features import BrickFeatureLevels, FeatureLevel


class _BackboneBrick(BrickFeatureLevels):
    """The constructor both backbone bricks share; the trainable or frozen base comes next in the MRO."""

    def __init__(
        self,
        model: nn.Module,
        images: str,
        feature_levels: Sequence[FeatureLevel],
        data_config: Mapping[str, Any],
        source_name: str | None = None,
    ) -> None:
        super().__init__(model, input_names=[images], output_names=[f.name for f in feature_levels])
        self._describe_levels(feature_levels, data_config, source_name)


class BrickBackbone(_BackboneBrick, BrickTrainable):
    """A trainable backbone brick: images in, one tensor per feature level out.

    Args:
        model: a module returning a tuple of ``len(feature_levels)`` feature maps.
        images: name of the normalised images it reads.
        feature_levels: what it writes; the names are the output names.
        data_config: ``mean``, ``std`` and ``input_size`` the backbone was (or would be) trained with.
        source_name: the name it was built from (``"timm:resnet10t"``), shown when printing.
    """


class BrickBackboneNotTrainable(_BackboneBrick, BrickNotTrainable):
    """A frozen backbone brick (parameters not trained, always in eval mode); see :class:`BrickBackbone`.

    Gradients still flow through it to earlier bricks, as for any :class:`BrickNotTrainable`.
    """
