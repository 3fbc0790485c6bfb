"""``brickzoo predict``: one JSON Lines file, class-index mask PNGs and pictures at the images' own sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brickzoo import save_bricks
from brickzoo.cli import main
from brickzoo.predict import PREDICTIONS_FILE, Predictor
from brickzoo.training import load_weights, write_config
from brickzoo.zoo import build_recipe

# 64 px: at 32 px the stride-32 level is 1x1 and the detection head's GroupNorm refuses a batch of one image
TINY = ["data.train.num_samples=8", "data.val.num_samples=4", "data.batch_size=4", "data.args.image_size=64"]
HEADS = ("classify", "segment", "detect")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-brick weights of the tiny multi-task model (its initial weights: the numbers need not be good)."""
    folder = tmp_path_factory.mktemp("weights") / "shapes_multitask"
    save_bricks(build_recipe("shapes_multitask", TINY).model, folder)
    return folder


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (300, 170), (40, 160, 90)).save(folder / "a.png")
    Image.new("RGB", (170, 300), (200, 60, 60)).save(folder / "a.jpg")
    Image.new("L", (64, 48), 128).save(folder / "sub" / "c.bmp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict_command(images: list[str], weights: Path, out: Path, *options: str) -> list[str]:
    return [
        "predict",
        "shapes_multitask",
        *images,
        "--weights",
        str(weights),
        "--out",
        str(out),
        *options,
        "--set",
        *TINY,
    ]


def test_one_record_per_image_with_masks_and_pictures_at_the_original_size(
    weights: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(predict_command([str(photos)], weights, out)) == 0
    printed = capsys.readouterr().out
    assert f"predicted on 3 images: {out / PREDICTIONS_FILE} and 12 PNG files in {out}" in printed
    assert f"  {photos / 'a.png'} (300x170): classify " in printed
    records = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert [(r["file"], r["width"], r["height"]) for r in records] == [
        (str(photos / "a.jpg"), 170, 300),
        (str(photos / "a.png"), 300, 170),
        (str(photos / "sub" / "c.bmp"), 64, 48),
    ]
    names = {"a_jpg", "a_png", "c"}
    expected = {f"{n}_segment_mask.png" for n in names} | {f"{n}_{h}_visualization.png" for n in names for h in HEADS}
    assert {p.name for p in out.iterdir()} == expected | {PREDICTIONS_FILE}
    for record in records:
        width, height = record["width"], record["height"]
        assert record["transform"]["resize"] == "letterbox" and record["transform"]["input_size"] == [64, 64]
        segment = record["heads"]["segment"]
        with Image.open(out / segment["mask"]) as mask:
            assert mask.mode == "P" and mask.size == (width, height)
            values = np.asarray(mask)
        counts = np.bincount(values.flatten(), minlength=5)
        assert list(segment["pixel_counts"].values()) == counts.tolist() and len(counts) == 5
        for row in record["heads"]["detect"]["detections"]:
            x1, y1, x2, y2 = row["box"]
            assert (
                0 <= x1 < x2 <= width
                and 0 <= y1 < y2 <= height
                and row["class"] in ("circle", "square", "triangle", "star")
            )
        assert record["heads"]["classify"]["class"] == record["heads"]["classify"]["top_k"][0]["class"]
        with Image.open(out / record["pictures"]["classify"]) as picture:
            assert picture.size == (width, height)


def test_the_command_gives_the_numbers_of_the_python_api(weights: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(predict_command([str(photos / "a.png")], weights, out, "--top-k", "2", "--no-pictures")) == 0
    (record,) = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    recipe = build_recipe("shapes_multitask", TINY)
    load_weights(recipe.model, weights)
    (result,) = Predictor.from_recipe(recipe, top_k=2)([photos / "a.png"])
    assert record == json.loads(result.to_json({"segment/mask": "a_segment_mask.png"}))
    assert sorted(p.name for p in out.iterdir()) == ["a_segment_mask.png", PREDICTIONS_FILE]


def test_the_config_letterboxes_and_stretch_is_on_request(weights: Path, photos: Path, tmp_path: Path) -> None:
    for options, name in (((), "default"), (("--resize", "stretch"), "stretch")):
        assert main(predict_command([str(photos / "a.png")], weights, tmp_path / name, "--no-pictures", *options)) == 0
    default = json.loads((tmp_path / "default" / PREDICTIONS_FILE).read_text())
    stretch = json.loads((tmp_path / "stretch" / PREDICTIONS_FILE).read_text())
    # 300x170 into 64x64: scale 64/300, 36 rows, (64 - 36) / 2 = 14 rows of padding on top; or stretched
    assert default["transform"] == {
        "resize": "letterbox",
        "input_size": [64, 64],
        "scale": [64 / 300, 36 / 170],
        "offset": [0, 14],
    }
    assert stretch["transform"] == {
        "resize": "stretch",
        "input_size": [64, 64],
        "scale": [64 / 300, 64 / 170],
        "offset": [0, 0],
    }


@pytest.mark.parametrize("out_exists", [True, False])
def test_an_image_that_cannot_be_decoded_leaves_nothing_behind(
    out_exists: bool, weights: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = photos / "zz_broken.png"
    broken.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert main(predict_command([str(photos)], weights, out, "--batch-size", "2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("brickzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"could not decode image file {str(broken)!r}" in err
    assert (sorted(p.name for p in out.iterdir()) == ["keep.txt"]) if out_exists else not out.exists()


def test_skip_unreadable_counts_and_names_them(
    weights: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "b_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    assert main(predict_command([str(photos)], weights, out, "--skip-unreadable", "--no-pictures")) == 0
    printed = capsys.readouterr().out
    assert f"skipped 1 images that cannot be decoded (--skip-unreadable): {photos / 'b_broken.jpg'}" in printed
    assert f"skipped 1 files that are not images: {photos / 'notes.txt'}" in printed
    assert len((out / PREDICTIONS_FILE).read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be 1 or more, got 0"),
        (["--top-k", "-1"], "--top-k must be 1 or more, got -1"),
    ],
)
def test_bad_options_are_one_line_errors(
    options: list[str], message: str, weights: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(predict_command([str(photos)], weights, tmp_path / "o", *options)) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_output_that_is_a_file_is_refused(
    weights: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(predict_command([str(photos)], weights, target)) == 2
    assert f"--out {target} is a file; expected a folder" in capsys.readouterr().err
    assert target.read_text() == "x"


FOLDER_CONFIG = """\
name: folder_classes
model:
  backbone: {{name: "timm:resnet10t", pretrained: false}}
  heads:
    classify: {{factory: image_classification, num_classes: {num_classes}, class_names: {class_names}}}
data:
  dataset: image_folder
  args: {{image_size: 32}}
  train: {{root: {root}}}
  batch_size: 2
"""


def test_prediction_needs_no_dataset_on_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Trained on a folder that is gone since: the run's config.json (classes resolved) or explicit classes do."""
    root = tmp_path / "data"
    for name, colour in (("cat", (200, 60, 60)), ("dog", (60, 60, 200))):
        (root / name).mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (40, 40), colour).save(root / name / f"{index}.png")
    config = tmp_path / "folder_classes.yaml"
    config.write_text(FOLDER_CONFIG.format(num_classes="auto", class_names="auto", root=root))
    recipe = build_recipe(str(config))
    save_bricks(recipe.model, tmp_path / "run" / "weights")
    write_config(tmp_path / "run", recipe.resolved_config)  # what training writes
    Image.new("RGB", (90, 50), (200, 60, 60)).save(tmp_path / "photo.png")
    for file in sorted(root.rglob("*.png")):
        file.unlink()
    for folder in (root / "cat", root / "dog", root):
        folder.rmdir()

    def command(config_file: Path, out: str) -> list[str]:
        weights = str(tmp_path / "run" / "weights")
        return [
            "predict",
            str(config_file),
            str(tmp_path / "photo.png"),
            "--weights",
            weights,
            "--out",
            str(tmp_path / out),
        ]

    # classes left to the (gone) data: an error that says what to give
    assert main(command(config, "auto")) == 2
    err = capsys.readouterr().err
    assert "model.heads.classify.num_classes: 'auto' needs the classification classes" in err
    assert "give num_classes (and class_names) in the config" in err and not (tmp_path / "auto").exists()
    # the run's config.json, or a config naming the classes
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(FOLDER_CONFIG.format(num_classes=2, class_names="[cat, dog]", root=root))
    for config_file, out in ((tmp_path / "run" / "config.json", "run_config"), (explicit, "explicit")):
        assert main(command(config_file, out)) == 0
        record = json.loads((tmp_path / out / PREDICTIONS_FILE).read_text())
        assert (record["width"], record["height"]) == (90, 50) and record["heads"]["classify"]["class"] in (
            "cat",
            "dog",
        )
        assert record["transform"] == {"resize": "center_crop", "input_size": [32, 32]}  # classification: no geometry
