"""The zoo's registry of brick factories: what configs and the CLI may name."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from brickzoo.errors import ZooError

KINDS = ("preprocessor", "backbone", "neck", "head")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ZooEntry:
    """A registered factory."""

    name: str
    kind: str
    factory: Callable[..., Any]
    summary: str


_REGISTRY: dict[str, ZooEntry] = {}


def register_factory(name: str, kind: str) -> Callable[[F], F]:
    """Register a ``*_bricks`` factory under ``name``; registering a name twice warns and replaces it."""
    if kind not in KINDS:
        raise ZooError(f"register_factory: kind must be one of {KINDS}, got {kind!r} for {name!r}")

    def decorate(factory: F) -> F:
        if name in _REGISTRY:
            warnings.warn(f"zoo factory {name!r} is registered twice; the later one replaces the earlier", stacklevel=2)
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ZooEntry(name=name, kind=kind, factory=factory, summary=doc[0] if doc else "")
        return factory

    return decorate


def get_factory(name: str) -> ZooEntry:
    """The registered factory called ``name``; an unknown name raises with close matches."""
    _load_zoo()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {close}?" if close else ""
        raise ZooError(f"unknown zoo factory {name!r}{hint} (registered: {sorted(_REGISTRY)})")
    return _REGISTRY[name]


def list_factories(kind: str | None = None) -> list[ZooEntry]:
    """Registered factories, optionally of one kind, sorted by name."""
    _load_zoo()
    return sorted((e for e in _REGISTRY.values() if kind is None or e.kind == kind), key=lambda e: e.name)


def _load_zoo() -> None:
    """Import the modules that register factories."""
    import brickzoo.bag_of_bricks  # noqa: F401


def list_zoo() -> dict[str, list[str]]:
    """What the zoo offers, for the CLI: registered factory names grouped by kind.

    Keys are the plural kinds (``"preprocessors"``, ``"backbones"``, ``"necks"``, ``"heads"``), each
    a sorted list of factory names (empty if none is registered). A factory that accepts model names
    lists them in a ``zoo_examples`` attribute (``backbone_bricks`` lists its ``timm:`` and
    ``torchvision:`` prefixes with examples); those are gathered under ``"<kind>_names"``
    (``"backbone_names"``).

    Example:
        >>> list_zoo()["necks"]
        ['fpn', 'pan']
    """
    _load_zoo()
    zoo: dict[str, list[str]] = {f"{kind}s": [] for kind in KINDS}
    for entry in sorted(_REGISTRY.values(), key=lambda e: e.name):
        zoo[f"{entry.kind}s"].append(entry.name)
        examples = getattr(entry.factory, "zoo_examples", None)
        if examples:
            zoo.setdefault(f"{entry.kind}_names", []).extend(str(e) for e in examples)
    return zoo
