"""YoloDetectionDataset on an Ultralytics-layout set generated in tmp_path: round trip, errors named by file/line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brickzoo.data import YoloDetectionDataset, make_loader
from brickzoo.errors import DataError, DataWarning
from brickzoo.zoo._datasets import dataset_problems
from brickzoo.zoo._validate import Problems

# (file stem, (width, height), pixel boxes xyxy with class indices) per split
SETS: dict[str, list[tuple[str, tuple[int, int], list[tuple[int, list[float]]]]]] = {
    "train": [
        ("a", (40, 30), [(1, [4.0, 6.0, 20.0, 30.0]), (0, [0.0, 0.0, 40.0, 30.0])]),
        ("b", (64, 20), [(2, [10.5, 2.0, 11.5, 19.0])]),
        ("c", (16, 16), []),  # an empty label file: no objects
    ],
    "val": [("d", (30, 50), [(2, [1.0, 2.0, 3.0, 4.0])])],
}


def _pixels(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _line(label: int, box: list[float], size: tuple[int, int]) -> str:
    """A YOLO label line: class, then centre and size as fractions of the image's width and height."""
    (x1, y1, x2, y2), (width, height) = box, size
    values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
    return f"{label} " + " ".join(f"{v:.6f}" for v in values)


def _write(root: Path, names: str = "{0: cat, 1: dog, 2: bird}", yaml_extra: str = "") -> Path:
    for split, items in SETS.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for number, (stem, size, objects) in enumerate(items):
            Image.fromarray(_pixels(size, number)).save(root / "images" / split / f"{stem}.png")
            lines = [_line(label, box, size) for label, box in objects]
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n{yaml_extra}")
    return root


def test_generated_set_round_trips(tmp_path: Path) -> None:
    root = _write(tmp_path)
    for split, items in SETS.items():
        dataset = YoloDetectionDataset(root, split=split)
        assert dataset.class_names == ["cat", "dog", "bird"] and dataset.num_classes_for("detection") == 3
        assert len(dataset) == len(items)
        for index, (stem, size, objects) in enumerate(items):
            sample = dataset[index]
            assert dataset.files[index].name == f"{stem}.png"
            assert np.array_equal(
                (sample["images"] * 255).round().byte().permute(1, 2, 0).numpy(), _pixels(size, index)
            )
            expected = np.asarray([box for _, box in objects], dtype=np.float32).reshape(-1, 4)
            assert sample["boxes"].dtype == torch.float32 and sample["box_labels"].dtype == torch.int64
            assert np.allclose(sample["boxes"].numpy(), expected, atol=1e-3)  # 6 decimals of the fractions
            assert sample["box_labels"].tolist() == [label for label, _ in objects]


def test_names_as_a_list_yaml_file_given_directly_and_resized_boxes(tmp_path: Path) -> None:
    root = _write(tmp_path, names="[cat, dog, bird]", yaml_extra="nc: 3\n")
    dataset = YoloDetectionDataset(root / "data.yaml", split="train", image_size=(15, 80))
    sample = dataset[0]  # 40x30 stretched to 80x15: x doubles, y halves
    assert sample["images"].shape == (3, 15, 80)
    assert np.allclose(sample["boxes"].numpy(), [[8, 3, 40, 15], [0, 0, 80, 15]], atol=1e-3)
    batch = next(iter(make_loader(YoloDetectionDataset(root, image_size=32), batch_size=3, shuffle=False)))
    assert batch["boxes"].shape == (3, 2, 4) and batch["box_labels"].tolist()[2] == [-1, -1]


def test_split_from_a_list_file_and_the_default_folder(tmp_path: Path) -> None:
    root = _write(tmp_path)
    (root / "subset.txt").write_text("images/train/b.png\n\n./images/val/d.png\n")
    (root / "data.yaml").write_text("names: [cat, dog, bird]\ntrain: subset.txt\n")
    dataset = YoloDetectionDataset(root, split="train")
    assert [p.name for p in dataset.files] == ["b.png", "d.png"] and dataset[1]["box_labels"].tolist() == [2]
    assert len(YoloDetectionDataset(root, split="val")) == 1  # not in the YAML: images/val


