"""The README's Lightning example runs as written: saved as ``train.py`` and started with ``python train.py``.

It trains with DDP on 2 CPU processes; Lightning starts the second process by running the script again.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def lightning_example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- lightning:start -->\s*```python\n(.*?)```\s*<!-- lightning:end -->", text, re.S)
    assert match, "README.md has no lightning example between <!-- lightning:start/end --> markers"
    return match.group(1)


def test_the_readme_lightning_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(lightning_example(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in {"LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert "distributed_backend=gloo" in result.stderr and "Starting with 2 processes" in result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("validation accuracy")]
    assert len(printed) == 1  # rank 0 only
    accuracy = float(printed[0].split()[-1])
    assert 0.0 <= accuracy <= 1.0
    checkpoint = torch.load(tmp_path / "runs" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2 * (32 // 2 // 4)  # 2 epochs of 4 steps per process
    (metrics_csv,) = (tmp_path / "runs" / "ddp").glob("version_*/metrics.csv")
    with metrics_csv.open() as f:
        logged = [float(row["val/classify/accuracy"]) for row in csv.DictReader(f) if row.get("val/classify/accuracy")]
    assert len(logged) == 2 and logged[-1] == pytest.approx(accuracy, abs=1e-6)
