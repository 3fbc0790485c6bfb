"""Backbones: feature extractors wrapped as bricks.

:func:`backbone_bricks` builds a multi-level feature extractor from a name routed by prefix:

- ``timm:<model>``: any timm model that supports ``features_only=True``; channels and strides come
  from timm's ``feature_info``.
- ``torchvision:<model>``: the resnet/resnext/wide_resnet, convnext, mobilenet_v2/v3,
  efficientnet(_v2) and regnet families, cut into stages at every change of stride.

The brick writes one tensor per level under the absolute names ``"<features>/level<i>"`` and
exposes them as :class:`FeatureLevel` (name, channels, stride) so that necks and heads size
themselves. Levels are numbered as timm numbers its ``feature_info``: one level per stride, in
order of increasing stride, ending with the deepest layer at that stride. For a ResNet, level 0 is
the stem at stride 2 and levels 1-4 are ``layer1``-``layer4`` at strides 4-32; for a ConvNeXt
(whose stem has stride 4), levels 0-3 have strides 4-32. timm and torchvision number alike.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brickzoo._bricks import BrickInterface, BrickModule, BrickNotTrainable, BrickTrainable, Step
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.bag_of_bricks._registry import register_factory
from brickzoo.errors import BrickDefinitionError, WeightsError, ZooError

IMAGENET_DATA_CONFIG: dict[str, Any] = {
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "input_size": (3, 224, 224),
}

PREFIXES = ("timm", "torchvision")

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

# Size of the zero image used once at construction to measure the strides of torchvision stages.
_PROBE_SIZE = 64

PretrainedArg = bool | str | Path


# -- bricks that write one tensor per feature level --------------------------------------------
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


# -- backbone modules ----------------------------------------------------------------------------
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


# -- the factory --------------------------------------------------------------------------------
@register_factory("backbone", "backbone")
def backbone_bricks(
    name: str,
    images: str = "normalized",
    features: str = "features",
    pretrained: PretrainedArg = False,
    out_indices: Sequence[int] | None = None,
    trainable: bool = True,
    **model_kwargs: Any,
) -> dict[str, BrickInterface]:
    """A multi-level backbone from timm or torchvision: ``{"backbone": brick}``.

    The brick reads ``images`` (``[B, 3, H, W]`` normalised images) and writes
    ``"<features>/level<i>"`` (``[B, C_i, H/s_i, W/s_i]``) for each selected level ``i``. It exposes
    ``feature_levels`` (name, channels, stride per level) and ``data_config`` (``mean``, ``std``,
    ``input_size``), which :func:`preprocessor_bricks` reads.

    Args:
        name: ``"timm:<model>"`` (any timm model supporting ``features_only``) or
            ``"torchvision:<model>"`` (see :data:`TORCHVISION_FAMILIES`).
        images: the name of the tensor it reads.
        features: the prefix of the absolute names it writes.
        pretrained: False for random weights, True for the library's own weights (downloaded and
            cached by timm/torchvision), or the path of a local weight file (a state dict of the
            *full* model, ``.pth``/``.pt``/``.bin`` or ``.safetensors``).
        out_indices: the levels to write (negative counts from the end), all of them by default.
        trainable: False freezes the backbone (a :class:`BrickBackboneNotTrainable`).
        **model_kwargs: passed to ``timm.create_model`` or the torchvision model builder.

    Returns:
        ``{"backbone": BrickBackbone | BrickBackboneNotTrainable}``.

    Raises:
        ZooError: unknown prefix or model (with close matches), or pretrained weights that cannot be fetched.
        BrickDefinitionError: a level that does not exist, or arguments the model does not accept.
        WeightsError: a local weight file that is missing or does not fit the model.

    Example:
        >>> bricks = backbone_bricks("timm:resnet10t", out_indices=(2, 3, 4))
        >>> [(f.name, f.channels, f.stride) for f in bricks["backbone"].feature_levels]
        [('features/level2', 128, 8), ('features/level3', 256, 16), ('features/level4', 512, 32)]
    """
    prefix, model_name = _split_name(name)
    if not isinstance(pretrained, (bool, str, Path)):
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): pretrained must be True, False or the path of a weight file, "
            f"got {type(pretrained).__name__} {pretrained!r}"
        )
    if features.startswith("."):
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): features={features!r} must be an absolute name prefix (the levels are "
            "written as absolute names '<features>/level<i>'); drop the leading './' or '../'"
        )
    if prefix == "timm":
        module, channels, strides, indices, data_config = _timm_backbone(
            name, model_name, pretrained, out_indices, model_kwargs
        )
    else:
        module, channels, strides, indices, data_config = _torchvision_backbone(
            name, model_name, pretrained, out_indices, model_kwargs
        )
    levels = [
        FeatureLevel(name=f"{features}/level{i}", channels=c, stride=s)
        for i, c, s in zip(indices, channels, strides, strict=True)
    ]
    brick_class = BrickBackbone if trainable else BrickBackboneNotTrainable
    brick = brick_class(module, images=images, feature_levels=levels, data_config=data_config, source_name=name)
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
]
backbone_bricks.zoo_examples = BACKBONE_EXAMPLES  # type: ignore[attr-defined]


def backbone_data_config(name: str, **model_kwargs: Any) -> dict[str, Any]:
    """The ``mean``, ``std`` and ``input_size`` of a backbone, without building its weights.

    timm models: ``timm.data.resolve_data_config`` of the model; torchvision models: the
    transforms of their default weights, or ImageNet's statistics if they have none.

    Example:
        >>> backbone_data_config("torchvision:resnet18")["mean"]
        (0.485, 0.456, 0.406)
    """
    prefix, model_name = _split_name(name)
    if prefix == "timm":
        return _timm_data_config(_timm_probe(name, model_name, model_kwargs))
    _check_torchvision_name(name, model_name)
    return _torchvision_data_config(model_name)


def check_backbone_name(name: str) -> str | None:
    """Why ``name`` is not a backbone name that :func:`backbone_bricks` can build, or None if it is.

    Only the name is checked (prefix, model known to timm/torchvision, supported torchvision
    family); nothing is built. Config validation uses it to report every problem at once.

    Example:
        >>> check_backbone_name("timm:resnet10t") is None
        True
        >>> print(check_backbone_name("tv:resnet18")[:59])
        unknown backbone 'tv:resnet18': expected '<prefix>:<model>'
    """
    try:
        prefix, model_name = _split_name(name)
        if prefix == "timm":
            _check_timm_name(name, model_name)
        else:
            _check_torchvision_name(name, model_name)
    except ZooError as exc:
        return str(exc)
    return None


# -- name routing ---------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str]:
    if not isinstance(name, str):
        raise ZooError(f"backbone name must be a string such as 'timm:resnet10t', got {type(name).__name__}")
    prefix, sep, model_name = name.partition(":")
    if sep and prefix in PREFIXES and model_name:
        return prefix, model_name
    guess = model_name if sep else name
    close = _close_matches(guess)
    hint = f"; did you mean {close}?" if close else ""
    raise ZooError(
        f"unknown backbone {name!r}: expected '<prefix>:<model>' with prefix one of {list(PREFIXES)} "
        f"(e.g. 'timm:resnet10t' or 'torchvision:resnet18'){hint}"
    )


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _close_matches(model_name: str, prefix: str | None = None) -> list[str]:
    found: list[str] = []
    if prefix in (None, "timm"):
        found += [f"timm:{n}" for n in difflib.get_close_matches(model_name, _timm_names(), n=4, cutoff=0.6)]
    if prefix in (None, "torchvision"):
        tv = difflib.get_close_matches(model_name, _torchvision_names(), n=4, cutoff=0.6)
        found += [f"torchvision:{n}" for n in tv]
    return found


def _check_levels(name: str, out_indices: Sequence[int] | None, num_levels: int, describe: str) -> list[int]:
    """Normalise ``out_indices`` to sorted non-negative level indices, or raise naming the levels."""
    if out_indices is None:
        return list(range(num_levels))
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    bad = [i for i in out_indices if not isinstance(i, int) or isinstance(i, bool) or not -num_levels <= i < num_levels]
    normalised = sorted({i % num_levels for i in out_indices if i not in bad})
    if bad or not normalised or len(normalised) != len(list(out_indices)):
        problem = f"levels {bad} do not exist" if bad else "levels are empty or repeated"
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): out_indices={list(out_indices)}: {problem}; the available levels are "
            f"{list(range(num_levels))} ({describe}); negative indices count from the end"
        )
    return normalised


def _describe_levels(channels: Sequence[int], strides: Sequence[int]) -> str:
    pairs = zip(channels, strides, strict=True)
    return ", ".join(f"level{i}: {c} channels, stride {s}" for i, (c, s) in enumerate(pairs))


def _check_pretrained_file(name: str, pretrained: str | Path) -> Path:
    path = Path(pretrained)
    if not path.is_file():
        raise WeightsError(
            f"backbone_bricks({name!r}): pretrained={str(pretrained)!r} is not a file; pass True for the "
            "library's own weights, False for random ones, or the path of a saved state dict"
        )
    return path


def _offline_message(name: str, exc: BaseException, how: str) -> str:
    return (
        f"backbone_bricks({name!r}): the pretrained weights could not be fetched ({type(exc).__name__}: "
        f"{str(exc)[:300]}). Without internet access, download them on another machine ({how}) and pass the "
        f"local file instead: backbone_bricks({name!r}, pretrained='/path/to/weights.safetensors' or '.pth')"
    )


# -- timm -------------------------------------------------------------------------------------------
def _check_timm_name(name: str, model_name: str) -> None:
    import timm

    if ":" not in model_name and not timm.is_model(model_name):  # "hf-hub:..." names are resolved by timm
        close = _close_matches(model_name.split(".")[0], "timm")
        hint = f"did you mean {close}?" if close else "see timm.list_models()"
        raise ZooError(f"unknown timm model {model_name!r} in backbone name {name!r}; {hint}")


def _timm_probe(name: str, model_name: str, model_kwargs: Mapping[str, Any]) -> nn.Module:
    """The full timm model built on the meta device (no memory, no weights) to read its feature_info and config."""
    import timm

    _check_timm_name(name, model_name)
    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False, **model_kwargs)
    except Exception as exc:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): timm could not build the model with arguments {dict(model_kwargs)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _timm_data_config(model: nn.Module) -> dict[str, Any]:
    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    return {"mean": tuple(config["mean"]), "std": tuple(config["std"]), "input_size": tuple(config["input_size"])}


def _timm_backbone(
    name: str,
    model_name: str,
    pretrained: PretrainedArg,
    out_indices: Sequence[int] | None,
    model_kwargs: dict[str, Any],
) -> tuple[nn.Module, list[int], list[int], list[int], dict[str, Any]]:
    import timm

    probe = _timm_probe(name, model_name, model_kwargs)
    info = getattr(probe, "feature_info", None)
    if not info:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): timm model {model_name!r} declares no feature_info, so it cannot be built "
            "with features_only=True; pick another model (e.g. 'timm:resnet10t')"
        )
    all_channels = [int(f["num_chs"]) for f in info]
    all_strides = [int(f["reduction"]) for f in info]
    indices = _check_levels(name, out_indices, len(info), _describe_levels(all_channels, all_strides))
    data_config = _timm_data_config(probe)
    kwargs: dict[str, Any] = dict(model_kwargs, features_only=True, out_indices=tuple(indices))
    if pretrained is True:
        how = (
            f"timm.create_model({model_name!r}, pretrained=True) and save its state_dict(), or fetch the "
            "model.safetensors file of its Hugging Face hub repository"
        )
        try:
            model = timm.create_model(model_name, pretrained=True, **kwargs)
        except Exception as exc:
            raise ZooError(_offline_message(name, exc, how)) from exc
    elif isinstance(pretrained, bool):
        model = _timm_create(name, model_name, kwargs)
    else:
        path = _check_pretrained_file(name, pretrained)
        expected = (
            f"expected a state dict of the full timm model {model_name!r} (as saved by "
            "torch.save(model.state_dict(), path) or safetensors)"
        )
        try:
            with _timm_missing_keys() as missing:
                model = timm.create_model(
                    model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
                )
        except Exception as exc:
            raise WeightsError(
                f"backbone_bricks({name!r}): could not load the weight file {str(path)!r} into timm model "
                f"{model_name!r}: {type(exc).__name__}: {str(exc)[:1000]}; {expected}"
            ) from exc
        # timm loads feature models non-strictly (the classifier is dropped): check what it reported missing
        classifiers = getattr(probe, "pretrained_cfg", {}).get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        missing = [k for k in missing if not k.startswith(tuple(f"{c}." for c in classifiers))]
        if missing:
            raise WeightsError(
                f"backbone_bricks({name!r}): the weight file {str(path)!r} does not fit timm model {model_name!r}: "
                f"{len(missing)} of its tensors are missing from the file, e.g. {missing[:5]}; {expected}"
            )
    feature_info: Any = getattr(model, "feature_info", None)
    channels = [int(c) for c in feature_info.channels()]
    strides = [int(s) for s in feature_info.reduction()]
    return TimmFeatures(model), channels, strides, indices, data_config


@contextlib.contextmanager
def _timm_missing_keys() -> Iterator[list[str]]:
    """Collect the missing keys that timm reports (at INFO level) while it loads pretrained weights.

    The logger's level is lowered for the duration, and a filter drops the records that the
    previous level would have dropped, so nothing more reaches the user's handlers.
    """
    logger = logging.getLogger("timm.models._builder")
    keys: list[str] = []
    threshold = logger.getEffectiveLevel()

    def capture(record: logging.LogRecord) -> bool:
        match = re.match(r"Missing keys \((.*)\) discovered", record.getMessage())
        if match:
            keys.extend(k.strip() for k in match.group(1).split(",") if k.strip())
        return record.levelno >= threshold

    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addFilter(capture)
    try:
        yield keys
    finally:
        logger.removeFilter(capture)
        logger.setLevel(previous)


def _timm_create(name: str, model_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    except Exception as exc:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): timm could not build {model_name!r} with features_only=True: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


# -- torchvision --------------------------------------------------------------------------------
def _check_torchvision_name(name: str, model_name: str) -> None:
    names = _torchvision_names()
    if model_name not in names:
        close = _close_matches(model_name, "torchvision")
        hint = f"did you mean {close}?" if close else "see torchvision.models.list_models()"
        raise ZooError(f"unknown torchvision model {model_name!r} in backbone name {name!r}; {hint}")
    if not model_name.startswith(TORCHVISION_FAMILIES):
        raise ZooError(
            f"backbone_bricks({name!r}): torchvision model {model_name!r} is not a supported backbone family; "
            f"supported: {[f + '*' for f in TORCHVISION_FAMILIES]}; timm has most architectures with "
            f"features_only (try 'timm:{model_name.replace('_', '')}' or search timm.list_models())"
        )


def _torchvision_weights(model_name: str) -> Any:
    import torchvision

    try:
        return torchvision.models.get_model_weights(model_name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _torchvision_data_config(model_name: str) -> dict[str, Any]:
    weights = _torchvision_weights(model_name)
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


def _torchvision_atoms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's feature layers as ``(name, module)`` in execution order, pooling and classifier left out."""
    from torchvision.models import ConvNeXt, EfficientNet, MobileNetV2, MobileNetV3, RegNet, ResNet

    if isinstance(model, ResNet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return [(n, getattr(model, n)) for n in names]
    if isinstance(model, RegNet):
        trunk = [(f"trunk_output_{n}", m) for n, m in model.trunk_output.named_children()]
        return [("stem", model.stem), *trunk]
    if isinstance(model, (ConvNeXt, MobileNetV2, MobileNetV3, EfficientNet)):
        return [(f"features_{n}", m) for n, m in model.features.named_children()]
    raise ZooError(f"torchvision model class {type(model).__name__} is not a supported backbone family")


def _torchvision_stages(name: str, model: nn.Module) -> tuple[list[nn.Module], list[int], list[int]]:
    """Cut the model into stages ending at the last layer of each stride, measured on a zero image."""
    atoms = _torchvision_atoms(model)
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


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping) and len(state) <= 4:
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise WeightsError(f"weight file {str(path)!r} holds a {type(state).__name__}, expected a state dict")
    return dict(state)


