"""The examples of the torchbricks README (the specification), run on brickzoo.

They are copied as written, with the import mapping of the core issue applied
(`torchbricks.{brick_collection,bricks,graph_plotter,brick_collection_utils}` -> `brickzoo`,
`torchbricks.bag_of_bricks.*` -> `brickzoo.bag_of_bricks`, `torchbricks.tensor_conversions` ->
`brickzoo.tensor_conversions`). Two adaptations, both outside brickzoo: the README's font file
`tests/data/font_ASMAN.TTF` (a file of the torchbricks repository) is replaced by pillow's default
font, and IPython's `display` by checks on the images. The Lightning example is exercised in
tests/lightning with brickzoo's own Lightning module.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn


class PreprocessorDummy(nn.Module):
    def forward(self, raw_input: torch.Tensor) -> torch.Tensor:
        return raw_input / 2


class TinyModel(nn.Module):
    def __init__(self, n_channels: int, n_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_channels, n_features, kernel_size=1)

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.conv(tensor)


class ClassifierDummy(nn.Module):
    def __init__(self, num_classes: int, in_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.softmax = nn.Softmax(dim=1)

    def forward(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(torch.flatten(self.avgpool(tensor), start_dim=1))
        return logits, self.softmax(logits)


def test_concept_1_bricks_are_connected() -> None:
    from brickzoo import BrickCollection, BrickNotTrainable, BrickTrainable, create_mermaid_dag_graph

    bricks = {
        "preprocessor": BrickNotTrainable(PreprocessorDummy(), input_names=["raw_images"], output_names=["processed"]),
        "backbone": BrickTrainable(
            TinyModel(n_channels=3, n_features=10), input_names=["processed"], output_names=["embedding"]
        ),
        "head": BrickTrainable(
            ClassifierDummy(num_classes=3, in_features=10),
            input_names=["embedding"],
            output_names=["logits", "softmaxed"],
        ),
    }
    brick_collection = BrickCollection(bricks)
    graph = create_mermaid_dag_graph(brick_collection)
    assert graph.startswith("flowchart LR")
    assert "BrickNotTrainable" in str(brick_collection)

    batch_size = 2
    batched_images = torch.rand((batch_size, 3, 100, 200))
    named_inputs = {"raw_images": batched_images}
    named_outputs = brick_collection(named_inputs=named_inputs)
    assert list(named_outputs.keys()) == ["raw_images", "processed", "embedding", "logits", "softmaxed"]
    torch.testing.assert_close(named_outputs["processed"], batched_images / 2)
    torch.testing.assert_close(named_outputs["softmaxed"].sum(dim=1), torch.ones(batch_size))


def test_concept_2_bricks_are_grouped() -> None:
    from brickzoo import BrickCollection, BrickLoss, BrickNotTrainable, BrickTrainable, create_mermaid_dag_graph

    bricks = {
        "preprocessor": BrickNotTrainable(
            PreprocessorDummy(), input_names=["raw_images"], output_names=["processed"], group="MODEL"
        ),
        "backbone": BrickTrainable(
            TinyModel(n_channels=3, n_features=10), input_names=["processed"], output_names=["embedding"], group="MODEL"
        ),
        "head": BrickTrainable(
            ClassifierDummy(num_classes=3, in_features=10),
            input_names=["embedding"],
            output_names=["logits", "softmaxed"],
            group="MODEL",
        ),
        "loss": BrickLoss(
            model=nn.CrossEntropyLoss(), input_names=["logits", "targets"], output_names=["loss_ce"], group="LOSS"
        ),
    }
    brick_collection = BrickCollection(bricks)
    printed = str(brick_collection)
    assert (
        "(loss): BrickLoss(CrossEntropyLoss, input_names=['logits', 'targets'], output_names=['loss_ce'], "
        "groups={'LOSS'})" in printed
    )
    assert (
        "(preprocessor): BrickNotTrainable(PreprocessorDummy, input_names=['raw_images'], "
        "output_names=['processed'], groups={'MODEL'})" in printed
    )
    batch_size = 2
    batched_images = torch.rand((batch_size, 3, 100, 200))
    named_inputs = {"raw_images": batched_images, "targets": torch.ones((batch_size), dtype=torch.int64)}

    named_outputs = brick_collection(named_inputs=named_inputs)
    assert "loss_ce" in named_outputs
    expected = nn.functional.cross_entropy(named_outputs["logits"], named_inputs["targets"])
    torch.testing.assert_close(named_outputs["loss_ce"], expected)

    named_outputs = brick_collection(named_inputs=named_inputs, groups={"MODEL"})
    assert "loss_ce" not in named_outputs and "logits" in named_outputs

    # Inference/export graph needs only raw_images; training graph needs targets too.
    assert brick_collection.required_inputs({"MODEL"}) == ["raw_images"]
    assert brick_collection.required_inputs({"MODEL", "LOSS"}) == ["raw_images", "targets"]
    assert "targets" not in create_mermaid_dag_graph(brick_collection, groups={"MODEL"})
    assert "targets" in create_mermaid_dag_graph(brick_collection, groups={"MODEL", "LOSS"})


@pytest.fixture(scope="module")
def metrics_example() -> dict[str, Any]:
    """The README's TorchMetrics example; later examples reuse what it defines."""
    import torchvision
    from torchmetrics.classification import MulticlassAccuracy

    from brickzoo import BrickCollection, BrickLoss, BrickMetricSingle, BrickNotTrainable, BrickTrainable
    from brickzoo.bag_of_bricks import ImageClassifier, Preprocessor, resnet_to_brick

    torch.manual_seed(0)
    batch_size = 2
    batched_images = torch.rand((batch_size, 3, 100, 200))
    num_classes = 10
    resnet = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    resnet_brick = resnet_to_brick(resnet=resnet, input_name="normalized", output_name="features")
    n_features = resnet_brick.model.n_backbone_features
    bricks = {
        "preprocessor": BrickNotTrainable(Preprocessor(), input_names=["raw"], output_names=["normalized"]),
        "backbone": resnet_brick,
        "head": BrickTrainable(
            ImageClassifier(num_classes=num_classes, n_features=n_features),
            input_names=["features"],
            output_names=["logits", "probabilities", "class_prediction"],
        ),
        "accuracy": BrickMetricSingle(
            MulticlassAccuracy(num_classes=num_classes), input_names=["class_prediction", "targets"]
        ),
        "loss": BrickLoss(model=nn.CrossEntropyLoss(), input_names=["logits", "targets"], output_names=["loss_ce"]),
    }
    brick_collection = BrickCollection(bricks)

    # Simulate dataloader
    named_input_simulated = {"raw": batched_images, "targets": torch.ones((batch_size), dtype=torch.int64)}
    dataloader_simulated = [named_input_simulated for _ in range(5)]

    predictions = []
    for named_inputs in dataloader_simulated:  # Simulates iterating over the dataset
        named_outputs = brick_collection(named_inputs=named_inputs)
        named_outputs_losses_only = brick_collection.extract_losses(named_outputs=named_outputs)
        predictions.append(named_outputs["class_prediction"])
    metrics = brick_collection.summarize(reset=True)
    return {
        "brick_collection": brick_collection,
        "resnet_brick": resnet_brick,
        "named_inputs": named_inputs,
        "named_outputs": named_outputs,
        "losses": named_outputs_losses_only,
        "metrics": metrics,
        "predictions": torch.cat(predictions),
        "targets": torch.ones(5 * batch_size, dtype=torch.int64),
        "num_classes": num_classes,
    }


