"""make demo (python -m brickzoo.demo) end to end on a shorter fine-tune: every step runs and says what it showed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

from brickzoo import demo


def test_the_demo_predicts_evaluates_fine_tunes_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        demo.main(["--out", str(tmp_path), "train.epochs=1", "data.train.num_samples=64", "data.val.num_samples=16"])
        == 0
    )
    out = capsys.readouterr().out
    folder = tmp_path / "demo"
    lines = (folder / "predictions" / "predictions.jsonl").read_text().splitlines()
    sizes = sorted((json.loads(line)["width"], json.loads(line)["height"]) for line in lines)
    assert sizes == [(64, 64), (96, 64), (100, 100), (120, 160)]  # predictions in each file's own pixels
    compared = re.findall(r"card (\d\.\d{4}), measured (\d\.\d{4}) \(difference ([+-]\d\.\d{4})\)", out)
    assert len(compared) >= 9 and all(abs(float(d)) <= 0.01 for _, _, d in compared)  # evaluate matches the card
    assert "the frozen heads on the same 16 validation images: prebuilt -> after the fine-tune" in out
    assert "CHANGED" not in out and out.count("  unchanged") >= 9 and "count/accuracy" in out
    run = folder / "shapes_count"
    metadata = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(metadata["pretrained"])["name"] == "shapes_multitask"
    assert "onnxruntime vs torch on images" in out and (run / "pretrained.json").is_file()
    assert f"Everything is in {folder}/" in out
