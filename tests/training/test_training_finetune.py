"""Fine-tuning: load_finetune_weights, freeze and per-brick learning-rate multipliers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_toys import head_bricks, loader, toy_collection, weights

from brickzoo import BrickCollection, save_bricks
from brickzoo.errors import ConfigError, WeightsError, WeightsNotADirectoryError, WeightsNotFoundError
from brickzoo.training import (
    TrainConfig,
    build_optimizer,
    find_fitting_weights,
    fit,
    freeze,
    load_finetune_weights,
    load_weights,
    param_groups,
)


def quick(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {"epochs": 2, "lr": 3e-2, "device": "cpu"}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    run = tmp_path_factory.mktemp("pretrained") / "run"
    collection = toy_collection()
    fit(collection, loader(48), config=quick(), run_dir=run, quiet=True)
    return run, weights(collection)


def test_freeze_matches_paths_and_collections_and_keeps_eval_mode() -> None:
    collection = toy_collection()
    frozen = freeze(collection, ["backbone", "head0/class*"])
    assert frozen == ["backbone", "head0/classify"]
    assert not any(p.requires_grad for p in collection["backbone"].parameters())
    assert collection["head0"]["classify"].model.weight.requires_grad is False
    collection.train()
    assert collection["backbone"].model.training is False  # BatchNorm and dropout stay in eval mode
    assert collection["head0"]["loss"].model.training is True
    assert freeze(toy_collection(), "head0") == ["head0/classify", "head0/predict", "head0/loss"]


def test_a_pattern_matching_nothing_lists_the_brick_paths() -> None:
    with pytest.raises(ConfigError) as info:
        freeze(toy_collection(), ["backbone", "neck/*"])
    message = str(info.value)
    assert "['neck/*'] match no brick" in message and "'head0/classify'" in message and "'backbone'" in message
    with pytest.raises(ConfigError, match=r"lr_multipliers: pattern\(s\) \['bakbone'\] match no brick"):
        build_optimizer(toy_collection(), quick(lr_multipliers={"bakbone": 0.1}))
    with pytest.raises(ConfigError, match=r"nothing to train.*frozen bricks: \['backbone', 'head0/classify'"):
        collection = toy_collection()
        freeze(collection, "*")
        build_optimizer(collection, quick())


def test_lr_multipliers_become_param_groups_scaled_by_the_schedule() -> None:
    collection = toy_collection()
    groups = param_groups(collection, lr=0.1, weight_decay=0.05, lr_multipliers={"back*": 0.5, "backbone": 9.0})
    summary = [(g["bricks"], g["lr"], g["weight_decay"], len(g["params"])) for g in groups]
    assert summary == [
        (["backbone"], 0.05, 0.05, 1),  # the conv weight; the first matching pattern wins
        (["backbone"], 0.05, 0.0, 3),  # conv bias, BN weight and bias: no weight decay
        (["head0/classify"], 0.1, 0.05, 1),
        (["head0/classify"], 0.1, 0.0, 1),
    ]
    # during fit the schedule scales every group alike: the ratio stays 0.5 at every step
    config = quick(epochs=1, lr_multipliers={"backbone": 0.5}, warmup_steps=2, min_lr=0.001)
    seen: list[tuple[float, float]] = []
    original_step = torch.optim.AdamW.step

    def step(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        seen.append((self.param_groups[0]["lr"], self.param_groups[2]["lr"]))
        return original_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", step)
        fit(toy_collection(), loader(64), config=config, quiet=True)
    assert len(seen) == 4 and seen[0][1] == pytest.approx(0.015) and seen[-1][1] == pytest.approx(0.001)
    assert all(backbone == pytest.approx(0.5 * head) for backbone, head in seen)


def test_frozen_bricks_do_not_change_during_fit() -> None:
    collection = toy_collection()
    before = weights(collection)
    fit(collection, loader(32), config=quick(freeze=["backbone"]), quiet=True)
    after = weights(collection)
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)  # BatchNorm statistics included
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["head0.classify.model.weight"], after["head0.classify.model.weight"])


def test_load_finetune_weights_reports_loaded_skipped_and_new_bricks(trained_run: tuple[Path, dict]) -> None:
    run, trained = trained_run
    torch.manual_seed(1)
    collection = toy_collection(seed=1, num_classes=5)  # head0 now has 5 classes
    collection["head1"] = head_bricks(num_classes=3)  # and there is a new head
    fresh = weights(collection)
    report = load_finetune_weights(collection, run)
    assert report.loaded == ["backbone"]
    assert list(report.skipped) == ["head0/classify"] and "[5, 8]" in report.skipped["head0/classify"]
    assert report.missing == ["head1/classify"] and report.unexpected == []
    text = str(report)
    assert "loaded  backbone" in text and "skipped head0/classify" in text and "new     head1/classify" in text
    now = weights(collection)
    assert all(torch.equal(now[k], trained[k]) for k in trained if k.startswith("backbone."))
    assert all(torch.equal(now[k], fresh[k]) for k in fresh if k.startswith(("head0.", "head1.")))


def test_load_finetune_weights_takes_a_weight_folder_and_explains_failures(tmp_path: Path) -> None:
    source = toy_collection(seed=3)
    save_bricks(source, tmp_path / "weights")
    target = toy_collection(seed=4)
    report = load_finetune_weights(target, tmp_path / "weights")
    assert report.loaded == ["backbone", "head0/classify"]
    assert all(torch.equal(a, b) for a, b in zip(weights(source).values(), weights(target).values(), strict=True))
    with pytest.raises(WeightsNotFoundError, match="expected a run folder .* or a per-brick weight folder"):
        load_finetune_weights(target, tmp_path / "nowhere")
    other = BrickCollection({"elsewhere": head_bricks(3)})
    with pytest.raises(WeightsError, match="nothing in .* fits the collection"):
        load_finetune_weights(other, tmp_path / "weights")


def test_fine_tuning_a_new_head_leaves_the_other_head_bit_identical(trained_run: tuple[Path, dict]) -> None:
    run, _ = trained_run
    collection = toy_collection(seed=2)
    load_finetune_weights(collection, run)
    batch = next(iter(loader(16, seed=5, shuffle=False)))
    collection.eval()
    with torch.no_grad():
        before = collection(batch, groups={"MODEL"})["head0/logits"]
    collection["head1"] = head_bricks(num_classes=3, visualize=False)
    head1_before = weights(collection["head1"])
    frozen = freeze(collection, ["backbone", "head0"])
    assert frozen == ["backbone", "head0/classify", "head0/predict", "head0/loss"]
    fit(collection, loader(48), config=quick(), quiet=True)
    collection.eval()
    with torch.no_grad():
        after = collection(batch, groups={"MODEL"})["head0/logits"]
    assert torch.equal(before, after)
    assert any(not torch.equal(v, head1_before[k]) for k, v in weights(collection["head1"]).items())


# -- strict loading for evaluate / predict / export ---------------------------------------------------
@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """``runs/good`` (toy weights), ``runs/five`` (head0 with 5 classes), ``runs/empty`` and a file."""
    save_bricks(toy_collection(seed=3), tmp_path / "runs" / "good")
    save_bricks(toy_collection(seed=4, num_classes=5), tmp_path / "runs" / "five")
    (tmp_path / "runs" / "empty").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("not weights")
    return tmp_path / "runs"


def test_load_weights_loads_every_brick_exactly(runs: Path) -> None:
    target = toy_collection(seed=9)
    report = load_weights(target, runs / "good")
    assert report.loaded == ["backbone", "head0/classify"] and not report.missing and not report.partial
    source = weights(toy_collection(seed=3))
    assert all(torch.equal(value, source[key]) for key, value in weights(target).items())


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("empty", ["2 of 2 bricks", "brick 'backbone': no weight file", "brick 'head0/classify': no weight file"]),
        ("five", ["1 of 2 bricks", "head0/classify", "file [5, 8] vs brick [3, 8]", "pass allow_partial=True"]),
        (".", ["2 of 2 bricks", "brick 'backbone': no weight file"]),
    ],
)
def test_load_weights_refuses_a_folder_that_leaves_bricks_random(runs: Path, folder: str, expected: list[str]) -> None:
    """An empty folder, another model's weights or the parent folder: an error and nothing loaded."""
    target = toy_collection(seed=9)
    before = weights(target)
    with pytest.raises(WeightsError) as info:
        load_weights(target, runs / folder)
    message = str(info.value)
    for part in expected:
        assert part in message
    assert "would keep their random initialisation; nothing was loaded" in message
    assert f"weights that fit every brick: {runs / 'good'}" in message  # found below the parent or next to it
    assert all(torch.equal(value, before[key]) for key, value in weights(target).items())


