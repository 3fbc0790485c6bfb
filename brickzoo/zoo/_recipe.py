"""Build a whole recipe from a validated zoo config: model, data pipelines, datasets, loaders, training settings.

A recipe built with ``with_data=False`` reads no dataset when its config names every head's
classes (as :attr:`Recipe.resolved_config` does, the config training writes to ``config.json``):
that is what prediction and export need, the model, the eval pipeline and the input size.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from brickzoo._collection import BrickCollection
from brickzoo.errors import BrickDefinitionError, BrickzooError, ConfigError, DataWarning
from brickzoo.zoo._config import HEAD_TASKS, load_config
from brickzoo.zoo._datasets import build_datasets, dataset_entries, split_arguments
from brickzoo.zoo._pipelines import TRANSFORM_KEYS, DataPipelines, data_pipelines

if TYPE_CHECKING:
    from torchvision.transforms import v2

RESOLVE_HINT = (
    "give num_classes (and class_names) in the config, or build from the run folder's config.json, which "
    "training writes with every 'auto' resolved"
)


@dataclass
class Recipe:
    """Everything a zoo config describes, built.

    Attributes:
        name: the run name.
        origin: the file (or ``<dict>``) the config came from.
        config: the validated config, overrides applied.
        model: the brick collection.
        datasets: ``{"train": ..., "val": ..., "test": ...}`` as the config gives them, each
            behind its pipeline (a :class:`~brickzoo.data.transforms.TransformedDataset`; a
            split whose spec list is ``[]`` is left as it is). Empty when built without data.
        train_config: the :class:`~brickzoo.training.TrainConfig`.
        class_names: ``{head name: class names}``.
        pipelines: the transform specs (defaults filled in), the input size and resize mode.
        transforms: ``{"train": pipeline, "eval": pipeline}``, built ``v2.Compose`` (an identity
            pipeline for ``[]``).
        resolved_config: ``config`` with nothing left to the data: every head's ``num_classes``
            and ``class_names`` as the dataset gave them, ``data.transforms`` with the defaults
            written out and ``data.image_size`` set (when known). JSON-ready; what training
            writes as ``config.json``, and what ``build_recipe(..., with_data=False)`` rebuilds
            the model from without any dataset.
    """

    name: str
    origin: str
    config: dict[str, Any]
    model: BrickCollection
    datasets: dict[str, Dataset[Any]]
    train_config: Any
    pipelines: DataPipelines
    transforms: dict[str, v2.Compose]
    resolved_config: dict[str, Any]
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

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The model's input size ``(height, width)`` (see :mod:`brickzoo.zoo._pipelines`); None when unknown."""
        return self.pipelines.input_size

    @property
    def resize_mode(self) -> str:
        """How the eval pipeline resizes: letterbox, stretch, center_crop, none or custom (see DataPipelines)."""
        return self.pipelines.resize_mode

    @property
    def eval_transform(self) -> v2.Compose:
        """The eval pipeline (val/test splits, prediction): a v2 transform over sample dicts of tv_tensors.

        Apply it to one sample with :func:`brickzoo.data.transforms.apply_transforms`; map
        predictions back with :func:`brickzoo.data.transforms.pipeline_letterbox_params`.
        """
        return self.transforms["eval"]

    @property
    def train_transform(self) -> v2.Compose:
        """The training split's augmentation pipeline."""
        return self.transforms["train"]

    def loader(self, split: str, shuffle: bool | None = None, batch_size: int | None = None) -> DataLoader[Any]:
        """A seeded loader over one split.

        ``train`` is the training loader unless ``shuffle=False``: shuffled, and dropping its last
        incomplete batch when ``data.drop_last`` is true. Every other loader keeps its order
        and every sample.

        Raises:
            ConfigError: the split is not in the config (or the recipe was built without data), or
                the training loader would yield no batch (fewer samples than ``batch_size`` with
                ``drop_last``).
        """
        from brickzoo.data import make_loader

        if split not in self.datasets:
            if not self.datasets:
                raise ConfigError(
                    f"{self.origin}: the recipe was built without its data (build_recipe(..., with_data=False)), "
                    f"so it has no {split!r} loader"
                )
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
        """The model inputs of the first ``batch_size`` samples of a split (for export and checks).

        Without data (``with_data=False``), ``images`` are random pixels at :attr:`input_size`
        drawn from a generator seeded with ``train.seed``.

        Raises:
            ConfigError: built without data and the input size is unknown, or the model reads
                more than ``images``.
        """
        needed = self.model.required_inputs("MODEL")
        if self.datasets:
            loader = self.loader(split or self.evaluation_split(), shuffle=False, batch_size=batch_size)
            batch = next(iter(loader))
            return {name: batch[name] for name in needed}
        if self.input_size is None or needed != ["images"]:
            raise ConfigError(
                f"{self.origin}: built without data, example inputs are random images at the input size, but "
                f"the input size is {self.input_size} and the model reads {needed}; set data.image_size"
            )
        generator = torch.Generator().manual_seed(self.train_config.seed)
        return {"images": torch.rand(batch_size, 3, *self.input_size, generator=generator)}  # [B, 3, H, W]


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


