"""Atomic training checkpoints: per-brick weights plus the trainer's state, swapped in with renames.

A checkpoint is the folder ``<run_dir>/checkpoint/`` holding the files of
:func:`brickzoo.save_bricks` (``<brick path>.pt``) and ``trainer_state.pt``. It is written into a
temporary folder next to it first; then the previous checkpoint is renamed to
``checkpoint.old``, the new one renamed into place and the old one deleted. A checkpoint folder
is therefore always complete, and whatever moment an interruption (Ctrl-C, a killed job) hits,
``checkpoint`` or ``checkpoint.old`` holds the last complete one; :func:`find_checkpoint` picks it.

``trainer_state.pt`` holds only tensors, numbers, strings, lists, tuples and dicts (numpy's RNG
key is stored as a tensor), so it is read with ``torch.load(weights_only=True)``, no exception.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from brickzoo._weights import save_bricks
from brickzoo.errors import WeightsError

if TYPE_CHECKING:
    from brickzoo._collection import BrickCollection

CHECKPOINT_DIR = "checkpoint"
PREVIOUS_DIR = "checkpoint.old"
TRAINER_STATE = "trainer_state.pt"
_TMP_PREFIX = ".checkpoint-"
FORMAT_VERSION = 1


# -- random number generators ----------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and CUDA), numpy's and python's global generators."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA states only where the GPUs match)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": saved["bit_generator"],
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. a peek at a loader) without changing any global random generator."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


# -- checkpoints -------------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | Path, collection: BrickCollection, trainer_state: dict[str, Any]) -> Path:
    """Write ``<run_dir>/checkpoint/`` atomically: per-brick weights plus ``trainer_state.pt``.

    Args:
        run_dir: the run folder (created when missing).
        collection: its bricks' weights are saved with :func:`brickzoo.save_bricks`.
        trainer_state: what the trainer needs to continue (optimizer, scheduler, counters, RNG
            states); only tensors, numbers, strings and containers of them.

    Returns:
        The checkpoint folder.

    Raises:
        WeightsError: a brick at the root is named ``trainer_state``, which would clash.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    for path, brick in collection.named_bricks():
        if path == Path(TRAINER_STATE).stem and brick.state_dict():
            raise WeightsError(
                f"brick '{path}' would be saved as {TRAINER_STATE}, the trainer's own file in a checkpoint; "
                "rename the brick"
            )
    for stale in run.glob(f"{_TMP_PREFIX}*"):  # left by a save interrupted during its own clean-up
        shutil.rmtree(stale, ignore_errors=True)
    final, previous = run / CHECKPOINT_DIR, run / PREVIOUS_DIR
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=run))
    try:
        save_bricks(collection, tmp, exist_ok=True)
        torch.save({"format_version": FORMAT_VERSION, **trainer_state}, tmp / TRAINER_STATE)
        if final.exists():
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(final, previous)  # from here until the next rename, checkpoint.old is the last one
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return final


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The last complete checkpoint folder of a run folder, or None when it has none."""
    for name in (CHECKPOINT_DIR, PREVIOUS_DIR):
        folder = Path(run_dir) / name
        if (folder / TRAINER_STATE).is_file():
            return folder
    return None


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """Read ``trainer_state.pt`` of a checkpoint folder with ``torch.load(weights_only=True)``.

    Raises:
        WeightsError: the file is missing, unreadable, or of another format version.
    """
    file = Path(checkpoint) / TRAINER_STATE
    if not file.is_file():
        raise WeightsError(f"checkpoint {checkpoint} has no {TRAINER_STATE}; expected a folder written by fit()")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read {file}: {type(exc).__name__}: {exc}") from exc
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise WeightsError(f"{file}: expected a trainer state of format version {FORMAT_VERSION}, got {version!r}")
    return state
