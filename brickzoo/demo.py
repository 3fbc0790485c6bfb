"""The main job in three minutes: ``python -m brickzoo.demo`` (what ``make demo`` runs).

It starts from the prebuilt three-task shapes model shipped with brickzoo (classification +
segmentation + detection on one backbone and FPN; ``brickzoo zoo show shapes_multitask``):

1. shows the zoo's prebuilt models and what the card says;
2. predicts on image files through ``brickzoo predict`` (JSON Lines, masks and pictures, in
   each image's own pixels);
3. evaluates it on the first images of its held-out set, side by side with its card;
4. fine-tunes it briefly on a task it was not trained for (a new head counting the shapes,
   everything else frozen, so the three heads' results stay exactly the same), which ends with
   the ONNX export of the four-head model and its onnxruntime parity check;

and prints where everything is. Training the three-task model from scratch is one command away:
``brickzoo train shapes_multitask`` (``make zoo`` rebuilds every prebuilt model).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from brickzoo import cli
from brickzoo.zoo.build import threads_for_load

PRETRAINED = "shapes_multitask"
NEW_TASK = "shapes_count"  # zoo_configs/shapes_count.yaml: the prebuilt model plus a head counting the shapes
# a brief fine-tune: 2048 training images seen 4 times, 64 validation images
FINETUNE = ["train.epochs=4", "data.train.num_samples=2048", "data.val.num_samples=64", "train.warmup_fraction=0.1"]


def _write_sample_images(folder: Path, count: int) -> Path:
    """Held-out shapes images of several sizes as PNG files, for ``brickzoo predict`` on a folder of image files."""
    from brickzoo.data import ShapesDataset
    from brickzoo.tensor_conversions import unpack_batched_tensor_to_pillow_images

    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(64, 64), (96, 64), (100, 100), (120, 160)]  # (width, height): the model letterboxes each to 64x64
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        dataset = ShapesDataset(num_samples=count, image_size=max(width, height), seed=424242)
        (image,) = unpack_batched_tensor_to_pillow_images(dataset[index]["images"][None])
        image.resize((width, height)).save(folder / f"shapes_{index}.png")
    return folder


def _remove_previous_demo(demo_dir: Path) -> None:
    """Delete the previous demo folder, unless another process is training in its run folder (OutputError)."""
    from brickzoo.training import lock_run_folder

    if not demo_dir.is_dir():
        return
    run_dir = demo_dir / NEW_TASK
    if run_dir.is_dir():
        with lock_run_folder(run_dir):
            shutil.rmtree(run_dir)
    print(f"removing the previous demo {demo_dir}")
    shutil.rmtree(demo_dir)


def _steps(demo_dir: Path, overrides: list[str]) -> list[tuple[str, list[str]]]:
    """The demo's commands, each with a title."""
    entry = f"zoo:{PRETRAINED}"
    images = demo_dir / "sample_images"
    finetune = ["train", NEW_TASK, "--weights", entry, "--freeze", "backbone", "--out", str(demo_dir), "--quiet"]
    return [
        ("the prebuilt models shipped with brickzoo", ["zoo", "list"]),
        ("predict on image files of any size", ["predict", entry, str(images), "--out", str(demo_dir / "predictions")]),
        ("evaluate on its held-out images, beside its card", ["evaluate", entry, "--samples", "64"]),
        (
            "fine-tune on a new task, counting the shapes (a new head; the rest frozen), then export to ONNX",
            [*finetune, *FINETUNE, *overrides],
        ),
    ]


def _compare_frozen_heads(run_dir: Path) -> None:
    """Print the frozen heads' validation metrics after the fine-tune beside the prebuilt model's on those images."""
    import json

    from brickzoo.zoo import load_pretrained
    from brickzoo.zoo._pretrained import card_metric_values, evaluate_pretrained

    final = card_metric_values(json.loads((run_dir / "final_metrics.json").read_text()), "val/")
    samples = int(json.loads((run_dir / "config.json").read_text())["data"]["val"]["num_samples"])
    pretrained = load_pretrained(PRETRAINED, progress=False)
    before = card_metric_values(evaluate_pretrained(pretrained, "val", num_samples=samples))
    print(f"\n== the frozen heads on the same {samples} validation images: prebuilt -> after the fine-tune")
    for name, value in before.items():
        after = final.get(name)
        same = "unchanged" if after is not None and value is not None and abs(after - value) <= 1e-6 else "CHANGED"
        print(f"  {name:<32} {value:.4f} -> {after:.4f}  {same}")
    for name, value in final.items():
        if name.startswith("count/") and value is not None:
            print(f"  {name:<32}    new -> {value:.4f}")


def _print_where(demo_dir: Path) -> None:
    run_dir = demo_dir / NEW_TASK
    for path, what in [
        (demo_dir / "sample_images", "the image files predicted on"),
        (demo_dir / "predictions", "predictions.jsonl, class-index masks and each head's picture, per image"),
        (run_dir / "model.onnx", "the fine-tuned four-head model (its contract and the prebuilt card as metadata)"),
        (run_dir / "pretrained.json", "what it started from: the prebuilt model's card, class names and metrics"),
        (run_dir / "predictions.png", "validation images drawn by the four heads"),
        (run_dir / "final_metrics.json", "the fine-tune's metrics: the new count head and the three unchanged ones"),
        (run_dir / "checkpoint", "per-brick weights (--weights, brickzoo zoo publish)"),
    ]:
        if path.exists():
            print(f"  {path!s:<44} {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default="runs", help="parent folder of the demo folder (default: runs)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fine-tune overrides, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    demo_dir = Path(args.out) / "demo"
    try:
        _remove_previous_demo(demo_dir)
    except OSError as exc:  # OutputError (in use by another process) or no permission
        print(f"brickzoo: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    threads = threads_for_load()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch threads: {threads} (load average {load:.1f} on {os.cpu_count()} cores)")
    _write_sample_images(demo_dir / "sample_images", count=4)
    for title, command in _steps(demo_dir, list(args.overrides)):
        print(f"\n== {title}: brickzoo {' '.join(command)}", flush=True)
        status = cli.main(command)
        if status:
            return status
    _compare_frozen_heads(demo_dir / NEW_TASK)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s. Everything is in {demo_dir}/:")
    _print_where(demo_dir)
    print(
        f"\nnext: brickzoo zoo show {PRETRAINED} (its card); brickzoo train {PRETRAINED} --out runs (train it from "
        "scratch); make zoo (rebuild every prebuilt model)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
