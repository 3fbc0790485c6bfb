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
from brickzoo._groups import LOSS, Stage, normalize_selection
from brickzoo._names import resolve_name
from brickzoo.errors import BrickDefinitionError, BrickzooError

GroupsArg = str | Iterable[str] | Stage | None
_HASHABLE_SELECTIONS = frozenset({frozenset, str, Stage})  # selections used as cache keys as they are


def _stage(stage: Any) -> Stage:
    """A stage given by its name (``"TRAIN"``) as the :class:`Stage`."""
    try:
        return Stage(stage)
    except ValueError:
        raise BrickDefinitionError(
            f"stage must be a Stage or one of {[s.value for s in Stage]}, got {type(stage).__name__} {stage!r}"
        ) from None


class BrickCollection(nn.ModuleDict):
    """A (nested) dict of bricks that runs as a graph over a dict of named tensors.

    Bricks run in the order their data dependencies require (not insertion order); the order and
    the per-brick steps are computed once per group selection and cached. Nested dicts become
    nested collections, and relative names (``./x``, ``../x``) resolve against the path of the
    collection that holds a brick. A change of the tree (inserting, replacing or removing a
    brick, or setting an attribute a brick's step reads, such as ``brick.model``) clears the
    cached plans of the collections above it, and only of those.

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

    _plans: dict[tuple[Any, Stage | None, bool], Plan]
    _graph: Graph | None
    _parents: weakref.WeakSet[BrickCollection]

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
        object.__setattr__(self, "_parents", weakref.WeakSet())

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_plans", "_graph", "_parents"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_state()
        for child in self._modules.values():
            self._adopt(child)

    def _adopt(self, child: Any) -> None:
        """Record this collection as a holder of ``child`` (a brick or a collection)."""
        if isinstance(child, BrickCollection):
            child._parents.add(self)
        elif isinstance(child, BrickInterface):
            child._owners.add(self)

    def _release(self, child: Any) -> None:
        """Forget that this collection holds ``child``, unless it still holds it under another key."""
        if child is None or any(v is child for v in self._modules.values()):
            return
        if isinstance(child, BrickCollection):
            child._parents.discard(self)
        elif isinstance(child, BrickInterface):
            child._owners.discard(self)

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
        nn.ModuleDict.__setitem__(self, key, value)
        self._adopt(value)

    def _ancestors(self) -> list[BrickCollection]:
        """This collection and every collection holding it, directly or through others."""
        found: list[BrickCollection] = [self]
        index = 0
        while index < len(found):
            for parent in list(found[index]._parents):
                if all(parent is not f for f in found):
                    found.append(parent)
            index += 1
        return found

    def _invalidate_plans(self) -> None:
        """Drop the cached plans of this collection and of the collections above it (not the graphs)."""
        for node in self._ancestors():
            node._plans.clear()

    def _changed(self) -> None:
        """Revalidate the trees this collection belongs to and drop their cached graphs and plans.

        Only the collections above this one are touched; unrelated collections keep their caches.
        """
        ancestors = self._ancestors()
        for node in ancestors:
            node._plans.clear()
            object.__setattr__(node, "_graph", None)
        for node in ancestors:
            if not node._parents:  # a root: its graph must be valid
                object.__setattr__(node, "_graph", Graph(node))

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
            self._release(value)
            self._adopt(old)
            self._changed()
            raise
        self._release(old)

    def __delitem__(self, key: str) -> None:
        value = self._modules[key]
        del self._modules[key]
        self._release(value)
        self._changed()

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (BrickInterface, BrickCollection)) and not name.startswith("_"):
            self[name] = value
        else:
            super().__setattr__(name, value)

    def clear(self) -> None:
        values = list(self._modules.values())
        self._modules.clear()
        for value in values:
            self._release(value)
        self._changed()

    def update(self, modules: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = modules.items() if isinstance(modules, Mapping) else modules
        for key, value in items:
            self[key] = value

    # -- execution ----------------------------------------------------------------------------
    def _current_graph(self) -> Graph:
        if self._graph is None:
            object.__setattr__(self, "_graph", Graph(self))
        return self._graph  # type: ignore[return-value]

    def _get_plan(self, groups: GroupsArg, stage: Stage | None, check: bool = False) -> Plan:
        """The cached plan of a selection; built (and validated) on first use."""
        if groups is not None and groups.__class__ not in _HASHABLE_SELECTIONS:
            groups = normalize_selection(groups)
        if stage is not None and stage.__class__ is not Stage:
            stage = _stage(stage)
        key = (groups, stage, check)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(groups, stage, check)
        return plan

    def _plan(self, groups: Any, stage: Stage | None, check: bool = False) -> Plan:
        selection: frozenset[str] | None
        if isinstance(groups, Stage):
            stage, selection = groups, groups.groups
        elif groups is None:
            selection = stage.groups if stage is not None else None
        elif isinstance(groups, str):
            selection = frozenset({groups})
        else:
            selection = normalize_selection(groups)
        graph = self._current_graph()
        if selection is not None and not isinstance(groups, Stage) and groups is not None:
            graph.check_selection(selection)
        return build_plan(graph, selection, stage, check=check)

    def forward(
        self,
        named_inputs: dict[str, Any],
        groups: GroupsArg = None,
        return_inputs: bool = True,
        stage: Stage | None = None,
    ) -> dict[str, Any]:
        """Run the bricks of the selected groups on a dict of named tensors.

        Args:
            named_inputs: the input tensors by name; the dict is not modified.
            groups: the groups to run (a name, any iterable of names or a :class:`Stage`); ``None``
                runs every brick, or the stage's groups when ``stage`` is given.
            return_inputs: if False, the inputs (and the stage) are left out of the result.
            stage: the current stage, readable by bricks that name ``"stage"`` among their inputs.

        Returns:
            The inputs (unless ``return_inputs=False``) and every tensor the bricks wrote.

        Raises:
            MissingInputsError: a selected brick needs a name that is neither given nor produced.
            BrickRuntimeError: a brick raised; the message names the brick, its names and the
                shapes of its inputs, and the original exception is chained.
            BrickDefinitionError: ``groups`` holds something other than strings, or names no group
                of any brick (with close matches).
        """
        if groups is not None and groups.__class__ not in _HASHABLE_SELECTIONS:
            groups = normalize_selection(groups)  # a set, list, tuple or other iterable of names
        if stage is not None and stage.__class__ is not Stage:
            stage = _stage(stage)
        plan = self._plans.get((groups, stage, False))
        if plan is None:
            plan = self._get_plan(groups, stage)
        return self._run(plan, named_inputs, return_inputs)

    def check_batch(
        self, named_inputs: dict[str, Any], groups: GroupsArg = None, stage: Stage | None = None
    ) -> dict[str, Any]:
        """Run a selection like :meth:`forward`, checking each brick's inputs before it runs.

        Besides what ``forward`` checks (names present, shapes, dtypes), every brick whose module
        defines ``check_inputs`` (the checks that read tensor values, such as class indices in
        range or finite boxes, kept out of ``forward`` so it never waits on the device) has it
        called with the brick's inputs. Run it on the first batch of each loader; the training
        loop, :func:`~brickzoo.training.evaluate` and the Lightning module do.

        Returns:
            What :meth:`forward` returns.

        Raises:
            MissingInputsError: as :meth:`forward`.
            BrickInputError: a value check failed; the message starts with the brick's path.
        """
        return self._run(self._get_plan(groups, stage, check=True), named_inputs, return_inputs=True)

    def check_inputs_present(
        self,
        named_inputs: Mapping[str, Any],
        groups: GroupsArg = None,
        stage: Stage | None = None,
        source: str | None = None,
    ) -> None:
        """Raise :class:`MissingInputsError` if a selection needs names ``named_inputs`` lacks.

        Nothing runs. The message names every brick missing something, the missing and the
        given names, close matches, and the unselected bricks that would write a missing name;
        ``source`` (e.g. ``"train_loader"``) is put in front.
        """
        plan = self._get_plan(groups, stage)
        if not named_inputs.keys() >= plan.required:
            error = plan.missing_inputs_error(named_inputs, self._current_graph())
            if source:
                error = type(error)(f"{source}: {error}")
            raise error

    def _run(self, plan: Plan, named_inputs: dict[str, Any], return_inputs: bool) -> dict[str, Any]:
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

    def execution_order(self, groups: GroupsArg = None) -> list[str]:
        """The brick paths of a group selection in the order they run."""
        return [node.path for node in self._get_plan(groups, None).nodes]

    def required_inputs(self, groups: GroupsArg = None) -> list[str]:
        """The names a group selection needs as inputs (sorted)."""
        return sorted(self._get_plan(groups, None).required - {"stage"})

    def produced_outputs(self, groups: GroupsArg = None) -> list[str]:
        """The names a group selection writes, in execution order."""
        return list(self._get_plan(groups, None).produced)

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
