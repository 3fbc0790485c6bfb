"""Prebuilt models on the command line: brickzoo zoo list|show|verify|publish, zoo:<name> as a config and as
--weights, fine-tuning records, ONNX metadata, and clear errors for unknown, tampered, foreign and unreachable
entries (a tiny entry published in the test, shipped through a stand-in package folder)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from PIL import Image

from brickzoo.cli import main
from brickzoo.data import SHAPE_NAMES, ShapesDataset
from brickzoo.tensor_conversions import unpack_batched_tensor_to_pillow_images
from brickzoo.zoo import _pretrained as registry

HEADS: dict[str, Any] = {
    "classify": {"factory": "image_classification"},
    "detect": {"factory": "object_detection", "max_detections": 5, "head_channels": 16},
}


def tiny_config(heads: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "tiny",
        "description": "a tiny classifier and detector for CLI tests",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False, "out_indices": [1, 2]},
            "neck": {"factory": "fpn", "out_channels": 16},
            "heads": heads,
        },
        "data": {
            "dataset": "shapes",
            "args": {"image_size": 32, "max_shapes": 2},
            "train": {"num_samples": 8, "seed": 0},
            "val": {"num_samples": 4, "seed": 1},
            "batch_size": 4,
        },
        "train": {"epochs": 1, "device": "cpu"},
        "export": {"check_batch_size": 2},
    }


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained tiny run, its entry published by the CLI, and a stand-in package folder shipping it."""
    folder = tmp_path_factory.mktemp("cli_zoo")
    config = write_yaml(folder / "tiny.yaml", tiny_config(HEADS))
    assert main(["train", str(config), "--out", str(folder / "runs"), "--quiet", "--no-export"]) == 0
    run = folder / "runs" / "tiny"
    argv = ["zoo", "publish", str(run), "--name", "tiny_shapes", "--out", str(folder / "package"), "--no-latency"]
    assert main(argv) == 0
    return {"folder": folder, "config": config, "run": run, "entry": folder / "package" / "tiny_shapes"}


