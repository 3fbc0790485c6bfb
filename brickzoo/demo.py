"""The main job, end to end: ``python -m brickzoo.demo`` (what ``make demo`` runs).

It trains the three-task shapes model (classification + segmentation + detection on one
backbone and FPN) on the embedded synthetic dataset, evaluates it on held-out images, draws its
predictions on image files through the CLI's ``predict`` (results as JSON Lines, masks and
pictures), exports it to ONNX with an onnxruntime parity check, and prints where everything is.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from brickzoo import cli

CONFIG = "shapes_multitask"


def _write_sample_images(folder: Path, count: int) -> Path:
    """Held-out shapes images as PNG files, to show ``brickzoo predict`` on a folder of plain image files."""
    from brickzoo.data import ShapesDataset
    from brickzoo.tensor_conversions import unpack_batched_tensor_to_pillow_images

    folder.mkdir(parents=True, exist_ok=True)
    dataset = ShapesDataset(num_samples=count, image_size=64, seed=424242)
    for index in range(count):
        (image,) = unpack_batched_tensor_to_pillow_images(dataset[index]["images"][None])
        image.save(folder / f"shapes_{index}.png")
    return folder


def _remove_previous_run(run_dir: Path) -> None:
    """Delete the previous demo run folder, unless another process is training in it (OutputError)."""
    from brickzoo.training import lock_run_folder

    if run_dir.is_dir():
        with lock_run_folder(run_dir):
            print(f"removing the previous demo run {run_dir}")
            shutil.rmtree(run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="runs", help="parent folder of the demo's run folder (default: runs)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=1")
    args = parser.parse_args(argv)
    run_dir = Path(args.out) / "demo"
    try:
        _remove_previous_run(run_dir)
    except OSError as exc:  # OutputError (in use by another process) or no permission
        print(f"brickzoo: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    steps = [
        ("train, validate and export", ["train", CONFIG, "--out", args.out, "--name", "demo", *args.overrides]),
        ("evaluate on held-out images", ["evaluate", CONFIG, "--weights", str(run_dir), *args.overrides]),
    ]
    for title, command in steps:
        print(f"\n== {title}: brickzoo {' '.join(command)}")
        status = cli.main(command)
        if status:
            return status
    images = _write_sample_images(run_dir / "sample_images", count=4)
    predict = ["predict", CONFIG, str(images), "--weights", str(run_dir), "--out", str(run_dir / "predictions")]
    for override in args.overrides:
        predict += ["--set", override]
    print(f"\n== draw predictions on image files: brickzoo {' '.join(predict)}")
    status = cli.main(predict)
    if status:
        return status
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s. Everything is in {run_dir}/:")
    for name, what in [
        ("model.onnx", "the exported model (input: images; outputs: the heads' results; its contract as metadata)"),
        ("predictions.png", "validation images drawn by the three heads' visualizers"),
        ("predictions/", "for the PNG files in sample_images/: predictions.jsonl, class-index masks, pictures"),
        ("loss_curves.png", "loss and metric curves per epoch"),
        ("metrics.jsonl", "one JSON line per epoch"),
        ("final_metrics.json", "the last epoch's metrics, confusion matrix included"),
        ("graph.md", "the mermaid graph of the model"),
        ("checkpoint/", "per-brick weights and the trainer state (--resume, --weights)"),
        ("config.json", "the config used"),
    ]:
        if (run_dir / name).exists():
            print(f"  {run_dir / name!s:<40} {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
