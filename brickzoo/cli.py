"""The ``brickzoo`` command: list, graph, train, evaluate, predict and export zoo configs; list, show,
verify and publish prebuilt models (``brickzoo zoo ...``).

Wherever a command takes a config it also takes a prebuilt model (``zoo:<name>``, an entry
folder or its ``https://``/``file://`` URL): the entry's own config, and its weights when
``--weights`` is not given. Wherever it takes ``--weights`` it also takes a prebuilt model:
its weight folder, loaded like any other (strictly for evaluate, predict and export, what fits
for a fine-tune). A fine-tune's run folder records the entry's card (``pretrained.json``),
which also goes into the exported ONNX metadata (``pretrained``).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brickzoo.errors import UsageError

EXAMPLES = """\
examples:
  brickzoo zoo list
  brickzoo predict zoo:shapes_multitask photos/ --out predictions
  brickzoo train shapes_count --weights zoo:shapes_multitask --freeze backbone
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
    "zoo": [
        "brickzoo zoo list",
        "brickzoo zoo list 'shapes*'",
        "brickzoo zoo show shapes_multitask",
        "brickzoo zoo verify shapes_multitask",
        "brickzoo zoo publish runs/shapes_multitask --name my_shapes --out zoo --dtype float16",
    ],
    "graph": ["brickzoo graph shapes_multitask", "brickzoo graph shapes_detection --groups MODEL"],
    "preview": [
        "brickzoo preview shapes_multitask --out preview.png",
        "brickzoo preview shapes_multitask_320 --split val --count 8 --columns 4 --out val.png",
    ],
    "train": [
        "brickzoo train shapes_multitask --out runs train.epochs=2 data.batch_size=16",
        "brickzoo train shapes_multitask --out runs --resume",
        "brickzoo train shapes_detection --weights runs/shapes_multitask --freeze backbone --freeze fpn",
        "brickzoo train shapes_count --weights zoo:shapes_multitask --freeze backbone",
        "brickzoo train zoo:shapes_multitask --out runs     # train a prebuilt model's config from scratch",
        "brickzoo train shapes_multitask --engine lightning --devices 2 --strategy ddp",
    ],
    "evaluate": [
        "brickzoo evaluate shapes_multitask --weights runs/shapes_multitask --split val",
        "brickzoo evaluate zoo:shapes_multitask",
        "brickzoo evaluate my_entry/ --timeout 10",
    ],
    "predict": [
        "brickzoo predict zoo:shapes_multitask photo.jpg photos/ --out predictions",
        "brickzoo predict shapes_multitask photo.jpg photos/ 'more/*.png' --weights runs/shapes_multitask "
        "--out predictions",
        "brickzoo predict shapes_detection photos/ --weights runs/shapes_detection --out out --resize stretch "
        "--skip-unreadable",
    ],
    "export": [
        "brickzoo export shapes_multitask --weights runs/shapes_multitask --onnx model.onnx",
        "brickzoo export zoo:shapes_multitask --onnx shapes.onnx",
        "brickzoo export shapes_multitask --weights runs/shapes_multitask --onnx detect.onnx "
        "--output detect/boxes --output detect/scores --fixed-size",
    ],
}
ALLOW_PARTIAL = "--allow-partial"
CONFIG_HELP = (
    "a config file, the name of one in zoo_configs/ (e.g. shapes_multitask), or a prebuilt model: zoo:<name>, "
    "an entry folder or its https:// / file:// URL (its own config)"
)
WEIGHTS_HELP = (
    "a run folder, a per-brick weight folder, or a prebuilt model: zoo:<name>, an entry folder or its "
    "https:// / file:// URL (downloaded once into $BRICKZOO_HOME, every file checked against its sha256)"
)
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
        sub.add_argument("config", help=CONFIG_HELP)
        sub.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3 data.batch_size=16"
        )
    return sub


def _timeout_option(sub: argparse.ArgumentParser) -> None:
    from brickzoo.zoo._download import DEFAULT_TIMEOUT

    sub.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for a server when a prebuilt model is downloaded (default: {DEFAULT_TIMEOUT:g})",
    )


def _weights_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--weights", default=None, help=WEIGHTS_HELP + "; default for a prebuilt model's config: its weights"
    )
    _timeout_option(sub)
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
    train.add_argument("--weights", default=None, help="fine-tune: start from " + WEIGHTS_HELP)
    _timeout_option(train)
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
    predict.add_argument("config", help=CONFIG_HELP)
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


