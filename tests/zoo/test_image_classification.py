"""Tests of the image classification task family (brickzoo/bag_of_bricks/image_classification.py).

References are independent of the code under test: numpy hand computations, torchmetrics'
functional API called directly, pillow pixels read back from disk and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multilabel_accuracy,
    multilabel_confusion_matrix,
    multilabel_f1_score,
)

from brickzoo import BrickCollection, BrickNotTrainable, BrickTrainable, Stage, check_onnx_parity, export_bricks_as_onnx
from brickzoo._draw import palette
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.bag_of_bricks._registry import get_factory
from brickzoo.bag_of_bricks.image_classification import ClassificationHead, image_classification_bricks
from brickzoo.bag_of_bricks.preprocessors import Preprocessor
from brickzoo.errors import BrickDefinitionError, BrickInputError
from brickzoo.torchbricks_compat import BackboneResnet, ImageClassifier, resnet_to_brick

IN_CHANNELS = 8


def _features(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, IN_CHANNELS, 4, 4, generator=torch.Generator().manual_seed(seed))  # [B, 8, 4, 4]


def _head(num_classes: int = 3, **kwargs: Any) -> BrickCollection:
    torch.manual_seed(0)
    return BrickCollection(
        {"head0": image_classification_bricks(num_classes, "features", in_channels=IN_CHANNELS, **kwargs)}
    )


def _classify_module(brick: Any) -> ClassificationHead:
    """The ClassificationHead inside a factory's "classify" brick."""
    module = brick.model
    assert isinstance(module, ClassificationHead)
    return module


def _numpy_head(features: torch.Tensor, head: ClassificationHead) -> np.ndarray:
    """Logits by hand: mean over H, W, then x @ W.T + b."""
    pooled = features.double().numpy().mean(axis=(2, 3))  # [B, C_in]
    weight = head.fc.weight.detach().double().numpy()  # [C, C_in]
    bias = head.fc.bias.detach().double().numpy()  # [C]
    return pooled @ weight.T + bias  # [B, C]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# -- factory, registry and nesting ------------------------------------------------------------------
def test_registered_as_head() -> None:
    entry = get_factory("image_classification")
    assert entry.kind == "head"
    assert entry.factory is image_classification_bricks
    assert entry.summary.startswith("Image classification head")


def test_two_heads_nested_names_do_not_collide() -> None:
    torch.manual_seed(0)
    collection = BrickCollection(
        {
            "head0": image_classification_bricks(3, "features", in_channels=IN_CHANNELS),
            "head1": image_classification_bricks(5, "features", in_channels=IN_CHANNELS),
        }
    )
    batch = {"features": _features(4), "labels": torch.tensor([0, 1, 2, 1]), "images": torch.rand(4, 3, 32, 32)}
    outputs = collection(batch, stage=Stage.TRAIN)
    for head, num_classes in (("head0", 3), ("head1", 5)):
        assert outputs[f"{head}/logits"].shape == (4, num_classes)
        assert outputs[f"{head}/probabilities"].shape == (4, num_classes)
        assert outputs[f"{head}/predictions"].shape == (4,)
        assert outputs[f"{head}/predictions"].dtype == torch.int64
        assert outputs[f"{head}/scores"].shape == (4,)
        assert outputs[f"{head}/loss"].ndim == 0
    assert sorted(collection.extract_losses(outputs)) == ["head0/loss", "head1/loss"]
    metrics = collection.summarize(reset=True)
    keys = ["accuracy", "accuracy_macro", "confusion_matrix", "f1"]
    assert sorted(metrics) == [f"{head}/{key}" for head in ("head0", "head1") for key in keys]
    assert metrics["head0/confusion_matrix"].shape == (3, 3)
    assert metrics["head1/confusion_matrix"].shape == (5, 5)
    assert int(metrics["head1/confusion_matrix"].sum()) == 4
    assert collection.summarize() == {}  # reset cleared both heads
    visuals = collection(batch, groups={"MODEL", "VISUALIZATION"})
    assert len(visuals["head0/visualization"]) == len(visuals["head1/visualization"]) == 4


