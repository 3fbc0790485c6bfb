"""The ``brickzoo`` command: list, graph, train, evaluate, predict and export zoo configs.

User errors (a bad config, a missing file, wrong arguments) end with one ``brickzoo: error:``
message and exit status 2, without a traceback; set ``BRICKZOO_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from brickzoo.errors import UsageError

EXAMPLES = """\
examples:
  brickzoo list
  brickzoo graph shapes_multitask
  brickzoo preview shapes_multitask --out preview.png
  brickzoo train shapes_multitask --out runs train.epochs=2 data.batch_size=16
  brickzoo train shapes_multitask --engine lightning --devices 2 --strategy ddp
  brickzoo evaluate shapes_multitask --weights runs/shapes_multitask
  brickzoo predict shapes_multitask --weights runs/shapes_multitask photo1.png photos/ 'more/*.jpg' --out predictions
  brickzoo train shapes_detection --weights runs/shapes_multitask --freeze backbone --freeze fpn
  brickzoo export shapes_multitask --weights runs/shapes_multitask --onnx model.onnx
"""
COMMAND_EXAMPLES = {
    "list": ["brickzoo list"],
    "graph": ["brickzoo graph shapes_multitask", "brickzoo graph shapes_detection --groups MODEL"],
    "preview": [
        "brickzoo preview shapes_multitask --out preview.png",
        "brickzoo preview shapes_multitask_320 --split val --count 8 --columns 4 --out val.png",
    ],
    "train": [
        "brickzoo train shapes_multitask --out runs train.epochs=2 data.batch_size=16",
        "brickzoo train shapes_multitask --out runs --resume",
        "brickzoo train shapes_detection --weights runs/shapes_multitask --freeze backbone --freeze fpn",
        "brickzoo train shapes_multitask --engine lightning --devices 2 --strategy ddp",
    ],
    "evaluate": ["brickzoo evaluate shapes_multitask --weights runs/shapes_multitask --split val"],
    "predict": [
        "brickzoo predict shapes_multitask photo.jpg photos/ 'more/*.png' --weights runs/shapes_multitask "
        "--out predictions",
        "brickzoo predict shapes_detection photos/ --weights runs/shapes_detection --out out --resize stretch "
        "--skip-unreadable",
    ],
    "export": [
        "brickzoo export shapes_multitask --weights runs/shapes_multitask --onnx model.onnx",
        "brickzoo export shapes_multitask --weights runs/shapes_multitask --onnx detect.onnx "
        "--output detect/boxes --output detect/scores --fixed-size",
    ],
}
ALLOW_PARTIAL = "--allow-partial"
PREDICT_BATCH_SIZE = 16
LISTED_FILES = 30  # predict names every file it writes up to this many images, else counts them
# environment variables through which launchers give a process its rank: torchrun, Lightning's
# ddp strategy (it re-runs this command line with LOCAL_RANK and NODE_RANK set), SLURM, MPI
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")

Subparsers = Any  # argparse's _SubParsersAction


def _command(commands: Subparsers, name: str, help_text: str, config: bool = True) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with examples; with ``config``, it takes a config and overrides."""
    examples = "examples:\n" + "\n".join(f"  {line}" for line in COMMAND_EXAMPLES[name])
    sub = commands.add_parser(
        name,
        help=help_text,
        description=textwrap.fill(help_text, width=88),
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if config:
        sub.add_argument("config", help="a config file, or the name of one in zoo_configs/ (e.g. shapes_multitask)")
        sub.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3 data.batch_size=16"
        )
    return sub


def _weights_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--weights", required=True, help="a run folder or a per-brick weight folder")
    sub.add_argument(
        ALLOW_PARTIAL,
        action="store_true",
        help="load the bricks whose weights fit and keep random weights for the others (default: every brick "
        "with parameters must load, or it is an error)",
    )


