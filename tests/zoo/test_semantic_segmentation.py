"""Tests of the semantic segmentation task family (brickzoo/bag_of_bricks/semantic_segmentation.py).

References are computed independently: torch.nn.functional / torchmetrics functional called
directly, numpy re-implementations (Dice, IoU, pixel accuracy, colour blending) and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_jaccard_index

from brickzoo import BrickCollection, BrickNotTrainable, BrickTrainable, check_onnx_parity, export_bricks_as_onnx
from brickzoo._draw import palette
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.bag_of_bricks._registry import get_factory
from brickzoo.bag_of_bricks.preprocessors import Preprocessor
from brickzoo.bag_of_bricks.semantic_segmentation import (
    SemanticSegmentationDecoder,
    SemanticSegmentationVisualizer,
    semantic_segmentation_bricks,
)
from brickzoo.errors import BrickDefinitionError, BrickInputError
from brickzoo.torchbricks_compat import BackboneResnet

LEVELS = [
    FeatureLevel("features/level2", channels=8, stride=4),
    FeatureLevel("features/level3", channels=16, stride=8),
    FeatureLevel("features/level4", channels=32, stride=16),
]
EXAMPLE_PNG = Path("/work/notes/png/segmentation_example.png")


def random_inputs(batch: int, height: int, width: int, num_classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images, random feature levels of LEVELS (sizes from their strides) and random masks."""
    generator = torch.Generator().manual_seed(seed)
    named = {
        "images": torch.rand(batch, 3, height, width, generator=generator),
        "masks": torch.randint(0, num_classes, (batch, height, width), generator=generator),
    }
    for level in LEVELS:
        size = (height // level.stride, width // level.stride)
        named[level.name] = torch.randn(batch, level.channels, *size, generator=generator)
    return named


def head(num_classes: int = 3, **kwargs: object) -> BrickCollection:
    torch.manual_seed(0)
    return BrickCollection({"seg": semantic_segmentation_bricks(num_classes, LEVELS, **kwargs)})  # type: ignore[arg-type]


def scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A real-looking image [H, W, 3] float32 with a ball (class 1) and a box (class 2), and its mask [H, W]."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([0.35 + 0.3 * yy / height, 0.55 + 0.2 * xx / width, 0.3 + 0.1 * np.sin(xx / 5.0)], axis=-1).astype(
        np.float32
    )
    image += np.random.default_rng(seed).normal(0.0, 0.03, image.shape).astype(np.float32)
    mask = np.zeros((height, width), dtype=np.int64)
    radius = min(height, width) * 0.22
    ball = (yy - height * 0.65) ** 2 + (xx - width * 0.35) ** 2 <= radius**2
    box = (yy > height * 0.45) & (yy < height * 0.8) & (xx > width * 0.62) & (xx < width * 0.9)
    image[ball] = (0.85, 0.8, 0.75)
    image[box] = (0.3, 0.3, 0.6)
    mask[ball] = 1
    mask[box] = 2
    return np.clip(image, 0.0, 1.0), mask


