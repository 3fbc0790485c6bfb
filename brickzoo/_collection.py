"""BrickCollection: a nested ``nn.ModuleDict`` of bricks run as a data-dependency graph."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brickzoo._bricks import BrickInterface, BrickMetrics
from brickzoo._graph import Graph, Plan, build_plan, iter_bricks
from brickzoo._groups import LOSS, Stage
from brickzoo._names import resolve_name
from brickzoo.errors import BrickDefinitionError, BrickzooError


class _Structure:
    """A counter bumped by every structural change of any collection; cached plans compare against it."""

    version = 0


class BrickCollection(nn.ModuleDict):
    """A (nested) dict of bricks that runs as a graph over a dict of named tensors.

    Bricks run in the order their data dependencies require (not insertion order); the order and
    the per-brick steps are computed once per group selection and cached. Nested dicts become
    nested collections, and relative names (``./x``, ``../x``) resolve against the path of the
    collection that holds a brick.

    Args:
        bricks: ``{name: brick | dict | BrickCollection}``.

    Raises:
        BrickGraphError: on cycles, two writers of one name or a relative name above the root.

    Example:
        >>> from brickzoo import BrickTrainable
        >>> collection = BrickCollection({
        ...     "double": BrickTrainable(lambda x: 2 * x, input_names=["x"], output_names=["y"]),
        ...     "head": {"add": BrickTrainable(lambda y: y + 1, input_names=["y"], output_names=["./z"])},
        ... })
        >>> collection({"x": torch.ones(1)})["head/z"]
        tensor([3.])
    """

    _plans: dict[tuple[Any, Stage | None], Plan]
    _graph: Graph | None
    _version: int
    _parent: weakref.ReferenceType[BrickCollection] | None

    def __init__(self, bricks: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._init_state()
        for key, value in (bricks or {}).items():
            self._insert(key, value)
        self._changed()

    # -- internal state (kept out of nn.Module's registries, dropped when copied) -------------
    def _init_state(self) -> None:
        object.__setattr__(self, "_plans", {})
        object.__setattr__(self, "_graph", None)
        object.__setattr__(self, "_version", -1)
        object.__setattr__(self, "_parent", None)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_plans", "_graph", "_version", "_parent"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_state()
        for child in self._modules.values():
            if isinstance(child, BrickCollection):
                object.__setattr__(child, "_parent", weakref.ref(self))

    # -- dict interface (every change is re-validated) ----------------------------------------
    def _insert(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
            raise BrickDefinitionError(
                f"BrickCollection: brick names must be non-empty strings without '/' and not starting with '.', "
                f"got {key!r}"
            )
        if key not in self._modules and hasattr(self, key):
            raise BrickDefinitionError(
                f"BrickCollection: brick name {key!r} clashes with the attribute BrickCollection.{key} "
                f"(an nn.Module/ModuleDict member); choose another name, e.g. {key + '_brick'!r}"
            )
        if isinstance(value, Mapping) and not isinstance(value, BrickCollection):
            child = BrickCollection.__new__(BrickCollection)
            nn.ModuleDict.__init__(child)
            child._init_state()
            for k, v in value.items():
                child._insert(k, v)
            value = child
        if not isinstance(value, (BrickInterface, BrickCollection)):
            raise BrickDefinitionError(
                f"BrickCollection: entry {key!r} must be a brick (BrickInterface), a dict of bricks or a "
                f"BrickCollection, got {type(value).__name__}; wrap modules with BrickTrainable/BrickNotTrainable"
            )
        if isinstance(value, BrickCollection):
            object.__setattr__(value, "_parent", weakref.ref(self))
        nn.ModuleDict.__setitem__(self, key, value)

    def _root(self) -> BrickCollection:
        node = self
        while node._parent is not None and (parent := node._parent()) is not None:
            node = parent
        return node

    def _changed(self) -> None:
        """Validate the whole tree this collection belongs to and invalidate every cached plan."""
        _Structure.version += 1
        root = self._root()
        object.__setattr__(root, "_graph", Graph(root))
        object.__setattr__(root, "_version", _Structure.version)
        root._plans.clear()

    def __setitem__(self, key: str, value: Any) -> None:
        old = self._modules.get(key)
        self._insert(key, value)
        try:
            self._changed()
        except BrickzooError:
            if old is None:
                del self._modules[key]
            else:
                self._modules[key] = old
            raise

    def __delitem__(self, key: str) -> None:
        value = self._modules[key]
        del self._modules[key]
        if isinstance(value, BrickCollection):
            object.__setattr__(value, "_parent", None)
        self._changed()

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (BrickInterface, BrickCollection)) and not name.startswith("_"):
            self[name] = value
        else:
            super().__setattr__(name, value)

    def clear(self) -> None:
        for key in list(self._modules):
            del self._modules[key]
        self._changed()

    def update(self, modules: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = modules.items() if isinstance(modules, Mapping) else modules
        for key, value in items:
            self[key] = value

    # -- execution ----------------------------------------------------------------------------
    def _current_graph(self) -> Graph:
        if self._version != _Structure.version or self._graph is None:
            object.__setattr__(self, "_graph", Graph(self))
            object.__setattr__(self, "_version", _Structure.version)
            self._plans.clear()
        return self._graph  # type: ignore[return-value]

    def _plan(self, groups: Any, stage: Stage | None) -> Plan:
        selection: frozenset[str] | None
        if isinstance(groups, Stage):
            stage, selection = groups, groups.groups
        elif groups is None:
            selection = stage.groups if stage is not None else None
        elif isinstance(groups, str):
            selection = frozenset({groups})
        else:
            selection = frozenset(groups)
        return build_plan(self._current_graph(), selection, stage)

    def forward(
        self,
        named_inputs: dict[str, Any],
        groups: str | Iterable[str] | Stage | None = None,
        return_inputs: bool = True,
        stage: Stage | None = None,
    ) -> dict[str, Any]:
        """Run the bricks of the selected groups on a dict of named tensors.

        Args:
            named_inputs: the input tensors by name; the dict is not modified.
            groups: the groups to run (a name, a set of names or a :class:`Stage`); ``None`` runs
                every brick, or the stage's groups when ``stage`` is given.
            return_inputs: if False, the inputs (and the stage) are left out of the result.
            stage: the current stage, readable by bricks that name ``"stage"`` among their inputs.

        Returns:
            The inputs (unless ``return_inputs=False``) and every tensor the bricks wrote.

        Raises:
            MissingInputsError: a selected brick needs a name that is neither given nor produced.
            BrickRuntimeError: a brick raised; the message names the brick, its names and the
                shapes of its inputs, and the original exception is chained.
        """
        if self._version != _Structure.version:
            self._current_graph()
        if groups.__class__ is set:
            groups = frozenset(groups)
        key = (groups, stage)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(groups, stage)
        if not named_inputs.keys() >= plan.required:
            raise plan.missing_inputs_error(named_inputs, self._current_graph())
        named = dict(named_inputs)
        if plan.stage is not None:
            named["stage"] = plan.stage
        step = None
        try:
            for step in plan.steps:
                step(named)
        except BrickzooError as exc:
            raise plan.located_error(step, exc) from exc
        except Exception as exc:
            raise plan.runtime_error(step, exc, named) from exc
        if not return_inputs:
            for name in named_inputs:
                named.pop(name, None)
            if plan.stage is not None:
                named.pop("stage", None)
        return named

    # -- introspection ---------------------------------------------------------------------
    def named_bricks(self) -> Iterator[tuple[str, BrickInterface]]:
        """``(path, brick)`` for every brick, nested ones included, in insertion order."""
        return iter_bricks(self)

    def execution_order(self, groups: str | Iterable[str] | Stage | None = None) -> list[str]:
        """The brick paths of a group selection in the order they run."""
        return [node.path for node in self._plan(groups, None).nodes]

    def required_inputs(self, groups: str | Iterable[str] | Stage | None = None) -> list[str]:
        """The names a group selection needs as inputs (sorted)."""
        return sorted(self._plan(groups, None).required - {"stage"})

    def produced_outputs(self, groups: str | Iterable[str] | Stage | None = None) -> list[str]:
        """The names a group selection writes, in execution order."""
        return list(self._plan(groups, None).produced)

    # -- losses and metrics ------------------------------------------------------------------
    def loss_names(self) -> list[str]:
        """The names written by loss bricks (bricks of the ``LOSS`` group)."""
        return [name for node in self._current_graph().nodes if LOSS in node.brick.groups for name in node.outputs]

    def extract_losses(self, named_outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The entries of ``named_outputs`` written by loss bricks."""
        return {name: named_outputs[name] for name in self.loss_names() if name in named_outputs}

    def metric_bricks(self) -> list[tuple[str, BrickMetrics]]:
        """``(path, brick)`` of every metric brick."""
        return [(path, brick) for path, brick in iter_bricks(self) if isinstance(brick, BrickMetrics)]

    def summarize(self, reset: bool = False) -> dict[str, Any]:
        """Compute every metric over the batches seen since the last reset.

        Keys are the metric names prefixed with the path of the collection holding the metric
        brick (``head0/MulticlassAccuracy``), so heads never overwrite each other. Metrics that
        saw no batch are left out.
        """
        values: dict[str, Any] = {}
        for path, brick in self.metric_bricks():
            parent = path.rpartition("/")[0]
            for key, value in brick.summarize(reset=reset).items():
                values[resolve_name(f"./{key}", parent, path)] = value
        return values

    def reset_metrics(self) -> None:
        for _, brick in self.metric_bricks():
            brick.reset()

    # -- weights -----------------------------------------------------------------------------
    def save_bricks(self, path_model_folder: str | Path, exist_ok: bool = False, format: str = "pt") -> list[Path]:  # noqa: A002
        """Save one weight file per brick (``<folder>/<path>.pt``); see :func:`brickzoo.save_bricks`."""
        from brickzoo._weights import save_bricks

        return save_bricks(self, path_model_folder, exist_ok=exist_ok, format=format)

    def load_bricks(self, path_model_folder: str | Path, strict: bool = True) -> Any:
        """Load per-brick weight files; see :func:`brickzoo.load_bricks`."""
        from brickzoo._weights import load_bricks

        return load_bricks(self, path_model_folder, strict=strict)
