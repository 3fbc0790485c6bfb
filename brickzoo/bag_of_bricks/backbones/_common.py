"""What the timm and torchvision builders share: name routing, close matches, level selection."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torchvision
from torch import nn

from brickzoo.errors import BrickDefinitionError, ZooError

PREFIXES = ("timm", "torchvision", "brickzoo")

PretrainedArg = bool | str | Path


class BackboneParts(NamedTuple):
    """What a builder hands to :func:`backbone_bricks`: the module and a description of the levels it returns."""

    module: nn.Module  # returns a tuple with one [B, C_i, H/s_i, W/s_i] tensor per selected level
    channels: list[int]
    strides: list[int]
    indices: list[int]  # the level numbers, increasing
    data_config: dict[str, Any]  # mean, std, input_size


def split_name(name: str) -> tuple[str, str]:
    """``"timm:resnet10t"`` -> ``("timm", "resnet10t")``; an unknown prefix raises with close matches."""
    if not isinstance(name, str):
        raise ZooError(f"backbone name must be a string such as 'timm:resnet10t', got {type(name).__name__}")
    prefix, sep, model_name = name.partition(":")
    if sep and prefix in PREFIXES and model_name:
        return prefix, model_name
    guess = model_name if sep else name
    close = close_matches(guess)
    hint = f"; did you mean {close}?" if close else ""
    raise ZooError(
        f"unknown backbone {name!r}: expected '<prefix>:<model>' with prefix one of {list(PREFIXES)} "
        f"(e.g. 'timm:resnet10t', 'torchvision:resnet18' or 'brickzoo:csp_darknet_n'){hint}"
    )


def torchvision_names() -> list[str]:
    """The classification models of ``torchvision.models``."""
    return list(torchvision.models.list_models(module=torchvision.models))


def close_matches(model_name: str, prefix: str | None = None) -> list[str]:
    """Prefixed backbone names close to ``model_name``, from timm, torchvision, brickzoo or all (``prefix=None``)."""
    found: list[str] = []
    if prefix in (None, "timm"):
        timm_models = list(timm.list_models())
        found += [f"timm:{n}" for n in difflib.get_close_matches(model_name, timm_models, n=4, cutoff=0.6)]
    if prefix in (None, "torchvision"):
        tv = difflib.get_close_matches(model_name, torchvision_names(), n=4, cutoff=0.6)
        found += [f"torchvision:{n}" for n in tv]
    if prefix in (None, "brickzoo"):
        from brickzoo.bag_of_bricks.backbones._darknet import DARKNET_SIZES  # imports this module

        found += [f"brickzoo:{n}" for n in difflib.get_close_matches(model_name, DARKNET_SIZES, n=4, cutoff=0.6)]
    return found


def check_levels(name: str, out_indices: Sequence[int] | None, num_levels: int, describe: str) -> list[int]:
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


def describe_levels(channels: Sequence[int], strides: Sequence[int]) -> str:
    """``"level0: 64 channels, stride 2, level1: ..."`` for error messages."""
    pairs = zip(channels, strides, strict=True)
    return ", ".join(f"level{i}: {c} channels, stride {s}" for i, (c, s) in enumerate(pairs))
