"""Quality the zoo reaches on this machine: train the shipped recipes, evaluate on held-out images.

- digits: ``digits_classification`` on scikit-learn's real digits, accuracy on the test split
  (target >= 0.98);
- shapes: ``shapes_multitask``, evaluated on freshly generated images of another seed:
  classification accuracy (>= 0.95), segmentation mIoU (>= 0.80) and detection mAP@0.5 (>= 0.70);
- shapes_320: ``shapes_multitask_320`` (320-px images, 2-8 smaller shapes, letterbox, augmentation),
  the same metrics on held-out 320-px images (no target yet: the numbers are measured).

The shapes recipes train with their configs' augmentation (``data.transforms.train``);
``--set data.transforms.train=[]`` trains them without it, for a before/after comparison.

Run: ``python benchmarks/quality.py`` (about 25 minutes on 2 CPU cores for digits and shapes, plus
the 320-px run; ``--only shapes`` runs one; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _timing import machine, markdown_table

from brickzoo.training import evaluate, fit
from brickzoo.zoo import build_recipe

HELD_OUT = "data.test={num_samples: %d, seed: 777777}"
RUNS = ("digits", "shapes", "shapes_320")
SHAPES_TARGETS = {"classification accuracy": 0.95, "segmentation mIoU": 0.80, "detection mAP@0.5": 0.70}


def run(config: str, overrides: list[str], quiet: bool) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    recipe = build_recipe(config, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        fit(recipe.model, recipe.loader("train"), None, recipe.train_config, run_dir=Path(run_dir), quiet=quiet)
    metrics = evaluate(recipe.model, recipe.loader("test"), device="cpu")
    return metrics, time.perf_counter() - start


def shapes_rows(label: str, metrics: dict[str, Any], seconds: float, targets: bool) -> list[list[Any]]:
    """One row per metric of a three-task shapes run: [task, metric, value, target, seconds]."""
    values = {
        "classification accuracy": metrics["classify/accuracy"],
        "segmentation mIoU": metrics["segment/miou"],
        "detection mAP@0.5": metrics["detect/map_50"],
        "detection mAP@[.5:.95]": metrics["detect/map"],
    }
    return [
        [label, name, value, SHAPES_TARGETS.get(name) if targets else None, seconds if index == 0 else None]
        for index, (name, value) in enumerate(values.items())
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=RUNS, action="append", help="run only these (repeatable); default: all")
    parser.add_argument("--shapes-epochs", type=int, default=24, help="training epochs of shapes_multitask")
    parser.add_argument("--shapes-samples", type=int, default=4096, help="training images of shapes_multitask")
    parser.add_argument("--s320-epochs", type=int, default=12, help="training epochs of shapes_multitask_320")
    parser.add_argument("--s320-samples", type=int, default=2048, help="training images of shapes_multitask_320")
    parser.add_argument("--digits-epochs", type=int, default=30, help="training epochs of digits_classification")
    parser.add_argument("--held-out", type=int, default=1024, help="held-out images of each shapes recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of the shapes recipes, e.g. data.transforms.train=[]")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (meaningless numbers)")
    parser.add_argument("--verbose", action="store_true", help="show progress bars")
    args = parser.parse_args()
    if args.quick:
        args.shapes_epochs, args.shapes_samples, args.digits_epochs, args.held_out = 1, 32, 1, 8
        args.s320_epochs, args.s320_samples = 1, 16
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    selected = args.only or list(RUNS)
    quiet = not args.verbose
    rows: list[list[Any]] = []
    if "digits" in selected:
        overrides = [f"train.epochs={args.digits_epochs}", "train.checkpoint_every_epochs=0"]
        digits, seconds = run("digits_classification", overrides, quiet)
        rows.append(["digits (test split, 360 real images)", "accuracy", digits["classify/accuracy"], 0.98, seconds])
    for key, config, epochs, samples in (
        ("shapes", "shapes_multitask", args.shapes_epochs, args.shapes_samples),
        ("shapes_320", "shapes_multitask_320", args.s320_epochs, args.s320_samples),
    ):
        if key in selected:
            overrides = [
                f"train.epochs={epochs}",
                f"data.train.num_samples={samples}",
                "train.checkpoint_every_epochs=0",
                HELD_OUT % args.held_out,
                *args.overrides,
            ]
            metrics, seconds = run(config, overrides, quiet)
            label = f"{config} ({args.held_out} held-out images; {epochs} epochs of {samples})"
            rows += shapes_rows(label, metrics, seconds, targets=key == "shapes")
    print(f"Quality after training ({machine()})" + (f"; overrides {args.overrides}" if args.overrides else ""))
    table = []
    for task, metric, value, target, seconds in rows:
        verdict = "" if target is None else ("met" if value >= target else f"missed by {target - value:.3f}")
        table.append(
            [
                task,
                metric,
                f"{value:.4f}",
                "" if target is None else f">= {target:.2f}",
                verdict,
                "" if seconds is None else f"{seconds / 60:.1f} min",
            ]
        )
    print(markdown_table(["task", "metric", "value", "target", "verdict", "wall time (train + eval)"], table))


if __name__ == "__main__":
    main()
