"""One contract for the zoo's heads: modules and losses return dicts with fixed names, and the factories
map those names onto the tensor names they write; ``targets`` is a tensor name in every factory."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
import torch._dynamo

from brickzoo import BrickCollection
from brickzoo.bag_of_bricks import image_classification, object_detection, semantic_segmentation
from brickzoo.bag_of_bricks._features import FeatureLevel
from brickzoo.bag_of_bricks.image_classification import ClassificationLoss, image_classification_bricks
from brickzoo.bag_of_bricks.object_detection import FCOSLoss, object_detection_bricks
from brickzoo.bag_of_bricks.semantic_segmentation import SemanticSegmentationLoss, semantic_segmentation_bricks

LEVELS = [FeatureLevel(f"features/level{i}", channels=8, stride=2**i) for i in (3, 4)]
FACTORIES = {
    "classify": (image_classification_bricks, {"targets": "labels"}),
    "segment": (semantic_segmentation_bricks, {"targets": "masks"}),
    "detect": (object_detection_bricks, {"targets": "boxes", "target_labels": "box_labels"}),
}
# the tensor names each factory writes, per brick: unchanged by the dict contract
WRITTEN = {
    "classify": {
        "classify": ["./logits", "./probabilities", "./predictions", "./scores"],
        "loss": ["./loss"],
    },
    "segment": {"decode": ["./logits", "./predictions"], "loss": ["./loss_ce", "./loss_dice"]},
    "detect": {
        "head": ["./cls_logits", "./box_regression", "./centerness"],
        "postprocess": ["./boxes", "./scores", "./labels"],
        "loss": ["./loss_cls", "./loss_box", "./loss_ctr"],
    },
}


def batch(size: int = 32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    named = {
        level.name: torch.randn(2, 8, size // level.stride, size // level.stride, generator=generator)
        for level in LEVELS
    }
    return {
        **named,
        "images": torch.rand(2, 3, size, size, generator=generator),
        "labels": torch.tensor([0, 2]),
        "masks": torch.randint(0, 3, (2, size, size), generator=generator),
        "boxes": torch.tensor([[[2.0, 2, 20, 24], [0, 0, 0, 0]], [[8, 4, 30, 30], [1, 1, 9, 9]]]),
        "box_labels": torch.tensor([[1, -1], [0, 2]]),
    }


def test_factories_take_targets_as_one_tensor_name() -> None:
    for name, (factory, _) in FACTORIES.items():
        parameter = inspect.signature(factory).parameters["targets"]
        assert parameter.annotation in ("str", str), (name, parameter.annotation)
    assert inspect.signature(object_detection_bricks).parameters["target_labels"].default == "box_labels"
    assert "in_channels" not in inspect.signature(object_detection_bricks).parameters  # it could only be refused


@pytest.mark.parametrize("head", sorted(FACTORIES))
def test_modules_return_their_fixed_names_and_factories_map_them(head: str) -> None:
    factory, targets = FACTORIES[head]
    torch.manual_seed(0)
    bricks = factory(3, LEVELS, **targets)  # type: ignore[operator]
    model = BrickCollection({head: bricks})
    named = batch()
    for brick_name, written in WRITTEN[head].items():
        brick = bricks[brick_name]
        module: Any = brick.model
        assert brick.output_names == {key: f"./{key}" for key in module.OUTPUTS}
        assert list(brick.output_names.values()) == written
    outputs = model(named, groups={"MODEL", "LOSS"})
    for brick_name, written in WRITTEN[head].items():
        module = bricks[brick_name].model
        arguments = [outputs[n] if n in outputs else named[n] for n in _absolute(bricks[brick_name].input_names, head)]
        result = module(*arguments)
        assert isinstance(result, dict) and list(result) == list(module.OUTPUTS), (brick_name, list(result))
        for key, name in zip(module.OUTPUTS, written, strict=True):
            torch.testing.assert_close(result[key], outputs[f"{head}/{name.removeprefix('./')}"])


def _absolute(names: Any, head: str) -> list[str]:
    return [f"{head}/{n.removeprefix('./')}" if n.startswith("./") else n for n in names]


@pytest.mark.parametrize("dice_weight", [0.0, 0.5])
def test_segmentation_loss_names_do_not_depend_on_dice_weight(dice_weight: float) -> None:
    model = BrickCollection({"segment": semantic_segmentation_bricks(3, LEVELS, dice_weight=dice_weight)})
    losses = model.extract_losses(model(batch(), groups={"MODEL", "LOSS"}))
    assert sorted(losses) == ["segment/loss_ce", "segment/loss_dice"]
    assert (losses["segment/loss_dice"].item() == 0.0) == (dice_weight == 0.0)


def test_segmentation_without_dice_does_not_compute_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("soft_dice_loss was computed with dice_weight=0")

    monkeypatch.setattr(semantic_segmentation, "soft_dice_loss", refuse)
    model = BrickCollection({"segment": semantic_segmentation_bricks(3, LEVELS)})
    losses = model.extract_losses(model(batch(), groups={"MODEL", "LOSS"}))
    assert losses["segment/loss_dice"].item() == 0.0
    sum(losses.values()).backward()  # type: ignore[union-attr]


def test_detection_reads_the_target_names_it_is_given() -> None:
    named = batch()
    torch.manual_seed(0)
    default = BrickCollection({"detect": object_detection_bricks(3, LEVELS)})
    torch.manual_seed(0)
    renamed = BrickCollection({"detect": object_detection_bricks(3, LEVELS, targets="gt", target_labels="gt_cls")})
    assert renamed["detect"]["loss"].input_names[3:5] == ["gt", "gt_cls"]
    assert renamed["detect"]["metrics"].input_names[3:] == ["gt", "gt_cls"]
    inputs = {key: value for key, value in named.items() if key not in ("boxes", "box_labels")}
    inputs |= {"gt": named["boxes"], "gt_cls": named["box_labels"]}
    ours = renamed.extract_losses(renamed(inputs, groups={"MODEL", "LOSS"}))
    theirs = default.extract_losses(default(batch(), groups={"MODEL", "LOSS"}))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name])


def _losses_and_inputs() -> list[tuple[str, Any, tuple[Any, ...]]]:
    named = batch()
    torch.manual_seed(0)
    levels = [named[level.name] for level in LEVELS]
    sizes = sum(f.shape[-2] * f.shape[-1] for f in levels)
    detection = (torch.randn(2, sizes, 3), torch.rand(2, sizes, 4) * 32, torch.randn(2, sizes))
    return [
        ("classification", ClassificationLoss(3), (torch.randn(2, 3), named["labels"])),
        (
            "multilabel",
            ClassificationLoss(3, multilabel=True),
            (torch.randn(2, 3), torch.tensor([[1.0, 0, 1], [0, 0, 0]])),
        ),
        ("segmentation", SemanticSegmentationLoss(3), (torch.randn(2, 3, 32, 32), named["masks"])),
        (
            "segmentation+dice",
            SemanticSegmentationLoss(3, dice_weight=0.5),
            (torch.randn(2, 3, 32, 32), named["masks"]),
        ),
        ("detection", FCOSLoss(3, [8, 16]), (*detection, named["boxes"], named["box_labels"], *levels)),
    ]


@pytest.mark.parametrize("index", range(5), ids=[name for name, _, _ in _losses_and_inputs()])
def test_losses_trace_into_one_graph_and_check_values_only_in_check_inputs(index: int) -> None:
    """forward reads no tensor value on the host (fullgraph compiles); check_inputs accepts the good inputs."""
    _, loss, inputs = _losses_and_inputs()[index]
    loss.check_inputs(*inputs)
    eager = loss(*inputs)
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="eager")(*inputs)
    assert list(compiled) == list(eager) == list(loss.OUTPUTS)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key])


def test_value_checks_do_not_run_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """forward and update leave the value checks (host reads) to check_inputs: a model run never calls them."""
    calls: list[str] = []

    def counted(name: str, check: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return check(*args, **kwargs)

        return wrapper

    for module, name in (
        (image_classification, "_check_targets_values"),
        (semantic_segmentation, "check_class_index_values"),
        (object_detection, "_check_target_values"),
    ):
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    torch.manual_seed(0)
    model = BrickCollection({head: factory(3, LEVELS, **targets) for head, (factory, targets) in FACTORIES.items()})  # type: ignore[operator]
    named = batch()
    model(named, groups={"MODEL", "LOSS", "METRIC"})
    assert calls == []
    model.check_batch(named, groups={"MODEL", "LOSS", "METRIC"})
    assert sorted(calls) == sorted(
        ["_check_targets_values"] * 2 + ["check_class_index_values"] * 2 + ["_check_target_values"] * 2
    )  # a loss and a metric per head
