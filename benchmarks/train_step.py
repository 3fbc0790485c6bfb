"""One training step through brickzoo's loop against a hand-written loop over the same modules.

brickzoo's step is what :func:`brickzoo.training.fit` runs per batch, ``_Trainer.step``: the
collection on ``Stage.TRAIN`` (MODEL + LOSS + METRIC bricks), ``extract_losses``, the summed
loss, ``zero_grad``, backward, gradient clipping, the AdamW step and the schedule step. The
hand-written step calls the same ``nn.Module`` objects directly in order (preprocessor,
backbone, FPN, heads, post-processing, losses and metric updates), sums the losses, and runs
the same optimizer settings (AdamW with the same two weight-decay groups), clipping and
schedule, without bricks. Both train the same modules on the same batch in interleaved rounds.
Run: ``python benchmarks/train_step.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from _models import multitask_config, multitask_model, set_threads, shapes_batch, single_task_model
from _timing import interleaved_medians, load_average, machine, markdown_table, verdict
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from brickzoo import BrickCollection, Stage
from brickzoo.training import TrainConfig
from brickzoo.training._finetune import build_optimizer
from brickzoo.training._loop import _Precision, _Trainer
from brickzoo.training._schedule import build_scheduler, lr_factor

TARGET = 1.03  # brickzoo's step at most this much slower than the hand-written one
TOTAL_STEPS = 100_000  # the schedule's length (only its shape per step matters here)
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
    preprocessor, backbone, fpn = (module(model, p) for p in ("preprocessor", "backbone", "fpn"))
    cls_head, cls_loss, cls_metrics = (module(model, f"classify/{p}") for p in ("classify", "loss", "metrics"))
    seg_decode, seg_loss, seg_metrics = (module(model, f"segment/{p}") for p in ("decode", "loss", "metrics"))
    det_head, det_post, det_loss, det_metrics = (
        module(model, f"detect/{p}") for p in ("head", "postprocess", "loss", "metrics")
    )

    def forward(batch: Batch) -> list[torch.Tensor]:
        images, labels, masks = batch["images"], batch["labels"], batch["masks"]
        boxes, box_labels = batch["boxes"], batch["box_labels"]
        levels = backbone(preprocessor(images))  # 4 x [B, C_i, H_i, W_i]
        pyramid = fpn(*levels)  # 4 x [B, 64, H_i, W_i]
        classified = cls_head(levels[-1])
        segmented = seg_decode(images, *pyramid)  # logits [B, K, H, W], predictions [B, H, W]
        det_raw = det_head(*pyramid).values()  # cls_logits [B, N, C], box_regression [B, N, 4], centerness [B, N]
        detections = det_post(*det_raw, images).values()  # boxes [B, D, 4], scores [B, D], labels [B, D]
        losses = [cls_loss(classified["logits"], labels)["loss"]]
        losses += list(seg_loss(segmented["logits"], masks).values())
        losses += list(det_loss(*det_raw, boxes, box_labels, *pyramid).values())
        with torch.no_grad():
            cls_metrics.update(classified["predictions"], labels)
            seg_metrics.update(segmented["predictions"], masks)
            det_metrics.update(*detections, boxes, box_labels)
        return losses

    return forward


MODELS: dict[str, tuple[Callable[[], BrickCollection], Callable[[BrickCollection], Any]]] = {
    "classification (resnet10t + head)": (lambda: single_task_model("classify"), classification_losses),
    "three-task (shapes_multitask)": (multitask_model, multitask_losses),
}


# -- the two steps --------------------------------------------------------------------------------
def brickzoo_step(model: BrickCollection, config: TrainConfig, batch: Batch) -> Callable[[], object]:
    """``fit``'s own per-batch step (``_Trainer.step``) on a batch already on the device."""
    device = torch.device("cpu")
    optimizer = build_optimizer(model, config)
    trainer = _Trainer(
        collection=model,
        config=config,
        device=device,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, total_steps=TOTAL_STEPS),
        precision=_Precision(config.amp, device),
        steps_per_epoch=TOTAL_STEPS,
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--calls", type=int, default=2, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each candidate first")
    parser.add_argument("--classification-only", action="store_true", help="skip the three-task model")
    parser.add_argument("--quick", action="store_true", help="a few seconds: classification, batch 4, 2 rounds")
    args = parser.parse_args()
    names = list(MODELS)
    if args.quick:
        args.batch_size, args.calls, args.rounds, args.warmup = 4, 1, 2, 1
    if args.quick or args.classification_only:
        names = names[:1]
    set_threads(args.threads)
    batch = shapes_batch(args.batch_size, args.image_size)

    rows = []
    ratios = {}
    for name in names:
        build, losses_of = MODELS[name]
        model = build().train()
        config = TrainConfig.from_dict({**multitask_config()["train"], "device": "cpu"})
        forward = losses_of(model)
        check_same_losses(model, forward, batch)
        times = interleaved_medians(
            {
                "hand-written": hand_step(model, forward, config, batch),
                "brickzoo": brickzoo_step(model, config, batch),
            },
            calls=args.calls,
            rounds=args.rounds,
            warmup=args.warmup,
        )
        model.reset_metrics()
        ratio = times["brickzoo"] / times["hand-written"]
        ratios[name] = ratio
        rows.append(
            [
                name,
                f"{times['hand-written'] * 1e3:.2f}",
                f"{times['brickzoo'] * 1e3:.2f}",
                f"{(times['brickzoo'] - times['hand-written']) * 1e3:+.2f}",
                f"{ratio:.3f}x",
            ]
        )
    print(
        f"Training step (forward of MODEL + LOSS + METRIC, summed losses, backward, clip, AdamW, schedule): "
        f"batch {args.batch_size} at {args.image_size} px ({machine()}; load average {load_average()})"
    )
    print(markdown_table(["model", "hand-written ms", "brickzoo ms", "difference ms", "brickzoo / hand"], rows))
    worst = max(ratios, key=ratios.__getitem__)
    print(
        f"target: brickzoo <= {TARGET}x the hand-written step; worst {ratios[worst]:.3f}x ({worst}) "
        f"({verdict(ratios[worst] <= TARGET)})"
    )


if __name__ == "__main__":
    main()
