"""Quality against what users would pick instead: torchvision FCOS, Ultralytics YOLO, smp FPN and U-Net.

Every system trains from scratch (no download) on the same training images of the embedded shapes
data, for the same epochs at the same batch size (those of brickzoo's recipe at that image size),
and is scored on the same held-out images (another seed) by one evaluation:

- detection: brickzoo's ``DetectionMeanAveragePrecision`` (torchmetrics, pycocotools backend) over
  every system's detections in one padded format (boxes ``[B, K, 4]`` xyxy in pixels, scores,
  labels with -1 padding): COCO mAP@0.5 and mAP@[.5:.95], at most 100 detections per image. Each
  system keeps its own post-processing defaults (score threshold, NMS, detections per image).
- segmentation: brickzoo's ``SemanticSegmentationMetrics``: mIoU = the mean over all classes,
  background included, of each class's IoU accumulated over every held-out pixel, pixels whose
  mask is 255 ignored (torchmetrics ``MulticlassJaccardIndex(average="macro", ignore_index=255)``).

Systems: brickzoo's recipe (``shapes_detection``/``shapes_segmentation`` at 64 px, the one-head
parts of ``shapes_multitask_320`` at 320 px), also on the peer's backbone where the peer's
backbone is a plain one (resnet18 for FCOS); ``torchvision.models.detection.FCOS`` on a resnet18
FPN (P3-P7, 256 channels, BatchNorm: torchvision's from-scratch setting); Ultralytics YOLOv8n
from ``yolov8n.yaml``; segmentation_models_pytorch FPN and U-Net on brickzoo's encoder
(``tu-<timm name>``, ``encoder_weights=None``). smp takes timm encoders only, so where the recipe's
backbone is brickzoo's own (``brickzoo:csp_darknet_n`` at 320 px) the smp peers get
``timm:mobilenetv3_small_100`` and brickzoo's recipe runs a second time on that encoder
(``brickzoo-timm``), next to the recipe as shipped. Every peer trains twice:

- ``own``: the peer's own defaults. FCOS: torchvision's detection reference (SGD 0.01 per 16
  images scaled linearly to the batch, momentum 0.9, weight decay 1e-4, linear warm-up from 0.001
  over the first epoch, steps x0.1 at 16/26 and 22/26 of the epochs, horizontal flips). YOLO:
  Ultralytics' trainer with every default (optimizer ``auto``, warm-up epochs, EMA, its
  augmentations, loss gains; ``workers=0``). smp: its multiclass CamVid example (Adam 2e-4, cosine
  per step to 1e-5, Dice loss, scale/shift +-50%, flips, colour jitter).
- ``brickzoo``: brickzoo's schedule in the same plain loop: the recipe's AdamW, learning rate,
  weight decay (not on biases and norm weights), warm-up + cosine, gradient clipping and training
  augmentation; smp also with brickzoo's loss (cross-entropy + 0.5 Dice). The detectors keep
  their own losses.

Speed, per task and size in one process and one time window (interleaved rounds, medians):
training images/s of one training step (forward, loss, backward, optimizer and schedule step, at
the recipe's batch size at 64 px and batch 8 at 320 px; data loading excluded, the systems' data
pipelines differ by design), as a ratio to brickzoo's recipe; inference ms per image at batch 1
(pre- and post-processing included: NMS for the detectors, argmax for segmentation) in torch
eager and in onnxruntime where the system exports (``--onnx``); parameters.

Run: ``python benchmarks/peers.py`` (the full comparison: quality at 64 px, speed at 64 and 320
px; hours on 2 CPU cores); ``--size 64``, ``--task detection``, ``--systems fcos yolo``,
``--results file.json`` (keeps finished training runs), ``--train-seeds 0 1 2 3`` (every system
trains on each of these training sets, ``data.train.seed``; the table gives the mean, a second
table each set, and the targets are judged on the means), ``--quick`` (a smoke run, numbers
meaningless).
"""

from __future__ import annotations

import os
import tempfile

# Ultralytics: no network (fonts, weights, events), its settings file in a temporary folder. Before any import of it.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "brickzoo_peers_ultralytics"))

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import shutil
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _models import set_threads
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict
from PIL import Image
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from brickzoo import BrickCollection, export_bricks_as_onnx
from brickzoo.bag_of_bricks.object_detection import DetectionMeanAveragePrecision
from brickzoo.bag_of_bricks.semantic_segmentation import SemanticSegmentationLoss, SemanticSegmentationMetrics
from brickzoo.training import fit
from brickzoo.training._schedule import lr_factor
from brickzoo.zoo import build_recipe
from brickzoo.zoo._config import apply_overrides, read_config

Batch = dict[str, Any]
HELD_OUT_SEED = 777777  # as quality.py
MAX_DETECTIONS = 100  # per image, for every system (COCO's mAP reads at most 100)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("detection", "segmentation")
HEADS = {"detection": "detect", "segmentation": "segment"}
# The recipe of each task at each image size (320: the one-head parts of the realistic-size recipe).
RECIPES = {64: {"detection": "shapes_detection", "segmentation": "shapes_segmentation"}}
RECIPE_320 = "shapes_multitask_320"
TIMING_BATCH = {64: None, 320: 8}  # batch of the training-step timing (None: the recipe's)


# -- settings and data --------------------------------------------------------------------------------
@dataclass
class Settings:
    """What one run compares (``None`` fields: the recipe's values)."""

    sizes: list[int]
    quality_sizes: list[int]
    tasks: list[str]
    systems: list[str] | None = None  # family names to run (None: all)
    schedules: list[str] | None = None  # the peers' schedules to train ("own", "brickzoo"; None: both)
    train_samples: int | None = None
    held_out: int = 1024
    epochs: int | None = None
    batch_size: int | None = None
    threads: int = 2
    rounds: int = 5
    calls: int = 10
    onnx: bool = True
    quick: bool = False
    results: Path | None = None
    zoo_overrides: list[str] = field(default_factory=list)  # ``key=value`` overrides of brickzoo's recipes
    train_seeds: list[int] | None = None  # train on each of these training sets (None: the recipe's)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="brickzoo_peers_")))


def single_head(config: dict[str, Any], head: str) -> dict[str, Any]:
    """A multi-head zoo config reduced to ``head`` (its neck kept)."""
    heads = config["model"]["heads"]
    config["model"]["heads"] = {head: heads[head]}
    return config


def resized_specs(specs: list[Any], size: int) -> list[Any]:
    """A transform spec list with every ``size``/``target_size`` argument set to ``size``."""
    resized = []
    for spec in specs:
        if isinstance(spec, dict):
            ((name, arguments),) = spec.items()
            arguments = {k: (size if k in ("size", "target_size") else v) for k, v in (arguments or {}).items()}
            spec = {name: arguments}
        resized.append(spec)
    return resized


