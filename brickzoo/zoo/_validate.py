"""The validation toolkit of zoo configs: collect problems with key paths, check arguments against signatures.

Nothing here knows a config section; :mod:`brickzoo.zoo._config` and :mod:`brickzoo.zoo._datasets`
both use it, so neither has to import the other to report a problem.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from brickzoo.errors import ConfigError


class Problems:
    """Collects every problem of a config, each with its key path, and raises them as one ConfigError.

    Example:
        >>> problems = Problems("recipe.yaml")
        >>> problems.add("train.epochs", "expected an integer >= 1, got 0")
        >>> problems.items
        [('train.epochs', 'expected an integer >= 1, got 0')]
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.items: list[tuple[str, str]] = []  # (key path, message)

    def add(self, path: str, message: str) -> None:
        """Record one problem of the key ``path`` (``"data.train.num_samples"``)."""
        self.items.append((path, message))

    def unknown_keys(self, path: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
        """Record every key of ``given`` that is not in ``known``, with close matches."""
        known = sorted(known)
        for key in given:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=2, cutoff=0.7)
                hint = f"did you mean {close}?" if close else f"expected one of {known}"
                self.add(f"{path}.{key}" if path else str(key), f"unknown key; {hint}")

    def raise_if_any(self) -> None:
        """Raise one ConfigError listing every problem (``<key path>: <message>`` per line), if any."""
        if self.items:
            count = len(self.items)
            lines = [f"{path}: {message}" for path, message in self.items]
            raise ConfigError(
                f"{self.origin}: {count} problem{'s' * (count > 1)} in the config:\n  " + "\n  ".join(lines)
            )


def type_name(hint: Any) -> str:
    """A readable name of a type hint (``int``, ``list[int] | None``)."""
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def value_matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint; hints it cannot judge count as a match.

    Example:
        >>> value_matches([1, 2], list[int]), value_matches(True, int), value_matches(None, float | None)
        (True, False, True)
    """
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(value_matches(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return all(value_matches(v, item) for v in value)
    if origin in (dict, Mapping) or hint in (dict,):
        return isinstance(value, dict)
    if isinstance(hint, type) and hint.__module__ == "pathlib":
        return isinstance(value, str)
    return True


def check_arguments(
    problems: Problems, path: str, fn: Callable[..., Any], arguments: Mapping[str, Any], wired: set[str]
) -> None:
    """Bind ``arguments`` to ``fn``'s signature and check their types, adding every problem.

    Args:
        problems: where the problems go.
        path: the key path of the section holding the arguments (``"model.heads.classify"``).
        fn: the factory or class the arguments are for.
        arguments: the arguments the config gives.
        wired: arguments the recipe passes itself; the config may not set them, nor must it.
    """
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    parameters = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"]
    for key, value in arguments.items():
        if key in wired:
            problems.add(f"{path}.{key}", "is set by the recipe itself and cannot be given here")
        elif key not in parameters:
            if not takes_kwargs:
                close = difflib.get_close_matches(key, named, n=2, cutoff=0.7)
                hint = f"did you mean {close}?" if close else f"expected one of {sorted(named)}"
                problems.add(f"{path}.{key}", f"unknown argument of {fn.__qualname__}; {hint}")
        elif key in hints and not value_matches(value, hints[key]):
            problems.add(f"{path}.{key}", f"expected {type_name(hints[key])}, got {type(value).__name__} {value!r}")
    for name, parameter in parameters.items():
        if (
            parameter.default is inspect.Parameter.empty
            and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
            and name not in arguments
            and name not in wired
            and name != "self"
        ):
            problems.add(f"{path}.{name}", f"missing; {fn.__qualname__} needs it")


def section(problems: Problems, config: Mapping[str, Any], key: str, required: bool) -> dict[str, Any]:
    """The mapping ``config[key]``; missing (when ``required``) or not a mapping is a problem, read as ``{}``."""
    value = config.get(key)
    if value is None:
        if required:
            problems.add(key, "missing section")
        return {}
    if not isinstance(value, dict):
        problems.add(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return {}
    return value
