"""Zoo configs: loading, command-line overrides and validation before anything is built.

A config is a mapping with the sections ``model``, ``data``, ``train`` and ``export``. Only
registered factories and datasets can be named (nothing is imported by name), YAML is read with
``yaml.safe_load``, and every problem is reported at once, each with its key path.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from brickzoo.errors import ConfigError

CONFIG_DIR_NAME = "zoo_configs"

# head factory -> the dataset task whose classes it predicts
HEAD_TASKS = {
    "image_classification": "classification",
    "semantic_segmentation": "segmentation",
    "object_detection": "detection",
}

SECTIONS: dict[str, tuple[bool, str]] = {  # name -> (required, what it holds)
    "name": (False, "the run's name (default: the file name)"),
    "description": (False, "one line saying what the recipe is"),
    "model": (True, "preprocessor, backbone, optional neck and heads"),
    "data": (True, "dataset, its splits and loader settings"),
    "train": (False, "TrainConfig fields"),
    "export": (False, "ONNX export settings"),
}
MODEL_KEYS = {"preprocessor", "backbone", "neck", "heads"}
DATA_KEYS = {"dataset", "args", "train", "val", "test", "batch_size", "eval_batch_size", "num_workers"}
EXPORT_KEYS: dict[str, Any] = {"enabled": bool, "batch_size": int, "check_batch_size": int, "opset_version": int | None}
# arguments the recipe passes itself; a config may not set them
WIRED_ARGUMENTS = {
    "preprocessor": {"backbone", "images", "normalized"},
    "backbone": {"images", "features"},
    "neck": {"features"},
    "head": {"features"},
}


def repo_config_dir() -> Path:
    """The ``zoo_configs`` folder of the source tree brickzoo was installed from."""
    return Path(__file__).resolve().parents[2] / CONFIG_DIR_NAME


def config_dirs() -> list[Path]:
    """Where config names are looked up: ``./zoo_configs`` first, then the repository's."""
    dirs = [Path.cwd() / CONFIG_DIR_NAME, repo_config_dir()]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def list_configs() -> list[Path]:
    """Every ``*.yaml`` config below the config folders (searched recursively)."""
    found: list[Path] = []
    for folder in config_dirs():
        found.extend(sorted(folder.rglob("*.yaml")))
    return found


def find_config(name: str | Path) -> Path:
    """A config path from a path or a name (``shapes_multitask`` or ``shapes_multitask.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    candidates = [path.name, f"{path.name}.yaml"] if path.suffix != ".yaml" else [path.name]
    for folder in config_dirs():
        for candidate in candidates:
            matches = sorted(folder.rglob(candidate))
            if matches:
                return matches[0]
    known = [p.stem for p in list_configs()]
    close = difflib.get_close_matches(path.stem, known, n=3, cutoff=0.8)
    raise ConfigError(
        f"config file {str(name)!r} not found (looked for it as a path and in {[str(d) for d in config_dirs()]})"
        + (f"; did you mean {close}?" if close else f"; available: {known}")
    )


def read_config(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Read a config from a file (name or path) or copy a mapping; returns ``(config, origin)``."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), "<dict>"
    path = find_config(source)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections {sorted(SECTIONS)}, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return data, str(path)


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a copy of ``config``."""
    result = copy.deepcopy(config)
    problems = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override {override!r}: expected key.sub=value, e.g. train.epochs=3")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(f"override {override!r}: value is not valid YAML: {exc}")
            continue
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override {override!r}: {'.'.join(parts[: depth + 1])} is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError("invalid overrides:\n  " + "\n  ".join(problems))
    return result


