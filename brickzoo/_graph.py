"""The data-dependency graph of a brick collection: validation, topological order and plans."""

from __future__ import annotations

import difflib
import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from brickzoo._names import ALL_NAMES, STAGE_NAME, resolve_name
from brickzoo.errors import (
    BrickDefinitionError,
    BrickGraphError,
    BrickRuntimeError,
    BrickzooError,
    MissingInputsError,
)

if TYPE_CHECKING:
    from brickzoo._bricks import BrickInterface, Step
    from brickzoo._groups import Stage


@dataclass(frozen=True, eq=False)
class Node:
    """One brick of a flattened collection, with its names resolved to absolute names."""

    path: str
    brick: BrickInterface
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    index: int

    @property
    def reads_all(self) -> bool:
        return ALL_NAMES in self.inputs

    @property
    def parent(self) -> str:
        return self.path.rpartition("/")[0]

    def describe(self) -> str:
        return (
            f"brick '{self.path}' ({type(self.brick).__name__} of {self.brick.model_name()}, "
            f"input_names={list(self.inputs)}, output_names={list(self.outputs)})"
        )


def iter_bricks(collection: Any, prefix: str = "") -> Iterator[tuple[str, BrickInterface]]:
    """Yield ``(path, brick)`` for every brick of a (nested) collection in insertion order."""
    from brickzoo._bricks import BrickInterface

    for key, value in collection.items():
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, BrickInterface):
            yield path, value
        else:
            yield from iter_bricks(value, path)


class Graph:
    """Validated graph of all bricks of a collection.

    Raises:
        BrickGraphError: two bricks write the same name, a brick reads its own output, a
            relative name climbs above the root, or the bricks form a cycle.
    """

    def __init__(self, collection: Any) -> None:
        nodes: list[Node] = []
        for index, (path, brick) in enumerate(iter_bricks(collection)):
            parent = path.rpartition("/")[0]
            nodes.append(
                Node(
                    path=path,
                    brick=brick,
                    inputs=tuple(resolve_name(n, parent, path) for n in brick._input_names),
                    outputs=tuple(resolve_name(n, parent, path) for n in brick._output_names),
                    index=index,
                )
            )
        producer: dict[str, Node] = {}
        for node in nodes:
            own = set(node.inputs) & set(node.outputs)
            if own:
                raise BrickGraphError(
                    f"{node.describe()} reads and writes {sorted(own)}; give the output a new name "
                    "(a brick cannot overwrite the tensor it reads)"
                )
            for name in node.outputs:
                if name == STAGE_NAME:
                    raise BrickGraphError(f"{node.describe()} writes the reserved name 'stage'")
                if name in producer:
                    raise BrickGraphError(
                        f"bricks '{producer[name].path}' and '{node.path}' both write {name!r}; "
                        "every tensor name must have one writer (rename one output, e.g. with './name')"
                    )
                producer[name] = node
        self.producer = producer
        self.nodes = _topological_order(nodes, producer)

    def check_selection(self, groups: frozenset[str]) -> None:
        """Raise if none of the selected group names is a group of any brick (a typo selects nothing)."""
        known = {group for node in self.nodes for group in node.brick.groups}
        if not self.nodes or groups & known:
            return
        hints = sorted({hint for g in groups for hint in difflib.get_close_matches(g, sorted(known), n=2, cutoff=0.6)})
        raise BrickDefinitionError(
            f"groups {sorted(groups)} select no brick: no brick belongs to any of them; the bricks' groups are "
            f"{sorted(known)}" + (f"; did you mean {hints}?" if hints else "")
        )

    def select(self, groups: frozenset[str] | None) -> list[Node]:
        """The nodes of a group selection (all nodes for ``None``) in execution order."""
        if groups is None:
            return list(self.nodes)
        return [n for n in self.nodes if n.brick.groups & groups]


def _dependencies(node: Node, nodes: list[Node], producer: dict[str, Node]) -> set[Node]:
    deps = {producer[name] for name in node.inputs if name in producer}
    if node.reads_all:  # '__all__' sees everything inserted before it
        deps.update(n for n in nodes[: node.index])
    deps.discard(node)
    return deps