def _add_train(commands: Subparsers) -> None:
    train = _command(commands, "train", "train a config; writes a run folder with metrics, pictures and the ONNX model")
    train.add_argument("--out", default="runs", help="parent folder of the run folder (default: runs)")
    train.add_argument("--name", default=None, help="run folder name (default: the config's name)")
    train.add_argument("--resume", action="store_true", help="continue the run folder's last checkpoint exactly")
    train.add_argument("--weights", default=None, help="fine-tune: start from this run folder or weight folder")
    train.add_argument(
        "--freeze", action="append", default=[], metavar="PATTERN", help="a brick path pattern to freeze, repeatable"
    )
    train.add_argument("--engine", choices=["native", "lightning"], default="native", help="training engine")
    train.add_argument("--devices", default="auto", help="lightning: devices (a number, a list or 'auto')")
    train.add_argument("--strategy", default="auto", help="lightning: strategy, e.g. ddp, fsdp")
    train.add_argument("--no-export", action="store_true", help="skip the ONNX export at the end")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_predict(commands: Subparsers) -> None:
    predict = _command(
        commands,
        "predict",
        "predict on image files: one JSON line per image (classes, boxes in the image's own pixels, mask "
        "statistics), a class-index mask PNG per segmentation head and each head's picture",
        config=False,
    )
    predict.add_argument("config", help="a config file or name")
    predict.add_argument(
        "images",
        nargs="+",
        help="image files, folders (searched recursively for image files) or glob patterns such as 'photos/*.jpg'",
    )
    _weights_options(predict)
    predict.add_argument("--out", required=True, help="folder for predictions.jsonl, the masks and the pictures")
    predict.add_argument(
        "--resize",
        choices=["letterbox", "stretch"],
        default=None,
        help="how images are brought to the model's input size (default: as the config evaluates)",
    )
    predict.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE, help="images per forward pass")
    predict.add_argument("--top-k", type=int, default=5, help="classes listed per classification (default: 5)")
    predict.add_argument("--no-pictures", action="store_true", help="write predictions.jsonl and masks only")
    predict.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out images that cannot be decoded (counted and named) instead of failing the run",
    )
    predict.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a config override, repeatable",
    )