def _add_zoo(commands: Subparsers) -> None:
    zoo = _command(
        commands, "zoo", "prebuilt models: list them, show a card, verify an entry, publish a run folder", config=False
    )
    actions = zoo.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the shipped prebuilt models as the zoo table")
    listing.add_argument("filter", nargs="?", default=None, help="a name pattern, e.g. 'shapes*' (case-insensitive)")
    show = actions.add_parser("show", help="a prebuilt model's card: heads, classes, metrics, files")
    show.add_argument("name", help="zoo:<name>, a shipped name, an entry folder or its URL")
    show.add_argument("--json", action="store_true", help="print card.json instead of the tables")
    verify = actions.add_parser("verify", help="check every file's sha256 and that the weights fit the config")
    verify.add_argument("name", help="zoo:<name>, a shipped name, an entry folder or its URL")
    for sub in (show, verify):
        _timeout_option(sub)
    publish = actions.add_parser("publish", help="turn a training run folder into an entry folder with its card")
    publish.add_argument("run", help="a run folder written by brickzoo train")
    publish.add_argument("--name", required=True, help="the entry's name (letters, digits, _ . -)")
    publish.add_argument("--out", required=True, help="the folder to write <name>/ in")
    publish.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="weight storage")
    publish.add_argument("--description", default=None, help="one line (default: the config's description)")
    publish.add_argument("--license", default="MIT", help="the weights' licence, an SPDX identifier (default: MIT)")
    publish.add_argument("--url", default=None, help="the folder URL the files will be hosted at")
    publish.add_argument("--no-latency", action="store_true", help="skip the ONNX latency measurement")
    publish.add_argument("--overwrite", action="store_true", help="replace an existing entry <out>/<name>")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brickzoo",
        description="Train, evaluate, visualise and export brick models described by zoo configs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _command(commands, "list", "list the zoo configs and everything the zoo offers", config=False)
    _add_zoo(commands)
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
    evaluate.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="only the first N images of the split (a prebuilt model's card holds the metrics of its first images)",
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
    except BrokenPipeError:  # the reader of stdout went away (brickzoo list | head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        return 141  # 128 + SIGPIPE, what a shell reports for a command whose pipe closed
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

    recipe = build_recipe(_source(args, weights_needed=False).config, args.overrides)
    print(create_mermaid_dag_graph(recipe.model, groups=set(args.groups) if args.groups else None), end="")
    return 0


# -- prebuilt models as configs and weights ----------------------------------------------------------
@dataclass
class _Source:
    """What a command's config and ``--weights`` name, resolved.

    Attributes:
        config: what ``build_recipe`` reads: the config given, or a prebuilt entry's ``config.yaml``.
        weights: the weight folder to load (a run folder, a weight folder, an entry's ``weights/``), or None.
        label: how messages name the weights (as the user gave them).
        entry: the prebuilt entry the weights come from, or None.
        config_entry: the prebuilt entry whose config is used, or None.
    """

    config: str | Path
    weights: str | Path | None
    label: str | None
    entry: Any = None
    config_entry: Any = None


def _is_entry(text: str | None) -> bool:
    """Whether a config or ``--weights`` value names a prebuilt entry (zoo:<name>, URL, entry folder or card)."""
    from brickzoo.zoo import is_pretrained_reference
    from brickzoo.zoo._cards import CARD_FILE

    if text is None:
        return False
    path = Path(text)
    return is_pretrained_reference(text) or (path / CARD_FILE).is_file() or (path.name == CARD_FILE and path.is_file())


def _find_entry(text: str, args: argparse.Namespace) -> Any:
    from brickzoo.zoo import find_pretrained
    from brickzoo.zoo._download import DEFAULT_TIMEOUT

    timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)
    if timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout:g}")
    return find_pretrained(text, timeout=timeout, progress=sys.stderr.isatty())


def _source(args: argparse.Namespace, weights_needed: bool) -> _Source:
    """Resolve ``args.config`` and ``args.weights``: prebuilt entries become their config file and weight folder."""
    from brickzoo.zoo._cards import CONFIG_FILE

    config_entry = _find_entry(args.config, args) if _is_entry(args.config) else None
    config = config_entry.folder / CONFIG_FILE if config_entry is not None else args.config
    given = getattr(args, "weights", None)
    if given is None and config_entry is not None and weights_needed:
        return _Source(config, config_entry.weights_dir, args.config, config_entry, config_entry)
    if given is None:
        if weights_needed:
            raise UsageError(
                "--weights is required (a run folder, a weight folder or a prebuilt model such as "
                "zoo:shapes_multitask), unless the config is a prebuilt model, whose weights are used"
            )
        return _Source(config, None, None, None, config_entry)
    if _is_entry(given):
        entry = config_entry if config_entry is not None and given == args.config else _find_entry(given, args)
        return _Source(config, entry.weights_dir, given, entry, config_entry)
    return _Source(config, given, given, None, config_entry)


