"""BrickLightningModule on one CPU process: steps, logging, per-stage metrics, errors, precision, checkpoints."""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning_testkit import (
    NUM_CLASSES,
    MeanSquare,
    NamedTensorDataset,
    build_collection,
    make_dataset,
    make_tensors,
    reference_logits,
)
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader

from brickzoo import METRIC, BrickCollection, BrickLoss, BrickTrainable, Stage
from brickzoo.errors import (
    BrickDefinitionError,
    BrickInputError,
    BrickOutputError,
    DataError,
    MissingInputsError,
    WeightsError,
)
from brickzoo.lightning import BrickLightningModule, load_collection_from_lightning_checkpoint


def sgd(lr: float = 0.1) -> Any:
    return lambda params: torch.optim.SGD(params, lr=lr)


def make_trainer(tmp_path: Path | None = None, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": CSVLogger(tmp_path, name="logs") if tmp_path is not None else False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "log_every_n_steps": 1,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def loader(num_samples: int, seed: int, batch_size: int = 4, **kwargs: Any) -> DataLoader:
    return DataLoader(make_dataset(num_samples, seed, **kwargs), batch_size=batch_size)


def read_rows(tmp_path: Path) -> list[dict[str, float]]:
    (path,) = tmp_path.glob("logs/version_*/metrics.csv")
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def parameters(collection: BrickCollection) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in collection.named_parameters()}


# -- fit, logging and per-stage metrics --------------------------------------------------------
def test_fit_logs_losses_and_validation_metrics_of_the_final_weights(tmp_path: Path) -> None:
    module = BrickLightningModule(build_collection(), sgd(0.5))
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, loader(16, seed=1), loader(12, seed=2, batch_size=6))
    rows = read_rows(tmp_path)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(8))  # 2 epochs x 4 steps, logged per step
    assert all(r["train/loss"] == r["train/head/loss_ce"] for r in train_rows)
    val = [r for r in rows if "val/loss" in r][-1]
    assert val["epoch"] == 1
    data = make_tensors(12, seed=2)
    logits = reference_logits(module.collection, data["images"])  # the final weights, modules called directly
    predicted, labels = logits.argmax(1).numpy(), data["labels"].numpy()
    assert val["val/loss"] == pytest.approx(F.cross_entropy(logits, data["labels"]).item(), abs=1e-6)
    assert val["val/head/loss_ce"] == pytest.approx(val["val/loss"], abs=1e-7)
    assert val["val/head/accuracy"] == pytest.approx(np.mean(predicted == labels), abs=1e-7)
    assert val["val/head/f1_macro"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-6)
    assert val["val/head/count"] == 12
    assert module.epoch_metrics["val"]["head/count"].item() == 12
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(val["val/loss"], abs=1e-7)


def test_stage_metric_copies_do_not_mix_and_share_the_weights(tmp_path: Path) -> None:
    collection = build_collection()
    module = BrickLightningModule(collection, sgd())
    # one set of weights: the metric copies hold no parameter, the module's parameters are the collection's
    assert {id(p) for p in module.parameters()} == {id(p) for p in collection.parameters()}
    assert sorted(module.stage_metrics.keys()) == ["TEST", "TRAIN", "VALIDATION"]
    for metrics in module.stage_metrics.values():
        assert isinstance(metrics, BrickCollection)
        assert sum(1 for _ in metrics.parameters()) == 0
        assert all(METRIC in brick.groups for _, brick in metrics.named_bricks())
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=1)
    trainer.fit(module, loader(40, seed=1, batch_size=4), loader(30, seed=2, batch_size=5))
    rows = read_rows(tmp_path)
    train_counts = [r["train/head/count"] for r in rows if "train/head/count" in r]
    val_counts = [r["val/head/count"] for r in rows if "val/head/count" in r]
    assert train_counts == [12, 12]  # 3 batches of 4 per epoch: no validation (or sanity) batch counted
    assert val_counts == [10, 10]  # 2 batches of 5 per epoch: no training batch, reset every epoch
    (test,) = trainer.test(module, loader(9, seed=3, batch_size=3), verbose=False)
    assert test["test/head/count"] == 9
    assert module.epoch_metrics["train"]["head/count"].item() == 12  # test batches went to the test copy only
    assert collection.summarize() == {}  # the collection's own metric bricks never ran


