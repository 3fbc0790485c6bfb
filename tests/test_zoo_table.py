"""The README's table of prebuilt models is the one generated from the shipped cards, and its examples run."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from PIL import Image

from brickzoo.zoo import cards_table, pretrained_cards
from brickzoo.zoo.build import README_END, README_START, readme_table, update_readme

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = re.compile(r"<!-- pretrained:start -->(.*?)<!-- pretrained:end -->", re.S)


def test_the_readme_table_is_the_table_of_the_shipped_cards() -> None:
    cards = pretrained_cards()
    table = readme_table(README)
    assert table is not None, f"README.md has no {README_START} ... {README_END} table"
    assert table == cards_table(cards.values()), "regenerate it: python -m brickzoo.zoo.build (or update_readme)"
    rows = table.splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{name}`" for name in cards]
    for row, card in zip(rows, cards.values(), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[3] == "x".join(str(v) for v in card.preprocessing.input_size)
        assert cells[5] == f"{card.num_params / 1e6:.2f}" and cells[8] == f"{card.file_size_mb:.2f}"
        assert cells[7] == f"{card.onnx_latency.milliseconds:.2f}" if card.onnx_latency else cells[7] == "n/a"
        for head, head_card in card.heads.items():
            assert f"{head} ({head_card.task}, {head_card.num_classes})" in cells[1]


def test_a_card_that_changes_makes_the_table_disagree(tmp_path: Path) -> None:
    cards = list(pretrained_cards().values())
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START}\nold table\n{README_END}\n\nafter\n")
    assert update_readme(readme) and readme_table(readme) == cards_table(cards)
    assert readme.read_text().endswith(f"{README_END}\n\nafter\n")
    first = cards[0]
    metric = next(iter(first.metrics.values))
    changed = dataclasses.replace(
        first, metrics=dataclasses.replace(first.metrics, values={**first.metrics.values, metric: 0.123456})
    )
    assert readme_table(readme) != cards_table([changed, *cards[1:]])
    (tmp_path / "plain.md").write_text("# no markers\n")
    assert not update_readme(tmp_path / "plain.md") and readme_table(tmp_path / "plain.md") is None


def test_the_readme_section_on_prebuilt_models_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    match = SECTION.search(README.read_text())
    assert match, "README.md has no pretrained section"
    blocks = re.findall(r"```python\n(.*?)```", match.group(1), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (96, 64), (120, 120, 120)).save("photo.jpg")
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, "README.md[pretrained]", "exec"), namespace)
    assert namespace["pretrained"].card.name == "shapes_multitask"
    (prediction,) = namespace["predictions"]
    assert (prediction.width, prediction.height) == (96, 64)
    assert set(prediction.heads) == {"classify", "segment", "detect"}