def test_deepest_feature_level_is_used() -> None:
    levels = [
        FeatureLevel("features/level1", channels=4, stride=8),
        FeatureLevel("features/level3", channels=16, stride=32),
        FeatureLevel("features/level2", channels=8, stride=16),
    ]
    bricks = image_classification_bricks(3, levels)
    assert bricks["classify"].input_names == ["features/level3"]
    assert _classify_module(bricks["classify"]).fc.in_features == 16

    backbone = BrickTrainable(nn.Identity(), input_names=["x"], output_names=["y"])
    setattr(backbone, "feature_levels", levels[:2])  # noqa: B010 - what backbone_bricks' brick exposes
    from_dict = image_classification_bricks(4, {"backbone": backbone})
    assert from_dict["classify"].input_names == ["features/level3"]
    assert _classify_module(from_dict["classify"]).fc.out_features == 4


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"num_classes": 0}, "num_classes must be an integer >= 2, got 0"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
        ({"num_classes": 2.5}, "got 2.5"),
        ({"num_classes": True}, "got True"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but num_classes is 3"),
        ({"class_names": "abc"}, "got the string 'abc'"),
        ({"label_smoothing": 1.0}, "label_smoothing must be a number in [0, 1), got 1.0"),
        ({"label_smoothing": -0.1}, "label_smoothing must be a number in [0, 1), got -0.1"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1), got 1.0"),
        ({"dropout": "0.1"}, "dropout must be a number in [0, 1), got '0.1'"),
        ({"threshold": 0.0}, "threshold must be a number in (0, 1), got 0.0"),
        ({"threshold": 1.0}, "threshold must be a number in (0, 1), got 1.0"),
        ({"in_channels": None}, "in_channels is needed"),
        ({"features": 3}, "got int"),
    ],
)
def test_bad_factory_arguments(kwargs: dict[str, Any], expected: str) -> None:
    arguments: dict[str, Any] = {"num_classes": 3, "features": "features", "in_channels": IN_CHANNELS, **kwargs}
    with pytest.raises(BrickDefinitionError) as info:
        image_classification_bricks(**arguments)
    assert expected in str(info.value)


def test_all_bad_arguments_reported_at_once() -> None:
    with pytest.raises(BrickDefinitionError) as info:
        image_classification_bricks(1, "features", in_channels=4, label_smoothing=2.0, dropout=-1.0)
    message = str(info.value)
    assert "num_classes" in message and "label_smoothing" in message and "dropout" in message


# -- classify: post-processing ----------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(num_classes=st.integers(2, 12), batch=st.integers(1, 6), scale=st.floats(0.1, 20.0), seed=st.integers(0, 99))
def test_probabilities_and_argmax(num_classes: int, batch: int, scale: float, seed: int) -> None:
    torch.manual_seed(seed)
    head = ClassificationHead(IN_CHANNELS, num_classes).eval()
    features = _features(batch, seed) * scale
    brick = BrickTrainable(head, ["f"], ["logits", "probabilities", "predictions", "scores"])
    with torch.no_grad():
        outputs = brick({"f": features})
    logits = _numpy_head(features, head)
    probabilities = np.exp(_log_softmax(logits))
    np.testing.assert_allclose(outputs["logits"].numpy(), logits, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].sum(dim=1).numpy(), np.ones(batch), atol=1e-5)
    assert outputs["predictions"].dtype == torch.int64
    np.testing.assert_array_equal(outputs["predictions"].numpy(), outputs["logits"].numpy().argmax(axis=1))
    np.testing.assert_allclose(outputs["scores"].numpy(), outputs["probabilities"].numpy().max(axis=1), atol=0)