def test_log_metrics_selects_the_stages_that_run_metrics(tmp_path: Path) -> None:
    module = BrickLightningModule(build_collection(), sgd(), log_metrics={Stage.VALIDATION, "TEST"})
    assert sorted(module.stage_metrics.keys()) == ["TEST", "VALIDATION"]
    make_trainer(tmp_path, max_steps=2, limit_val_batches=1).fit(module, loader(8, seed=1), loader(4, seed=2))
    logged = set().union(*read_rows(tmp_path))
    assert "val/head/accuracy" in logged and not any(k.startswith("train/head/acc") for k in logged)
    assert sorted(BrickLightningModule(build_collection(), sgd(), log_metrics=False).stage_metrics.keys()) == []
    with pytest.raises(BrickDefinitionError, match=r"log_metrics .*'INFERENCE'"):
        BrickLightningModule(build_collection(), sgd(), log_metrics={"INFERENCE"})


def test_metric_brick_that_is_also_a_model_brick_is_rejected() -> None:
    collection = build_collection()
    collection["head"]["extra"] = BrickTrainable(
        nn.Identity(), input_names=["./logits"], output_names=["./same"], group={"MODEL", METRIC}
    )
    with pytest.raises(BrickDefinitionError, match=r"'head/extra' belongs to groups \['METRIC', 'MODEL'\]"):
        BrickLightningModule(collection, sgd())


# -- loss weights -------------------------------------------------------------------------------
def test_loss_weights_weight_the_logged_and_optimised_total(tmp_path: Path) -> None:
    collection = build_collection(with_l2_loss=True)
    initial = copy.deepcopy(collection)
    module = BrickLightningModule(collection, sgd(0.1), loss_weights={"head/loss_ce": 2.0, "head/loss_l2": 0.5})
    make_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, loader(8, seed=1, batch_size=8))
    (row,) = [r for r in read_rows(tmp_path) if "train/loss" in r]
    assert row["train/loss"] == pytest.approx(2.0 * row["train/head/loss_ce"] + 0.5 * row["train/head/loss_l2"])

    # Reference SGD step: the modules called directly, the weighted loss by hand.
    batch = make_tensors(8, seed=1)
    backbone, classify = initial["backbone"].model, initial["head"]["classify"].model
    logits = classify(backbone((batch["images"] - 0.5) / 0.25))
    ce, l2 = F.cross_entropy(logits, batch["labels"]), logits.pow(2).mean()
    assert row["train/head/loss_ce"] == pytest.approx(ce.item(), abs=1e-6)
    (2.0 * ce + 0.5 * l2).backward()
    with torch.no_grad():
        for p in initial.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    trained = dict(collection.named_parameters())
    for name, p in initial.named_parameters():
        torch.testing.assert_close(trained[name], p, rtol=1e-5, atol=1e-6, msg=name)


def test_bad_loss_weights_name_the_problem() -> None:
    with pytest.raises(BrickDefinitionError, match=r"'head/loss_cee' is not a loss name \(did you mean"):
        BrickLightningModule(build_collection(), sgd(), loss_weights={"head/loss_cee": 1.0})
    with pytest.raises(BrickDefinitionError, match=r"'head/loss_ce' has weight nan"):
        BrickLightningModule(build_collection(), sgd(), loss_weights={"head/loss_ce": float("nan")})


