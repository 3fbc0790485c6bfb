"""The model card of a prebuilt zoo entry: what the model is, how well it does, how it was made, every file's hash.

A card is ``card.json`` in an entry folder (see :mod:`brickzoo.zoo._pretrained` for the layout).
It plays the part of torchvision's ``Weights.meta`` and timm's ``pretrained_cfg``: class names
per head, preprocessing (input size, resize mode, mean/std), metrics on a named held-out set,
parameters, GFLOPs, ONNX latency, file sizes and hashes, the command that reproduces it, the
versions, date and licence. It embeds the zoo config the model was trained from, fully
resolved (explicit ``num_classes`` and ``class_names``), so no dataset is needed to build it.

:func:`read_card` refuses a card with missing keys, unknown keys or values of the wrong type
(one error naming the card file and every key), and a card whose heads do not match its
embedded config (naming the keys that differ).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import tempfile
import time
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brickzoo._collection import BrickCollection
from brickzoo._groups import Stage
from brickzoo._weights import _atomic_write
from brickzoo.errors import ConfigError, WeightsNotFoundError
from brickzoo.zoo._config import HEAD_TASKS
from brickzoo.zoo._validate import type_name, value_matches

CARD_FILE = "card.json"
CONFIG_FILE = "config.yaml"
CHECKSUMS_FILE = "checksums.sha256"
README_FILE = "README.md"
WEIGHTS_DIR = "weights"
CARD_FORMAT = "brickzoo-model-card"
CARD_FORMAT_VERSION = 1
RESIZE_MODES = ("letterbox", "stretch")
HEADLINE_METRICS: dict[str | None, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "segmentation": ("miou",),
    "detection": ("map", "map_50"),
}
"""The metrics of each task the zoo table shows (the card holds every metric)."""
STORAGE_DTYPES = ("float32", "float16")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HeadCard:
    """One task head of an entry.

    Attributes:
        factory: the registered head factory (``image_classification``...).
        task: ``classification``, ``segmentation``, ``detection``, or None for another factory.
        num_classes: the number of classes it predicts.
        class_names: one name per class, in class-index order.
    """

    factory: str
    task: str | None
    num_classes: int
    class_names: list[str]


@dataclass(frozen=True)
class Preprocessing:
    """What an image goes through before the model sees it (torchvision's ``transforms``, timm's data config).

    Attributes:
        input_name: the model's image input (``images``): RGB, ``[B, 3, H, W]``, uint8 in
            [0, 255] or float in [0, 1].
        input_size: ``[H, W]`` the model was trained and measured at.
        resize: how a picture of another size is brought to ``input_size``: ``letterbox``
            (aspect ratio kept, padded) or ``stretch`` (plain resize).
        mean: per-channel mean of the normalisation (of [0, 1] values); empty without one.
        std: per-channel standard deviation of the normalisation; empty without one.
        normalization_in_model: the model normalises itself (a preprocessor brick in its
            MODEL group), so callers feed un-normalised images.
    """

    input_name: str
    input_size: list[int]
    resize: str
    mean: list[float]
    std: list[float]
    normalization_in_model: bool


@dataclass(frozen=True)
class SubsetMetrics:
    """The same metrics on the first images of the held-out set: a check quick enough for a test suite.

    Attributes:
        num_samples: how many images, taken in order from the start of the held-out set.
        values: metric name -> value on exactly those images, measured like the full set's.
    """

    num_samples: int
    values: dict[str, float | None]


@dataclass(frozen=True)
class CardMetrics:
    """Metrics on a named held-out set.

    Attributes:
        dataset: the held-out set, precise enough to rebuild it (``"shapes test split
            (image_size=64, max_shapes=3, num_samples=512, seed=200000)"``).
        values: metric name -> value (``"classify/accuracy": 0.93``); None for a non-finite value.
        weights: which weights were measured (``"stored weights"`` or ``"float32 weights of the
            training run"`` when the stored ones were rounded afterwards).
        subset: the metrics of the first :attr:`SubsetMetrics.num_samples` images of ``dataset``
            (what the test suite recomputes), or None.
    """

    dataset: str
    values: dict[str, float | None]
    weights: str
    subset: SubsetMetrics | None = None


@dataclass(frozen=True)
class OnnxLatency:
    """ONNX Runtime latency at batch 1 on the machine that built the entry.

    Attributes:
        milliseconds: the median of ``runs`` timed runs after warm-up.
        batch_size: the batch size measured (1).
        runs: how many runs were timed.
        machine: the CPU, core count and OS of the measuring machine.
        runtime: onnxruntime version, execution provider and thread count.
    """

    milliseconds: float
    batch_size: int
    runs: int
    machine: str
    runtime: str


@dataclass(frozen=True)
class FileRecord:
    """One file of an entry: its sha256 and size."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelCard:
    """The card of a prebuilt entry, as stored in its ``card.json``.

    Attributes:
        name: the entry's name (letters, digits, ``_``, ``.``, ``-``).
        description: one line saying what it is.
        heads: head name -> :class:`HeadCard`, the same heads as ``config``'s ``model.heads``.
        config: the zoo config it was trained from, fully resolved.
        preprocessing: :class:`Preprocessing`.
        metrics: :class:`CardMetrics` on a named held-out set.
        num_params: parameters of the MODEL bricks.
        gflops: floating-point operations of one forward pass at batch 1 and ``input_size``,
            in billions, counted by ``torch.utils.flop_counter.FlopCounterMode`` (a
            multiply-add counts as 2).
        onnx_latency: :class:`OnnxLatency`, or None when it was not measured.
        files: path relative to the entry folder (``/``-separated) -> :class:`FileRecord`,
            for ``config.yaml`` and every weight file.
        storage_dtype: ``float32``, or ``float16`` (floating tensors stored in half precision
            and loaded into float32 models).
        command: the exact command that reproduces the entry.
        versions: ``{"brickzoo": ..., "torch": ...}`` that built it.
        date: ISO date (``2025-01-31``) it was built.
        license: the licence of the weights (an SPDX identifier such as ``MIT``).
        url: the folder URL the files can be downloaded from when they are not next to the
            card (a shipped card of a hosted model); None otherwise.

    Example:
        >>> card = read_card("zoo/shapes_multitask/card.json")  # doctest: +SKIP
        >>> card.heads["classify"].class_names, card.preprocessing.input_size  # doctest: +SKIP
        (['circle', 'square', 'triangle', 'star'], [64, 64])
    """

    name: str
    description: str
    heads: dict[str, HeadCard]
    config: dict[str, Any]
    preprocessing: Preprocessing
    metrics: CardMetrics
    num_params: int
    gflops: float
    onnx_latency: OnnxLatency | None
    files: dict[str, FileRecord]
    storage_dtype: str
    command: str
    versions: dict[str, str]
    date: str
    license: str
    url: str | None = None

    @property
    def weight_files(self) -> list[str]:
        """The files under ``weights/``, sorted."""
        return sorted(f for f in self.files if f.startswith(f"{WEIGHTS_DIR}/"))

    @property
    def file_size_mb(self) -> float:
        """The size of the weight files, in MB (10^6 bytes), to 3 decimals."""
        return round(sum(self.files[f].bytes for f in self.weight_files) / 1e6, 3)

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Head name -> class names."""
        return {name: list(head.class_names) for name, head in self.heads.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping written to ``card.json`` (format tags first, ``file_size_mb`` derived)."""
        data = dataclasses.asdict(self)
        if data["metrics"]["subset"] is None:
            del data["metrics"]["subset"]  # optional: a card without one reads back as written
        data["file_size_mb"] = self.file_size_mb
        return {"format": CARD_FORMAT, "format_version": CARD_FORMAT_VERSION, **data}

    def metadata(self) -> dict[str, Any]:
        """What travels with the model into a fine-tuning run (``pretrained.json``) and its ONNX metadata.

        The entry's name and description, its heads' class names, its preprocessing, its
        metrics (held-out set, values, which weights), storage, provenance and licence: JSON types.
        """
        metrics = dataclasses.asdict(self.metrics)
        metrics.pop("subset", None)
        return {
            "name": self.name,
            "description": self.description,
            "class_names": self.class_names,
            "metrics": metrics,
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "storage_dtype": self.storage_dtype,
            "versions": dict(self.versions),
            "date": self.date,
            "license": self.license,
            "url": self.url,
        }


# -- reading and checking ---------------------------------------------------------------------------
def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _nested_dataclass(hint: Any) -> Any:
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _check_value(value: Any, hint: Any, key: str, problems: list[str]) -> None:
    """Add a problem for every part of ``value`` that does not fit the type hint ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    nullable = ""
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return
        hint, nullable = next(a for a in args if a is not type(None)), " or null"
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    nested = _nested_dataclass(hint)
    if nested is not None:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping of {nested.__name__} fields{nullable}, got {_kind(value)}")
        else:
            _check_fields(value, nested, f"{key}.", problems)
    elif origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {_kind(value)}")
        else:
            for name, item in value.items():
                _check_value(item, args[1], f"{key}.{name}", problems)
    elif origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {_kind(value)}")
        else:
            for index, item in enumerate(value):
                _check_value(item, args[0], f"{key}[{index}]", problems)
    elif not value_matches(value, hint):
        problems.append(f"{key}: expected {type_name(hint)}{nullable}, got {_kind(value)}")


def _check_fields(data: Mapping[str, Any], cls: Any, prefix: str, problems: list[str]) -> None:
    """Missing, unknown and mistyped keys of ``data`` read as the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for f in dataclasses.fields(cls):
        if f.name in data:
            _check_value(data[f.name], hints[f.name], f"{prefix}{f.name}", problems)
        elif f.default is dataclasses.MISSING:
            problems.append(f"{prefix}{f.name}: missing")
    for key in data:
        if key not in names:
            problems.append(f"{prefix}{key}: unknown key (expected only {names})")


def _from_fields(cls: Any, data: Mapping[str, Any]) -> Any:
    """Build the dataclass ``cls`` from a checked mapping, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        optional = [a for a in typing.get_args(hint) if a is not type(None)]
        nested = _nested_dataclass(optional[0] if optional and value is not None else hint)
        item = typing.get_args(hint)[1] if typing.get_origin(hint) is dict else None
        if nested is not None and value is not None:
            values[name] = _from_fields(nested, value)
        elif _nested_dataclass(item) is not None:
            values[name] = {k: _from_fields(item, v) for k, v in value.items()}
        else:
            values[name] = value
    return cls(**values)


def _value_problems(card: ModelCard, file_size_mb: Any) -> list[str]:
    """Problems of well-typed values: names, sizes, hashes, safe relative paths, dates."""
    problems = []
    if not NAME_PATTERN.match(card.name):
        problems.append(f"name: expected letters, digits, '_', '.' or '-', got {card.name!r}")
    pre = card.preprocessing
    if len(pre.input_size) != 2 or any(v <= 0 for v in pre.input_size):
        problems.append(f"preprocessing.input_size: expected [H, W] with positive values, got {pre.input_size}")
    if pre.resize not in RESIZE_MODES:
        problems.append(f"preprocessing.resize: expected one of {list(RESIZE_MODES)}, got {pre.resize!r}")
    if len(pre.mean) != len(pre.std) or any(s <= 0 for s in pre.std):
        problems.append(f"preprocessing.mean/std: expected as many values, stds > 0; got {pre.mean} and {pre.std}")
    if card.storage_dtype not in STORAGE_DTYPES:
        problems.append(f"storage_dtype: expected one of {list(STORAGE_DTYPES)}, got {card.storage_dtype!r}")
    for path, record in card.files.items():
        if not is_safe_relative_path(path):
            problems.append(f"files.{path}: expected a relative '/'-separated path inside the entry folder")
        if not _SHA256.match(record.sha256):
            problems.append(f"files.{path}.sha256: expected 64 lowercase hex digits, got {record.sha256!r}")
    if CONFIG_FILE not in card.files or not card.weight_files:
        problems.append(
            f"files: expected {CONFIG_FILE} and the weight files under {WEIGHTS_DIR}/, got {sorted(card.files)}"
        )
    subset = card.metrics.subset
    if subset is not None and (subset.num_samples < 1 or sorted(subset.values) != sorted(card.metrics.values)):
        problems.append(
            f"metrics.subset: expected num_samples >= 1 and the metrics of metrics.values "
            f"{sorted(card.metrics.values)}, got {subset.num_samples} samples and {sorted(subset.values)}"
        )
    if file_size_mb != card.file_size_mb:
        problems.append(f"file_size_mb: {file_size_mb!r}, but the weight files listed sum to {card.file_size_mb} MB")
    try:
        datetime.date.fromisoformat(card.date)
    except ValueError:
        problems.append(f"date: expected an ISO date such as 2025-01-31, got {card.date!r}")
    return problems


def is_safe_relative_path(path: str) -> bool:
    """Whether ``path`` stays inside a folder: relative, ``/``-separated, no ``..``, no backslash.

    >>> is_safe_relative_path("weights/backbone.safetensors"), is_safe_relative_path("../etc/passwd")
    (True, False)
    """
    parts = path.split("/")
    return "\\" not in path and ":" not in parts[0] and all(p not in ("", ".", "..") for p in parts)


def card_from_dict(data: Any, origin: str = "<card>") -> ModelCard:
    """Check a mapping read from ``card.json`` and build the :class:`ModelCard`.

    Raises:
        ConfigError: not a brickzoo card, a format version this brickzoo cannot read, or
            missing, unknown or mistyped keys and bad values (all listed with their keys), or
            heads that do not match the embedded config (see :func:`check_card_heads`).

    Example:
        >>> card_from_dict({"format": "brickzoo-model-card", "format_version": 1, "name": "x"}, "x/card.json")
        Traceback (most recent call last):
        ...
        brickzoo.errors.ConfigError: x/card.json: 15 problems in the model card:
          description: missing
        ...
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a JSON object (a model card), got {_kind(data)}")
    data = dict(data)
    tag, version = data.pop("format", None), data.pop("format_version", None)
    if tag != CARD_FORMAT:
        raise ConfigError(f"{origin}: expected a brickzoo model card (format {CARD_FORMAT!r}), got format {tag!r}")
    if version != CARD_FORMAT_VERSION:
        raise ConfigError(
            f"{origin}: card format version {version!r}; this brickzoo reads version {CARD_FORMAT_VERSION} "
            "(a newer card needs a newer brickzoo)"
        )
    file_size_mb = data.pop("file_size_mb", None)
    problems: list[str] = []
    _check_fields(data, ModelCard, "", problems)
    if file_size_mb is None:
        problems.append("file_size_mb: missing")
    if not problems:
        card = _from_fields(ModelCard, data)
        problems = _value_problems(card, file_size_mb)
    if problems:
        count = len(problems)
        raise ConfigError(
            f"{origin}: {count} problem{'s' * (count > 1)} in the model card:\n  " + "\n  ".join(problems)
        )
    check_card_heads(card, origin)
    return card


def read_card(path: str | Path) -> ModelCard:
    """Read and check a ``card.json`` file (or the ``card.json`` of an entry folder).

    Raises:
        WeightsNotFoundError: no such file.
        ConfigError: not JSON, or as :func:`card_from_dict` (the message names the file).
    """
    file = Path(path)
    if file.is_dir():
        file = file / CARD_FILE
    if not file.is_file():
        raise WeightsNotFoundError(f"model card {file} not found; expected the {CARD_FILE} of a zoo entry folder")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not a valid JSON model card: {exc}") from exc
    return card_from_dict(data, str(file))


def write_card(card: ModelCard, path: str | Path) -> Path:
    """Write ``card.json`` (into ``path`` if it is a folder) atomically; returns the file."""
    file = Path(path)
    if file.is_dir():
        file = file / CARD_FILE
    text = json.dumps(card.to_dict(), indent=2, ensure_ascii=False) + "\n"
    _atomic_write(file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return file


# -- the heads of a card against its config -----------------------------------------------------------
def heads_of_config(config: Mapping[str, Any], origin: str = "<config>") -> dict[str, HeadCard]:
    """The :class:`HeadCard` of every ``model.heads`` entry of a fully resolved config.

    Raises:
        ConfigError: a head without explicit ``num_classes`` and ``class_names`` (listing which).
    """
    heads = (config.get("model") or {}).get("heads") if isinstance(config, Mapping) else None
    if not isinstance(heads, Mapping) or not heads:
        raise ConfigError(f"{origin}: config.model.heads: expected a mapping of heads, got {heads!r}")
    problems, result = [], {}
    for name, head in heads.items():
        head = head if isinstance(head, Mapping) else {}
        names, count = head.get("class_names"), head.get("num_classes")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"config.model.heads.{name}.class_names: expected explicit class names, got {names!r}")
        if not isinstance(count, int) or isinstance(count, bool):
            problems.append(f"config.model.heads.{name}.num_classes: expected an explicit integer, got {count!r}")
        if isinstance(names, list) and isinstance(count, int):
            factory = str(head.get("factory"))
            result[name] = HeadCard(factory, HEAD_TASKS.get(factory), count, [str(n) for n in names])
    if problems:
        raise ConfigError(f"{origin}: the embedded config is not fully resolved:\n  " + "\n  ".join(problems))
    return result


def check_card_heads(card: ModelCard, origin: str = "<card>") -> None:
    """Check that the card's heads are its embedded config's heads (names, factories, classes).

    Raises:
        ConfigError: listing each key that differs, with both values.
    """
    expected = heads_of_config(card.config, origin)
    problems = []
    for name in sorted(set(card.heads) | set(expected)):
        if name not in expected:
            problems.append(f"heads.{name}: in the card, but config.model.heads has no {name!r}")
        elif name not in card.heads:
            problems.append(f"heads.{name}: missing, but config.model.heads has {name!r}")
        else:
            for key in ("factory", "task", "num_classes", "class_names"):
                got, want = getattr(card.heads[name], key), getattr(expected[name], key)
                if got != want:
                    problems.append(f"heads.{name}.{key}: card {got!r} vs config.model.heads.{name} {want!r}")
    if problems:
        raise ConfigError(f"{origin}: the card's heads do not match its embedded config:\n  " + "\n  ".join(problems))


def differing_keys(left: Any, right: Any, prefix: str = "") -> list[str]:
    """The key paths at which two nested mappings differ (values compared as JSON would hold them).

    >>> differing_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0})
    ['a.c', 'd']
    """
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        keys = sorted(set(left) | set(right), key=str)
        return [p for k in keys for p in differing_keys(left.get(k, _ABSENT), right.get(k, _ABSENT), f"{prefix}{k}.")]
    return [] if _normal(left) == _normal(right) else [prefix.rstrip(".") or "<root>"]


_ABSENT = object()


def _normal(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normal(v) for v in value]
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


# -- measuring ---------------------------------------------------------------------------------------------
def count_parameters(model: BrickCollection) -> int:
    """The number of parameters of a collection (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: BrickCollection, inputs: Mapping[str, torch.Tensor]) -> float:
    """GFLOPs of one INFERENCE pass over ``inputs``, counted by ``FlopCounterMode`` (a multiply-add is 2 FLOPs).

    Example:
        >>> from brickzoo import BrickTrainable
        >>> model = BrickCollection({"linear": BrickTrainable(torch.nn.Linear(1000, 1000), ["x"], ["y"])})
        >>> count_gflops(model, {"x": torch.zeros(1, 1000)})  # 2 * 1000 * 1000
        0.002
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(dict(inputs), stage=Stage.INFERENCE)
    finally:
        model.train(was_training)
    return round(counter.get_total_flops() / 1e9, 6)


def machine_description() -> str:
    """The CPU model, logical core count, OS and architecture of this machine, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}"


def measure_onnx_latency(
    model: BrickCollection, inputs: Mapping[str, torch.Tensor], threads: int = 1, runs: int = 30
) -> OnnxLatency:
    """Export the MODEL bricks to ONNX in a temporary folder and time ONNX Runtime on ``inputs`` (CPU).

    Args:
        model: the collection (exported at the inputs' fixed shapes).
        inputs: the model inputs at batch 1 (``{"images": [1, 3, H, W]}``).
        threads: ONNX Runtime intra-op threads (1 makes figures comparable across machines).
        runs: timed runs after 3 warm-up runs; the median is reported.

    Raises:
        ExportError: the export fails.
    """
    import onnxruntime

    from brickzoo._export import export_bricks_as_onnx

    with tempfile.TemporaryDirectory(prefix="brickzoo-latency-") as folder:
        path = export_bricks_as_onnx(Path(folder) / "model.onnx", model, dict(inputs), dynamic_batch_size=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
        for _ in range(3):
            session.run(None, feed)
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feed)
            timings.append((time.perf_counter() - start) * 1000.0)
    batch = int(next(iter(inputs.values())).shape[0])
    runtime = f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider, {threads} thread{'s' * (threads > 1)}"
    return OnnxLatency(round(statistics.median(timings), 4), batch, runs, machine_description(), runtime)


def today() -> str:
    """Today's date (UTC) in ISO form."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


# -- markdown -------------------------------------------------------------------------------------------
def _number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def card_markdown(card: ModelCard) -> str:
    """A ``README.md`` for an entry folder: Hugging Face Hub front matter, then the card in tables."""
    pre, latency = card.preprocessing, card.onnx_latency
    tags = ["brickzoo", *sorted({h.task for h in card.heads.values() if h.task})]
    lines = ["---", "library_name: brickzoo", f"license: {card.license.lower()}", f"tags: [{', '.join(tags)}]", "---"]
    lines += [f"# {card.name}", "", card.description, "", "| head | task | classes |", "|---|---|---|"]
    lines += [f"| {n} | {h.task or h.factory} | {', '.join(h.class_names)} |" for n, h in card.heads.items()]
    lines += ["", f"## Metrics on {card.metrics.dataset} ({card.metrics.weights})", ""]
    subset = card.metrics.subset
    if subset is None:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_number(v, 4)} |" for k, v in card.metrics.values.items()]
    else:
        lines += [f"| metric | value | first {subset.num_samples} images |", "|---|---|---|"]
        lines += [
            f"| {k} | {_number(v, 4)} | {_number(subset.values.get(k), 4)} |" for k, v in card.metrics.values.items()
        ]
    ms = "not measured" if latency is None else f"{latency.milliseconds:.2f} ms ({latency.runtime}; {latency.machine})"
    details = {
        "input": f"`{pre.input_name}` RGB {pre.input_size[0]}x{pre.input_size[1]}, resize: {pre.resize}",
        "normalisation": f"mean {pre.mean}, std {pre.std}" + (" (inside the model)" * pre.normalization_in_model),
        "parameters": f"{card.num_params:,}",
        "GFLOPs (batch 1)": _number(card.gflops, 4),
        "ONNX latency (batch 1)": ms,
        "weights": f"{card.file_size_mb} MB, {card.storage_dtype} safetensors per brick",
        "reproduce": f"`{card.command}`",
        "built": f"{card.date} with brickzoo {card.versions.get('brickzoo')}, torch {card.versions.get('torch')}",
    }
    lines += ["", "## Details", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in details.items())]
    lines += ["", "## Use", "", "```python", "from brickzoo import Stage"]
    lines += ["from brickzoo.zoo import load_pretrained", ""]
    lines += ['pretrained = load_pretrained("path/to/this/folder")  # or its URL, or zoo:<name> when shipped']
    lines += [f'outputs = pretrained.model({{"{pre.input_name}": images}}, stage=Stage.INFERENCE)', "```", ""]
    return "\n".join(lines)


def headline_metrics(card: ModelCard) -> dict[str, float | None]:
    """``{"<head>/<metric>": value}`` of the :data:`HEADLINE_METRICS` of each head's task that the card holds.

    A head of another factory shows all its metrics.
    """
    shown: dict[str, float | None] = {}
    for name, head in card.heads.items():
        wanted = HEADLINE_METRICS.get(head.task)
        for key, value in card.metrics.values.items():
            head_name, _, metric = key.rpartition("/")
            if head_name == name and (wanted is None or metric in wanted):
                shown[key] = value
    return shown


def _backbone(config: Mapping[str, Any]) -> str:
    backbone = (config.get("model") or {}).get("backbone") or {}
    levels = backbone.get("out_indices")
    suffix = f" (levels {', '.join(str(v) for v in levels)})" if isinstance(levels, list) else ""
    return f"{backbone.get('name', '?')}{suffix}"


def cards_table(cards: Iterable[ModelCard]) -> str:
    """The zoo table (name, heads, backbone, input size, metrics, params, GFLOPs, ONNX ms, MB) in markdown.

    Heads are ``name (task, classes)``; metrics are each head's :data:`HEADLINE_METRICS` on the
    card's held-out set; params in millions; GFLOPs at batch 1 and the input size; ONNX ms the
    median latency at batch 1 on the machine that built the entry; MB the weight files.

    Example:
        >>> print(cards_table([]))
        | name | heads | backbone | input | metrics | params (M) | GFLOPs | ONNX ms | MB |
        |---|---|---|---|---|---|---|---|---|
    """
    lines = [
        "| name | heads | backbone | input | metrics | params (M) | GFLOPs | ONNX ms | MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for card in cards:
        heads = ", ".join(f"{n} ({h.task or h.factory}, {h.num_classes})" for n, h in card.heads.items())
        size = "x".join(str(v) for v in card.preprocessing.input_size)
        metrics = ", ".join(f"{k} {_number(v)}" for k, v in headline_metrics(card).items())
        ms = "n/a" if card.onnx_latency is None else f"{card.onnx_latency.milliseconds:.2f}"
        row = [f"`{card.name}`", heads, _backbone(card.config), size, metrics]
        row += [f"{card.num_params / 1e6:.2f}", _number(card.gflops), ms, f"{card.file_size_mb:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
