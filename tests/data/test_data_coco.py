"""CocoDetectionDataset on a COCO JSON and images written into tmp_path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from brickzoo.data import CocoDetectionDataset, make_loader
from brickzoo.errors import DataError, DataWarning

# what _coco() changes: annotation 5 (zero width) and 6 (outside) dropped, 3 (partly outside) clipped
CHANGES = r"3 of the 6 annotations in .*annotations\.json' were changed"


def _warned(*args: Any, **kwargs: Any) -> CocoDetectionDataset:
    with pytest.warns(DataWarning, match=CHANGES):
        return CocoDetectionDataset(*args, **kwargs)


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
    dataset = _warned(_write(tmp_path, _coco()), tmp_path / "img")
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
    dataset = _warned(path, tmp_path / "img", include_crowd=True)
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
    dataset = _warned(_write(tmp_path, _coco()), tmp_path / "img", image_size=(10, 80))
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
    dataset = _warned(path, tmp_path / "img")
    with pytest.raises(DataError, match=r"could not decode image file .*sub/b\.jpg"):
        dataset[1]
    Image.new("RGB", (20, 40)).save(tmp_path / "img" / "a.png")  # rotated: boxes would be wrong
    with pytest.raises(DataError, match=r"a\.png' is 20x40 .* says 40x20"):
        dataset[0]


def test_bad_boxes_counted_in_one_warning_at_construction(tmp_path: Path) -> None:
    path = _write(tmp_path, _coco())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetectionDataset(path, tmp_path / "img")
        samples = [dataset[i] for i in range(len(dataset))] + [dataset[0]]  # reading warns no more
    assert len(caught) == 1 and caught[0].category is DataWarning
    message = str(caught[0].message)
    assert str(path) in message and "3 of the 6 annotations" in message
    assert "1 dropped for a non-positive width or height (annotation id 5)" in message
    assert "1 dropped as entirely outside its image (annotation id 6)" in message
    assert "1 clipped to its image as partly outside (annotation id 3)" in message
    assert "strict=True" in message
    assert [len(s["boxes"]) for s in samples[:3]] == [2, 1, 0]


def test_strict_turns_the_warning_into_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=CHANGES + r".*annotation id 5.*annotation id 6.*annotation id 3"):
        CocoDetectionDataset(_write(tmp_path, _coco()), tmp_path / "img", strict=True)
    data = _coco()
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (1, 2, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = CocoDetectionDataset(_write(tmp_path, data), tmp_path / "img", strict=True)
    assert dataset[0]["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0], [20.5, 0.0, 25.0, 20.0]]


def test_many_bad_boxes_name_the_first_ids(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"] = [
        {"id": 100 + i, "image_id": 5, "category_id": 7, "bbox": [1, 1, 3, -2.0 if i % 2 else 0.0]} for i in range(8)
    ]
    with pytest.warns(DataWarning, match=r"8 dropped for a non-positive .*ids 100, 101, 102, 103, 104 and 3 more"):
        dataset = CocoDetectionDataset(_write(tmp_path, data), tmp_path / "img")
    assert len(dataset[0]["boxes"]) == 0


def test_missing_annotations_list_warns_or_raises(tmp_path: Path) -> None:
    data = _coco()
    del data["annotations"]
    path = _write(tmp_path, data)
    message = r"annotations\.json' has no 'annotations' list, so none of its 3 images has a box"
    with pytest.warns(DataWarning, match=message):
        dataset = CocoDetectionDataset(path, tmp_path / "img")
    assert all(len(sample["boxes"]) == 0 for sample in dataset)
    with pytest.raises(DataError, match=message):
        CocoDetectionDataset(path, tmp_path / "img", strict=True)


def test_clipping_uses_the_header_size_when_the_json_has_none(tmp_path: Path) -> None:
    data = _coco()  # c.png is 16x8 and has no width/height in the JSON
    data["annotations"] = [{"id": 9, "image_id": 2, "category_id": 3, "bbox": [10, 4, 10, 10]}]
    with pytest.warns(DataWarning, match=r"1 of the 1 annotations.*1 clipped .*annotation id 9"):
        dataset = CocoDetectionDataset(_write(tmp_path, data), tmp_path / "img")
    assert dataset.sizes[2] == (16, 8)
    assert dataset[2]["boxes"].tolist() == [[10.0, 4.0, 16.0, 8.0]]


def test_image_sizes_in_the_json_must_be_positive_integers(tmp_path: Path) -> None:
    data = _coco()
    data["images"][0]["width"] = 0
    with pytest.raises(DataError, match=r"images\[0\] .*a\.png'\) has width=0, height=20; expected positive"):
        CocoDetectionDataset(_write(tmp_path, data), tmp_path / "img")
    data["images"][0]["width"] = 40.0  # some tools write floats
    with pytest.warns(DataWarning, match=CHANGES):
        assert CocoDetectionDataset(_write(tmp_path, data), tmp_path / "img").sizes[0] == (40, 20)