# -- predict --------------------------------------------------------------------------------
def test_predict_returns_the_model_outputs_without_labels() -> None:
    collection = build_collection()
    module = BrickLightningModule(collection, sgd())
    data = make_tensors(6, seed=4, with_labels=False)
    batches = make_trainer().predict(module, DataLoader(make_dataset(6, seed=4, with_labels=False), batch_size=4))
    assert batches is not None and len(batches) == 2
    for batch in batches:
        assert isinstance(batch, dict)
        assert set(batch) == {"normalized", "features", "head/logits", "head/probabilities"}
    logits = torch.cat([b["head/logits"] for b in batches])
    torch.testing.assert_close(logits, reference_logits(collection, data["images"]), rtol=0, atol=1e-6)
    probabilities = torch.cat([b["head/probabilities"] for b in batches])
    torch.testing.assert_close(probabilities, logits.softmax(1))


# -- errors before the first step -------------------------------------------------------------
def test_training_without_loss_bricks_fails_before_the_first_step(tmp_path: Path) -> None:
    collection = build_collection(with_loss=False)
    before = parameters(collection)
    trainer = make_trainer(tmp_path, max_steps=2)
    with pytest.raises(BrickDefinitionError, match=r"stage TRAIN: the collection has no loss brick"):
        trainer.fit(BrickLightningModule(collection, sgd()), loader(8, seed=1))
    assert trainer.global_step == 0
    for name, value in parameters(collection).items():
        assert torch.equal(value, before[name])
    # the same collection can still be validated (metrics only, no loss)
    (result,) = make_trainer().validate(BrickLightningModule(collection, sgd()), loader(6, seed=2), verbose=False)
    assert result["val/head/count"] == 6 and "val/loss" not in result


def test_missing_training_inputs_fail_before_any_optimizer_step(tmp_path: Path) -> None:
    collection = build_collection()
    before = parameters(collection)
    trainer = make_trainer(tmp_path, max_steps=2, num_sanity_val_steps=0)
    with pytest.raises(MissingInputsError) as info:
        trainer.fit(BrickLightningModule(collection, sgd()), loader(8, seed=1, with_labels=False))
    message = str(info.value)
    assert message.startswith("BrickLightningModule, stage TRAIN (training_step): missing inputs ['labels']")
    assert "brick 'head/loss' needs ['labels']" in message and "brick 'head/ones' needs ['labels']" in message
    assert trainer.global_step == 0
    for name, value in parameters(collection).items():
        assert torch.equal(value, before[name])


def test_missing_validation_inputs_name_the_validation_stage() -> None:
    module = BrickLightningModule(build_collection(), sgd())
    with pytest.raises(MissingInputsError, match=r"stage VALIDATION \(validation_step\): missing inputs \['labels'\]"):
        make_trainer(max_steps=1).fit(module, loader(8, seed=1), loader(4, seed=2, with_labels=False))


@settings(max_examples=8, deadline=None)
@given(dropped=st.sets(st.sampled_from(["images", "labels", "index"]), min_size=1))
def test_missing_inputs_are_listed_for_each_stage(dropped: set[str]) -> None:
    module = BrickLightningModule(build_collection(), sgd())
    batch = {k: v for k, v in make_tensors(4, seed=0).items() if k not in dropped}
    needs = {"TRAIN": {"images", "labels"}, "VALIDATION": {"images", "labels"}, "INFERENCE": {"images"}}
    steps = {
        "TRAIN": module.training_step,
        "VALIDATION": module.validation_step,
        "INFERENCE": module.predict_step,
    }
    for stage, step in steps.items():
        missing = sorted(needs[stage] & dropped)
        if not missing:  # the step runs (self.log only warns without a Trainer)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = step(batch, 0)
            outputs = result if stage == "INFERENCE" else result["outputs"]
            assert outputs["head/logits"].shape == (4, NUM_CLASSES)
            continue
        with pytest.raises(MissingInputsError) as info:
            step(batch, 0)
        assert f"stage {stage} " in str(info.value)
        assert f"missing inputs {missing}" in str(info.value)