@settings(max_examples=15, deadline=None)
@given(
    num_classes=st.integers(2, 12),
    batch=st.integers(1, 6),
    threshold=st.floats(0.05, 0.95),
    seed=st.integers(0, 99),
)
def test_multilabel_sigmoid_and_threshold(num_classes: int, batch: int, threshold: float, seed: int) -> None:
    torch.manual_seed(seed)
    head = ClassificationHead(IN_CHANNELS, num_classes, multilabel=True, threshold=threshold).eval()
    features = _features(batch, seed) * 3
    with torch.no_grad():
        outputs = head(features)
    probabilities = 1.0 / (1.0 + np.exp(-_numpy_head(features, head)))  # [B, C]
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities, atol=1e-5)
    expected = (outputs["probabilities"].numpy() > threshold).astype(np.int64)
    assert outputs["predictions"].dtype == torch.int64
    np.testing.assert_array_equal(outputs["predictions"].numpy(), expected)
    np.testing.assert_allclose(outputs["scores"].numpy(), probabilities.max(axis=1), atol=1e-5)


def test_pooled_features_and_wrong_channels() -> None:
    collection = _head()
    pooled = _features(2).mean(dim=(2, 3))  # [B, C_in]
    spatial = collection({"features": _features(2)}, groups="MODEL")["head0/logits"]
    flat = collection({"features": pooled}, groups="MODEL")["head0/logits"]
    torch.testing.assert_close(flat, spatial)
    with pytest.raises(BrickInputError) as info:
        collection({"features": torch.zeros(2, 5, 4, 4)}, groups="MODEL")
    assert "head0/classify" in str(info.value) and "[2, 5, 4, 4]" in str(info.value)


def test_dropout_only_while_training() -> None:
    collection = _head(dropout=0.5)
    features = _features(16)
    collection.train()
    first = collection({"features": features}, groups="MODEL")["head0/logits"]
    second = collection({"features": features}, groups="MODEL")["head0/logits"]
    assert not torch.allclose(first, second)
    collection.eval()
    head = _classify_module(dict(collection.named_bricks())["head0/classify"])
    expected = _numpy_head(features, head)
    with torch.no_grad():
        evaluated = collection({"features": features}, groups="MODEL")["head0/logits"]
    np.testing.assert_allclose(evaluated.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_compiles_fullgraph() -> None:
    for multilabel in (False, True):
        head = ClassificationHead(IN_CHANNELS, 4, dropout=0.1, multilabel=multilabel).eval()
        compiled = torch.compile(head, fullgraph=True, backend="eager")
        features = _features(3)
        expected, got = head(features), compiled(features)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])


def test_seed_image_classifier_unchanged() -> None:
    torch.manual_seed(0)
    classifier = ImageClassifier(num_classes=4, n_features=IN_CHANNELS)
    logits, probabilities, predictions = classifier(_features(3))
    assert logits.shape == probabilities.shape == (3, 4)
    np.testing.assert_array_equal(predictions.numpy(), logits.detach().numpy().argmax(axis=1))


# -- loss ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.35])
def test_loss_equals_hand_cross_entropy(label_smoothing: float) -> None:
    num_classes = 4
    collection = _head(num_classes, label_smoothing=label_smoothing)
    features, labels = _features(6) * 3, torch.tensor([0, 3, 1, 1, 2, 0])
    outputs = collection({"features": features, "labels": labels}, groups={"MODEL", "LOSS"})
    log_p = _log_softmax(outputs["head0/logits"].detach().double().numpy())  # [B, C]
    smoothed = np.eye(num_classes)[labels.numpy()] * (1 - label_smoothing) + label_smoothing / num_classes
    expected = float(-(smoothed * log_p).sum(axis=1).mean())
    assert abs(outputs["head0/loss"].item() - expected) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_multilabel_loss_equals_hand_bce(dtype: torch.dtype, label_smoothing: float) -> None:
    collection = _head(4, multilabel=True, label_smoothing=label_smoothing, targets="tags")
    tags = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]).to(dtype)
    outputs = collection({"features": _features(3) * 3, "tags": tags}, groups={"MODEL", "LOSS"})
    x = outputs["head0/logits"].detach().double().numpy()  # [B, C]
    y = tags.double().numpy() * (1 - label_smoothing) + label_smoothing / 2
    p = 1 / (1 + np.exp(-x))
    expected = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    assert abs(outputs["head0/loss"].item() - expected) < 1e-5


