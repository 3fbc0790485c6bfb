"""One training step through brickzoo's loop against a hand-written loop over the same modules.

brickzoo's step is what :func:`brickzoo.training.fit` runs per batch, ``_Trainer.step``: the
collection on ``Stage.TRAIN`` (MODEL + LOSS + METRIC bricks), ``extract_losses``, the summed
loss, ``zero_grad``, backward, gradient clipping, the AdamW step and the schedule step. The
hand-written step calls the same ``nn.Module`` objects directly in order (preprocessor,
backbone, FPN, heads, post-processing, losses and metric updates), sums the losses, and runs
the same optimizer settings (AdamW with the same two weight-decay groups), clipping and
schedule, without bricks. Both train the same modules on the same batch in interleaved rounds.

Rows: the classification and three-task models of ``shapes_multitask`` on a batch at ``--image-size``
(64 px), and the realistic-size recipe ``shapes_multitask_320`` (MobileNetV3 + PAN, three heads) on
the first batch of its own training loader (320 px, its batch size and augmentation).

A second table shows whether the 320-px data pipeline keeps up with training: images per second
of the recipe's training loader alone (its dataset behind the augmentation pipeline, through
``make_loader``, ``num_workers`` 0 and 2), of brickzoo's training step alone (the batch already in
memory), and of the two together as ``fit`` runs them (each batch drawn, then stepped), with 0, 1
and 2 workers.
Run: ``python benchmarks/train_step.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from _models import build_model, multitask_model, set_threads, shapes_batch, single_task_model
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from brickzoo import BrickCollection, Stage
from brickzoo.data import make_loader
from brickzoo.training import TrainConfig
from brickzoo.training._finetune import build_optimizer
from brickzoo.training._loop import _Precision, _Trainer
from brickzoo.training._schedule import build_scheduler, lr_factor
from brickzoo.zoo import Recipe, build_recipe
from brickzoo.zoo._config import read_config

TARGET = 1.03  # brickzoo's step at most this much slower than the hand-written one
TOTAL_STEPS = 100_000  # the schedule's length (only its shape per step matters here)
RECIPE_320 = "shapes_multitask_320"
Batch = dict[str, torch.Tensor]


# -- the hand-written forward passes: the same modules, called directly ---------------------------
def module(collection: BrickCollection, path: str) -> Any:
    """The module wrapped by the brick at ``path`` (``"classify/loss"``)."""
    node: Any = collection
    for key in path.split("/"):
        node = node[key]
    return node.metrics if hasattr(node, "metrics") else node.model


def classification_losses(model: BrickCollection) -> Callable[[Batch], list[torch.Tensor]]:
    """The classification model's training forward, by hand: returns its loss tensors."""
    preprocessor, backbone = module(model, "preprocessor"), module(model, "backbone")
    head, loss, metrics = (
        module(model, "classify/classify"),
        module(model, "classify/loss"),
        module(model, "classify/metrics"),
    )

    def forward(batch: Batch) -> list[torch.Tensor]:
        levels = backbone(preprocessor(batch["images"]))  # 4 x [B, C_i, H_i, W_i]
        out = head(levels[-1])  # logits [B, C], predictions [B], ...
        with torch.no_grad():
            metrics.update(out["predictions"], batch["labels"])
        return [loss(out["logits"], batch["labels"])["loss"]]

    return forward


def multitask_losses(model: BrickCollection) -> Callable[[Batch], list[torch.Tensor]]:
    """The three-task model's training forward, by hand: returns its loss tensors."""
    preprocessor, backbone = (module(model, p) for p in ("preprocessor", "backbone"))
    neck = module(model, "fpn" if "fpn" in model else "pan")  # the 64-px recipes' FPN, the 320-px recipe's PAN
    cls_head, cls_loss, cls_metrics = (module(model, f"classify/{p}") for p in ("classify", "loss", "metrics"))
    seg_decode, seg_loss, seg_metrics = (module(model, f"segment/{p}") for p in ("decode", "loss", "metrics"))
    det_head, det_post, det_loss, det_metrics = (
        module(model, f"detect/{p}") for p in ("head", "postprocess", "loss", "metrics")
    )

    def forward(batch: Batch) -> list[torch.Tensor]:
        images, labels, masks = batch["images"], batch["labels"], batch["masks"]
        boxes, box_labels = batch["boxes"], batch["box_labels"]
        levels = backbone(preprocessor(images))  # L x [B, C_i, H_i, W_i]
        pyramid = neck(*levels)  # L x [B, 64, H_i, W_i]
        classified = cls_head(levels[-1])
        segmented = seg_decode(images, *pyramid)  # logits [B, K, H, W], predictions [B, H, W]
        # cls_logits [B, N, C], box_regression [B, N, 4], then centerness [B, N] (FCOS head) or
        # box_distribution [B, N, 4, R] (task-aligned head, whose scores need no centre-ness)
        det_raw = det_head(*pyramid)
        centerness = det_raw.get("centerness")
        detections = det_post(det_raw["cls_logits"], det_raw["box_regression"], centerness, images).values()
        losses = [cls_loss(classified["logits"], labels)["loss"]]
        losses += list(seg_loss(segmented["logits"], masks).values())
        losses += list(det_loss(*det_raw.values(), boxes, box_labels, *pyramid).values())
        with torch.no_grad():
            cls_metrics.update(classified["predictions"], labels)
            seg_metrics.update(segmented["predictions"], masks)
            det_metrics.update(*detections, boxes, box_labels)
        return losses

    return forward