# -- validation ------------------------------------------------------------------------------------
class Problems:
    """Collects every problem of a config with its key path."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def unknown_keys(self, path: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
        known = sorted(known)
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=2, cutoff=0.7)
                hint = f"did you mean {close}?" if close else f"expected one of {known}"
                self.add(f"{path}.{key}" if path else str(key), f"unknown key; {hint}")

    def raise_if_any(self) -> None:
        if self.items:
            count = len(self.items)
            raise ConfigError(
                f"{self.origin}: {count} problem{'s' * (count > 1)} in the config:\n  " + "\n  ".join(self.items)
            )


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def value_matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint; hints it cannot judge count as a match."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(value_matches(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return all(value_matches(v, item) for v in value)
    if origin in (dict, Mapping) or hint in (dict,):
        return isinstance(value, dict)
    if isinstance(hint, type) and hint.__module__ == "pathlib":
        return isinstance(value, str)
    return True


def check_arguments(
    problems: Problems, path: str, fn: Callable[..., Any], arguments: Mapping[str, Any], wired: set[str]
) -> None:
    """Bind ``arguments`` to ``fn``'s signature and check their types, adding every problem."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    parameters = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"]
    for key, value in arguments.items():
        if key in wired:
            problems.add(f"{path}.{key}", "is set by the recipe itself and cannot be given here")
        elif key not in parameters:
            if not takes_kwargs:
                close = difflib.get_close_matches(key, named, n=2, cutoff=0.7)
                hint = f"did you mean {close}?" if close else f"expected one of {sorted(named)}"
                problems.add(f"{path}.{key}", f"unknown argument of {fn.__qualname__}; {hint}")
        elif key in hints and not value_matches(value, hints[key]):
            problems.add(
                f"{path}.{key}",
                f"expected {_type_name(hints[key])}, got {type(value).__name__} {value!r}",
            )
    for name, parameter in parameters.items():
        if (
            parameter.default is inspect.Parameter.empty
            and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
            and name not in arguments
            and name not in wired
            and name != "self"
        ):
            problems.add(f"{path}.{name}", f"missing; {fn.__qualname__} needs it")


