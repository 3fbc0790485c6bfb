"""brickzoo.predict: results in the original image's pixels, checked against hand computations.

The model here is made of stand-in heads whose answers are known exactly: the detector boxes the
red pixels of the model input, the segmenter marks them, the classifier names the dominant
colour. The real post-processing, letterbox/stretch and mapping code runs on top, so a box or mask
that comes back anywhere but around the red rectangle of the original image is a mapping error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from brickzoo import BrickCollection, BrickNotTrainable, BrickPerImageVisualization, BrickTrainable, ImagePrediction
from brickzoo.bag_of_bricks.image_classification import ClassificationHead, ClassificationVisualizer
from brickzoo.bag_of_bricks.object_detection import DetectionPostprocessor, DetectionVisualizer
from brickzoo.bag_of_bricks.semantic_segmentation import SemanticSegmentationDecoder, SemanticSegmentationVisualizer
from brickzoo.errors import BrickDefinitionError, DataError
from brickzoo.predict import PREDICTIONS_FILE, PredictionWriter, Predictor, find_heads, mask_image, predict

RED = (230, 30, 30)
GREY = (120, 120, 120)
COLOURS = ["red", "green", "blue"]


def _red(images: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` bool: pixels at least half-covered by the red of RED over GREY (bilinear edges)."""
    return (images[:, 0] - images[:, 1]) > 0.39


class RedBoxes(nn.Module):
    """A stand-in dense detector: one location, whose box is the bounding box (pixel edges) of the red pixels."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        red = _red(images)  # [B, H, W]
        height, width = red.shape[-2:]
        columns, rows = red.any(dim=1), red.any(dim=2)  # [B, W], [B, H]
        x = torch.arange(width, dtype=torch.float32)
        y = torch.arange(height, dtype=torch.float32)
        x1 = torch.where(columns, x, float(width)).amin(dim=1)
        x2 = torch.where(columns, x + 1, 0.0).amax(dim=1)
        y1 = torch.where(rows, y, float(height)).amin(dim=1)
        y2 = torch.where(rows, y + 1, 0.0).amax(dim=1)
        boxes = torch.stack([x1, y1, x2, y2], dim=1)[:, None]  # [B, 1, 4]
        batch = images.shape[0]
        return {
            "cls_logits": torch.full((batch, 1, 1), 8.0),
            "box_regression": boxes,
            "centerness": torch.full((batch, 1), 8.0),
        }


class RedMask(SemanticSegmentationDecoder):
    """A stand-in segmentation decoder: class 1 where the model input is red, 0 elsewhere."""

    def __init__(self) -> None:
        super().__init__(num_classes=2, in_channels=[3])

    def forward(self, images: torch.Tensor, *features: torch.Tensor) -> dict[str, torch.Tensor]:
        red = _red(images).float()  # [B, H, W]
        logits = torch.stack([1 - red, red], dim=1)  # [B, 2, H, W]
        return {"logits": logits, "predictions": logits.argmax(dim=1)}


def colour_classifier() -> ClassificationHead:
    """A real classification head whose logits are 20x the mean red, green and blue."""
    head = ClassificationHead(in_channels=3, num_classes=3)
    with torch.no_grad():
        head.fc.weight.copy_(20 * torch.eye(3))
        head.fc.bias.zero_()
    return head


def stand_in_model() -> BrickCollection:
    rel = lambda keys: {key: f"./{key}" for key in keys}  # noqa: E731
    return BrickCollection(
        {
            "pool": BrickNotTrainable(lambda images: images.mean(dim=(2, 3)), ["images"], ["colour"]),
            "classify": {
                "classify": BrickTrainable(colour_classifier(), ["colour"], rel(ClassificationHead.OUTPUTS)),
                "visualize": BrickPerImageVisualization(
                    ClassificationVisualizer(COLOURS), ["images", "./predictions", "./scores"], ["./visualization"]
                ),
            },
            "segment": {
                "decode": BrickTrainable(RedMask(), ["images"], rel(("logits", "predictions"))),
                "visualize": BrickPerImageVisualization(
                    SemanticSegmentationVisualizer(["background", "red"]),
                    ["images", "./predictions"],
                    ["./visualization"],
                ),
            },
            "detect": {
                "head": BrickNotTrainable(RedBoxes(), ["images"], rel(("cls_logits", "box_regression", "centerness"))),
                "postprocess": BrickNotTrainable(
                    DetectionPostprocessor(max_detections=3),
                    ["./cls_logits", "./box_regression", "./centerness", "images"],
                    rel(DetectionPostprocessor.OUTPUTS),
                ),
                "visualize": BrickPerImageVisualization(
                    DetectionVisualizer(1, ["red thing"]),
                    ["images", "./boxes", "./scores", "./labels"],
                    ["./visualization"],
                ),
            },
        }
    )


MODEL = stand_in_model()


def photo(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A grey image with a red rectangle covering pixels ``x1 <= x < x2``, ``y1 <= y < y2``."""
    array = np.empty((height, width, 3), np.uint8)
    array[:] = GREY
    x1, y1, x2, y2 = box
    array[y1:y2, x1:x2] = RED
    return Image.fromarray(array)