@dataclass
class Case:
    """A row of the table: the model, its hand-written forward, its zoo config and where its batch comes from."""

    build: Callable[[], BrickCollection]
    losses: Callable[[BrickCollection], Callable[[Batch], list[torch.Tensor]]]
    config: str = "shapes_multitask"  # the train settings (and, with recipe_data, the data)
    recipe_data: bool = False  # the first batch of the recipe's training loader, else shapes_batch


MODELS: dict[str, Case] = {
    "classification (resnet10t + head)": Case(lambda: single_task_model("classify"), classification_losses),
    "three-task (shapes_multitask)": Case(multitask_model, multitask_losses),
    "three-task 320 px (shapes_multitask_320)": Case(
        lambda: build_model(RECIPE_320), multitask_losses, RECIPE_320, recipe_data=True
    ),
}
CHOICES = {"classification": 0, "three-task": 1, "three-task-320": 2}  # --models: keys into MODELS' order


def recipe_320(num_workers: int = 0, batch_size: int | None = None) -> Recipe:
    """The ``shapes_multitask_320`` recipe (datasets behind their pipelines), with these loader settings."""
    config = read_config(RECIPE_320)[0]
    config["data"]["num_workers"] = num_workers
    if batch_size is not None:
        config["data"]["batch_size"] = batch_size
    return build_recipe(config)


# -- the two steps --------------------------------------------------------------------------------
def make_trainer(model: BrickCollection, config: TrainConfig) -> _Trainer:
    """``fit``'s own trainer (optimizer, schedule, precision) for ``model`` on the CPU."""
    device = torch.device("cpu")
    optimizer = build_optimizer(model, config)
    return _Trainer(
        collection=model,
        config=config,
        device=device,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, total_steps=TOTAL_STEPS),
        precision=_Precision(config.amp, device),
        steps_per_epoch=TOTAL_STEPS,
    )


def brickzoo_step(trainer: _Trainer, batch: Batch) -> Callable[[], object]:
    """``fit``'s own per-batch step (``_Trainer.step``) on a batch already on the device."""
    return lambda: trainer.step(batch, check=False)


def hand_step(
    model: BrickCollection, forward: Callable[[Batch], list[torch.Tensor]], config: TrainConfig, batch: Batch
) -> Callable[[], object]:
    """A hand-written step: forward, summed loss, zero_grad, backward, clip, AdamW, schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]  # biases and norm weights get no weight decay
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=config.betas,
    )
    warmup = round(config.warmup_fraction * TOTAL_STEPS)
    scheduler = LambdaLR(optimizer, lambda step: lr_factor(step, TOTAL_STEPS, warmup, config.min_lr / config.lr))
    clip = config.grad_clip_norm

    def step() -> torch.Tensor:
        losses = forward(batch)
        total = torch.stack(losses).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        return total

    return step


def check_same_losses(model: BrickCollection, forward: Callable[[Batch], list[torch.Tensor]], batch: Batch) -> None:
    """The hand-written forward computes the same losses as the collection on ``Stage.TRAIN``."""
    with torch.no_grad():
        torch.manual_seed(0)
        expected = model.extract_losses(model(batch, stage=Stage.TRAIN))
        torch.manual_seed(0)
        got = forward(batch)
    model.reset_metrics()
    if len(got) != len(expected):
        raise RuntimeError(f"hand-written forward returns {len(got)} losses, the collection {sorted(expected)}")
    torch.testing.assert_close(torch.stack(got), torch.stack(list(expected.values())))


def train_config(name: str) -> TrainConfig:
    """The zoo config's training settings, on the CPU."""
    return TrainConfig.from_dict({**read_config(name)[0]["train"], "device": "cpu"})


def case_batch(case: Case, args: argparse.Namespace) -> Batch:
    """The batch a row trains on: its recipe's first training batch, or ``shapes_batch`` at ``--image-size``."""
    if case.recipe_data:
        return dict(next(iter(recipe_320(batch_size=args.recipe_batch_size).loader("train"))))
    return shapes_batch(args.batch_size, args.image_size)