def zoo_config(task: str, size: int, settings: Settings, backbone: str | None = None) -> dict[str, Any]:
    """brickzoo's recipe of ``task`` at ``size``: training split, held-out ``test`` split (seed 777777),
    no validation, ``settings``' overrides, and the backbone ``backbone`` when given."""
    name = RECIPES.get(size, {}).get(task, RECIPE_320)
    config = apply_overrides(read_config(name)[0], settings.zoo_overrides)
    if len(config["model"]["heads"]) > 1:
        config = single_head(config, HEADS[task])
        config["name"] = f"{name}_{HEADS[task]}_only"
    data = config["data"]
    if size not in RECIPES:
        data["args"] = {**data.get("args", {}), "image_size": size}
        data["image_size"] = size
    train = config.setdefault("train", {})
    data["train"] = {**data["train"], "num_samples": settings.train_samples or data["train"]["num_samples"]}
    data.pop("val", None)
    data["test"] = {"num_samples": settings.held_out, "seed": HELD_OUT_SEED}
    data["batch_size"] = settings.batch_size or data.get("batch_size", 32)
    data["num_workers"] = 0
    data["transforms"] = {key: resized_specs(specs, size) for key, specs in (data.get("transforms") or {}).items()}
    train.update(epochs=settings.epochs or train.get("epochs", 8), checkpoint_every_epochs=0)
    if backbone is not None:
        config["model"]["backbone"]["name"] = backbone
    return config


@functools.lru_cache(maxsize=16)
def _recipe(config_json: str) -> Any:
    return build_recipe(json.loads(config_json))


def data_recipe(config: dict[str, Any], train_transforms: list[Any] | None = None) -> Any:
    """The recipe of a zoo config for its data and class names (built once per config; never train its model),
    with ``train_transforms`` in place of the recipe's augmentation when given."""
    config = json.loads(json.dumps(config))
    if train_transforms is not None:
        config["data"].setdefault("transforms", {})["train"] = train_transforms
    return _recipe(json.dumps(config, sort_keys=True))


def training_loader(
    config: dict[str, Any], train_transforms: list[Any] | None = None, batch_size: int | None = None
) -> Any:
    """The training loader of a zoo config (the same images in the same order as brickzoo's ``fit`` draws),
    with ``train_transforms`` in place of the recipe's augmentation when given."""
    return data_recipe(config, train_transforms).loader("train", batch_size=batch_size)


def held_out_loader(config: dict[str, Any]) -> Any:
    """The held-out images (``test`` split) of a zoo config, with every target."""
    return data_recipe(config).loader("test", batch_size=16)