def _add_export_and_preview(commands: Subparsers) -> None:
    export = _command(
        commands,
        "export",
        "export a config's model to ONNX (the heads' results as outputs, the model's contract as metadata) and "
        "check it against torch in onnxruntime",
    )
    _weights_options(export)
    export.add_argument("--onnx", required=True, help="the ONNX file to write")
    export.add_argument(
        "--output",
        action="append",
        default=None,
        metavar="NAME",
        dest="outputs",
        help="a tensor to export, repeatable (default: the heads' results, e.g. detect/boxes)",
    )
    export.add_argument(
        "--fixed-size",
        action="store_true",
        help="fix height and width to the input size (default: dynamic if possible)",
    )
    preview = _command(
        commands, "preview", "draw augmented samples of a split with their boxes and masks on one PNG grid"
    )
    preview.add_argument("--out", required=True, help="the PNG file to write")
    preview.add_argument("--split", choices=["train", "val", "test"], default="train", help="split (default: train)")
    preview.add_argument("--count", type=int, default=16, help="samples to draw (default: 16)")
    preview.add_argument("--columns", type=int, default=4, help="samples per row (default: 4)")
    preview.add_argument("--epoch", type=int, default=0, help="draw the augmentations of this epoch (default: 0)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brickzoo",
        description="Train, evaluate, visualise and export brick models described by zoo configs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _command(commands, "list", "list the zoo configs and everything the zoo offers", config=False)
    graph = _command(commands, "graph", "print the mermaid graph of a config's model")
    graph.add_argument(
        "--groups",
        action="append",
        default=None,
        help="a group to draw, repeatable (default: all), e.g. --groups MODEL",
    )
    _add_train(commands)
    evaluate = _command(commands, "evaluate", "evaluate trained weights on the config's test (or validation) split")
    _weights_options(evaluate)
    evaluate.add_argument(
        "--split", choices=["train", "val", "test"], default=None, help="split (default: test or val)"
    )
    _add_predict(commands)
    _add_export_and_preview(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brickzoo`` console script."""
    from brickzoo.errors import BrickzooError

    parser = _parser()
    # overrides may come anywhere after the config, also after options: collect them from the leftovers
    args, leftovers = parser.parse_known_args(argv)
    unknown = [item for item in leftovers if item.startswith("-") or "=" not in item]
    if unknown or (leftovers and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or leftovers)}")
    if leftovers:
        args.overrides = [*args.overrides, *leftovers]
    try:
        return int(COMMANDS[args.command](args) or 0)
    except (BrickzooError, UsageError, OSError) as exc:  # OSError: files and folders the user named
        if os.environ.get("BRICKZOO_DEBUG"):
            raise
        print(f"brickzoo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("brickzoo: interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130


# -- commands ---------------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    import yaml

    from brickzoo.bag_of_bricks import list_zoo
    from brickzoo.zoo import dataset_entries, list_configs
    from brickzoo.zoo._config import config_dirs

    print(f"configs (from {', '.join(str(d) for d in config_dirs())}):")
    for path in list_configs():
        first = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        description = first.get("description", "") if isinstance(first, dict) else ""
        print(f"  {path.stem:<28} {description}")
    for kind, names in list_zoo().items():
        print(f"{kind}:")
        for name in names:
            print(f"  {name}")
    print("datasets:")
    for name, entry in dataset_entries().items():
        print(f"  {name:<28} {entry.factory.__name__} ({', '.join(entry.tasks)})")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from brickzoo import create_mermaid_dag_graph
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    print(create_mermaid_dag_graph(recipe.model, groups=set(args.groups) if args.groups else None), end="")
    return 0


def _load(recipe: Any, args: argparse.Namespace) -> None:
    """Load ``--weights`` for evaluate, predict and export: every brick, unless ``--allow-partial``."""
    from brickzoo.training import load_weights

    report = load_weights(recipe.model, args.weights, allow_partial=args.allow_partial, partial_option=ALLOW_PARTIAL)
    if report.partial or report.skipped or report.missing:
        kept = len(report.skipped) + len(report.missing)
        print(
            f"loaded weights from {args.weights} in part ({ALLOW_PARTIAL}): {len(report.loaded)} bricks loaded, "
            f"{len(report.partial)} in part, {kept} keep their random initialisation:"
        )
        print(textwrap.indent(str(report), "  "))
    else:
        print(f"loaded weights from {args.weights} (all {len(report.loaded)} bricks with weights)")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            print(f"  {name:<40} {value:.4f}")


def _is_global_zero() -> bool:
    """Whether this process is the first (or only) one of its job.

    A launcher (torchrun, SLURM, MPI, or Lightning's ``ddp`` strategy, which re-runs this very
    command line in a new process for each further device) gives the processes it starts a rank
    through the environment; only the process of global rank 0 owns the run folder.
    """
    values = [os.environ.get(name, "0").strip() for name in RANK_VARIABLES]
    return all(not value.isdigit() or int(value) == 0 for value in values)


def _train(args: argparse.Namespace) -> int:
    from brickzoo.training import freeze, load_finetune_weights, write_config
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    run_dir = Path(args.out) / (args.name or recipe.name)
    if not _is_global_zero():
        # a process that Lightning (or torchrun) started for another device: rank 0 owns the run folder
        if args.engine != "lightning":
            raise UsageError(
                "the native engine trains in one process; for several processes use "
                "--engine lightning --strategy ddp (Lightning starts the other processes itself)"
            )
        if args.weights:
            load_finetune_weights(recipe.model, args.weights)
        freeze(recipe.model, list(args.freeze) + list(recipe.train_config.freeze))
        _fit(recipe, args, run_dir)
        return 0
    with _claim_run_folder(run_dir, args):
        if args.weights:
            report = load_finetune_weights(recipe.model, args.weights)
            print(f"fine-tuning from {args.weights}:\n{textwrap.indent(str(report), '  ')}")
        patterns = list(args.freeze) + list(recipe.train_config.freeze)
        if patterns:
            print(f"frozen bricks: {', '.join(freeze(recipe.model, patterns))}")
        write_config(run_dir, recipe.resolved_config)  # every "auto" resolved: predict needs no data with it
        result_metrics = _fit(recipe, args, run_dir)
        _print_metrics("final metrics:", {k: v for k, v in result_metrics.items() if k.startswith("val/")})
        if not args.no_export and recipe.export_settings["enabled"]:
            _export_and_check(recipe, run_dir / "model.onnx")
    print(f"run folder: {run_dir}")
    for name in ("metrics.jsonl", "final_metrics.json", "predictions.png", "loss_curves.png", "graph.md", "model.onnx"):
        if (run_dir / name).exists():
            print(f"  {run_dir / name}")
    return 0


@contextlib.contextmanager
def _claim_run_folder(run_dir: Path, args: argparse.Namespace) -> Iterator[None]:
    """Create and lock the run folder; refuse one that holds a checkpoint unless ``--resume``.

    A folder without a checkpoint (left by a run that failed before its first one) is trained in
    again; ``--resume`` of such a folder is refused with what to do instead.
    """
    from brickzoo.training import lock_run_folder, make_output_folder, run_checkpoint

    native = args.engine == "native"
    no_checkpoint = (
        f"run folder {run_dir} holds no checkpoint to continue (its run stopped before the first one); "
        "run the same command without --resume to start it again"
    )
    if args.resume and native and not run_dir.is_dir():
        raise UsageError(no_checkpoint)
    make_output_folder(run_dir, "run folder")
    with lock_run_folder(run_dir) as lock:
        checkpoint = run_checkpoint(run_dir)
        if checkpoint is not None and not args.resume:
            raise UsageError(
                f"run folder {run_dir} already holds a checkpoint ({checkpoint}); pass --resume to continue it, "
                "or --name for a new run folder"
            )
        if args.resume and native and checkpoint is None:
            raise UsageError(no_checkpoint)
        if args.resume and not native:
            print("note: --resume applies to the native engine; the lightning engine starts this run afresh")
        if checkpoint is None and any(p != lock for p in run_dir.iterdir()):
            print(f"run folder {run_dir} holds no checkpoint (an earlier run stopped before its first one): reusing it")
        yield


def _fit(recipe: Any, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Train with the chosen engine; return the final metrics."""
    from brickzoo.training import fit

    if args.engine == "lightning":
        from brickzoo.lightning import fit_with_lightning

        return fit_with_lightning(
            recipe, run_dir=run_dir, devices=args.devices, strategy=args.strategy, quiet=args.quiet
        )
    val_loader = recipe.loader("val") if "val" in recipe.datasets else None
    result = fit(
        recipe.model,
        recipe.loader("train"),
        val_loader,
        recipe.train_config,
        run_dir=run_dir,
        resume=args.resume,
        quiet=args.quiet,
    )
    print(f"trained {result.epochs_completed} epochs ({result.global_step} steps) in {result.seconds:.0f} s")
    return result.final_metrics


def _export_and_check(recipe: Any, path: Path, outputs: Sequence[str] | None = None, fixed: bool = False) -> None:
    """Export the recipe's model for deployment (:func:`brickzoo.zoo.export_onnx`) and print what was written."""
    from brickzoo.zoo import export_onnx

    recipe.model.cpu().eval()
    result = export_onnx(recipe, path, outputs=outputs, dynamic_image_size=not fixed)
    print(result.describe())


def _evaluate(args: argparse.Namespace) -> int:
    from brickzoo.training import evaluate
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    _load(recipe, args)
    split = args.split or recipe.evaluation_split()
    metrics = evaluate(recipe.model, recipe.loader(split, shuffle=False), device=recipe.train_config.device)
    _print_metrics(f"{split} metrics:", metrics)
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=None))
    return 0


