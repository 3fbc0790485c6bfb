"""Per-brick weight files: one file per brick, in folders mirroring the nesting of the collection."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from brickzoo._graph import iter_bricks
from brickzoo.errors import WeightsError, WeightsNotADirectoryError, WeightsNotFoundError

if TYPE_CHECKING:
    from brickzoo._collection import BrickCollection

FORMATS = {"pt": ".pt", "safetensors": ".safetensors"}


@dataclass
class LoadReport:
    """What :func:`load_bricks` did, brick by brick.

    Attributes:
        loaded: paths of bricks whose every tensor was loaded.
        partial: ``{path: [skipped tensor descriptions]}`` for bricks loaded in part.
        skipped: ``{path: reason}`` for bricks with a file of which nothing could be loaded.
        missing: paths of bricks with weights but no file (they keep their current weights).
        unexpected: weight files that belong to no brick of the collection.
    """

    loaded: list[str] = field(default_factory=list)
    partial: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded  {p}" for p in self.loaded]
        lines += [f"partial {p}: skipped {', '.join(items)}" for p, items in self.partial.items()]
        lines += [f"skipped {p}: {why}" for p, why in self.skipped.items()]
        lines += [f"new     {p} (no weight file, keeps its initialisation)" for p in self.missing]
        lines += [f"unused  {f}" for f in self.unexpected]
        return "\n".join(lines) if lines else "nothing to load"


def _suffix(format: str) -> str:  # noqa: A002
    if format not in FORMATS:
        raise WeightsError(f"unknown weight format {format!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[format]


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600 files; others may need to read weights
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict atomically as ``.pt`` or ``.safetensors`` (chosen by the suffix)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
        _atomic_write(path, lambda tmp: save_file(tensors, tmp))
    else:
        _atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a weight file without executing code from it (``weights_only=True`` / safetensors)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weight file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"weight file {path} holds a {type(state).__name__}, expected a state dict")
    return state


def save_bricks(
    collection: BrickCollection,
    path_model_folder: str | Path,
    exist_ok: bool = False,
    format: str = "pt",  # noqa: A002
) -> list[Path]:
    """Save one weight file per brick that has parameters or buffers.

    A brick at path ``head0/classify`` is written to ``<folder>/head0/classify.pt`` (or
    ``.safetensors``). Each file is written to a temporary file first and then renamed, so an
    interrupted save never leaves a half-written file.

    Args:
        collection: the bricks to save.
        path_model_folder: the folder to write to.
        exist_ok: allow writing into a folder that already holds files.
        format: ``"pt"`` (``torch.save``) or ``"safetensors"``.

    Returns:
        The files written.
    """
    folder = Path(path_model_folder)
    suffix = _suffix(format)
    if folder.exists() and not folder.is_dir():
        raise WeightsNotADirectoryError(
            f"save_bricks: {folder} is a file; expected a folder to write one file per brick"
        )
    if folder.exists() and not exist_ok and any(folder.iterdir()):
        raise WeightsError(f"folder {folder} already holds files; pass exist_ok=True to write into it")
    written = []
    for path, brick in iter_bricks(collection):
        state = brick.state_dict()
        if not state:
            continue
        file = folder / f"{path}{suffix}"
        save_state(state, file)
        written.append(file)
    return written


def _find_file(folder: Path, path: str) -> Path | None:
    for suffix in FORMATS.values():
        candidate = folder / f"{path}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise WeightsNotFoundError(
            f"weight folder {folder} does not exist; expected a folder written by save_bricks "
            "(one <brick path>.pt or .safetensors file per brick)"
        )
    if not folder.is_dir():
        raise WeightsNotADirectoryError(
            f"weights {folder} is a file; expected a folder written by save_bricks "
            "(one <brick path>.pt or .safetensors file per brick)"
        )


def _match_state(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    """The tensors of ``state`` that fit ``own`` (same name and shape) and a description of the rest."""
    usable: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for name, tensor in state.items():
        if name not in own:
            skipped.append(f"{name} (not in the brick)")
        elif tuple(tensor.shape) != tuple(own[name].shape):
            skipped.append(f"{name} (file {list(tensor.shape)} vs brick {list(own[name].shape)})")
        else:
            usable[name] = tensor
    skipped += [f"{name} (missing from the file)" for name in own if name not in state]
    return usable, skipped


def load_bricks(collection: BrickCollection, path_model_folder: str | Path, strict: bool = True) -> LoadReport:
    """Load the per-brick weight files written by :func:`save_bricks`.

    Every file is read and checked before any weight is changed.

    Args:
        collection: the bricks to load into.
        path_model_folder: the folder written by :func:`save_bricks`.
        strict: if True, every brick with parameters or buffers must have a file whose tensors
            match the brick's (names and shapes); otherwise :class:`WeightsError` lists every
            brick concerned (no file, or which tensors differ) and nothing is loaded. Files of
            bricks the collection does not have are listed as ``unexpected`` in the report. If
            False, matching tensors are loaded, the rest is reported, and bricks without a file
            keep their weights (with a warning).

    Returns:
        A :class:`LoadReport`.

    Raises:
        WeightsNotFoundError: the folder does not exist (also a ``FileNotFoundError``).
        WeightsNotADirectoryError: a file was given (also a ``NotADirectoryError``).
        WeightsError: ``strict`` and a brick gets no or not all of its tensors; the error's
            ``problems`` attribute lists them.
    """
    folder = Path(path_model_folder)
    _check_folder(folder)
    report = LoadReport()
    plans: list[tuple[Any, dict[str, torch.Tensor]]] = []
    problems: list[str] = []
    known_files: set[Path] = set()
    for path, brick in iter_bricks(collection):
        own = brick.state_dict()
        if not own:
            continue
        file = _find_file(folder, path)
        if file is None:
            report.missing.append(path)
            problems.append(f"brick '{path}': no weight file {path}.pt or {path}.safetensors")
            continue
        known_files.add(file.resolve())
        usable, skipped = _match_state(own, read_state(file))
        if skipped:
            problems.append(f"brick '{path}' ({file}): " + "; ".join(skipped))
        if not usable:
            report.skipped[path] = "nothing matches: " + ", ".join(skipped)
            continue
        plans.append((brick, usable))
        if skipped:
            report.partial[path] = skipped
        else:
            report.loaded.append(path)
    if strict and problems:
        error = WeightsError(
            f"weights in {folder} do not match the collection; nothing was loaded:\n  "
            + "\n  ".join(problems)
            + "\nuse strict=False to load what matches and keep the other weights as they are"
        )
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    if report.missing:
        warnings.warn(
            f"no weight file in {folder} for bricks {report.missing}; they keep their current weights", stacklevel=2
        )
    for brick, usable in plans:
        brick.load_state_dict(usable, strict=False)
    for suffix in FORMATS.values():
        for file in sorted(folder.rglob(f"*{suffix}")):
            if file.resolve() not in known_files:
                report.unexpected.append(str(file.relative_to(folder)))
    return report