def _topological_order(nodes: list[Node], producer: dict[str, Node]) -> list[Node]:
    """Kahn's algorithm; ties are broken by insertion order so the order is deterministic."""
    deps = {node: _dependencies(node, nodes, producer) for node in nodes}
    users: dict[Node, list[Node]] = {node: [] for node in nodes}
    for node, ds in deps.items():
        for d in ds:
            users[d].append(node)
    remaining = {node: len(ds) for node, ds in deps.items()}
    ready = [(node.index, node) for node in nodes if remaining[node] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        _, node = heapq.heappop(ready)
        order.append(node)
        for user in users[node]:
            remaining[user] -= 1
            if remaining[user] == 0:
                heapq.heappush(ready, (user.index, user))
    if len(order) != len(nodes):
        stuck = [n for n in nodes if remaining[n] > 0]
        raise BrickGraphError(f"the bricks form a cycle: {_describe_cycle(stuck, deps)}")
    return order


def _describe_cycle(stuck: list[Node], deps: dict[Node, set[Node]]) -> str:
    """Walk back along dependencies from a stuck node until a node repeats."""
    stuck_set = set(stuck)
    seen: list[Node] = []
    node = stuck[0]
    while node not in seen:
        seen.append(node)
        node = min((d for d in deps[node] if d in stuck_set), key=lambda n: n.index)
    cycle = seen[seen.index(node) :][::-1]
    cycle.append(cycle[0])
    hops = []
    for a, b in itertools.pairwise(cycle):
        names = sorted(set(a.outputs) & set(b.inputs)) or ["__all__"]
        hops.append(f"'{a.path}' --{','.join(names)}--> ")
    return "".join(hops) + f"'{cycle[-1].path}'"


@dataclass
class Plan:
    """What one group selection runs: steps in order, the inputs it needs and what it writes."""

    nodes: list[Node]
    steps: tuple[Step, ...]
    required: frozenset[str]
    produced: tuple[str, ...]
    stage: Stage | None
    groups: frozenset[str] | None

    def node_of(self, step: Step | None) -> Node | None:
        """The node whose step is ``step`` (only used on the error path)."""
        for candidate, node in zip(self.steps, self.nodes, strict=True):
            if candidate is step:
                return node
        return None

    def missing_inputs_error(self, named_inputs: Mapping[str, Any], graph: Graph) -> MissingInputsError:
        available = sorted(named_inputs)
        missing = sorted(self.required - named_inputs.keys())
        lines = [f"missing inputs {missing} for groups {_groups_text(self.groups)}; got {available}"]
        for node in self.nodes:
            needed = [n for n in node.inputs if n in missing]
            if needed:
                lines.append(f"  brick '{node.path}' needs {needed}")
        for name in missing:
            hint = difflib.get_close_matches(name, available, n=3, cutoff=0.7)
            if hint:
                lines.append(f"  {name!r}: did you mean {hint}?")
            if name in graph.producer:
                writer = graph.producer[name]
                lines.append(
                    f"  {name!r} is written by brick '{writer.path}' (groups {sorted(writer.brick.groups)}), "
                    "which is not selected"
                )
        return MissingInputsError("\n".join(lines))

    def located_error(self, step: Step | None, exc: BrickzooError) -> BrickzooError:
        """The same error with the failing brick's path in front, unless the message has it already."""
        node = self.node_of(step)
        message = str(exc)
        if node is None or message.startswith("brick '"):
            return exc
        located = type(exc)(f"brick '{node.path}': {message}")
        return located

    def runtime_error(self, step: Step | None, exc: Exception, named: dict[str, Any]) -> BrickRuntimeError:
        node = self.node_of(step)
        if node is None:
            return BrickRuntimeError(f"a brick raised {type(exc).__name__}: {exc}")
        shapes = ", ".join(f"{n}={_summary(named[n])}" for n in node.inputs if n in named)
        return BrickRuntimeError(f"{node.describe()} raised {type(exc).__name__}: {exc}\n  inputs: {shapes or 'none'}")


def _summary(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


def _groups_text(groups: Iterable[str] | None) -> str:
    return "all" if groups is None else str(sorted(groups))


def _checked(check: Step | None, step: Step) -> Step:
    """``step`` preceded by ``check`` (the brick's value checks), when there is one."""
    if check is None:
        return step

    def checked_step(named: dict[str, Any]) -> None:
        check(named)
        step(named)

    return checked_step


def build_plan(graph: Graph, groups: frozenset[str] | None, stage: Stage | None, check: bool = False) -> Plan:
    """The nodes of a selection in order, with their steps (preceded by their value checks if ``check``)."""
    nodes = graph.select(groups)
    produced: list[str] = []
    read: set[str] = set()
    for node in nodes:
        read.update(node.inputs)
        produced.extend(node.outputs)
    required = frozenset(read - set(produced) - {ALL_NAMES} - ({STAGE_NAME} if stage is not None else set()))
    steps = tuple(node.brick.make_step(node.inputs, node.outputs, node.path) for node in nodes)
    if check:
        steps = tuple(
            _checked(node.brick.make_check(node.inputs, node.path), step)
            for node, step in zip(nodes, steps, strict=True)
        )
    return Plan(
        nodes=nodes,
        steps=steps,
        required=required,
        produced=tuple(produced),
        stage=stage,
        groups=groups,
    )
