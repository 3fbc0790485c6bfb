"""fit() and evaluate(): checks before the first step, learning, clipping, precision, loss weights, augmentation
epochs and the boxes the transforms dropped."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Subset
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from training_toys import ColourDataset, RenamingLoader, loader, toy_collection, weights

from brickzoo import BrickCollection, BrickLoss, BrickTrainable, Stage
from brickzoo.data import make_loader
from brickzoo.data.transforms import TransformedDataset, build_transforms
from brickzoo.errors import BrickDefinitionError, BrickInputError, ConfigError, DataError, MissingInputsError
from brickzoo.training import TrainConfig, _plots, evaluate, fit
from brickzoo.training._step import epoch_datasets, set_data_epoch


def quick(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {"epochs": 1, "lr": 1e-2, "device": "cpu", "log_every": 1}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_no_loss_brick_raises_before_the_first_step() -> None:
    collection = toy_collection()
    del collection["head0"]["loss"]
    before = weights(collection)
    train = RenamingLoader(loader(32), {})
    with pytest.raises(BrickDefinitionError) as info:
        fit(collection, train, config=quick(), quiet=True)
    message = str(info.value)
    assert "no loss brick" in message and "BrickLoss" in message and "head0/classify" in message
    assert train.batches_read == 0
    assert all(torch.equal(before[k], v) for k, v in weights(collection).items())


def test_missing_train_inputs_are_named_before_the_first_step() -> None:
    collection = toy_collection()
    before = weights(collection)
    train = RenamingLoader(loader(32), {"labels": "targets"})
    with pytest.raises(MissingInputsError) as info:
        fit(collection, train, config=quick(), quiet=True)
    message = str(info.value)
    assert message.startswith("train_loader (stage TRAIN): missing inputs ['labels']")
    assert "brick 'head0/loss' needs ['labels']" in message and "got ['images', 'targets']" in message
    assert train.batches_read == 1  # only the first batch was looked at
    assert all(torch.equal(before[k], v) for k, v in weights(collection).items())


def test_missing_validation_inputs_are_named_before_training() -> None:
    collection = toy_collection()
    before = weights(collection)
    train = RenamingLoader(loader(32), {})
    val = RenamingLoader(loader(16, seed=1, shuffle=False), {"images": "pixels"})
    with pytest.raises(MissingInputsError, match=r"val_loader \(stage VALIDATION\): missing inputs \['images'\]"):
        fit(collection, train, val, config=quick(), quiet=True)
    assert train.batches_read == 0
    assert all(torch.equal(before[k], v) for k, v in weights(collection).items())


def test_batches_must_be_dicts() -> None:
    dataset = torch.utils.data.TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))
    with pytest.raises(DataError, match="must yield dicts of named tensors.*got a list"):
        fit(toy_collection(), torch.utils.data.DataLoader(dataset, batch_size=4), config=quick(), quiet=True)


def test_unknown_loss_weight_and_device_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"loss_weights names \['head0/los'\].*\['head0/loss'\]"):
        fit(toy_collection(), loader(16), config=quick(loss_weights={"head0/los": 2.0}), quiet=True)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            fit(toy_collection(), loader(16), config=quick(device="cuda"), quiet=True)


def test_loss_decreases_and_accuracy_rises_on_a_learnable_problem() -> None:
    collection = toy_collection()
    val = loader(48, seed=1, shuffle=False)
    before = evaluate(collection, val, device="cpu", stage=Stage.VALIDATION)
    result = fit(collection, loader(96), val, quick(epochs=6, lr=3e-2, warmup_steps=2), quiet=True)
    losses = [r["val/loss"] for r in result.history]
    assert losses[-1] < 0.5 * before["loss"]
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert result.history[-1]["val/head0/accuracy"] >= 0.9 > before["head0/accuracy"]
    assert result.epochs_completed == 6 and result.global_step == 6 * 6
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]


def test_evaluate_matches_a_hand_computation() -> None:
    collection = toy_collection()
    val = loader(40, seed=2, batch_size=16, shuffle=False)  # batches of 16, 16 and 8
    got = evaluate(collection, val, device="cpu", stage=Stage.TEST)
    data = val.dataset
    with torch.no_grad():
        model = copy.deepcopy(collection).eval()
        logits = model["head0"]["classify"].model(model["backbone"].model(data.images))  # [40, 3]
    expected_loss = F.cross_entropy(logits, data.labels).item()  # mean over images
    accuracy = MulticlassAccuracy(3, average="micro")(logits.argmax(1), data.labels).item()
    confusion = MulticlassConfusionMatrix(3)(logits.argmax(1), data.labels).tolist()
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert got["head0/loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert got["head0/accuracy"] == pytest.approx(accuracy)
    assert got["head0/confusion"] == confusion
    assert collection.training  # evaluate restored the mode


def test_loss_weights_scale_the_total() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 1)
    collection = BrickCollection(
        {
            "model": BrickTrainable(linear, ["x"], ["y"]),
            "l1": BrickLoss(nn.L1Loss(), ["y", "t"], ["l1"]),
            "l2": BrickLoss(nn.MSELoss(), ["y", "t"], ["l2"]),
        }
    )
    x, t = torch.randn(8, 4), torch.randn(8, 1)
    data = [{"x": x, "t": t}]
    got = evaluate(collection, data, device="cpu", loss_weights={"l1": 0.5, "l2": 3.0})
    with torch.no_grad():
        y = x @ linear.weight.T + linear.bias
    l1, l2 = (y - t).abs().mean().item(), ((y - t) ** 2).mean().item()
    assert got["l1"] == pytest.approx(l1, rel=1e-6) and got["l2"] == pytest.approx(l2, rel=1e-6)
    assert got["loss"] == pytest.approx(0.5 * l1 + 3.0 * l2, rel=1e-6)
    # training minimises the weighted sum: with l1 weighted 0, one SGD step follows the MSE gradient only
    start = copy.deepcopy(linear)
    config = quick(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.1, grad_clip_norm=None)
    config.loss_weights = {"l1": 0.0}
    fit(collection, data, config=config, quiet=True)
    y = start(x)
    ((y - t) ** 2).mean().backward()
    assert start.weight.grad is not None
    torch.testing.assert_close(linear.weight, start.weight - 0.1 * start.weight.grad)


def test_gradient_clipping_bounds_the_update() -> None:
    collection = toy_collection()
    collection["backbone"].model[-1].p = 0.0  # no dropout, so the step by hand sees the same forward
    start = copy.deepcopy(collection)
    train = loader(16, batch_size=16, shuffle=False)
    clip, lr = 0.01, 0.5
    config = quick(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=lr, grad_clip_norm=clip)
    fit(collection, train, config=config, quiet=True)
    # the same step by hand: gradients of the first batch, clipped to the norm `clip`
    batch = next(iter(train))
    outputs = start(batch, stage=Stage.TRAIN)
    outputs["head0/loss"].backward()
    params = dict(start.named_parameters())
    norm = math.sqrt(sum(float((p.grad**2).sum()) for p in params.values() if p.grad is not None))
    assert norm > 10 * clip  # clipping is active
    scale = clip / (norm + 1e-6)
    after = dict(collection.named_parameters())
    update_norm = 0.0
    for name, param in params.items():
        assert param.grad is not None
        torch.testing.assert_close(after[name], param - lr * scale * param.grad, rtol=1e-5, atol=1e-7)
        update_norm += float(((after[name] - param).detach() ** 2).sum())
    assert math.sqrt(update_norm) / lr == pytest.approx(clip, rel=1e-4)


def test_bf16_autocast_trains_on_cpu_and_fp16_falls_back_with_a_warning() -> None:
    collection = toy_collection()
    before = weights(collection)
    result = fit(collection, loader(32), config=quick(amp="bf16"), quiet=True)
    assert math.isfinite(result.history[0]["train/loss"])
    assert any(not torch.equal(before[k], v) for k, v in weights(collection).items())
    assert all(v.dtype == before[k].dtype for k, v in weights(collection).items())  # weights stay float32
    with pytest.warns(UserWarning, match="amp='fp16' needs a CUDA device"):
        fit(toy_collection(), loader(16), config=quick(amp="fp16"), quiet=True)


def test_loader_without_length_needs_steps_per_epoch() -> None:
    def stream():  # a generator: no __len__
        yield from loader(32)

    with pytest.raises(ConfigError, match="has no length.*steps_per_epoch"):
        fit(toy_collection(), stream(), config=quick(), quiet=True)
    result = fit(toy_collection(), stream(), config=quick(steps_per_epoch=2), quiet=True)
    assert result.global_step == 2


def test_progress_bar_and_epoch_lines_when_not_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    fit(toy_collection(), loader(32), loader(16, seed=1), quick(epochs=2, log_every=1), quiet=False)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch")]
    assert [line.split(" (")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert "train/loss" in lines[0] and "val/head0/accuracy" in lines[0] and "train/head0/loss" not in lines[0]
    assert "epoch 2/2" in captured.err and "img_s=" in captured.err and "loss=" in captured.err


class CheckedCrossEntropy(nn.Module):
    """Cross-entropy whose ``check_inputs`` (the value checks kept out of forward) counts its calls."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.checked_batches = 0

    def check_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.checked_batches += 1
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise BrickInputError(f"labels must lie in [0, {self.num_classes}), got {labels.unique().tolist()}")

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)