def test_load_weights_names_the_option_for_partial_loading_and_allows_it(runs: Path) -> None:
    with pytest.raises(WeightsError, match="pass --allow-partial to load only the bricks that fit"):
        load_weights(toy_collection(), runs / "five", partial_option="--allow-partial")
    target = toy_collection(seed=9)
    before = weights(target)
    report = load_weights(target, runs / "five", allow_partial=True)
    assert report.loaded == ["backbone"] and list(report.skipped) == ["head0/classify"]
    five = weights(toy_collection(seed=4, num_classes=5))
    now = weights(target)
    assert all(torch.equal(now[k], five[k]) for k in now if k.startswith("backbone."))
    assert all(torch.equal(now[k], before[k]) for k in now if k.startswith("head0."))
    with pytest.raises(WeightsError, match="nothing in .*empty fits the collection"):
        load_weights(toy_collection(), runs / "empty", allow_partial=True)


def test_load_weights_missing_folder_or_file_are_os_errors_with_suggestions(runs: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="got no such folder") as missing:
        load_weights(toy_collection(), runs / "god")
    assert isinstance(missing.value, FileNotFoundError)
    assert f"weights that fit every brick: {runs / 'good'}" in str(missing.value)  # a sibling of the typo
    with pytest.raises(WeightsNotADirectoryError, match="got a file") as file:
        load_weights(toy_collection(), runs / "notes.txt")
    assert isinstance(file.value, NotADirectoryError)