def _load(recipe: Any, args: argparse.Namespace, source: _Source) -> None:
    """Load the weights for evaluate, predict and export: every brick, unless ``--allow-partial``."""
    from brickzoo.errors import WeightsError
    from brickzoo.training import load_weights

    if source.weights is None:
        raise UsageError("--weights is required: a run folder, a weight folder or a prebuilt model")
    label = source.label if source.entry is None else f"{source.label} ({source.weights})"
    try:
        report = load_weights(
            recipe.model, source.weights, allow_partial=args.allow_partial, partial_option=ALLOW_PARTIAL
        )
    except WeightsError as exc:
        if source.entry is None or source.config_entry is source.entry:
            raise
        raise type(exc)(
            f"{exc}\nthe prebuilt model {source.label} was trained with its own config: pass {source.label} as the "
            f"config (brickzoo {args.command} {source.label} ...) or fine-tune it into this one with "
            f"brickzoo train {args.config} --weights {source.label}"
        ) from None
    if report.partial or report.skipped or report.missing:
        kept = len(report.skipped) + len(report.missing)
        print(
            f"loaded weights from {label} in part ({ALLOW_PARTIAL}): {len(report.loaded)} bricks loaded, "
            f"{len(report.partial)} in part, {kept} keep their random initialisation:"
        )
        print(textwrap.indent(str(report), "  "))
    else:
        print(f"loaded weights from {label} (all {len(report.loaded)} bricks with weights)")


def _pretrained_record(source: _Source, report: Any = None) -> dict[str, Any]:
    """What a fine-tune's ``pretrained.json`` and an ONNX file's ``pretrained`` metadata hold about the entry."""
    record = {"source": source.label, **source.entry.card.metadata()}
    if report is not None:
        record["loaded_bricks"] = {
            "loaded": list(report.loaded),
            "partial": sorted(report.partial),
            "new": sorted([*report.missing, *report.skipped]),
        }
    return record


def _run_pretrained_record(weights: str | Path | None) -> dict[str, Any] | None:
    """The ``pretrained.json`` of a run folder given as ``--weights`` (a fine-tune of a prebuilt model), if any."""
    from brickzoo.zoo._pretrained import PRETRAINED_RECORD_FILE

    file = Path(weights) / PRETRAINED_RECORD_FILE if weights is not None else None
    if file is None or not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file}: not valid JSON ({exc}); expected the record of the prebuilt model") from None
    return record if isinstance(record, dict) else None


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
    from brickzoo.zoo._pretrained import PRETRAINED_RECORD_FILE

    source = _source(args, weights_needed=False)
    recipe = build_recipe(source.config, args.overrides)
    run_dir = Path(args.out) / (args.name or recipe.name)
    if not _is_global_zero():
        # a process that Lightning (or torchrun) started for another device: rank 0 owns the run folder
        if args.engine != "lightning":
            raise UsageError(
                "the native engine trains in one process; for several processes use "
                "--engine lightning --strategy ddp (Lightning starts the other processes itself)"
            )
        if source.weights is not None:
            load_finetune_weights(recipe.model, source.weights)
        freeze(recipe.model, list(args.freeze) + list(recipe.train_config.freeze))
        _fit(recipe, args, run_dir)
        return 0
    with _claim_run_folder(run_dir, args):
        record = None
        if source.weights is not None:
            report = load_finetune_weights(recipe.model, source.weights)
            _print_finetune_report(source, report)
            record = _pretrained_record(source, report) if source.entry else _run_pretrained_record(source.weights)
        if record is not None:
            write_config(run_dir, record, filename=PRETRAINED_RECORD_FILE)
        patterns = list(args.freeze) + list(recipe.train_config.freeze)
        if patterns:
            print(f"frozen bricks: {', '.join(freeze(recipe.model, patterns))}")
        write_config(run_dir, recipe.resolved_config)  # every "auto" resolved: predict needs no data with it
        result_metrics = _fit(recipe, args, run_dir)
        _print_metrics("final metrics:", {k: v for k, v in result_metrics.items() if k.startswith("val/")})
        if not args.no_export and recipe.export_settings["enabled"]:
            _export_and_check(recipe, run_dir / "model.onnx", pretrained=record)
    print(f"run folder: {run_dir}")
    names = ("metrics.jsonl", "final_metrics.json", "predictions.png", "loss_curves.png", "graph.md", "model.onnx")
    for name in (*names, PRETRAINED_RECORD_FILE):
        if (run_dir / name).exists():
            print(f"  {run_dir / name}")
    return 0


