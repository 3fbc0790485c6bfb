"""Quality the zoo reaches on this machine: train the shipped recipes, evaluate on held-out images.

- digits: ``digits_classification`` on scikit-learn's real digits, accuracy on the test split
  (target >= 0.98);
- shapes: ``shapes_multitask``, evaluated on freshly generated images of another seed:
  classification accuracy (>= 0.95), segmentation mIoU (>= 0.80) and detection mAP@0.5 (>= 0.70).

Run: ``python benchmarks/quality.py`` (about 25 minutes on 2 CPU cores; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _timing import machine, markdown_table

from brickzoo.training import evaluate, fit
from brickzoo.zoo import build_recipe

HELD_OUT = "data.test={num_samples: %d, seed: 777777}"


def run(config: str, overrides: list[str], quiet: bool) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    recipe = build_recipe(config, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        fit(recipe.model, recipe.loader("train"), None, recipe.train_config, run_dir=Path(run_dir), quiet=quiet)
    metrics = evaluate(recipe.model, recipe.loader("test"), device="cpu")
    return metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes-epochs", type=int, default=24, help="training epochs of shapes_multitask")
    parser.add_argument("--shapes-samples", type=int, default=4096, help="training images of shapes_multitask")
    parser.add_argument("--digits-epochs", type=int, default=30, help="training epochs of digits_classification")
    parser.add_argument("--held-out", type=int, default=1024, help="held-out shapes images")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (meaningless numbers)")
    parser.add_argument("--verbose", action="store_true", help="show progress bars")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.shapes_epochs, args.shapes_samples, args.digits_epochs, args.held_out = 1, 16, 1, 8
    rows = []
    digits, digits_seconds = run(
        "digits_classification",
        [f"train.epochs={args.digits_epochs}", "train.checkpoint_every_epochs=0"],
        quiet=not args.verbose,
    )
    rows.append(["digits (test split, 360 real images)", "accuracy", digits["classify/accuracy"], 0.98, digits_seconds])
    shapes_overrides = [
        f"train.epochs={args.shapes_epochs}",
        f"data.train.num_samples={args.shapes_samples}",
        "train.checkpoint_every_epochs=0",
        HELD_OUT % args.held_out,
    ]
    shapes, shapes_seconds = run("shapes_multitask", shapes_overrides, quiet=not args.verbose)
    held_out = f"shapes ({args.held_out} held-out images)"
    rows.append([held_out, "classification accuracy", shapes["classify/accuracy"], 0.95, shapes_seconds])
    rows.append([held_out, "segmentation mIoU", shapes["segment/miou"], 0.80, None])
    rows.append([held_out, "detection mAP@0.5", shapes["detect/map_50"], 0.70, None])
    rows.append([held_out, "detection mAP@[.5:.95]", shapes["detect/map"], None, None])
    print(f"Quality after training ({machine()})")
    print(
        f"digits_classification: {args.digits_epochs} epochs; shapes_multitask: {args.shapes_epochs} epochs "
        f"of {args.shapes_samples} images"
    )
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
