"""Zoo configs: loading, command-line overrides and validation before anything is built.

A config is a mapping with the sections ``model``, ``data``, ``train`` and ``export``. Only
registered factories and datasets can be named (nothing is imported by name), YAML is read with
``yaml.safe_load``, and every problem is reported at once, each with its key path.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from brickzoo.errors import ConfigError
from brickzoo.zoo._datasets import dataset_entries, dataset_problems
from brickzoo.zoo._pipelines import check_pipelines
from brickzoo.zoo._validate import Problems, check_arguments, section, type_name, value_matches

CONFIG_DIR_NAME = "zoo_configs"
CONFIG_PACKAGE = "brickzoo.zoo_configs"  # the top-level zoo_configs/ folder, shipped in the wheel (setup.py)

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
DATA_KEYS = {
    "dataset",
    "args",
    "train",
    "val",
    "test",
    "image_size",
    "transforms",
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "drop_last",
}
EXPORT_KEYS: dict[str, Any] = {"enabled": bool, "batch_size": int, "check_batch_size": int, "opset_version": int | None}
# arguments the recipe passes itself; a config may not set them
WIRED_ARGUMENTS = {
    "preprocessor": {"backbone", "images", "normalized"},
    "backbone": {"images", "output"},
    "neck": {"features"},
    "head": {"features"},
}


def packaged_config_dir() -> Path:
    """The zoo configs shipped with brickzoo: the package ``brickzoo.zoo_configs``.

    In a source checkout (also an editable install) that package is the top-level
    ``zoo_configs/`` folder; in an installed wheel it is a folder inside the installed package.
    """
    return Path(str(resources.files(CONFIG_PACKAGE)))


def config_dirs() -> list[Path]:
    """Where config names are looked up: ``./zoo_configs`` first, then the configs shipped with brickzoo."""
    dirs = [Path.cwd() / CONFIG_DIR_NAME, packaged_config_dir()]
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
    """A config path from a path or a name (``shapes_multitask`` or ``shapes_multitask.yaml``).

    A name is looked up in :func:`config_dirs`, in that order; within a folder the shallowest
    match wins. A path with a folder part (``my_configs/a.yaml``) must exist as given: it is
    never replaced by a shipped config of the same name.

    Raises:
        ConfigError: no such file or config name; the message lists close names or all of them.
    """
    path = Path(name)
    if path.is_file():
        return path
    if len(path.parts) > 1:
        raise ConfigError(f"config file {str(name)!r} not found (expected an existing YAML file at that path)")
    candidates = [path.name, f"{path.name}.yaml"] if path.suffix != ".yaml" else [path.name]
    for folder in config_dirs():
        for candidate in candidates:
            matches = sorted(folder.rglob(candidate), key=lambda p: (len(p.parts), str(p)))
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
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
def validate_config(config: Mapping[str, Any], origin: str = "<config>") -> None:
    """Check a whole config without building anything; raise one ConfigError listing every problem."""
    problems = Problems(origin)
    problems.unknown_keys("", config, SECTIONS)
    for key in ("name", "description"):
        if key in config and not isinstance(config[key], str):
            problems.add(key, f"expected a string, got {type(config[key]).__name__}")
    tasks_needed = _check_model(problems, section(problems, config, "model", required=True))
    _check_data(problems, section(problems, config, "data", required=True), tasks_needed)
    _check_train(problems, section(problems, config, "train", required=False))
    export = section(problems, config, "export", required=False)
    problems.unknown_keys("export", export, EXPORT_KEYS)
    for key, hint in EXPORT_KEYS.items():
        if key in export and not value_matches(export[key], hint):
            problems.add(f"export.{key}", f"expected {type_name(hint)}, got {export[key]!r}")
    problems.raise_if_any()


def _registered(problems: Problems, path: str, name: Any, kind: str) -> Any:
    """The factory registered as ``name`` among the ``kind`` factories; None (and a problem) if there is none."""
    from brickzoo.bag_of_bricks._registry import get_factory, list_factories  # imports timm: only when validating

    names = [e.name for e in list_factories(kind)]
    if not isinstance(name, str) or name not in names:
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        problems.add(path, f"unknown {kind} {name!r}; " + (f"did you mean {close}?" if close else f"known: {names}"))
        return None
    return get_factory(name).factory


def _check_factory_section(problems: Problems, key: str, settings: Any, default_factory: str) -> None:
    """``model.<key>``: a mapping whose optional ``factory`` is a registered ``key`` factory."""
    if not isinstance(settings, dict):
        problems.add(f"model.{key}", f"expected a mapping, got {type(settings).__name__}")
        return
    factory = _registered(problems, f"model.{key}.factory", settings.get("factory", default_factory), key)
    if factory:
        args = {k: v for k, v in settings.items() if k != "factory"}
        check_arguments(problems, f"model.{key}", factory, args, WIRED_ARGUMENTS[key])


def _check_model(problems: Problems, model: Mapping[str, Any]) -> dict[str, str]:
    """Check the ``model`` section; returns ``{head name: task}`` of the heads whose task is known."""
    problems.unknown_keys("model", model, MODEL_KEYS)
    _check_factory_section(problems, "preprocessor", model.get("preprocessor") or {}, "preprocessor")
    backbone = model.get("backbone")
    if not isinstance(backbone, dict) or "name" not in backbone:
        problems.add("model.backbone", "missing or not a mapping with a 'name' (e.g. name: timm:resnet10t)")
    else:
        factory = _registered(problems, "model.backbone.factory", backbone.get("factory", "backbone"), "backbone")
        if factory:
            args = {k: v for k, v in backbone.items() if k != "factory"}
            check_arguments(problems, "model.backbone", factory, args, WIRED_ARGUMENTS["backbone"])
            _check_backbone_name(problems, backbone["name"])
    neck = model.get("neck")
    if neck is not None:
        _check_factory_section(problems, "neck", neck, "fpn")
    heads = model.get("heads")
    if not isinstance(heads, dict) or not heads:
        problems.add("model.heads", "expected a mapping of at least one head name to its settings")
        heads = {}
    tasks_needed: dict[str, str] = {}
    for head_name, head in heads.items():
        task = _check_head(problems, f"model.heads.{head_name}", head, has_neck=neck is not None)
        if task:
            tasks_needed[head_name] = task
    return tasks_needed


def _check_head(problems: Problems, path: str, head: Any, has_neck: bool) -> str | None:
    """Check one ``model.heads.<name>`` section; returns the task of its factory, if known."""
    if not isinstance(head, dict):
        problems.add(path, f"expected a mapping with a 'factory', got {type(head).__name__}")
        return None
    factory = _registered(problems, f"{path}.factory", head.get("factory"), "head")
    source = head.get("features", "neck" if has_neck else "backbone")
    if source not in ("backbone", "neck") or (source == "neck" and not has_neck):
        problems.add(f"{path}.features", f"expected 'backbone' or 'neck' (when a neck is set), got {source!r}")
    if not factory:
        return None
    task = HEAD_TASKS.get(head["factory"])
    args = {k: v for k, v in head.items() if k not in ("factory", "features")}
    automatic = {key for key in ("num_classes", "class_names") if args.get(key, "auto") == "auto"}
    for key in automatic:
        args.pop(key, None)
    check_arguments(problems, path, factory, args, WIRED_ARGUMENTS["head"] | automatic)
    if "num_classes" not in head and task is None:
        problems.add(f"{path}.num_classes", "missing; this head's task is unknown, so it cannot be 'auto'")
    return task


def _check_data(problems: Problems, data: Mapping[str, Any], tasks_needed: Mapping[str, str]) -> None:
    """Check the ``data`` section: the dataset and its splits, the loader settings."""
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
        dataset_problems(problems, dataset, data, tasks_needed)
        check_pipelines(problems, dataset, data)
    for key in ("batch_size", "eval_batch_size", "num_workers"):
        value = data.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < (key != "num_workers")
        ):
            problems.add(f"data.{key}", f"expected an integer >= {int(key != 'num_workers')}, got {value!r}")
    if "drop_last" in data and not isinstance(data["drop_last"], bool):
        problems.add(
            "data.drop_last", f"expected true or false, got {type(data['drop_last']).__name__} {data['drop_last']!r}"
        )


def _check_train(problems: Problems, train: Mapping[str, Any]) -> None:
    """Check the ``train`` section against the fields of :class:`~brickzoo.training.TrainConfig`."""
    from brickzoo.training import TrainConfig

    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    problems.unknown_keys("train", train, fields)
    for message in TrainConfig.value_problems({k: v for k, v in train.items() if k in fields}):
        problems.add("train", message)


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
