"""Property test: random DAGs, inserted in random order and nesting, against a reference evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brickzoo import BrickCollection, BrickDefinitionError, BrickTrainable, MissingInputsError

PARENTS = ["", "a", "a/b", "c"]
EXTERNAL = ["in0", "in1"]


@dataclass
class Spec:
    index: int
    parent: str
    relative_output: bool
    inputs: list[str]  # absolute names
    group: str

    @property
    def output(self) -> str:
        base = f"v{self.index}"
        return f"{self.parent}/{base}" if self.relative_output and self.parent else base


def raw_name(absolute: str, parent: str) -> str:
    """Write an absolute name relative to ``parent`` where possible, as a user of nesting would."""
    if parent and absolute.startswith(parent + "/"):
        return "./" + absolute[len(parent) + 1 :]
    grandparent = parent.rpartition("/")[0]
    if parent and grandparent and absolute.startswith(grandparent + "/"):
        return "../" + absolute[len(grandparent) + 1 :]
    return absolute


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[Spec], list[int]]:
    count = draw(st.integers(1, 9))
    specs: list[Spec] = []
    for i in range(count):
        available = EXTERNAL + [s.output for s in specs]
        inputs = draw(st.lists(st.sampled_from(available), min_size=1, max_size=3, unique=True))
        specs.append(
            Spec(
                index=i,
                parent=draw(st.sampled_from(PARENTS)),
                relative_output=draw(st.booleans()),
                inputs=inputs,
                group=draw(st.sampled_from(["MODEL", "LOSS"])),
            )
        )
    order = draw(st.permutations(range(count)))
    return specs, list(order)


def operation(index: int):
    def fn(*values: torch.Tensor) -> torch.Tensor:
        return sum(values) * (index + 2) + index

    return fn


def build(specs: list[Spec], order: list[int]) -> BrickCollection:
    tree: dict = {}
    for i in order:
        spec = specs[i]
        node = tree
        for part in [p for p in spec.parent.split("/") if p]:
            node = node.setdefault(part, {})
        node[f"brick{i}"] = BrickTrainable(
            operation(i),
            [raw_name(n, spec.parent) for n in spec.inputs],
            [raw_name(spec.output, spec.parent) if spec.relative_output else spec.output],
            group=spec.group,
        )
    return BrickCollection(tree)


def reference(specs: list[Spec], selected: set[str] | None, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    values = dict(inputs)
    for spec in specs:  # specs are generated in a valid topological order
        if selected is None or spec.group in selected:
            values[spec.output] = operation(spec.index)(*[values[n] for n in spec.inputs])
    return values


@settings(max_examples=60, deadline=None)
@given(graph=graphs(), selection=st.sampled_from([None, "MODEL", "LOSS"]))
def test_random_graph_matches_reference(graph: tuple[list[Spec], list[int]], selection: str | None) -> None:
    specs, order = graph
    collection = build(specs, order)
    inputs = {"in0": torch.tensor([1.0]), "in1": torch.tensor([-2.0])}
    selected = None if selection is None else {selection}
    chosen = [s for s in specs if selected is None or s.group in selected]
    if selected is not None and not chosen:  # a selection naming no group of any brick is refused, not run empty
        with pytest.raises(BrickDefinitionError, match="select no brick"):
            collection(inputs, groups=selected)
        return
    produced = {s.output for s in chosen}
    needs_unselected = any(n not in produced and n not in inputs for s in chosen for n in s.inputs)
    if needs_unselected:
        with pytest.raises(MissingInputsError):
            collection(inputs, groups=selected)
        return
    outputs = collection(inputs, groups=selected)
    expected = reference(specs, selected, inputs)
    assert outputs.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(outputs[name], value, msg=name)
    # every brick runs after the bricks it reads from
    position = {path: i for i, path in enumerate(collection.execution_order(selected))}
    path_of = {s.output: f"{s.parent}/brick{s.index}".lstrip("/") for s in specs}
    for spec in chosen:
        for name in spec.inputs:
            if name in path_of:
                assert position[path_of[name]] < position[path_of[spec.output]]
