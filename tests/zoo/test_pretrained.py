"""Prebuilt models: publish a real training run, load it back from a folder, a file:// URL and a local
HTTP server, and refuse tampered, truncated, unreachable, mismatched or foreign entries clearly."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import yaml

from brickzoo import load_bricks
from brickzoo.data import SHAPE_NAMES
from brickzoo.errors import ConfigError, OutputError, WeightsError, WeightsNotFoundError, ZooError
from brickzoo.training import fit, write_config
from brickzoo.zoo import (
    PretrainedEntry,
    build_recipe,
    list_pretrained,
    load_pretrained,
    pretrained_cards,
    publish_pretrained,
    verify_pretrained,
)
from brickzoo.zoo import _pretrained as registry

ENTRY_FILES = {
    "README.md",
    "card.json",
    "checksums.sha256",
    "config.yaml",
    "weights/backbone.safetensors",
    "weights/classify/classify.safetensors",
    "weights/segment/decode.safetensors",
}


def tiny_config(heads: dict[str, Any], **shapes: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "description": "a tiny two-level resnet10t for tests",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False, "out_indices": [1, 2]},
            "heads": heads,
        },
        "data": {
            "dataset": "shapes",
            "args": {"image_size": 32, "max_shapes": 2, **shapes},
            "train": {"num_samples": 8, "seed": 0},
            "val": {"num_samples": 4, "seed": 1},
            "batch_size": 4,
        },
        "train": {"epochs": 1, "device": "cpu"},
    }


def train_run(folder: Path, config: dict[str, Any]) -> Path:
    """A run folder as `brickzoo train` writes it: config.json, then fit() for one epoch."""
    recipe = build_recipe(config)
    write_config(folder, recipe.config)
    fit(recipe.model, recipe.loader("train"), recipe.loader("val"), recipe.train_config, run_dir=folder, quiet=True)
    return folder


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    heads = {"classify": {"factory": "image_classification"}, "segment": {"factory": "semantic_segmentation"}}
    return train_run(tmp_path_factory.mktemp("runs") / "tiny", tiny_config(heads))


@pytest.fixture(scope="module")
def entry_a(run_a: Path, tmp_path_factory: pytest.TempPathFactory) -> PretrainedEntry:
    return publish_pretrained(run_a, "tiny_shapes", tmp_path_factory.mktemp("zoo"), measure_latency=False)


@pytest.fixture(scope="module")
def entry_b(tmp_path_factory: pytest.TempPathFactory) -> PretrainedEntry:
    """Another entry: a classifier of three shape kinds only."""
    config = tiny_config({"classify": {"factory": "image_classification"}}, shape_names=["circle", "star", "cross"])
    run = train_run(tmp_path_factory.mktemp("runs_b") / "tiny", config)
    return publish_pretrained(run, "tiny_kinds", tmp_path_factory.mktemp("zoo_b"), measure_latency=False)


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder and logs request paths; under ``/drop/`` weight files stop half-way and the server hangs up."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        if self.path.startswith("/drop/"):
            self.path = self.path[len("/drop") :]
            file = Path(self.directory) / self.path.lstrip("/")
            if file.suffix == ".safetensors":
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[str]]]:
    """``(base URL, served folder, request log)`` of an HTTP server on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("served")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder, httpd.requests  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BRICKZOO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# -- helpers, independent of the code under test ----------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_below(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def copy_entry(entry: PretrainedEntry, destination: Path) -> Path:
    shutil.copytree(entry.folder, destination)
    return destination


def flip_byte(file: Path, offset: int | None = None) -> None:
    data = bytearray(file.read_bytes())
    index = len(data) // 2 if offset is None else offset
    data[index] ^= 0xFF
    file.write_bytes(bytes(data))


def edit_card(folder: Path, edit: Any) -> None:
    card = json.loads((folder / "card.json").read_text())
    edit(card)
    (folder / "card.json").write_text(json.dumps(card, indent=2))