def step_rows(names: list[str], args: argparse.Namespace) -> tuple[list[list[str]], dict[str, float], Any]:
    """The step table: rows, brickzoo / hand-written per model, and ``(trainer, seconds per step)`` of the
    320-px recipe's brickzoo step when it was measured (for the data pipeline table), else None."""
    rows, ratios, recipe_step = [], {}, None
    for name in names:
        case = MODELS[name]
        batch = case_batch(case, args)
        model = case.build().train()
        config = train_config(case.config)
        forward = case.losses(model)
        check_same_losses(model, forward, batch)
        trainer = make_trainer(model, config)
        times = interleaved_medians(
            {"hand-written": hand_step(model, forward, config, batch), "brickzoo": brickzoo_step(trainer, batch)},
            calls=args.calls,
            rounds=args.rounds,
            warmup=args.warmup,
        )
        model.reset_metrics()
        ratios[name] = times["brickzoo"] / times["hand-written"]
        size = batch["images"].shape
        rows.append(
            [
                name,
                f"{size[0]} x {size[-1]} px",
                f"{times['hand-written'] * 1e3:.2f}",
                f"{times['brickzoo'] * 1e3:.2f}",
                f"{(times['brickzoo'] - times['hand-written']) * 1e3:+.2f}",
                f"{ratios[name]:.3f}x",
            ]
        )
        if case.recipe_data:
            recipe_step = (trainer, times["brickzoo"], size[0])
    return rows, ratios, recipe_step


# -- does the data pipeline keep up? ------------------------------------------------------------------
def images_per_second(batches: Iterator[Batch], count: int, step: Callable[[Batch], object] | None) -> float:
    """Images per second over ``count`` batches drawn (and stepped, with ``step``) after a first one that
    pays for starting the workers."""
    first = next(batches)
    if step is not None:
        step(first)
    images, started = 0, time.perf_counter()
    for _ in range(count):
        batch = next(batches)
        if step is not None:
            step(batch)
        images += batch["images"].shape[0]
    return images / (time.perf_counter() - started)


def pipeline_rows(trainer: _Trainer, step_seconds: float, batch_size: int, args: argparse.Namespace) -> list[list[str]]:
    """Loader alone, step alone and both together, in alternating repeats (medians)."""
    dataset = recipe_320().datasets["train"]
    step_alone = batch_size / step_seconds

    def loader(workers: int) -> Iterator[Batch]:
        return iter(make_loader(dataset, batch_size, shuffle=True, num_workers=workers, seed=0, drop_last=True))

    def train(batch: Batch) -> object:
        return trainer.step(batch, check=False)

    settings = [("loader alone", w, False) for w in args.workers] + [("loader + step", w, True) for w in args.workers]
    samples: dict[tuple[str, int, bool], list[float]] = {setting: [] for setting in settings}
    for _ in range(args.repeats):
        for setting in settings:
            _, workers, stepped = setting
            samples[setting].append(images_per_second(loader(workers), args.batches, train if stepped else None))
    trainer.collection.reset_metrics()
    rows = [["training step alone (batch in memory)", "-", f"{step_alone:.1f}", "1.00x"]]
    for (what, workers, _), values in samples.items():
        rate = statistics.median(values)
        rows.append([what, str(workers), f"{rate:.1f}", f"{rate / step_alone:.2f}x"])
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(CHOICES), default=list(CHOICES), help="rows to measure")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of the 64-px rows")
    parser.add_argument("--image-size", type=int, default=64, help="image size of the 64-px rows")
    parser.add_argument("--recipe-batch-size", type=int, default=None, help="batch of the 320-px row (its recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--calls", type=int, default=2, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each candidate first")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="num_workers of the pipeline table")
    parser.add_argument("--batches", type=int, default=6, help="batches per pipeline measurement")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of the pipeline measurements")
    parser.add_argument(
        "--quick", action="store_true", help="seconds: classification batch 4 and the 320-px row at batch 2"
    )
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.calls, args.rounds, args.warmup = 4, 1, 2, 1
        args.models, args.recipe_batch_size = ["classification", "three-task-320"], 2
        args.workers, args.batches, args.repeats = [0], 1, 1
    return args


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    names = [list(MODELS)[CHOICES[choice]] for choice in args.models]
    rows, ratios, recipe_step = step_rows(names, args)
    print(
        f"Training step (forward of MODEL + LOSS + METRIC, summed losses, backward, clip, AdamW, schedule) "
        f"({machine()}; load average {load_average()})"
    )
    header = ["model", "batch", "hand-written ms", "brickzoo ms", "difference ms", "brickzoo / hand"]
    print(markdown_table(header, rows))
    worst = max(ratios, key=ratios.__getitem__)
    print(
        f"target: brickzoo <= {TARGET}x the hand-written step; worst {ratios[worst]:.3f}x ({worst}) "
        f"({verdict(ratios[worst] <= TARGET)})"
    )
    if recipe_step is not None:
        trainer, seconds, batch_size = recipe_step
        table = pipeline_rows(trainer, seconds, batch_size, args)
        print(
            f"\nData pipeline of {RECIPE_320} (training split: shapes drawn and augmented at 320 px), batch "
            f"{batch_size}, {args.batches} batches x {args.repeats} repeats (load average {load_average()})"
        )
        print(markdown_table(["pipeline", "num_workers", "images / s", "vs training step alone"], table))


if __name__ == "__main__":
    main()