def _load_into(name: str, model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"backbone_bricks({name!r}): weights from {source} do not fit the model: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"backbone_bricks({name!r}): weights from {source} do not fit the model: "
            f"{len(result.missing_keys)} missing keys {result.missing_keys[:5]}, "
            f"{len(result.unexpected_keys)} unexpected keys {result.unexpected_keys[:5]}; expected a state dict "
            "of the full torchvision model (torch.save(model.state_dict(), path))"
        )


def _torchvision_backbone(
    name: str,
    model_name: str,
    pretrained: PretrainedArg,
    out_indices: Sequence[int] | None,
    model_kwargs: dict[str, Any],
) -> tuple[nn.Module, list[int], list[int], list[int], dict[str, Any]]:
    import torchvision

    _check_torchvision_name(name, model_name)
    try:
        model = torchvision.models.get_model(model_name, weights=None, **model_kwargs)
    except Exception as exc:
        raise BrickDefinitionError(
            f"backbone_bricks({name!r}): torchvision could not build {model_name!r} with arguments "
            f"{model_kwargs}: {type(exc).__name__}: {exc}"
        ) from exc
    if pretrained is True:
        weights = _torchvision_weights(model_name)
        if weights is None:
            raise ZooError(f"backbone_bricks({name!r}): torchvision has no pretrained weights for {model_name!r}")
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise ZooError(_offline_message(name, exc, f"from {weights.url}")) from exc
        _load_into(name, model, state, f"torchvision's {weights}")
    elif not isinstance(pretrained, bool):
        path = _check_pretrained_file(name, pretrained)
        _load_into(name, model, _load_state_dict_file(path), f"the file {str(path)!r}")
    stages, all_channels, all_strides = _torchvision_stages(name, model)
    indices = _check_levels(name, out_indices, len(stages), _describe_levels(all_channels, all_strides))
    module = StagedFeatures(stages, indices)
    channels = [all_channels[i] for i in indices]
    strides = [all_strides[i] for i in indices]
    return module, channels, strides, indices, _torchvision_data_config(model_name)
