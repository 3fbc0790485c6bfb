"""The brickzoo CLI end to end on a tiny schedule, its help and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from brickzoo import cli, save_bricks
from brickzoo.cli import main
from brickzoo.training import lock_run_folder
from brickzoo.zoo import build_recipe

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
    config = json.loads((trained_run / "config.json").read_text())
    assert config["train"]["epochs"] == 1
    # resolved: the classes and the input size are written out, so predict can rebuild the model without data
    assert config["model"]["heads"]["detect"]["class_names"] == ["circle", "square", "triangle", "star"]
    assert config["model"]["heads"]["segment"]["num_classes"] == 5 and config["data"]["image_size"] == [64, 64]


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
    assert "onnxruntime vs torch on images [3, " in out and "largest |difference|" in out
    assert f"run folder: {tmp_path / 'digits_classification'}" in out


def test_evaluate_predict_and_export(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "shapes_multitask", "--weights", str(trained_run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "val metrics (" in out and "classify/accuracy" in out and "detect/map_50" in out
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
        [f"photo{i}_{head}_visualization.png" for i in range(2) for head in ("classify", "segment", "detect")]
        + [f"photo{i}_segment_mask.png" for i in range(2)]
        + ["predictions.jsonl"]
    )

    onnx_path = tmp_path / "exported.onnx"
    assert main(["export", "shapes_multitask", "--weights", str(trained_run), "--onnx", str(onnx_path), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "largest |difference|" in printed and "metadata:\n  brickzoo_version: " in printed
    assert "  config: shapes_multitask\n" in printed and '    detect: ["circle", "square"' in printed
    graph = onnx.load(str(onnx_path)).graph
    assert [o.name for o in graph.output][-4:] == [
        "detect/boxes",
        "detect/scores",
        "detect/labels",
        "detect/num_detections",
    ]


def test_resume_and_refusing_to_overwrite(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(trained_run.parent)
    assert main(["train", "shapes_multitask", "--out", out, "--quiet", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"run folder {trained_run} already holds a checkpoint ({trained_run / 'checkpoint'}); pass --resume" in err
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
        # a path whose folder does not exist is not replaced by the shipped config of the same name
        (["graph", "my_configs/shapes_multitask.yaml"], "'my_configs/shapes_multitask.yaml' not found (expected an"),
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
    assert f"could not decode image file {str(broken)!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [[], ["train"], ["evaluate"], ["predict"], ["export"], ["graph"], ["list"], ["preview"], ["zoo"]]
)
def test_every_help_shows_usage_and_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "usage: brickzoo" in out
    assert f"examples:\n  brickzoo {command[0] if command else ''}" in out, out


def test_console_script_usage_errors_and_a_closed_pipe() -> None:
    script = Path(sys.executable).with_name("brickzoo")
    # brickzoo list | head -0: the reader is gone before the first line (closed before the process can import
    # anything); no error message, no traceback, the shell's SIGPIPE status
    listing = subprocess.Popen([str(script), "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert listing.stdout is not None
    listing.stdout.close()
    assert listing.wait(timeout=120) == 141 and listing.stderr is not None and listing.stderr.read() == b""
    result = subprocess.run([str(script), "evaluate", "shapes_multitask"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--weights is required" in result.stderr
    assert "unless the config is a prebuilt model" in result.stderr
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


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The captured stderr, checked to be one ``brickzoo: error:`` line without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith("brickzoo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- --weights must load every brick (evaluate, predict, export) -----------------------------------
@pytest.fixture(scope="module")
def detection_weights(trained_run: Path) -> Path:
    """Another task's weights next to the trained run: backbone, fpn and detection head only."""
    folder = trained_run.parent / "detection_weights"
    save_bricks(build_recipe("shapes_detection", TINY).model, folder)
    return folder


