"""list_zoo(): the registered factories by kind and the backbone names they accept."""

from __future__ import annotations

import doctest
import re
from types import ModuleType
from typing import Any

import pytest
import timm
import torch
import torchvision

import brickzoo.bag_of_bricks.backbones
import brickzoo.bag_of_bricks.necks
import brickzoo.bag_of_bricks.preprocessors
from brickzoo.bag_of_bricks import _features, _registry
from brickzoo.bag_of_bricks._registry import KINDS, get_factory, list_factories, list_zoo, register_factory
from brickzoo.bag_of_bricks.backbones import TORCHVISION_FAMILIES, backbone_bricks
from brickzoo.bag_of_bricks.necks import fpn_bricks
from brickzoo.bag_of_bricks.preprocessors import preprocessor_bricks


def test_factories_grouped_by_kind() -> None:
    zoo = list_zoo()
    assert set(zoo) == {"preprocessors", "backbones", "necks", "heads", "backbone_names"}
    assert all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in zoo.values())
    assert "preprocessor" in zoo["preprocessors"]
    assert "backbone" in zoo["backbones"]
    assert "fpn" in zoo["necks"]
    for kind in KINDS:  # every registered factory appears once, under its kind, in name order
        assert zoo[f"{kind}s"] == [entry.name for entry in list_factories(kind)]
        assert zoo[f"{kind}s"] == sorted(zoo[f"{kind}s"])
    assert get_factory("preprocessor").factory is preprocessor_bricks
    assert get_factory("backbone").factory is backbone_bricks
    assert get_factory("fpn").factory is fpn_bricks
    assert get_factory("fpn").kind == "neck"


def test_backbone_names_list_prefixes_with_valid_examples() -> None:
    names = list_zoo()["backbone_names"]
    assert names[0].startswith("timm:<any timm model supporting features_only>")
    for family in TORCHVISION_FAMILIES:
        assert any(n.startswith(f"torchvision:{family}") for n in names), family
    examples = re.findall(r"\b(timm|torchvision):([a-z0-9_]+)\b", " ".join(names))
    torchvision_models = set(torchvision.models.list_models(module=torchvision.models))
    checked = 0
    for prefix, model in examples:
        if prefix == "timm":
            assert timm.is_model(model), model
        elif model in torchvision_models:  # a concrete example, not a family prefix such as "resnet"
            assert model.startswith(TORCHVISION_FAMILIES), model
        else:
            assert model in TORCHVISION_FAMILIES, model
        checked += 1
    assert checked >= 20


def test_registering_a_name_twice_warns_and_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))  # leave the real registry as it was

    def first(**kwargs: Any) -> dict[str, Any]:
        """The first."""
        return {}

    def second(**kwargs: Any) -> dict[str, Any]:
        """The second."""
        return {}

    register_factory("twice", "neck")(first)
    with pytest.warns(UserWarning, match=r"zoo factory 'twice' is registered twice"):
        register_factory("twice", "neck")(second)
    assert get_factory("twice").factory is second and get_factory("twice").summary == "The second."
    assert list_zoo()["necks"] == ["fpn", "pan", "twice"]


@pytest.mark.parametrize(
    "module",
    [
        brickzoo.bag_of_bricks.backbones,
        brickzoo.bag_of_bricks.preprocessors,
        brickzoo.bag_of_bricks.necks,
        _features,
        _registry,
    ],
    ids=lambda m: m.__name__.rpartition(".")[2],
)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