def test_a_batch_that_is_not_a_dict_is_refused() -> None:
    module = BrickLightningModule(build_collection(), sgd())
    with pytest.raises(DataError, match=r"stage TRAIN .*must yield dicts of named tensors.*got a list"):
        module.training_step([torch.zeros(2, 3, 16, 16)], 0)  # type: ignore[arg-type]


def test_bad_constructor_arguments() -> None:
    with pytest.raises(BrickDefinitionError, match="must be a BrickCollection, got dict"):
        BrickLightningModule({"a": 1}, sgd())  # type: ignore[arg-type]
    with pytest.raises(BrickDefinitionError, match="optimizer_factory must be callable"):
        BrickLightningModule(build_collection(), "sgd")  # type: ignore[arg-type]


def test_loss_named_like_the_total_and_non_scalar_losses_are_refused() -> None:
    collection = build_collection(with_l2_loss=True)
    collection["total"] = BrickLoss(MeanSquare(), input_names=["head/logits"], output_names=["loss"])
    with pytest.raises(
        BrickDefinitionError, match=r"a loss brick writes 'loss'.*\['head/loss_ce', 'head/loss_l2', 'loss'\]"
    ):
        BrickLightningModule(collection, sgd())
    collection = build_collection(with_loss=False)
    collection["per_sample"] = BrickLoss(
        nn.CrossEntropyLoss(reduction="none"), input_names=["head/logits", "labels"], output_names=["loss_ce"]
    )
    module = BrickLightningModule(collection, sgd())
    with pytest.raises(BrickOutputError, match=r"stage TRAIN: loss 'loss_ce' must be a scalar .*got Tensor\[4\]"):
        module.training_step(make_tensors(4, seed=0), 0)


# -- optimisers and schedulers -----------------------------------------------------------------
def test_scheduler_factory_plain_and_dict(tmp_path: Path) -> None:
    module = BrickLightningModule(
        build_collection(), sgd(0.4), scheduler_factory=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)
    )
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, loader(8, seed=1))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)  # halved after each epoch

    def per_step(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5), "interval": "step"}

    module = BrickLightningModule(build_collection(), sgd(0.4), scheduler_factory=per_step)
    trainer = make_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(module, loader(16, seed=1))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)  # halved after each step


def test_factories_returning_the_wrong_thing_are_refused() -> None:
    module = BrickLightningModule(build_collection(), lambda params: list(params))  # type: ignore[arg-type,return-value]
    with pytest.raises(BrickDefinitionError, match="must return a torch.optim.Optimizer, got list"):
        module.configure_optimizers()
    module = BrickLightningModule(build_collection(), sgd(), scheduler_factory=lambda o: {"interval": "step"})
    with pytest.raises(BrickDefinitionError, match=r"without the key 'scheduler'; got keys \['interval'\]"):
        module.configure_optimizers()


# -- precision -----------------------------------------------------------------------------------
def test_bf16_mixed_precision_trains_a_step_on_cpu(tmp_path: Path) -> None:
    collection = build_collection()
    before = parameters(collection)
    module = BrickLightningModule(collection, sgd())
    trainer = make_trainer(tmp_path, precision="bf16-mixed", max_steps=1, limit_val_batches=0)
    trainer.fit(module, loader(8, seed=1))
    (row,) = [r for r in read_rows(tmp_path) if "train/loss" in r]
    assert np.isfinite(row["train/loss"]) and row["train/loss"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in parameters(collection).items())
    assert all(p.dtype == torch.float32 for p in collection.parameters())  # master weights stay float32
    (batch,) = trainer.predict(module, loader(4, seed=2, with_labels=False))  # type: ignore[misc]
    assert batch["head/logits"].dtype == torch.bfloat16  # the forward ran under bf16 autocast