@pytest.fixture
def shipped(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(registry, "shipped_dir", lambda: zoo["folder"] / "package")
    monkeypatch.setenv("BRICKZOO_HOME", str(tmp_path / "home"))
    return zoo["entry"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def onnx_metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_publish_writes_an_entry_whose_card_lists_every_file_and_refuses_to_overwrite(
    zoo: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    entry = zoo["entry"]
    card = json.loads((entry / "card.json").read_text())
    assert card["name"] == "tiny_shapes" and card["onnx_latency"] is None and card["storage_dtype"] == "float32"
    assert {f: r["sha256"] for f, r in card["files"].items()} == {f: sha256(entry / f) for f in card["files"]}
    final = json.loads((zoo["run"] / "final_metrics.json").read_text())
    assert card["metrics"]["values"]["classify/accuracy"] == final["val/classify/accuracy"]
    argv = ["zoo", "publish", str(zoo["run"]), "--name", "tiny_shapes", "--out", str(entry.parent), "--no-latency"]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_list_show_and_verify(shipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert (
        "| `tiny_shapes` | classify (classification, 4), detect (detection, 4) | timm:resnet10t (levels 1, 2) |" in out
    )
    assert main(["zoo", "list", "digits*"]) == 0
    assert "no prebuilt model matches 'digits*'; shipped: ['tiny_shapes']" in capsys.readouterr().out
    assert main(["zoo", "show", "tiny_shapes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# tiny_shapes\n") and f"| classify | classification | {', '.join(SHAPE_NAMES)} |" in out
    assert main(["zoo", "show", "zoo:tiny_shapes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((shipped / "card.json").read_text())
    assert main(["zoo", "verify", "tiny_shapes"]) == 0
    out = capsys.readouterr().out
    assert f"  ok  {sha256(shipped / 'weights' / 'backbone.safetensors')}  weights/backbone.safetensors" in out
    assert "tiny_shapes: 5 files match their sha256 in the card, and every brick loads its weights" in out


def test_unknown_names_give_close_matches_and_exit_2(shipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["zoo", "show", "tiny_shape"],
        ["evaluate", "zoo:tiny_shape"],
        ["train", "x", "--weights", "zoo:tiny_shape"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "unknown prebuilt model 'tiny_shape'; did you mean ['tiny_shapes']? known: ['tiny_shapes']" in err


def test_a_tampered_weight_file_is_a_checksum_error_and_nothing_is_cached(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("BRICKZOO_HOME", str(home))
    tampered = shutil.copytree(zoo["entry"], tmp_path / "tampered")
    file = tampered / "weights" / "classify" / "classify.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    assert main(["zoo", "verify", str(tampered)]) == 2
    err = capsys.readouterr().err
    expected = json.loads((tampered / "card.json").read_text())["files"]["weights/classify/classify.safetensors"]
    assert (
        f"weights/classify/classify.safetensors: expected sha256 {expected['sha256']} (card), got {sha256(file)}" in err
    )
    assert main(["evaluate", tampered.as_uri(), "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch for " in err and f"{tampered.as_uri()}/weights/classify/classify.safetensors" in err
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]


def test_an_unreachable_url_names_it_within_the_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/zoo/tiny/"
        argv = ["evaluate", "shapes_multitask", "--weights", url, "--timeout", "0.3"]
        assert main([*argv]) == 2
    err = capsys.readouterr().err
    assert f"cannot download {url}card.json: no answer within the timeout of 0.3 s" in err
    assert "download the entry elsewhere" in err and "--weights /path/to/entry" in err
    assert main(["evaluate", "zoo:tiny_shapes", "--timeout", "0"]) == 2
    assert "--timeout must be more than 0 seconds, got 0" in capsys.readouterr().err


def test_evaluate_a_prebuilt_model_matches_its_card(shipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "zoo:tiny_shapes"]) == 0
    out = capsys.readouterr().out
    assert f"loaded weights from zoo:tiny_shapes ({shipped / 'weights'}) (all 4 bricks with weights)" in out
    card = json.loads((shipped / "card.json").read_text())
    assert f"the card of tiny_shapes on {card['metrics']['dataset']} (float32 weights of the training run):" in out
    accuracy = card["metrics"]["values"]["classify/accuracy"]
    assert f"classify/accuracy{' ' * 23} card {accuracy:.4f}, measured {accuracy:.4f} (difference +0.0000)" in out
    assert main(["evaluate", "zoo:tiny_shapes", "--samples", "2"]) == 0
    assert "the card holds metrics of shapes val split" in capsys.readouterr().out


def test_weights_of_an_entry_in_another_config_are_the_strict_loading_error(
    shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "shapes_multitask", "--weights", "zoo:tiny_shapes"]) == 2
    err = capsys.readouterr().err
    assert "bricks with weights do not fit and would keep their random initialisation; nothing was loaded" in err
    assert (
        "the prebuilt model zoo:tiny_shapes was trained with its own config: pass zoo:tiny_shapes as the config" in err
    )


def test_predict_with_a_prebuilt_model(shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (image,) = unpack_batched_tensor_to_pillow_images(ShapesDataset(1, image_size=40, seed=3)[0]["images"][None])
    image.resize((60, 40)).save(tmp_path / "photo.png")
    assert main(["predict", "zoo:tiny_shapes", str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert (record["width"], record["height"]) == (60, 40) and set(record["heads"]) == {"classify", "detect"}
    assert record["heads"]["classify"]["class"] in SHAPE_NAMES and record["transform"]["input_size"] == [32, 32]
    scores = [d["score"] for d in record["heads"]["detect"]["detections"]]
    line = re.search(r"detect (\d+) boxes scoring 0\.3 or more \((\d+) in all", capsys.readouterr().out)
    assert line and (int(line[1]), int(line[2])) == (sum(s >= 0.3 for s in scores), len(scores))
    with Image.open(tmp_path / "out" / "photo_detect_visualization.png") as picture:
        assert picture.width * 40 == picture.height * 60  # the photo's own aspect ratio (small ones upscaled)


def test_a_fine_tune_records_the_card_and_exports_it_as_metadata(
    zoo: dict[str, Path], shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heads = {**HEADS, "segment": {"factory": "semantic_segmentation", "decoder_channels": 8}}  # a new head
    config = write_yaml(tmp_path / "tiny_plus.yaml", {**tiny_config(heads), "name": "tiny_plus"})
    argv = ["train", str(config), "--weights", "zoo:tiny_shapes", "--freeze", "backbone", "--out", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning from zoo:tiny_shapes" in out and "4 bricks loaded, 0 in part, 1 new: segment/decode" in out
    assert "frozen bricks: backbone" in out
    card = json.loads((shipped / "card.json").read_text())
    record = json.loads((tmp_path / "tiny_plus" / "pretrained.json").read_text())
    assert record["source"] == "zoo:tiny_shapes" and record["name"] == "tiny_shapes"
    assert record["class_names"] == {"classify": list(SHAPE_NAMES), "detect": list(SHAPE_NAMES)}
    assert record["metrics"] == {k: card["metrics"][k] for k in ("dataset", "values", "weights")}
    assert record["loaded_bricks"] == {
        "loaded": ["backbone", "fpn", "classify/classify", "detect/head"], "partial": [], "new": ["segment/decode"]
    }  # fmt: skip
    metadata = onnx_metadata(tmp_path / "tiny_plus" / "model.onnx")
    assert json.loads(metadata["pretrained"]) == record
    assert json.loads(metadata["class_names"])["segment"] == ["background", *SHAPE_NAMES]  # the new model's own
    onnx_file = tmp_path / "again.onnx"  # exporting the fine-tuned run folder carries the record along
    assert main(["export", str(config), "--weights", str(tmp_path / "tiny_plus"), "--onnx", str(onnx_file)]) == 0
    assert json.loads(onnx_metadata(onnx_file)["pretrained"]) == record


def test_export_a_prebuilt_model_with_its_card_as_metadata(
    shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "zoo:tiny_shapes", "--onnx", str(tmp_path / "tiny.onnx")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime vs torch on images" in out
    record = json.loads(onnx_metadata(tmp_path / "tiny.onnx")["pretrained"])
    card = json.loads((shipped / "card.json").read_text())
    assert record["name"] == "tiny_shapes" and record["metrics"]["values"] == card["metrics"]["values"]
    assert record["preprocessing"] == card["preprocessing"] and "loaded_bricks" not in record