def test_soft_multilabel_targets() -> None:
    collection = _head(2, multilabel=True, targets="tags")
    tags = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    outputs = collection({"features": _features(2), "tags": tags}, groups={"MODEL", "LOSS"})
    x = outputs["head0/logits"].detach().double().numpy()
    y = tags.double().numpy()
    expected = float(np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))))
    assert abs(outputs["head0/loss"].item() - expected) < 1e-5


# layout problems (dtype, shape) are found by forward itself; value problems only by check_inputs
@pytest.mark.parametrize(
    ("labels", "got", "layout"),
    [
        (torch.tensor([0.0, 1.0, 2.0, 1.0]), "got [4] float32", True),
        (torch.tensor([[0, 1], [1, 2], [0, 0], [2, 2]]), "got [4, 2] int64", True),
        (torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), 3), "use multilabel=True", True),
        (torch.tensor([0, 1, 3, 1]), "got values from 0 to 3", False),
        (torch.tensor([0, -1, 2, 1]), "got values from -1 to 2", False),
        (torch.tensor([0, 1, 2]), "batch size 3 differs from the predictions' 4", True),
        (torch.tensor([True, False, True, False]), "got [4] bool", True),
    ],
)
def test_bad_targets_raise_with_brick_path(labels: torch.Tensor, got: str, layout: bool) -> None:
    collection = _head(3)
    batch = {"features": _features(4), "labels": labels}
    runs = [collection.check_batch] + ([collection] if layout else [])
    for run in runs:
        with pytest.raises(BrickInputError) as info:
            run(batch, groups={"MODEL", "LOSS"})
        message = str(info.value)
        assert message.startswith("brick 'head0/loss': targets 'labels'")
        assert got in message
        with pytest.raises(BrickInputError) as info:  # the metrics check the same way
            run(batch, groups={"MODEL", "METRIC"})
        assert str(info.value).startswith("brick 'head0/metrics': targets 'labels'")
        assert got in str(info.value)


@pytest.mark.parametrize(
    ("tags", "got", "layout"),
    [
        (torch.tensor([0, 1, 2]), "got [3] int64; for class indices [B] use multilabel=False", True),
        (torch.zeros(3, 4, dtype=torch.int64), "expected multi-hot targets [B, 3]", True),
        (torch.tensor([[0, 2, 0], [1, 0, 0], [0, 0, 1]]), "must be 0 or 1; got values from 0 to 2", False),
        (torch.tensor([[0.0, 1.5, 0], [1, 0, 0], [0, 0, 1]]), "must be in [0, 1]; got values from 0 to 1.5", False),
    ],
)
def test_bad_multilabel_targets(tags: torch.Tensor, got: str, layout: bool) -> None:
    collection = _head(3, multilabel=True, targets="tags")
    batch = {"features": _features(3), "tags": tags}
    for run in [collection.check_batch] + ([collection] if layout else []):
        for groups, brick in (({"MODEL", "LOSS"}, "loss"), ({"MODEL", "METRIC"}, "metrics")):
            with pytest.raises(BrickInputError) as info:
                run(batch, groups=groups)
            assert str(info.value).startswith(f"brick 'head0/{brick}': targets 'tags'")
            assert got in str(info.value)


