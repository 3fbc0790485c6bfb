"""The transform registry: spec lists validated with key paths, every entry built and run, per-task defaults."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml

from brickzoo.data import ShapesDataset
from brickzoo.data.transforms import (
    apply_transforms,
    build_transforms,
    check_transforms,
    create_transform,
    default_transform_specs,
    list_transforms,
    register_transform,
    transform_entry,
)
from brickzoo.errors import ConfigError, DataError, ZooError
from brickzoo.zoo._validate import Problems

# the fewest arguments each registered transform needs (the others build with no arguments)
REQUIRED: dict[str, dict[str, Any]] = {
    "letterbox": {"size": 40},
    "resize": {"size": [40, 40]},
    "random_resized_crop": {"size": 40},
    "scale_jitter": {"target_size": 40},
    "random_resize": {"min_size": 30, "max_size": 50},
    "random_crop": {"size": 24},
    "center_crop": {"size": 24},
    "pad": {"padding": 3},
    "gaussian_blur": {"kernel_size": 3},
}
SHAPES_TASKS = ["classification", "segmentation", "detection"]


def test_yaml_spec_list_builds_the_pipeline_in_order() -> None:
    specs = yaml.safe_load("[{letterbox: {size: 320}}, horizontal_flip, {color_jitter: {brightness: 0.2}}]")
    pipeline = build_transforms(specs)
    assert [type(t).__name__ for t in pipeline.transforms] == ["Letterbox", "RandomHorizontalFlip", "ColorJitter"]
    assert pipeline.transforms[2].brightness == (0.8, 1.2)


def test_every_problem_is_reported_with_its_key_path() -> None:
    specs = [
        {"letterbox": {"size": 320}},
        "horizontl_flip",
        {"color_jitter": {"brightnes": 0.2}},
        {"horizontal_flip": {"p": 1.5}},
        {"random_crop": {}},
        {"resize": {"size": "big"}},
        42,
        {"a": 1, "b": 2},
        {"color_jitter": [0.2]},
        {"random_resized_crop": {"size": 8, "scale": [1.0, 0.5]}},
    ]
    problems = Problems("recipe.yaml")
    check_transforms(problems, "data.transforms.train", specs)
    path = "data.transforms.train"
    assert problems.items == [
        (f"{path}[1].horizontl_flip", "unknown transform; did you mean ['horizontal_flip']?"),
        (f"{path}[2].color_jitter.brightnes", "unknown argument of color_jitter; did you mean ['brightness']?"),
        (
            f"{path}[3].horizontal_flip",
            "refused by horizontal_flip: `p` should be a floating point value in the interval [0.0, 1.0].",
        ),
        (f"{path}[4].random_crop.size", "missing; random_crop needs it"),
        (f"{path}[5].resize.size", "expected int | list[int], got str 'big'"),
        (f"{path}[6]", "expected a transform name or {name: {arguments}} with one key, got 42"),
        (f"{path}[7]", "expected a transform name or {name: {arguments}} with one key, got {'a': 1, 'b': 2}"),
        (f"{path}[8].color_jitter", "expected a mapping of arguments, got list [0.2]"),
        (
            f"{path}[9].random_resized_crop",
            "refused by random_resized_crop: random_resized_crop: scale must be [min, max] with 0.0 <= min <= max, "
            "got [1.0, 0.5]",
        ),
    ]
    with pytest.raises(ConfigError, match=r"recipe\.yaml: 9 problems in the config") as raised:
        build_transforms(specs, path=path, origin="recipe.yaml")
    assert all(f"{where}: {message}" in str(raised.value) for where, message in problems.items)


def test_a_spec_that_is_not_a_list_is_one_problem() -> None:
    problems = Problems("recipe.yaml")
    check_transforms(problems, "data.transforms.eval", {"letterbox": {"size": 32}})
    assert problems.items == [
        (
            "data.transforms.eval",
            "expected a list of transforms (names or {name: {arguments}}), got {'letterbox': {'size': 32}}",
        )
    ]


def test_an_empty_list_is_the_identity() -> None:
    sample = {"images": torch.rand(3, 5, 7)}
    assert torch.equal(apply_transforms(build_transforms([]), sample)["images"], sample["images"])


@pytest.mark.parametrize("name", list_transforms())
def test_every_registered_transform_keeps_the_sample_contract(name: str) -> None:
    dataset = ShapesDataset(2, image_size=32, max_shapes=4)
    pipeline = build_transforms([{name: REQUIRED.get(name, {})}])
    for index in range(len(dataset)):
        before = dataset[index]
        out = apply_transforms(pipeline, before, seed=index)
        height, width = out["images"].shape[-2:]
        assert out["images"].dtype == torch.float32 and out["images"].shape[0] == 3
        assert float(out["images"].min()) >= 0.0 and float(out["images"].max()) <= 1.0
        assert out["masks"].dtype == torch.int64 and out["masks"].shape == (height, width)
        assert set(out["masks"].unique().tolist()) <= {0, 1, 2, 3, 4, 255}
        boxes = out["boxes"]
        assert boxes.dtype == torch.float32 and len(boxes) == len(out["box_labels"])
        assert torch.all(boxes[:, 2:] - boxes[:, :2] >= 1.0)
        assert torch.all(boxes >= 0) and torch.all(boxes[:, [0, 2]] <= width) and torch.all(boxes[:, [1, 3]] <= height)
        assert int(out["boxes_dropped"]) == len(before["boxes"]) - len(boxes)
        assert torch.equal(out["labels"], before["labels"])


def test_registry_refuses_duplicates_and_suggests_names() -> None:
    with pytest.raises(ZooError, match="'letterbox' is already registered"):
        register_transform("letterbox", lambda: torch.nn.Identity())
    with pytest.raises(ZooError, match=r"unknown transform 'letterbx'; did you mean \['letterbox'\]"):
        create_transform("letterbx")
    with pytest.raises(ConfigError, match=r"\[0\]\.horizontal_flip\.q: unknown argument"):
        create_transform("horizontal_flip", q=0.5)
    assert repr(create_transform("horizontal_flip", p=1.0)) == "RandomHorizontalFlip(p=1.0)"


def test_crops_are_marked() -> None:
    assert list_transforms(crops=True) == ["center_crop", "random_crop", "random_iou_crop", "random_resized_crop"]
    assert not transform_entry("letterbox").crops and not transform_entry("random_zoom_out").crops


def test_scale_jitter_reads_target_size_as_height_width() -> None:
    sample = {"images": torch.rand(3, 100, 100)}
    out = apply_transforms(
        build_transforms([{"scale_jitter": {"target_size": [20, 60], "scale_range": [1.0, 1.0]}}]), sample
    )
    assert out["images"].shape == (3, 20, 20)  # fits into 20 rows x 60 columns: limited by the height


@pytest.mark.parametrize(
    "tasks", [["classification"], ["detection"], ["segmentation"], ["segmentation", "detection"], SHAPES_TASKS]
)
@pytest.mark.parametrize("train", [True, False])
def test_default_pipelines_give_the_model_size(tasks: list[str], train: bool) -> None:
    dataset = ShapesDataset(3, image_size=48)
    pipeline = build_transforms(default_transform_specs(tasks, (40, 56), train=train))
    for index in range(len(dataset)):
        out = apply_transforms(pipeline, dataset[index], seed=index)
        assert out["images"].shape == (3, 40, 56) and out["masks"].shape == (40, 56)


def test_default_evaluation_pipelines_follow_the_anchors() -> None:
    assert default_transform_specs(["classification"], 224, train=False) == [
        {"resize": {"size": 256}},  # round(224 / 0.875)
        {"center_crop": {"size": [224, 224]}},
    ]
    for tasks in (["detection"], ["segmentation"], SHAPES_TASKS):
        assert default_transform_specs(tasks, 320, train=False) == [{"letterbox": {"size": [320, 320]}}]
    with pytest.raises(DataError, match="non-empty subset"):
        default_transform_specs(["depth"], 32, train=True)


def test_multi_task_defaults_never_cut_objects_out_of_shapes_samples() -> None:
    """The shapes dataset labels its largest shape: a pipeline for its samples must keep every shape."""
    specs = default_transform_specs(SHAPES_TASKS, 64, train=True)
    croppers = [s for s in specs if isinstance(s, dict) and transform_entry(next(iter(s))).crops]
    # the one cropping entry only pads: it follows a scale jitter that never enlarges past the size
    assert croppers == [{"random_crop": {"size": [64, 64], "pad_if_needed": True}}]
    assert specs[0] == {"scale_jitter": {"target_size": [64, 64], "scale_range": [0.6, 1.0]}}
    dataset = ShapesDataset(24, image_size=64, max_shapes=4)
    pipeline = build_transforms(specs)
    for index in range(len(dataset)):
        before = dataset[index]
        out = apply_transforms(pipeline, before, seed=index)
        assert int(out["boxes_dropped"]) == 0 and out["box_labels"].tolist() == before["box_labels"].tolist()
        scale = (out["boxes"][:, 2:] - out["boxes"][:, :2]) / (before["boxes"][:, 2:] - before["boxes"][:, :2])
        assert float(scale.max() - scale.min()) < 1e-4 and float(scale.max()) <= 1.0  # one zoom out, no box clipped
