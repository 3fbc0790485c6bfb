"""A mermaid flowchart of a brick collection."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from brickzoo._groups import Stage

if TYPE_CHECKING:
    from brickzoo._collection import BrickCollection
    from brickzoo._graph import Node

_COLOURS = {
    "BrickTrainable": "#6D597A",
    "BrickNotTrainable": "#B56576",
    "BrickModule": "#6D597A",
    "BrickLoss": "#5C677D",
    "BrickMetrics": "#1450A3",
    "BrickMetricSingle": "#1450A3",
    "BrickPerImageVisualization": "#5F0F40",
}
_PALETTE = ["#2A9D8F", "#E76F51", "#264653", "#8AB17D", "#9A031E", "#3A506B"]


def _node_id(text: str) -> str:
    return "n_" + re.sub(r"[^0-9A-Za-z_]", "_", text)


def _colour(kind: str) -> str:
    return _COLOURS.get(kind) or _PALETTE[sum(map(ord, kind)) % len(_PALETTE)]


def create_mermaid_dag_graph(
    brick_collection: BrickCollection, groups: str | Iterable[str] | Stage | None = None
) -> str:
    """Draw the bricks of a group selection as a mermaid flowchart.

    Bricks are boxes coloured by brick type, labelled with their path and what they wrap; edges
    carry the tensor names; inputs the selection needs and outputs nobody reads are drawn as
    coloured ends; each nested collection is a subgraph.

    Args:
        brick_collection: the collection to draw.
        groups: the group selection (as for ``forward``); ``None`` draws every brick.

    Returns:
        The mermaid source, starting with ``flowchart LR``.
    """
    plan = brick_collection._plan(groups, None)
    nodes = plan.nodes
    producer = {name: node for node in nodes for name in node.outputs}
    readers: dict[str, list[Node]] = {}
    for node in nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)

    lines = ["flowchart LR", "    %% Brick definitions"]
    tree: dict[str, list[Node]] = {}
    for node in nodes:
        tree.setdefault(node.parent, []).append(node)
    parents = sorted({p for p in tree if p})
    all_parents = sorted({"/".join(p.split("/")[:i]) for p in parents for i in range(1, p.count("/") + 2)})

    def emit(parent: str, indent: str) -> None:
        for node in tree.get(parent, []):
            kind = type(node.brick).__name__
            label = f"<strong>'{node.path}': {node.brick.model_name()}</strong><br><i>{kind}</i>"
            lines.append(f'{indent}{_node_id(node.path)}("{_escape(label)}"):::{kind}')
        for child in all_parents:
            if child.rpartition("/")[0] == parent and child != parent:
                lines.append(f'{indent}subgraph {_node_id("sg_" + child)} ["{child}"]')
                emit(child, indent + "    ")
                lines.append(f"{indent}end")

    emit("", "    ")
    lines += ["", "    %% Draw inputs and outputs"]
    for name in sorted(n for n in readers if n not in producer and n != "__all__"):
        for node in readers[name]:
            lines.append(f'    {_node_id("in_" + name)}(["{_escape(name)}"]):::input --> {_node_id(node.path)}')
    lines += ["", "    %% Draw edges"]
    for node in nodes:
        for name in node.outputs:
            users = readers.get(name, [])
            for user in users:
                lines.append(f'    {_node_id(node.path)} --> |"{_escape(name)}"| {_node_id(user.path)}')
            if not users:
                lines.append(f'    {_node_id(node.path)} --> {_node_id("out_" + name)}(["{_escape(name)}"]):::output')
    lines += [
        "",
        "    %% Add styling",
        "    classDef input stroke-width:0px,fill-opacity:0.3,fill:#22A699",
        "    classDef output stroke-width:0px,fill-opacity:0.3,fill:#F2BE22",
    ]
    for kind in sorted({type(node.brick).__name__ for node in nodes}):
        lines.append(f"    classDef {kind} stroke-width:0px,color:#fff,fill:{_colour(kind)}")
    lines += [
        "",
        "    %% Add legends",
        "    subgraph Legends",
        '        legend_input(["input"]):::input',
        '        legend_output(["output"]):::output',
        "    end",
    ]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace('"', "#quot;")