def model_pixel(width: int, height: int, size: tuple[int, int], resize: str) -> tuple[float, float]:
    """How many original pixels one model pixel spans, ``(x, y)``: the letterbox by hand (or the stretch)."""
    if resize == "stretch":
        return width / size[1], height / size[0]
    scale = min(size[0] / height, size[1] / width)
    return width / round(width * scale), height / round(height * scale)


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(48, 400),
    height=st.integers(48, 400),
    corner=st.tuples(st.floats(0.0, 0.6), st.floats(0.0, 0.6)),
    extent=st.tuples(st.floats(0.25, 0.4), st.floats(0.25, 0.4)),
    resize=st.sampled_from(["letterbox", "stretch"]),
    size=st.sampled_from([(64, 64), (48, 80)]),
)
def test_boxes_and_masks_come_back_in_the_original_pixels(width, height, corner, extent, resize, size) -> None:
    box = (
        int(corner[0] * width),
        int(corner[1] * height),
        int(corner[0] * width) + max(8, int(extent[0] * width)),
        int(corner[1] * height) + max(8, int(extent[1] * height)),
    )
    result = predict(MODEL, photo(width, height, box), input_size=size, resize=resize)[0]
    assert (result.width, result.height) == (width, height) and result.orig_shape == (height, width)
    pixel_x, pixel_y = model_pixel(width, height, size, resize)
    tolerance = np.array([pixel_x, pixel_y, pixel_x, pixel_y]) + 0.01  # half a model pixel per side, and rounding
    detect = result.heads["detect"]
    assert len(detect) == 1 and detect.names == ["red thing"] and detect.scores[0] > 0.9
    assert np.all(np.abs(detect.boxes[0].numpy() - np.array(box)) <= tolerance), (detect.boxes[0], box, tolerance)

    mask = result.heads["segment"].mask.numpy()  # [H, W]
    assert mask.shape == (height, width)
    truth = np.zeros((height, width), np.int64)
    truth[box[1] : box[3], box[0] : box[2]] = 1
    wrong_y, wrong_x = np.nonzero(mask != truth)
    band_x, band_y = math.ceil(pixel_x) + 1, math.ceil(pixel_y) + 1  # nearest-neighbour edges
    near_edge = (np.minimum(abs(wrong_x - box[0]), abs(wrong_x - box[2])) <= band_x) | (
        np.minimum(abs(wrong_y - box[1]), abs(wrong_y - box[3])) <= band_y
    )
    assert near_edge.all()
    counts = result.heads["segment"].pixel_counts
    assert counts == {"background": int((mask == 0).sum()), "red": int((mask == 1).sum())}
    assert sum(counts.values()) == width * height


def test_a_photo_sized_image_by_hand() -> None:
    """300x170 into 64: scale 64/300, resized to 64x36, 14 rows of padding on top (hand computation)."""
    box = (150, 40, 230, 120)
    result = predict(MODEL, photo(300, 170, box), input_size=64)[0]
    assert result.transform == {
        "resize": "letterbox",
        "input_size": [64, 64],
        "scale": [64 / 300, 36 / 170],
        "offset": [0, 14],
    }
    # the rectangle lands at x 32..49.07 and y 14 + 8.47..14 + 25.41 of the model input: pixels 32..49 and 22..39
    expected = [32 * 300 / 64, (22 - 14) * 170 / 36, 49 * 300 / 64, (39 - 14) * 170 / 36]
    np.testing.assert_allclose(result.heads["detect"].boxes[0].numpy(), expected, atol=1e-3)


