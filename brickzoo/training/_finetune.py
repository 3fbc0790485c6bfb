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
from brickzoo._weights import FORMATS, LoadReport, load_bricks, read_state
from brickzoo.errors import ConfigError, WeightsError, WeightsNotADirectoryError, WeightsNotFoundError
from brickzoo.training._checkpoint import CHECKPOINT_DIR, PREVIOUS_DIR, TRAINER_STATE, find_checkpoint
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
        WeightsNotFoundError: there is no such file or folder.
        WeightsNotADirectoryError: ``weights`` is a file.
        WeightsError: a run folder has no complete checkpoint.
    """
    folder = Path(weights)
    expected = f"expected a run folder (with {CHECKPOINT_DIR}/) or a per-brick weight folder written by save_bricks"
    if not folder.exists():
        raise WeightsNotFoundError(f"weights {folder}: {expected}, got no such folder")
    if not folder.is_dir():
        raise WeightsNotADirectoryError(f"weights {folder}: {expected}, got a file")
    if (folder / "weights").is_dir() and not (folder / CHECKPOINT_DIR).is_dir():
        return folder / "weights"  # a run folder trained with the lightning engine
    if (folder / CHECKPOINT_DIR).is_dir() or (folder / PREVIOUS_DIR).is_dir():
        checkpoint = find_checkpoint(folder)
        if checkpoint is None:
            raise WeightsError(f"run folder {folder} has no complete checkpoint (no {CHECKPOINT_DIR}/{TRAINER_STATE})")
        return checkpoint
    return folder


# -- does a weight folder fit a collection? ---------------------------------------------------------
def _file_shapes(file: Path) -> dict[str, tuple[int, ...] | None]:
    """Tensor names and shapes of a weight file, reading headers only where the format allows.

    Raises:
        WeightsError: the file cannot be read as a state dict.
    """
    state: Any
    try:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)  # no tensor data read
    except Exception:
        state = read_state(file)  # legacy files cannot be memory-mapped; WeightsError names an unreadable file
    if not isinstance(state, dict):
        raise WeightsError(f"weight file {file} holds a {type(state).__name__}, expected a state dict")
    return {str(k): tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}


def _fits(collection: BrickCollection, folder: Path) -> bool:
    """Whether every brick with parameters or buffers would load exactly from a weight folder.

    A brick fits when the folder holds its file (``<brick path>.pt`` or ``.safetensors``) with
    exactly the brick's tensor names and shapes. Only names and shapes are read (memory-mapped
    ``.pt`` files, safetensors headers), so many folders can be tried quickly.
    """
    for path, brick in collection.named_bricks():
        own = {name: tuple(tensor.shape) for name, tensor in brick.state_dict().items()}
        if not own:
            continue
        file = next((f for f in (folder / f"{path}{s}" for s in FORMATS.values()) if f.is_file()), None)
        try:
            if file is None or _file_shapes(file) != own:
                return False
        except WeightsError:  # an unreadable file
            return False
    return True


def _nearby_folders(given: Path, depth: int = 2, limit: int = 300) -> list[Path]:
    """Folders to try when ``given`` does not fit: its sub-folders ``depth`` levels deep, then its siblings'."""

    def children(folder: Path) -> list[Path]:
        try:
            return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return []

    found: list[Path] = []
    level = [given] if given.is_dir() else []
    for _ in range(depth):
        level = [child for folder in level for child in children(folder)]
        found += level
    found += [sibling for sibling in children(given.parent) if sibling.absolute() != given.absolute()]
    return found[:limit]


