"""skip_unreadable on the folder and COCO datasets: corrupt images left out with one counted warning, else an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from brickzoo.data import CocoDetectionDataset, ImageFolderDataset, SegmentationFolderDataset
from brickzoo.errors import DataError, DataWarning


def _truncated_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise((32, 32), 60).convert("RGB").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not decode


def test_image_folder(tmp_path: Path) -> None:
    for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png", "dog/e.png", "dog/f.png", "dog/g.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    for name in ("cat/bad.jpg", "dog/z1.jpg", "dog/z2.jpg", "dog/z3.jpg", "dog/z4.jpg", "dog/z5.jpg"):
        _truncated_jpeg(tmp_path / name)
    (tmp_path / "dog" / "z6.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"could not decode image file .*bad\.jpg"):
        ImageFolderDataset(tmp_path)[2]  # cat/a.png, cat/b.png, cat/bad.jpg
    pattern = r"skipped 7 of the 14 samples in .*: '.*bad\.jpg' \(OSError: .*z4\.jpg.*; and 2 more"
    with pytest.warns(DataWarning, match=pattern):
        dataset = ImageFolderDataset(tmp_path, skip_unreadable=True)
    assert [path.name for path, _ in dataset.samples] == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png"]
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_segmentation_folder_skips_pairs_whose_image_or_mask_is_unreadable(tmp_path: Path) -> None:
    for stem in ("a", "b", "c"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{stem}.png")
        Image.new("L", (4, 4), 1).save(tmp_path / "masks" / f"{stem}.png")
    _truncated_jpeg(tmp_path / "images" / "d.jpg")
    Image.new("L", (32, 32), 1).save(tmp_path / "masks" / "d.png")
    (tmp_path / "masks" / "b.png").write_bytes(b"broken")
    with pytest.warns(DataWarning, match=r"skipped 2 of the 4 samples .*masks/b\.png'.*images/d\.jpg'"):
        dataset = SegmentationFolderDataset(
            tmp_path / "images", tmp_path / "masks", num_classes=2, skip_unreadable=True
        )
    assert [image.name for image, _ in dataset.pairs] == ["a.png", "c.png"]


def test_coco_skips_the_image_and_its_annotations(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    _truncated_jpeg(tmp_path / "b.jpg")
    annotations = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.jpg"}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 10, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2, 2, 4, 4]},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(annotations))
    with pytest.warns(DataWarning, match=r"skipped 1 of the 2 samples in .*coco\.json'.*b\.jpg"):
        dataset = CocoDetectionDataset(tmp_path / "coco.json", tmp_path, skip_unreadable=True)
    assert dataset.image_ids == [1] and dataset[0]["boxes"].tolist() == [[2.0, 2.0, 6.0, 6.0]]
    with pytest.raises(DataError, match=r"image file .*b\.jpg' is not a readable image"):  # its size is read
        CocoDetectionDataset(tmp_path / "coco.json", tmp_path)


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    _truncated_jpeg(tmp_path / "only" / "x.jpg")
    with pytest.raises(DataError, match=r"none of the 1 images in .* can be decoded, e\.g\. '.*x\.jpg'"):
        ImageFolderDataset(tmp_path, skip_unreadable=True)