def test_classification_results_and_json_record() -> None:
    result = predict(MODEL, photo(90, 60, (0, 0, 90, 60)), input_size=32)[0]
    classify = result.heads["classify"]
    assert classify.class_name == "red" and classify.class_index == 0 and classify.score > 0.99
    assert [name for name, _ in classify.best(2)] == ["red", "green"]
    record = json.loads(result.to_json())
    assert record["file"] is None and (record["width"], record["height"]) == (90, 60)
    assert record["heads"]["classify"] == {
        "task": "classification",
        "class": "red",
        "index": 0,
        "score": round(classify.score, 4),
        "top_k": [{"class": n, "score": round(s, 4)} for n, s in classify.best(3)],
    }
    assert record["heads"]["detect"]["task"] == "detection" and record["heads"]["detect"]["dropped_in_padding"] == 0
    (row,) = record["heads"]["detect"]["detections"]
    assert set(row) == {"box", "class", "index", "score"} and row["class"] == "red thing"
    assert record["heads"]["segment"] == {
        "task": "segmentation",
        "class_names": ["background", "red"],
        "pixel_counts": {"background": 0, "red": 90 * 60},
    }
    assert result.to_dict({"segment/mask": "m.png", "detect/visualization": "d.png"})["pictures"] == {"detect": "d.png"}


def test_every_kind_of_input_gives_the_same_answer(tmp_path: Path) -> None:
    picture = photo(120, 70, (20, 10, 60, 50))
    array = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)  # [3, H, W] uint8
    picture.save(tmp_path / "rgb.png")
    picture.convert("RGBA").save(tmp_path / "rgba.png")
    picture.quantize(colors=4).save(tmp_path / "palette.png")
    # stored turned by 90 degrees with EXIF orientation 6: displayed upright, as the others
    exif = Image.Exif()
    exif[0x0112] = 6
    picture.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif)
    inputs = [tmp_path / "rgb.png", str(tmp_path / "rgba.png"), tmp_path / "palette.png", tmp_path / "turned.png"]
    results = Predictor(MODEL, input_size=48, batch_size=3)([*inputs, picture, array, array.float() / 255])
    boxes = [r.heads["detect"].boxes for r in results]
    for result, other in zip(results, boxes, strict=True):
        assert (result.width, result.height) == (120, 70)
        torch.testing.assert_close(other, boxes[0])
    assert [r.file for r in results] == [Path(p) for p in inputs] + [None] * 3


def test_sixteen_bit_grey_files_are_read_by_their_range(tmp_path: Path) -> None:
    Image.fromarray(np.full((40, 50), 65535, np.uint16)).save(tmp_path / "deep.png")
    result = predict(MODEL, tmp_path / "deep.png", input_size=32)[0]
    assert (result.width, result.height) == (50, 40)
    probabilities = result.heads["classify"].probabilities
    torch.testing.assert_close(probabilities, torch.full((3,), 1 / 3))  # white: equal red, green and blue


def test_pictures_are_drawn_on_the_original_image() -> None:
    pictures = predict(MODEL, photo(300, 260, (40, 40, 120, 100)), input_size=64)[0].draw()
    assert pictures["classify"].size == (300, 260) and pictures["segment"].size == (300, 260)
    assert pictures["detect"].size == (300, 260)  # the detection visualizer enlarges only images under 256 pixels
    segment = np.asarray(pictures["segment"])
    assert segment[70, 80].tolist() != list(RED) and segment[200, 200].tolist() == list(GREY)


