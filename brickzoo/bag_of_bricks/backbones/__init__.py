"""Backbones: feature extractors wrapped as bricks.

:func:`backbone_bricks` builds a multi-level feature extractor from a name routed by prefix:

- ``timm:<model>``: any timm model that supports ``features_only=True``; channels and strides come
  from timm's ``feature_info`` (:mod:`._timm`).
- ``torchvision:<model>``: the resnet/resnext/wide_resnet, convnext, mobilenet_v2/v3,
  efficientnet(_v2) and regnet families, cut into stages at every change of stride
  (:mod:`._torchvision`).
- ``brickzoo:<model>``: brickzoo's own backbones, CSP-Darknet (YOLOv8's backbone) in the sizes
  ``csp_darknet_n/s/m/l/x`` (:mod:`._darknet`); no downloadable weights.

The brick writes one tensor per level under the absolute names ``"<output>/level<i>"`` and
exposes them as :class:`FeatureLevel` (name, channels, stride) so that necks and heads size
themselves. Levels are numbered as timm numbers its ``feature_info``: one level per stride, in
order of increasing stride, ending with the deepest layer at that stride. For a ResNet, level 0 is
the stem at stride 2 and levels 1-4 are ``layer1``-``layer4`` at strides 4-32; for a ConvNeXt
(whose stem has stride 4), levels 0-3 have strides 4-32. timm and torchvision number alike.

Local weight files (``pretrained='/path/weights.pth'``) are read and checked by :mod:`._weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brickzoo._bricks import BrickInterface
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.bag_of_bricks.backbones._bricks import BrickBackbone, BrickBackboneNotTrainable
from brickzoo.bag_of_bricks.backbones._common import PREFIXES, PretrainedArg, split_name
from brickzoo.bag_of_bricks.backbones._darknet import (
    DARKNET_DATA_CONFIG,
    DARKNET_SIZES,
    CSPDarknet,
    check_darknet_name,
    csp_darknet,
    darknet_backbone,
)
from brickzoo.bag_of_bricks.backbones._timm import (
    TimmFeatures,
    check_timm_name,
    timm_backbone,
    timm_data_config,
    timm_probe,
)
from brickzoo.bag_of_bricks.backbones._torchvision import (
    IMAGENET_DATA_CONFIG,
    TORCHVISION_FAMILIES,
    StagedFeatures,
    check_torchvision_name,
    torchvision_backbone,
    torchvision_data_config,
)
from brickzoo.errors import BrickDefinitionError, ZooError

__all__ = [
    "BACKBONE_EXAMPLES",
    "DARKNET_DATA_CONFIG",
    "DARKNET_SIZES",
    "IMAGENET_DATA_CONFIG",
    "PREFIXES",
    "TORCHVISION_FAMILIES",
    "BrickBackbone",
    "BrickBackboneNotTrainable",
    "CSPDarknet",
    "PretrainedArg",
    "StagedFeatures",
    "TimmFeatures",
    "backbone_bricks",
    "backbone_data_config",
    "check_backbone_name",
    "csp_darknet",
]


# per name prefix: the builder of the backbone, and the check of a model name without building it
_BUILDERS = {"timm": timm_backbone, "torchvision": torchvision_backbone, "brickzoo": darknet_backbone}
_NAME_CHECKS = {"timm": check_timm_name, "torchvision": check_torchvision_name, "brickzoo": check_darknet_name}


@register_factory("backbone", "backbone")
def backbone_bricks(
    name: str,
    images: str = "normalized",
    output: str = "features",
    pretrained: PretrainedArg = False,
    out_indices: Sequence[int] | None = None,
    trainable: bool = True,
    **model_kwargs: Any,
) -> dict[str, BrickInterface]:
    """A multi-level backbone from timm or torchvision: ``{"backbone": brick}``.

    The brick reads ``images`` (``[B, 3, H, W]`` normalised images) and writes
    ``"<output>/level<i>"`` (``[B, C_i, H/s_i, W/s_i]``) for each selected level ``i``. It exposes
    ``feature_levels`` (name, channels, stride per level) and ``data_config`` (``mean``, ``std``,
    ``input_size``), which :func:`preprocessor_bricks` reads.

    Args:
        name: ``"timm:<model>"`` (any timm model supporting ``features_only``),
            ``"torchvision:<model>"`` (see :data:`TORCHVISION_FAMILIES`) or ``"brickzoo:<model>"``
            (see :data:`DARKNET_SIZES`).
        images: the name of the tensor it reads.
        output: the prefix of the absolute names it writes (``"features"`` writes ``features/level<i>``).
        pretrained: False for random weights, True for the library's own weights (downloaded and
            cached by timm/torchvision; brickzoo's backbones have none), or the path of a local
            weight file (a state dict of the *full* model, ``.pth``/``.pt``/``.bin`` or
            ``.safetensors``; its classifier may have any number of classes, every other tensor
            must fit).
        out_indices: the levels to write (negative counts from the end), all of them by default.
        trainable: False freezes the backbone (a :class:`BrickBackboneNotTrainable`).
        **model_kwargs: passed to ``timm.create_model`` or the torchvision model builder;
            brickzoo's backbones take ``in_channels``.

    Returns:
        ``{"backbone": BrickBackbone | BrickBackboneNotTrainable}``.

    Raises:
        ZooError: unknown prefix or model (with close matches), or pretrained weights that cannot be fetched.
        BrickDefinitionError: a level that does not exist, or arguments the model does not accept.
        WeightsError: a local weight file that cannot be read or does not fit the model (its
            missing, unexpected and mis-shaped keys are named); a missing file raises
            WeightsNotFoundError, which is also a FileNotFoundError.

    Example:
        >>> bricks = backbone_bricks("timm:resnet10t", out_indices=(2, 3, 4))
        >>> [(f.name, f.channels, f.stride) for f in bricks["backbone"].feature_levels]
        [('features/level2', 128, 8), ('features/level3', 256, 16), ('features/level4', 512, 32)]
    """
    prefix, model_name = split_name(name)
    if not isinstance(pretrained, (bool, str, Path)):
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): pretrained must be True, False or the path of a weight file, "
            f"got {type(pretrained).__name__} {pretrained!r}"
        )
    if not isinstance(output, str) or not output or output.startswith("."):
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): output={output!r} must be an absolute name prefix (the levels are "
            "written as absolute names '<output>/level<i>'); drop the leading './' or '../'"
        )
    parts = _BUILDERS[prefix](name, model_name, pretrained, out_indices, model_kwargs)
    levels = [
        FeatureLevel(name=f"{output}/level{i}", channels=c, stride=s)
        for i, c, s in zip(parts.indices, parts.channels, parts.strides, strict=True)
    ]
    brick_class = BrickBackbone if trainable else BrickBackboneNotTrainable
    brick = brick_class(
        parts.module, images=images, feature_levels=levels, data_config=parts.data_config, source_name=name
    )
    return {"backbone": brick}


# What ``list_zoo()`` shows for this factory: the name prefixes it accepts, with examples.
BACKBONE_EXAMPLES = [
    "timm:<any timm model supporting features_only> (e.g. timm:resnet10t, timm:mobilenetv3_small_050, "
    "timm:convnext_atto, timm:efficientnet_b0)",
    "torchvision:resnet* (e.g. torchvision:resnet18, torchvision:resnet50)",
    "torchvision:resnext* (e.g. torchvision:resnext50_32x4d)",
    "torchvision:wide_resnet* (e.g. torchvision:wide_resnet50_2)",
    "torchvision:convnext* (e.g. torchvision:convnext_tiny)",
    "torchvision:mobilenet_v2",
    "torchvision:mobilenet_v3* (e.g. torchvision:mobilenet_v3_small, torchvision:mobilenet_v3_large)",
    "torchvision:efficientnet* (e.g. torchvision:efficientnet_b0, torchvision:efficientnet_v2_s)",
    "torchvision:regnet* (e.g. torchvision:regnet_x_400mf, torchvision:regnet_y_400mf)",
    "brickzoo:csp_darknet_n/s/m/l/x (YOLOv8's CSP-Darknet backbone; e.g. brickzoo:csp_darknet_n)",
]
backbone_bricks.zoo_examples = BACKBONE_EXAMPLES  # type: ignore[attr-defined]


def backbone_data_config(name: str, **model_kwargs: Any) -> dict[str, Any]:
    """The ``mean``, ``std`` and ``input_size`` of a backbone, without building its weights.

    timm models: ``timm.data.resolve_data_config`` of the model; torchvision models: the
    transforms of their default weights, or ImageNet's statistics if they have none; brickzoo's
    backbones: images in [0, 1] unnormalised, as YOLOv8 (:data:`DARKNET_DATA_CONFIG`).

    Example:
        >>> backbone_data_config("torchvision:resnet18")["mean"]
        (0.485, 0.456, 0.406)
    """
    prefix, model_name = split_name(name)
    if prefix == "timm":
        return timm_data_config(timm_probe(name, model_name, model_kwargs))
    if prefix == "brickzoo":
        check_darknet_name(name, model_name)
        return dict(DARKNET_DATA_CONFIG)
    check_torchvision_name(name, model_name)
    return torchvision_data_config(model_name)


def check_backbone_name(name: str) -> str | None:
    """Why ``name`` is not a backbone name that :func:`backbone_bricks` can build, or None if it is.

    Only the name is checked (prefix, model known to timm/torchvision/brickzoo, supported
    torchvision family); nothing is built. Config validation uses it to report every problem at once.

    Example:
        >>> check_backbone_name("timm:resnet10t") is None
        True
        >>> print(check_backbone_name("tv:resnet18")[:59])
        unknown backbone 'tv:resnet18': expected '<prefix>:<model>'
    """
    try:
        prefix, model_name = split_name(name)
        _NAME_CHECKS[prefix](name, model_name)
    except ZooError as exc:
        return str(exc)
    return None
