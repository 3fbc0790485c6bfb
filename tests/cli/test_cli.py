"""The brickzoo CLI end to end on a tiny schedule, its help and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from PIL import Image

from brickzoo.cli import main

TINY = [
    "train.epochs=1",
    "data.train.num_samples=8",
    "data.val.num_samples=4",
    "data.batch_size=4",
    "data.args.image_size=32",
    "export.check_batch_size=3",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "shapes_multitask", "--out", str(out), "--quiet", *TINY]) == 0
    return out / "shapes_multitask"


def test_train_writes_the_whole_run_folder(trained_run: Path) -> None:
    for name in (
        "config.json",
        "metrics.jsonl",
        "final_metrics.json",
        "predictions.png",
        "loss_curves.png",
        "graph.md",
    ):
        assert (trained_run / name).is_file(), name
    assert (trained_run / "checkpoint" / "backbone.pt").is_file()
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and "val/classify/accuracy" in records[0]
    graph = onnx.load(str(trained_run / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["images"]
    assert {"classify/probabilities", "segment/predictions", "detect/boxes"} <= {o.name for o in graph.output}
    with Image.open(trained_run / "predictions.png") as picture:
        assert picture.width > 64 and picture.height > 64
    assert json.loads((trained_run / "config.json").read_text())["train"]["epochs"] == 1


def test_train_prints_parity_and_where_things_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "train",
                "digits_classification",
                "--out",
                str(tmp_path),
                "--quiet",
                "train.epochs=1",
                "train.steps_per_epoch=2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "onnxruntime vs torch at batch 3" in out
    assert f"run folder: {tmp_path / 'digits_classification'}" in out


def test_evaluate_predict_and_export(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "shapes_multitask", "--weights", str(trained_run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "val metrics:" in out and "classify/accuracy" in out and "detect/map_50" in out
    metrics = json.loads(out.strip().splitlines()[-1])
    assert 0 <= metrics["segment/miou"] <= 1

    images = []
    for index, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        path = tmp_path / f"photo{index}.jpg"
        Image.new("RGB", (50, 40), colour).save(path)
        images.append(str(path))
    target = tmp_path / "predictions"
    assert (
        main(
            [
                "predict",
                "shapes_multitask",
                *images,
                "--weights",
                str(trained_run),
                "--out",
                str(target),
                "--set",
                *TINY,
            ]
        )
        == 0
    )
    written = sorted(p.name for p in target.iterdir())
    assert written == sorted(
        f"photo{i}_{head}_visualization.png" for i in range(2) for head in ("classify", "segment", "detect")
    )

    onnx_path = tmp_path / "exported.onnx"
    assert main(["export", "shapes_multitask", "--weights", str(trained_run), "--onnx", str(onnx_path), *TINY]) == 0
    assert "largest |difference|" in capsys.readouterr().out
    assert onnx_path.is_file()


def test_resume_and_refusing_to_overwrite(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(trained_run.parent)
    assert main(["train", "shapes_multitask", "--out", out, "--quiet", *TINY]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    more = [o if o != "train.epochs=1" else "train.epochs=2" for o in TINY]
    assert main(["train", "shapes_multitask", "--out", out, "--quiet", "--resume", "--no-export", *more]) == 0
    records = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in records] == [1, 2]


def test_fine_tune_from_another_recipe(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Start detection-only training from the multi-task run with a frozen backbone."""
    command = ["train", "shapes_detection", "--out", str(tmp_path), "--quiet", "--no-export"]
    command += ["--weights", str(trained_run), "--freeze", "backbone", *TINY]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "loaded  backbone" in out and "loaded  fpn" in out and "loaded  detect/head" in out
    assert "frozen bricks: backbone" in out


def test_graph_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "shapes_detection", "--groups", "MODEL"]) == 0
    graph = capsys.readouterr().out
    assert graph.startswith("flowchart LR") and "detect/postprocess" in graph and "BrickLoss" not in graph
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for expected in ("shapes_multitask", "digits_classification", "object_detection", "fpn", "timm:", "shapes"):
        assert expected in listing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "no_such_config"], "config file 'no_such_config' not found"),
        (["graph", "shapes_detection", "train.epoch=3"], "train.epoch: unknown key; did you mean ['epochs']?"),
        (["graph", "shapes_detection", "trainepochs"], "override 'trainepochs': expected key.sub=value"),
        (["evaluate", "shapes_detection", "--weights", "/nonexistent/run"], "weights /nonexistent/run"),
        (["graph", "shapes_detection", "model.backbone.name=timm:resnet1O"], "model.backbone.name"),
    ],
)
def test_bad_input_is_one_clear_error_without_traceback(argv, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("brickzoo: error: ") and message in err
    assert "Traceback" not in err


def test_predict_refuses_unreadable_images(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    argv = [
        "predict",
        "shapes_multitask",
        str(broken),
        "--weights",
        str(trained_run),
        "--out",
        str(tmp_path),
        "--set",
        *TINY,
    ]
    assert main(argv) == 2
    assert f"image {broken} cannot be read as an image" in capsys.readouterr().err


def test_console_script_help_and_usage_errors() -> None:
    script = Path(sys.executable).with_name("brickzoo")
    for command in ([], ["train"], ["evaluate"], ["predict"], ["export"], ["graph"], ["list"]):
        result = subprocess.run([str(script), *command, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage: brickzoo" in result.stdout
    result = subprocess.run([str(script), "evaluate", "shapes_multitask"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "the following arguments are required: --weights" in result.stderr
    result = subprocess.run([str(script), "fly"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'fly'" in result.stderr


def test_lightning_engine_trains_the_same_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = ["train", "shapes_multitask", "--engine", "lightning", "--devices", "1", "--out", str(tmp_path)]
    assert main([*command, "--quiet", "--no-export", *TINY]) == 0
    run = tmp_path / "shapes_multitask"
    assert (run / "weights" / "backbone.pt").is_file() and (run / "graph.md").is_file()
    assert (run / "lightning" / "metrics.csv").is_file()
    assert "val/classify/accuracy" in capsys.readouterr().out
    assert main(["evaluate", "shapes_multitask", "--weights", str(run), *TINY]) == 0
    assert "loaded weights from" in capsys.readouterr().out