def test_torchmetrics_example(metrics_example: dict[str, Any]) -> None:
    from torchmetrics.functional.classification import multiclass_accuracy

    outputs = metrics_example["named_outputs"]
    assert list(outputs) == [
        "raw",
        "targets",
        "normalized",
        "features",
        "logits",
        "probabilities",
        "class_prediction",
        "loss_ce",
    ]
    assert list(metrics_example["losses"]) == ["loss_ce"]
    metrics = metrics_example["metrics"]
    assert list(metrics) == ["MulticlassAccuracy"]
    expected = multiclass_accuracy(
        metrics_example["predictions"], metrics_example["targets"], num_classes=metrics_example["num_classes"]
    )
    torch.testing.assert_close(metrics["MulticlassAccuracy"], expected)
    # reset=True emptied the metric: nothing is left to summarize.
    assert metrics_example["brick_collection"].summarize() == {}


def test_act_as_nn_module(metrics_example: dict[str, Any], tmp_path: Path) -> None:
    brick_collection = metrics_example["brick_collection"]
    # Move to specify device (CPU/GPU) or precision to automatically move model parameters
    brick_collection.to(torch.float16)
    assert next(brick_collection.parameters()).dtype == torch.float16
    brick_collection.to(torch.float32)

    path_model = tmp_path / "readme_model.pt"
    torch.save(brick_collection.state_dict(), path_model)
    brick_collection.load_state_dict(torch.load(path_model))

    names = [name for name, _ in brick_collection.named_parameters()]
    assert "backbone.model.conv1.weight" in names and "head.model.fc.weight" in names
    assert any(name == "backbone.model.layer1" for name, _ in brick_collection.named_modules())
    torch.compile(brick_collection)


