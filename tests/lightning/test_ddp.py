"""DDP with two CPU processes (gloo): gathered validation metrics equal one process on the same weights.

The two-process run is ``ddp_example.py`` started in a subprocess, so pytest's
own process never joins a process group. The references are computed here, in one process, from
the final checkpoint: by calling the modules directly with numpy/scikit-learn, and by Lightning's
``trainer.validate`` on one device.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ddp_example import PROBE_SEED, TRAIN_SAMPLES, VAL_SAMPLES
from lightning_testkit import build_collection, make_dataset, make_tensors, reference_logits
from sklearn.metrics import f1_score, roc_auc_score
from torch.utils.data import DataLoader

from brickzoo.lightning import BrickLightningModule, load_collection_from_lightning_checkpoint

HERE = Path(__file__).resolve().parent
METRIC_KEYS = ["val/head/accuracy", "val/head/f1_macro", "val/head/auroc", "val/head/count", "val/loss"]


def _last_logged_row(metrics_csv: Path, column: str) -> dict[str, float]:
    with metrics_csv.open() as f:
        rows = [row for row in csv.DictReader(f) if row.get(column)]
    return {key: float(value) for key, value in rows[-1].items() if value}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the two-process example once; return its output folder."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"}}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_example.py"), str(out), "2"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"DDP run failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return out


def _ranks(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_processes_split_the_data_and_keep_identical_weights(ddp_run: Path) -> None:
    ranks = _ranks(ddp_run)
    for record in ranks:
        assert record["world_size"] == 2
        assert record["backend"] == "gloo"
        assert record["global_step"] == 2 * TRAIN_SAMPLES // (2 * 4)  # 2 epochs of 4 steps per process
        assert record["lr"] == [pytest.approx(0.05 * 0.5**2)]  # StepLR halved it after each epoch
    train0, train1 = (set(r["train_indices_last_epoch"]) for r in ranks)
    assert len(train0) == len(train1) == TRAIN_SAMPLES // 2
    assert train0.isdisjoint(train1) and train0 | train1 == set(range(TRAIN_SAMPLES))
    val0, val1 = (r["val_indices_last_epoch"] for r in ranks)
    assert len(val0) == len(val1) == VAL_SAMPLES // 2  # the sampler padded nothing
    assert set(val0).isdisjoint(val1) and set(val0) | set(val1) == set(range(VAL_SAMPLES))
    state0 = torch.load(ddp_run / "rank0_state.pt", weights_only=True)
    state1 = torch.load(ddp_run / "rank1_state.pt", weights_only=True)
    assert state0.keys() == state1.keys() and len(state0) > 0
    for key in state0:
        assert torch.equal(state0[key], state1[key]), key


def test_checkpoint_loads_into_a_fresh_collection_with_identical_outputs(ddp_run: Path) -> None:
    fresh = build_collection(seed=123)
    probe = {"images": make_tensors(6, seed=PROBE_SEED, with_labels=False)["images"]}
    expected = torch.load(ddp_run / "probe_outputs.pt", weights_only=True)
    fresh.eval()
    with torch.no_grad():
        before = fresh(probe, groups="MODEL", return_inputs=False)
    assert not torch.equal(before["head/logits"], expected["head/logits"])
    loaded = load_collection_from_lightning_checkpoint(ddp_run / "checkpoints" / "last.ckpt", fresh)
    assert loaded is fresh
    with torch.no_grad():
        outputs = fresh(probe, groups="MODEL", return_inputs=False)
    assert outputs.keys() == expected.keys()
    for name in expected:
        assert torch.equal(outputs[name], expected[name]), name
    state0 = torch.load(ddp_run / "rank0_state.pt", weights_only=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state0[key]), key


def test_gathered_validation_metrics_equal_one_process(ddp_run: Path) -> None:
    logged = _last_logged_row(next(ddp_run.glob("ddp/version_*/metrics.csv")), "val/head/count")
    assert logged["epoch"] == 1
    collection = load_collection_from_lightning_checkpoint(ddp_run / "checkpoints" / "last.ckpt", build_collection())

    # Independent reference: the modules called directly on all validation samples at once.
    val = make_tensors(VAL_SAMPLES, seed=2)
    logits = reference_logits(collection, val["images"])  # [24, 3]
    labels = val["labels"].numpy()
    probabilities = logits.softmax(dim=1).double().numpy()
    predicted = logits.argmax(dim=1).numpy()
    reference = {
        "val/head/accuracy": float(np.mean(predicted == labels)),
        "val/head/f1_macro": f1_score(labels, predicted, average="macro"),
        "val/head/auroc": roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"),
        "val/head/count": float(VAL_SAMPLES),
        "val/loss": F.cross_entropy(logits.double(), val["labels"]).item(),
    }
    for key in METRIC_KEYS:
        assert logged[key] == pytest.approx(reference[key], abs=2e-6), key
    assert 0 < reference["val/head/accuracy"] < 1  # a metric that is not trivially saturated

    # Each process computed the same gathered values (not its half of the data).
    for record in _ranks(ddp_run):
        for key, value in record["epoch_metrics"]["val"].items():
            assert value == pytest.approx(logged[f"val/{key}"], abs=1e-7), (record["rank"], key)

    # Lightning on one process with the same weights and data.
    module = BrickLightningModule(collection, optimizer_factory=lambda params: torch.optim.SGD(params, lr=0.1))
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (single,) = trainer.validate(module, DataLoader(make_dataset(VAL_SAMPLES, seed=2), batch_size=8), verbose=False)
    for key in METRIC_KEYS:
        assert single[key] == pytest.approx(logged[key], abs=2e-6), key
