"""The README's code blocks run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    match = re.search(rf"<!-- {section}:start -->(.*?)<!-- {section}:end -->", text, re.S)
    assert match, f"README.md has no {section} section"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


@pytest.mark.parametrize("section", ["tour", "zoo"])
def test_readme_section_runs(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(section)
    assert blocks
    monkeypatch.chdir(tmp_path)  # the examples write into ./build
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, f"README.md[{section}]", "exec"), namespace)
    if section == "tour":
        assert os.path.exists("build/tour.onnx")
    else:
        outputs = namespace["outputs"]
        assert outputs["classify/predictions"].shape == (2,)
        assert outputs["segment/predictions"].shape == (2, 64, 64)
        assert outputs["detect/boxes"].shape == (2, 100, 4)
        assert set(namespace["losses"]) == {
            "classify/loss",
            "segment/loss_ce",
            "segment/loss_dice",
            "detect/loss_cls",
            "detect/loss_box",
            "detect/loss_ctr",
        }