def create_image_classification_head(
    num_classes: int, in_channels: int, features_name: str, targets_name: str
) -> dict[str, Any]:
    """Image classifier bricks: Classifier, loss and metrics"""
    from torchmetrics.classification import MulticlassAccuracy

    from brickzoo import BrickInterface, BrickLoss, BrickMetricSingle, BrickTrainable
    from brickzoo.bag_of_bricks import ImageClassifier

    head: dict[str, BrickInterface] = {
        "classify": BrickTrainable(
            ImageClassifier(num_classes=num_classes, n_features=in_channels),
            input_names=[features_name],
            output_names=["./logits", "./probabilities", "./class_prediction"],
        ),
        "accuracy": BrickMetricSingle(
            MulticlassAccuracy(num_classes=num_classes), input_names=["./class_prediction", targets_name]
        ),
        "loss": BrickLoss(
            model=nn.CrossEntropyLoss(), input_names=["./logits", targets_name], output_names=["./loss_ce"]
        ),
    }
    return head


def test_nested_bricks_relative_names_and_saving(metrics_example: dict[str, Any], tmp_path: Path) -> None:
    from brickzoo import BrickCollection, BrickNotTrainable, create_mermaid_dag_graph
    from brickzoo.bag_of_bricks import Preprocessor

    resnet_brick = metrics_example["resnet_brick"]
    brick_collection = metrics_example["brick_collection"]
    n_features = resnet_brick.model.n_backbone_features
    bricks = {
        "preprocessor": BrickNotTrainable(Preprocessor(), input_names=["raw"], output_names=["normalized"]),
        "backbone": resnet_brick,
        "head0": create_image_classification_head(
            num_classes=3, in_channels=n_features, features_name="features", targets_name="targets0"
        ),
        "head1": create_image_classification_head(
            num_classes=5, in_channels=n_features, features_name="features", targets_name="targets1"
        ),
    }
    brick_collections = BrickCollection(bricks)
    graph = create_mermaid_dag_graph(brick_collections)
    assert '["head0"]' in graph and '["head1"]' in graph
    assert '|"head0/logits"|' in graph

    outputs = brick_collections(
        {"raw": torch.rand(2, 3, 64, 64), "targets0": torch.tensor([0, 2]), "targets1": torch.tensor([4, 1])}
    )
    assert outputs["head0/logits"].shape == (2, 3) and outputs["head1/logits"].shape == (2, 5)
    assert {"head0/loss_ce", "head1/loss_ce"} <= set(outputs)
    assert set(brick_collections.summarize()) == {"head0/MulticlassAccuracy", "head1/MulticlassAccuracy"}

    path_model_folder = tmp_path / "bricks"
    # Saving model parameters brick-collection style
    brick_collections.save_bricks(path_model_folder=path_model_folder, exist_ok=True)
    files = sorted(str(p.relative_to(path_model_folder)) for p in path_model_folder.rglob("*.pt"))
    assert files == ["backbone.pt", "head0/classify.pt", "head1/classify.pt"]
    # Loading model parameters brick-collection style. The README, as written, loads into
    # `brick_collection` (the earlier single-head model, whose 'head' brick has no file in this
    # folder) instead of `brick_collections`: brickzoo refuses rather than leave 'head' random.
    from brickzoo import WeightsError

    with pytest.raises(WeightsError, match=r"brick 'head': no weight file head.pt"):
        brick_collection.load_bricks(path_model_folder=path_model_folder)
    # into the collection that was saved, the example's intent, it loads every brick
    report = brick_collections.load_bricks(path_model_folder=path_model_folder)
    assert report.loaded == ["backbone", "head0/classify", "head1/classify"]