def head_classes(
    config: Mapping[str, Any], tasks: Mapping[str, Sequence[str]] | None, why: str = "and no training dataset was read"
) -> dict[str, tuple[int, list[str] | None]]:
    """``{head name: (num_classes, class names or None)}``, each ``auto`` taken from ``tasks``.

    Args:
        config: a validated config.
        tasks: the training dataset's class names per task (``dataset.tasks``); None when no
            dataset was read.
        why: why ``tasks`` is None, for the error message.

    Raises:
        ConfigError: listing every head whose ``num_classes: auto`` cannot be resolved, with what
            it needs and how to give it.
    """
    resolved: dict[str, tuple[int, list[str] | None]] = {}
    problems = []
    for head_name, head in config["model"]["heads"].items():
        task = HEAD_TASKS.get(head["factory"])
        names = head.get("class_names", "auto")
        if names == "auto":
            names = list(tasks[task]) if tasks is not None and task is not None and task in tasks else None
        number = head.get("num_classes", "auto")
        if number == "auto" and names is None:
            reason = why if tasks is None else f"and the training dataset names no {task} classes"
            problems.append(
                f"model.heads.{head_name}.num_classes: 'auto' needs the {task} classes of the training dataset, "
                f"{reason}; {RESOLVE_HINT}"
            )
            continue
        resolved[head_name] = (len(names) if names is not None and number == "auto" else int(number), names)
    if problems:
        raise ConfigError("cannot resolve the classes of the heads:\n  " + "\n  ".join(problems))
    return resolved


def build_model(
    config: Mapping[str, Any], datasets: Mapping[str, Dataset[Any]] | None = None
) -> tuple[BrickCollection, dict[str, list[str]]]:
    """The brick collection of a validated config, and ``{head name: class names}``.

    ``num_classes: auto`` and ``class_names: auto`` take the classes of ``datasets["train"]``
    (its ``tasks``); with ``datasets=None`` no dataset is read, so every head must give its
    ``num_classes`` (a resolved config does).

    Raises:
        ConfigError: a head's classes cannot be resolved (every such head listed), or a factory
            refuses its settings (naming the key).
    """
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
    tasks = getattr(datasets["train"], "tasks", {}) if datasets is not None else None
    classes = head_classes(config, tasks)
    class_names: dict[str, list[str]] = {}
    for head_name, head_cfg in model["heads"].items():
        head_cfg = dict(head_cfg)
        factory_name = head_cfg.pop("factory")
        source = head_cfg.pop("features", "neck" if neck is not None else "backbone")
        head_cfg["num_classes"], names = classes[head_name]
        head_cfg.pop("class_names", None)
        if names is not None:
            head_cfg["class_names"] = names
            class_names[head_name] = list(names)
        if head_name in bricks:
            raise ConfigError(f"model.heads.{head_name}: the name is taken by the {head_name!r} brick; rename the head")
        head_cfg["features"] = neck if source == "neck" else backbone
        bricks[head_name] = _build(f"model.heads.{head_name}", head_cfg, factory_name)
    return BrickCollection(bricks), class_names


def resolve_config(
    config: Mapping[str, Any], classes: Mapping[str, tuple[int, list[str] | None]], pipelines: DataPipelines
) -> dict[str, Any]:
    """``config`` with the heads' classes, the transform specs and the input size written out (JSON types only).

    Example:
        >>> from brickzoo.zoo import build_recipe
        >>> recipe = build_recipe("shapes_multitask", ["data.train.num_samples=4"])  # doctest: +SKIP
        >>> recipe.resolved_config["model"]["heads"]["classify"]["num_classes"]  # doctest: +SKIP
        4
    """
    resolved: dict[str, Any] = json.loads(json.dumps(config))
    for head_name, (number, names) in classes.items():
        head = resolved["model"]["heads"][head_name]
        head["num_classes"] = number
        head.pop("class_names", None)  # 'auto' with no names known: the head has none
        if names is not None:
            head["class_names"] = list(names)
    data = resolved["data"]
    data["transforms"] = json.loads(json.dumps(pipelines.specs))
    if pipelines.input_size is not None:
        data["image_size"] = list(pipelines.input_size)
    return resolved


