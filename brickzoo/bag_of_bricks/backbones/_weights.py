"""Local weight files for backbones: find, read and check them before anything is loaded.

A file fits when ``load_state_dict`` into the full model reports no missing and no unexpected
key and no tensor has another shape, leaving aside the keys the backbone never uses (the
classifier, whose shape depends on the number of classes it was trained for).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import timm.models
import torch
from torch import nn

from brickzoo.errors import WeightsError, WeightsNotFoundError

SUFFIXES = "a .pth/.pt/.bin file (torch.save(model.state_dict(), path)) or a .safetensors file"
_EXAMPLES = 5  # keys quoted in an error message
# The entries of a training checkpoint that hold the weights, in the order timm.models.load_state_dict tries them.
_CHECKPOINT_ENTRIES = ("state_dict_ema", "model_ema", "state_dict", "model")


def check_pretrained_file(owner: str, pretrained: str | Path) -> Path:
    """The path of an existing weight file; a missing path or a folder raises naming it."""
    path = Path(pretrained)
    if not path.exists():
        raise WeightsNotFoundError(
            f"{owner}: the weight file pretrained='{path}' does not exist; pass True for the library's own weights, "
            f"False for random ones, or the path of a saved state dict ({SUFFIXES})"
        )
    if not path.is_file():
        raise WeightsError(
            f"{owner}: pretrained='{path}' is a folder, expected a weight file: {SUFFIXES}; "
            "to load a folder saved by save_bricks, build the model and call load_bricks instead"
        )
    return path


def read_state_dict(owner: str, path: Path, expected: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, read as ``timm.models.load_state_dict`` reads pretrained files.

    ``.safetensors`` files are read with safetensors, others with ``torch.load(weights_only=True)``;
    of a training checkpoint the EMA weights (``state_dict_ema``, ``model_ema``) or else the
    ``state_dict``/``model`` entry is taken, and ``module.``/``_orig_mod.`` prefixes (DDP,
    ``torch.compile``) are removed.

    Raises:
        WeightsError: the file is empty, is no safetensors/``torch.save`` file (garbage bytes, a
            text file), holds pickled objects other than tensors (a whole model), or holds
            something other than a dict of tensors.
    """
    cannot = f"{owner}: cannot read the weight file '{path}'"
    if path.stat().st_size == 0:
        raise WeightsError(f"{cannot}: the file is empty; expected {expected}")
    try:
        if path.suffix == ".safetensors":
            content: Any = safetensors.torch.load_file(str(path))
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):  # the training arguments timm saves
                content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        kind = "a safetensors file" if path.suffix == ".safetensors" else "a torch.save file holding only tensors"
        raise WeightsError(f"{cannot}: it is not {kind} ({_first_sentence(exc)}); expected {expected}") from exc
    if isinstance(content, Mapping):
        entry = next((k for k in _CHECKPOINT_ENTRIES if content.get(k) is not None), None)
        content = content[entry] if entry else content
    if not isinstance(content, Mapping) or not content:
        holds = f"an empty {type(content).__name__}" if isinstance(content, Mapping) else f"a {type(content).__name__}"
        raise WeightsError(f"{cannot}: it holds {holds}, not a dict of named tensors; expected {expected}")
    not_tensors = [str(k) for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"{cannot}: {len(not_tensors)} of its entries are not tensors, e.g. {not_tensors[:_EXAMPLES]}; "
            f"expected {expected}"
        )
    return timm.models.clean_state_dict(dict(content))


def _first_sentence(exc: BaseException) -> str:
    """``"UnpicklingError: Weights only load failed"``: the exception's type and the start of its message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch.load colours its advice
    first = (text.splitlines() or [""])[0].split(". ")[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_fitting_state_dict(
    owner: str,
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    target: str,
    expected: str,
    unused: tuple[str, ...] = (),
    adapted: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Load ``state`` into ``model`` and raise one error listing whatever does not fit.

    The judge is ``model.load_state_dict(strict=False)``: its missing and unexpected keys, plus the
    tensors whose shape differs (compared first, as ``load_state_dict`` would refuse them).

    Args:
        owner: who asks, quoted first in the message (``"backbone_bricks('timm:resnet10t')"``).
        model: the full model. On the meta device it is only a check: the tensors are assigned.
        state: the state dict read from the file.
        source: where ``state`` comes from (``"the weight file '/x/resnet.pth'"``).
        target: what the model is (``"timm model 'resnet10t'"``).
        expected: what ``source`` should have held, ending the message.
        unused: key prefixes of parts the backbone does not use (``("fc.",)``): neither their
            absence nor their shape counts.
        adapted: keys whose tensor a later loader adapts, with the shape it expects in the file
            (timm sums or repeats the first convolution's input channels to ``in_chans``); they are
            checked against that shape and not loaded here.

    Raises:
        WeightsError: keys the model needs are missing from ``state``, ``state`` holds keys the
            model does not have, or tensors have another shape. The model may then be partly
            loaded: discard it.
    """
    adapted = dict(adapted or {})
    own = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in own.items()} | adapted
    used = {k: v for k, v in state.items() if not k.startswith(unused)}
    mismatched = [k for k, v in used.items() if k in shapes and tuple(v.shape) != shapes[k]]
    loadable = {k: v for k, v in used.items() if k not in adapted and k not in mismatched}
    meta = any(t.is_meta for t in own.values())
    result = model.load_state_dict(loadable, strict=False, assign=meta)
    missing = [k for k in result.missing_keys if not k.startswith(unused) and k not in used]
    unexpected = list(result.unexpected_keys)
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors the backbone needs are missing from it, e.g. {missing[:_EXAMPLES]}")
    if unexpected:
        problems.append(f"{len(unexpected)} of its tensors are not in the model, e.g. {unexpected[:_EXAMPLES]}")
    if mismatched:
        shown = [f"{k} ({list(used[k].shape)} in the file, {list(shapes[k])} in the model)" for k in mismatched]
        problems.append(f"{len(mismatched)} tensors have another shape, e.g. {', '.join(shown[:_EXAMPLES])}")
    raise WeightsError(f"{owner}: {source} does not fit {target}: {'; '.join(problems)}; expected {expected}")


def offline_message(owner: str, name: str, exc: BaseException, how: str) -> str:
    """Why library weights could not be fetched, and how to pass a local file instead."""
    return (
        f"{owner}: the pretrained weights could not be fetched ({type(exc).__name__}: {str(exc)[:300]}). Without "
        f"internet access, download them on another machine ({how}) and pass the local file instead: "
        f"backbone_bricks({name!r}, pretrained='/path/to/weights.safetensors' or '.pth')"
    )
