"""The ``brickzoo`` command: list, graph, train, evaluate, predict and export zoo configs.

User errors (a bad config, a missing file, wrong arguments) end with one ``brickzoo: error:``
message and exit status 2, without a traceback; set ``BRICKZOO_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  brickzoo list
  brickzoo graph shapes_multitask
  brickzoo train shapes_multitask --out runs train.epochs=2 data.batch_size=16
  brickzoo train shapes_multitask --engine lightning --devices 2 --strategy ddp
  brickzoo evaluate shapes_multitask --weights runs/shapes_multitask
  brickzoo predict shapes_multitask --weights runs/shapes_multitask photo1.png photo2.jpg --out predictions
  brickzoo train shapes_detection --weights runs/shapes_multitask --freeze backbone --freeze fpn
  brickzoo export shapes_multitask --weights runs/shapes_multitask --onnx model.onnx
"""


class UserError(Exception):
    """A problem with what the user asked for; printed as one message, no traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brickzoo",
        description="Train, evaluate, visualise and export brick models described by zoo configs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def config_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("config", help="a config file, or the name of one in zoo_configs/ (e.g. shapes_multitask)")
        sub.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3 data.batch_size=16"
        )
        return sub

    commands.add_parser("list", help="list the zoo configs and everything the zoo offers")

    graph = config_command("graph", "print the mermaid graph of a config's model")
    graph.add_argument(
        "--groups",
        action="append",
        default=None,
        help="a group to draw, repeatable (default: all), e.g. --groups MODEL",
    )

    train = config_command("train", "train a config; writes a run folder with metrics, pictures and the ONNX model")
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

    evaluate = config_command("evaluate", "evaluate trained weights on the config's test (or validation) split")
    evaluate.add_argument("--weights", required=True, help="a run folder or a per-brick weight folder")
    evaluate.add_argument(
        "--split", choices=["train", "val", "test"], default=None, help="split (default: test or val)"
    )

    predict = commands.add_parser(
        "predict", help="draw a model's predictions on image files", description="draw predictions on image files"
    )
    predict.add_argument("config", help="a config file or name")
    predict.add_argument("images", nargs="+", help="image files (png, jpg, ...)")
    predict.add_argument("--weights", required=True, help="a run folder or a per-brick weight folder")
    predict.add_argument("--out", required=True, help="folder for the pictures")
    predict.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a config override, repeatable",
    )

    export = config_command("export", "export a config's MODEL group to ONNX and check it against torch")
    export.add_argument("--weights", required=True, help="a run folder or a per-brick weight folder")
    export.add_argument("--onnx", required=True, help="the ONNX file to write")
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
    except (BrickzooError, UserError, FileNotFoundError) as exc:
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

    print("configs:")
    for path in list_configs():
        first = yaml.safe_load(path.read_text()) or {}
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


def _weights_folder(weights: str) -> Path:
    from brickzoo.training import weights_folder

    return weights_folder(weights)


def _load(recipe: Any, weights: str) -> None:
    folder = _weights_folder(weights)
    recipe.model.load_bricks(folder, strict=True)
    print(f"loaded weights from {folder}")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            print(f"  {name:<40} {value:.4f}")


def _train(args: argparse.Namespace) -> int:
    from brickzoo.training import fit, freeze, load_pretrained, write_config
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    run_dir = Path(args.out) / (args.name or recipe.name)
    if run_dir.exists() and any(run_dir.iterdir()) and not args.resume:
        raise UserError(f"run folder {run_dir} already exists; pass --resume to continue it or --name for a new one")
    if args.weights:
        report = load_pretrained(recipe.model, args.weights)
        print(f"fine-tuning from {args.weights}:\n{textwrap.indent(str(report), '  ')}")
    patterns = list(args.freeze) + list(recipe.train_config.freeze)
    if patterns:
        frozen = freeze(recipe.model, patterns)
        print(f"frozen bricks: {', '.join(frozen)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, recipe.config)
    val_loader = recipe.loader("val") if "val" in recipe.datasets else None
    if args.engine == "lightning":
        from brickzoo.lightning import fit_with_lightning

        result_metrics = fit_with_lightning(
            recipe, run_dir=run_dir, devices=args.devices, strategy=args.strategy, quiet=args.quiet
        )
        if args.resume:
            print("note: --resume applies to the native engine; Lightning resumes from its own checkpoints")
    else:
        result = fit(
            recipe.model,
            recipe.loader("train"),
            val_loader,
            recipe.train_config,
            run_dir=run_dir,
            resume=args.resume,
            quiet=args.quiet,
        )
        result_metrics = result.final_metrics
        print(f"trained {result.epochs_completed} epochs ({result.global_step} steps) in {result.seconds:.0f} s")
    _print_metrics("final metrics:", {k: v for k, v in result_metrics.items() if k.startswith("val/")})
    if not args.no_export and recipe.export_settings["enabled"]:
        _export_and_check(recipe, run_dir / "model.onnx")
    print(f"run folder: {run_dir}")
    for name in ("metrics.jsonl", "final_metrics.json", "predictions.png", "loss_curves.png", "graph.md", "model.onnx"):
        if (run_dir / name).exists():
            print(f"  {run_dir / name}")
    return 0


def _export_and_check(recipe: Any, path: Path) -> None:
    from brickzoo import check_onnx_parity, export_bricks_as_onnx

    settings = recipe.export_settings
    model = recipe.model.cpu().eval()
    inputs = recipe.example_inputs(settings["batch_size"])
    export_bricks_as_onnx(path, model, inputs, dynamic_batch_size=True, opset_version=settings["opset_version"])
    check_inputs = recipe.example_inputs(settings["check_batch_size"])
    report = check_onnx_parity(path, model, check_inputs)
    print(f"exported {path}")
    print(report)


def _evaluate(args: argparse.Namespace) -> int:
    from brickzoo.training import evaluate
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    _load(recipe, args.weights)
    split = args.split or recipe.evaluation_split()
    metrics = evaluate(recipe.model, recipe.loader(split), device=recipe.train_config.device)
    _print_metrics(f"{split} metrics:", metrics)
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=None))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image, UnidentifiedImageError

    from brickzoo import Stage
    from brickzoo.tensor_conversions import pillow_images_to_batched_tensor
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    _load(recipe, args.weights)
    size = recipe.example_inputs(1)["images"].shape[-2:]
    images = []
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"image {path} does not exist")
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB").resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"image {path} cannot be read as an image: {exc}") from exc
    batch = {"images": pillow_images_to_batched_tensor(images)}
    model = recipe.model.cpu().eval()
    groups = {"MODEL", "VISUALIZATION"}
    missing = set(model.required_inputs(groups)) - set(batch)
    if missing:
        raise UserError(f"the model's visualizers need {sorted(missing)}, which image files do not give")
    with torch.no_grad():
        outputs = model(batch, groups=groups, stage=Stage.INFERENCE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, value in outputs.items():
        if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
            for source, picture in zip(args.images, value, strict=True):
                target = out / f"{Path(source).stem}_{name.replace('/', '_')}.png"
                picture.save(target)
                written.append(target)
    for path in written:
        print(path)
    return 0


def _export(args: argparse.Namespace) -> int:
    from brickzoo.zoo import build_recipe

    recipe = build_recipe(args.config, args.overrides)
    _load(recipe, args.weights)
    _export_and_check(recipe, Path(args.onnx))
    return 0


COMMANDS = {
    "list": _list,
    "graph": _graph,
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "export": _export,
}

if __name__ == "__main__":
    raise SystemExit(main())