def rehash(folder: Path) -> None:
    """Make card.json and checksums.sha256 describe the files as they are now (a consistent, re-signed entry)."""
    card = json.loads((folder / "card.json").read_text())
    weights = (p for p in (folder / "weights").rglob("*") if p.is_file())
    files = ["config.yaml", *sorted(p.relative_to(folder).as_posix() for p in weights)]
    card["files"] = {f: {"sha256": sha256(folder / f), "bytes": (folder / f).stat().st_size} for f in files}
    weight_bytes = sum(v["bytes"] for k, v in card["files"].items() if k.startswith("weights/"))
    card["file_size_mb"] = round(weight_bytes / 1e6, 3)
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    (folder / "checksums.sha256").write_text("".join(f"{v['sha256']}  {k}\n" for k, v in card["files"].items()))


def checkpoint_states(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Brick path -> state dict, read from the run's checkpoint files with torch.load."""
    folder = run / "checkpoint"
    return {
        p.relative_to(folder).with_suffix("").as_posix(): torch.load(p, weights_only=True)
        for p in sorted(folder.rglob("*.pt"))
        if p.name != "trainer_state.pt"
    }


def assert_same_weights(model: Any, expected: dict[str, dict[str, torch.Tensor]], cast: Any = None) -> None:
    bricks = dict(model.named_bricks())
    assert sorted(expected) == sorted(p for p, b in bricks.items() if b.state_dict())
    for path, state in expected.items():
        got = bricks[path].state_dict()
        assert sorted(got) == sorted(state), path
        for name, tensor in state.items():
            want = cast(tensor) if cast is not None else tensor
            assert got[name].dtype == tensor.dtype, f"{path}.{name}"
            assert torch.equal(got[name], want), f"{path}.{name} differs"


def cached_files(home: Path) -> set[str]:
    return files_below(home) if home.exists() else set()


# -- publish -------------------------------------------------------------------------------------------
def test_publish_writes_a_plain_folder_whose_card_describes_every_file(entry_a: PretrainedEntry, run_a: Path) -> None:
    folder, card = entry_a.folder, entry_a.card
    assert folder.name == "tiny_shapes" and files_below(folder) == ENTRY_FILES
    raw = json.loads((folder / "card.json").read_text())
    assert raw["format"] == "brickzoo-model-card" and raw["name"] == "tiny_shapes"
    listed = ENTRY_FILES - {"README.md", "card.json", "checksums.sha256"}
    assert {f: r["sha256"] for f, r in raw["files"].items()} == {f: sha256(folder / f) for f in listed}
    assert {f: r["bytes"] for f, r in raw["files"].items()} == {f: (folder / f).stat().st_size for f in listed}
    weights_mb = sum((folder / f).stat().st_size for f in listed if f.startswith("weights/")) / 1e6
    assert raw["file_size_mb"] == round(weights_mb, 3)
    checksums = (folder / "checksums.sha256").read_text().splitlines()
    assert sorted(checksums) == sorted(f"{sha256(folder / f)}  {f}" for f in listed)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config == raw["config"] and config["model"]["backbone"]["pretrained"] is False
    heads = config["model"]["heads"]
    assert heads["classify"]["class_names"] == list(SHAPE_NAMES) and heads["classify"]["num_classes"] == 4
    assert heads["segment"]["class_names"] == ["background", *SHAPE_NAMES] and heads["segment"]["num_classes"] == 5
    assert card.class_names == {"classify": list(SHAPE_NAMES), "segment": ["background", *SHAPE_NAMES]}
    final = json.loads((run_a / "final_metrics.json").read_text())
    assert card.metrics.values == {
        k[len("val/") :]: v for k, v in final.items() if k.startswith("val/") and k.count("/") == 2
        and not k.rsplit("/", 1)[1].startswith("loss") and not isinstance(v, list)
    }  # fmt: skip
    assert card.metrics.dataset == "shapes val split (image_size=32, max_shapes=2, num_samples=4, seed=1)"
    timm_config = timm.data.resolve_data_config({}, model=timm.create_model("resnet10t", pretrained=False))
    pre = card.preprocessing
    assert config["data"]["transforms"]["eval"] == [{"letterbox": {"size": [32, 32]}}]  # the resolved eval pipeline
    assert pre.input_size == [32, 32] and pre.resize == "letterbox" and pre.input_name == "images"
    assert pre.mean == pytest.approx(list(timm_config["mean"])) and pre.std == pytest.approx(list(timm_config["std"]))
    assert card.storage_dtype == "float32" and card.license == "MIT" and card.onnx_latency is None
    assert (
        card.versions["torch"] == torch.__version__
        and card.date == datetime.datetime.now(datetime.UTC).date().isoformat()
    )
    assert card.command.startswith("brickzoo train tiny_shapes/config.yaml")
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: brickzoo\nlicense: mit\n")


def test_the_card_counts_parameters_and_flops_of_the_loaded_model(entry_a: PretrainedEntry) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = load_pretrained(entry_a.folder).model
    assert entry_a.card.num_params == sum(p.numel() for p in model.parameters()) > 0
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model({"images": torch.rand(1, 3, 32, 32)}, groups="MODEL")
    assert entry_a.card.gflops == round(counter.get_total_flops() / 1e9, 6) > 0


def test_publish_refuses_to_overwrite_and_needs_a_run_folder(
    entry_a: PretrainedEntry, run_a: Path, tmp_path: Path
) -> None:
    with pytest.raises(OutputError, match=r"already exists"):
        publish_pretrained(run_a, "tiny_shapes", entry_a.folder.parent, measure_latency=False)
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(WeightsNotFoundError, match=r"holds no config.json"):
        publish_pretrained(tmp_path / "not_a_run", "x", tmp_path / "zoo", measure_latency=False)
    with pytest.raises(ConfigError, match=r"name must be letters"):
        publish_pretrained(run_a, "a name/with slash", tmp_path / "zoo", measure_latency=False)
    assert not (tmp_path / "zoo").exists() or files_below(tmp_path / "zoo") == set()


def test_float16_storage_halves_the_files_and_loads_into_float32(run_a: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"measured before the weights were stored as float16"):
        entry = publish_pretrained(run_a, "tiny_half", tmp_path, dtype="float16")
    card = entry.card
    assert card.storage_dtype == "float16" and "before rounding to float16" in card.metrics.weights
    full = sum(p.stat().st_size for p in (run_a / "checkpoint").rglob("*.pt") if p.name != "trainer_state.pt")
    assert card.file_size_mb * 1e6 < 0.6 * full
    loaded = load_pretrained(entry.folder).model

    def rounded(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.half().float() if tensor.is_floating_point() else tensor

    assert_same_weights(loaded, checkpoint_states(run_a), cast=rounded)
    latency = card.onnx_latency  # measured in this publish only: it exports to ONNX
    assert latency is not None and latency.batch_size == 1 and latency.milliseconds > 0 and latency.machine
    assert "onnxruntime" in latency.runtime


def test_metrics_measured_on_the_entry_are_stored_as_given(run_a: Path, tmp_path: Path) -> None:
    entry = publish_pretrained(
        run_a,
        "tiny_measured",
        tmp_path,
        metrics={"classify/accuracy": 0.5},
        metrics_dataset="shapes seed 777, 16 images",
        measure_latency=False,
        license="Apache-2.0",
    )
    assert entry.card.metrics.values == {"classify/accuracy": 0.5}
    assert entry.card.metrics.dataset == "shapes seed 777, 16 images"
    assert entry.card.metrics.weights == "stored weights" and entry.card.license == "Apache-2.0"
    with pytest.raises(ConfigError, match=r"without metrics_dataset"):
        publish_pretrained(run_a, "tiny_x", tmp_path, metrics={"a": 1.0}, measure_latency=False)
    again = publish_pretrained(
        run_a, "tiny_measured", tmp_path, metrics={"classify/accuracy": 0.25}, metrics_dataset="d",
        measure_latency=False, overwrite=True,
    )  # fmt: skip
    assert again.card.metrics.values == {"classify/accuracy": 0.25}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_measured"]  # nothing left beside it
    (tmp_path / "not_an_entry").mkdir()
    with pytest.raises(OutputError, match=r"is not a zoo entry; it is never overwritten"):
        publish_pretrained(run_a, "not_an_entry", tmp_path, measure_latency=False, overwrite=True)


# -- load from a folder, file:// and http://127.0.0.1 ----------------------------------------------------
def test_loaded_weights_equal_the_run_checkpoint_tensor_by_tensor(entry_a: PretrainedEntry, run_a: Path) -> None:
    pretrained = load_pretrained(entry_a.folder)
    assert_same_weights(pretrained.model, checkpoint_states(run_a))
    assert not pretrained.model.training
    assert sorted(pretrained.report.loaded) == ["backbone", "classify/classify", "segment/decode"]
    assert pretrained.class_names == entry_a.card.class_names
    assert load_pretrained(entry_a.folder / "card.json").entry.folder == entry_a.folder
    assert load_pretrained(str(entry_a.folder)).card == entry_a.card


def test_a_file_url_is_downloaded_into_brickzoo_home_once(
    entry_a: PretrainedEntry, run_a: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = entry_a.folder.as_uri()
    pretrained = load_pretrained(url, progress=False)
    assert_same_weights(pretrained.model, checkpoint_states(run_a))
    folder = pretrained.entry.folder
    assert folder.parent == home / "pretrained" and folder.name.startswith("tiny_shapes-")
    assert cached_files(home) == {
        f"pretrained/{folder.name}/{f}" for f in ENTRY_FILES - {"README.md", "checksums.sha256"}
    }

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached entry was downloaded again")

    monkeypatch.setattr(registry, "download_file", no_network)
    assert load_pretrained(url + "/card.json").entry.folder == folder


def test_an_http_entry_is_fetched_card_first_then_every_file(
    entry_a: PretrainedEntry, run_a: Path, server: tuple[str, Path, list[str]], home: Path
) -> None:
    base, served, requests = server
    copy_entry(entry_a, served / "http_entry")
    del requests[:]
    pretrained = load_pretrained(f"{base}/http_entry/", progress=False, timeout=5)
    assert_same_weights(pretrained.model, checkpoint_states(run_a))
    assert requests[0] == "/http_entry/card.json"
    assert sorted(requests[1:]) == sorted(f"/http_entry/{f}" for f in entry_a.card.files)
    assert home / "pretrained" in pretrained.entry.folder.parents
    load_pretrained(f"{base}/http_entry/", progress=False)
    assert len(requests) == 1 + len(entry_a.card.files), "the second load must come from the cache"


def test_a_pinned_card_hash_is_checked(
    entry_a: PretrainedEntry, server: tuple[str, Path, list[str]], home: Path
) -> None:
    base, served, _ = server
    copy_entry(entry_a, served / "pinned")
    good = sha256(entry_a.folder / "card.json")
    assert load_pretrained(f"{base}/pinned/card.json#sha256={good}", progress=False).card == entry_a.card
    bad = "0" * 64
    with pytest.raises(WeightsError) as info:
        load_pretrained(f"{base}/pinned/#sha256={bad}", progress=False)
    assert f"{base}/pinned/card.json" in str(info.value) and bad in str(info.value) and good in str(info.value)


def test_a_tampered_weight_file_is_refused_and_nothing_is_cached(
    entry_a: PretrainedEntry, server: tuple[str, Path, list[str]], home: Path
) -> None:
    base, served, _ = server
    folder = copy_entry(entry_a, served / "tampered")
    flip_byte(folder / "weights" / "backbone.safetensors")
    with pytest.raises(WeightsError) as info:
        load_pretrained(f"{base}/tampered/", progress=False)
    message = str(info.value)
    assert f"{base}/tampered/weights/backbone.safetensors" in message
    assert entry_a.card.files["weights/backbone.safetensors"].sha256 in message
    assert sha256(folder / "weights" / "backbone.safetensors") in message
    assert cached_files(home) == set()


def test_a_dropped_connection_is_an_error_and_nothing_is_cached(
    entry_a: PretrainedEntry, server: tuple[str, Path, list[str]], home: Path
) -> None:
    base, served, _ = server
    copy_entry(entry_a, served / "dropped")
    with pytest.raises(WeightsError, match=r"connection dropped after \d+ of \d+ bytes") as info:
        load_pretrained(f"{base}/drop/dropped/", progress=False)
    assert f"{base}/drop/dropped/weights/" in str(info.value)
    assert cached_files(home) == set()


def test_an_unreachable_url_fails_within_the_timeout_and_says_how_to_use_a_local_copy(home: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/zoo/tiny/"
        start = time.perf_counter()
        with pytest.raises(WeightsError) as info:
            load_pretrained(url, timeout=0.3, progress=False)
        assert time.perf_counter() - start < 5
    message = str(info.value)
    assert f"{url}card.json" in message and "timeout of 0.3 s" in message
    assert "download the entry elsewhere" in message and "load_pretrained('/path/to/entry')" in message
    assert cached_files(home) == set()


# -- shipped entries and names -------------------------------------------------------------------------------
@pytest.fixture
def shipped(entry_a: PretrainedEntry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "package_pretrained"
    folder.mkdir()
    copy_entry(entry_a, folder / "tiny_shapes")
    monkeypatch.setattr(registry, "shipped_dir", lambda: folder)
    return folder


def test_shipped_entries_are_listed_and_loaded_by_name(shipped: Path, run_a: Path) -> None:
    assert list_pretrained() == ["tiny_shapes"]
    assert list_pretrained("TINY_*") == ["tiny_shapes"] and list_pretrained("digits*") == []
    assert list(pretrained_cards()) == ["tiny_shapes"]
    for name in ("tiny_shapes", "zoo:tiny_shapes"):
        pretrained = load_pretrained(name)
        assert pretrained.entry.folder == shipped / "tiny_shapes"
        assert_same_weights(pretrained.model, checkpoint_states(run_a))


def test_a_shipped_card_must_carry_its_folder_name(shipped: Path) -> None:
    edit_card(shipped / "tiny_shapes", lambda card: card.update(name="other"))
    for call in (lambda: load_pretrained("tiny_shapes"), pretrained_cards):
        with pytest.raises(ConfigError, match=r"name 'other', but the shipped folder is 'tiny_shapes'"):
            call()


def test_unknown_names_give_close_matches_and_the_known_names(shipped: Path) -> None:
    with pytest.raises(ZooError) as info:
        load_pretrained("tiny_shape")
    assert isinstance(info.value, KeyError)
    assert "unknown prebuilt model 'tiny_shape'; did you mean ['tiny_shapes']? known: ['tiny_shapes']" in str(
        info.value
    )
    with pytest.raises(ZooError, match=r"unknown prebuilt model 'resnet'; known: \['tiny_shapes'\]"):
        load_pretrained("zoo:resnet")
    with pytest.raises(WeightsNotFoundError, match=r"no such folder"):
        load_pretrained("no/such/folder")


def test_a_shipped_card_can_point_at_hosted_weights(
    entry_a: PretrainedEntry, run_a: Path, server: tuple[str, Path, list[str]], home: Path, shipped: Path
) -> None:
    base, served, _ = server
    copy_entry(entry_a, served / "hosted")
    light = shipped / "tiny_shapes"
    shutil.rmtree(light / "weights")
    edit_card(light, lambda card: card.update(url=f"{base}/hosted/"))
    pretrained = load_pretrained("tiny_shapes", progress=False)
    assert_same_weights(pretrained.model, checkpoint_states(run_a))
    assert home / "pretrained" in pretrained.entry.folder.parents
    assert {f for f in cached_files(home) if "/weights/" in f}


# -- cards that do not match, changed bytes, foreign weights ------------------------------------------------
def test_a_card_that_does_not_match_its_config_names_the_keys(entry_a: PretrainedEntry, tmp_path: Path) -> None:
    folder = copy_entry(entry_a, tmp_path / "entry")
    edit_card(folder, lambda card: card["heads"]["classify"].update(class_names=["a", "b", "c", "d"]))
    with pytest.raises(ConfigError) as info:
        load_pretrained(folder)
    message = str(info.value)
    assert str(folder / "card.json") in message
    assert "heads.classify.class_names: card ['a', 'b', 'c', 'd'] vs config.model.heads.classify" in message


def test_a_config_file_that_differs_from_the_card_names_the_keys(entry_a: PretrainedEntry, tmp_path: Path) -> None:
    folder = copy_entry(entry_a, tmp_path / "entry")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["heads"]["classify"]["dropout"] = 0.5
    config["train"]["epochs"] = 9
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rehash(folder)
    with pytest.raises(ConfigError, match=r"at keys: \['model.heads.classify.dropout', 'train.epochs'\]"):
        load_pretrained(folder)


def test_an_embedded_config_that_does_not_build_is_an_error_naming_the_key(
    entry_a: PretrainedEntry, tmp_path: Path
) -> None:
    folder = copy_entry(entry_a, tmp_path / "entry")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["backbone"]["name"] = "timm:resnet10q"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    edit_card(folder, lambda card: card.update(config=config))
    rehash(folder)
    with pytest.raises(ConfigError) as info:
        verify_pretrained(folder)
    assert f"the config embedded in {folder / 'card.json'}: 1 problem in the config" in str(info.value)
    assert "model.backbone.name" in str(info.value)


def test_verify_returns_every_hash_and_detects_a_changed_byte(entry_a: PretrainedEntry, tmp_path: Path) -> None:
    folder = copy_entry(entry_a, tmp_path / "entry")
    listed = ENTRY_FILES - {"README.md", "card.json", "checksums.sha256"}
    assert verify_pretrained(folder) == {f: sha256(folder / f) for f in sorted(listed)}
    file = folder / "weights" / "segment" / "decode.safetensors"
    flip_byte(file, offset=file.stat().st_size - 1)
    with pytest.raises(WeightsError) as info:
        verify_pretrained(folder)
    expected = entry_a.card.files["weights/segment/decode.safetensors"].sha256
    assert f"weights/segment/decode.safetensors: expected sha256 {expected} (card), got {sha256(file)}" in str(
        info.value
    )
    file.unlink()
    with pytest.raises(WeightsError, match=r"weights/segment/decode.safetensors: missing"):
        load_pretrained(folder)


def test_weights_of_another_entry_fail_with_the_strict_loading_error(
    entry_a: PretrainedEntry, entry_b: PretrainedEntry, tmp_path: Path
) -> None:
    model = load_pretrained(entry_a.folder).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"do not match the collection; nothing was loaded"):
        load_bricks(model, entry_b.weights_dir, strict=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    folder = copy_entry(entry_a, tmp_path / "mixed")  # a consistent card, but another entry's weights
    shutil.rmtree(folder / "weights")
    shutil.copytree(entry_b.weights_dir, folder / "weights")
    rehash(folder)
    with pytest.raises(WeightsError) as info:
        load_pretrained(folder)
    message = str(info.value)
    assert "do not match the collection; nothing was loaded" in message
    assert "brick 'segment/decode': no weight file" in message and "brick 'classify/classify'" in message


def test_overrides_that_change_shapes_need_strict_false(entry_a: PretrainedEntry, run_a: Path) -> None:
    overrides = ["model.heads.classify.num_classes=3", "model.heads.classify.class_names=[a,b,c]"]
    with pytest.raises(WeightsError, match=r"brick 'classify/classify'"):
        load_pretrained(entry_a.folder, overrides=overrides)
    pretrained = load_pretrained(entry_a.folder, overrides=overrides, strict=False)
    assert sorted(pretrained.report.loaded) == ["backbone", "segment/decode"]
    assert "classify/classify" in pretrained.report.skipped
    expected = checkpoint_states(run_a)
    del expected["classify/classify"]
    bricks = dict(pretrained.model.named_bricks())
    for path, state in expected.items():
        assert all(torch.equal(bricks[path].state_dict()[k], v) for k, v in state.items()), path
    assert pretrained.config["model"]["heads"]["classify"]["num_classes"] == 3