def seed_epoch(loader: Any, seed: int, epoch: int) -> None:
    """The epoch's order and augmentations as brickzoo's ``fit`` draws them (seed * 100003 + epoch)."""
    sampler = getattr(loader, "sampler", None)
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed * 100_003 + epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def real_boxes(batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each image's real boxes ``[M_i, 4]`` and labels ``[M_i]`` (padding, label -1, dropped)."""
    return [
        (boxes[labels >= 0], labels[labels >= 0])
        for boxes, labels in zip(batch["boxes"], batch["box_labels"], strict=True)
    ]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of ``[B, 3, H, W]`` images in [0, 1] (what smp's encoders expect)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def pad_detections(per_image: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-image ``(boxes [n, 4], scores [n], labels [n])`` as padded ``[B, K, 4]``, ``[B, K]``, ``[B, K]``
    (``K = MAX_DETECTIONS``, the best first, padding with score 0 and label -1)."""
    batch = len(per_image)
    boxes = torch.zeros(batch, MAX_DETECTIONS, 4)
    scores = torch.zeros(batch, MAX_DETECTIONS)
    labels = torch.full((batch, MAX_DETECTIONS), -1, dtype=torch.int64)
    for i, (found_boxes, found_scores, found_labels) in enumerate(per_image):
        order = found_scores.argsort(descending=True)[:MAX_DETECTIONS]
        n = len(order)
        boxes[i, :n], scores[i, :n] = found_boxes[order].float(), found_scores[order].float()
        labels[i, :n] = found_labels[order].long()
    return {"boxes": boxes, "scores": scores, "labels": labels}


# -- schedules: how the plain loop trains a peer ----------------------------------------------------------
@dataclass
class Schedule:
    """Optimizer, learning-rate factor per step, gradient clipping and augmentation of a plain loop.

    ``factor(step, total_steps, steps_per_epoch)`` multiplies the optimizer's learning rate;
    ``transforms`` is the training spec list (``None``: the recipe's augmentation).
    """

    name: str
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    factor: Callable[[int, int, int], float]
    clip: float | None = None
    transforms: list[Any] | None = None


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups as brickzoo's ``param_groups``: no weight decay on biases and norm weights (1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def brickzoo_schedule(config: dict[str, Any]) -> Schedule:
    """The recipe's own training settings (TrainConfig fields of ``config["train"]``), for a peer."""
    train = config["train"]
    lr, weight_decay = float(train.get("lr", 1e-3)), float(train.get("weight_decay", 0.05))
    warmup_fraction, clip = float(train.get("warmup_fraction", 0.0)), train.get("grad_clip_norm", 1.0)

    def factor(step: int, total: int, _: int) -> float:
        return lr_factor(step, total, round(warmup_fraction * total), float(train.get("min_lr", 0.0)) / lr)

    return Schedule(
        "brickzoo",
        lambda model: torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr),
        factor,
        clip=None if clip is None else float(clip),
    )


def fcos_reference_schedule(batch_size: int, epochs: int) -> Schedule:
    """torchvision's detection reference for FCOS (``--lr 0.01`` for 16 images, ``--lr-steps 16 22`` of 26
    epochs, warm-up from 0.001 over the first epoch up to 1000 iterations, hflip augmentation)."""
    lr = 0.01 * batch_size / 16
    milestones = [round(epochs * 16 / 26), round(epochs * 22 / 26)]

    def factor(step: int, _: int, steps_per_epoch: int) -> float:
        warmup = min(1000, steps_per_epoch - 1)
        epoch = step // steps_per_epoch
        value = 0.1 ** sum(epoch >= m for m in milestones)
        if step < warmup:
            value *= 0.001 + (1 - 0.001) * step / warmup
        return value

    return Schedule(
        "own",
        lambda model: torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9, weight_decay=1e-4
        ),
        factor,
        transforms=["horizontal_flip"],
    )


def smp_example_schedule(size: int) -> Schedule:
    """smp's multiclass CamVid example: Adam 2e-4, cosine per step down to 1e-5 (over the whole run),
    flips, +-50% scale with shifts, brightness/contrast/hue-saturation jitter (as far as brickzoo's
    registry of v2 transforms goes)."""
    lr, end = 2e-4, 1e-5

    def factor(step: int, total: int, _: int) -> float:
        return end / lr + (1 - end / lr) * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))

    return Schedule(
        "own",
        lambda model: torch.optim.Adam(model.parameters(), lr=lr),
        factor,
        transforms=[
            {"scale_jitter": {"target_size": size, "scale_range": [0.5, 1.5]}},
            {"random_crop": {"size": size, "pad_if_needed": True}},
            "horizontal_flip",
            {"color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}},
        ],
    )


def train_plain(
    model: nn.Module, loss: Callable[[nn.Module, Batch], torch.Tensor], loader: Any, schedule: Schedule, epochs: int
) -> dict[str, Any]:
    """Train ``model`` with ``schedule`` over ``loader`` (brickzoo's data order); stop at a non-finite loss."""
    model.train()
    optimizer = schedule.optimizer(model)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    steps_per_epoch = len(loader)
    total = epochs * steps_per_epoch
    scheduler = LambdaLR(optimizer, lambda step: schedule.factor(step, total, steps_per_epoch))
    step = 0
    for epoch in range(epochs):
        seed_epoch(loader, 0, epoch)
        for batch in loader:
            value = loss(model, batch)
            if not torch.isfinite(value):
                return {"diverged_at_step": step}
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if schedule.clip is not None:
                nn.utils.clip_grad_norm_(params, schedule.clip)
            optimizer.step()
            scheduler.step()
            step += 1
    return {}


# -- the systems -------------------------------------------------------------------------------------
@dataclass
class System:
    """One model family in the comparison, and how to train, run and export it.

    ``build()`` gives a fresh model (seeded); ``schedules`` the ways it is trained (brickzoo's
    recipe has one, ``fit``); ``predict(model, images)`` maps ``[B, 3, S, S]`` images in [0, 1] to
    padded detections or ``[B, S, S]`` class indices; ``step(model, batch)`` is one training step for
    the timing; ``onnx(model, folder, images)`` a callable running the exported model, or raises.
    """

    name: str
    family: str
    task: str
    config: dict[str, Any]
    build: Callable[[], nn.Module]
    train: Callable[[nn.Module, str], dict[str, Any]]
    predict: Callable[[nn.Module, torch.Tensor], Any]
    step: Callable[[nn.Module, Batch], Callable[[], object]]
    onnx: Callable[[nn.Module, Path, torch.Tensor], Callable[[], object]] | None
    schedules: tuple[str, ...] = ("own", "brickzoo")
    is_brickzoo: bool = False


def epochs_of(config: dict[str, Any]) -> int:
    return int(config["train"]["epochs"])


# brickzoo -------------------------------------------------------------------------------------------
def brickzoo_system(name: str, family: str, task: str, config: dict[str, Any]) -> System:
    """brickzoo's recipe: ``fit`` with the recipe's TrainConfig, the MODEL group for predictions."""
    head = HEADS[task]

    def build() -> nn.Module:
        return build_recipe(config).model

    def train(model: nn.Module, _: str) -> dict[str, Any]:
        recipe = data_recipe(config)  # its model is not trained: ``model`` came from build(), with the same weights
        collection = typing.cast(BrickCollection, model)
        with tempfile.TemporaryDirectory() as run_dir:
            fit(collection, recipe.loader("train"), None, recipe.train_config, run_dir=Path(run_dir), quiet=True)
        return {}

    def predict(model: nn.Module, images: torch.Tensor) -> Any:
        outputs = model({"images": images}, groups="MODEL")
        if task == "segmentation":
            return outputs[f"{head}/predictions"]
        return {key: outputs[f"{head}/{key}"] for key in ("boxes", "scores", "labels")}

    return System(
        name,
        family,
        task,
        config,
        build,
        train,
        predict,
        step=functools.partial(brickzoo_step, config),
        onnx=brickzoo_onnx,
        schedules=("brickzoo",),
        is_brickzoo=True,
    )


def brickzoo_step(config: dict[str, Any], model: nn.Module, batch: Batch) -> Callable[[], object]:
    """``fit``'s own per-batch step (``_Trainer.step``) on one batch, in the recipe's precision and memory format."""
    from brickzoo.training import TrainConfig, set_channels_last
    from brickzoo.training._finetune import build_optimizer
    from brickzoo.training._loop import _Precision, _Trainer
    from brickzoo.training._schedule import build_scheduler

    collection = typing.cast(BrickCollection, model)
    train_config = TrainConfig.from_dict(config["train"])
    optimizer = build_optimizer(collection, train_config)
    trainer = _Trainer(
        collection=collection,
        config=train_config,
        device=torch.device("cpu"),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, train_config, total_steps=10_000),
        precision=_Precision(train_config.amp, torch.device("cpu")),
        steps_per_epoch=10_000,
    )
    if train_config.channels_last:
        set_channels_last(collection, True)
    model.train()
    return lambda: trainer.step(batch, check=False)


def brickzoo_onnx(model: nn.Module, folder: Path, images: torch.Tensor) -> Callable[[], object]:
    """The MODEL group exported with ``export_bricks_as_onnx`` (post-processing inside the graph)."""
    path = folder / "brickzoo.onnx"
    export_bricks_as_onnx(
        path, typing.cast(BrickCollection, model), {"images": images.expand(2, -1, -1, -1).contiguous()}, groups="MODEL"
    )
    session = ort_session(path)
    feed = {"images": images.numpy()}
    return functools.partial(session.run, None, feed)


def ort_session(path: Path) -> Any:
    """A CPU onnxruntime session with torch's threads (intra-op), one inter-op thread, sequential."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_onnx(module: nn.Module, path: Path, images: torch.Tensor, dynamo: bool = True) -> Callable[[], object]:
    """``module`` exported with ``torch.onnx.export`` at the batch of ``images``; its onnxruntime call.

    ``dynamo=False`` is the TorchScript-based exporter at opset 11, the path torchvision documents for its
    detection models (``torch.export`` cannot trace their data-dependent post-processing).
    """
    options: dict[str, Any] = (
        {"dynamo": True, "external_data": False} if dynamo else {"dynamo": False, "opset_version": 11}
    )
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (images,), str(path), input_names=["images"], **options)
    session = ort_session(path)
    return functools.partial(session.run, None, {"images": images.numpy()})


@contextlib.contextmanager
def keep_threads() -> Iterator[None]:
    """Restore torch's thread count after Ultralytics' ``select_device``, which sets it to ``cpu_count - 1``."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def num_classes_of(config: dict[str, Any], task: str) -> int:
    """The classes of ``task`` in the recipe's data (segmentation: background included)."""
    return len(data_recipe(config).class_names[HEADS[task]])


