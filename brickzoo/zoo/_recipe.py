"""Build a whole recipe from a validated zoo config: model, datasets, loaders, training settings."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from brickzoo._collection import BrickCollection
from brickzoo.errors import BrickDefinitionError, ConfigError
from brickzoo.zoo._config import HEAD_TASKS, load_config
from brickzoo.zoo._datasets import build_datasets


@dataclass
class Recipe:
    """Everything a zoo config describes, built.

    Attributes:
        name: the run name.
        origin: the file (or ``<dict>``) the config came from.
        config: the validated config, overrides applied.
        model: the brick collection.
        datasets: ``{"train": ..., "val": ..., "test": ...}`` as the config gives them.
        train_config: the :class:`~brickzoo.training.TrainConfig`.
        class_names: ``{head name: class names}``.
    """

    name: str
    origin: str
    config: dict[str, Any]
    model: BrickCollection
    datasets: dict[str, Dataset[Any]]
    train_config: Any
    class_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.config["data"].get("batch_size", 32))

    @property
    def eval_batch_size(self) -> int:
        return int(self.config["data"].get("eval_batch_size") or self.batch_size)

    @property
    def export_settings(self) -> dict[str, Any]:
        settings = {"enabled": True, "batch_size": 2, "check_batch_size": 3, "opset_version": None}
        settings.update(self.config.get("export") or {})
        return settings

    @property
    def drop_last(self) -> bool:
        """``data.drop_last`` (default true): the training loader drops its last incomplete batch.

        A last batch of one image breaks BatchNorm in training mode; validation and test loaders
        never drop anything.
        """
        return bool(self.config["data"].get("drop_last", True))

    def loader(self, split: str, shuffle: bool | None = None, batch_size: int | None = None) -> DataLoader[Any]:
        """A seeded loader over one split.

        ``train`` is the training loader unless ``shuffle=False``: shuffled, and dropping its last
        incomplete batch when ``data.drop_last`` is true. Every other loader keeps its order
        and every sample.

        Raises:
            ConfigError: the split is not in the config, or the training loader would yield no batch
                (fewer samples than ``batch_size`` with ``drop_last``).
        """
        from brickzoo.data import make_loader

        if split not in self.datasets:
            raise ConfigError(f"{self.origin}: no {split!r} split in data (have {sorted(self.datasets)})")
        is_train = split == "train"
        shuffle = is_train if shuffle is None else shuffle
        drop_last = is_train and shuffle and self.drop_last
        batch_size = batch_size or (self.batch_size if is_train else self.eval_batch_size)
        dataset = self.datasets[split]
        size = len(dataset) if isinstance(dataset, Sized) else None
        if drop_last and size is not None and size < batch_size:
            raise ConfigError(
                f"{self.origin}: the training split has {size} samples, fewer than one batch "
                f"(data.batch_size={batch_size}), and data.drop_last is true, so an epoch would hold no batch; "
                "lower data.batch_size, add samples, or set data.drop_last=false"
            )
        return make_loader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=int(self.config["data"].get("num_workers", 0)),
            seed=self.train_config.seed,
            drop_last=drop_last,
        )

    def evaluation_split(self) -> str:
        """The split to evaluate on: ``test`` if there is one, else ``val``, else ``train``."""
        return next(s for s in ("test", "val", "train") if s in self.datasets)

    def example_inputs(self, batch_size: int, split: str | None = None) -> dict[str, torch.Tensor]:
        """The model inputs of the first ``batch_size`` samples of a split (for export and checks)."""
        loader = self.loader(split or self.evaluation_split(), shuffle=False, batch_size=batch_size)
        batch = next(iter(loader))
        needed = self.model.required_inputs("MODEL")
        return {name: batch[name] for name in needed}


def _call(factory: Any, arguments: Mapping[str, Any]) -> Any:
    accepted = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    return factory(**{k: v for k, v in arguments.items() if takes_kwargs or k in accepted})


def _build(path: str, settings: Mapping[str, Any], default_factory: str, **wired: Any) -> Any:
    """Call the registered factory of the config section at ``path`` with its settings and the
    recipe's ``wired`` arguments; a factory's refusal becomes a ConfigError naming ``path``."""
    from brickzoo.bag_of_bricks._registry import get_factory

    arguments = dict(settings)
    factory = get_factory(arguments.pop("factory", default_factory)).factory
    try:
        return _call(factory, {**arguments, **wired})
    except BrickDefinitionError as error:
        raise ConfigError(f"{path}: {error}") from error


def build_model(
    config: Mapping[str, Any], datasets: Mapping[str, Dataset[Any]]
) -> tuple[BrickCollection, dict[str, list[str]]]:
    """The brick collection of a validated config; ``num_classes: auto`` takes the dataset's classes."""
    model = config["model"]
    backbone = _build("model.backbone", model["backbone"], "backbone", images="normalized", output="features")
    preprocessor = _build(
        "model.preprocessor",
        model.get("preprocessor") or {},
        "preprocessor",
        backbone=backbone,
        images="images",
        normalized="normalized",
    )
    bricks: dict[str, Any] = {**preprocessor, **backbone}
    neck = None
    if model.get("neck") is not None:
        neck = _build("model.neck", model["neck"], "fpn", features=backbone)
        bricks.update(neck)
    train_set = datasets["train"]
    tasks: Mapping[str, Sequence[str]] = getattr(train_set, "tasks", {})
    class_names: dict[str, list[str]] = {}
    for head_name, head_cfg in model["heads"].items():
        head_cfg = dict(head_cfg)
        factory_name = head_cfg.pop("factory")
        source = head_cfg.pop("features", "neck" if neck is not None else "backbone")
        task = HEAD_TASKS.get(factory_name)
        names = head_cfg.get("class_names", "auto")
        if names == "auto":
            names = list(tasks[task]) if task is not None and task in tasks else None
        if head_cfg.get("num_classes", "auto") == "auto":
            if names is None:
                raise ConfigError(f"model.heads.{head_name}.num_classes: 'auto' needs a dataset with {task} classes")
            head_cfg["num_classes"] = len(names)
        if names is not None:
            head_cfg["class_names"] = names
            class_names[head_name] = list(names)
        if head_name in bricks:
            raise ConfigError(f"model.heads.{head_name}: the name is taken by the {head_name!r} brick; rename the head")
        head_cfg["features"] = neck if source == "neck" else backbone
        bricks[head_name] = _build(f"model.heads.{head_name}", head_cfg, factory_name)
    return BrickCollection(bricks), class_names


def build_recipe(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Recipe:
    """Validate a config (path, name or dict, plus ``key.sub=value`` overrides) and build it.

    The datasets and the model are built with python's, numpy's and torch's generators seeded with
    ``train.seed`` (default 0), so two builds of one config hold identical initial weights; the
    caller's generators are left as they were.

    Raises:
        ConfigError: listing every problem of the config, each with its key path, before
            anything is built.
    """
    from brickzoo.training import TrainConfig, seeded

    config, origin = load_config(source, overrides)
    train_config = TrainConfig.from_dict(config.get("train") or {})
    with seeded(train_config.seed):  # the same config and seed build the same datasets and initial weights
        datasets = build_datasets(config["data"]["dataset"], config["data"])
        model, class_names = build_model(config, datasets)
    return Recipe(
        name=str(config.get("name") or Path(origin).stem),
        origin=origin,
        config=config,
        model=model,
        datasets=datasets,
        train_config=train_config,
        class_names=class_names,
    )