@pytest.mark.parametrize("multilabel", [False, True])
def test_good_targets_pass_check_batch_with_forward_results(multilabel: bool) -> None:
    collection = _head(3, multilabel=multilabel)
    targets = torch.tensor([[1, 0, 1], [0, 0, 0]]) if multilabel else torch.tensor([2, 0])
    batch = {"features": _features(2), "labels": targets}
    checked = collection.check_batch(batch, groups={"MODEL", "LOSS"})
    torch.testing.assert_close(checked["head0/loss"], collection(batch, groups={"MODEL", "LOSS"})["head0/loss"])


@pytest.mark.parametrize("multilabel", [False, True])
def test_overfits_a_tiny_batch(multilabel: bool) -> None:
    collection = _head(3, multilabel=multilabel, targets="targets")
    features = _features(8, seed=1) * 4  # pooled features of std ~1
    targets = (
        torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]])
        if multilabel
        else torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    )
    optimizer = torch.optim.Adam(collection.parameters(), lr=0.1)
    losses = []
    for _ in range(40):
        outputs = collection({"features": features, "targets": targets}, groups={"MODEL", "LOSS"})
        loss = sum(collection.extract_losses(outputs).values())
        optimizer.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        losses.append(loss.item())  # type: ignore[union-attr]
    assert losses[-1] < 0.2 * losses[0], losses


# -- metrics -------------------------------------------------------------------------------------------
def _batches(num_classes: int, multilabel: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    if multilabel:
        shape = (10, num_classes)
        return [(torch.randint(0, 2, shape, generator=generator), torch.randint(0, 2, shape, generator=generator))]
    return [
        (
            torch.randint(0, num_classes, (n,), generator=generator),
            torch.randint(0, num_classes, (n,), generator=generator),
        )
        for n in (7, 12, 5)
    ]


def test_metrics_equal_references_over_batches() -> None:
    num_classes = 4
    collection = _head(num_classes)
    batches = _batches(num_classes, multilabel=False)
    for predictions, labels in batches:
        collection({"head0/predictions": predictions, "labels": labels}, groups="METRIC")
    metrics = collection.summarize(reset=True)
    preds = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])
    assert set(preds.tolist()) == set(target.tolist()) == set(range(num_classes))  # every class is present

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [target, prediction]
    np.add.at(confusion, (target.numpy(), preds.numpy()), 1)
    tp = np.diag(confusion).astype(np.float64)
    f1 = 2 * tp / (confusion.sum(0) + confusion.sum(1))
    np.testing.assert_array_equal(metrics["head0/confusion_matrix"].numpy(), confusion)
    assert float(metrics["head0/accuracy"]) == pytest.approx(tp.sum() / len(target), abs=1e-6)
    assert float(metrics["head0/accuracy_macro"]) == pytest.approx(np.mean(tp / confusion.sum(1)), abs=1e-6)
    assert float(metrics["head0/f1"]) == pytest.approx(np.mean(f1), abs=1e-6)

    references = {
        "accuracy": multiclass_accuracy(preds, target, num_classes, average="micro"),
        "accuracy_macro": multiclass_accuracy(preds, target, num_classes, average="macro"),
        "f1": multiclass_f1_score(preds, target, num_classes, average="macro"),
        "confusion_matrix": multiclass_confusion_matrix(preds, target, num_classes),
    }
    for key, reference in references.items():
        torch.testing.assert_close(metrics[f"head0/{key}"], reference)


