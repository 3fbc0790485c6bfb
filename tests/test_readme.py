"""The README's code blocks run as written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def section_text(section: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {section}:start -->(.*?)<!-- {section}:end -->", text, re.S)
    assert match, f"README.md has no {section} section"
    return match.group(1)


def python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section_text(section), re.S)


def check_zoo(namespace: dict) -> None:
    outputs = namespace["outputs"]
    assert outputs["classify/predictions"].shape == (2,)
    assert outputs["segment/predictions"].shape == (2, 64, 64)
    assert outputs["detect/boxes"].shape == (2, 100, 4)
    assert set(namespace["losses"]) == {
        "classify/loss",
        "segment/loss_ce",
        "segment/loss_dice",
        "detect/loss_cls",
        "detect/loss_box",
        "detect/loss_ctr",
    }


def check_own_images(namespace: dict) -> None:
    """Predictions come at each file's size as displayed, boxes inside it, and the files written agree."""
    from brickzoo.data import load_image

    # (width, height) as an image viewer shows each file: phone.jpg is stored 160x120 with EXIF orientation 6
    displayed = {"phone.jpg": (120, 160), "scan.png": (200, 90), "drawing.png": (64, 64)}
    predictions = namespace["predictions"]
    assert [str(p.file) for p in predictions] == list(displayed)
    for prediction in predictions:
        width, height = displayed[str(prediction.file)]
        assert (prediction.width, prediction.height) == (width, height)
        assert tuple(prediction.heads["segment"].mask.shape) == (height, width)
        boxes = prediction.heads["detect"].boxes  # [K, 4] in the file's pixels
        assert bool(((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 1] >= 0) & (boxes[:, 3] <= height)).all())
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
    # independent references for how the files are read: numpy's rotation, the 16-bit ramp, the colour under alpha
    with Image.open("phone.jpg") as stored:
        assert stored.size == (160, 120)
        turned = np.rot90(np.asarray(stored.convert("RGB")), k=-1)  # orientation 6: 90 degrees clockwise
    phone = load_image("phone.jpg")  # [3, H, W]
    assert torch.equal(phone, torch.from_numpy(turned.copy()).permute(2, 0, 1).float() / 255)
    scan = load_image("scan.png")
    expected = torch.from_numpy(namespace["ramp"].astype(np.float32) / 65535).expand(3, -1, -1)
    assert torch.allclose(scan, expected, atol=1e-6) and float(scan.max()) == 1.0 and float(scan.min()) == 0.0
    drawing = load_image("drawing.png")
    assert drawing[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # transparent pixels keep the colour stored under them
    assert torch.allclose(drawing[:, 32, 32], torch.tensor([40, 80, 220]) / 255)
    records = [json.loads(line) for line in Path("predictions/predictions.jsonl").read_text().splitlines()]
    assert [(r["file"], r["width"], r["height"]) for r in records] == [(f, *size) for f, size in displayed.items()]
    for record in records:
        with Image.open(Path("predictions") / record["heads"]["segment"]["mask"]) as mask:
            assert mask.size == displayed[record["file"]]


@pytest.mark.parametrize("section", ["tour", "zoo", "own-images"])
def test_readme_section_runs(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(section)
    assert blocks
    monkeypatch.chdir(tmp_path)  # the examples write into the current folder
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, f"README.md[{section}]", "exec"), namespace)
    if section == "tour":
        assert os.path.exists("build/tour.onnx")
    elif section == "zoo":
        check_zoo(namespace)
    else:
        check_own_images(namespace)


def test_readme_config_for_own_images_builds_and_previews(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The YAML of "Your own images" is a valid config over a YOLO layout, letterboxed, and previews."""
    from brickzoo import cli
    from brickzoo.zoo import build_recipe

    (block,) = re.findall(r"```yaml\n(.*?)```", section_text("own-images"), re.S)
    monkeypatch.chdir(tmp_path)
    Path("my_boxes.yaml").write_text(block)
    for split, widths in (("train", (400, 300)), ("val", (200,))):
        for folder in ("images", "labels"):
            (tmp_path / "my_data" / folder / split).mkdir(parents=True)
        for index, width in enumerate(widths):
            Image.new("RGB", (width, 150), (90, 90, 90)).save(f"my_data/images/{split}/{index}.jpg")
            Path(f"my_data/labels/{split}/{index}.txt").write_text("0 0.5 0.5 0.2 0.3\n1 0.25 0.3 0.1 0.2\n")
    Path("my_data/data.yaml").write_text("names: [cat, dog]\n")
    config = yaml.safe_load(block)
    recipe = build_recipe("my_boxes.yaml")
    assert recipe.input_size == (320, 320) and recipe.resize_mode == "letterbox"
    assert recipe.class_names["detect"] == ["cat", "dog"] and len(recipe.datasets["train"]) == 2
    sample = recipe.datasets["val"][0]  # 200x150 letterboxed: scale 1.6, 320x240 placed 40 rows down
    assert tuple(sample["images"].shape) == (3, 320, 320)
    expected = torch.tensor([[0.4 * 320, 0.35 * 240 + 40, 0.6 * 320, 0.65 * 240 + 40]])
    assert torch.allclose(sample["boxes"][:1], expected, atol=1e-3)
    assert config["data"]["transforms"]["eval"] == [{"letterbox": {"size": 320}}]
    assert cli.main(["preview", "my_boxes.yaml", "--out", "preview.png", "--count", "2"]) == 0
    assert "wrote 2 train samples of my_boxes" in capsys.readouterr().out
    with Image.open("preview.png") as preview:
        assert preview.width > 320 and preview.height >= 320
