"""VocDetectionDataset on a Pascal VOC folder generated in tmp_path; VOC-style palette masks keep their indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brickzoo.data import VOC_CLASS_NAMES, SegmentationFolderDataset, VocDetectionDataset
from brickzoo.errors import DataError, DataWarning

# id -> ((width, height), [(class name, pixel-edge box xyxy, difficult)])
ANNOTATIONS: dict[str, tuple[tuple[int, int], list[tuple[str, list[int], bool]]]] = {
    "2007_000001": ((50, 40), [("dog", [3, 4, 20, 30], False), ("person", [0, 0, 50, 40], True)]),
    "2007_000002": ((30, 60), [("cat", [10, 0, 11, 1], False)]),
    "2007_000003": ((20, 20), []),
}


def _object(name: str, box: list[int], difficult: bool) -> str:
    """A VOC <object>: 1-based pixel indices with both ends included, from pixel-edge coordinates."""
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{int(difficult)}</difficult>"
        f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def _xml(image_id: str, size: tuple[int, int], objects: str) -> str:
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>{objects}</annotation>"
    )


def _write(root: Path) -> Path:
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for number, (image_id, (size, objects)) in enumerate(ANNOTATIONS.items()):
        pixels = np.random.default_rng(number).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}{'.png' if number == 2 else '.jpg'}")
        text = "".join(_object(*item) for item in objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, size, text))
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ANNOTATIONS) + "\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("2007_000002\n")
    return root


def test_generated_set_round_trips(tmp_path: Path) -> None:
    root = _write(tmp_path)
    dataset = VocDetectionDataset(root, split="train")
    assert dataset.class_names == list(VOC_CLASS_NAMES) and dataset.num_classes_for("detection") == 20
    assert len(dataset) == 3 and dataset.files[2].name == "2007_000003.png"
    for index, (size, objects) in enumerate(ANNOTATIONS.values()):
        sample = dataset[index]
        assert sample["images"].shape == (3, size[1], size[0])
        expected = torch.tensor([box for _, box, _ in objects], dtype=torch.float32).reshape(-1, 4)
        assert torch.equal(sample["boxes"], expected)
        assert sample["box_labels"].tolist() == [VOC_CLASS_NAMES.index(name) for name, _, _ in objects]
    assert len(VocDetectionDataset(root, split="val")) == 1


def test_difficult_objects_kept_or_dropped_and_own_classes(tmp_path: Path) -> None:
    root = _write(tmp_path)
    assert VocDetectionDataset(root, keep_difficult=False)[0]["box_labels"].tolist() == [VOC_CLASS_NAMES.index("dog")]
    dataset = VocDetectionDataset(root, class_names=["person", "dog", "cat"], image_size=(20, 100))
    sample = dataset[0]  # 50x40 stretched to 100x20: x doubles, y halves
    assert sample["box_labels"].tolist() == [1, 0]
    assert torch.equal(sample["boxes"], torch.tensor([[6.0, 2.0, 40.0, 15.0], [0.0, 0.0, 100.0, 20.0]]))


def test_boxes_outside_the_size_are_clipped_and_counted(tmp_path: Path) -> None:
    root = _write(tmp_path)
    objects = _object("dog", [-1, 5, 10, 45], False) + _object("cat", [1, 1, 5, 5], False)
    (root / "Annotations" / "2007_000001.xml").write_text(_xml("2007_000001", (50, 40), objects))
    with pytest.warns(
        DataWarning, match=r"1 of the 3 boxes of split 'train' .* clipped to it \(2007_000001\.xml object 0\)"
    ):
        dataset = VocDetectionDataset(root)
    assert dataset[0]["boxes"].tolist() == [[0.0, 5.0, 10.0, 40.0], [1.0, 1.0, 5.0, 5.0]]
    with pytest.raises(DataError, match="drop strict=True"):
        VocDetectionDataset(root, strict=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<annotation><object/></annotation>", r"has no <size>; expected <size><width>"),
        (
            _xml("x", (50, 40), "").replace("<width>50</width>", "<width>fifty</width>"),
            r"<size> has width='fifty'; expected a number",
        ),
        (
            _xml("x", (50, 40), _object("dog", [10, 4, 5, 30], False)),
            r"object 0 has xmin=11, ymin=5, xmax=5, ymax=30; expected xmax >= xmin",
        ),
        (
            _xml("x", (50, 40), _object("dgo", [1, 1, 5, 5], False)),
            r"object 0 has the class name 'dgo', which is not in class_names; did you mean \['dog'\]",
        ),
        (_xml("x", (50, 40), "<object><name>dog</name></object>"), r"object 0 has no <name> or <bndbox>"),
        (
            _xml("x", (50, 40), _object("dog", [1, 1, 5, 5], False).replace("<xmax>5", "<xmax>5.x")),
            r"object 0 has xmax='5.x'",
        ),
        ("<annotation><size>", r"is not valid XML \(line 1, column 18"),
    ],
)
def test_bad_annotation_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    root = _write(tmp_path)
    (root / "Annotations" / "2007_000002.xml").write_text(content)
    with pytest.raises(DataError, match=r"2007_000002\.xml.*" + message):
        VocDetectionDataset(root)


def test_layout_problems_are_named(tmp_path: Path) -> None:
    root = _write(tmp_path)
    with pytest.raises(DataError, match=r"split file .*test\.txt' does not exist \(splits found: \['train', 'val'\]\)"):
        VocDetectionDataset(root, split="test")
    (root / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(DataError, match=r"no image for id '2007_000002'"):
        VocDetectionDataset(root)


def test_image_size_must_match_the_annotation(tmp_path: Path) -> None:
    root = _write(tmp_path)
    Image.new("RGB", (31, 60)).save(root / "JPEGImages" / "2007_000002.jpg")
    with pytest.raises(DataError, match=r"is 31x60 \(WxH\) but .*2007_000002\.xml' says 30x60"):
        VocDetectionDataset(root)[1]


def test_skip_unreadable_leaves_out_corrupt_images(tmp_path: Path) -> None:
    root = _write(tmp_path)
    data = (root / "JPEGImages" / "2007_000001.jpg").read_bytes()
    (root / "JPEGImages" / "2007_000001.jpg").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(
        DataWarning, match=r"skipped 1 of the 3 samples .*2007_000001\.jpg' \(OSError: image file is truncated"
    ):
        dataset = VocDetectionDataset(root, skip_unreadable=True)
    assert dataset.ids == ["2007_000002", "2007_000003"] and dataset[0]["box_labels"].tolist() == [7]


def test_voc_style_palette_masks_keep_their_indices_when_resized(tmp_path: Path) -> None:
    """A VOC SegmentationClass PNG: palette indices 0-20 and 255 for object borders, read as class indices."""
    values = np.kron(np.array([[0, 15, 15, 255], [0, 7, 255, 20]]), np.ones((4, 4), dtype=np.uint8)).astype(np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (16, 8), (9, 9, 9)).save(tmp_path / "images" / "a.jpg")
    mask = Image.fromarray(values, mode="L").convert("P")
    mask.putpalette([channel for i in range(256) for channel in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    mask.frombytes(values.tobytes())  # indices as they are, whatever the palette's colours
    mask.save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "masks" / "a.png").mode == "P"
    dataset = SegmentationFolderDataset(tmp_path / "images", tmp_path / "masks", image_size=(4, 8), num_classes=21)
    assert dataset[0]["masks"].tolist() == [
        [0, 0, 15, 15, 15, 15, 255, 255],
        [0, 0, 15, 15, 15, 15, 255, 255],
        [0, 0, 7, 7, 255, 255, 20, 20],
        [0, 0, 7, 7, 255, 255, 20, 20],
    ]
