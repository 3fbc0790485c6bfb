"""Per-brick weight files: round trips, atomicity, strict and non-strict loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from brickzoo import BrickCollection, BrickLoss, BrickTrainable, WeightsError, load_bricks, save_bricks


def make(num_classes: int = 3, seed: int = 0) -> BrickCollection:
    torch.manual_seed(seed)
    return BrickCollection(
        {
            "backbone": BrickTrainable(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), ["x"], ["f"]),
            "head0": {"classify": BrickTrainable(nn.Conv2d(4, num_classes, 1), ["f"], ["./logits"])},
            "loss": BrickLoss(nn.MSELoss(), ["f", "f"], ["loss"]),
        }
    )


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("format", ["pt", "safetensors"])
def test_round_trip(tmp_path: Path, format: str) -> None:
    source, target = make(seed=0), make(seed=1)
    assert not states_equal(source, target)
    files = save_bricks(source, tmp_path / "w", format=format)
    suffix = ".pt" if format == "pt" else ".safetensors"
    assert sorted(f.relative_to(tmp_path / "w").as_posix() for f in files) == [
        f"backbone{suffix}",
        f"head0/classify{suffix}",
    ]
    assert not list((tmp_path / "w").rglob("*.tmp"))  # atomic writes leave no temporary files
    report = load_bricks(target, tmp_path / "w")
    assert states_equal(source, target)
    assert report.loaded == ["backbone", "head0/classify"] and not report.missing


def test_weight_files_get_the_usual_file_mode(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        (file,) = [f for f in save_bricks(make(), tmp_path / "w") if f.name == "backbone.pt"]
    finally:
        os.umask(umask)
    assert file.stat().st_mode & 0o777 == 0o644


def test_existing_folder_needs_exist_ok(tmp_path: Path) -> None:
    collection = make()
    collection.save_bricks(tmp_path)
    with pytest.raises(WeightsError, match="already holds files; pass exist_ok=True"):
        collection.save_bricks(tmp_path)
    collection.save_bricks(tmp_path, exist_ok=True)


def test_missing_file_is_an_error_when_strict_and_changes_nothing(tmp_path: Path) -> None:
    source = make()
    source.save_bricks(tmp_path)
    (tmp_path / "head0" / "classify.pt").unlink()
    target = make(seed=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError, match=r"brick 'head0/classify': no weight file head0/classify.pt") as info:
        target.load_bricks(tmp_path)
    assert info.value.problems == [
        "brick 'head0/classify': no weight file head0/classify.pt or head0/classify.safetensors"
    ]
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded, not even the rest


def test_missing_file_warns_naming_the_brick_when_not_strict(tmp_path: Path) -> None:
    source = make()
    source.save_bricks(tmp_path)
    (tmp_path / "head0" / "classify.pt").unlink()
    target = make(seed=5)
    before = target["head0"]["classify"].model.weight.clone()
    with pytest.warns(UserWarning, match=r"no weight file in .* for bricks \['head0/classify'\]"):
        report = target.load_bricks(tmp_path, strict=False)
    assert report.missing == ["head0/classify"]
    assert torch.equal(target["head0"]["classify"].model.weight, before)
    assert "backbone" in report.loaded


def test_empty_or_wrong_folder_loads_nothing_when_strict(tmp_path: Path) -> None:
    target = make(seed=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="nothing was loaded") as info:
        target.load_bricks(tmp_path / "empty")
    assert len(info.value.problems) == len([p for p, b in target.named_bricks() if b.state_dict()])
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_missing_folder_and_file_as_folder_are_the_builtin_errors(tmp_path: Path) -> None:
    target = make()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        target.load_bricks(tmp_path / "nowhere")
    file = tmp_path / "weights.pt"
    file.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file; expected a folder"):
        target.load_bricks(file)
    with pytest.raises(NotADirectoryError, match="is a file; expected a folder"):
        target.save_bricks(file)
    with pytest.raises(WeightsError):  # and still brickzoo's own error
        target.load_bricks(tmp_path / "nowhere")


def test_shape_mismatch_raises_and_leaves_model_unchanged(tmp_path: Path) -> None:
    make(num_classes=3).save_bricks(tmp_path)
    target = make(num_classes=5, seed=7)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        target.load_bricks(tmp_path)
    message = str(info.value)
    assert "brick 'head0/classify'" in message
    assert "model.weight (file [3, 4, 1, 1] vs brick [5, 4, 1, 1])" in message
    assert "nothing was loaded" in message
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # not even the matching backbone


def test_non_strict_loads_what_matches_and_reports(tmp_path: Path) -> None:
    source = make(num_classes=3)
    source.save_bricks(tmp_path)
    target = make(num_classes=5, seed=7)
    report = target.load_bricks(tmp_path, strict=False)
    assert report.loaded == ["backbone"]
    # weight and bias both differ: nothing of the head can be used, it keeps its initialisation
    assert list(report.skipped) == ["head0/classify"]
    assert "model.weight (file [3, 4, 1, 1] vs brick [5, 4, 1, 1])" in report.skipped["head0/classify"]
    assert states_equal(source["backbone"], target["backbone"])
    assert "skipped head0/classify" in str(report)


def test_non_strict_partial_load(tmp_path: Path) -> None:
    source = BrickCollection({"m": BrickTrainable(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4)), ["x"], ["y"])})
    target = BrickCollection({"m": BrickTrainable(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 6)), ["x"], ["y"])})
    source.save_bricks(tmp_path)
    report = target.load_bricks(tmp_path, strict=False)
    assert report.partial == {
        "m": ["model.1.weight (file [4, 3] vs brick [6, 3])", "model.1.bias (file [4] vs brick [6])"]
    }
    assert torch.equal(source["m"].model[0].weight, target["m"].model[0].weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weight_file_cannot_execute_code(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (print, ("code ran",))

    folder = tmp_path / "w"
    folder.mkdir()
    with open(folder / "backbone.pt", "wb") as handle:
        pickle.dump({"0.weight": Exploit()}, handle)
    with pytest.raises(WeightsError, match=r"cannot read weight file .*backbone\.pt"):
        make().load_bricks(folder, strict=False)


def test_unexpected_files_are_reported(tmp_path: Path) -> None:
    make().save_bricks(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "old_head.pt")
    report = make().load_bricks(tmp_path)
    assert report.unexpected == ["old_head.pt"]


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        make().load_bricks(tmp_path / "nope")
