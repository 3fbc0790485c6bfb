"""Reading image files as they are displayed: EXIF orientation, 16-bit, float, palette, alpha, CMYK.

Every file is written with Pillow into tmp_path; the expectations are computed with numpy from
the values written (or from the stored pixels, turned by hand with ``np.rot90``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image
from torchvision.io import ImageReadMode, decode_image

from brickzoo.data import CocoDetectionDataset, ImageFolderDataset, SegmentationFolderDataset, load_image
from brickzoo.data._common import image_to_tensor
from brickzoo.errors import DataError

QUADRANTS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def _quadrant_pixels(height: int = 16, width: int = 24) -> np.ndarray:
    """``[H, W, 3]`` uint8: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    h, w = height // 2, width // 2
    pixels[:h, :w], pixels[:h, w:], pixels[h:, :w], pixels[h:, w:] = QUADRANTS
    return pixels


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


def _save_turned_jpeg(path: Path, pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Save a JPEG tagged with ``orientation``; return its stored (decoded, not turned) pixels ``[H, W, 3]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=_exif(orientation), quality=95, subsampling=0)
    with Image.open(path) as image:
        assert image.getexif()[ExifTags.Base.Orientation] == orientation
        return np.asarray(image.convert("RGB"))


# EXIF orientation -> how the stored pixels are turned for display, written with numpy
TURN = {
    3: lambda a: np.rot90(a, 2),  # upside down
    6: lambda a: np.rot90(a, -1),  # stored rotated left: turn 90 degrees clockwise
    8: lambda a: np.rot90(a, 1),  # stored rotated right: turn 90 degrees counter-clockwise
}


