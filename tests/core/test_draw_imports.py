"""Plotting and data previews draw with brickzoo._draw and never import the zoo (which imports timm)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_DRAW_AND_REPORT = """
import sys
import torch
{imports}
{draw}
print(sorted(name for name in ("timm", "brickzoo.bag_of_bricks") if name in sys.modules))
"""


@pytest.mark.parametrize(
    ("imports", "draw"),
    [
        (
            "import brickzoo.training._plots as plots",
            "plots.plot_panels([plots.Panel('loss', {'train': [(0.0, 1.0), (1.0, 0.5)]})])",
        ),
        (
            "import brickzoo.data._preview as preview",
            "preview.draw_sample({'images': torch.zeros(3, 8, 8), 'labels': torch.tensor(0)}, ['a'])",
        ),
    ],
    ids=["training._plots", "data._preview"],
)
def test_drawing_modules_do_not_import_timm(imports: str, draw: str) -> None:
    # A fresh interpreter: in this one other tests have long imported timm.
    code = textwrap.dedent(_DRAW_AND_REPORT).format(imports=imports, draw=draw)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