def test_missing_label_file_means_no_objects_and_labels_follow_the_last_images_folder(tmp_path: Path) -> None:
    root = _write(tmp_path)
    (root / "labels" / "train" / "c.txt").unlink()
    nested = root / "images" / "train" / "images" / "x.png"  # labels/ replaces the *last* images/ folder
    nested.parent.mkdir()
    Image.new("RGB", (10, 10)).save(nested)
    (root / "images" / "train" / "labels").mkdir()
    (root / "images" / "train" / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    dataset = YoloDetectionDataset(root)
    assert [p.name for p in dataset.background_images] == ["c.png"]
    assert dataset[2]["boxes"].shape == (0, 4)
    index = [p.name for p in dataset.files].index("x.png")
    assert dataset.label_files[index] == root / "images" / "train" / "labels" / "x.txt"
    assert np.allclose(dataset[index]["boxes"].numpy(), [[4, 4, 6, 6]])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 0.5 0.5 0.2", r"b\.txt' line 2 has 4 fields; expected 5: class cx cy w h"),
        ("1 0.1 0.1 0.2 0.1 0.2 0.2", r"line 2 has 7 fields; expected 5: class cx cy w h \(a segmentation polygon"),
        (
            "3 0.5 0.5 0.2 0.2",
            r"line 2 has class '3'; expected a class index in \[0, 2\] \(data.yaml names 3 classes\)",
        ),
        ("1.5 0.5 0.5 0.2 0.2", r"line 2 has class '1.5'"),
        ("1 0.5 zero 0.2 0.2", r"line 2 has a value that is not a number .*'zero'"),
        ("1 0.5 nan 0.2 0.2", r"line 2 has a value that is not finite"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = _write(tmp_path)
    label_file = root / "labels" / "train" / "b.txt"
    label_file.write_text(label_file.read_text() + line + "\n")
    with pytest.raises(DataError, match=message):
        YoloDetectionDataset(root)


def test_coordinates_outside_the_image_are_clipped_and_counted(tmp_path: Path) -> None:
    root = _write(tmp_path)
    (root / "labels" / "train" / "a.txt").write_text("0 0.9 0.5 0.4 0.2\n1 1.5 0.5 0.2 0.2\n0 0.5 0.5 0.5 0.5\n")
    with pytest.warns(
        DataWarning, match=r"2 of the 4 boxes of split 'train' .* 1 clipped .*a\.txt:1; 1 dropped .*a\.txt:2"
    ):
        dataset = YoloDetectionDataset(root)
    assert np.allclose(dataset[0]["boxes"].numpy(), [[28, 12, 40, 18], [10, 7.5, 30, 22.5]])
    assert dataset[0]["box_labels"].tolist() == [0, 0]
    with pytest.raises(DataError, match="were changed.*drop strict=True"):
        YoloDetectionDataset(root, strict=True)


def test_yaml_and_layout_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        YoloDetectionDataset(tmp_path / "nowhere")
    root = _write(tmp_path)
    (root / "data.yaml").rename(root / "coco.yaml")
    with pytest.raises(DataError, match=r"holds no data\.yaml \(YAML files there: \['coco.yaml'\]\)"):
        YoloDetectionDataset(root)
    for text, message in [
        ("names: {0: a, 2: b}\n", r"names with keys \[0, 2\]; expected the class indices 0 .. 1"),
        ("names: [a, b]\nnc: 3\n", "nc=3 but 2 names"),
        ("nc: 2\n", "names=None; expected a non-empty list"),
        ("names: [a]\ntrain: nowhere/\n", r"names train: 'nowhere/', but .* is neither a folder of images nor a \.txt"),
        ("names: [a\n", "is not valid YAML"),
    ]:
        (root / "data.yaml").write_text(text)
        with pytest.raises(DataError, match=message):
            YoloDetectionDataset(root)
    (root / "data.yaml").write_text("names: [a]\ntrain: pictures\n")
    (root / "pictures").mkdir()
    Image.new("RGB", (4, 4)).save(root / "pictures" / "p.png")
    with pytest.raises(DataError, match="is not under a folder named 'images'"):
        YoloDetectionDataset(root)


def test_skip_unreadable_leaves_out_corrupt_images_with_a_count(tmp_path: Path) -> None:
    root = _write(tmp_path)
    (root / "images" / "train" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"could not decode image file .*b\.png"):
        YoloDetectionDataset(root)[1]
    with pytest.warns(
        DataWarning,
        match=r"skipped 1 of the 3 samples in split 'train' of .*data\.yaml' because a file cannot be decoded .*b\.png",
    ):
        dataset = YoloDetectionDataset(root, skip_unreadable=True)
    assert [p.name for p in dataset.files] == ["a.png", "c.png"] and dataset[1]["boxes"].shape == (0, 4)


def test_zoo_configs_can_name_the_yolo_dataset(tmp_path: Path) -> None:
    problems = Problems("recipe.yaml")
    data = {"name": "yolo", "args": {"root": str(tmp_path)}, "train": {"split": "train"}, "val": {"splt": "val"}}
    dataset_problems(problems, "yolo", data, {"detect": "detection", "classify": "classification"})
    assert problems.items == [
        ("data.val.splt", "unknown argument of YoloDetectionDataset; did you mean ['split']?"),
        (
            "model.heads.classify",
            "a classification head needs classification targets, but dataset 'yolo' has only ['detection']",
        ),
    ]
