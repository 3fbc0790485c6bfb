"""ImageFolderDataset and SegmentationFolderDataset on folders written with PIL into tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brickzoo.data import ImageFolderDataset, SegmentationFolderDataset, collate_named
from brickzoo.data._folders import rare_classes
from brickzoo.errors import DataError, DataWarning


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def class_root(tmp_path: Path) -> Path:
    root = tmp_path / "classes"
    _solid(root / "dog" / "b.png", (0, 0, 255), (20, 16))
    _solid(root / "dog" / "a.PNG", (0, 0, 200))
    _solid(root / "cat" / "x.bmp", (255, 0, 0))
    _solid(root / "cat" / "nested" / "y.png", (200, 0, 0), (7, 9))
    _solid(root / "bird" / "z.png", (0, 255, 0))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / ".cache").mkdir()
    return root


def test_class_folders_sorted_give_labels(class_root: Path) -> None:
    dataset = ImageFolderDataset(class_root, image_size=(6, 8))
    assert dataset.class_names == ["bird", "cat", "dog"] and dataset.num_classes == 3
    assert dataset.num_classes_for("classification") == 3
    names = [(path.relative_to(class_root).as_posix(), label) for path, label in dataset.samples]
    assert names == [("bird/z.png", 0), ("cat/nested/y.png", 1), ("cat/x.bmp", 1), ("dog/a.PNG", 2), ("dog/b.png", 2)]
    assert dataset.labels.tolist() == [0, 1, 1, 2, 2]
    sample = dataset[3]
    assert sample["images"].shape == (3, 6, 8) and sample["images"].dtype == torch.float32
    assert sample["labels"].dtype == torch.int64 and int(sample["labels"]) == 2
    expected = torch.tensor([0.0, 0.0, 200 / 255]).view(3, 1, 1).expand(3, 6, 8)
    torch.testing.assert_close(sample["images"], expected, atol=1e-6, rtol=0)
    batch = collate_named([dataset[i] for i in range(len(dataset))])
    assert batch["images"].shape == (5, 3, 6, 8) and batch["labels"].tolist() == [0, 1, 1, 2, 2]


def test_native_sizes_and_collation_hint(class_root: Path) -> None:
    dataset = ImageFolderDataset(class_root)
    assert dataset[4]["images"].shape == (3, 16, 20)
    with pytest.raises(DataError, match="image_size"):
        collate_named([dataset[3], dataset[4]])


def test_class_names_choose_and_order_folders(class_root: Path) -> None:
    dataset = ImageFolderDataset(class_root, image_size=4, class_names=["dog", "bird"])
    assert dataset.labels.tolist() == [0, 0, 1]
    with pytest.raises(DataError, match=r"missing folders \['fish'\]"):
        ImageFolderDataset(class_root, class_names=["dog", "fish"])


def test_folder_problems_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderDataset(tmp_path / "empty_root")
    _solid(tmp_path / "root" / "a" / "1.png", (1, 2, 3))
    (tmp_path / "root" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*b' holds no images"):
        ImageFolderDataset(tmp_path / "root")


def test_corrupt_image_is_named(class_root: Path) -> None:
    corrupt = class_root / "dog" / "c.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not really a jpeg")
    dataset = ImageFolderDataset(class_root, image_size=8)  # listing does not decode
    index = [path for path, _ in dataset.samples].index(corrupt)
    with pytest.raises(DataError, match=r"could not decode image file .*c\.jpg"):
        dataset[index]
    dataset[0]  # the others still load
    with pytest.raises(DataError, match=r"c\.jpg.*not a readable image"):
        ImageFolderDataset(class_root, verify=True)


def _mask(path: Path, values: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8))
    if mode == "P":
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
        image.frombytes(values.astype(np.uint8).tobytes())  # keep the indices exactly
    image.save(path)


BLOCKS = np.kron(np.array([[0, 1, 2, 0], [2, 255, 1, 0], [0, 0, 1, 1], [2, 2, 0, 255]]), np.ones((2, 2), dtype=int))


@pytest.fixture
def seg_dirs(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    _solid(images / "a.jpg", (10, 20, 30), (8, 8))
    _solid(images / "b.png", (40, 50, 60), (8, 8))
    _mask(masks / "a.png", BLOCKS)
    _mask(masks / "b.png", np.zeros((8, 8)), mode="P")
    _mask(masks / "unused.png", np.full((8, 8), 9))  # a mask without image is not read
    return images, masks


def test_images_and_masks_matched_by_stem(seg_dirs: tuple[Path, Path]) -> None:
    dataset = SegmentationFolderDataset(*seg_dirs, num_classes=3)
    assert [(i.name, m.name) for i, m in dataset.pairs] == [("a.jpg", "a.png"), ("b.png", "b.png")]
    sample = dataset[0]
    assert sample["images"].shape == (3, 8, 8) and sample["images"].dtype == torch.float32
    assert sample["masks"].dtype == torch.int64
    assert np.array_equal(sample["masks"].numpy(), BLOCKS)
    assert dataset.class_names == ["background", "class_1", "class_2"]
    assert dataset.num_classes_for("segmentation") == 3


def test_masks_resized_with_nearest(seg_dirs: tuple[Path, Path]) -> None:
    dataset = SegmentationFolderDataset(*seg_dirs, image_size=4, num_classes=3)
    sample = dataset[0]
    assert sample["images"].shape == (3, 4, 4)
    # halving 2x2 blocks with nearest neighbour gives back the block values
    assert np.array_equal(sample["masks"].numpy(), BLOCKS[::2, ::2])
    assert sample["masks"].shape == (4, 4)


def test_num_classes_inferred_from_masks(seg_dirs: tuple[Path, Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class 0..2 is in a mask: nothing to warn about
        assert SegmentationFolderDataset(*seg_dirs).num_classes == 3  # largest index 2, 255 ignored


def _mask_folders(tmp_path: Path, masks: list[np.ndarray]) -> tuple[Path, Path]:
    for number, values in enumerate(masks):
        _solid(tmp_path / "i" / f"{number:04d}.png", (0, 0, 0), values.shape[::-1])
        _mask(tmp_path / "m" / f"{number:04d}.png", values)
    return tmp_path / "i", tmp_path / "m"


def test_stray_mask_value_warns_with_counts_files_and_the_fix(tmp_path: Path) -> None:
    masks = [np.array([[0, 1], [2, 1]])] * 3 + [np.array([[0, 254], [1, 2]])]  # an anti-aliased 254
    folders = _mask_folders(tmp_path, masks)
    with pytest.warns(DataWarning) as caught:
        dataset = SegmentationFolderDataset(*folders)
    assert len(caught) == 1 and dataset.num_classes == 255
    message = str(caught[0].message)
    assert "inferred as 255 from the largest mask value 254" in message and str(folders[1]) in message
    assert "251 class value(s) in [0, 254] appear in fewer than 0.1% of the 4 masks" in message
    assert "no mask holds class value(s) 3-253" in message  # 254 is in 1 of 4 masks: not rare here
    assert "num_classes=" in message and "ignore_index=" in message and "(now 255)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegmentationFolderDataset(*folders, num_classes=255)  # set explicitly: no warning
        SegmentationFolderDataset(*folders, ignore_index=254)  # the stray value ignored: 0..2 all present


def test_rare_means_fewer_than_a_thousandth_of_the_masks() -> None:
    # hand-made presence counts (class value -> masks holding it) for 1001 masks: 0.1% is 1.001 masks
    presence = {0: 1001, 1: 1000, 2: 1, 3: 2, 255: 1}
    assert rare_classes(presence, 1001, 6, ignore_index=255) == [(2, 1), (4, 0), (5, 0)]
    assert rare_classes(presence, 1001, 6, ignore_index=4) == [(2, 1), (5, 0)]
    assert rare_classes({0: 1, 2: 1}, 999, 3, ignore_index=255) == [(1, 0)]  # under 1000 masks only gaps are rare
    assert rare_classes({}, 0, 1, ignore_index=255) == []


def test_palette_masks_give_their_indices(tmp_path: Path) -> None:
    values = np.array([[0, 3], [4, 255]])
    _solid(tmp_path / "i" / "p.png", (0, 0, 0), (2, 2))
    _mask(tmp_path / "m" / "p.png", values, mode="P")
    assert Image.open(tmp_path / "m" / "p.png").mode == "P"
    with pytest.warns(DataWarning, match=r"no mask holds class value\(s\) 1-2"):  # a gap in the indices
        dataset = SegmentationFolderDataset(tmp_path / "i", tmp_path / "m")
    assert dataset.num_classes == 5
    assert np.array_equal(dataset[0]["masks"].numpy(), values)


def test_missing_mask_raises_naming_the_image(seg_dirs: tuple[Path, Path]) -> None:
    images, masks = seg_dirs
    _solid(images / "c.png", (0, 0, 0), (8, 8))
    with pytest.raises(DataError, match=r"1 image\(s\) .* no mask .*'c\.png'"):
        SegmentationFolderDataset(images, masks)


def test_mask_problems_raise_data_error(seg_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = seg_dirs
    with pytest.raises(DataError, match=r"mask .*a\.png' holds values \[2\] outside \[0, 1\]"):
        SegmentationFolderDataset(images, masks, num_classes=2)[0]
    Image.new("RGB", (8, 8)).save(masks / "b.png")
    with pytest.raises(DataError, match=r"b\.png' has mode RGB"):
        SegmentationFolderDataset(images, masks, num_classes=3)[1]
    _mask(masks / "b.png", np.zeros((6, 8)))
    with pytest.raises(DataError, match=r"b\.png' is 8x6 .*expected the same size"):
        SegmentationFolderDataset(images, masks, num_classes=3)[1]
    (masks / "b.png").unlink()
    Image.new("L", (8, 8)).save(masks / "b.jpg")
    with pytest.raises(DataError, match=r"stored losslessly.*'b\.jpg'"):
        SegmentationFolderDataset(images, masks, num_classes=3)
    _mask(masks / "b.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="share the stem 'b'"):
        SegmentationFolderDataset(images, masks, num_classes=3)
    (tmp_path / "no_images").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        SegmentationFolderDataset(tmp_path / "no_images", masks)


def test_corrupt_segmentation_image_is_named(seg_dirs: tuple[Path, Path]) -> None:
    images, masks = seg_dirs
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"could not decode image file .*images/b\.png"):
        SegmentationFolderDataset(images, masks, num_classes=3)[1]
