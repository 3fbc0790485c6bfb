"""Model cards: read back what is written, refuse bad cards naming the file and every key, measure honestly."""

from __future__ import annotations

import copy
import doctest
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brickzoo import BrickCollection, BrickTrainable
from brickzoo.errors import ConfigError, WeightsNotFoundError
from brickzoo.zoo import ModelCard, _cards, _download, _pretrained, cards_table, read_card, write_card
from brickzoo.zoo._cards import (
    card_from_dict,
    card_markdown,
    count_gflops,
    count_parameters,
    differing_keys,
    is_safe_relative_path,
)


def card_dict() -> dict[str, Any]:
    """A valid card of a two-class classifier, as card.json holds it."""
    names = ["cat", "dog"]
    config = {
        "name": "pets",
        "model": {
            "backbone": {"name": "timm:resnet10t", "pretrained": False, "out_indices": [1, 2]},
            "heads": {"classify": {"factory": "image_classification", "num_classes": 2, "class_names": names}},
        },
        "data": {"dataset": "shapes", "args": {"image_size": 32}, "train": {"num_samples": 4}},
    }
    return {
        "format": "brickzoo-model-card",
        "format_version": 1,
        "name": "pets",
        "description": "cats and dogs",
        "heads": {"classify": {"factory": "image_classification", "task": "classification", "num_classes": 2,
                               "class_names": names}},
        "config": config,
        "preprocessing": {"input_name": "images", "input_size": [32, 32], "resize": "letterbox",
                          "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "normalization_in_model": True},
        "metrics": {"dataset": "shapes val split (seed=7)", "values": {"classify/accuracy": 0.75, "x/nan": None},
                    "weights": "stored weights"},
        "num_params": 1234,
        "gflops": 0.0123,
        "onnx_latency": {"milliseconds": 1.5, "batch_size": 1, "runs": 30, "machine": "cpu", "runtime": "ort"},
        "files": {"config.yaml": {"sha256": "a" * 64, "bytes": 100},
                  "weights/backbone.safetensors": {"sha256": "b" * 64, "bytes": 1_000_000},
                  "weights/classify/classify.safetensors": {"sha256": "c" * 64, "bytes": 500_000}},
        "storage_dtype": "float16",
        "command": "brickzoo train pets",
        "versions": {"brickzoo": "0.1.0", "torch": "2.4.0"},
        "date": "2025-01-31",
        "license": "MIT",
        "url": None,
        "file_size_mb": 1.5,
    }  # fmt: skip


def problems(data: dict[str, Any], origin: str = "zoo/pets/card.json") -> str:
    with pytest.raises(ConfigError) as info:
        card_from_dict(data, origin)
    return str(info.value)


def test_a_card_reads_back_as_written(tmp_path: Path) -> None:
    card = card_from_dict(card_dict())
    assert isinstance(card, ModelCard)
    assert card.to_dict() == card_dict()
    assert card.heads["classify"].class_names == ["cat", "dog"]
    assert card.weight_files == ["weights/backbone.safetensors", "weights/classify/classify.safetensors"]
    assert card.file_size_mb == 1.5  # (1_000_000 + 500_000) bytes, config.yaml not counted
    assert card.onnx_latency is not None and card.onnx_latency.milliseconds == 1.5
    written = write_card(card, tmp_path)
    assert written == tmp_path / "card.json"
    assert json.loads(written.read_text()) == card_dict()
    assert read_card(tmp_path) == card
    assert read_card(written) == card


def test_every_missing_or_mistyped_key_is_named_with_the_card_file() -> None:
    data = card_dict()
    del data["num_params"]
    data["gflops"] = "fast"
    data["preprocessing"]["input_size"] = "32"
    data["heads"]["classify"]["num_classes"] = "2"
    data["metrics"]["values"]["classify/accuracy"] = "high"
    del data["onnx_latency"]["machine"]
    data["licence"] = "MIT"
    message = problems(data)
    assert message.startswith("zoo/pets/card.json: 7 problems in the model card:")
    for key in (
        "num_params: missing",
        "gflops: expected float, got str 'fast'",
        "preprocessing.input_size: expected a list, got str '32'",
        "heads.classify.num_classes: expected int, got str '2'",
        "metrics.values.classify/accuracy: expected float or null, got str 'high'",
        "onnx_latency.machine: missing",
        "licence: unknown key",
    ):
        assert key in message, key


def test_values_of_the_right_type_but_wrong_meaning_are_named() -> None:
    data = card_dict()
    data["name"] = "pets v2"
    data["preprocessing"]["input_size"] = [0, 32]
    data["preprocessing"]["resize"] = "crop"
    data["storage_dtype"] = "int8"
    data["files"]["../../outside"] = {"sha256": "d" * 64, "bytes": 1}
    data["files"]["config.yaml"]["sha256"] = "ABC"
    data["date"] = "31/01/2025"
    message = problems(data)
    for key in (
        "name: expected letters",
        "preprocessing.input_size: expected [H, W] with positive values",
        "preprocessing.resize: expected one of ['letterbox', 'stretch'], got 'crop'",
        "storage_dtype: expected one of ['float32', 'float16'], got 'int8'",
        "files.../../outside: expected a relative",
        "files.config.yaml.sha256: expected 64 lowercase hex digits, got 'ABC'",
        "date: expected an ISO date",
    ):
        assert key in message, key


def test_the_file_size_must_be_the_sum_of_the_weight_files() -> None:
    data = card_dict()
    data["file_size_mb"] = 2.0
    assert "file_size_mb: 2.0, but the weight files listed sum to 1.5 MB" in problems(data)


def test_heads_that_differ_from_the_embedded_config_name_the_keys() -> None:
    data = card_dict()
    data["heads"]["classify"]["class_names"] = ["cat", "cow"]
    data["heads"]["detect"] = copy.deepcopy(data["heads"]["classify"])
    message = problems(data)
    assert "zoo/pets/card.json: the card's heads do not match its embedded config" in message
    assert "heads.classify.class_names: card ['cat', 'cow'] vs config.model.heads.classify ['cat', 'dog']" in message
    assert "heads.detect: in the card, but config.model.heads has no 'detect'" in message


def test_an_embedded_config_with_automatic_classes_is_refused() -> None:
    data = card_dict()
    data["config"]["model"]["heads"]["classify"]["class_names"] = "auto"
    message = problems(data)
    assert "not fully resolved" in message
    assert "config.model.heads.classify.class_names: expected explicit class names, got 'auto'" in message


def test_other_files_and_versions_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected a brickzoo model card"):
        card_from_dict({"format": "something-else"}, "a.json")
    newer = {**card_dict(), "format_version": 2}
    with pytest.raises(ConfigError, match=r"card format version 2; this brickzoo reads version 1"):
        card_from_dict(newer, "a.json")
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"card.json: not a valid JSON model card"):
        read_card(tmp_path / "card.json")
    with pytest.raises(WeightsNotFoundError, match=r"model card .*nowhere.* not found"):
        read_card(tmp_path / "nowhere")