# torchvision FCOS -----------------------------------------------------------------------------------
def fcos_system(config: dict[str, Any], size: int) -> System:
    """``torchvision.models.detection.FCOS`` on a resnet18 FPN (as ``fcos_resnet50_fpn`` builds it from scratch:
    BatchNorm, every layer trainable, P3-P7 of 256 channels), images kept at ``size`` (``min_size=max_size``)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    num_classes = num_classes_of(config, "detection")
    batch_size, epochs = int(config["data"]["batch_size"]), epochs_of(config)

    def build() -> nn.Module:
        torch.manual_seed(0)
        backbone = resnet_fpn_backbone(
            backbone_name="resnet18",
            weights=None,
            norm_layer=nn.BatchNorm2d,
            trainable_layers=5,
            returned_layers=[2, 3, 4],
            extra_blocks=LastLevelP6P7(256, 256),
        )
        return FCOS(backbone, num_classes=num_classes, min_size=size, max_size=size)

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        targets = [{"boxes": boxes, "labels": labels} for boxes, labels in real_boxes(batch)]
        return sum(model(list(batch["images"]), targets).values())  # type: ignore[return-value]

    def train(model: nn.Module, schedule: str) -> dict[str, Any]:
        plan = fcos_reference_schedule(batch_size, epochs) if schedule == "own" else brickzoo_schedule(config)
        return train_plain(model, loss, training_loader(config, plan.transforms), plan, epochs)

    def predict(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return pad_detections([(d["boxes"], d["scores"], d["labels"]) for d in model(list(images))])

    def onnx(model: nn.Module, folder: Path, images: torch.Tensor) -> Callable[[], object]:
        return torch_onnx(_ListInput(model), folder / "fcos.onnx", images, dynamo=False)

    step = functools.partial(plain_step, loss, brickzoo_schedule(config))
    return System("torchvision FCOS (resnet18 FPN)", "fcos", "detection", config, build, train, predict, step, onnx)


class _ListInput(nn.Module):
    """A torchvision detector called on a tensor batch: returns the first image's boxes, scores, labels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detections = self.model(list(images))[0]
        return detections["boxes"], detections["scores"], detections["labels"]


def plain_step(
    loss: Callable[[nn.Module, Batch], torch.Tensor], schedule: Schedule, model: nn.Module, batch: Batch
) -> Callable[[], object]:
    """One step of :func:`train_plain` on ``batch`` (forward, loss, backward, clipping, optimizer, schedule)."""
    model.train()
    optimizer = schedule.optimizer(model)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    scheduler = LambdaLR(optimizer, lambda step: schedule.factor(step, 10_000, 1_000))

    def step() -> None:
        value = loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if schedule.clip is not None:
            nn.utils.clip_grad_norm_(params, schedule.clip)
        optimizer.step()
        scheduler.step()

    return step


# Ultralytics YOLO -----------------------------------------------------------------------------------
YOLO_YAML = "yolov8n.yaml"


def yolo_model(num_classes: int) -> nn.Module:
    """YOLOv8n from Ultralytics' YAML (random weights), with Ultralytics' default loss gains in ``args``."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(YOLO_YAML, nc=num_classes, verbose=False)
    model.args = get_cfg()  # box 7.5, cls 0.5, dfl 1.5: what v8DetectionLoss reads
    return model


def yolo_batch(batch: Batch) -> dict[str, torch.Tensor]:
    """A brickzoo batch as Ultralytics trains on it: ``img``, ``batch_idx``, ``cls``, normalised cxcywh ``bboxes``."""
    images = batch["images"]
    height, width = images.shape[-2:]
    index = torch.nonzero(batch["box_labels"] >= 0)  # [P, 2] (image, slot)
    boxes = batch["boxes"][index[:, 0], index[:, 1]]  # [P, 4] xyxy pixels
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    return {
        "img": images,
        "batch_idx": index[:, 0].to(images.dtype),
        "cls": batch["box_labels"][index[:, 0], index[:, 1]].to(images.dtype)[:, None],
        "bboxes": torch.cat([centres, sizes], dim=1) / scale,
    }


def yolo_nms(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ultralytics' validation post-processing (conf 0.001, IoU 0.7, multi-label) to padded detections.

    ``max_time_img`` is raised from 0.05 s so that a busy CPU never cuts NMS short.
    """
    from ultralytics.utils.nms import non_max_suppression

    kept = non_max_suppression(raw, 0.001, 0.7, multi_label=True, max_det=300, max_time_img=10.0)
    return pad_detections([(d[:, :4], d[:, 4], d[:, 5].long()) for d in kept])