class TinyPyramid(nn.Module):
    """Hand-made conv levels at strides 4, 8 and 16 with the channels of LEVELS."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.level2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.level3 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.level4 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        level2 = self.level2(self.stem(x))
        level3 = self.level3(level2)
        return level2, level3, self.level4(level3)


def tiny_model(num_classes: int = 3, **kwargs: object) -> BrickCollection:
    """Preprocessor + TinyPyramid + segmentation head: a whole model from raw images."""
    torch.manual_seed(0)
    return BrickCollection(
        {
            "preprocessor": BrickNotTrainable(Preprocessor(), input_names=["images"], output_names=["normalized"]),
            "backbone": BrickTrainable(TinyPyramid(), ["normalized"], [level.name for level in LEVELS]),
            "seg": semantic_segmentation_bricks(num_classes, LEVELS, **kwargs),  # type: ignore[arg-type]
        }
    )


def numpy_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def numpy_dice_loss(logits: np.ndarray, masks: np.ndarray, ignore_index: int, smooth: float = 1.0) -> float:
    """1 - mean over classes of (2|P∩T| + s) / (|P| + |T| + s) over valid pixels, written with loops."""
    probabilities = numpy_softmax(logits.astype(np.float64))  # [B, C, H, W]
    valid = masks != ignore_index
    scores = []
    for c in range(logits.shape[1]):
        p = probabilities[:, c][valid]
        t = (masks[valid] == c).astype(np.float64)
        scores.append((2.0 * np.sum(p * t) + smooth) / (np.sum(p) + np.sum(t) + smooth))
    return 1.0 - float(np.mean(scores))


def numpy_miou_and_accuracy(predictions: np.ndarray, targets: np.ndarray, num_classes: int, ignore_index: int):
    """Mean IoU over classes seen in predictions or targets, and pixel accuracy, over non-ignored pixels."""
    valid = targets != ignore_index
    p, t = predictions[valid], targets[valid]
    ious = []
    for c in range(num_classes):
        union = np.sum((p == c) | (t == c))
        if union:
            ious.append(np.sum((p == c) & (t == c)) / union)
    return float(np.mean(ious)), float(np.mean(p == t))


# -- decoder --------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(
    batch=st.integers(1, 3),
    height_cells=st.integers(1, 5),
    width_cells=st.integers(1, 5),
)
def test_output_size_equals_input_size(batch: int, height_cells: int, width_cells: int) -> None:
    height, width = 16 * height_cells, 16 * width_cells  # multiples of the largest stride
    collection = head(num_classes=4)
    named = random_inputs(batch, height, width, num_classes=4)
    outputs = collection(named, groups={"MODEL"})
    logits, predictions = outputs["seg/logits"], outputs["seg/predictions"]
    assert logits.shape == (batch, 4, height, width)
    assert predictions.shape == (batch, height, width)
    assert predictions.dtype == torch.int64
    assert torch.equal(predictions, logits.argmax(dim=1))


def test_decoder_matches_hand_written_fpn() -> None:
    """Lateral 1x1, nearest upsample + add from the coarsest level, 3x3+BN+ReLU, 1x1, bilinear to the image."""
    decoder = SemanticSegmentationDecoder(num_classes=3, in_channels=[8, 16, 32], decoder_channels=12).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        decoder.fuse[1].running_mean.uniform_(-0.5, 0.5)
        decoder.fuse[1].running_var.uniform_(0.5, 2.0)
    named = random_inputs(2, 32, 48)
    features = [named[level.name] for level in LEVELS]
    with torch.no_grad():
        logits, predictions = decoder(named["images"], *features).values()
        lat = [F.conv2d(f, conv.weight, conv.bias) for f, conv in zip(features, decoder.laterals, strict=True)]
        x = lat[2]
        x = lat[1] + x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2
        x = lat[0] + x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        conv, bn, classifier = decoder.fuse[0], decoder.fuse[1], decoder.classifier
        x = F.conv2d(x, conv.weight, padding=1)
        x = (x - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
        x = torch.relu(x * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])
        x = F.conv2d(x, classifier.weight, classifier.bias)  # [2, 3, 8, 12]
        expected = torch.nn.Upsample(size=(32, 48), mode="bilinear", align_corners=False)(x)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(predictions, expected.argmax(dim=1))


def test_predictions_take_the_first_class_on_ties_like_numpy_argmax() -> None:
    decoder = SemanticSegmentationDecoder(num_classes=4, in_channels=[8, 16, 32], decoder_channels=12).eval()
    with torch.no_grad():  # classes 1 and 3 always tie for the highest score; class 0 and 2 tie below them
        decoder.classifier.weight.zero_()
        decoder.classifier.bias.copy_(torch.tensor([0.5, 2.0, 0.5, 2.0]))
        named = random_inputs(2, 32, 32)
        logits, predictions = decoder(named["images"], *(named[level.name] for level in LEVELS)).values()
    expected = np.argmax(logits.numpy(), axis=1)
    assert (expected == 1).all()
    np.testing.assert_array_equal(predictions.numpy(), expected)


def test_levels_are_ordered_by_stride_and_a_single_name_works() -> None:
    bricks = semantic_segmentation_bricks(3, [LEVELS[2], LEVELS[0], LEVELS[1]])
    assert bricks["decode"].input_names == ["images", "features/level2", "features/level3", "features/level4"]

    single = BrickCollection({"seg": semantic_segmentation_bricks(2, "feat", in_channels=5, images="pixels")})
    named = {"pixels": torch.rand(2, 3, 20, 28), "feat": torch.randn(2, 5, 3, 4)}  # any ratio works
    outputs = single(named, groups={"MODEL"})
    assert outputs["seg/logits"].shape == (2, 2, 20, 28)


def test_decoder_compiles_with_fullgraph() -> None:
    decoder = SemanticSegmentationDecoder(num_classes=3, in_channels=[8, 16, 32]).eval()
    named = random_inputs(2, 32, 32)
    features = [named[level.name] for level in LEVELS]
    compiled = torch.compile(decoder, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected, expected_predictions = decoder(named["images"], *features).values()
        logits, predictions = compiled(named["images"], *features).values()
    torch.testing.assert_close(logits, expected)
    assert torch.equal(predictions, expected_predictions)


# -- loss -----------------------------------------------------------------------------------
def masks_with_ignored_pixels(named: dict[str, torch.Tensor], fraction: float = 0.2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    ignored = torch.rand(named["masks"].shape, generator=generator) < fraction
    return torch.where(ignored, torch.full_like(named["masks"], 255), named["masks"])


def test_loss_equals_cross_entropy_with_ignore_index() -> None:
    collection = head(num_classes=3)
    named = random_inputs(2, 32, 32)
    named["masks"] = masks_with_ignored_pixels(named)
    outputs = collection(named, groups={"MODEL", "LOSS"})
    expected = F.cross_entropy(outputs["seg/logits"], named["masks"], ignore_index=255)
    torch.testing.assert_close(outputs["seg/loss_ce"], expected)
    # without Dice the loss names stay the same: loss_dice is a zero that takes no part in training
    assert set(collection.extract_losses(outputs)) == {"seg/loss_ce", "seg/loss_dice"}
    assert outputs["seg/loss_dice"].item() == 0.0 and not outputs["seg/loss_dice"].requires_grad
    # Hand computation of the same number: -log softmax at the target, averaged over non-ignored pixels.
    log_probabilities = numpy_softmax(outputs["seg/logits"].detach().numpy().astype(np.float64))
    masks = named["masks"].numpy()
    b, y, x = np.nonzero(masks != 255)
    by_hand = -np.mean(np.log(log_probabilities[b, masks[b, y, x], y, x]))
    assert abs(outputs["seg/loss_ce"].item() - by_hand) < 1e-5


def test_dice_equals_numpy_dice() -> None:
    collection = head(num_classes=4, dice_weight=0.7)
    named = random_inputs(2, 32, 32, num_classes=4)
    named["masks"] = masks_with_ignored_pixels(named)
    outputs = collection(named, groups={"MODEL", "LOSS"})
    logits, masks = outputs["seg/logits"], named["masks"]
    expected_dice = numpy_dice_loss(logits.detach().numpy(), masks.numpy(), ignore_index=255)
    expected_ce = F.cross_entropy(logits, masks, ignore_index=255)
    assert abs(outputs["seg/loss_dice"].item() - 0.7 * expected_dice) < 1e-5
    torch.testing.assert_close(outputs["seg/loss_ce"], expected_ce)
    assert outputs["seg/loss_ce"].requires_grad and outputs["seg/loss_dice"].requires_grad
    # the loss outputs are the terms to sum: no total that would count them twice
    assert set(collection.extract_losses(outputs)) == {"seg/loss_ce", "seg/loss_dice"}


def test_dice_of_a_perfect_confident_prediction_is_zero_and_ignored_pixels_do_not_count() -> None:
    collection = head(num_classes=3, dice_weight=1.0)
    masks = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(3))
    confident = 50.0 * F.one_hot(masks, 3).permute(0, 3, 1, 2).float()  # [2, 3, 16, 16]
    wrong = confident.roll(shifts=1, dims=1)  # confidently wrong everywhere
    ignored = torch.zeros_like(masks, dtype=torch.bool)
    ignored[:, :8] = True
    logits = torch.where(ignored[:, None], wrong, confident)
    outputs = collection(
        {"seg/logits": logits, "masks": torch.where(ignored, torch.full_like(masks, 255), masks)}, groups={"LOSS"}
    )
    assert outputs["seg/loss_dice"].item() < 1e-6
    assert outputs["seg/loss_ce"].item() < 1e-6


def test_all_ignored_masks_give_a_finite_zero_loss() -> None:
    collection = head(num_classes=3, dice_weight=0.5)
    named = random_inputs(1, 16, 16)
    named["masks"] = torch.full_like(named["masks"], 255)
    outputs = collection(named, groups={"MODEL", "LOSS"})
    assert outputs["seg/loss_ce"].item() == 0.0
    assert torch.isfinite(outputs["seg/loss_dice"])


def test_overfits_a_tiny_fixed_batch() -> None:
    collection = tiny_model(num_classes=3, dice_weight=0.5)
    images, masks = zip(*(scene(32, 32, seed=s) for s in range(2)), strict=True)
    named = {
        "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        "masks": torch.from_numpy(np.stack(masks)),
    }
    optimizer = torch.optim.Adam(collection.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = sum(collection.extract_losses(collection(named, groups={"MODEL", "LOSS"})).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    collection.eval()
    with torch.no_grad():
        collection(named, groups={"MODEL", "METRIC"})
    assert float(collection.summarize(reset=True)["seg/pixel_accuracy"]) > 0.9


# -- metrics --------------------------------------------------------------------------------
def test_metrics_equal_torchmetrics_functional_over_several_batches() -> None:
    num_classes = 4
    collection = head(num_classes=num_classes)
    generator = torch.Generator().manual_seed(5)
    all_predictions, all_masks = [], []
    for _ in range(3):
        masks = torch.randint(0, num_classes, (2, 16, 16), generator=generator)
        masks[torch.rand(masks.shape, generator=generator) < 0.1] = 255
        noise = torch.randint(0, num_classes, masks.shape, generator=generator)
        keep = torch.rand(masks.shape, generator=generator) < 0.6
        predictions = torch.where(keep & (masks != 255), masks, noise)  # partly right
        collection({"seg/predictions": predictions, "masks": masks}, groups={"METRIC"})
        all_predictions.append(predictions)
        all_masks.append(masks)
    values = collection.summarize(reset=True)
    assert set(values) == {"seg/miou", "seg/pixel_accuracy"}
    predictions, masks = torch.cat(all_predictions), torch.cat(all_masks)
    expected_miou = multiclass_jaccard_index(predictions, masks, num_classes, average="macro", ignore_index=255)
    expected_accuracy = multiclass_accuracy(predictions, masks, num_classes, average="micro", ignore_index=255)
    torch.testing.assert_close(values["seg/miou"], expected_miou)
    torch.testing.assert_close(values["seg/pixel_accuracy"], expected_accuracy)
    miou, accuracy = numpy_miou_and_accuracy(predictions.numpy(), masks.numpy(), num_classes, 255)
    assert abs(float(values["seg/miou"]) - miou) < 1e-6
    assert abs(float(values["seg/pixel_accuracy"]) - accuracy) < 1e-6
    assert 0.3 < accuracy < 0.95  # a non-trivial case
    assert collection.summarize() == {}  # reset


def test_perfect_predictions_give_one_and_ignored_pixels_do_not_count() -> None:
    collection = head(num_classes=3)
    masks = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    predictions = masks.clone()
    masks[:, :4] = 255
    predictions[:, :4] = (predictions[:, :4] + 1) % 3  # wrong, but only where the mask says ignore
    collection({"seg/predictions": predictions, "masks": masks}, groups={"METRIC"})
    values = collection.summarize(reset=True)
    assert float(values["seg/miou"]) == 1.0
    assert float(values["seg/pixel_accuracy"]) == 1.0


# -- input checks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make_masks", "got", "expected"),
    [
        (lambda m: m.float(), "got [2, 32, 32] float32", "expected int64 class indices [B, H, W] = [2, 32, 32]"),
        (lambda m: m.int(), "got [2, 32, 32] int32", "expected int64 class indices [B, H, W] = [2, 32, 32]"),
        (lambda m: m[:, :16, :16], "got [2, 16, 16] int64", "expected int64 class indices [B, H, W] = [2, 32, 32]"),
        (lambda m: m[:, None], "got [2, 1, 32, 32] int64", "expected int64 class indices [B, H, W] = [2, 32, 32]"),
        (lambda m: torch.where(m == 1, torch.full_like(m, 3), m), "got values from 0 to 3", "must be in [0, 2] or 255"),
        (lambda m: torch.where(m == 1, torch.full_like(m, -1), m), "got values from -1 to 2", "must be in [0, 2]"),
    ],
    ids=["float", "int32", "wrong_size", "wrong_ndim", "value_num_classes", "negative"],
)
def test_bad_masks_raise_brick_input_error(make_masks, got: str, expected: str) -> None:
    collection = head(num_classes=3)
    named = random_inputs(2, 32, 32)
    named["masks"] = make_masks(named["masks"])
    layout = "values" not in got  # dtype and shape: forward finds them; values: only check_inputs reads them
    for run in [collection.check_batch] + ([collection] if layout else []):
        for groups, brick in (({"MODEL", "LOSS"}, "loss"), ({"MODEL", "METRIC"}, "metrics")):
            with pytest.raises(BrickInputError) as error:
                run(named, groups=groups)
            message = str(error.value)
            assert message.startswith(f"brick 'seg/{brick}': masks:"), message
            assert got in message, message
            assert expected in message, message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names, expected num_classes=3"),
        ({"dice_weight": -1.0}, "dice_weight must be a finite number >= 0, got -1.0"),
        ({"alpha": 1.5}, "alpha must be in [0, 1], got 1.5"),
        ({"decoder_channels": 0}, "decoder_channels must be an int >= 1, got 0"),
        ({"ignore_index": 2.5}, "ignore_index must be an int, got 2.5"),
        ({"features": [LEVELS[0], FeatureLevel("other", 8, 4)]}, "distinct positive strides"),
        ({"features": "feat"}, "in_channels is needed"),
    ],
)
def test_bad_factory_arguments_raise_brick_definition_error(kwargs: dict, fragment: str) -> None:
    arguments = {"num_classes": 3, "features": LEVELS, **kwargs}
    with pytest.raises(BrickDefinitionError) as error:
        semantic_segmentation_bricks(**arguments)
    assert fragment in str(error.value)


def test_every_argument_problem_is_listed_at_once() -> None:
    with pytest.raises(BrickDefinitionError) as error:
        semantic_segmentation_bricks(1, LEVELS, dice_weight=-1.0, alpha=2.0)
    message = str(error.value)
    assert "num_classes" in message and "dice_weight" in message and "alpha" in message


def test_factory_is_registered_as_a_head() -> None:
    entry = get_factory("semantic_segmentation")
    assert entry.kind == "head"
    assert entry.factory is semantic_segmentation_bricks


# -- visualizer -----------------------------------------------------------------------------
def test_visualizer_colours_where_the_mask_says() -> None:
    height, width = 64, 80
    image, mask = scene(height, width)
    class_names = ["background", "ball", "box", "tree"]
    collection = head(num_classes=4, class_names=class_names, alpha=0.5)
    named = {
        "images": torch.from_numpy(image).permute(2, 0, 1)[None].repeat(2, 1, 1, 1),
        "seg/predictions": torch.from_numpy(np.stack([mask, np.zeros_like(mask)])),
    }
    drawings = collection(named, groups={"VISUALIZATION"})["seg/visualization"]
    assert len(drawings) == 2
    assert all(isinstance(d, Image.Image) and d.size == (width, height) and d.mode == "RGB" for d in drawings)

    original = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8).astype(np.float64)  # [H, W, 3]
    drawn = np.asarray(drawings[0], dtype=np.float64)
    colours = np.array(palette(4), dtype=np.float64)  # [4, 3]
    # Interior pixels (4-neighbours of the same class), below the legend: 50 % blend with the class colour.
    interior = np.zeros_like(mask, dtype=bool)
    interior[1:-1, 1:-1] = (
        (mask[1:-1, 1:-1] == mask[:-2, 1:-1])
        & (mask[1:-1, 1:-1] == mask[2:, 1:-1])
        & (mask[1:-1, 1:-1] == mask[1:-1, :-2])
        & (mask[1:-1, 1:-1] == mask[1:-1, 2:])
    )
    interior[: height // 2] = False
    for c in (1, 2):
        where = interior & (mask == c)
        assert where.sum() > 50
        expected = 0.5 * original[where] + 0.5 * colours[c]
        assert np.abs(drawn[where] - expected).max() <= 1.0
    background = interior & (mask == 0)
    assert np.array_equal(drawn[background], original[background])
    # Outlines: the boundary pixels of the ball carry its full colour.
    outline = (mask == 1) & ~interior
    outline[: height // 2] = False
    assert np.abs(drawn[outline] - colours[1]).max(axis=-1).mean() <= 1.0
    # Legend (top-left, where the scene has no object): the colours of the classes present, not of absent ones.
    legend = drawn[: height // 2, : width // 2].reshape(-1, 3)
    for c, present in ((1, True), (2, True), (3, False)):
        found = np.any(np.all(np.abs(legend - colours[c]) <= 1, axis=-1))
        assert found == present, (class_names[c], found)
    # An all-background prediction draws nothing.
    assert np.array_equal(np.asarray(drawings[1]), original.astype(np.uint8))


def test_visualizer_example_png(tmp_path: Path) -> None:
    image, mask = scene(128, 160)
    drawing = SemanticSegmentationVisualizer(["background", "ball", "box"], alpha=0.5)(image, mask)
    paths = [tmp_path / "segmentation_example.png"]
    if EXAMPLE_PNG.parent.is_dir():
        paths.append(EXAMPLE_PNG)
    for path in paths:
        drawing.save(path)
        reopened = np.asarray(Image.open(path))
        assert reopened.shape == (128, 160, 3)
        assert np.array_equal(reopened, np.asarray(drawing))


# -- real bricks, export, nesting -----------------------------------------------------------
def test_on_a_torchvision_resnet18_backbone() -> None:
    torch.manual_seed(0)
    level = FeatureLevel("features", channels=512, stride=32)
    collection = BrickCollection(
        {
            "preprocessor": BrickNotTrainable(Preprocessor(), input_names=["images"], output_names=["normalized"]),
            "backbone": BrickTrainable(BackboneResnet(torchvision.models.resnet18()), ["normalized"], ["features"]),
            "seg": semantic_segmentation_bricks(3, level, dice_weight=0.5),
        }
    )
    named = {"images": torch.rand(2, 3, 64, 96), "masks": torch.randint(0, 3, (2, 64, 96))}
    outputs = collection(named, groups={"MODEL", "LOSS"})
    assert outputs["features"].shape[-2:] == (64 // 32, 96 // 32)  # the stride the FeatureLevel declares
    assert outputs["seg/logits"].shape == (2, 3, 64, 96)
    sum(collection.extract_losses(outputs).values()).backward()
    conv1 = collection["backbone"].model.conv1.weight.grad
    assert conv1 is not None and torch.isfinite(conv1).all() and conv1.abs().sum() > 0


def test_onnx_export_with_dynamic_batch(tmp_path: Path) -> None:
    collection = tiny_model(num_classes=3).eval()
    path = export_bricks_as_onnx(tmp_path / "seg.onnx", collection, {"images": torch.rand(2, 3, 32, 32)})
    report = check_onnx_parity(path, collection, {"images": torch.rand(3, 3, 32, 32)})
    assert report.batch_size == 3
    assert report.max_abs_diff["seg/logits"] < 1e-4, report
    assert report.max_abs_diff["seg/predictions"] == 0.0, report


def test_two_heads_nested_side_by_side_do_not_collide() -> None:
    torch.manual_seed(0)
    collection = BrickCollection(
        {
            "seg_a": semantic_segmentation_bricks(3, LEVELS),
            "seg_b": semantic_segmentation_bricks(5, LEVELS[1:], targets="masks_b", dice_weight=0.5),
        }
    )
    named = random_inputs(2, 32, 32)
    named["masks_b"] = torch.randint(0, 5, (2, 32, 32))
    outputs = collection(named)
    assert outputs["seg_a/logits"].shape == (2, 3, 32, 32)
    assert outputs["seg_b/logits"].shape == (2, 5, 32, 32)
    assert len(outputs["seg_a/visualization"]) == len(outputs["seg_b/visualization"]) == 2
    assert set(collection.extract_losses(outputs)) == {
        "seg_a/loss_ce",
        "seg_a/loss_dice",
        "seg_b/loss_ce",
        "seg_b/loss_dice",
    }
    values = collection.summarize(reset=True)
    assert set(values) == {"seg_a/miou", "seg_a/pixel_accuracy", "seg_b/miou", "seg_b/pixel_accuracy"}
    expected_b = multiclass_accuracy(outputs["seg_b/predictions"], named["masks_b"], 5, average="micro")
    torch.testing.assert_close(values["seg_b/pixel_accuracy"], expected_b)
