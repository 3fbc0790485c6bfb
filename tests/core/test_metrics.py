"""Metric bricks against torchmetrics used directly."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from brickzoo import BrickCollection, BrickLoss, BrickMetrics, BrickMetricSingle, BrickTrainable


def head(num_classes: int) -> dict:
    return {
        "predict": BrickTrainable(lambda x: x.argmax(dim=1), ["./logits"], ["./prediction"]),
        "metrics": BrickMetrics(
            MetricCollection(
                {
                    "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
                    "f1": MulticlassF1Score(num_classes=num_classes),
                }
            ),
            input_names=["./prediction", "targets"],
        ),
    }


@settings(max_examples=15, deadline=None)
@given(batches=st.integers(1, 4), batch_size=st.integers(1, 6), seed=st.integers(0, 1000))
def test_summarize_equals_torchmetrics_over_all_batches(batches: int, batch_size: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    collection = BrickCollection({"head0": head(3), "head1": head(5)})
    seen_logits: dict[str, list[torch.Tensor]] = {"head0": [], "head1": []}
    seen_targets = []
    for _ in range(batches):
        targets = torch.randint(0, 3, (batch_size,), generator=generator)
        inputs = {
            "head0/logits": torch.randn(batch_size, 3, generator=generator),
            "head1/logits": torch.randn(batch_size, 5, generator=generator),
            "targets": targets,
        }
        collection(inputs)
        seen_targets.append(targets)
        for name in seen_logits:
            seen_logits[name].append(inputs[f"{name}/logits"])
    metrics = collection.summarize(reset=True)
    assert set(metrics) == {"head0/accuracy", "head0/f1", "head1/accuracy", "head1/f1"}
    targets = torch.cat(seen_targets)
    for name, classes in (("head0", 3), ("head1", 5)):
        preds = torch.cat(seen_logits[name]).argmax(dim=1)
        torch.testing.assert_close(
            metrics[f"{name}/accuracy"], multiclass_accuracy(preds, targets, num_classes=classes, average="micro")
        )
        torch.testing.assert_close(metrics[f"{name}/f1"], multiclass_f1_score(preds, targets, num_classes=classes))
    assert collection.summarize() == {}


def test_metrics_update_without_gradients_and_return_metrics() -> None:
    collection = BrickCollection(
        {
            "model": BrickTrainable(torch.nn.Linear(2, 3), ["x"], ["logits"]),
            "heads": {
                "accuracy": BrickMetricSingle(
                    MulticlassAccuracy(num_classes=3), ["../logits", "targets"], return_metrics=True
                )
            },
        }
    )
    x = torch.randn(4, 2)
    targets = torch.tensor([0, 1, 2, 0])
    out = collection({"x": x, "targets": targets})
    batch_value = out["heads/MulticlassAccuracy"]
    assert not batch_value.requires_grad
    expected = multiclass_accuracy(out["logits"].detach(), targets, num_classes=3)
    torch.testing.assert_close(batch_value, expected)
    torch.testing.assert_close(collection.summarize()["heads/MulticlassAccuracy"], expected)


def test_metric_name_override_and_reset_metrics() -> None:
    collection = BrickCollection(
        {"acc": BrickMetricSingle(MulticlassAccuracy(num_classes=2), ["p", "t"], metric_name="accuracy")}
    )
    collection({"p": torch.tensor([1, 1]), "t": torch.tensor([1, 0])})
    assert collection.summarize() == {"accuracy": torch.tensor(0.5)}
    collection.reset_metrics()
    assert collection.summarize() == {}


def test_metric_states_move_with_to() -> None:
    metric = MulticlassAccuracy(num_classes=2)
    collection = BrickCollection({"acc": BrickMetricSingle(metric, ["p", "t"])})
    collection.to(torch.float64)
    collection({"p": torch.tensor([1, 0]), "t": torch.tensor([1, 0])})
    assert collection.summarize()["MulticlassAccuracy"] == 1.0


def test_extract_losses_returns_only_loss_outputs() -> None:
    collection = BrickCollection(
        {
            "model": BrickTrainable(lambda x: x * 2, ["x"], ["y"]),
            "h": {"l1": BrickLoss(torch.nn.L1Loss(), ["../y", "t"], ["./loss_l1"])},
            "l2": BrickLoss(torch.nn.MSELoss(), ["y", "t"], ["loss_l2"]),
        }
    )
    out = collection({"x": torch.ones(2), "t": torch.zeros(2)})
    losses = collection.extract_losses(out)
    assert list(losses) == ["h/loss_l1", "loss_l2"]
    assert losses["h/loss_l1"].item() == 2.0 and losses["loss_l2"].item() == 4.0
    assert collection.loss_names() == ["h/loss_l1", "loss_l2"]
