"""timm backbones: any timm model that supports ``features_only=True``.

Channels and strides come from timm's ``feature_info``, read on the full model built on the meta
device (no memory, no weights). A local weight file is checked against that full model with
``load_state_dict`` before timm loads it into the feature extractor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from torch import nn

from brickzoo.bag_of_bricks.backbones._common import (
    BackboneParts,
    PretrainedArg,
    check_levels,
    close_matches,
    describe_levels,
)
from brickzoo.bag_of_bricks.backbones._weights import (
    SUFFIXES,
    check_pretrained_file,
    load_fitting_state_dict,
    offline_message,
    read_state_dict,
)
from brickzoo.errors import BrickDefinitionError, WeightsError, ZooError


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model returning a tuple of feature maps.

    Args:
        model: the model built by ``timm.create_model(..., features_only=True)``.

    Shape:
        images ``[B, 3, H, W]`` in; a tuple of ``[B, C_i, H/s_i, W/s_i]`` out, one per selected level.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(images))


def check_timm_name(name: str, model_name: str) -> None:
    """Raise a ZooError with close matches if timm does not know ``model_name``."""
    if ":" not in model_name and not timm.is_model(model_name):  # "hf-hub:..." names are resolved by timm
        close = close_matches(model_name.split(".")[0], "timm")
        hint = f"did you mean {close}?" if close else "see timm.list_models()"
        raise ZooError(f"unknown timm model {model_name!r} in backbone name {name!r}; {hint}")


def timm_probe(name: str, model_name: str, model_kwargs: Mapping[str, Any]) -> nn.Module:
    """The full timm model built on the meta device (no memory, no weights) to read its feature_info and config."""
    check_timm_name(name, model_name)
    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False, **model_kwargs)
    except Exception as exc:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): timm could not build the model with arguments {dict(model_kwargs)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    """``mean``, ``std`` and ``input_size`` from ``timm.data.resolve_data_config``."""
    config = timm.data.resolve_data_config({}, model=model)
    return {"mean": tuple(config["mean"]), "std": tuple(config["std"]), "input_size": tuple(config["input_size"])}


def timm_backbone(
    name: str,
    model_name: str,
    pretrained: PretrainedArg,
    out_indices: Sequence[int] | None,
    model_kwargs: Mapping[str, Any],
) -> BackboneParts:
    """The ``features_only`` model of ``model_name`` with the levels ``out_indices``, and their description."""
    probe = timm_probe(name, model_name, model_kwargs)
    info = getattr(probe, "feature_info", None)
    if not info:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): timm model {model_name!r} declares no feature_info, so it cannot be built "
            "with features_only=True; pick another model (e.g. 'timm:resnet10t')"
        )
    all_channels = [int(f["num_chs"]) for f in info]
    all_strides = [int(f["reduction"]) for f in info]
    indices = check_levels(name, out_indices, len(info), describe_levels(all_channels, all_strides))
    data_config = timm_data_config(probe)
    kwargs: dict[str, Any] = dict(model_kwargs, features_only=True, out_indices=tuple(indices))
    if pretrained is True:
        model = _with_library_weights(name, model_name, kwargs)
    elif pretrained is False:
        model = _create(name, model_name, kwargs)
    else:
        model = _with_local_weights(name, model_name, pretrained, probe, kwargs)  # the probe is used up
    feature_info: Any = getattr(model, "feature_info", None)
    channels = [int(c) for c in feature_info.channels()]
    strides = [int(s) for s in feature_info.reduction()]
    return BackboneParts(TimmFeatures(model), channels, strides, indices, data_config)


def _create(name: str, model_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    try:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    except Exception as exc:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): timm could not build {model_name!r} with features_only=True: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _with_library_weights(name: str, model_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    how = (
        f"timm.create_model({model_name!r}, pretrained=True) and save its state_dict(), or fetch the "
        "model.safetensors file of its Hugging Face hub repository"
    )
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except Exception as exc:
        raise ZooError(offline_message(f"backbone_bricks({name!r})", name, exc, how)) from exc


def _with_local_weights(
    name: str, model_name: str, pretrained: str | Path, probe: nn.Module, kwargs: Mapping[str, Any]
) -> nn.Module:
    """Check the file against the full model ``probe`` (whose tensors it then holds), then let timm load it.

    timm loads the file into the full model before keeping the feature layers, without the
    classifier and non-strictly; the check makes sure that nothing else is left out.
    """
    owner = f"backbone_bricks({name!r})"
    path = check_pretrained_file(owner, pretrained)
    expected = f"a state dict of the full timm model {model_name!r}: {SUFFIXES}"
    state = read_state_dict(owner, path, expected)
    in_chans = int(kwargs.get("in_chans", 3))
    load_fitting_state_dict(
        owner,
        probe,
        state,
        source=f"the weight file '{path}'",
        target=f"timm model {model_name!r}",
        expected=expected,
        unused=_classifier_prefixes(probe),
        adapted=_adapted_input_convs(probe, state, in_chans),
    )
    arguments = dict(kwargs)
    # source=None: for 'hf-hub:' names timm would otherwise fetch the hub weights instead of the file
    overlay = dict(arguments.pop("pretrained_cfg_overlay", None) or {}, file=str(path), source=None)
    try:
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **arguments)
    except Exception as exc:
        raise WeightsError(
            f"{owner}: timm could not load the weight file '{path}' into {model_name!r}: "
            f"{type(exc).__name__}: {str(exc)[:500]}; expected {expected}"
        ) from exc


def _classifier_prefixes(probe: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the classifier, which a features-only model does not have (``("fc.",)`` for a ResNet)."""
    classifiers = getattr(probe, "pretrained_cfg", {}).get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    return tuple(f"{c}." for c in classifiers)


def _adapted_input_convs(
    probe: nn.Module, state: Mapping[str, torch.Tensor], in_chans: int
) -> dict[str, tuple[int, ...]]:
    """The first convolutions timm adapts to ``in_chans``, with the shape it accepts in the file.

    When ``in_chans`` differs from the channels the weights were trained on (``input_size[0]``),
    timm sums or repeats the first convolution's input channels; the file then holds the original
    shape ``[C_out, C_in * source / in_chans, kH, kW]``.
    """
    config = getattr(probe, "pretrained_cfg", {})
    source = int((config.get("input_size") or (3,))[0])
    convs = config.get("first_conv") or ()
    convs = (convs,) if isinstance(convs, str) else tuple(convs)
    own = probe.state_dict()
    adapted: dict[str, tuple[int, ...]] = {}
    for key in (f"{conv}.weight" for conv in convs):
        weight = own.get(key)
        if in_chans == source or weight is None or weight.ndim != 4 or key not in state:
            continue
        if tuple(state[key].shape) != tuple(weight.shape):  # timm loads a weight of the model's shape unchanged
            out_channels, in_channels, height, width = weight.shape
            adapted[key] = (out_channels, in_channels * source // in_chans, height, width)
    return adapted
