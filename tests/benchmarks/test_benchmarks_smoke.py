"""Smoke test of the benchmark scripts: each runs with ``--quick`` and prints its table (no speed is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"

# script -> the columns of the table it prints
SCRIPTS = {
    "multitask.py": ["model", "M params", "ms / forward", "three-task / this"],
    "export.py": [
        "model",
        "batch",
        "eager ms",
        "onnxruntime ms",
        "eager / onnxruntime",
        "parity (max abs)",
        "export s",
    ],
    "compile.py": [
        "model",
        "graph breaks",
        "graphs",
        "compile s",
        "recompiles",
        "eager ms",
        "compiled ms",
        "eager / compiled",
        "max abs diff",
    ],
    "train_step.py": ["model", "hand-written ms", "brickzoo ms", "difference ms", "brickzoo / hand"],
}
# script -> the first cell of rows it must print
ROWS = {"compile.py": ["classification (resnet10t + head)", "classification (resnet10t + head), training step"]}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_quick_and_prints_its_table(script: str) -> None:
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    result = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / script), "--quick", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, f"{script} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    columns = SCRIPTS[script]
    expected_header = "| " + " | ".join(columns) + " |"
    assert expected_header in lines, f"{script} did not print its table header:\n{result.stdout}"
    header = lines.index(expected_header)
    assert lines[header + 1] == "|" + "|".join("---" for _ in columns) + "|", lines[header + 1]
    rows = [line for line in lines[header + 2 :] if line.startswith("| ")]
    assert rows, f"{script} printed a table header without rows:\n{result.stdout}"
    for row in rows:
        assert len(row.split(" | ")) == len(columns), f"{script}: row {row!r} has not {len(columns)} cells"
    first_cells = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert all(cell in first_cells for cell in ROWS.get(script, [])), f"{script}: rows {first_cells}"
    assert any(line.startswith("target: ") for line in lines), f"{script} printed no target line:\n{result.stdout}"
