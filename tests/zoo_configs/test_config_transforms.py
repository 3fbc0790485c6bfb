"""Zoo configs and data pipelines: data.transforms / data.image_size validated with key paths, per-task
defaults, the splits behind their pipelines, the resolved config, and recipes built without their data."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2

from brickzoo import Stage
from brickzoo.data import ShapesDataset
from brickzoo.data.transforms import TransformedDataset, build_transforms
from brickzoo.errors import ConfigError, DataError, DataWarning
from brickzoo.zoo import build_recipe, validate_config
from brickzoo.zoo._pipelines import size_after

SHAPE_TASKS = {"classification", "segmentation", "detection"}


def shapes_config(**data: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False},
            "heads": {"classify": {"factory": "image_classification"}},
        },
        "data": {"dataset": "shapes", "args": {"image_size": 32}, "train": {"num_samples": 4}, **data},
        "train": {"epochs": 1},
    }


def problems_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, "test.yaml")
    return str(info.value)


def coco_config(root: Path) -> dict[str, Any]:
    return {
        "name": "coco_t",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False, "out_indices": [2, 3, 4]},
            "heads": {"detect": {"factory": "object_detection", "head_channels": 16}},
        },
        "data": {
            "dataset": "coco",
            "train": {"annotation_file": str(root / "annotations.json"), "image_root": str(root / "img")},
            "image_size": [48, 64],
            "batch_size": 2,
        },
    }


def write_coco(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (80, 40), (200, 30, 30)).save(root / "img" / "a.png")
    Image.new("RGB", (30, 60), (30, 200, 30)).save(root / "img" / "b.png")
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 80, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 30, "height": 60},
        ],
        "categories": [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 4, "bbox": [10, 5, 20, 10]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [2, 2, 10, 30]},
        ],
    }
    (root / "annotations.json").write_text(json.dumps(data))


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        (
            {"train": ["horizontal_flip", {"colour_jitter": {"brightness": 0.2}}]},
            "data.transforms.train[1].colour_jitter: unknown transform; did you mean ['color_jitter']?",
        ),
        ({"train": [{"horizontal_flip": {"q": 0.5}}]}, "data.transforms.train[0].horizontal_flip.q: unknown argument"),
        ({"train": [{"horizontal_flip": {"p": 1.5}}]}, "data.transforms.train[0].horizontal_flip: refused by"),
        ({"eval": "letterbox"}, "data.transforms.eval: expected a list of transforms"),
        ({"test": []}, "data.transforms.test: unknown key; expected one of ['eval', 'train']"),
        ({"evl": []}, "data.transforms.evl: unknown key; did you mean ['eval']?"),
        (
            {"train": [{"scale_jitter": {"target_size": 32}}, "horizontal_flip"]},
            "data.transforms.train: leaves the train images at different sizes (scale_jitter ([0]) resizes each "
            "sample differently",
        ),
        (
            {"eval": [{"letterbox": {"size": 32}}, "horizontal_flip"]},
            "data.transforms.eval[1].horizontal_flip: a random transform in the evaluation pipeline",
        ),
    ],
)
def test_each_bad_transform_setting_is_reported_with_its_key_path(transforms: dict, expected: str) -> None:
    config = shapes_config(transforms=transforms, val={"num_samples": 2})
    assert expected in problems_of(config)


def test_a_pipeline_that_fixes_the_size_after_a_random_resize_is_accepted() -> None:
    train = [{"scale_jitter": {"target_size": 32, "scale_range": [0.5, 1.5]}}, {"random_crop": {"size": 32}}]
    validate_config(shapes_config(transforms={"train": [*train, "horizontal_flip"], "eval": []}))


def test_image_size_and_the_eval_pipeline_must_agree() -> None:
    bad = shapes_config(image_size=[32, 48], transforms={"eval": [{"letterbox": {"size": 40}}]}, val={})
    bad["data"]["val"] = {"num_samples": 2}
    message = problems_of(bad)
    assert "data.transforms.eval: leaves the val images at [40, 40], but data.image_size" in message
    assert "data.image_size: expected a positive int or [height, width], got 0" in problems_of(
        shapes_config(image_size=0)
    )


def test_a_default_pipeline_without_any_input_size_is_a_problem_saying_what_to_give(tmp_path: Path) -> None:
    config = coco_config(tmp_path)
    del config["data"]["image_size"]  # COCO images keep their own sizes: nothing tells the model's size
    message = problems_of(config)
    assert "data.image_size: missing; data.transforms.train is not given, so the default pipeline" in message
    assert "give data.image_size (e.g. 320)" in message
    config["data"]["transforms"] = {"train": ["horizontal_flip"], "eval": []}  # explicit: no size needed
    validate_config(config)


def test_every_problem_of_the_data_section_is_reported_at_once() -> None:
    config = shapes_config(image_size="big", transforms={"train": ["flip"], "eval": [{"letterbox": {}}]})
    config["data"]["train"]["num_sample"] = 3
    message = problems_of(config)
    for expected in (
        "4 problems",
        "data.image_size: expected a positive int or [height, width], got 'big'",
        "data.transforms.train[0].flip: unknown transform; expected one of",
        "data.transforms.eval[0].letterbox.size: missing",
        "data.train.num_sample: unknown argument",
    ):
        assert expected in message


# -- the sizes read off the specs --------------------------------------------------------------------
SIZED = st.one_of(
    st.builds(lambda s: {"letterbox": {"size": s}}, st.integers(8, 40)),
    st.builds(lambda h, w: {"resize": {"size": [h, w]}}, st.integers(8, 40), st.integers(8, 40)),
    st.builds(lambda s: {"resize": {"size": s}}, st.integers(8, 40)),
    st.builds(lambda s: {"center_crop": {"size": s}}, st.integers(4, 40)),
    st.builds(
        lambda p: {"pad": {"padding": p}}, st.integers(0, 5) | st.lists(st.integers(0, 5), min_size=4, max_size=4)
    ),
    st.builds(lambda s: {"random_crop": {"size": s, "pad_if_needed": True}}, st.integers(4, 40)),
    st.just("horizontal_flip"),
    st.just({"color_jitter": {"brightness": 0.2}}),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(SIZED, max_size=4), st.integers(8, 48), st.integers(8, 48), st.integers(0, 1000))
def test_the_size_read_off_the_specs_is_the_size_the_pipeline_gives(
    specs: list, height: int, width: int, seed: int
) -> None:
    state, _ = size_after(specs, (height, width))
    torch.manual_seed(seed)
    out = build_transforms(specs)({"images": v2.functional.to_image(torch.rand(3, height, width))})
    assert state == tuple(out["images"].shape[-2:])


def test_random_resizing_varies_and_an_unregistered_transform_is_unknown() -> None:
    assert size_after([{"scale_jitter": {"target_size": 32}}], (32, 32)) == ("varies", "scale_jitter ([0])")
    assert size_after(["horizontal_flip", {"random_zoom_out": {}}, "sanitize_boxes"], (8, 8))[0] == "varies"
    assert size_after([{"random_zoom_out": {}}, {"letterbox": {"size": [20, 30]}}], (8, 8)) == ((20, 30), None)
    assert size_after(["horizontal_flip"], None) == (None, None)  # files of their own sizes: cannot tell


# -- defaults, the input size and the splits' pipelines ----------------------------------------------------
def test_left_out_keys_get_the_defaults_of_the_datasets_tasks_and_empty_lists_mean_nothing() -> None:
    recipe = build_recipe(shapes_config(val={"num_samples": 2}))
    # shapes carry a label that depends on every shape: the defaults never cut one (scale <= 1, pad and place)
    assert recipe.pipelines.specs == {
        "train": [
            {"scale_jitter": {"target_size": [32, 32], "scale_range": [0.6, 1.0]}},
            {"random_crop": {"size": [32, 32], "pad_if_needed": True}},
            "horizontal_flip",
            {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}},
            "sanitize_boxes",
        ],
        "eval": [{"letterbox": {"size": [32, 32]}}],
    }
    assert recipe.input_size == (32, 32) and recipe.resize_mode == "letterbox"
    assert all(isinstance(d, TransformedDataset) for d in recipe.datasets.values())
    plain = build_recipe(shapes_config(transforms={"train": [], "eval": []}, val={"num_samples": 2}))
    assert all(isinstance(d, ShapesDataset) for d in plain.datasets.values())  # nothing in between
    assert plain.resize_mode == "none" and plain.input_size == (32, 32)
    assert torch.equal(plain.datasets["val"][1]["images"], ShapesDataset(2, image_size=32)[1]["images"])


def test_the_input_size_comes_from_image_size_then_the_eval_pipeline_then_the_dataset() -> None:
    given = build_recipe(shapes_config(image_size=[40, 48], transforms={"train": []}))
    assert given.input_size == (40, 48)
    assert given.pipelines.specs["eval"] == [{"letterbox": {"size": [40, 48]}}]
    from_eval = build_recipe(shapes_config(transforms={"eval": [{"resize": {"size": [24, 40]}}]}))
    assert from_eval.input_size == (24, 40) and from_eval.resize_mode == "stretch"
    assert from_eval.pipelines.specs["train"][0] == {
        "scale_jitter": {"target_size": [24, 40], "scale_range": [0.6, 1.0]}
    }
    digits = build_recipe("digits_classification")
    assert digits.input_size == (32, 32) and digits.resize_mode == "stretch"


def test_the_train_split_gets_the_train_pipeline_and_the_val_split_the_eval_pipeline() -> None:
    # 24-px shapes letterboxed to a 48 x 64 model input: scale 2, 8 columns of padding on each side
    config = shapes_config(image_size=[48, 64], val={"num_samples": 3, "seed": 5})
    config["data"]["args"]["image_size"] = 24
    config["data"]["transforms"] = {"train": ["horizontal_flip", {"resize": {"size": [48, 64]}}]}
    recipe = build_recipe(config)
    raw = ShapesDataset(3, image_size=24, seed=5)[2]
    val = recipe.datasets["val"][2]
    assert val["images"].shape == (3, 48, 64) and val["masks"].shape == (48, 64)
    assert torch.allclose(val["boxes"], raw["boxes"] * 2 + torch.tensor([8.0, 0.0, 8.0, 0.0]))
    assert (val["masks"][:, :8] == 255).all() and (val["masks"][:, -8:] == 255).all()  # padding is ignored
    assert int(val["boxes_dropped"]) == 0
    train = recipe.datasets["train"]
    first, second = train[0], train[0]
    assert first["images"].shape == (3, 48, 64) and torch.equal(first["images"], second["images"])
    seen = set()
    for epoch in range(6):  # a fair coin per (index, epoch): both sides show up
        train.set_epoch(epoch)
        seen.add(bool(torch.equal(train[0]["boxes"], first["boxes"])))
    assert seen == {True, False}


def test_an_eval_pipeline_of_one_size_per_image_fails_at_collate_naming_the_sizes(tmp_path: Path) -> None:
    write_coco(tmp_path)
    config = coco_config(tmp_path)
    config["data"]["transforms"] = {"train": [], "eval": []}
    del config["data"]["image_size"]
    recipe = build_recipe(config)
    with pytest.raises(DataError, match=r"cannot stack 'images'.*\[3, 40, 80\], \[3, 60, 30\]"):
        next(iter(recipe.loader("train", shuffle=False)))


# -- the resolved config and recipes without their data ----------------------------------------------------
def test_the_resolved_config_names_everything_the_data_decided_and_rebuilds_the_same_model(tmp_path: Path) -> None:
    recipe = build_recipe(shapes_config(val={"num_samples": 2}))
    resolved = recipe.resolved_config
    (tmp_path / "config.json").write_text(json.dumps(resolved, indent=2))  # what training writes to the run folder
    assert build_recipe(tmp_path / "config.json", with_data=False).resolved_config == resolved
    head = resolved["model"]["heads"]["classify"]
    assert head["num_classes"] == 4 and head["class_names"] == ["circle", "square", "triangle", "star"]
    assert resolved["data"]["transforms"] == recipe.pipelines.specs and resolved["data"]["image_size"] == [32, 32]
    assert "auto" not in json.dumps(resolved)
    again = build_recipe(copy.deepcopy(resolved), with_data=False)
    assert again.datasets == {} and again.class_names == recipe.class_names
    assert again.pipelines == recipe.pipelines and again.resize_mode == "letterbox"
    ours, theirs = recipe.model.state_dict(), again.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    images = again.example_inputs(2)["images"]
    assert images.shape == (2, 3, 32, 32)
    assert again.model({"images": images}, groups=Stage.INFERENCE)["classify/logits"].shape == (2, 4)
    with pytest.raises(ConfigError, match=r"built without its data .*no 'train' loader"):
        again.loader("train")


def test_predict_and_export_need_no_data_once_resolved_and_auto_without_data_says_what_to_give(
    tmp_path: Path,
) -> None:
    write_coco(tmp_path)
    recipe = build_recipe(coco_config(tmp_path))
    assert recipe.class_names == {"detect": ["cat", "dog"]}
    assert recipe.resize_mode == "letterbox" and recipe.input_size == (48, 64)
    (tmp_path / "annotations.json").unlink()  # the training data is gone
    rebuilt = build_recipe(recipe.resolved_config, with_data=False)
    assert rebuilt.class_names == {"detect": ["cat", "dog"]} and rebuilt.input_size == (48, 64)
    outputs = rebuilt.model(rebuilt.example_inputs(1), groups=Stage.INFERENCE)
    assert outputs["detect/boxes"].shape[0] == 1
    with pytest.raises(ConfigError) as info:
        build_recipe(coco_config(tmp_path), with_data=False)
    message = str(info.value)
    assert "model.heads.detect.num_classes: 'auto' needs the detection classes of the training dataset" in message
    assert "annotations.json' does not exist" in message
    assert "give num_classes (and class_names) in the config, or build from the run folder's config.json" in message
    with pytest.raises(DataError, match=r"annotations\.json' does not exist"):  # training needs the data, of course
        build_recipe(coco_config(tmp_path))


def test_without_data_given_numbers_of_classes_build_and_missing_names_are_warned_about(tmp_path: Path) -> None:
    config = coco_config(tmp_path)  # no file at all
    config["model"]["heads"]["detect"]["num_classes"] = 3
    with pytest.warns(DataWarning, match=r"heads \['detect'\] take their class_names from the training data"):
        recipe = build_recipe(config, with_data=False)
    assert recipe.class_names == {} and recipe.resolved_config["model"]["heads"]["detect"]["num_classes"] == 3
    config["model"]["heads"]["detect"]["class_names"] = ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_recipe(config, with_data=False).class_names == {"detect": ["a", "b", "c"]}


# -- the shipped shapes recipes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["shapes_multitask", "shapes_detection", "shapes_segmentation", "shapes_multitask_320"]
)
def test_the_shapes_recipes_augment_without_ever_cutting_a_shape(name: str) -> None:
    recipe = build_recipe(name, ["data.train.num_samples=12"])
    assert recipe.resize_mode == "letterbox"
    train = recipe.datasets["train"]
    assert isinstance(train, TransformedDataset)
    raw = train.dataset
    changed = 0
    for epoch in (1, 2):
        train.set_epoch(epoch)
        for index in range(len(train)):
            sample, original = train[index], raw[index]
            assert int(sample["boxes_dropped"]) == 0
            assert torch.equal(sample["box_labels"], original["box_labels"])  # every shape keeps its box
            assert set(sample["masks"].unique().tolist()) - {255} == set(original["masks"].unique().tolist()) - {255}
            changed += int(not torch.equal(sample["images"], original["images"]))
    assert changed == 2 * len(train)  # colour jitter alone changes every image