def _as_uint8(tensor: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 (exact for 8-bit sources)."""
    return (tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    stored = _save_turned_jpeg(tmp_path / "photo.jpg", _quadrant_pixels(), orientation)
    image = load_image(tmp_path / "photo.jpg")
    expected = np.ascontiguousarray(TURN[orientation](stored))
    assert image.shape == (3, *expected.shape[:2]) and image.dtype == torch.float32
    np.testing.assert_array_equal(_as_uint8(image), expected)
    # where the stored top-left (red) quadrant is displayed
    corner = {3: (-1, -1), 6: (0, -1), 8: (-1, 0)}[orientation]
    np.testing.assert_allclose(image[:, corner[0], corner[1]].numpy(), [1, 0, 0], atol=0.05)


def test_exif_orientation_in_image_folder_and_resize(tmp_path: Path) -> None:
    stored = _save_turned_jpeg(tmp_path / "root" / "a" / "p.jpg", _quadrant_pixels(), 6)
    dataset = ImageFolderDataset(tmp_path / "root", verify=True)
    np.testing.assert_array_equal(_as_uint8(dataset[0]["images"]), np.rot90(stored, -1))
    resized = ImageFolderDataset(tmp_path / "root", image_size=(12, 8))[0]["images"]
    expected = Image.fromarray(np.ascontiguousarray(np.rot90(stored, -1))).resize((8, 12), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(_as_uint8(resized), np.asarray(expected))


def _write_coco(tmp_path: Path, image: dict[str, object], bbox: list[float]) -> Path:
    data = {
        "images": [image],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_sizes_follow_exif_orientation(tmp_path: Path) -> None:
    stored = _save_turned_jpeg(tmp_path / "img" / "p.jpg", _quadrant_pixels(16, 24), 6)  # displayed 16 wide, 24 high
    bbox = [2.0, 18.0, 4.0, 5.0]  # inside the displayed image only (y + h = 23 <= 24, but > 16)
    for image in ({"id": 1, "file_name": "p.jpg"}, {"id": 1, "file_name": "p.jpg", "width": 16, "height": 24}):
        dataset = CocoDetectionDataset(_write_coco(tmp_path, image, bbox), tmp_path / "img", strict=True)
        assert dataset.sizes == [(16, 24)]
        sample = dataset[0]
        np.testing.assert_array_equal(_as_uint8(sample["images"]), np.rot90(stored, -1))
        assert sample["boxes"].tolist() == [[2.0, 18.0, 6.0, 23.0]]
    stored_size = {"id": 1, "file_name": "p.jpg", "width": 24, "height": 16}
    dataset = CocoDetectionDataset(_write_coco(tmp_path, stored_size, [1, 1, 2, 2]), tmp_path / "img")
    turned = r"p\.jpg' is 16x24 .* says 24x16.*EXIF orientation 6.*JSON's size is the stored"
    with pytest.raises(DataError, match=turned):
        dataset[0]


def _mask_png(path: Path, values: np.ndarray, orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(values.astype(np.uint8)).convert("P")
    mask.putpalette([v for i in range(256) for v in (i, i, i)])
    mask.frombytes(values.astype(np.uint8).tobytes())
    if orientation is None:
        mask.save(path)
    else:
        mask.save(path, exif=_exif(orientation))


@pytest.mark.parametrize("mask_turned_too", [False, True])
def test_segmentation_mask_stays_aligned_with_turned_image(tmp_path: Path, mask_turned_too: bool) -> None:
    stored = _save_turned_jpeg(tmp_path / "images" / "a.jpg", _quadrant_pixels(8, 12), 6)
    classes = np.kron(np.array([[1, 2], [3, 4]]), np.ones((4, 6), dtype=np.int64))  # quadrants of the stored image
    displayed_classes = np.rot90(classes, -1)
    if mask_turned_too:  # stored like the photo, with the same tag
        _mask_png(tmp_path / "masks" / "a.png", classes, orientation=6)
    else:  # drawn on the displayed photo, no tag
        _mask_png(tmp_path / "masks" / "a.png", np.ascontiguousarray(displayed_classes))
    sample = SegmentationFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=5)[0]
    np.testing.assert_array_equal(_as_uint8(sample["images"]), np.rot90(stored, -1))
    np.testing.assert_array_equal(sample["masks"].numpy(), displayed_classes)
    for k in range(1, 5):  # every class region has the colour of its quadrant
        colour = sample["images"].permute(1, 2, 0)[sample["masks"] == k].mean(0)
        np.testing.assert_allclose(colour.numpy(), QUADRANTS[k - 1] / 255, atol=0.15)


SIXTEEN = np.array([[0, 1, 255, 256], [32768, 65534, 65535, 12345]], dtype=np.uint16)


def _grey(image: torch.Tensor) -> np.ndarray:
    assert image.shape[0] == 3 and torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    return image[0].numpy()


def test_sixteen_bit_png_is_scaled_by_its_range(tmp_path: Path) -> None:
    Image.fromarray(SIXTEEN).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode == "I;16"  # what this Pillow opens a 16-bit grey PNG as
    np.testing.assert_allclose(_grey(load_image(tmp_path / "g.png")), SIXTEEN / 65535.0, rtol=0, atol=1e-7)
    reference = decode_image(str(tmp_path / "g.png"), mode=ImageReadMode.RGB)  # torchvision: uint16
    np.testing.assert_allclose(load_image(tmp_path / "g.png").numpy(), reference.numpy() / 65535.0, atol=1e-7)


def test_sixteen_bit_big_endian_tiff_and_mode_i(tmp_path: Path) -> None:
    Image.frombytes("I;16B", (4, 2), SIXTEEN.astype(">u2").tobytes()).save(tmp_path / "g.tif")
    with Image.open(tmp_path / "g.tif") as image:
        assert image.mode == "I;16B"
    np.testing.assert_allclose(_grey(load_image(tmp_path / "g.tif")), SIXTEEN / 65535.0, atol=1e-7)
    # a 16-bit PGM opens as mode I (32-bit integers holding 0..65535), as 16-bit PNGs did in older Pillow
    (tmp_path / "g.pgm").write_bytes(b"P5\n4 2\n65535\n" + SIXTEEN.astype(">u2").tobytes())
    with Image.open(tmp_path / "g.pgm") as image:
        assert image.mode == "I"
    np.testing.assert_allclose(_grey(load_image(tmp_path / "g.pgm")), SIXTEEN / 65535.0, atol=1e-7)


def test_sixteen_bit_resize_matches_the_eight_bit_path(tmp_path: Path) -> None:
    levels = np.random.default_rng(0).integers(0, 256, (9, 13)).astype(np.uint16)
    Image.fromarray(levels * 257).save(tmp_path / "g16.png")  # the same grey levels in 16 bits
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "g8.png")
    wide = load_image(tmp_path / "g16.png", image_size=(5, 7))
    assert wide.shape == (3, 5, 7)
    torch.testing.assert_close(wide, load_image(tmp_path / "g8.png", image_size=(5, 7)), atol=1 / 255, rtol=0)
    Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)).save(tmp_path / "flat.png")
    flat = load_image(tmp_path / "flat.png", image_size=4)
    torch.testing.assert_close(flat, torch.full((3, 4, 4), 40000 / 65535), atol=1e-6, rtol=0)


def test_float_and_32_bit_images_taken_in_range_or_refused(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(_grey(load_image(tmp_path / "f.tif")), values)
    Image.fromarray(values * 3).save(tmp_path / "big.tif")
    with pytest.raises(DataError, match=r"big\.tif'.*mode F\) holds values in \[0\.0, 3\.0\]; expected .*\[0, 1\]"):
        load_image(tmp_path / "big.tif")
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(DataError, match=r"i32\.tif'.*mode I, 32 bits per sample.*\[0, 70000\]"):
        load_image(tmp_path / "i32.tif")
    Image.fromarray(np.array([[0, 7]], dtype=np.int32)).save(tmp_path / "small.tif")  # declared 32-bit: refused
    with pytest.raises(DataError, match=r"small\.tif'.*32 bits per sample"):
        load_image(tmp_path / "small.tif")


PALETTE = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 250], [7, 7, 7]], dtype=np.uint8)
INDICES = np.array([[0, 1, 2], [3, 2, 1]], dtype=np.uint8)


def _palette_image(transparency: int | bytes | None) -> Image.Image:
    image = Image.new("P", (3, 2))
    image.putpalette(PALETTE.ravel().tolist())
    image.frombytes(INDICES.tobytes())
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


# Pillow warns when palette transparency given as bytes is dropped by a direct convert("RGB")
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("transparency", [None, 1, bytes([255, 0, 128, 255])])
def test_palette_images_give_their_colours_and_drop_alpha(tmp_path: Path, transparency: int | bytes | None) -> None:
    _palette_image(transparency).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P" and ("transparency" in image.info) == (transparency is not None)
    tensor = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(_as_uint8(tensor), PALETTE[INDICES])
    np.testing.assert_array_equal(
        _as_uint8(tensor), decode_image(str(tmp_path / "p.png"), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
    )


def test_alpha_is_dropped_for_rgba_la_and_pa(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 128], [1, 2, 3, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(_as_uint8(load_image(tmp_path / "rgba.png")), rgba[..., :3])
    reference = decode_image(str(tmp_path / "rgba.png"), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(_as_uint8(load_image(tmp_path / "rgba.png")), reference)
    la = np.array([[[10, 0], [200, 255], [77, 9]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_as_uint8(load_image(tmp_path / "la.png")), np.repeat(la[..., :1], 3, axis=2))
    pa = _palette_image(bytes([255, 0, 128, 255])).convert("PA")  # Pillow cannot write PA files
    np.testing.assert_array_equal(_as_uint8(image_to_tensor(pa, None)), PALETTE[INDICES])


def test_one_bit_grey_and_cmyk(tmp_path: Path) -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    Image.fromarray(bits).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as image:
        assert image.mode == "1"
    np.testing.assert_array_equal(_grey(load_image(tmp_path / "b.png")), bits.astype(np.float32))
    grey = np.array([[0, 17, 255], [128, 3, 99]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_array_equal(_grey(load_image(tmp_path / "l.png")), grey / np.float32(255))
    cmyk = np.array([[[100, 50, 0, 30], [0, 0, 0, 255], [255, 0, 128, 0]]], dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    c, m, y, k = (cmyk[..., i].astype(np.float64) / 255 for i in range(4))
    expected = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=-1)  # [H, W, 3]
    np.testing.assert_allclose(load_image(tmp_path / "c.tif").permute(1, 2, 0).numpy(), expected, atol=1 / 255)


def test_reading_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"load_image: image file .*nope\.png' does not exist"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(DataError, match=r"load_image: .*folder\.png' is a folder; expected an image file"):
        load_image(tmp_path / "folder.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=r"load_image: could not decode image file .*bad\.jpg'"):
        load_image(tmp_path / "bad.jpg")
    Image.new("RGB", (2, 2)).save(tmp_path / "ok.png")
    with pytest.raises(DataError, match=r"ok\.png'.*image_size must be positive, got 0"):
        load_image(tmp_path / "ok.png", image_size=0)
    with pytest.raises(DataError, match=r"ok\.png'.*image_size must be an int or \(height, width\), got 'ab'"):
        load_image(tmp_path / "ok.png", image_size="ab")  # type: ignore[arg-type]


def test_image_size_forms(tmp_path: Path) -> None:
    Image.new("RGB", (5, 3), (10, 20, 30)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").shape == (3, 3, 5)
    assert load_image(str(tmp_path / "ok.png"), image_size=4).shape == (3, 4, 4)
    assert load_image(tmp_path / "ok.png", image_size=torch.Size([6, 2])).shape == (3, 6, 2)
