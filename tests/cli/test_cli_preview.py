"""``brickzoo preview``: a PNG grid of the samples as the model sees them, boxes and masks drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brickzoo import cli
from brickzoo.cli import main
from brickzoo.zoo import build_recipe

TINY = ["data.train.num_samples=8", "data.val.num_samples=4", "data.args.image_size=32"]


def test_a_grid_of_augmented_training_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "grids" / "train.png"
    assert main(["preview", "shapes_multitask", "--count", "6", "--columns", "3", "--out", str(target), *TINY]) == 0
    size = build_recipe("shapes_multitask", TINY).datasets["train"][0]["images"].shape[-1]  # the model's input size
    # each cell: the image, and the image with its mask and boxes, at scale 2; 4 px between cells
    width, height = 3 * (2 * 2 * size) + 2 * 4, 2 * 2 * size + 4
    assert f"wrote 6 train samples of shapes_multitask as the model sees them ({width}x{height} pixels)" in (
        capsys.readouterr().out
    )
    with Image.open(target) as grid:
        assert grid.size == (width, height) and grid.mode == "RGB"
    assert sorted(p.name for p in target.parent.iterdir()) == ["train.png"]  # no partial file left


def test_the_drawn_samples_keep_boxes_around_their_masks() -> None:
    """What preview draws: augmented samples whose every shape pixel lies inside a box of its class."""
    dataset = cli._preview_dataset(build_recipe("shapes_multitask", TINY), "train", epoch=1)
    for index in range(len(dataset)):
        sample = dataset[index]
        mask, boxes, labels = sample["masks"].numpy(), sample["boxes"].numpy(), sample["box_labels"].numpy()
        assert sample["images"].shape[-2:] == mask.shape
        ys, xs = np.nonzero((mask > 0) & (mask != 255))
        for y, x in zip(ys, xs, strict=True):
            inside = [
                x1 - 1 <= x <= x2 and y1 - 1 <= y <= y2 and label + 1 == mask[y, x]
                for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True)
            ]
            assert any(inside), (index, y, x, mask[y, x], boxes, labels)


def test_epochs_draw_other_augmentations_and_val_draws_the_same(tmp_path: Path) -> None:
    def grid(split: str, epoch: int, name: str) -> bytes:
        path = tmp_path / name
        command = ["preview", "shapes_multitask", "--split", split, "--epoch", str(epoch), "--count", "4"]
        assert main([*command, "--out", str(path), *TINY]) == 0
        return np.asarray(Image.open(path)).tobytes()

    assert grid("train", 0, "a.png") == grid("train", 0, "b.png") != grid("train", 1, "c.png")
    assert grid("val", 0, "d.png") == grid("val", 3, "e.png")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--out", "{tmp}"], "--out {tmp} is a folder; expected the PNG file to write"),
        (["--out", "{tmp}/grid.jpg"], "--out {tmp}/grid.jpg: expected a file name ending in .png"),
        (["--out", "{tmp}/g.png", "--count", "0"], "--count must be 1 or more, got 0"),
        (["--out", "{tmp}/g.png", "--split", "test"], "no 'test' split in data (have ['train', 'val'])"),
        (["--out", "{tmp}/a_file/g.png"], "--out {tmp}/a_file/g.png: folder {tmp}/a_file is a file; expected a folder"),
    ],
)
def test_bad_requests_are_one_line_errors(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("x")
    argv = ["preview", "shapes_multitask", *(o.format(tmp=tmp_path) for o in options), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("brickzoo: error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
