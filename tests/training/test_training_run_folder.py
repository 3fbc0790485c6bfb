"""The run folder: every file exists, parses and matches what fit() returned; the pictures look right."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from training_toys import loader, toy_collection

from brickzoo import BrickCollection, create_mermaid_dag_graph
from brickzoo.training import Panel, TrainConfig, fit, plot_loss_curves, plot_panels, predictions_grid

SAVE_PNGS = os.environ.get("BRICKZOO_SAVE_PNGS")  # a folder to copy the pictures to, for a person to look at


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, BrickCollection]:
    folder = tmp_path_factory.mktemp("run") / "toy"
    collection = toy_collection()
    config = TrainConfig(epochs=5, lr=3e-2, warmup_steps=2, device="cpu")
    train, val = loader(64, shift=0.1), loader(24, seed=1, batch_size=12, shuffle=False, shift=0.1)  # not too easy
    result = fit(collection, train, val, config, folder, quiet=True)
    if SAVE_PNGS:
        for name in ("loss_curves.png", "predictions.png"):
            shutil.copy(folder / name, Path(SAVE_PNGS) / f"training_{name}")
    return folder, result, collection


def test_every_file_is_written(run: tuple[Path, object, BrickCollection]) -> None:
    folder, _, _ = run
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "checkpoint",
        "final_metrics.json",
        "graph.md",
        "loss_curves.png",
        "metrics.jsonl",
        "predictions.png",
        "train_config.json",
    ]
    assert sorted(p.name for p in (folder / "checkpoint").rglob("*.pt")) == [
        "backbone.pt",
        "classify.pt",
        "trainer_state.pt",
    ]


def test_metrics_files_parse_and_agree_with_the_result(run: tuple[Path, object, BrickCollection]) -> None:
    folder, result, _ = run
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history  # type: ignore[attr-defined]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["step"] for line in lines] == [4, 8, 12, 16, 20]
    for line in lines:
        assert {"lr", "seconds", "train/loss", "train/head0/loss", "val/loss", "val/head0/accuracy"} <= set(line)
        assert "val/head0/confusion" not in line  # non-scalars stay out of the log...
    final = json.loads((folder / "final_metrics.json").read_text())
    confusion = final["val/head0/confusion"]  # ...but are kept in the final JSON
    assert len(confusion) == 3 and all(len(row) == 3 for row in confusion) and sum(map(sum, confusion)) == 24
    assert final["val/head0/accuracy"] == lines[-1]["val/head0/accuracy"]
    assert json.loads((folder / "train_config.json").read_text())["epochs"] == 5


def test_graph_md_holds_the_mermaid_graph(run: tuple[Path, object, BrickCollection]) -> None:
    folder, _, collection = run
    text = (folder / "graph.md").read_text()
    block = text.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert block == create_mermaid_dag_graph(collection)
    assert block.startswith("flowchart LR") and "head0/visualize" in block


def test_pngs_open_at_a_sensible_size(run: tuple[Path, object, BrickCollection]) -> None:
    folder, _, _ = run
    with Image.open(folder / "loss_curves.png") as curves:
        assert curves.format == "PNG" and curves.size == (1120, 360)
        colours = curves.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 20  # lines, text and legend, not a blank canvas
    with Image.open(folder / "predictions.png") as grid:
        # one row (head0/visualization) of 8 images of 32 px shown at 128 px, plus captions and gaps
        assert grid.format == "PNG" and grid.size == (8 + 8 * (128 + 8), 22 + 24 + 128 + 8 + 8)


def test_predictions_grid_has_one_row_per_output_and_scales_images() -> None:
    red, blue = Image.new("RGB", (40, 20), (255, 0, 0)), Image.new("RGB", (600, 300), (0, 0, 255))
    grid = predictions_grid({"a/visualization": [red, red, red], "b/visualization": [blue]}, max_images=2)
    # every cell gets the same longer side: the largest (600 px) kept within [128, 256], so 256;
    # red (40 x 20) is enlarged to 256 x 128 and blue (600 x 300) shrunk to 256 x 128
    assert grid.size == (8 + 2 * (256 + 8), 22 + 2 * (24 + 128 + 8) + 8)
    top = 22 + 24  # below the column header and the first caption
    for x, y in [(8 + 1, top + 1), (8 + 254, top + 126), (8 + 264 + 1, top + 1), (8 + 264 + 254, top + 126)]:
        assert grid.getpixel((x, y)) == (255, 0, 0)  # red fills both cells of its row
    assert grid.getpixel((8 + 256 + 4, top + 64)) == (245, 245, 245)  # the gap between columns
    second = top + 128 + 8 + 24
    assert grid.getpixel((8 + 1, second + 1)) == (0, 0, 255)
    assert grid.getpixel((8 + 254, second + 126)) == (0, 0, 255)
    assert grid.getpixel((8 + 264 + 128, second + 64)) == (245, 245, 245)  # no second blue image


def test_curves_cope_with_one_epoch_and_without_validation() -> None:
    history = [{"epoch": 1, "step": 3, "train/loss": 1.2, "train/head0/accuracy": 0.4}]
    image = plot_loss_curves(history, ["head0/loss"])
    assert image.size == (1120, 360)
    empty = plot_panels([Panel("nothing")])
    assert empty.size == (560, 360)