def test_export_as_onnx(metrics_example: dict[str, Any], tmp_path: Path) -> None:
    import onnx

    from brickzoo import export_bricks_as_onnx

    brick_collection = metrics_example["brick_collection"]
    named_inputs = metrics_example["named_inputs"]
    path_onnx = tmp_path / "readme_model.onnx"
    export_bricks_as_onnx(
        path_onnx=path_onnx, brick_collection=brick_collection, named_inputs=named_inputs, dynamic_batch_size=True
    )
    model = onnx.load(str(path_onnx))
    assert [i.name for i in model.graph.input] == ["raw"]
    assert [o.name for o in model.graph.output] == [
        "normalized",
        "features",
        "logits",
        "probabilities",
        "class_prediction",
    ]


def test_pass_all_intermediate_tensors() -> None:
    from brickzoo import BrickCollection, BrickNotTrainable, BrickTrainable

    class MyNewPostProcessor(torch.nn.Module):
        def forward(self, named_inputs: dict[str, Any]) -> torch.Tensor:
            ## Here `named_inputs` contains all intermediate tensors
            assert "raw" in named_inputs
            assert "embedding" in named_inputs
            return named_inputs["embedding"]

    bricks = {
        "backbone": BrickTrainable(
            TinyModel(n_channels=3, n_features=10), input_names=["raw"], output_names=["embedding"]
        ),
        "post_processor": BrickNotTrainable(
            MyNewPostProcessor(), input_names=["__all__"], output_names=["postprocessed"]
        ),
    }
    brick_collection = BrickCollection(bricks)
    named_outputs = brick_collection(named_inputs={"raw": torch.rand((2, 3, 100, 200))})
    assert named_outputs["postprocessed"] is named_outputs["embedding"]


def test_visualization_with_callable() -> None:
    from brickzoo import BrickCollection
    from brickzoo.bag_of_bricks import BrickPerImageVisualization
    from brickzoo.tensor_conversions import float2uint8

    class VisualizeImageClassification:
        def __init__(self, class_names: list, font_size: int = 50):
            self.class_names = class_names
            self.font = ImageFont.load_default(size=font_size)  # the README loads a TTF file of its repo

        def __call__(self, input_image: np.ndarray, target_prediction: np.ndarray) -> Image.Image:
            """Draws image classification results"""
            assert input_image.ndim == 3  # Converted to single image channel last numpy array [H, W, C]
            image = Image.fromarray(float2uint8(input_image))
            draw = ImageDraw.Draw(image)
            draw.text((25, 25), text=self.class_names[target_prediction[0]], font=self.font)
            return image

    bricks = {
        "visualizer": BrickPerImageVisualization(
            callable=VisualizeImageClassification(class_names=["cat", "dog"]),
            input_names=["input_image", "target"],
            output_names=["visualization"],
        )
    }
    batched_inputs = {"input_image": torch.zeros((2, 3, 100, 200)), "target": torch.tensor([0, 1], dtype=torch.int64)}
    brick_collection = BrickCollection(bricks)
    outputs = brick_collection(named_inputs=batched_inputs)
    images = outputs["visualization"]
    assert len(images) == 2 and all(im.size == (200, 100) for im in images)
    # text was drawn: the black images now have white pixels, and "cat" differs from "dog"
    first, second = (np.asarray(im) for im in images)
    assert first.max() == 255 and not np.array_equal(first, second)