def _wrap(
    datasets: dict[str, Dataset[Any]], pipelines: DataPipelines, transforms: Mapping[str, Any], seed: int
) -> None:
    """Put each split behind its pipeline: ``train`` the train pipeline, ``val``/``test`` the eval one."""
    from brickzoo.data.transforms import TransformedDataset

    for split, dataset in datasets.items():
        key = "train" if split == "train" else "eval"
        if pipelines.specs[key]:
            datasets[split] = TransformedDataset(dataset, transforms[key], seed=seed)


def _training_tasks(config: Mapping[str, Any], origin: str) -> tuple[Mapping[str, Sequence[str]] | None, str]:
    """The training dataset's ``tasks``, read only when some head leaves its classes to it; and why it is None.

    When the data cannot be read but every head gives ``num_classes``, the heads go without class
    names (predictions name classes by index) and a DataWarning says so.
    """
    heads = config["model"]["heads"]
    to_data = [n for n, h in heads.items() if "auto" in (h.get("num_classes", "auto"), h.get("class_names", "auto"))]
    if not to_data:
        return None, "and no training dataset was read"
    name, data = config["data"]["dataset"], config["data"]
    try:
        dataset = dataset_entries()[name].factory(**(split_arguments(name, data, "train") or {}))
    except (BrickzooError, OSError) as error:
        why = f"and the training data cannot be read ({type(error).__name__}: {error})"
        if all(heads[n].get("num_classes", "auto") != "auto" for n in to_data):
            warnings.warn(
                f"{origin}: heads {to_data} take their class_names from the training data, which cannot be read "
                f"({type(error).__name__}: {error}); they go without class names. {RESOLVE_HINT.capitalize()}",
                DataWarning,
                stacklevel=3,
            )
        return None, why
    return getattr(dataset, "tasks", {}), ""


def build_recipe(
    source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *, with_data: bool = True
) -> Recipe:
    """Validate a config (path, name or dict, plus ``key.sub=value`` overrides) and build it.

    The datasets and the model are built with python's, numpy's and torch's generators seeded with
    ``train.seed`` (default 0), so two builds of one config hold identical initial weights; the
    caller's generators are left as they were. Each split is put behind its pipeline
    (``data.transforms``), seeded with ``train.seed``.

    Args:
        source: a config name, path (YAML, or a run folder's ``config.json``) or mapping.
        overrides: ``key.sub=value`` overrides, values parsed as YAML.
        with_data: build the datasets. With False (prediction, export) no dataset is built; a
            head left on ``auto`` then takes its classes from the training data if it can be
            read (the only dataset touched), otherwise ConfigError says what to give.

    Raises:
        ConfigError: listing every problem of the config, each with its key path, before
            anything is built; or a head whose classes cannot be resolved.
    """
    from brickzoo.training import TrainConfig, seeded

    config, origin = load_config(source, overrides)
    train_config = TrainConfig.from_dict(config.get("train") or {})
    pipelines = data_pipelines(config["data"]["dataset"], config["data"])
    transforms = {key: pipelines.build(key, origin) for key in TRANSFORM_KEYS}
    with seeded(train_config.seed):  # the same config and seed build the same datasets...
        datasets = build_datasets(config["data"]["dataset"], config["data"]) if with_data else {}
    _wrap(datasets, pipelines, transforms, train_config.seed)
    tasks, why = (getattr(datasets["train"], "tasks", {}), "") if with_data else _training_tasks(config, origin)
    try:
        classes = head_classes(config, tasks, why)
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from None
    resolved = resolve_config(config, classes, pipelines)
    with seeded(train_config.seed):  # ...and the same initial weights, with or without data
        model, class_names = build_model(resolved, None)
    return Recipe(
        name=str(config.get("name") or Path(origin).stem),
        origin=origin,
        config=config,
        model=model,
        datasets=datasets,
        train_config=train_config,
        class_names=class_names,
        pipelines=pipelines,
        transforms=transforms,
        resolved_config=resolved,
    )
