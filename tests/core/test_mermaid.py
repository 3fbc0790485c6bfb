"""The mermaid picture of a collection: nodes, edges labelled by tensor names, subgraphs, colours."""

from __future__ import annotations

import re

import torch
from torchmetrics.classification import MulticlassAccuracy

from brickzoo import (
    BrickCollection,
    BrickLoss,
    BrickMetricSingle,
    BrickNotTrainable,
    BrickTrainable,
    create_mermaid_dag_graph,
)


def model() -> BrickCollection:
    return BrickCollection(
        {
            "pre": BrickNotTrainable(torch.nn.Identity(), ["raw"], ["x"]),
            "end": BrickTrainable(torch.nn.Identity(), ["x"], ["features"]),  # 'end' is a mermaid keyword
            "head": {
                "classify": BrickTrainable(torch.nn.Identity(), ["features"], ["./logits"]),
                "inner": {"loss": BrickLoss(torch.nn.MSELoss(), ["../logits", "t"], ["./loss"])},
                "accuracy": BrickMetricSingle(MulticlassAccuracy(num_classes=2), ["./logits", "t"]),
            },
        }
    )


def test_graph_lists_every_brick_edge_input_and_output() -> None:
    text = create_mermaid_dag_graph(model())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\w+)\(\"(.*?)\"\):::(\w+)$", text, re.M)}
    assert len(nodes) == 5
    assert "<strong>'head/inner/loss': MSELoss</strong><br><i>BrickLoss</i>" in nodes.values()
    edges = re.findall(r"^\s+(\w+) --> \|\"(.+?)\"\| (\w+)$", text, re.M)
    assert {label for _, label, _ in edges} == {"x", "features", "head/logits"}
    assert len([e for e in edges if e[1] == "head/logits"]) == 2  # loss and accuracy both read the logits
    inputs = re.findall(r'\(\["(\w+)"\]\):::input --> ', text)
    assert sorted(set(inputs)) == ["raw", "t"]
    outputs = re.findall(r'--> \w+\(\["([\w/]+)"\]\):::output', text)
    assert outputs == ["head/inner/loss"]
    # nested collections are nested subgraphs
    opened = [i for i, line in enumerate(lines) if line.strip().startswith("subgraph")]
    assert [lines[i].strip() for i in opened][:2] == [
        'subgraph n_sg_head ["head"]',
        'subgraph n_sg_head_inner ["head/inner"]',
    ]
    assert text.count("\n    end") + text.count("\n        end") >= 2
    for kind in ("BrickTrainable", "BrickNotTrainable", "BrickLoss", "BrickMetricSingle"):
        assert f"classDef {kind} " in text
    # no node id is a bare mermaid keyword
    assert not re.search(r"^\s+end\(", text, re.M)


def test_groups_restrict_the_picture() -> None:
    text = create_mermaid_dag_graph(model(), groups={"MODEL"})
    assert "BrickLoss" not in text and "MulticlassAccuracy" not in text
    assert '(["t"])' not in text