def section(problems: Problems, config: Mapping[str, Any], key: str, required: bool) -> dict[str, Any]:
    value = config.get(key)
    if value is None:
        if required:
            problems.add(key, "missing section")
        return {}
    if not isinstance(value, dict):
        problems.add(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return {}
    return value


def validate_config(config: Mapping[str, Any], origin: str = "<config>") -> None:
    """Check a whole config without building anything; raise one ConfigError listing every problem."""
    from brickzoo.bag_of_bricks._registry import get_factory, list_factories
    from brickzoo.training import TrainConfig
    from brickzoo.zoo._datasets import dataset_entries, dataset_problems

    problems = Problems(origin)
    problems.unknown_keys("", config, SECTIONS)
    for key in ("name", "description"):
        if key in config and not isinstance(config[key], str):
            problems.add(key, f"expected a string, got {type(config[key]).__name__}")

    model = section(problems, config, "model", required=True)
    problems.unknown_keys("model", model, MODEL_KEYS)

    def registered(path: str, name: Any, kind: str) -> Any:
        names = [e.name for e in list_factories(kind)]
        if not isinstance(name, str) or name not in names:
            close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
            problems.add(
                path, f"unknown {kind} {name!r}; " + (f"did you mean {close}?" if close else f"known: {names}")
            )
            return None
        return get_factory(name).factory

    def factory_section(key: str, settings: Any, default_factory: str) -> None:
        """``model.<key>``: a mapping whose optional ``factory`` is a registered ``key`` factory."""
        if not isinstance(settings, dict):
            problems.add(f"model.{key}", f"expected a mapping, got {type(settings).__name__}")
            return
        factory = registered(f"model.{key}.factory", settings.get("factory", default_factory), key)
        if factory:
            args = {k: v for k, v in settings.items() if k != "factory"}
            check_arguments(problems, f"model.{key}", factory, args, WIRED_ARGUMENTS[key])

    factory_section("preprocessor", model.get("preprocessor") or {}, "preprocessor")

    backbone = model.get("backbone")
    if not isinstance(backbone, dict) or "name" not in backbone:
        problems.add("model.backbone", "missing or not a mapping with a 'name' (e.g. name: timm:resnet10t)")
    else:
        factory = registered("model.backbone.factory", backbone.get("factory", "backbone"), "backbone")
        if factory:
            args = {k: v for k, v in backbone.items() if k != "factory"}
            check_arguments(problems, "model.backbone", factory, args, WIRED_ARGUMENTS["backbone"])
            _check_backbone_name(problems, backbone["name"])

    neck = model.get("neck")
    if neck is not None:
        factory_section("neck", neck, "fpn")

    heads = model.get("heads")
    if not isinstance(heads, dict) or not heads:
        problems.add("model.heads", "expected a mapping of at least one head name to its settings")
        heads = {}
    tasks_needed: dict[str, str] = {}
    for head_name, head in heads.items():
        path = f"model.heads.{head_name}"
        if not isinstance(head, dict):
            problems.add(path, f"expected a mapping with a 'factory', got {type(head).__name__}")
            continue
        factory = registered(f"{path}.factory", head.get("factory"), "head")
        source = head.get("features", "neck" if neck is not None else "backbone")
        if source not in ("backbone", "neck") or (source == "neck" and neck is None):
            problems.add(f"{path}.features", f"expected 'backbone' or 'neck' (when a neck is set), got {source!r}")
        if factory:
            task = HEAD_TASKS.get(head["factory"])
            if task:
                tasks_needed[head_name] = task
            args = {k: v for k, v in head.items() if k not in ("factory", "features")}
            automatic = {key for key in ("num_classes", "class_names") if args.get(key, "auto") == "auto"}
            for key in automatic:
                args.pop(key, None)
            check_arguments(problems, path, factory, args, WIRED_ARGUMENTS["head"] | automatic)
            if "num_classes" not in head and task is None:
                problems.add(f"{path}.num_classes", "missing; this head's task is unknown, so it cannot be 'auto'")

    data = section(problems, config, "data", required=True)
    problems.unknown_keys("data", data, DATA_KEYS)
    dataset = data.get("dataset")
    known_datasets = sorted(dataset_entries())
    if dataset not in known_datasets:
        close = difflib.get_close_matches(str(dataset), known_datasets, n=3, cutoff=0.5)
        problems.add(
            "data.dataset",
            f"unknown dataset {dataset!r}; " + (f"did you mean {close}?" if close else f"known: {known_datasets}"),
        )
    else:
        for path, message in dataset_problems(dataset, data, tasks_needed):
            problems.add(path, message)
    for key in ("batch_size", "eval_batch_size", "num_workers"):
        value = data.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < (key != "num_workers")
        ):
            problems.add(f"data.{key}", f"expected an integer >= {int(key != 'num_workers')}, got {value!r}")

    train = section(problems, config, "train", required=False)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    problems.unknown_keys("train", train, fields)
    known_train = {k: v for k, v in train.items() if k in fields}
    try:
        TrainConfig.from_dict(known_train)
    except ConfigError as exc:
        for part in str(exc).removeprefix("TrainConfig: ").split("; "):
            problems.add("train", part)

    export = section(problems, config, "export", required=False)
    problems.unknown_keys("export", export, EXPORT_KEYS)
    for key, hint in EXPORT_KEYS.items():
        if key in export and not value_matches(export[key], hint):
            problems.add(f"export.{key}", f"expected {_type_name(hint)}, got {export[key]!r}")
    problems.raise_if_any()


def _check_backbone_name(problems: Problems, name: Any) -> None:
    from brickzoo.bag_of_bricks.backbones import check_backbone_name

    if not isinstance(name, str):
        problems.add("model.backbone.name", f"expected a string such as 'timm:resnet10t', got {name!r}")
        return
    message = check_backbone_name(name)
    if message:
        problems.add("model.backbone.name", message)


def load_config(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> tuple[dict[str, Any], str]:
    """Read, override and validate a config; returns ``(config, origin)``.

    Raises:
        ConfigError: listing every problem, each with its key path.
    """
    config, origin = read_config(source)
    config = apply_overrides(config, overrides)
    validate_config(config, origin)
    return config, origin
