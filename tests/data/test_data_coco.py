"""CocoDetectionDataset on a COCO JSON and images written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from brickzoo.data import CocoDetectionDataset, make_loader
from brickzoo.errors import DataError


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 5, "file_name": "a.png", "width": 40, "height": 20},
            {"id": 9, "file_name": "sub/b.jpg", "width": 30, "height": 30},
            {"id": 2, "file_name": "c.png"},  # no annotations, no size
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 12, "bbox": [20.5, 0, 4.5, 20]},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [25, 25, 10, 10]},  # clipped at 30
            {"id": 4, "image_id": 9, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 1},  # crowd: skipped
            {"id": 5, "image_id": 9, "category_id": 3, "bbox": [4, 4, 0, 6]},  # zero width: dropped
            {"id": 6, "image_id": 5, "category_id": 3, "bbox": [50, 1, 5, 5]},  # outside the image: dropped
        ],
    }


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    (tmp_path / "img" / "sub").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "img" / "a.png")
    Image.new("RGB", (30, 30), (0, 255, 0)).save(tmp_path / "img" / "sub" / "b.jpg")
    Image.new("RGB", (16, 8), (0, 0, 255)).save(tmp_path / "img" / "c.png")
    path = tmp_path / "annotations.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_boxes_converted_and_categories_mapped(tmp_path: Path) -> None:
    dataset = CocoDetectionDataset(_write(tmp_path, _coco()), tmp_path / "img")
    assert dataset.class_names == ["cat", "dog", "bird"]  # category ids 3, 7, 12
    assert dataset.category_ids == [3, 7, 12] and dataset.num_classes == 3
    assert dataset.num_classes_for("detection") == 3
    assert len(dataset) == 3
    a = dataset[0]
    assert a["images"].shape == (3, 20, 40) and a["images"].dtype == torch.float32
    assert a["boxes"].dtype == torch.float32 and a["box_labels"].dtype == torch.int64
    assert torch.equal(a["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.0], [20.5, 0.0, 25.0, 20.0]]))
    assert a["box_labels"].tolist() == [1, 2]
    assert int(a["image_id"]) == 5
    b = dataset[1]
    assert torch.equal(b["boxes"], torch.tensor([[25.0, 25.0, 30.0, 30.0]]))
    assert b["box_labels"].tolist() == [0]
    c = dataset[2]
    assert c["boxes"].shape == (0, 4) and c["box_labels"].shape == (0,) and int(c["image_id"]) == 2


def test_agrees_with_pycocotools(tmp_path: Path) -> None:
    path = _write(tmp_path, _coco())
    dataset = CocoDetectionDataset(path, tmp_path / "img", include_crowd=True)
    coco = COCO(str(path))
    for i, image_id in enumerate(dataset.image_ids):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        width, height = Image.open(dataset.files[i]).size
        expected = []
        for ann in anns:
            x, y, w, h = ann["bbox"]
            box = [max(0, min(x, width)), max(0, min(y, height)), max(0, min(x + w, width)), max(0, min(y + h, height))]
            if box[2] > box[0] and box[3] > box[1]:
                expected.append((box, dataset.category_ids.index(ann["category_id"])))
        sample = dataset[i]
        assert sample["boxes"].tolist() == [box for box, _ in expected]
        assert sample["box_labels"].tolist() == [label for _, label in expected]


def test_resizing_scales_boxes(tmp_path: Path) -> None:
    dataset = CocoDetectionDataset(_write(tmp_path, _coco()), tmp_path / "img", image_size=(10, 80))
    a = dataset[0]
    assert a["images"].shape == (3, 10, 80)
    # x scaled by 80 / 40 = 2, y by 10 / 20 = 0.5
    assert torch.equal(a["boxes"], torch.tensor([[4.0, 1.5, 24.0, 4.0], [41.0, 0.0, 50.0, 10.0]]))
    batch = next(iter(make_loader(dataset, batch_size=3, shuffle=False)))
    assert batch["boxes"].shape == (3, 2, 4)
    assert batch["box_labels"].tolist() == [[1, 2], [0, -1], [-1, -1]]
    assert batch["image_id"].tolist() == [5, 9, 2]


def _broken(change: str) -> dict[str, Any]:
    data = _coco()
    if change == "unknown image":
        data["annotations"][2]["image_id"] = 77
    elif change == "unknown category":
        data["annotations"][0]["category_id"] = 4
    elif change == "no images":
        del data["images"]
    elif change == "bad bbox":
        data["annotations"][1]["bbox"] = [1, 2, 3]
    elif change == "missing field":
        del data["annotations"][1]["category_id"]
    elif change == "string id":
        data["images"][0]["id"] = "five"
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown image", r"annotation 3 in .*annotations\.json' points to image_id 77"),
        ("unknown category", r"annotation 1 in .*annotations\.json' has category_id 4; expected one of .*\[3, 7, 12\]"),
        ("no images", r"annotations\.json' has no 'images' list"),
        ("bad bbox", r"annotation 2 .* has bbox \[1, 2, 3\]; expected \[x, y, width, height\]"),
        ("missing field", r"annotations\[1\] is .*expected an object with fields"),
        ("string id", r"images\[0\] has id='five'; expected an integer id"),
    ],
)
def test_malformed_annotations_raise_data_error(tmp_path: Path, change: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        CocoDetectionDataset(_write(tmp_path, _broken(change)), tmp_path / "img")


def test_unreadable_json_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"annotations\.json' is not valid JSON .*line 1"):
        CocoDetectionDataset(_write(tmp_path, '{"images": [}'), tmp_path / "img")
    with pytest.raises(DataError, match=r"holds a JSON list"):
        CocoDetectionDataset(_write(tmp_path, "[]"), tmp_path / "img")
    with pytest.raises(DataError, match=r"nope\.json' does not exist"):
        CocoDetectionDataset(tmp_path / "nope.json", tmp_path / "img")
    data = _coco()
    data["images"][1]["file_name"] = "gone.png"
    with pytest.raises(DataError, match=r"1 image file\(s\) .* do not exist .*gone\.png"):
        CocoDetectionDataset(_write(tmp_path, data), tmp_path / "img")


def test_corrupt_image_and_size_mismatch_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _coco())
    (tmp_path / "img" / "sub" / "b.jpg").write_bytes(b"garbage")
    dataset = CocoDetectionDataset(path, tmp_path / "img")
    with pytest.raises(DataError, match=r"could not decode image file .*sub/b\.jpg"):
        dataset[1]
    Image.new("RGB", (20, 40)).save(tmp_path / "img" / "a.png")  # rotated: boxes would be wrong
    with pytest.raises(DataError, match=r"a\.png' is 20x40 .* says 40x20"):
        dataset[0]