def _print_finetune_report(source: _Source, report: Any) -> None:
    """One line counting loaded, partly loaded and new bricks, then one line per brick."""
    where = source.label if source.entry is None else f"{source.label} ({source.weights})"
    new = [*report.missing, *report.skipped]
    print(
        f"fine-tuning from {where}: {len(report.loaded)} bricks loaded, {len(report.partial)} in part, "
        f"{len(new)} new{': ' + ', '.join(new) if new else ''}"
    )
    print(textwrap.indent(str(report), "  "))


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


def _export_and_check(
    recipe: Any,
    path: Path,
    outputs: Sequence[str] | None = None,
    fixed: bool = False,
    pretrained: dict[str, Any] | None = None,
) -> None:
    """Export the recipe's model for deployment (:func:`brickzoo.zoo.export_onnx`) and print what was written.

    ``pretrained`` (the prebuilt model it started from) goes into the metadata as ``pretrained``.
    """
    from brickzoo.zoo import export_onnx

    recipe.model.cpu().eval()
    extra = {"pretrained": pretrained} if pretrained is not None else None
    result = export_onnx(recipe, path, outputs=outputs, dynamic_image_size=not fixed, extra_metadata=extra)
    print(result.describe())


def _evaluate(args: argparse.Namespace) -> int:
    from brickzoo.training import evaluate
    from brickzoo.zoo import build_recipe

    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples must be 1 or more, got {args.samples}")
    source = _source(args, weights_needed=True)
    recipe = build_recipe(source.config, args.overrides)
    _load(recipe, args, source)
    split = args.split or recipe.evaluation_split()
    loader = recipe.loader(split, shuffle=False)
    if args.samples is not None:
        loader = _first_samples(recipe, split, args.samples)
    metrics = evaluate(recipe.model, loader, device=recipe.train_config.device)
    count = len(loader.dataset)  # type: ignore[arg-type]
    _print_metrics(f"{split} metrics ({count} images):", metrics)
    if source.entry is not None and source.entry is source.config_entry:
        _compare_with_card(source.entry.card, recipe, split, metrics, args.samples)
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=None))
    return 0


def _first_samples(recipe: Any, split: str, count: int) -> Any:
    """A loader over the first ``count`` samples of a split, in order (``evaluate --samples``)."""
    from torch.utils.data import Subset

    from brickzoo.data import make_loader

    dataset = recipe.datasets[split]
    subset = Subset(dataset, range(min(count, len(dataset))))
    return make_loader(subset, batch_size=recipe.eval_batch_size, shuffle=False, seed=recipe.train_config.seed)


def _compare_with_card(card: Any, recipe: Any, split: str, metrics: dict[str, Any], samples: int | None) -> None:
    """Print the card's metrics beside the measured ones when they were measured on these very images.

    Those are the card's held-out split (all of it), or its first ``metrics.subset.num_samples`` images.
    """
    from brickzoo.zoo._pretrained import card_metric_values, describe_split

    measured_on = describe_split(recipe.config, split)
    subset = card.metrics.subset
    if measured_on != card.metrics.dataset:
        print(f"(the card's metrics are on {card.metrics.dataset}, not on {measured_on}: not compared)")
        return
    if samples is None or samples >= len(recipe.datasets[split]):
        expected_values, what = card.metrics.values, card.metrics.dataset
    elif subset is not None and samples == subset.num_samples:
        expected_values, what = subset.values, f"the first {samples} images of {card.metrics.dataset}"
    else:
        told = f"all of it or its first {subset.num_samples}" if subset is not None else "all of it"
        print(f"(the card holds metrics of {card.metrics.dataset}, {told}; not of its first {samples} images)")
        return
    print(f"the card of {card.name} on {what} ({card.metrics.weights}):")
    measured = card_metric_values(metrics)
    for name, expected in expected_values.items():
        got = measured.get(name)
        if expected is None or got is None:
            print(f"  {name:<40} card {expected}, measured {got}")
            continue
        print(f"  {name:<40} card {expected:.4f}, measured {got:.4f} (difference {got - expected:+.4f})")


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


SUMMARY_MIN_SCORE = 0.3  # the detection visualizer's default min_score: boxes the picture shows


