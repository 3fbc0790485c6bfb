"""Fine-tuning: load what fits from earlier weights, freeze bricks, per-brick learning rates."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brickzoo._bricks import BrickModule
from brickzoo._collection import BrickCollection
from brickzoo._weights import LoadReport, load_bricks
from brickzoo.errors import ConfigError, WeightsError
from brickzoo.training._checkpoint import CHECKPOINT_DIR, TRAINER_STATE, find_checkpoint
from brickzoo.training._config import TrainConfig


def matches(path: str, pattern: str) -> bool:
    """Whether a brick path matches a glob pattern, directly or through a collection holding it.

    ``fnmatch`` rules (``*`` also spans ``/``), case-sensitive. ``"backbone"`` matches the brick
    ``backbone`` and every brick inside a collection called ``backbone``; ``"head0/*"`` every
    brick under ``head0``.

    >>> matches("backbone/conv", "backbone"), matches("head0/classify", "head*/classify")
    (True, True)
    """
    parts = path.split("/")
    return any(fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _check_patterns(collection: BrickCollection, patterns: Iterable[str], what: str) -> None:
    paths = [path for path, _ in collection.named_bricks()]
    unmatched = [p for p in patterns if not any(matches(path, p) for path in paths)]
    if unmatched:
        raise ConfigError(
            f"{what}: pattern(s) {unmatched} match no brick; the brick paths are {paths} "
            "(fnmatch patterns such as 'backbone', 'backbone/*' or 'head*/classify')"
        )


def freeze(collection: BrickCollection, patterns: str | Iterable[str]) -> list[str]:
    """Freeze the module bricks whose path matches one of the patterns.

    A frozen brick gets ``trainable = False``: its parameters stop requiring gradients and it
    stays in eval mode (dropout off, normalisation statistics fixed) even when the collection is
    switched to ``.train()``. Gradients still flow *through* it to earlier bricks. Bricks without
    a module (metrics, visualizations) are left as they are.

    Args:
        collection: the bricks; changed in place.
        patterns: one pattern or several, matched as :func:`matches` describes.

    Returns:
        The paths of the bricks frozen, in collection order.

    Raises:
        ConfigError: a pattern matches no brick; the message lists the brick paths.

    Example:
        >>> from brickzoo import BrickTrainable
        >>> bricks = BrickCollection({"backbone": BrickTrainable(nn.Linear(2, 2), ["x"], ["y"])})
        >>> freeze(bricks, "backbone"), bricks["backbone"].model.weight.requires_grad
        (['backbone'], False)
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    _check_patterns(collection, patterns, "freeze")
    frozen = []
    for path, brick in collection.named_bricks():
        if not isinstance(brick, BrickModule) or not any(matches(path, p) for p in patterns):
            continue
        brick.trainable = False
        if isinstance(brick.model, nn.Module):
            brick.model.requires_grad_(False)
        brick.train(brick.training)  # BrickModule.train puts a non-trainable model in eval mode
        frozen.append(path)
    return frozen


def param_groups(
    collection: BrickCollection, lr: float, weight_decay: float, lr_multipliers: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Optimizer param groups of the parameters that require gradients.

    Each brick's learning rate is ``lr`` times the multiplier of the first pattern of
    ``lr_multipliers`` that matches its path (1 when none does). Tensors of one dimension
    (biases, normalisation weights) get no weight decay. One group per (multiplier, decay) pair,
    in the order the bricks come; each group carries ``lr_multiplier`` and ``bricks`` (the paths).

    Raises:
        ConfigError: a pattern matches no brick, or no parameter requires gradients.
    """
    lr_multipliers = dict(lr_multipliers or {})
    _check_patterns(collection, lr_multipliers, "lr_multipliers")
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    seen: set[int] = set()
    for path, brick in collection.named_bricks():
        multiplier = next((m for p, m in lr_multipliers.items() if matches(path, p)), 1.0)
        for param in brick.parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = param.ndim > 1
            group = groups.setdefault(
                (multiplier, decay),
                {
                    "params": [],
                    "lr": lr * multiplier,
                    "weight_decay": weight_decay if decay else 0.0,
                    "lr_multiplier": multiplier,
                    "bricks": [],
                },
            )
            group["params"].append(param)
            if path not in group["bricks"]:
                group["bricks"].append(path)
    if not groups:
        frozen = [p for p, b in collection.named_bricks() if isinstance(b, BrickModule) and not b.trainable]
        raise ConfigError(
            f"nothing to train: no parameter of the collection requires gradients (frozen bricks: {frozen}); "
            "freeze fewer bricks or add a trainable one"
        )
    return list(groups.values())


def build_optimizer(collection: BrickCollection, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over :func:`param_groups` (``lr_multipliers`` applied)."""
    groups = param_groups(collection, config.lr, config.weight_decay, config.lr_multipliers)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def weights_folder(weights: str | Path) -> Path:
    """The per-brick weight folder that ``weights`` names.

    Args:
        weights: a run folder (its last complete checkpoint is used, or its ``weights/`` folder
            for a run of the lightning engine), a checkpoint folder or a per-brick weight folder
            written by ``save_bricks``.

    Raises:
        WeightsError: the folder does not exist, or a run folder has no complete checkpoint.
    """
    folder = Path(weights)
    if (folder / "weights").is_dir() and not (folder / CHECKPOINT_DIR).is_dir():
        return folder / "weights"  # a run folder trained with the lightning engine
    if (folder / CHECKPOINT_DIR).is_dir() or (folder / f"{CHECKPOINT_DIR}.old").is_dir():
        checkpoint = find_checkpoint(folder)
        if checkpoint is None:
            raise WeightsError(f"run folder {folder} has no complete checkpoint (no {CHECKPOINT_DIR}/{TRAINER_STATE})")
        return checkpoint
    if not folder.is_dir():
        raise WeightsError(
            f"weights {folder}: expected a run folder (with {CHECKPOINT_DIR}/) or a per-brick weight folder "
            "written by save_bricks, got no such folder"
        )
    return folder


def load_pretrained(collection: BrickCollection, weights: str | Path) -> LoadReport:
    """Load earlier weights into a collection for fine-tuning, keeping what does not fit fresh.

    Every tensor whose brick path, name and shape match is loaded; the others keep their
    initialisation. A new head, or a head with another ``num_classes`` (its classifier's shapes
    differ), therefore starts fresh while the rest starts trained. A brick with some tensors
    matching and some not is loaded in part and listed as such.

    Args:
        collection: the bricks to load into; changed in place.
        weights: a run folder written by :func:`~brickzoo.training.fit` (its last checkpoint is
            used), a checkpoint folder, or a per-brick weight folder written by ``save_bricks``.

    Returns:
        The :class:`~brickzoo.LoadReport`: ``loaded``, ``partial``, ``skipped`` (a file, but no
        tensor fits), ``missing`` (new bricks without a file) and ``unexpected`` (files of no
        brick). ``str(report)`` prints one line per brick.

    Raises:
        WeightsError: the folder does not exist or not a single tensor could be loaded.
    """
    folder = weights_folder(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bricks without a file are expected here; the report lists them
        report = load_bricks(collection, folder, strict=False)
    report.unexpected = [f for f in report.unexpected if f != TRAINER_STATE]
    if not report.loaded and not report.partial:
        raise WeightsError(f"load_pretrained: nothing in {folder} fits the collection:\n{report}")
    return report