def yolo_system(config: dict[str, Any], size: int, work: Path) -> System:
    """Ultralytics YOLOv8n: its trainer and defaults (``own``), or brickzoo's schedule in the plain loop."""
    num_classes = num_classes_of(config, "detection")
    epochs = epochs_of(config)

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        total, _ = model.loss(yolo_batch(batch))  # type: ignore[operator]
        return total.sum() / batch["images"].shape[0]  # Ultralytics sums over the batch; brickzoo's losses are means

    def train(model: nn.Module, schedule: str) -> dict[str, Any]:
        if schedule == "own":
            return train_ultralytics(model, config, size, work)
        plan = brickzoo_schedule(config)
        return train_plain(model, loss, training_loader(config), plan, epochs)

    def predict(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return yolo_nms(model(images)[0])

    step = functools.partial(plain_step, loss, brickzoo_schedule(config))
    return System(
        "Ultralytics YOLOv8n",
        "yolo",
        "detection",
        config,
        lambda: yolo_model(num_classes),
        train,
        predict,
        step,
        yolo_onnx,
    )


def write_yolo_data(config: dict[str, Any], folder: Path) -> Path:
    """The recipe's training images (before augmentation) as PNG files with YOLO label files, in the layout
    Ultralytics and brickzoo's ``YoloDetectionDataset`` read; ``val`` holds the first 16 training images
    (Ultralytics validates once, after the last epoch; the held-out images stay unseen). Returns ``data.yaml``."""
    recipe = data_recipe(config, train_transforms=[])
    dataset = recipe.datasets["train"]
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
    for index in range(len(dataset)):
        sample = dataset[index]
        image = (sample["images"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # [H, W, 3]
        height, width = image.shape[:2]
        lines = []
        for (x1, y1, x2, y2), label in zip(sample["boxes"].tolist(), sample["box_labels"].tolist(), strict=True):
            cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        for split in ("train", "val") if index < 16 else ("train",):
            Image.fromarray(image).save(folder / "images" / split / f"{index:06d}.png")
            (folder / "labels" / split / f"{index:06d}.txt").write_text("\n".join(lines) + "\n")
    names = recipe.class_names[HEADS["detection"]]
    yaml_file = folder / "data.yaml"
    yaml_file.write_text(
        json.dumps({"path": str(folder), "train": "images/train", "val": "images/val", "names": names})
    )
    return yaml_file


def yolo_data_folder(config: dict[str, Any], size: int, work: Path) -> Path:
    """Where the recipe's training images are written for Ultralytics: one folder per training set (its data
    arguments, samples, seed and transforms), so a run over several ``--train-seeds`` never reads another's."""
    data = config["data"]
    key = json.dumps([data["args"], data["train"], data["transforms"]], sort_keys=True)
    return work / f"yolo_data_{size}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def train_ultralytics(model: nn.Module, config: dict[str, Any], size: int, work: Path) -> dict[str, Any]:
    """Ultralytics' ``DetectionTrainer`` with its defaults on the recipe's training images; ``model`` gets the
    trained EMA weights (what Ultralytics saves). Only the machine settings are set: CPU, ``workers=0``, no
    plots, no font download (``check_font`` is a no-op), validation after the last epoch only."""
    import ultralytics.data.utils as data_utils
    from ultralytics.models.yolo.detect import DetectionTrainer

    folder = yolo_data_folder(config, size, work)
    yaml_file = folder / "data.yaml" if (folder / "data.yaml").exists() else write_yolo_data(config, folder)
    data_utils.check_font = lambda *args, **kwargs: None  # it would fetch Arial.ttf
    overrides = {
        "model": YOLO_YAML,
        "data": str(yaml_file),
        "epochs": epochs_of(config),
        "batch": int(config["data"]["batch_size"]),
        "imgsz": size,
        "device": "cpu",
        "workers": 0,
        "project": str(work / "ultralytics"),
        "name": f"yolo_{size}",
        "exist_ok": True,
        "plots": False,
        "val": False,
        "pretrained": False,
        "verbose": False,
        "seed": 0,
    }
    trainer = DetectionTrainer(overrides=overrides)
    with keep_threads(), contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    model.load_state_dict(trainer.ema.ema.float().state_dict())
    return {}


def yolo_onnx(model: nn.Module, folder: Path, images: torch.Tensor) -> Callable[[], object]:
    """Ultralytics' own ONNX export (``simplify=False``: no onnxslim), run in onnxruntime, then its NMS."""
    import copy

    from ultralytics.engine.exporter import Exporter

    exported = copy.deepcopy(model).float()
    exported.pt_path = str(folder / "yolov8n.pt")  # Ultralytics writes the .onnx next to this name
    exported.task, exported.names = "detect", {i: str(i) for i in range(int(exported.model[-1].nc))}
    overrides = {"format": "onnx", "imgsz": images.shape[-1], "simplify": False, "batch": 1, "device": "cpu"}
    with keep_threads(), contextlib.redirect_stdout(io.StringIO()):
        path = Exporter(overrides=overrides)(model=exported)
    session = ort_session(Path(path))
    feed = {session.get_inputs()[0].name: images.numpy()}
    return lambda: yolo_nms(torch.from_numpy(session.run(None, feed)[0]))


# segmentation_models_pytorch ---------------------------------------------------------------------------
def smp_system(config: dict[str, Any], size: int, arch: str) -> System:
    """smp ``FPN`` or ``Unet`` on brickzoo's encoder (``tu-<timm name>``), ``encoder_weights=None``."""
    import segmentation_models_pytorch as smp

    encoder = "tu-" + str(config["model"]["backbone"]["name"]).removeprefix("timm:")
    num_classes = num_classes_of(config, "segmentation")
    dice_weight = float(config["model"]["heads"][HEADS["segmentation"]].get("dice_weight", 0.0))
    epochs = epochs_of(config)
    dice = smp.losses.DiceLoss(smp.losses.MULTICLASS_MODE, from_logits=True, ignore_index=255)
    brickzoo_loss = SemanticSegmentationLoss(num_classes, dice_weight=dice_weight)

    def build() -> nn.Module:
        torch.manual_seed(0)
        return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=num_classes)

    def own_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        return dice(model(normalize(batch["images"])), batch["masks"])

    def zoo_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        return sum(brickzoo_loss(model(normalize(batch["images"])), batch["masks"]).values())  # type: ignore[return-value]

    def train(model: nn.Module, schedule: str) -> dict[str, Any]:
        plan = smp_example_schedule(size) if schedule == "own" else brickzoo_schedule(config)
        loss = own_loss if schedule == "own" else zoo_loss
        return train_plain(model, loss, training_loader(config, plan.transforms), plan, epochs)

    def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(normalize(images)).max(dim=1).indices

    def onnx(model: nn.Module, folder: Path, images: torch.Tensor) -> Callable[[], object]:
        return torch_onnx(_Segmenter(model), folder / f"smp_{arch}.onnx", images)

    step = functools.partial(plain_step, zoo_loss, brickzoo_schedule(config))
    name = f"smp {arch} ({encoder})"
    return System(name, f"smp-{arch.lower()}", "segmentation", config, build, train, predict, step, onnx)


class _Segmenter(nn.Module):
    """An smp model as exported: images in [0, 1] -> ImageNet normalisation -> logits -> class indices."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(images)).max(dim=1).indices


# -- the comparison ------------------------------------------------------------------------------------
SCHEDULE_LABELS = {"brickzoo": "brickzoo's schedule", "own": "own defaults"}
QUALITY_COLUMNS = {"detection": ("map_50", "map"), "segmentation": ("miou", "pixel_accuracy")}
QUALITY_NAMES = {"map_50": "mAP@0.5", "map": "mAP@[.5:.95]", "miou": "mIoU", "pixel_accuracy": "pixel accuracy"}


# smp's encoder when brickzoo's recipe uses a backbone smp cannot take (brickzoo's own CSP-Darknet)
SMP_ENCODER = "timm:mobilenetv3_small_100"


def make_systems(task: str, size: int, settings: Settings) -> list[System]:
    """brickzoo's recipe first (the reference of every ratio), then the peers of ``task``."""
    config = zoo_config(task, size, settings)
    backbone = str(config["model"]["backbone"]["name"]).split(":", 1)[-1]
    recipe = str(config.get("name", RECIPES.get(size, {}).get(task, RECIPE_320)))
    systems = [brickzoo_system(f"brickzoo {recipe} ({backbone})", "brickzoo", task, config)]
    if task == "detection":
        resnet18 = zoo_config(task, size, settings, backbone="torchvision:resnet18")
        systems += [
            brickzoo_system(f"brickzoo {recipe} (resnet18, FCOS's backbone)", "brickzoo-r18", task, resnet18),
            fcos_system(config, size),
            yolo_system(config, size, settings.work),
        ]
    else:
        shared = config
        if not str(config["model"]["backbone"]["name"]).startswith("timm:"):
            # smp's encoders come from timm only: brickzoo's recipe also runs on the encoder the peers get
            shared = zoo_config(task, size, settings, backbone=SMP_ENCODER)
            label = f"brickzoo {recipe} ({SMP_ENCODER.removeprefix('timm:')}, smp's encoder)"
            systems.append(brickzoo_system(label, "brickzoo-timm", task, shared))
        systems += [smp_system(shared, size, "FPN"), smp_system(shared, size, "Unet")]
    return [s for s in systems if settings.systems is None or s.family in settings.systems]


@torch.no_grad()
def score(system: System, model: nn.Module, loader: Iterable[Batch]) -> dict[str, float]:
    """The one evaluation: brickzoo's metric bricks over the system's predictions on the held-out images."""
    model.eval()
    if system.task == "detection":
        metric: Any = DetectionMeanAveragePrecision()
        for batch in loader:
            found = system.predict(model, batch["images"])
            metric.update(found["boxes"], found["scores"], found["labels"], batch["boxes"], batch["box_labels"])
    else:
        metric = SemanticSegmentationMetrics(num_classes_of(system.config, "segmentation"), ignore_index=255)
        for batch in loader:
            metric.update(system.predict(model, batch["images"]), batch["masks"])
    values = metric.compute()
    return {key: float(values[key]) for key in QUALITY_COLUMNS[system.task]}


def fingerprint(system: System) -> dict[str, Any]:
    """What a cached result must match: the data, epochs, batch size, held-out images and brickzoo's schedule
    (which the peers also train with: ``--zoo-set train.lr=...`` must not reuse their runs at another lr)."""
    data = system.config["data"]
    return {
        "args": data["args"],
        "train": data["train"],
        "test": data["test"],
        "batch": data["batch_size"],
        "epochs": epochs_of(system.config),
        "backbone": system.config["model"]["backbone"]["name"],
        "schedule": {key: value for key, value in system.config["train"].items() if key != "epochs"},
    }


def run_quality(
    system: System, schedule: str, size: int, settings: Settings
) -> tuple[dict[str, Any], nn.Module | None]:
    """Train ``system`` with ``schedule`` and score it, or take the result (and the trained weights, when kept)
    from ``settings.results``; the weights go to ``<results>_weights/``."""
    key = result_key(system, schedule, size, settings)
    cache = json.loads(settings.results.read_text()) if settings.results and settings.results.exists() else {}
    weights = None if settings.results is None else weights_file(settings.results, key)
    if key in cache and cache[key].get("fingerprint") == json.loads(json.dumps(fingerprint(system))):
        if weights is None or not weights.exists():
            return cache[key], None
        model = system.build()
        model.load_state_dict(torch.load(weights, weights_only=True))
        return cache[key], model
    model = system.build()
    started = time.perf_counter()
    info = system.train(model, schedule)
    result = {**info, "train_minutes": (time.perf_counter() - started) / 60, "load_average": load_average()}
    result.update(score(system, model, held_out_loader(system.config)), fingerprint=fingerprint(system))
    print(f"[peers] {size} px {system.name}, {SCHEDULE_LABELS[schedule]}: {result}", flush=True)
    if settings.results is not None and weights is not None:
        cache = json.loads(settings.results.read_text()) if settings.results.exists() else {}
        settings.results.write_text(json.dumps({**cache, key: result}, indent=1))
        weights.parent.mkdir(exist_ok=True)
        torch.save(model.state_dict(), weights)
    return result, model


def override_key(override: str) -> str:
    """The key of a ``key.sub=value`` override, as ``apply_overrides`` reads it."""
    return override.partition("=")[0]


def result_key(system: System, schedule: str, size: int, settings: Settings) -> str:
    """The run's key in ``--results``: size, task (brickzoo's family trains for both), family, schedule, and the
    overrides: all of them for brickzoo's recipe, the data ones (a training set of ``--train-seeds``) for a peer."""
    overrides = [o for o in settings.zoo_overrides if system.is_brickzoo or override_key(o).startswith("data.")]
    return "/".join([str(size), system.task, system.family, schedule, *overrides])


def results_problem(path: Path) -> str | None:
    """Why ``path`` cannot keep the finished runs (None when it can): a folder, or a file that is not the JSON
    object an earlier run wrote."""
    if path.is_dir():
        return "expected a JSON file (created when missing), got a folder"
    if not path.exists():
        return None if path.parent.is_dir() else f"its folder {str(path.parent)!r} does not exist"
    try:
        found = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"expected the JSON object of an earlier run, got a file that is not JSON ({error})"
    return None if isinstance(found, dict) else f"expected a JSON object of runs, got a {type(found).__name__}"


def weights_file(results: Path, key: str) -> Path:
    """Where the trained weights of the run ``key`` are kept, next to the results file."""
    return results.parent / f"{results.stem}_weights" / (key.replace("/", "_").replace("=", "-") + ".pt")


def time_training(systems: list[System], size: int, settings: Settings) -> dict[str, float]:
    """Training images/s of each system's step, timed in interleaved rounds on one batch."""
    config = systems[0].config
    batch_size = TIMING_BATCH.get(size) or int(config["data"]["batch_size"])
    batch = next(iter(training_loader(config, batch_size=batch_size)))
    steps = {s.name: s.step(s.build(), batch) for s in systems}
    seconds = interleaved_medians(steps, calls=1, rounds=settings.rounds, warmup=0 if settings.quick else 1)
    return {name: batch_size / value for name, value in seconds.items()}


def time_inference(
    systems: list[System], models: dict[str, nn.Module], size: int, settings: Settings
) -> tuple[dict[str, float], dict[str, float | str]]:
    """Eager and onnxruntime seconds per image at batch 1 (a held-out image); a reason where no export runs."""
    image = next(iter(held_out_loader(systems[0].config)))["images"][:1]  # [1, 3, S, S]
    eager, exported, reasons = {}, {}, {}
    for system in systems:
        model = models.get(system.name) or system.build()
        model.eval()
        eager[system.name] = functools.partial(no_grad_call, system.predict, model, image)
        if settings.onnx and system.onnx is not None:
            try:
                exported[system.name] = system.onnx(model, settings.work, image)
            except Exception as error:  # a peer that does not export: say why in the table
                reasons[system.name] = f"no export ({type(error).__name__})"
                print(f"[peers] {system.name}: ONNX export failed: {error!r}"[:600], flush=True)
    calls, warmup = settings.calls, max(2, settings.calls // 2)
    seconds: dict[str, float | str] = dict(reasons)
    with torch.no_grad():
        times = interleaved_medians(eager, calls=calls, rounds=settings.rounds, warmup=warmup)
        if exported:
            seconds.update(interleaved_medians(exported, calls, settings.rounds, warmup, pause=0.1, settle=1))
    return times, seconds


def no_grad_call(predict: Callable[[nn.Module, torch.Tensor], Any], model: nn.Module, images: torch.Tensor) -> Any:
    with torch.no_grad():
        return predict(model, images)


@dataclass
class TaskResult:
    """What one task at one size measured."""

    task: str
    size: int
    systems: list[System]
    quality: dict[tuple[str, str], dict[str, Any]]  # (system name, schedule) -> result (the mean over the sets)
    images_per_second: dict[str, float]
    eager: dict[str, float]
    onnx: dict[str, float | str]
    params: dict[str, float]
    per_set: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # each training set's result
    train_seeds: list[int] = field(default_factory=list)  # the sets of ``per_set``, in its order

    @property
    def several_sets(self) -> bool:
        """Whether the quality is a mean over more than one training set."""
        return bool(self.per_set) and len(self.train_seeds) > 1


def cell(value: float | str | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def table_rows(result: TaskResult) -> list[list[str]]:
    """One row per system and schedule; speed and size cells on each system's first row."""
    reference = result.images_per_second.get(result.systems[0].name) if result.systems[0].is_brickzoo else None
    rows = []
    for system in result.systems:
        for index, schedule in enumerate(system.schedules):
            found = result.quality.get((system.name, schedule))
            label = "recipe (fit)" if system.is_brickzoo else SCHEDULE_LABELS[schedule]
            if found is not None and "diverged_at_step" in found:
                label += f" (diverged at step {found['diverged_at_step']})"
            quality = [cell(found[key] if found else None, 3) for key in QUALITY_COLUMNS[result.task]]
            speed = ["(above)"] * 6
            if index == 0:
                ips = result.images_per_second.get(system.name)
                onnx = result.onnx.get(system.name)
                speed = [
                    cell(ips, 1),
                    f"{ips / reference:.2f}x" if ips and reference else "-",
                    cell(result.eager[system.name] * 1e3),
                    cell(onnx * 1e3 if isinstance(onnx, float) else onnx),
                    cell(result.params[system.name]),
                    "",
                ]
            speed[5] = cell(found["train_minutes"], 1) if found else "-"
            rows.append([system.name, label, *quality, *speed])
    return rows


def header(task: str) -> list[str]:
    quality = [QUALITY_NAMES[key] for key in QUALITY_COLUMNS[task]]
    speed = ["train images/s", "vs brickzoo", "eager ms/image", "onnxruntime ms/image", "M params", "train min"]
    return ["system", "schedule", *quality, *speed]


def best(result: TaskResult, system: System, key: str, training_set: int | None = None) -> float | None:
    """The system's best value of ``key`` over its schedules (None when it was not trained): of the mean over
    the training sets, or of the ``training_set``-th set's run."""
    values = []
    for schedule in system.schedules:
        if training_set is None:
            found = result.quality.get((system.name, schedule))
        else:
            runs = result.per_set.get((system.name, schedule), [])
            found = runs[training_set] if training_set < len(runs) else None
        if found is not None and key in found:
            values.append(found[key])
    return max(values) if values else None


def per_set_tables(result: TaskResult) -> list[str]:
    """With several training sets: per quality value a table of each set's run, with the mean and the spread."""
    if not result.several_sets:
        return []
    tables = []
    for key in QUALITY_COLUMNS[result.task]:
        head = ["system", "schedule", *(f"set {seed}" for seed in result.train_seeds), "mean", "max - min"]
        rows = []
        for system in result.systems:
            for schedule in system.schedules:
                runs = result.per_set.get((system.name, schedule))
                if not runs:
                    continue
                values = [run.get(key) for run in runs]
                numbers = [v for v in values if v is not None]
                label = "recipe (fit)" if system.is_brickzoo else SCHEDULE_LABELS[schedule]
                spread = max(numbers) - min(numbers) if numbers else None
                mean = result.quality[(system.name, schedule)].get(key)
                rows.append([system.name, label, *(cell(v, 3) for v in values), cell(mean, 3), cell(spread, 3)])
        tables.append(f"\n{QUALITY_NAMES[key]} on each training set (seed of data.train):")
        tables.append(markdown_table(head, rows))
    return tables


def wins_on_sets(result: TaskResult, zoo: System, peer: System, key: str) -> str:
    """``, ahead on k of n training sets`` when several sets ran (empty otherwise)."""
    if not result.several_sets:
        return ""
    wins = 0
    for index in range(len(result.train_seeds)):
        ours, theirs = best(result, zoo, key, index), best(result, peer, key, index)
        wins += ours is not None and theirs is not None and ours >= theirs
    return f", means over {len(result.train_seeds)} training sets; brickzoo ahead on {wins} of them"


def target_lines(result: TaskResult) -> list[str]:
    """The issue's targets: brickzoo's recipe >= each peer (its better schedule) in quality, and training
    images/s >= 0.9x the fastest peer."""
    zoo, peers = result.systems[0], [s for s in result.systems if not s.is_brickzoo]
    if not zoo.is_brickzoo:
        return ["target: brickzoo's recipe was not run (--systems); no verdict"]
    lines = []
    for key in QUALITY_COLUMNS[result.task][: 2 if result.task == "detection" else 1]:
        ours = best(result, zoo, key)
        for peer in peers:
            theirs = best(result, peer, key)
            if ours is not None and theirs is not None:
                lines.append(
                    f"target: brickzoo {QUALITY_NAMES[key]} {ours:.3f} >= {peer.name} {theirs:.3f} "
                    f"(the better of its schedules{wins_on_sets(result, zoo, peer, key)}): {verdict(ours >= theirs)}"
                )
    if peers and zoo.name in result.images_per_second:
        fastest = max(peers, key=lambda s: result.images_per_second[s.name])
        ours, theirs = result.images_per_second[zoo.name], result.images_per_second[fastest.name]
        lines.append(
            f"target: brickzoo training images/s {ours:.1f} >= 0.9 x the fastest peer ({fastest.name}, "
            f"{theirs:.1f}): {ours / theirs:.2f}x, {verdict(ours >= 0.9 * theirs)}"
        )
    return lines


def schedules_to_train(system: System, settings: Settings) -> list[str]:
    """The schedules ``system`` trains with: ``--schedules`` picks among a peer's; brickzoo's recipe always trains."""
    if system.is_brickzoo or settings.schedules is None:
        return list(system.schedules)
    return [schedule for schedule in system.schedules if schedule in settings.schedules]


def training_sets(settings: Settings) -> list[Settings]:
    """The settings of each training set of ``--train-seeds`` (``data.train.seed=S`` appended to the overrides,
    so brickzoo's results are kept per set and every peer's data follows), or ``[settings]``."""
    if not settings.train_seeds:
        return [settings]
    return [
        dataclasses.replace(settings, zoo_overrides=[*settings.zoo_overrides, f"data.train.seed={seed}"])
        for seed in settings.train_seeds
    ]


def mean_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for the runs of several training sets: the mean of every number (a diverged run's step kept)."""
    if len(runs) == 1:
        return runs[0]
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(key for run in runs for key in run):
        values = [run[key] for run in runs if key in run]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if key == "diverged_at_step" or not numbers:
            merged[key] = values[0]
        elif len(values) == len(runs):  # a metric a diverged run lacks is not averaged over the others
            merged[key] = sum(values) / len(values)
    return merged


def run_task(task: str, size: int, settings: Settings) -> TaskResult:
    """Quality (at the quality sizes, on each training set), then speed of every system of ``task`` at ``size``."""
    systems = make_systems(task, size, settings)
    per_set: dict[tuple[str, str], list[dict[str, Any]]] = {}
    models: dict[str, nn.Module] = {}
    if size in settings.quality_sizes:
        for set_settings in training_sets(settings):
            for system in make_systems(task, size, set_settings):
                for schedule in schedules_to_train(system, set_settings):
                    found, model = run_quality(system, schedule, size, set_settings)
                    per_set.setdefault((system.name, schedule), []).append(found)
                    if model is not None:
                        models.setdefault(system.name, model)
    quality = {key: mean_result(runs) for key, runs in per_set.items()}
    images_per_second = time_training(systems, size, settings)
    eager, onnx = time_inference(systems, models, size, settings)
    params = {s.name: sum(p.numel() for p in (models.get(s.name) or s.build()).parameters()) / 1e6 for s in systems}
    result = TaskResult(task, size, systems, quality, images_per_second, eager, onnx, params)
    if settings.train_seeds and per_set:
        result.per_set, result.train_seeds = per_set, list(settings.train_seeds)
    return result


def print_result(result: TaskResult, started_load: str) -> None:
    config = result.systems[0].config
    data = config["data"]
    trained = bool(result.quality)
    seeds = f"seed {data['train']['seed']}"
    if result.several_sets:
        seeds = f"training sets of seeds {result.train_seeds}; quality is their mean"
    elif result.per_set:  # one set of --train-seeds
        seeds = f"seed {result.train_seeds[0]}"
    print(
        f"\n{result.task} at {result.size} px ({machine()}; load average {started_load} -> {load_average()})\n"
        f"data: {data['args']}, {data['train']['num_samples']} training images ({seeds}), "
        f"{data['test']['num_samples']} held-out images (seed {HELD_OUT_SEED}); "
        + (f"{epochs_of(config)} epochs at batch {data['batch_size']} for every system" if trained else "not trained")
        + f"; training step timed at batch {TIMING_BATCH.get(result.size) or data['batch_size']}"
    )
    if result.task == "segmentation":
        print("mIoU: mean over every class, background included, of the IoU over all held-out pixels; mask 255 ignored")
    else:
        print("mAP: COCO mAP (pycocotools via brickzoo's DetectionMeanAveragePrecision), at most 100 detections/image")
    print(markdown_table(header(result.task), table_rows(result)))
    for line in per_set_tables(result):
        print(line)
    for line in target_lines(result):
        print(line)


def parse_settings() -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[64, 320], help="image sizes (64 and/or 320)")
    parser.add_argument("--quality-sizes", type=int, nargs="+", default=[64], help="sizes at which systems train")
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all")
    parser.add_argument(
        "--systems",
        nargs="+",
        default=None,
        help="families: brickzoo brickzoo-r18 brickzoo-timm fcos yolo smp-fpn smp-unet (default: all)",
    )
    parser.add_argument(
        "--schedules",
        nargs="+",
        choices=["own", "brickzoo"],
        default=None,
        help="the peers' schedules to train: their own defaults and/or brickzoo's (default: both)",
    )
    parser.add_argument("--train-samples", type=int, default=None, help="training images (default: the recipe's)")
    parser.add_argument("--held-out", type=int, default=1024, help="held-out images")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every system (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (onnxruntime intra-op threads too)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX exports")
    parser.add_argument("--results", type=Path, default=None, help="JSON file keeping finished training runs")
    parser.add_argument(
        "--zoo-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of brickzoo's recipes, so also of the peers' brickzoo schedule (a candidate fix; "
        "run it with --systems brickzoo), e.g. model.heads.segment.decoder_channels=128",
    )
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train every system on each of these training sets (data.train.seed); the table gives the mean",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds (meaningless numbers)")
    args = parser.parse_args()
    seeds = args.train_seeds or []
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        parser.error(f"--train-seeds: expected different integers >= 0, got {seeds}")
    if seeds and any(override_key(item) == "data.train.seed" for item in args.zoo_set):
        parser.error(f"--train-seeds {seeds} and --zoo-set {args.zoo_set} both set data.train.seed; give one")
    if args.results is not None:
        problem = results_problem(args.results)
        if problem:
            parser.error(f"--results {str(args.results)!r}: {problem}")
    settings = Settings(
        sizes=args.size,
        quality_sizes=args.quality_sizes,
        tasks=list(TASKS) if args.task == "all" else [args.task],
        systems=args.systems,
        schedules=args.schedules,
        train_samples=args.train_samples,
        held_out=args.held_out,
        epochs=args.epochs,
        threads=args.threads,
        rounds=args.rounds,
        onnx=not args.no_onnx,
        results=args.results,
        zoo_overrides=args.zoo_set,
        train_seeds=args.train_seeds,
    )
    if args.quick:
        settings.sizes, settings.quality_sizes, settings.train_samples, settings.batch_size = [64], [64], 8, 4
        settings.held_out, settings.epochs, settings.rounds, settings.calls, settings.onnx = 4, 1, 1, 1, False
        settings.quick = True
    return settings


def main() -> None:
    settings = parse_settings()
    set_threads(settings.threads)
    if settings.zoo_overrides:
        print(f"brickzoo's recipes (and the brickzoo schedule of the peers) with {settings.zoo_overrides}")
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        for size in settings.sizes:
            for task in settings.tasks:
                started_load = load_average()
                print_result(run_task(task, size, settings), started_load)
    finally:
        shutil.rmtree(settings.work, ignore_errors=True)


if __name__ == "__main__":
    main()