def _summary(prediction: Any) -> str:
    """One line per image: its size and each head's answer."""
    from brickzoo.predict import ClassificationResult, DetectionResult

    parts = []
    for head, result in prediction.heads.items():
        if isinstance(result, ClassificationResult):
            parts.append(f"{head} {result.class_name} {result.score:.2f}")
        elif isinstance(result, DetectionResult):
            # the JSON keeps every detection above the head's score_threshold (as COCO evaluation wants);
            # the line says how many of them are confident, as the picture draws them
            confident = int((result.scores >= SUMMARY_MIN_SCORE).sum())
            best = f", best {result.names[0]} {float(result.scores[0]):.2f}" if len(result) else ""
            parts.append(f"{head} {confident} boxes scoring {SUMMARY_MIN_SCORE} or more ({len(result)} in all{best})")
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
    source = _source(args, weights_needed=True)
    recipe = build_recipe(source.config, args.overrides, with_data=False)  # the model and its eval pipeline only
    _load(recipe, args, source)
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
    source = _source(args, weights_needed=True)
    recipe = build_recipe(source.config, args.overrides)
    _load(recipe, args, source)
    record = _pretrained_record(source) if source.entry is not None else _run_pretrained_record(source.weights)
    make_output_folder(onnx_path.parent, what)
    _export_and_check(recipe, onnx_path, outputs=args.outputs, fixed=args.fixed_size, pretrained=record)
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
    recipe = build_recipe(_source(args, weights_needed=False).config, args.overrides)
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


# -- zoo: prebuilt models --------------------------------------------------------------------------------
def _zoo(args: argparse.Namespace) -> int:
    return int(ZOO_ACTIONS[args.zoo_command](args) or 0)


def _zoo_list(args: argparse.Namespace) -> int:
    from brickzoo.zoo import cards_table, pretrained_cards
    from brickzoo.zoo._pretrained import shipped_dir

    cards = pretrained_cards(args.filter)
    if not cards:
        known = list(pretrained_cards())
        what = f"matches {args.filter!r}" if args.filter else "is shipped"
        print(f"no prebuilt model {what}; shipped: {known or 'none'}")
        return 0
    print(f"prebuilt models shipped in {shipped_dir()} (metrics on each card's held-out set):\n")
    print(cards_table(cards.values()))
    print("\nuse one: brickzoo predict zoo:<name> IMAGES --out DIR; its card: brickzoo zoo show <name>")
    return 0


def _zoo_show(args: argparse.Namespace) -> int:
    from brickzoo.zoo._cards import card_markdown

    entry = _find_entry(args.name, args)
    if args.json:
        print(json.dumps(entry.card.to_dict(), indent=2, ensure_ascii=False))
        return 0
    text = card_markdown(entry.card).split("## Use")[0]
    print(text.split("---\n", 2)[2].strip() if text.startswith("---\n") else text.strip())  # no front matter
    print(f"\nentry folder: {entry.folder}")
    print(f"weights:      --weights zoo:{entry.name} (or {entry.weights_dir})")
    return 0


def _zoo_verify(args: argparse.Namespace) -> int:
    from brickzoo.zoo import verify_pretrained
    from brickzoo.zoo._download import DEFAULT_TIMEOUT

    hashes = verify_pretrained(args.name, timeout=getattr(args, "timeout", DEFAULT_TIMEOUT), progress=False)
    for relative, digest in hashes.items():
        print(f"  ok  {digest}  {relative}")
    print(f"{args.name}: {len(hashes)} files match their sha256 in the card, and every brick loads its weights")
    return 0


def _zoo_publish(args: argparse.Namespace) -> int:
    from brickzoo.zoo import publish_pretrained

    entry = publish_pretrained(
        args.run,
        args.name,
        args.out,
        description=args.description,
        license=args.license,
        dtype=args.dtype,
        url=args.url,
        measure_latency=not args.no_latency,
        overwrite=args.overwrite,
    )
    card = entry.card
    print(f"published {entry.folder}: {len(card.files)} files, weights {card.file_size_mb} MB ({card.storage_dtype})")
    print(f"  metrics on {card.metrics.dataset} ({card.metrics.weights}):")
    for name, value in card.metrics.values.items():
        print(f"    {name:<38} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"load it: brickzoo evaluate {entry.folder}   or   load_pretrained({str(entry.folder)!r})")
    return 0


ZOO_ACTIONS = {"list": _zoo_list, "show": _zoo_show, "verify": _zoo_verify, "publish": _zoo_publish}

COMMANDS = {
    "list": _list,
    "zoo": _zoo,
    "graph": _graph,
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "export": _export,
    "preview": _preview,
}

if __name__ == "__main__":
    raise SystemExit(main())