def checked_collection() -> tuple[BrickCollection, CheckedCrossEntropy]:
    collection = toy_collection(visualize=False)
    loss = CheckedCrossEntropy(3)
    collection["head0"]["loss"] = BrickLoss(loss, ["./logits", "labels"], ["./loss"])
    return collection, loss


def test_the_first_batch_of_each_epoch_and_validation_gets_the_value_checks() -> None:
    collection, loss = checked_collection()
    fit(collection, loader(48), loader(32, seed=1), quick(epochs=2), quiet=True)  # 3 train, 2 val batches
    assert loss.checked_batches == 2 + 2  # the first training batch and the first validation batch, per epoch
    evaluate(collection, loader(32, seed=2), device="cpu", stage=Stage.TEST)
    assert loss.checked_batches == 5


def test_bad_target_values_fail_before_the_first_optimizer_step() -> None:
    collection, _ = checked_collection()
    before = {name: p.detach().clone() for name, p in collection.named_parameters()}
    data = loader(16, batch_size=8, shuffle=False)
    data.dataset.labels[0] = 7  # the first batch holds a class index out of range
    with pytest.raises(BrickInputError, match=r"head0/loss.*labels must lie in \[0, 3\), got \[.*7\]"):
        fit(collection, data, config=quick(), quiet=True)
    assert all(torch.equal(before[name], p) for name, p in collection.named_parameters())  # no optimizer step
    with pytest.raises(BrickInputError, match=r"head0/loss.*labels must lie in \[0, 3\)"):
        evaluate(collection, data, device="cpu", stage=Stage.VALIDATION)