def test_multilabel_metrics_equal_references() -> None:
    num_classes = 3
    collection = _head(num_classes, multilabel=True, targets="tags")
    generator = torch.Generator().manual_seed(5)
    batches = [
        (
            torch.randint(0, 2, (n, num_classes), generator=generator),
            torch.randint(0, 2, (n, num_classes), generator=generator),
        )
        for n in (6, 9)
    ]
    for predictions, tags in batches:
        collection({"head0/predictions": predictions, "tags": tags.float()}, groups="METRIC")
    metrics = collection.summarize(reset=True)
    preds = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])

    p, t = preds.numpy(), target.numpy()
    tp, fp = ((p == 1) & (t == 1)).sum(0), ((p == 1) & (t == 0)).sum(0)
    fn, tn = ((p == 0) & (t == 1)).sum(0), ((p == 0) & (t == 0)).sum(0)
    confusion = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1)  # [C, 2, 2]
    np.testing.assert_array_equal(metrics["head0/confusion_matrix"].numpy(), confusion)
    assert float(metrics["head0/accuracy"]) == pytest.approx(np.mean(p == t), abs=1e-6)
    assert float(metrics["head0/accuracy_macro"]) == pytest.approx(np.mean((p == t).mean(0)), abs=1e-6)

    references = {
        "accuracy": multilabel_accuracy(preds, target, num_classes, average="micro"),
        "accuracy_macro": multilabel_accuracy(preds, target, num_classes, average="macro"),
        "f1": multilabel_f1_score(preds, target, num_classes, average="macro"),
        "confusion_matrix": multilabel_confusion_matrix(preds, target, num_classes),
    }
    for key, reference in references.items():
        torch.testing.assert_close(metrics[f"head0/{key}"], reference)


@pytest.mark.parametrize("multilabel", [False, True])
def test_perfect_predictions_score_one(multilabel: bool) -> None:
    collection = _head(4, multilabel=multilabel, targets="targets")
    for seed in range(3):
        outputs = collection({"features": _features(5, seed)}, groups="MODEL")
        predictions = outputs["head0/predictions"]
        collection({"head0/predictions": predictions, "targets": predictions.clone()}, groups="METRIC")
    metrics = collection.summarize(reset=True)
    assert float(metrics["head0/accuracy"]) == 1.0
    confusion = metrics["head0/confusion_matrix"]
    if multilabel:
        assert int(confusion[:, 0, 1].sum()) == int(confusion[:, 1, 0].sum()) == 0
    else:
        assert int(confusion.sum()) == int(confusion.diag().sum()) == 15


