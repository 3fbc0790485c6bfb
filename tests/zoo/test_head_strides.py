"""Heads on a subset of the feature levels: the ``strides=`` argument of the zoo's heads."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brickzoo import BrickCollection
from brickzoo.bag_of_bricks._features import FeatureLevel, select_levels
from brickzoo.bag_of_bricks.image_classification import image_classification_bricks
from brickzoo.bag_of_bricks.object_detection import object_detection_bricks
from brickzoo.bag_of_bricks.semantic_segmentation import semantic_segmentation_bricks
from brickzoo.errors import BrickDefinitionError, ConfigError
from brickzoo.zoo import build_recipe

LEVELS = [FeatureLevel(f"features/level{i}", channels=8 * i, stride=2**i) for i in (2, 3, 4, 5)]
STRIDES = [level.stride for level in LEVELS]


def features(batch: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    named = {
        level.name: torch.randn(batch, level.channels, size // level.stride, size // level.stride) for level in LEVELS
    }
    return {"images": torch.rand(batch, 3, size, size), **named}


@given(st.lists(st.sampled_from(STRIDES), min_size=1, max_size=4, unique=True))
@settings(max_examples=30, deadline=None)
def test_select_levels_keeps_the_asked_strides_in_level_order(strides: list[int]) -> None:
    kept = select_levels(LEVELS, strides, owner="test")
    assert [level.stride for level in kept] == sorted(strides)  # LEVELS are finest first
    assert all(level in LEVELS for level in kept)


def test_select_levels_without_strides_keeps_everything() -> None:
    assert select_levels(LEVELS, None, owner="test") == LEVELS


@pytest.mark.parametrize(
    ("strides", "expected"),
    [
        ([], "non-empty list"),
        (8, "non-empty list"),
        ("8", "non-empty list"),
        ([8, 8], "repeats 8"),
        ([8, "16"], "positive integers, got '16'"),
        ([True], "positive integers, got True"),
        ([0], "positive integers, got 0"),
        ([8, 64], "strides [64]"),
    ],
)
def test_select_levels_refuses_bad_strides(strides: Any, expected: str) -> None:
    with pytest.raises(BrickDefinitionError) as error:
        select_levels(LEVELS, strides, owner="some_head")
    message = str(error.value)
    assert message.startswith("some_head: ")
    assert expected in message
    assert "4 (features/level2)" in message or "repeats" in message  # what is available


def test_detection_on_coarser_levels_equals_a_head_given_those_levels() -> None:
    """strides=[8, 16, 32] builds exactly the head that is given only those three levels."""
    torch.manual_seed(0)
    selected = BrickCollection({"detect": object_detection_bricks(3, LEVELS, strides=[8, 16, 32])})
    torch.manual_seed(0)
    reference = BrickCollection({"detect": object_detection_bricks(3, LEVELS[1:])})
    assert selected["detect"]["head"].input_names == [level.name for level in LEVELS[1:]]
    assert selected.state_dict().keys() == reference.state_dict().keys()
    named = features()
    ours = selected(named, groups="MODEL")
    theirs = reference(named, groups="MODEL")
    locations = sum((64 // stride) ** 2 for stride in (8, 16, 32))  # 64 + 16 + 4
    assert ours["detect/cls_logits"].shape == (2, locations, 3)
    for name in ("detect/cls_logits", "detect/box_regression", "detect/boxes", "detect/scores", "detect/labels"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0)


def test_detection_loss_gives_small_objects_to_the_finest_kept_level() -> None:
    """Without stride 4, the stride-8 level takes a 10 px object: its loss has positive locations."""
    model = BrickCollection({"detect": object_detection_bricks(2, LEVELS, strides=[8, 16, 32])})
    named = features(batch=1)
    named["boxes"] = torch.tensor([[[20.0, 20.0, 30.0, 30.0]]])
    named["box_labels"] = torch.tensor([[1]])
    outputs = model(named, groups={"MODEL", "LOSS"})
    assert outputs["detect/loss_box"].item() > 0  # box and centerness losses only count positives
    assert outputs["detect/loss_ctr"].item() > 0


def test_segmentation_decodes_only_the_asked_levels() -> None:
    torch.manual_seed(0)
    selected = BrickCollection({"segment": semantic_segmentation_bricks(4, LEVELS, strides=[32, 8])})
    torch.manual_seed(0)
    reference = BrickCollection({"segment": semantic_segmentation_bricks(4, [LEVELS[1], LEVELS[3]])})
    assert selected["segment"]["decode"].input_names == ["images", "features/level3", "features/level5"]
    named = features()
    torch.testing.assert_close(
        selected(named, groups="MODEL")["segment/logits"], reference(named, groups="MODEL")["segment/logits"]
    )


def test_classification_pools_the_deepest_asked_level() -> None:
    default = image_classification_bricks(3, LEVELS)
    assert default["classify"].input_names == ["features/level5"]
    fine = image_classification_bricks(3, LEVELS, strides=[4, 8])
    assert fine["classify"].input_names == ["features/level3"]
    assert fine["classify"].model.in_channels == 24


def test_heads_refuse_strides_the_features_lack() -> None:
    for factory, args in (
        (image_classification_bricks, {}),
        (semantic_segmentation_bricks, {}),
        (object_detection_bricks, {}),
    ):
        with pytest.raises(BrickDefinitionError, match=r"strides \[2\] .* available strides: 4 \(features/level2\)"):
            factory(3, LEVELS, strides=[2, 8], **args)  # type: ignore[operator]


def test_shipped_detection_heads_match_so_multitask_weights_fine_tune_the_detector() -> None:
    """The README's fine-tuning command loads shapes_multitask weights into shapes_detection."""
    small = ["data.train.num_samples=4", "data.val.num_samples=4"]
    multitask = build_recipe("shapes_multitask", small).model.state_dict()
    detection = build_recipe("shapes_detection", small).model.state_dict()
    assert set(detection) <= set(multitask)
    assert all(detection[name].shape == multitask[name].shape for name in detection)
    assert multitask["detect.head.model.cls_logits.weight"].shape[1] == 32  # head_channels: 32


def test_config_names_the_head_whose_strides_are_wrong() -> None:
    with pytest.raises(ConfigError) as error:
        build_recipe("shapes_multitask", ["model.heads.detect.strides=[2, 8]", "data.train.num_samples=4"])
    message = str(error.value)
    assert message.startswith("model.heads.detect: object_detection_bricks: strides [2]")
    assert "available strides: 4 (pyramid/level1), 8 (pyramid/level2)" in message