# -- checkpoints -----------------------------------------------------------------------------------
def test_lightning_checkpoint_restores_a_collection_and_resumes(tmp_path: Path) -> None:
    module = BrickLightningModule(build_collection(), sgd())
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(
        tmp_path, max_epochs=1, callbacks=[checkpoint], enable_checkpointing=True, limit_val_batches=1
    )
    trainer.fit(module, loader(8, seed=1), loader(4, seed=2))
    last = tmp_path / "ckpt" / "last.ckpt"
    fresh = load_collection_from_lightning_checkpoint(last, build_collection(seed=5))
    images = make_tensors(5, seed=9)["images"]
    assert torch.equal(reference_logits(fresh, images), reference_logits(module.collection, images))

    wrong = build_collection(num_classes=NUM_CLASSES + 1)
    with pytest.raises(
        WeightsError, match=r"brick 'head/classify': model.weight \(checkpoint \[3, 8\] vs collection \[4, 8\]\)"
    ):
        load_collection_from_lightning_checkpoint(last, wrong)
    partial = load_collection_from_lightning_checkpoint(last, wrong, strict=False)
    assert torch.equal(partial["backbone"].model.conv.weight, module.collection["backbone"].model.conv.weight)
    with pytest.raises(WeightsError, match="does not exist"):
        load_collection_from_lightning_checkpoint(tmp_path / "nope.ckpt", build_collection())
    torch.save({"weights": torch.zeros(1)}, tmp_path / "not_lightning.ckpt")
    with pytest.raises(WeightsError, match=r"expected a dict with 'state_dict', got \['weights'\]"):
        load_collection_from_lightning_checkpoint(tmp_path / "not_lightning.ckpt", build_collection())

    # Resuming a fit from the checkpoint continues at its step.
    resumed = make_trainer(max_epochs=2, limit_val_batches=0)
    resumed.fit(BrickLightningModule(build_collection(seed=5), sgd()), loader(8, seed=1), ckpt_path=last)
    assert resumed.global_step == 4  # 2 steps restored + 2 new ones


def test_import_brickzoo_does_not_import_lightning() -> None:
    code = "import sys, brickzoo; print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"


# -- value checks on the first batch of each loader ---------------------------------------------
class CheckedCrossEntropy(nn.Module):
    """Cross-entropy whose ``check_inputs`` (the value checks kept out of forward) counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.checked_batches = 0

    def check_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.checked_batches += 1
        if int(labels.max()) >= logits.shape[1]:
            raise BrickInputError(f"labels must be below {logits.shape[1]}, got {labels.max().item()}")

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)


def checked_collection() -> tuple[BrickCollection, CheckedCrossEntropy]:
    collection = build_collection()
    loss = CheckedCrossEntropy()
    collection["head"]["loss"] = BrickLoss(loss, input_names=["./logits", "labels"], output_names=["./loss_ce"])
    return collection, loss


def test_the_first_batch_of_each_loader_gets_the_value_checks(tmp_path: Path) -> None:
    collection, loss = checked_collection()
    trainer = make_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(BrickLightningModule(collection, sgd()), loader(16, seed=1), loader(8, seed=2))  # 4 and 2 batches
    assert loss.checked_batches == 2 + 2  # per epoch: the first training batch and the first validation batch
    make_trainer().test(BrickLightningModule(collection, sgd()), loader(8, seed=3), verbose=False)
    assert loss.checked_batches == 5


def test_bad_target_values_fail_before_the_first_optimizer_step(tmp_path: Path) -> None:
    collection, _ = checked_collection()
    before = parameters(collection)
    data = make_tensors(8, seed=1)
    data["labels"][1] = NUM_CLASSES + 2
    trainer = make_trainer(tmp_path, max_steps=2, num_sanity_val_steps=0)
    with pytest.raises(BrickInputError, match=r"head/loss.*labels must be below 3, got 5"):
        trainer.fit(BrickLightningModule(collection, sgd()), DataLoader(NamedTensorDataset(data), batch_size=4))
    assert trainer.global_step == 0
    for name, value in parameters(collection).items():
        assert torch.equal(value, before[name])
