"""Tensor names: validation and resolution of relative names (``./x``, ``../x``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from brickzoo.errors import BrickDefinitionError, BrickGraphError

ALL_NAMES = "__all__"
STAGE_NAME = "stage"


def check_names(names: object, what: str, owner: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Validate ``input_names``/``output_names`` and split them into (names, keys).

    A list gives ``(names, None)``; a dict ``{key: name}`` gives ``(names, keys)`` with keys
    in the same order. Keys are keyword-argument names for inputs and dict keys of the
    module's result for outputs.
    """
    if isinstance(names, str):
        raise BrickDefinitionError(
            f"{owner}: {what} must be a list of names or a dict {{key: name}}, got the string {names!r}; "
            f"use [{names!r}]"
        )
    if isinstance(names, Mapping):
        keys = tuple(names.keys())
        values = tuple(names.values())
        bad_keys = [k for k in keys if not isinstance(k, str) or not k]
        if bad_keys:
            raise BrickDefinitionError(f"{owner}: {what} keys must be non-empty strings, got {bad_keys!r}")
    elif isinstance(names, Sequence):
        keys = None
        values = tuple(names)
    else:
        raise BrickDefinitionError(
            f"{owner}: {what} must be a list of names or a dict {{key: name}}, got {type(names).__name__}"
        )
    bad = [v for v in values if not isinstance(v, str) or not v]
    if bad:
        raise BrickDefinitionError(f"{owner}: every entry of {what} must be a non-empty string, got {bad!r}")
    return values, keys


def resolve_name(name: str, parent_path: str, brick_path: str) -> str:
    """Resolve a possibly relative tensor name against the path of the collection holding a brick.

    ``./x`` means ``<parent>/x`` and each ``../`` climbs one collection up. Absolute names and the
    special names ``__all__`` and ``stage`` are returned unchanged.

    >>> resolve_name("./logits", "head0", "head0/classify")
    'head0/logits'
    >>> resolve_name("../features", "heads/head0", "heads/head0/classify")
    'heads/features'
    """
    if not (name.startswith("./") or name.startswith("../")):
        return name
    parts = parent_path.split("/") if parent_path else []
    segments = name.split("/")
    i = 0
    while i < len(segments) and segments[i] in (".", ".."):
        if segments[i] == "..":
            if not parts:
                raise BrickGraphError(
                    f"brick '{brick_path}': relative name {name!r} climbs above the root collection "
                    f"(the brick sits at depth {parent_path.count('/') + 1 if parent_path else 0}); "
                    "use fewer '../' or an absolute name"
                )
            parts.pop()
        i += 1
    rest = segments[i:]
    if not rest or any(s in ("", ".", "..") for s in rest):
        raise BrickGraphError(
            f"brick '{brick_path}': relative name {name!r} is malformed; expected './name' or '../name'"
        )
    return "/".join(parts + rest)


def basename(name: str) -> str:
    """The part of a (possibly relative) name after its leading ``./`` and ``../`` segments."""
    segments = name.split("/")
    i = 0
    while i < len(segments) - 1 and segments[i] in (".", ".."):
        i += 1
    return "/".join(segments[i:])