def test_a_training_set_smaller_than_one_batch_with_drop_last_names_both_sizes() -> None:
    data = torch.utils.data.DataLoader(ColourDataset(3, seed=0), batch_size=4, shuffle=True, drop_last=True)
    with pytest.raises(DataError, match=r"dataset has 3 samples, fewer than batch_size=4, and drop_last=True"):
        fit(toy_collection(), data, config=quick(), quiet=True)


# -- augmentation epochs and dropped boxes -------------------------------------------------------------
AUGMENT = ["horizontal_flip", {"color_jitter": {"brightness": 0.5, "contrast": 0.5}}]


class BoxColourDataset(ColourDataset):
    """ColourDataset samples with two boxes each: one real, one of zero width (which every pipeline drops)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(index)
        sample["boxes"] = torch.tensor([[2.0, 3.0, 12.0, 20.0], [5.0, 5.0, 5.0, 9.0]])
        sample["box_labels"] = torch.tensor([0, 1])
        return sample


class RecordingDataset(TransformedDataset):
    """A TransformedDataset that records the epoch, index and image of every sample it gives."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: list[tuple[int, int, torch.Tensor]] = []

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(index)
        self.seen.append((self.epoch, index, sample["images"]))
        return sample


def test_each_epoch_trains_on_the_augmentations_of_its_own_epoch() -> None:
    base = ColourDataset(32, seed=0)
    data = RecordingDataset(base, build_transforms(AUGMENT), seed=3)
    fit(toy_collection(), make_loader(data, 16, shuffle=True, seed=0), None, quick(epochs=2), quiet=True)
    assert [epoch for epoch, _, _ in data.seen] == [0] * 32 + [1] * 32
    fresh = TransformedDataset(base, build_transforms(AUGMENT), seed=3)  # what (seed, index, epoch) alone gives
    images: dict[tuple[int, int], torch.Tensor] = {}
    for epoch, index, image in data.seen:
        fresh.set_epoch(epoch)
        assert torch.equal(image, fresh[index]["images"])
        images[epoch, index] = image
    assert all(not torch.equal(images[0, i], images[1, i]) for i in range(32))  # new colours every epoch


