"""torchvision backbones: classification models cut into stages at every change of stride.

Supported families: resnet/resnext/wide_resnet, convnext, mobilenet_v2/v3, efficientnet(_v2) and
regnet. The strides are measured once on a zero image; the pooling and classifier are left out.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torchvision
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.models import ConvNeXt, EfficientNet, MobileNetV2, MobileNetV3, RegNet, ResNet

from brickzoo.bag_of_bricks.backbones._common import (
    BackboneParts,
    PretrainedArg,
    check_levels,
    close_matches,
    describe_levels,
    torchvision_names,
)
from brickzoo.bag_of_bricks.backbones._weights import (
    SUFFIXES,
    check_pretrained_file,
    load_fitting_state_dict,
    offline_message,
    read_state_dict,
)
from brickzoo.errors import BrickDefinitionError, ZooError

# Name prefixes of the torchvision classification models that backbone_bricks can cut into stages.
TORCHVISION_FAMILIES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "convnext",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "regnet",
)

# The data config of models without torchvision weights: ImageNet's statistics at 224 x 224.
IMAGENET_DATA_CONFIG: dict[str, Any] = {
    "mean": tuple(IMAGENET_DEFAULT_MEAN),
    "std": tuple(IMAGENET_DEFAULT_STD),
    "input_size": (3, 224, 224),
}

# Size of the zero image used once at construction to measure the strides of torchvision stages.
_PROBE_SIZE = 64


class StagedFeatures(nn.Module):
    """A chain of stages run one after the other; the output of each selected stage is returned.

    Args:
        stages: the stages in execution order; stage ``i`` ends where level ``i`` is read.
        out_indices: the stages whose outputs are returned (increasing); stages after the last
            one are not kept.

    Shape:
        images ``[B, 3, H, W]`` in; a tuple of ``[B, C_i, H/s_i, W/s_i]`` out, one per ``out_indices`` entry.
    """

    def __init__(self, stages: Sequence[nn.Module], out_indices: Sequence[int]) -> None:
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.stages = nn.ModuleList(stages[: max(self.out_indices) + 1])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs: list[torch.Tensor] = []
        x = images
        for i, stage in enumerate(self.stages):
            x = stage(x)  # [B, C_i, H/s_i, W/s_i]
            if i in self.out_indices:
                outputs.append(x)
        return tuple(outputs)


def check_torchvision_name(name: str, model_name: str) -> None:
    """Raise a ZooError if ``model_name`` is not a torchvision model of a supported family."""
    if model_name not in torchvision_names():
        close = close_matches(model_name, "torchvision")
        hint = f"did you mean {close}?" if close else "see torchvision.models.list_models()"
        raise ZooError(f"unknown torchvision model {model_name!r} in backbone name {name!r}; {hint}")
    if not model_name.startswith(TORCHVISION_FAMILIES):
        raise ZooError(
            f"backbone_bricks({name!r}): torchvision model {model_name!r} is not a supported backbone family; "
            f"supported: {[f + '*' for f in TORCHVISION_FAMILIES]}; timm has most architectures with "
            f"features_only (try 'timm:{model_name.replace('_', '')}' or search timm.list_models())"
        )


def _default_weights(model_name: str) -> Any:
    try:
        return torchvision.models.get_model_weights(model_name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def torchvision_data_config(model_name: str) -> dict[str, Any]:
    """``mean``, ``std`` and ``input_size`` of the model's default weights, or ImageNet's without weights."""
    weights = _default_weights(model_name)
    if weights is None:
        return dict(IMAGENET_DATA_CONFIG)
    transforms = weights.transforms()
    crop = list(transforms.crop_size)
    height, width = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    return {
        "mean": tuple(float(m) for m in transforms.mean),
        "std": tuple(float(s) for s in transforms.std),
        "input_size": (3, int(height), int(width)),
    }


def _atoms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's feature layers as ``(name, module)`` in execution order, pooling and classifier left out."""
    if isinstance(model, ResNet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return [(n, getattr(model, n)) for n in names]
    if isinstance(model, RegNet):
        trunk = [(f"trunk_output_{n}", m) for n, m in model.trunk_output.named_children()]
        return [("stem", model.stem), *trunk]
    if isinstance(model, (ConvNeXt, MobileNetV2, MobileNetV3, EfficientNet)):
        return [(f"features_{n}", m) for n, m in model.features.named_children()]
    raise ZooError(f"torchvision model class {type(model).__name__} is not a supported backbone family")


def _unused_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the top-level parts no stage uses (pooling, classifier): ``("avgpool.", "fc.")`` for a ResNet."""
    used = {id(t) for _, atom in _atoms(model) for t in itertools.chain(atom.parameters(), atom.buffers())}
    return tuple(
        f"{name}."
        for name, child in model.named_children()
        if not any(id(t) in used for t in itertools.chain(child.parameters(), child.buffers()))
    )


def _stages(model: nn.Module) -> tuple[list[nn.Module], list[int], list[int]]:
    """Cut the model into stages ending at the last layer of each stride, measured on a zero image."""
    atoms = _atoms(model)
    strides: list[int] = []
    channels: list[int] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)
        for _, module in atoms:
            x = module(x)  # [1, C, 64/s, 64/s]
            strides.append(_PROBE_SIZE // int(x.shape[-1]))
            channels.append(int(x.shape[1]))
    model.train(was_training)
    ends = [i for i in range(len(atoms)) if i == len(atoms) - 1 or strides[i + 1] != strides[i]]
    stages: list[nn.Module] = []
    start = 0
    for end in ends:
        stages.append(nn.Sequential(OrderedDict(atoms[start : end + 1])))
        start = end + 1
    return stages, [channels[e] for e in ends], [strides[e] for e in ends]


def _load_weights(name: str, model_name: str, model: nn.Module, pretrained: PretrainedArg) -> None:
    """Load torchvision's weights (``True``) or a local file into the full model; they must fit its stages."""
    owner = f"backbone_bricks({name!r})"
    expected = f"a state dict of the full torchvision model {model_name!r}: {SUFFIXES}"
    if isinstance(pretrained, bool):  # True; False loads nothing and never comes here
        weights = _default_weights(model_name)
        if weights is None:
            raise ZooError(f"{owner}: torchvision has no pretrained weights for {model_name!r}")
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise ZooError(offline_message(owner, name, exc, f"from {weights.url}")) from exc
        source = f"torchvision's {weights}"
    else:
        path = check_pretrained_file(owner, pretrained)
        state = read_state_dict(owner, path, expected)
        source = f"the weight file '{path}'"
    load_fitting_state_dict(
        owner,
        model,
        state,
        source=source,
        target=f"torchvision model {model_name!r}",
        expected=expected,
        unused=_unused_prefixes(model),
    )


def torchvision_backbone(
    name: str,
    model_name: str,
    pretrained: PretrainedArg,
    out_indices: Sequence[int] | None,
    model_kwargs: Mapping[str, Any],
) -> BackboneParts:
    """The stages of ``model_name`` up to the last of ``out_indices``, and the description of the levels."""
    check_torchvision_name(name, model_name)
    try:
        model = torchvision.models.get_model(model_name, weights=None, **model_kwargs)
    except Exception as exc:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): torchvision could not build {model_name!r} with arguments "
            f"{dict(model_kwargs)}: {type(exc).__name__}: {exc}"
        ) from exc
    if pretrained is not False:
        _load_weights(name, model_name, model, pretrained)
    stages, all_channels, all_strides = _stages(model)
    indices = check_levels(name, out_indices, len(stages), describe_levels(all_channels, all_strides))
    module = StagedFeatures(stages, indices)
    channels = [all_channels[i] for i in indices]
    strides = [all_strides[i] for i in indices]
    return BackboneParts(module, channels, strides, indices, torchvision_data_config(model_name))