def test_fitting_weights_are_judged_by_tensor_names_and_shapes(runs: Path, trained_run: tuple[Path, dict]) -> None:
    collection = toy_collection()
    assert find_fitting_weights(collection, runs) == [runs / "good"]
    assert find_fitting_weights(collection, runs / "five") == [runs / "good"]  # a sibling
    assert find_fitting_weights(toy_collection(num_classes=5), runs) == [runs / "five"]
    # right file names, a renamed tensor: does not fit
    renamed = runs / "renamed"
    save_bricks(toy_collection(), renamed)
    state = torch.load(renamed / "backbone.pt", weights_only=True)
    state["model.0.kernel"] = state.pop("model.0.weight")
    torch.save(state, renamed / "backbone.pt")
    save_bricks(toy_collection(), runs / "safetensors", format="safetensors")
    assert find_fitting_weights(collection, runs) == [runs / "good", runs / "safetensors"]
    with pytest.raises(WeightsError, match=r"0\.kernel \(not in the brick\)"):
        load_weights(collection, renamed)
    save_bricks(toy_collection(), runs / "group" / "deep")  # two levels below: found after the first level
    assert find_fitting_weights(collection, runs) == [runs / "good", runs / "safetensors", runs / "group" / "deep"]
    assert find_fitting_weights(collection, runs, limit=1) == [runs / "good"]
    run, _ = trained_run  # a run folder written by fit is found through its checkpoint
    assert find_fitting_weights(collection, run.parent)[0] == run  # (siblings of run.parent may follow)