def test_datasets_with_set_epoch_are_found_inside_subsets_and_concatenations() -> None:
    inner = TransformedDataset(ColourDataset(4, seed=0), build_transforms(AUGMENT))
    other = TransformedDataset(ColourDataset(4, seed=1), build_transforms(AUGMENT))
    wrapped = ConcatDataset([Subset(inner, [0, 1]), other, ColourDataset(2, seed=2)])
    data = torch.utils.data.DataLoader(wrapped, batch_size=2)
    assert {id(d) for d in epoch_datasets(data)} == {id(inner), id(other)}
    set_data_epoch(data, 5)
    assert inner.epoch == other.epoch == 5


def test_boxes_dropped_by_the_transforms_are_counted_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    train = TransformedDataset(BoxColourDataset(32, seed=0), build_transforms(["horizontal_flip"]))
    val = TransformedDataset(BoxColourDataset(12, seed=1), build_transforms([]))
    result = fit(
        toy_collection(),
        make_loader(train, 16, shuffle=True),
        make_loader(val, 8, shuffle=False),
        quick(epochs=2),
        quiet=False,
    )
    # one zero-width box per sample: 32 per training epoch, 12 per validation
    assert [r["train/boxes_dropped"] for r in result.history] == [32, 32]
    assert [r["val/boxes_dropped"] for r in result.history] == [12, 12]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert all("train/boxes_dropped 32" in line and "val/boxes_dropped 12" in line for line in lines)
    assert evaluate(toy_collection(), make_loader(val, 5, shuffle=False), device="cpu")["boxes_dropped"] == 12
    plain = fit(toy_collection(), loader(32), loader(16, seed=1), quick(), quiet=True)
    assert not any("boxes_dropped" in key for key in plain.history[0])  # nothing counted, nothing reported


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_is_exact_with_augmentation(tmp_path: Path, num_workers: int) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed thread count makes CPU kernels bitwise reproducible
    try:
        config = TrainConfig(epochs=4, lr=2e-2, warmup_steps=3, min_lr=1e-3, device="cpu", grad_clip_norm=0.5)

        def train_loader() -> torch.utils.data.DataLoader:
            data = RecordingDataset(ColourDataset(32, seed=0), build_transforms(AUGMENT), seed=1)
            return make_loader(data, 16, shuffle=True, num_workers=num_workers, seed=2)

        straight = toy_collection()
        fit(straight, train_loader(), None, config, tmp_path / "straight", quiet=True)
        first = toy_collection()
        fit(first, train_loader(), None, config, tmp_path / "resumed", stop_after_epoch=2, quiet=True)
        resumed = toy_collection(seed=9)  # everything must come from the checkpoint
        rest = train_loader()
        fit(resumed, rest, None, config, tmp_path / "resumed", resume=True, quiet=True)
    finally:
        torch.set_num_threads(threads)
    assert rest.dataset.epoch == 3  # the resumed epochs 3 and 4 (0-based 2, 3) drew their own augmentations
    if num_workers == 0:
        # (before them, the batch drawn to predictions.png comes from the loader as it stands)
        assert [epoch for epoch, _, _ in rest.dataset.seen[-64:]] == [2] * 32 + [3] * 32
    assert weights(resumed).keys() == weights(straight).keys()
    assert all(torch.equal(weights(resumed)[k], v) for k, v in weights(straight).items())


def test_the_counts_of_dropped_boxes_stay_out_of_the_metric_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[list[_plots.Panel]] = []
    monkeypatch.setattr(_plots, "plot_panels", lambda panels: drawn.append(panels))
    record = {"epoch": 1, "train/loss": 1.0, "val/loss": 0.9, "val/head0/accuracy": 0.5, "val/boxes_dropped": 12}
    _plots.plot_loss_curves([record], ["head0/loss"])
    (panels,) = drawn
    assert [list(panel.series) for panel in panels] == [["train loss", "val loss"], ["head0/accuracy"]]
