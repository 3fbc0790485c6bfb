"""Zoo configs: every shipped config builds and trains a step; every bad input is reported at once."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from brickzoo import Stage
from brickzoo.cli import main
from brickzoo.errors import BrickRuntimeError, ConfigError
from brickzoo.training import fit
from brickzoo.zoo import Recipe, apply_overrides, build_recipe, list_configs, load_config, validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "zoo_configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
TINY = ["data.batch_size=2", "data.train.num_samples=4", "data.val.num_samples=2"]


def test_the_shipped_configs_are_found() -> None:
    names = {p.stem for p in CONFIGS}
    assert {
        "shapes_multitask",
        "shapes_detection",
        "shapes_segmentation",
        "digits_classification",
        "shapes_multitask_torchvision",
    } <= names
    assert {p.resolve() for p in list_configs()} >= {p.resolve() for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_opens_with_how_to_run_it(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# {path.stem}:"), "first line: '# <name>: what it is'"
    header = "\n".join(line for line in lines if line.startswith("#"))
    assert "brickzoo train" in header


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_and_trains_one_step(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    overrides = TINY if config["data"]["dataset"] == "shapes" else TINY[:1]
    recipe = build_recipe(path, overrides)
    torch.manual_seed(0)
    batch = next(iter(recipe.loader("train")))
    model = recipe.model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    outputs = model(batch, groups=Stage.TRAIN)
    losses = model.extract_losses(outputs)
    assert losses, "every zoo config trains on at least one loss"
    total = sum(losses.values())
    assert math.isfinite(total.item())
    total.backward()
    optimizer.step()
    assert model.required_inputs(Stage.INFERENCE) == ["images"]


def base_config() -> dict:
    return {
        "name": "t",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False},
            "heads": {"classify": {"factory": "image_classification"}},
        },
        "data": {"dataset": "shapes", "args": {"image_size": 32}, "train": {"num_samples": 4}},
        "train": {"epochs": 1},
    }


def problems_of(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, "test.yaml")
    return str(info.value)


def test_a_valid_config_passes() -> None:
    validate_config(base_config())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(modle={}), "modle: unknown key; did you mean ['model']?"),
        (lambda c: c["model"].update(head={}), "model.head: unknown key; did you mean ['heads']?"),
        (lambda c: c["train"].update(epochs="ten"), "train: epochs must be an integer >= 1, got 'ten'"),
        (lambda c: c["train"].update(epoch=3), "train.epoch: unknown key; did you mean ['epochs']?"),
        (
            lambda c: c["model"]["backbone"].update(name="timm:resnet10"),
            "model.backbone.name: ",
        ),
        (lambda c: c["model"]["backbone"].pop("name"), "model.backbone: missing or not a mapping with a 'name'"),
        (lambda c: c.pop("data"), "data: missing section"),
        (
            lambda c: c["model"]["heads"]["classify"].update(factory="image_clasification"),
            "model.heads.classify.factory: unknown head 'image_clasification'; did you mean ['image_classification']?",
        ),
        (
            lambda c: c["model"]["heads"]["classify"].update(label_smothing=0.1),
            "model.heads.classify.label_smothing: unknown argument of image_classification_bricks; "
            "did you mean ['label_smoothing']?",
        ),
        (
            lambda c: c["model"]["heads"]["classify"].update(dropout="lots"),
            "model.heads.classify.dropout: expected float, got str 'lots'",
        ),
        (
            lambda c: c["model"]["heads"]["classify"].update(features="neck"),
            "model.heads.classify.features: expected 'backbone' or 'neck' (when a neck is set), got 'neck'",
        ),
        (
            lambda c: c["model"]["heads"]["classify"].update(images="pictures"),
            "",  # a plain factory argument: accepted
        ),
        (
            lambda c: c["data"].update(dataset="shape"),
            "data.dataset: unknown dataset 'shape'; did you mean ['shapes']?",
        ),
        (
            lambda c: c["data"]["train"].update(num_sample=3),
            "data.train.num_sample: unknown argument of ShapesDataset; did you mean ['num_samples']?",
        ),
        (lambda c: c["data"]["train"].pop("num_samples"), "data.train.num_samples: missing; ShapesDataset needs it"),
        (lambda c: c["data"].update(batch_size=0), "data.batch_size: expected an integer >= 1, got 0"),
        (lambda c: c["model"].update(neck={"factory": "fnp"}), "model.neck.factory: unknown neck 'fnp'"),
        (lambda c: c["model"].update(neck=[64]), "model.neck: expected a mapping, got list"),
        (
            lambda c: c["model"].update(neck={"out_chanels": 32}),
            "model.neck.out_chanels: unknown argument of fpn_bricks; did you mean ['out_channels']?",
        ),
        (lambda c: c["model"].update(preprocessor=3), "model.preprocessor: expected a mapping, got int"),
        (
            lambda c: c["model"].update(preprocessor={"factory": "preprocesor"}),
            "model.preprocessor.factory: unknown preprocessor 'preprocesor'; did you mean ['preprocessor']?",
        ),
        (
            lambda c: c["model"].update(preprocessor={"normalized": "x"}),
            "model.preprocessor.normalized: is set by the recipe itself and cannot be given here",
        ),
        (
            lambda c: c["model"]["backbone"].update(output="x"),
            "model.backbone.output: is set by the recipe itself and cannot be given here",
        ),
        (lambda c: c.update(export={"batch_size": "two"}), "export.batch_size: expected"),
        (lambda c: c["data"].update(drop_last="yes"), "data.drop_last: expected true or false, got str 'yes'"),
        (lambda c: c["train"].update(freeze=5), "train: freeze must be a list of brick path patterns, got 5"),
    ],
)
def test_each_bad_input_is_reported_with_its_key_path(change, expected: str) -> None:
    config = base_config()
    change(config)
    if not expected:
        validate_config(config)
        return
    assert expected in problems_of(config)


def test_unknown_backbone_lists_close_matches() -> None:
    config = base_config()
    config["model"]["backbone"]["name"] = "timm:resnet10"
    message = problems_of(config)
    assert "timm:resnet10t" in message


def test_a_head_whose_task_the_dataset_lacks() -> None:
    config = base_config()
    config["data"] = {"dataset": "digits", "args": {"image_size": 16}}
    config["model"]["heads"] = {"segment": {"factory": "semantic_segmentation"}}
    assert "a segmentation head needs segmentation targets, but dataset 'digits' has only ['classification']" in (
        problems_of(config)
    )


def test_every_problem_is_reported_at_once() -> None:
    config = base_config()
    config["model"]["heads"]["classify"]["factory"] = "nope"
    config["train"]["epochs"] = 0
    config["data"]["train"]["num_sample"] = 3
    config["extra"] = 1
    message = problems_of(config)
    assert message.startswith("test.yaml: ")
    for expected in ("model.heads.classify.factory", "train: epochs", "data.train.num_sample", "extra: unknown key"):
        assert expected in message
    assert "5 problems" in message or "4 problems" in message


def test_overrides_are_parsed_as_yaml_and_validated() -> None:
    config = apply_overrides(base_config(), ["train.epochs=3", "data.args.image_size=48", "train.loss_weights={a: 2}"])
    assert config["train"]["epochs"] == 3 and config["data"]["args"]["image_size"] == 48
    assert config["train"]["loss_weights"] == {"a": 2}
    with pytest.raises(ConfigError, match=r"override 'train\.epochs': expected key\.sub=value"):
        apply_overrides(base_config(), ["train.epochs"])
    with pytest.raises(ConfigError, match=r"override 'name\.x=1': name is not a section"):
        apply_overrides(base_config(), ["name.x=1"])
    bad = apply_overrides(base_config(), ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"train: lr must be a number > 0, got -1"):
        validate_config(bad)
    original = base_config()
    apply_overrides(original, ["train.epochs=9"])
    assert original == base_config()  # overrides never change the input


def test_load_config_by_name_and_missing_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, origin = load_config("shapes_detection", ["train.epochs=1"])
    assert origin.endswith("shapes_detection.yaml") and config["train"]["epochs"] == 1
    with pytest.raises(
        ConfigError, match=r"config file 'shapes_detectoin' not found.*did you mean \['shapes_detection'\]"
    ):
        load_config("shapes_detectoin")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of sections"):
        load_config(not_mapping)


def test_auto_num_classes_and_class_names_come_from_the_dataset() -> None:
    recipe = build_recipe(copy.deepcopy(base_config()))
    assert recipe.class_names == {"classify": ["circle", "square", "triangle", "star"]}
    outputs = recipe.model({"images": torch.rand(2, 3, 32, 32)}, groups=Stage.INFERENCE)
    assert outputs["classify/logits"].shape == (2, 4)


def test_yaml_cannot_construct_python_objects(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_a_factory_refusing_its_settings_is_reported_with_the_section_path() -> None:
    """Checks that need the built backbone (here: which levels exist) run at build time; the error names the key."""
    with pytest.raises(ConfigError) as error:
        build_recipe("shapes_multitask", ["model.neck.levels=[9]", "data.train.num_samples=4"])
    message = str(error.value)
    assert message.startswith("model.neck: fpn_bricks: levels=[9]: [9] are not among them")
    assert "3 (features/level3: 256 channels, stride 16)" in message


# -- same config and seed, same run -------------------------------------------------------------
def parameters(recipe: Recipe) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in recipe.model.state_dict().items()}


def test_two_builds_of_one_config_hold_identical_weights_whatever_the_global_generators() -> None:
    torch.manual_seed(1)
    first = parameters(build_recipe(base_config()))
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    state = torch.get_rng_state()
    second = parameters(build_recipe(base_config()))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generators go on untouched
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    other = parameters(build_recipe(base_config(), ["train.seed=1"]))
    assert any(not torch.equal(first[name], other[name]) for name in first)  # the seed is what decides


def test_two_train_runs_of_one_config_write_the_same_metrics(tmp_path: Path) -> None:
    overrides = [*TINY, "data.args.image_size=32", "train.epochs=2", "train.device=cpu"]
    records = []
    for run, seed in (("a", 3), ("b", 4)):
        torch.manual_seed(seed)  # whatever state the process is in
        out = tmp_path / run
        assert main(["train", "shapes_multitask", "--out", str(out), "--quiet", "--no-export", *overrides]) == 0
        lines = (out / "shapes_multitask" / "metrics.jsonl").read_text().splitlines()
        records.append([json.loads(line) for line in lines])
    wall_time = ("seconds", "images_per_second")
    first, second = ([{k: v for k, v in r.items() if not k.endswith(wall_time)} for r in rs] for rs in records)
    assert len(first) == 2 and "val/detect/map" in first[0]
    assert first == second


# -- the last batch ----------------------------------------------------------------------------------
def batch_sizes(loader: Any) -> list[int]:
    return [int(batch["images"].shape[0]) for batch in loader]


def test_the_training_loader_drops_a_last_batch_of_one_image_and_evaluation_keeps_it() -> None:
    # 9 images in batches of 4 leave a last batch of one image
    nine = ["data.train.num_samples=9", "data.val={num_samples: 9, seed: 5}", "data.batch_size=4"]
    recipe = build_recipe(base_config(), nine)
    assert recipe.drop_last
    assert batch_sizes(recipe.loader("train")) == [4, 4]
    assert batch_sizes(recipe.loader("val")) == [4, 4, 1]  # never dropped when evaluating
    assert batch_sizes(recipe.loader("train", shuffle=False)) == [4, 4, 1]
    fit(recipe.model, recipe.loader("train"), config=recipe.train_config, quiet=True)
    # the batch of one is what breaks BatchNorm in training (the deepest level of 32 px images is 1x1)
    keep = build_recipe(base_config(), [*nine, "data.drop_last=false"])
    assert batch_sizes(keep.loader("train")) == [4, 4, 1]
    with pytest.raises(BrickRuntimeError, match="Expected more than 1 value per channel when training"):
        fit(keep.model, keep.loader("train"), config=keep.train_config, quiet=True)


def test_a_training_set_smaller_than_one_batch_is_a_config_error_naming_both_sizes() -> None:
    recipe = build_recipe(base_config(), ["data.train.num_samples=3", "data.batch_size=4"])
    with pytest.raises(ConfigError, match=r"training split has 3 samples, fewer than one batch \(data.batch_size=4\)"):
        recipe.loader("train")
    assert batch_sizes(
        build_recipe(base_config(), ["data.train.num_samples=3", "data.drop_last=false"]).loader("train")
    ) == [3]