def test_visualization_subclass_with_unpack_functions() -> None:
    from brickzoo.bag_of_bricks import BrickPerImageVisualization
    from brickzoo.tensor_conversions import function_composer, torch_to_numpy, unpack_batched_tensor_to_pillow_images

    class BrickVisualizeImageClassification(BrickPerImageVisualization):
        def __init__(self, input_image: str, target_name: str, class_names: list[str], output_name: str):
            self.class_names = class_names
            self.font = ImageFont.load_default(size=50)  # the README loads a TTF file of its repo
            super().__init__(
                callable=self.visualize_image_classification_pillow,
                input_names=[input_image, target_name],
                output_names=[output_name],
                unpack_functions_for_type={torch.Tensor: unpack_batched_tensor_to_pillow_images},
                unpack_functions_for_input_name={target_name: function_composer(torch_to_numpy, list)},
            )

        def visualize_image_classification_pillow(self, image: Image.Image, target_prediction: np.int64) -> Image.Image:
            """Draws image classification results"""
            draw = ImageDraw.Draw(image)
            draw.text((25, 25), text=self.class_names[target_prediction], font=self.font)
            return image

    visualizer = BrickVisualizeImageClassification(
        input_image="input_image",
        target_name="target",
        class_names=["cat", "dog"],
        output_name="VisualizeImageClassification",
    )
    batched_inputs = {"input_image": torch.zeros((2, 3, 100, 200)), "target": torch.tensor([0, 1], dtype=torch.int64)}
    outputs = visualizer(batched_inputs)
    images = outputs["VisualizeImageClassification"]
    assert [type(im) for im in images] == [Image.Image, Image.Image]
    assert np.asarray(images[0]).max() == 255


def test_older_seed_stage_inside_module() -> None:
    """The 0.0.10 README: a brick reads the current stage by naming 'stage' among its inputs."""
    from brickzoo import BrickCollection, BrickNotTrainable, Stage

    class Preprocessor(torch.nn.Module):
        def forward(self, input_image: torch.Tensor, stage: Stage) -> torch.Tensor:
            if stage in [Stage.EXPORT]:
                input_image = torch.nn.functional.interpolate(input_image, size=(50, 100))
            return input_image / 2

    brick_collection = BrickCollection(
        {"preprocessor": BrickNotTrainable(Preprocessor(), input_names=["raw", "stage"], output_names=["processed"])}
    )
    named_inputs = {"raw": torch.rand((2, 3, 100, 200))}
    named_outputs = brick_collection(named_inputs=named_inputs, stage=Stage.EXPORT)
    assert list(named_outputs["processed"].shape[2:]) == [50, 100]

    named_outputs = brick_collection(named_inputs=named_inputs, stage=Stage.VALIDATION)
    assert list(named_outputs["processed"].shape[2:]) == [100, 200]


def test_older_seed_stages_select_groups() -> None:
    from brickzoo import BrickCollection, BrickLoss, BrickNotTrainable, BrickTrainable, Stage

    bricks = {
        "preprocessor": BrickNotTrainable(PreprocessorDummy(), input_names=["raw"], output_names=["processed"]),
        "backbone": BrickTrainable(
            TinyModel(n_channels=3, n_features=10), input_names=["processed"], output_names=["embedding"]
        ),
        "head": BrickTrainable(
            ClassifierDummy(num_classes=3, in_features=10),
            input_names=["embedding"],
            output_names=["logits", "softmaxed"],
        ),
        "loss": BrickLoss(model=nn.CrossEntropyLoss(), input_names=["logits", "targets"], output_names=["loss_ce"]),
    }
    brick_collection = BrickCollection(bricks)
    raw = torch.rand((2, 3, 100, 200))
    inference = brick_collection(named_inputs={"raw": raw}, stage=Stage.INFERENCE)
    assert "loss_ce" not in inference and inference["stage"] is Stage.INFERENCE
    train = brick_collection(named_inputs={"raw": raw, "targets": torch.zeros(2, dtype=torch.int64)}, stage=Stage.TRAIN)
    assert "loss_ce" in train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        brick_collection(named_inputs={"raw": raw}, groups=Stage.EXPORT)
