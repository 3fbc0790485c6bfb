"""The zoo models and data the benchmarks share, built from the zoo's configs (no download).

- :func:`multitask_model`: ``shapes_multitask`` (preprocessor, timm resnet10t, FPN and the
  ``classify``, ``segment`` and ``detect`` heads).
- :func:`single_task_model`: the same recipe with one head only; the FPN is kept where the head
  reads it (``segment``, ``detect``) and dropped where it reads the backbone (``classify``).
- :func:`shapes_batch`: a batch of the shapes dataset with every target (``images``, ``labels``,
  ``masks``, ``boxes``, ``box_labels``), at any size (:func:`at_image_size`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from brickzoo import BrickCollection
from brickzoo.zoo import build_recipe
from brickzoo.zoo._config import read_config

MULTITASK = "shapes_multitask"
HEADS = ("classify", "segment", "detect")


def multitask_config() -> dict[str, Any]:
    """The ``shapes_multitask`` zoo config as a dict (a fresh copy)."""
    return read_config(MULTITASK)[0]


def single_task_config(head: str) -> dict[str, Any]:
    """``shapes_multitask`` with only ``head``, and without the FPN if ``head`` reads the backbone."""
    config = multitask_config()
    heads = config["model"]["heads"]
    if head not in heads:
        raise KeyError(f"{MULTITASK} has no head {head!r}; it has {sorted(heads)}")
    config["model"]["heads"] = {head: heads[head]}
    if heads[head].get("features") == "backbone":
        config["model"].pop("neck", None)
    config["name"] = f"{MULTITASK}_{head}_only"
    return config


def build_model(config: dict[str, Any] | str, seed: int = 0) -> BrickCollection:
    """The brick collection of a zoo config (a name or a dict), with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return build_recipe(config).model


def multitask_model(seed: int = 0) -> BrickCollection:
    """The three-task shapes model (one backbone and FPN, three heads)."""
    return build_model(multitask_config(), seed)


def single_task_model(head: str, seed: int = 0) -> BrickCollection:
    """A full single-task model: preprocessor, backbone (+ FPN where the head uses it) and ``head``."""
    return build_model(single_task_config(head), seed)


def at_image_size(config: dict[str, Any], image_size: int) -> dict[str, Any]:
    """``config`` (changed in place and returned) with its data at ``image_size``: the dataset's images, the
    input size and every ``size``/``target_size`` of its transform pipelines (which would otherwise bring
    the images back to the recipe's own size)."""
    data = config["data"]
    data["args"] = {**data.get("args", {}), "image_size": image_size}
    if "image_size" in data:
        data["image_size"] = image_size
    for key, specs in (data.get("transforms") or {}).items():
        resized = []
        for spec in specs:
            if isinstance(spec, dict):
                ((name, arguments),) = spec.items()
                spec = {
                    name: {k: image_size if k in ("size", "target_size") else v for k, v in (arguments or {}).items()}
                }
            resized.append(spec)
        data["transforms"][key] = resized
    return config


def shapes_batch(batch_size: int, image_size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch_size`` samples of the shapes dataset through the recipe's training pipeline at ``image_size``:
    ``images`` [B, 3, S, S] in [0, 1], ``labels`` [B], ``masks`` [B, S, S], ``boxes`` [B, M, 4] xyxy and
    ``box_labels`` [B, M] (padded with -1)."""
    config = at_image_size(multitask_config(), image_size)
    config["data"]["train"] = {"num_samples": max(batch_size, 1), "seed": seed}
    recipe = build_recipe(config)
    return dict(next(iter(recipe.loader("train", shuffle=False, batch_size=batch_size))))


def set_threads(threads: int) -> None:
    """Fix torch's intra-op threads (and a single inter-op thread, when it can still be set)."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
        torch.set_num_interop_threads(1)
