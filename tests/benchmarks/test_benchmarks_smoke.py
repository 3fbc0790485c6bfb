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
    "train_step.py": ["model", "batch", "hand-written ms", "brickzoo ms", "difference ms", "brickzoo / hand"],
    "scale.py": [
        "size",
        "batch",
        "eager ms",
        "onnxruntime ms",
        "eager / onnxruntime",
        "post-processing ms",
        "post-processing / forward",
        "eager peak MiB (+forward)",
        "onnxruntime peak MiB (+forward)",
        "parity (max abs)",
        "export s",
    ],
}
# script -> the columns of a second table it prints
SECOND_TABLES = {
    "train_step.py": ["pipeline", "num_workers", "images / s", "vs training step alone"],
    "scale.py": [
        "pre_nms_top_k",
        "batch",
        "candidates / image",
        "kept / image",
        "rounds",
        "brickzoo eager ms",
        "blocks ms",
        "single matrix ms",
        "batched_nms ms",
        "brickzoo eager / batched_nms",
        "same kept",
    ],
}
# script -> the first cell of rows it must print
ROWS = {
    "compile.py": ["classification (resnet10t + head)", "classification (resnet10t + head), training step"],
    "train_step.py": ["classification (resnet10t + head)", "three-task 320 px (shapes_multitask_320)"],
}
# script -> seconds it may take (under load: the scale smoke run exports a model and starts two processes)
TIMEOUTS = {"scale.py": 420}


def table_rows(script: str, lines: list[str], columns: list[str]) -> list[str]:
    """The rows of the table with these columns (the lines right below its header), checked for their cells."""
    stdout = "\n".join(lines)
    expected_header = "| " + " | ".join(columns) + " |"
    assert expected_header in lines, f"{script} did not print its table header {columns}:\n{stdout}"
    header = lines.index(expected_header)
    assert lines[header + 1] == "|" + "|".join("---" for _ in columns) + "|", lines[header + 1]
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("| "):
            break
        rows.append(line)
    assert rows, f"{script} printed a table header without rows:\n{stdout}"
    for row in rows:
        assert len(row.split(" | ")) == len(columns), f"{script}: row {row!r} has not {len(columns)} cells"
    return rows


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_quick_and_prints_its_table(script: str) -> None:
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    result = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / script), "--quick", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUTS.get(script, 180),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, f"{script} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    rows = table_rows(script, lines, SCRIPTS[script])
    if script in SECOND_TABLES:
        table_rows(script, lines, SECOND_TABLES[script])
    first_cells = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert all(cell in first_cells for cell in ROWS.get(script, [])), f"{script}: rows {first_cells}"
    assert any(line.startswith("target: ") for line in lines), f"{script} printed no target line:\n{result.stdout}"