def test_markdown_and_table_show_the_card() -> None:
    card = card_from_dict(card_dict())
    readme = card_markdown(card)
    assert readme.startswith("---\nlibrary_name: brickzoo\nlicense: mit\ntags: [brickzoo, classification]\n---\n")
    assert "| classify | classification | cat, dog |" in readme and "| classify/accuracy | 0.7500 |" in readme
    table = cards_table([card]).splitlines()
    assert table[0].startswith("| name | heads | backbone | input |")
    row = table[2]
    assert row.startswith("| `pets` | classify (classification, 2) | timm:resnet10t (levels 1, 2) | 32x32 |")
    assert "| classify/accuracy 0.750 |" in row and "x/nan" not in row  # each head's headline metrics only
    assert row.endswith("| 0.00 | 0.012 | 1.50 | 1.50 |")  # 1234 params = 0.00 M, GFLOPs, ms, MB


def with_subset(data: dict[str, Any], count: int, values: dict[str, Any]) -> dict[str, Any]:
    data["metrics"]["subset"] = {"num_samples": count, "values": values}
    return data


def test_the_metrics_of_the_first_images_read_back_and_show_in_the_markdown() -> None:
    data = with_subset(card_dict(), 16, {"classify/accuracy": 0.8125, "x/nan": None})
    card = card_from_dict(data)
    assert card.to_dict() == data
    assert card.metrics.subset is not None and card.metrics.subset.num_samples == 16
    readme = card_markdown(card)
    assert "| metric | value | first 16 images |" in readme and "| classify/accuracy | 0.7500 | 0.8125 |" in readme
    assert "subset" not in json.dumps(card.metadata()) and card.metadata()["metrics"]["values"]["x/nan"] is None
    message = problems(with_subset(card_dict(), 0, {"classify/accuracy": 0.5}))
    assert "metrics.subset: expected num_samples >= 1 and the metrics of metrics.values" in message
    assert "got 0 samples and ['classify/accuracy']" in message


def test_gflops_are_counted_like_a_hand_computation() -> None:
    conv = torch.nn.Conv2d(16, 32, kernel_size=3, padding=1)
    model = BrickCollection({"conv": BrickTrainable(conv, ["x"], ["y"])})
    flops = 2 * (32 * 64 * 64) * (16 * 3 * 3)  # a multiply-add per output element and kernel tap
    assert count_gflops(model, {"x": torch.zeros(1, 16, 64, 64)}) == round(flops / 1e9, 6)
    assert count_parameters(model) == 32 * 16 * 9 + 32
    assert model.training  # the mode is restored


def test_safe_relative_paths() -> None:
    assert is_safe_relative_path("weights/segment/decode.safetensors")
    for bad in ("", "/etc/passwd", "../x", "weights/../../x", "a\\b", "./x", "a//b", "c:/x"):
        assert not is_safe_relative_path(bad), bad


_leaves = st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.none())
_trees = st.recursive(_leaves, lambda children: st.dictionaries(st.text("abc", min_size=1, max_size=2), children))


@settings(max_examples=60, deadline=None)
@given(tree=st.dictionaries(st.text("xyz", min_size=1, max_size=2), _trees, min_size=1), data=st.data())
def test_differing_keys_finds_exactly_the_changed_leaf(tree: dict[str, Any], data: st.DataObject) -> None:
    assert differing_keys(tree, copy.deepcopy(tree)) == []
    path, node = [], tree
    while True:  # walk down to a random leaf
        key = data.draw(st.sampled_from(sorted(node)))
        path.append(key)
        if not isinstance(node[key], dict) or not node[key]:
            break
        node = node[key]
    changed = copy.deepcopy(tree)
    parent = changed
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = ["a value no leaf strategy draws"]
    assert differing_keys(tree, changed) == [".".join(path)]


@pytest.mark.parametrize("module", [_cards, _download, _pretrained], ids=lambda m: m.__name__.rpartition(".")[2])
def test_docstring_examples_run(module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRICKZOO_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
