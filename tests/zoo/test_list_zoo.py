"""list_zoo(): the registered factories by kind and the backbone names they accept."""

from __future__ import annotations

import re

import timm
import torchvision

import brickzoo.bag_of_bricks.backbones
import brickzoo.bag_of_bricks.necks
import brickzoo.bag_of_bricks.preprocessors  # noqa: F401 - registers the factories listed below
from brickzoo.bag_of_bricks._registry import KINDS, get_factory, list_factories, list_zoo
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
