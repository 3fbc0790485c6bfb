"""torch.compile without graph breaks and ONNX export with onnxruntime parity."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch._dynamo
from torch import nn

from brickzoo import (
    BrickCollection,
    BrickLoss,
    BrickNotTrainable,
    BrickTrainable,
    Stage,
    check_onnx_parity,
    export_bricks_as_onnx,
)
from brickzoo.bag_of_bricks import ImageClassifier, Preprocessor
from brickzoo.errors import ExportError
from brickzoo.zoo import build_recipe


class ResizeOnExport(nn.Module):
    def forward(self, images: torch.Tensor, stage: Stage) -> torch.Tensor:
        if stage == Stage.EXPORT:
            return nn.functional.interpolate(images, size=(8, 8), mode="bilinear", align_corners=False)
        return images


def make_model() -> BrickCollection:
    torch.manual_seed(0)
    return BrickCollection(
        {
            "preprocessor": BrickNotTrainable(Preprocessor(), ["images"], ["normalized"]),
            "backbone": BrickTrainable(
                nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()), ["normalized"], ["features"]
            ),
            "head": {
                "classify": BrickTrainable(
                    ImageClassifier(num_classes=4, n_features=8),
                    ["../features"],
                    ["./logits", "./probabilities", "./class_prediction"],
                ),
                "loss": BrickLoss(nn.CrossEntropyLoss(), ["./logits", "targets"], ["./loss"]),
            },
        }
    )


def test_compile_fullgraph_has_no_graph_break_and_matches_eager() -> None:
    model = make_model().eval()
    images = torch.rand(2, 3, 16, 16)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)({"images": images}, groups={"MODEL"})
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager = model({"images": images}, groups={"MODEL"})
        fast = compiled({"images": images}, groups={"MODEL"})
    assert fast.keys() == eager.keys()
    for name in eager:
        torch.testing.assert_close(fast[name], eager[name])


def test_compiled_training_step_matches_eager_gradients() -> None:
    inputs = {"images": torch.rand(4, 3, 8, 8), "targets": torch.tensor([0, 1, 2, 3])}
    eager_model, compiled_model = make_model().train(), make_model().train()
    compiled = torch.compile(compiled_model, fullgraph=True)
    eager_loss = eager_model(inputs, groups=Stage.TRAIN)["head/loss"]
    compiled_loss = compiled(inputs, groups=Stage.TRAIN)["head/loss"]
    torch.testing.assert_close(compiled_loss, eager_loss)
    eager_loss.backward()
    compiled_loss.backward()
    for (name, a), (_, b) in zip(eager_model.named_parameters(), compiled_model.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_onnx_export_drops_targets_names_tensors_and_matches_at_another_batch(tmp_path: Path) -> None:
    model = make_model()
    path = export_bricks_as_onnx(
        tmp_path / "model.onnx",
        model,
        {"images": torch.rand(2, 3, 16, 16), "targets": torch.tensor([0, 1])},
        dynamic_batch_size=True,
    )
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == [
        "normalized",
        "features",
        "head/logits",
        "head/probabilities",
        "head/class_prediction",
    ]
    assert model.training  # export restores the mode it found
    report = check_onnx_parity(path, model, {"images": torch.rand(5, 3, 16, 16)})
    assert report.batch_size == 5
    assert set(report.max_abs_diff) == {
        "normalized",
        "features",
        "head/logits",
        "head/probabilities",
        "head/class_prediction",
    }
    assert report.worst < 1e-4
    assert report.max_abs_diff["head/class_prediction"] == 0


def test_export_stage_reaches_bricks(tmp_path: Path) -> None:
    model = BrickCollection({"resize": BrickNotTrainable(ResizeOnExport(), ["images", "stage"], ["small"])})
    path = export_bricks_as_onnx(tmp_path / "resize.onnx", model, {"images": torch.rand(2, 3, 16, 16)})
    report = check_onnx_parity(path, model, {"images": torch.rand(3, 3, 16, 16)})
    assert report.worst < 1e-5
    import onnxruntime as ort

    (small,) = ort.InferenceSession(str(path)).run(None, {"images": torch.rand(3, 3, 16, 16).numpy()})
    assert small.shape == (3, 3, 8, 8)


def test_export_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"missing \['images'\], got \['image'\]"):
        export_bricks_as_onnx(tmp_path / "m.onnx", make_model(), {"image": torch.rand(2, 3, 8, 8)})
    path = export_bricks_as_onnx(tmp_path / "m.onnx", make_model(), {"images": torch.rand(2, 3, 8, 8)})
    with pytest.raises(ExportError, match=r"needs inputs \['images'\]; missing \['images'\]"):
        check_onnx_parity(path, make_model(), {"raw": torch.rand(2, 3, 8, 8)})


def test_three_task_training_forward_compiles_without_graph_breaks() -> None:
    """MODEL + LOSS of shapes_multitask is one graph: no check or target assignment reads tensor values on the host.

    The values of the targets are checked once, by ``check_batch`` (each module's ``check_inputs``), outside it.
    """
    torch.manual_seed(0)
    small = ["data.train.num_samples=2", "data.val.num_samples=2", "data.args.image_size=32"]
    recipe = build_recipe("shapes_multitask", small)
    model = recipe.model.train()
    batch = dict(next(iter(recipe.loader("train", shuffle=False, batch_size=2))))
    groups = {"MODEL", "LOSS"}
    checked = model.extract_losses(model.check_batch(batch, groups=groups))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(batch, groups=groups)
    reasons = [str(reason.reason).splitlines()[0] for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, reasons
    torch._dynamo.reset()

    parameters = [p for p in model.parameters() if p.requires_grad]
    eager = model.extract_losses(model(batch, groups=groups))
    eager_total = sum(eager.values())
    eager_grads = torch.autograd.grad(eager_total, parameters)  # before the compiled call updates BatchNorm's buffers
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    fast = model.extract_losses(compiled(batch, groups=groups))
    fast_total = sum(fast.values())
    fast_grads = torch.autograd.grad(fast_total, parameters)
    assert (
        sorted(fast)
        == sorted(eager)
        == sorted(checked)
        == [
            "classify/loss",
            "detect/loss_box",
            "detect/loss_cls",
            "detect/loss_ctr",
            "segment/loss_ce",
            "segment/loss_dice",
        ]
    )
    assert eager["detect/loss_box"].item() > 0  # the batch has objects: the box terms are compared too
    assert abs(fast_total.item() - eager_total.item()) <= 1e-5  # type: ignore[union-attr]
    for name in eager:
        assert abs(fast[name].item() - eager[name].item()) <= 1e-5, name
    for eager_grad, fast_grad in zip(eager_grads, fast_grads, strict=True):
        torch.testing.assert_close(fast_grad, eager_grad, rtol=1e-4, atol=1e-5)