# -- visualizer ------------------------------------------------------------------------------------------
def _changed(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    return np.any(np.asarray(image) != np.array(background, dtype=np.uint8), axis=-1)  # [H, W]


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (128, 96)])
def test_visualizer_draws_label_on_image(tmp_path: Path, height: int, width: int) -> None:
    names = ["cat", "dog", "bird"]
    collection = _head(3, class_names=names)
    grey = 0.5
    images = torch.full((2, 3, height, width), grey)
    inputs = {"images": images, "head0/predictions": torch.tensor([2, 0]), "head0/scores": torch.tensor([0.9, 0.4])}
    pictures = collection(inputs, groups="VISUALIZATION")["head0/visualization"]
    assert len(pictures) == 2
    assert all(isinstance(p, Image.Image) and p.size == (width, height) and p.mode == "RGB" for p in pictures)
    path = tmp_path / "label.png"
    pictures[0].save(path)
    reopened = Image.open(path).convert("RGB")
    background = (128, 128, 128)  # 0.5 * 255 rounded
    changed = _changed(reopened, background)
    rows, cols = np.nonzero(changed)
    assert rows.min() <= 2 and cols.min() <= 2  # the label starts in the top-left corner
    assert cols.max() < width - 1  # and fits the image width
    assert 8 <= rows.max() < height // 2  # text of a legible height that leaves most of the image visible
    assert not changed[height // 2 :].any()
    label = np.asarray(reopened)[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in label}
    assert palette(3)[2] in colours  # the box in the colour of class 2 ("bird")
    text = [c for c in colours if c in ((0, 0, 0), (255, 255, 255))]
    assert text  # black or white text on it
    assert not np.array_equal(np.asarray(pictures[0]), np.asarray(pictures[1]))  # other class, other label


def test_visualizer_truncates_long_names_and_keeps_score() -> None:
    collection = _head(2, class_names=["a_class_name_far_too_long_for_a_small_image", "b"])
    inputs = {
        "images": torch.zeros(1, 3, 64, 64),
        "head0/predictions": torch.tensor([0]),
        "head0/scores": torch.tensor([0.5]),
    }
    picture = collection(inputs, groups="VISUALIZATION")["head0/visualization"][0]
    changed = _changed(picture, (0, 0, 0))
    assert not changed[:, -1].any()  # the label box ends before the right border
    assert changed[:, 50:62].any()  # and runs across the width (the score is drawn at its end)


def test_multilabel_visualizer_one_line_per_label() -> None:
    collection = _head(3, multilabel=True, targets="tags")
    probabilities = torch.tensor([[0.9, 0.1, 0.2], [0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])
    inputs = {
        "images": torch.zeros(3, 3, 64, 64),
        "head0/predictions": (probabilities > 0.5).long(),
        "head0/probabilities": probabilities,
    }
    pictures = collection(inputs, groups="VISUALIZATION")["head0/visualization"]
    heights = [int(np.nonzero(_changed(p, (0, 0, 0)).any(axis=1))[0].max()) for p in pictures]
    one, three, none = heights
    assert three > 2.5 * one  # three stacked labels
    assert none == pytest.approx(one, abs=2)  # "none 0.30" on one line
    assert three < 64


# -- export and real bricks -----------------------------------------------------------------------------
@pytest.mark.parametrize("multilabel", [False, True])
def test_onnx_export_parity(tmp_path: Path, multilabel: bool) -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1)
    )
    collection = BrickCollection(
        {
            "backbone": BrickTrainable(backbone, input_names=["images"], output_names=["features"]),
            "head0": image_classification_bricks(5, "features", in_channels=16, multilabel=multilabel, dropout=0.2),
        }
    )
    generator = torch.Generator().manual_seed(1)
    path = export_bricks_as_onnx(
        tmp_path / "classifier.onnx", collection, {"images": torch.rand(2, 3, 32, 32, generator=generator)}
    )
    names = [output.name for output in onnx.load(str(path)).graph.output]
    assert set(names) == {"features", "head0/logits", "head0/probabilities", "head0/predictions", "head0/scores"}
    report = check_onnx_parity(path, collection, {"images": torch.rand(5, 3, 32, 32, generator=generator)})
    assert report.batch_size == 5
    assert report.worst < 1e-4, str(report)


def test_real_bricks_preprocessor_and_resnet18() -> None:
    torch.manual_seed(0)
    backbone = resnet_to_brick(torchvision.models.resnet18(weights=None), "normalized", "features")
    resnet = backbone.model
    assert isinstance(resnet, BackboneResnet)
    collection = BrickCollection(
        {
            "preprocessor": BrickNotTrainable(Preprocessor(), input_names=["images"], output_names=["normalized"]),
            "backbone": backbone,
            "head0": image_classification_bricks(
                3, "features", in_channels=resnet.n_backbone_features, class_names=["a", "b", "c"]
            ),
        }
    )
    batch = {"images": torch.rand(2, 3, 32, 32), "labels": torch.tensor([0, 2])}
    outputs = collection(batch, stage=Stage.TRAIN)
    assert outputs["features"].shape == (2, 512, 1, 1)
    assert outputs["head0/probabilities"].shape == (2, 3)
    outputs["head0/loss"].backward()
    gradient = next(resnet.conv1.parameters()).grad  # the first convolution: the start of the backbone
    assert gradient is not None and float(gradient.abs().sum()) > 0
    assert sorted(collection.summarize(reset=True)) == [
        "head0/accuracy",
        "head0/accuracy_macro",
        "head0/confusion_matrix",
        "head0/f1",
    ]
    pictures = collection(batch, groups={"MODEL", "VISUALIZATION"})["head0/visualization"]
    assert [p.size for p in pictures] == [(32, 32), (32, 32)]