def find_fitting_weights(collection: BrickCollection, weights: str | Path, limit: int = 3) -> list[Path]:
    """Folders near ``weights`` from which every brick with parameters or buffers would load exactly.

    Tried in order: the sub-folders of ``weights`` two levels deep (``runs/`` finds
    ``runs/shapes_multitask``), then its sibling folders (another run next to the one given).
    Each is resolved like :func:`weights_folder` (a run folder's last checkpoint) and judged by
    :func:`_fits`: every brick with parameters or buffers finds its file with exactly its tensor
    names and shapes.

    Returns:
        Up to ``limit`` folders as a user would pass them to ``--weights``, nearest first.
    """
    fits: list[Path] = []
    seen: set[Path] = set()
    for candidate in _nearby_folders(Path(weights)):
        try:
            resolved = weights_folder(candidate).resolve()
        except WeightsError:
            continue
        if resolved in seen:
            continue
        seen.add(resolved)
        if _fits(collection, resolved):
            fits.append(candidate)
            if len(fits) == limit:
                break
    return fits


def _suggestion(collection: BrickCollection, weights: str | Path) -> str:
    fits = find_fitting_weights(collection, weights)
    if fits:
        return f"\nweights that fit every brick: {', '.join(str(f) for f in fits)}"
    return f"\nno folder near {weights} (its sub-folders two levels deep, its siblings) fits every brick either"


def load_weights(
    collection: BrickCollection,
    weights: str | Path,
    allow_partial: bool = False,
    partial_option: str = "allow_partial=True",
) -> LoadReport:
    """Load trained weights to evaluate, predict or export: every brick, or a clear error.

    Unlike :func:`load_finetune_weights` (fine-tuning), every brick with parameters or buffers must
    find its file with exactly its tensor names and shapes; otherwise nothing is loaded and the
    error lists each brick that does not fit and why, plus nearby folders that would fit (see
    :func:`find_fitting_weights`). A wrong folder therefore never yields a model that silently
    keeps its random initialisation.

    Args:
        collection: the bricks to load into; changed in place.
        weights: a run folder, a checkpoint folder or a per-brick weight folder.
        allow_partial: load what matches and keep the initial weights of the rest (the report
            says which); still an error when nothing at all matches.
        partial_option: how the caller's user asks for partial loading, named in the error (the
            command line passes ``"--allow-partial"``).

    Returns:
        The :class:`~brickzoo.LoadReport`.

    Raises:
        WeightsNotFoundError: no such folder; WeightsNotADirectoryError: a file was given.
        WeightsError: a brick does not fit (without ``allow_partial``), or nothing fits.
    """
    try:
        folder = weights_folder(weights)
    except WeightsError as exc:
        raise type(exc)(f"{exc}{_suggestion(collection, weights)}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # with allow_partial, the bricks without a file are in the report
        try:
            report = load_bricks(collection, folder, strict=not allow_partial)
        except WeightsError as exc:
            raise WeightsError(_not_fitting(collection, weights, folder, exc, partial_option)) from None
    report.unexpected = [f for f in report.unexpected if f != TRAINER_STATE]
    if not report.loaded and not report.partial:  # allow_partial, and nothing was loaded
        raise WeightsError(f"weights {weights}: nothing in {folder} fits the collection:\n{report}")
    return report


def _not_fitting(
    collection: BrickCollection, weights: str | Path, folder: Path, error: WeightsError, partial_option: str
) -> str:
    """The message of :func:`load_weights` when a strict load failed: each brick, what fits nearby, what to do."""
    problems: list[str] = getattr(error, "problems", None) or [str(error)]
    with_state = sum(1 for _, brick in collection.named_bricks() if brick.state_dict())
    where = f"weights {weights}" + (f" ({folder})" if folder != Path(weights) else "")
    hint = f"\npass {partial_option} to load only the bricks that fit" if len(problems) < with_state else ""
    return (
        f"{where}: {len(problems)} of {with_state} bricks with weights do not fit and would keep their random "
        "initialisation; nothing was loaded:\n  " + "\n  ".join(problems) + _suggestion(collection, weights) + hint
    )


def load_finetune_weights(collection: BrickCollection, weights: str | Path) -> LoadReport:
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
        suggestion = _suggestion(collection, weights)
        raise WeightsError(f"load_finetune_weights: nothing in {folder} fits the collection:\n{report}{suggestion}")
    return report
