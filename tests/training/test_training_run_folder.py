"""The run folder: every file exists, parses and matches what fit() returned; the pictures look right."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from training_toys import loader, toy_collection

from brickzoo import BrickCollection, create_mermaid_dag_graph
from brickzoo.errors import OutputError
from brickzoo.training import (
    Panel,
    TrainConfig,
    check_output_folder,
    fit,
    lock_run_folder,
    make_output_folder,
    plot_loss_curves,
    plot_panels,
    predictions_grid,
    run_checkpoint,
)

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


# -- output folders, run checkpoints and the lock --------------------------------------------------
def test_output_folders_that_cannot_be_written_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(OutputError, match=r"--out .*a_file is a file; expected a folder"):
        check_output_folder(file, "--out")
    with pytest.raises(OutputError, match=r"cannot be created: .*a_file is a file"):
        make_output_folder(file / "run", "run folder")
    # root may write almost anywhere; /sys refuses new files even to root
    with pytest.raises(OutputError, match=r"--out /sys/brickzoo_test/run: cannot write in /sys \(") as info:
        make_output_folder("/sys/brickzoo_test/run", "--out")
    assert isinstance(info.value, OSError) and not Path("/sys/brickzoo_test").exists()
    assert check_output_folder(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(OutputError, match=r"run folder .*new: cannot create the folder \(Permission denied\)"):
        make_output_folder(tmp_path / "new", "run folder")


def test_run_checkpoint_tells_a_run_to_continue_from_a_failed_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".checkpoint-abc").mkdir(parents=True)  # a first checkpoint interrupted while being written
    (run / "metrics.jsonl").write_text("")
    assert run_checkpoint(run) is None
    assert run_checkpoint(tmp_path / "nowhere") is None
    (run / "checkpoint").mkdir()
    assert run_checkpoint(run) is None  # not complete without trainer_state.pt
    (run / "checkpoint" / "trainer_state.pt").write_bytes(b"")
    assert run_checkpoint(run) == run / "checkpoint"
    lightning = tmp_path / "lightning_run"
    (lightning / "lightning" / "checkpoints").mkdir(parents=True)
    assert run_checkpoint(lightning) is None
    (lightning / "lightning" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run_checkpoint(lightning) == lightning / "lightning" / "checkpoints" / "last.ckpt"
    (lightning / "weights").mkdir()
    (lightning / "weights" / "backbone.pt").write_bytes(b"")
    assert run_checkpoint(lightning) == lightning / "weights"


def test_a_locked_run_folder_is_refused_and_released(tmp_path: Path) -> None:
    refused = f"run folder {tmp_path} is in use by another brickzoo process \\(pid {os.getpid()}\\)"
    with lock_run_folder(tmp_path) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputError, match=refused) as info, lock_run_folder(tmp_path):
            pass  # a second open file description of the lock file: flock refuses it
        assert isinstance(info.value, OSError)
    assert not lock.exists()
    with lock_run_folder(tmp_path):  # free again
        pass


HOLD_LOCK = """
import sys, time
from brickzoo.training import lock_run_folder
with lock_run_folder(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_the_lock_of_another_process_and_of_a_killed_one(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = rf"in use by another brickzoo process \(pid {holder.pid}\)"
        with pytest.raises(OutputError, match=refused), lock_run_folder(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
        holder.wait(timeout=60)
    assert (tmp_path / ".brickzoo.lock").read_text() == f"{holder.pid}\n"  # the file stays...
    with lock_run_folder(tmp_path) as lock:  # ...but the kernel released the lock with the process
        assert lock.read_text() == f"{os.getpid()}\n"