def test_heads_are_found_with_their_class_names() -> None:
    heads = find_heads(MODEL)
    assert {name: spec.task for name, spec in heads.items()} == {
        "classify": "classification",
        "segment": "segmentation",
        "detect": "detection",
    }
    assert heads["detect"].outputs == {"boxes": "detect/boxes", "scores": "detect/scores", "labels": "detect/labels"}
    assert heads["classify"].class_names == COLOURS
    assert find_heads(MODEL, {"classify": ["r", "g", "b"]})["classify"].class_names == ["r", "g", "b"]
    with pytest.raises(BrickDefinitionError, match="'classify' .*predicts 3 classes but has 2 class names"):
        find_heads(MODEL, {"classify": ["r", "g"]})


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: predict(MODEL, torch.rand(8, 8, 3), input_size=32), DataError, r"image 0 has shape \[8, 8, 3\]"),
        (lambda: predict(MODEL, torch.rand(3, 8, 8) * 255, input_size=32), DataError, r"expected float values in"),
        (lambda: predict(MODEL, [torch.rand(3, 8, 8), 3], input_size=32), DataError, "image 1 is a int"),
        (lambda: predict(MODEL, "missing.png", input_size=32), DataError, "'missing.png' does not exist"),
        (lambda: Predictor(MODEL, input_size=32, resize="crop"), DataError, "resize must be one of"),
        (lambda: Predictor(MODEL, input_size=0), DataError, "size must be positive"),
        (lambda: Predictor(MODEL, input_size=32, batch_size=0), DataError, "batch_size must be an int >= 1"),
        (lambda: Predictor(MODEL, input_size=32, heads=["seg"]), BrickDefinitionError, r"it has \['classify'"),
        (
            lambda: Predictor(BrickCollection({"x": BrickTrainable(nn.Identity(), ["images"], ["y"])}), input_size=8),
            BrickDefinitionError,
            "no classification, segmentation or detection head",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_chosen_heads_only_and_training_mode_kept() -> None:
    MODEL.train()
    result = Predictor(MODEL, input_size=32, heads=["detect"])(photo(64, 40, (5, 5, 30, 30)))[0]
    assert list(result.heads) == ["detect"] and MODEL.training
    MODEL.eval()


def test_the_writer_writes_everything_or_nothing(tmp_path: Path) -> None:
    results = predict(MODEL, [photo(80, 50, (10, 10, 40, 40)), photo(50, 80, (5, 30, 30, 70))], input_size=32)
    out = tmp_path / "out"
    with PredictionWriter(out) as writer:
        first = writer.write(results[0], "a")
        second = writer.write(results[1], "a")  # the same name: files get a _2
    assert first["segment/mask"] == "a_segment_mask.png" and second["segment/mask"] == "a_segment_mask_2.png"
    assert sorted(p.name for p in out.iterdir()) == sorted([*first.values(), *second.values(), PREDICTIONS_FILE])
    records = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert [(r["width"], r["height"]) for r in records] == [(80, 50), (50, 80)]
    assert records[1]["heads"]["segment"]["mask"] == "a_segment_mask_2.png"
    assert records[1]["pictures"]["detect"] == "a_detect_visualization_2.png"
    with Image.open(out / "a_segment_mask_2.png") as saved:
        assert saved.mode == "P" and saved.size == (50, 80)
        np.testing.assert_array_equal(np.asarray(saved), results[1].heads["segment"].mask.numpy())

    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError, match="stop"), PredictionWriter(out) as writer:
        writer.write(results[0], "b")
        raise RuntimeError("stop")
    assert sorted(p.name for p in out.iterdir()) == before  # no b_* file, no staging folder
    with pytest.raises(RuntimeError, match="stop"), PredictionWriter(tmp_path / "new") as writer:
        raise RuntimeError("stop")
    assert not (tmp_path / "new").exists()


def test_mask_pngs_keep_class_indices_beyond_a_palette(tmp_path: Path) -> None:
    mask = torch.tensor([[0, 3, 299], [1, 2, 3]])
    mask_image(mask, num_classes=300).save(tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as saved:
        np.testing.assert_array_equal(np.asarray(saved), mask.numpy())
    image = mask_image(torch.tensor([[0, 1]]), num_classes=2)
    assert image.getpalette()[:6] == [0, 0, 0, *SemanticSegmentationVisualizer(["a", "b"]).colours[1].astype(int)]


def test_results_are_image_predictions() -> None:
    result = predict(MODEL, photo(40, 40, (0, 0, 20, 20)), input_size=32, keep_images=False)[0]
    assert isinstance(result, ImagePrediction) and result.image is None
    with pytest.raises(DataError, match="no image kept to draw on"):
        result.draw()


def test_the_docstring_examples_run() -> None:
    import doctest

    import brickzoo._predict_files
    import brickzoo._predict_run

    for module in (brickzoo._predict_files, brickzoo._predict_run):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_multilabel_heads_list_every_predicted_class() -> None:
    head = ClassificationHead(in_channels=3, num_classes=3, multilabel=True)
    with torch.no_grad():
        head.fc.weight.copy_(20 * torch.eye(3))
        head.fc.bias.fill_(-10.0)  # sigmoid(20 * mean - 10): above 0.5 where the mean is above 0.5
    model = BrickCollection(
        {
            "pool": BrickNotTrainable(lambda images: images.mean(dim=(2, 3)), ["images"], ["colour"]),
            "tags": {"classify": BrickTrainable(head, ["colour"], {k: f"./{k}" for k in ClassificationHead.OUTPUTS})},
        }
    )
    yellow = Image.new("RGB", (30, 20), (250, 240, 10))
    result = predict(model, yellow, input_size=16, class_names={"tags": COLOURS})[0]
    record = result.to_dict()["heads"]["tags"]
    assert record["predicted"] == ["red", "green"] and record["class"] == "red"
    assert result.draw()["tags"].size == (30, 20)
