"""The files of a run folder, one writer each, so the CLI can call them on their own.

A run folder holds ``config.json`` (the caller's whole config), ``train_config.json``,
``metrics.jsonl`` (one JSON line per epoch), ``final_metrics.json``, ``loss_curves.png``,
``predictions.png``, ``graph.md`` and the ``checkpoint/`` folder. Every file is written to a
temporary file and renamed into place. While a process trains in it, the folder holds
``.brickzoo.lock`` (see :func:`lock_run_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from brickzoo._collection import BrickCollection
from brickzoo._groups import MODEL, VISUALIZATION, Stage
from brickzoo._mermaid import create_mermaid_dag_graph
from brickzoo._weights import _atomic_write
from brickzoo.errors import DataError, OutputError
from brickzoo.training._checkpoint import find_checkpoint
from brickzoo.training._plots import plot_loss_curves, predictions_grid

METRICS_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"
CONFIG_FILE = "config.json"
TRAIN_CONFIG_FILE = "train_config.json"
LOSS_CURVES_FILE = "loss_curves.png"
PREDICTIONS_FILE = "predictions.png"
GRAPH_FILE = "graph.md"
LOCK_FILE = ".brickzoo.lock"
VISUALIZATION_GROUPS = frozenset({MODEL, VISUALIZATION})


def to_python(value: Any) -> Any:
    """Tensors and numbers to JSON-ready values: 0-d tensors to numbers, others to nested lists.

    Non-finite floats become None, which JSON can hold.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries that are single numbers (or None); lists such as confusion matrices are left out."""
    return {k: v for k, v in values.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def _write_text(path: Path, text: str) -> Path:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def write_config(run_dir: str | Path, config: Mapping[str, Any], filename: str = CONFIG_FILE) -> Path:
    """Write a config as JSON: ``config.json`` by default (the caller's whole config, e.g. a zoo config).

    :func:`~brickzoo.training.fit` writes its :class:`TrainConfig` to ``train_config.json``.
    """
    return _write_text(Path(run_dir) / filename, json.dumps(to_python(config), indent=2) + "\n")


def read_metrics(run_dir: str | Path, last_epoch: int | None = None) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (up to ``last_epoch`` when given); [] without the file.

    Raises:
        DataError: a line is not valid JSON; the message gives the file and line number.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: expected one JSON object per line, got {line[:80]!r} ({exc})") from exc
        if last_epoch is None or record.get("epoch", 0) <= last_epoch:
            records.append(record)
    return records


def write_metrics(run_dir: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``metrics.jsonl``, one JSON line per epoch record (rewritten whole, atomically)."""
    text = "".join(json.dumps(to_python(r)) + "\n" for r in records)
    return _write_text(Path(run_dir) / METRICS_FILE, text)


def write_final_metrics(run_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``final_metrics.json``: every value, lists (confusion matrices...) included."""
    return _write_text(Path(run_dir) / FINAL_METRICS_FILE, json.dumps(to_python(metrics), indent=2) + "\n")


def write_loss_curves(
    run_dir: str | Path, history: Sequence[Mapping[str, Any]], loss_names: Sequence[str] = ()
) -> Path:
    """Draw the loss and validation metric curves of the epoch records to ``loss_curves.png``."""
    image = plot_loss_curves(history, loss_names)
    path = Path(run_dir) / LOSS_CURVES_FILE
    _atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def write_graph(run_dir: str | Path, collection: BrickCollection) -> Path:
    """Write ``graph.md``: the mermaid graph of every brick of the collection."""
    mermaid = create_mermaid_dag_graph(collection)
    text = (
        "# Bricks\n\nEvery brick of the trained collection and the tensors between them.\n\n"
        f"```mermaid\n{mermaid}\n```\n"
    )
    return _write_text(Path(run_dir) / GRAPH_FILE, text)


def has_visualizations(collection: BrickCollection) -> bool:
    """Whether any brick of the collection belongs to the VISUALIZATION group."""
    return any(VISUALIZATION in brick.groups for _, brick in collection.named_bricks())


def visualize_batch(collection: BrickCollection, batch: Mapping[str, Any]) -> dict[str, list[Image.Image]]:
    """Run the MODEL and VISUALIZATION bricks in eval mode on one batch; keep the outputs that are images.

    The batch must already be on the collection's device. The collection's train/eval mode is restored.

    Returns:
        ``{output name: [one pillow image per input image]}``, in execution order.
    """
    was_training = collection.training
    collection.eval()
    try:
        with torch.no_grad():
            outputs = collection(dict(batch), groups=VISUALIZATION_GROUPS, stage=Stage.VALIDATION)
    finally:
        collection.train(was_training)
    return {
        name: value
        for name, value in outputs.items()
        if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value)
    }


def write_predictions(
    run_dir: str | Path, collection: BrickCollection, batch: Mapping[str, Any], max_images: int = 8
) -> Path | None:
    """Draw the collection's visualizations of one batch as a captioned grid to ``predictions.png``.

    Every output that is a list of pillow images becomes a row. Returns None (and writes nothing)
    when the collection draws no images.
    """
    rows = visualize_batch(collection, batch)
    if not rows:
        return None
    image = predictions_grid(rows, max_images=max_images)
    path = Path(run_dir) / PREDICTIONS_FILE
    _atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


# -- output folders and the run folder's lock -----------------------------------------------------
def check_output_folder(path: str | Path, what: str) -> Path:
    """Check that ``path`` is, or can be created as, a folder this process can write in; create nothing.

    The nearest existing folder on the way is probed by creating (and deleting) a temporary
    file, which also catches what permission bits cannot tell (read-only file systems,
    ``/proc``, ``/sys``, root's rights).

    Args:
        path: the folder.
        what: how the user named it, for the message (e.g. ``"--out"``).

    Raises:
        OutputError: ``path`` or a folder on its way is a file, or nothing can be written there.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        raise OutputError(f"{what} {folder} {where}; expected a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(
            f"{what} {folder}: cannot write in {existing} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
    return folder


def make_output_folder(path: str | Path, what: str) -> Path:
    """Create a folder to write outputs in (parents included) after :func:`check_output_folder`.

    Raises:
        OutputError: as :func:`check_output_folder`, or the folder cannot be created.
    """
    folder = check_output_folder(path, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot create the folder ({exc.strerror or exc})") from exc
    return folder


def run_checkpoint(run_dir: str | Path) -> Path | None:
    """What makes a run folder a run to continue rather than to start: its checkpoint, if any.

    That is the native engine's last complete checkpoint, the final ``weights/`` of a run of the
    lightning engine, or a Lightning checkpoint under ``lightning/checkpoints``. A folder left by
    a run that failed before its first checkpoint holds none and can be trained in again.
    """
    run = Path(run_dir)
    checkpoint = find_checkpoint(run)
    if checkpoint is not None:
        return checkpoint
    if (run / "weights").is_dir() and any((run / "weights").iterdir()):
        return run / "weights"
    return next(iter(sorted((run / "lightning" / "checkpoints").glob("*.ckpt"))), None)


@contextlib.contextmanager
def lock_run_folder(run_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on a run folder while this process trains in it.

    The lock is ``fcntl.flock`` on ``<run_dir>/.brickzoo.lock``, which holds the owner's process
    id. The kernel releases it when the process ends, however it ends, so a crashed run never
    leaves a stale lock; the file is removed on a normal exit. Where the file system cannot lock
    (or without ``fcntl``), a warning says so and training goes on unlocked.

    Args:
        run_dir: an existing run folder.

    Yields:
        The lock file.

    Raises:
        OutputError: another process holds the lock; the message names the folder and its pid.
    """
    file = Path(run_dir) / LOCK_FILE
    fd = _locked_fd(file)
    try:
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield file
    finally:
        if fd is not None:
            file.unlink(missing_ok=True)  # before unlocking: a process waiting on this file retries on the new one
            os.close(fd)


def _locked_fd(file: Path) -> int | None:
    """Open and lock ``file``; None (and a warning) where the system or file system cannot lock."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        warnings.warn(f"cannot lock run folder {file.parent} on this system; training goes on unlocked", stacklevel=4)
        return None
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                warnings.warn(f"cannot lock run folder {file.parent} ({exc}); training goes on unlocked", stacklevel=4)
                return None
            pid = f" (pid {owner})" if owner.isdigit() else ""
            raise OutputError(
                f"run folder {file.parent} is in use by another brickzoo process{pid}; wait for it to end, "
                "or pass --name for a new run folder"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the owner removed the file between our open and lock: lock the new one