# -- predict ------------------------------------------------------------------------------------------
def _image_files(specs: Sequence[str]) -> list[Path]:
    """The image files that ``predict``'s arguments name, in order, each once.

    A file is taken as given (its decoder decides); a folder gives its image files, sub-folders
    included (hidden entries skipped); a glob pattern gives the image files and folders it matches.
    Files of folders and patterns that are not images are skipped, and a line counts them.

    Raises:
        UsageError: an argument names nothing, or a folder or pattern holds no image file.
    """
    from brickzoo.data import IMAGE_EXTENSIONS

    images: dict[Path, Path] = {}
    skipped: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            images.setdefault(path.resolve(), path)
            continue
        if path.is_dir():
            matches, what = [path], f"folder {spec}"
        elif any(char in spec for char in "*?["):
            matches, what = [Path(m) for m in sorted(glob.glob(spec, recursive=True))], f"pattern {spec!r}"
            if not matches:
                raise UsageError(f"{what} matches no file")
        else:
            raise UsageError(
                f"image {spec} does not exist (expected an image file, a folder of images or a glob pattern "
                "such as 'photos/*.jpg')"
            )
        files = [f for m in matches for f in ([m] if m.is_file() else _files_below(m))]
        found = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [f for f in files if f.suffix.lower() not in IMAGE_EXTENSIONS]
        if not found:
            raise UsageError(
                f"{what} holds no image file (expected files ending in {', '.join(IMAGE_EXTENSIONS)}; "
                f"got {len(files)} other files)"
            )
        for file in found:
            images.setdefault(file.resolve(), file)
    if skipped:
        names = ", ".join(str(f) for f in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(f"skipped {len(skipped)} files that are not images: {names}")
    return list(images.values())


def _files_below(folder: Path) -> list[Path]:
    """The files below a folder, sub-folders included, hidden files and folders left out, sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _output_names(images: Sequence[Path]) -> list[str]:
    """One distinct name per image for its pictures: the file stem, plus the extension when stems repeat.

    ``a.png`` and ``a.jpg`` become ``a_png`` and ``a_jpg``; the same name from two folders gets
    ``_2``, ``_3``... appended.
    """
    stems = Counter(p.stem for p in images)
    used: set[str] = set()
    names = []
    for image in images:
        base = image.stem if stems[image.stem] == 1 else f"{image.stem}_{image.suffix.lstrip('.')}"
        name, number = base, 1
        while name in used:
            number += 1
            name = f"{base}_{number}"
        used.add(name)
        names.append(name)
    return names


def _read_images(
    chunk: Sequence[tuple[Path, str]], skip_unreadable: bool, skipped: list[Path]
) -> list[tuple[tuple[Path | None, Any], str]]:
    """Read ``(file, output name)`` pairs as ``((file, image), name)``; unreadable files raise, or are skipped."""
    from brickzoo.data import load_image
    from brickzoo.errors import DataError

    read: list[tuple[tuple[Path | None, Any], str]] = []
    for file, name in chunk:
        try:
            read.append(((file, load_image(file)), name))
        except DataError:
            if not skip_unreadable:
                raise
            skipped.append(file)
    return read


def _summary(prediction: Any) -> str:
    """One line per image: its size and each head's answer."""
    from brickzoo.predict import ClassificationResult, DetectionResult

    parts = []
    for head, result in prediction.heads.items():
        if isinstance(result, ClassificationResult):
            parts.append(f"{head} {result.class_name} {result.score:.2f}")
        elif isinstance(result, DetectionResult):
            best = f" (best {result.names[0]} {float(result.scores[0]):.2f})" if len(result) else ""
            parts.append(f"{head} {len(result)} boxes{best}")
        else:
            present = [name for name, count in list(result.pixel_counts.items())[1:] if count]
            parts.append(f"{head} {', '.join(present) or 'background only'}")
    return f"  {prediction.file} ({prediction.width}x{prediction.height}): {'; '.join(parts)}"


def _predict(args: argparse.Namespace) -> int:
    from brickzoo.predict import PREDICTIONS_FILE, PredictionWriter, Predictor
    from brickzoo.training import check_output_folder
    from brickzoo.zoo import build_recipe

    for option, value in (("--batch-size", args.batch_size), ("--top-k", args.top_k)):
        if value < 1:
            raise UsageError(f"{option} must be 1 or more, got {value}")
    images = _image_files(args.images)
    out = check_output_folder(args.out, "--out")
    recipe = build_recipe(args.config, args.overrides, with_data=False)  # the model and its eval pipeline only
    _load(recipe, args)
    options = {"resize": args.resize} if args.resize else {}
    predictor = Predictor.from_recipe(recipe, batch_size=args.batch_size, top_k=args.top_k, device="cpu", **options)
    recipe.model.cpu()
    named = list(zip(images, _output_names(images), strict=True))
    skipped: list[Path] = []
    count = 0
    with PredictionWriter(out, pictures=not args.no_pictures) as writer:
        for start in range(0, len(named), args.batch_size):
            read = _read_images(named[start : start + args.batch_size], args.skip_unreadable, skipped)
            for prediction, (_, name) in zip(predictor.predict_read([r for r, _ in read]), read, strict=True):
                writer.write(prediction, name)
                count += 1
                if len(images) <= LISTED_FILES:
                    print(_summary(prediction))
    if skipped:
        names = ", ".join(str(f) for f in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(f"skipped {len(skipped)} images that cannot be decoded (--skip-unreadable): {names}")
    print(f"predicted on {count} images: {out / PREDICTIONS_FILE} and {len(writer.written) - 1} PNG files in {out}")
    for path in writer.written if len(images) <= LISTED_FILES else []:
        print(f"  {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from brickzoo.training import check_output_folder, make_output_folder
    from brickzoo.zoo import build_recipe

    onnx_path = Path(args.onnx)
    if onnx_path.is_dir():
        raise UsageError(
            f"--onnx {onnx_path} is a folder; expected the path of the ONNX file to write, "
            f"e.g. {onnx_path / 'model.onnx'}"
        )
    what = f"--onnx {onnx_path}: folder"
    check_output_folder(onnx_path.parent, what)
    recipe = build_recipe(args.config, args.overrides)
    _load(recipe, args)
    make_output_folder(onnx_path.parent, what)
    _export_and_check(recipe, onnx_path, outputs=args.outputs, fixed=args.fixed_size)
    return 0


def _preview_dataset(recipe: Any, split: str, epoch: int) -> Any:
    """The samples of a split as the model sees them: through the split's pipeline (augmented for ``train``)."""
    from brickzoo.data.transforms import TransformedDataset, build_transforms, default_transform_specs
    from brickzoo.errors import ConfigError

    if split not in recipe.datasets:
        raise ConfigError(f"{recipe.origin}: no {split!r} split in data (have {sorted(recipe.datasets)})")
    dataset = recipe.datasets[split]
    if not isinstance(dataset, TransformedDataset):
        from brickzoo._predict_run import recipe_settings

        size = recipe_settings(recipe)["input_size"]
        tasks = list(getattr(dataset, "tasks", {})) or ["classification"]
        pipeline = build_transforms(default_transform_specs(tasks, size, train=split == "train"))
        dataset = TransformedDataset(dataset, pipeline, seed=recipe.train_config.seed)
    dataset.set_epoch(epoch)
    return dataset


def _preview(args: argparse.Namespace) -> int:
    from brickzoo.data import preview_grid
    from brickzoo.training import check_output_folder, make_output_folder
    from brickzoo.zoo import build_recipe

    target = Path(args.out)
    if target.is_dir():
        raise UsageError(f"--out {target} is a folder; expected the PNG file to write, e.g. {target / 'preview.png'}")
    if target.suffix.lower() != ".png":
        raise UsageError(f"--out {target}: expected a file name ending in .png")
    for option, value, least in (
        ("--count", args.count, 1),
        ("--columns", args.columns, 1),
        ("--epoch", args.epoch, 0),
    ):
        if value < least:
            raise UsageError(f"{option} must be {least} or more, got {value}")
    check_output_folder(target.parent, f"--out {target}: folder")
    recipe = build_recipe(args.config, args.overrides)
    dataset = _preview_dataset(recipe, args.split, args.epoch)
    count = min(args.count, len(dataset))
    if count == 0:
        raise UsageError(f"the {args.split} split of {recipe.name} holds no sample to draw")
    grid = preview_grid(dataset, range(count), columns=min(args.columns, count))
    make_output_folder(target.parent, f"--out {target}: folder")
    partial = target.with_name(f".{target.name}.partial")
    grid.save(partial, format="PNG")
    os.replace(partial, target)
    print(
        f"wrote {count} {args.split} samples of {recipe.name} as the model sees them "
        f"({grid.width}x{grid.height} pixels): {target}"
    )
    return 0


COMMANDS = {
    "list": _list,
    "graph": _graph,
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "export": _export,
    "preview": _preview,
}

if __name__ == "__main__":
    raise SystemExit(main())