def weights_command(command: str, weights: Path, tmp_path: Path) -> list[str]:
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    if command == "evaluate":
        return ["evaluate", "shapes_multitask", "--weights", str(weights), *TINY]
    if command == "predict":
        return ["predict", "shapes_multitask", str(image), "--weights", str(weights), "--out", str(tmp_path / "p")]
    return ["export", "shapes_multitask", "--weights", str(weights), "--onnx", str(tmp_path / "m.onnx"), *TINY]


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_an_empty_weights_folder_is_an_error_not_a_random_model(
    command: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(weights_command(command, empty, tmp_path)) == 2
    captured = capsys.readouterr()
    assert "loaded weights" not in captured.out and not (tmp_path / "p").exists() and not (tmp_path / "m.onnx").exists()
    assert captured.err.startswith(f"brickzoo: error: weights {empty}: ") and "Traceback" not in captured.err
    assert "bricks with weights do not fit and would keep their random initialisation" in captured.err
    assert "brick 'backbone': no weight file backbone.pt" in captured.err
    assert "brick 'detect/head': no weight file" in captured.err


def test_the_parent_folder_names_the_run_that_fits(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "shapes_multitask", "--weights", str(trained_run.parent), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"weights that fit every brick: {trained_run}" in err
    assert str(trained_run.parent / "detection_weights") not in err.splitlines()[-1]


def test_another_tasks_weights_are_refused_unless_allow_partial(
    trained_run: Path, detection_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["evaluate", "shapes_multitask", "--weights", str(detection_weights), *TINY]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "brick 'classify/classify': no weight file" in err and "brick 'segment/decode': no weight file" in err
    assert "brick 'backbone'" not in err  # the bricks that fit are not listed
    assert f"weights that fit every brick: {trained_run}" in err  # a sibling folder
    assert err.rstrip().endswith("pass --allow-partial to load only the bricks that fit")
    assert main([*command, "--allow-partial"]) == 0
    out = capsys.readouterr().out
    assert f"loaded weights from {detection_weights} in part (--allow-partial)" in out
    assert "loaded  backbone" in out and "new     classify/classify" in out and "new     segment/decode" in out


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_weights_that_are_no_folder(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "weights.pt"
    if kind == "file":
        weights.write_bytes(b"")
    assert main(["evaluate", "shapes_multitask", "--weights", str(weights), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"weights {weights}: expected a run folder" in err
    assert ("got a file" if kind == "file" else "got no such folder") in err


# -- a failed run can be re-run; one process per run folder ----------------------------------------
DIGITS = ["train.epochs=1", "train.steps_per_epoch=2", "data.batch_size=8"]


def test_a_run_that_failed_before_its_first_checkpoint_can_be_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "digits"
    (run / ".checkpoint-k2j3").mkdir(parents=True)  # the failed run's first checkpoint, half-written
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train/loss": 9.0}\n')
    command = ["train", "digits_classification", "--out", str(tmp_path), "--name", "digits", "--quiet", "--no-export"]
    assert main([*command, "--resume", *DIGITS]) == 2
    err = one_line_error(capsys)
    assert f"run folder {run} holds no checkpoint to continue" in err and "without --resume" in err
    assert main([*command, *DIGITS]) == 0
    out = capsys.readouterr().out
    assert f"run folder {run} holds no checkpoint (an earlier run stopped before its first one): reusing it" in out
    assert (run / "checkpoint" / "trainer_state.pt").is_file() and not (run / ".brickzoo.lock").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and records[0]["train/loss"] != 9.0
    assert json.loads((run / "config.json").read_text())["name"] == "digits_classification"


HOLD_LOCK = """
import sys, time
from brickzoo.training import lock_run_folder
with lock_run_folder(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_run_folder_in_use_by_another_process_is_refused(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(trained_run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        more = [o if o != "train.epochs=1" else "train.epochs=5" for o in TINY]
        command = ["train", "shapes_multitask", "--out", str(trained_run.parent), "--quiet", "--resume", *more]
        assert main(command) == 2
        err = one_line_error(capsys)
        assert f"run folder {trained_run} is in use by another brickzoo process (pid {holder.pid})" in err
    finally:
        holder.kill()
        holder.wait(timeout=60)


# -- Lightning's further processes re-run the command line ------------------------------------------
@pytest.mark.parametrize(
    ("environment", "first"),
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"NODE_RANK": "1"}, False),
        ({"RANK": "3"}, False),
        ({"SLURM_PROCID": "2"}, False),
        ({"LOCAL_RANK": ""}, True),
    ],
)
def test_global_rank_zero_from_the_environment(
    environment: dict[str, str], first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in cli.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cli._is_global_zero() is first


def test_a_further_lightning_process_leaves_the_run_folder_to_rank_zero(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 0 has made and locked the run folder; a process Lightning starts must train, not refuse it."""
    for name in cli.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls: list[Path] = []
    monkeypatch.setattr(cli, "_fit", lambda recipe, args, run_dir: calls.append(run_dir) or {})
    config = (trained_run / "config.json").read_text()
    command = ["train", "shapes_multitask", "--out", str(trained_run.parent), "--engine", "lightning", *TINY]
    with lock_run_folder(trained_run):  # held by "rank 0"
        assert main([*command, "--quiet"]) == 0
    assert calls == [trained_run] and (trained_run / "config.json").read_text() == config
    assert capsys.readouterr().out == ""  # rank 0 reports
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["train", "shapes_multitask", "--out", str(trained_run.parent), *TINY]) == 2
    assert "the native engine trains in one process" in one_line_error(capsys)


# -- outputs that cannot be written: one line, exit 2 ------------------------------------------------
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("train --out file", "is a file; expected a folder"),
        ("train --out /sys", "cannot write in /sys ("),
        ("predict --out file", "--out {file} is a file; expected a folder"),
        ("predict --out /sys", "--out /sys/brickzoo_predictions: cannot write in /sys ("),
        ("export --onnx folder", "--onnx {tmp} is a folder; expected the path of the ONNX file to write"),
        ("export --onnx /sys", "--onnx /sys/brickzoo/model.onnx: folder /sys/brickzoo: cannot write in /sys ("),
        ("predict nothing", "image {tmp}/nothing.png does not exist"),
        ("predict empty folder", "folder {tmp} holds no image file"),
        ("predict pattern", "pattern '{tmp}/*.jpg' matches no file"),
    ],
)
def test_outputs_and_inputs_that_cannot_be_used(
    case: str, message: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "a_file"
    file.write_text("x")
    image = tmp_path / "photo.png"
    argv = {
        "train --out file": ["train", "digits_classification", "--out", str(file), *DIGITS],
        "train --out /sys": ["train", "digits_classification", "--out", "/sys/brickzoo_runs", *DIGITS],
        "predict --out file": ["predict", "shapes_multitask", str(image), "--out", str(file)],
        "predict --out /sys": ["predict", "shapes_multitask", str(image), "--out", "/sys/brickzoo_predictions"],
        "export --onnx folder": ["export", "shapes_multitask", "--onnx", str(tmp_path), *TINY],
        "export --onnx /sys": ["export", "shapes_multitask", "--onnx", "/sys/brickzoo/model.onnx", *TINY],
        "predict nothing": ["predict", "shapes_multitask", str(tmp_path / "nothing.png"), "--out", str(tmp_path)],
        "predict empty folder": ["predict", "shapes_multitask", str(tmp_path), "--out", str(tmp_path / "o")],
        "predict pattern": ["predict", "shapes_multitask", str(tmp_path / "*.jpg"), "--out", str(tmp_path / "o")],
    }[case]
    if case.startswith(("predict --out", "export")):
        Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    if argv[0] != "train":
        argv += ["--weights", str(trained_run)]
    assert main(argv) == 2
    assert message.format(file=file, tmp=tmp_path) in one_line_error(capsys)


def test_a_run_folder_that_cannot_be_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["train", "digits_classification", "--out", str(tmp_path / "runs"), *DIGITS]) == 2
    err = one_line_error(capsys)
    assert f"run folder {tmp_path / 'runs' / 'digits_classification'}: cannot create the folder" in err
    assert "(Permission denied)" in err


# -- predict takes files, folders and patterns ------------------------------------------------------
def test_predict_takes_folders_and_patterns_with_unique_names(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    for path, colour in [("a.png", (200, 0, 0)), ("a.jpg", (0, 200, 0)), ("sub/b.PNG", (0, 0, 200))]:
        Image.new("RGB", (50, 30), colour).save(photos / path)
    Image.new("RGB", (50, 30)).save(photos / ".hidden" / "c.png")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    command = ["predict", "shapes_multitask", str(photos), str(photos / "a.png"), "--weights", str(trained_run)]
    assert main([*command, "--out", str(out), "--set", *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"skipped 1 files that are not images: {photos / 'notes.txt'}" in printed
    heads = ("classify", "segment", "detect")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{name}_{head}_visualization.png" for name in ("a_png", "a_jpg", "b") for head in heads]
        + [f"{name}_segment_mask.png" for name in ("a_png", "a_jpg", "b")]
        + ["predictions.jsonl"]
    )
    with (
        Image.open(out / "a_jpg_classify_visualization.png") as green,
        Image.open(out / "a_png_classify_visualization.png") as red,
    ):
        assert green.getpixel((1, green.height // 2))[1] > 150 and red.getpixel((1, red.height // 2))[0] > 150
    pattern = ["predict", "shapes_multitask", str(photos / "**" / "*.[pP][nN][gG]"), "--weights", str(trained_run)]
    assert main([*pattern, "--out", str(tmp_path / "pattern"), "--set", *TINY]) == 0
    assert sorted(p.name for p in (tmp_path / "pattern").iterdir()) == sorted(
        [f"{name}_{head}_visualization.png" for name in ("a", "b") for head in heads]
        + ["a_segment_mask.png", "b_segment_mask.png", "predictions.jsonl"]
    )


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["x", "y", "x/z"]),
            st.sampled_from(["a", "a_png", "a_2", "b"]),
            st.sampled_from([".png", ".jpg", ".PNG"]),
        ),
        max_size=12,
        unique=True,
    )
)
def test_output_names_are_unique(files: list[tuple[str, str, str]]) -> None:
    images = [Path(folder) / f"{stem}{suffix}" for folder, stem, suffix in files]
    names = cli._output_names(images)
    assert len(set(names)) == len(images)
    assert all(name.startswith(image.stem) for image, name in zip(images, names, strict=True))
    assert cli._output_names([Path("a.png"), Path("b.png")]) == ["a", "b"]
    assert cli._output_names([Path("a.png"), Path("a.jpg"), Path("x/a.png")]) == ["a_png", "a_jpg", "a_png_2"]
