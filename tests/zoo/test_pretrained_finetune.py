"""Fine-tuning the prebuilt three-task model to a task it was not trained for (zoo_configs/shapes_count.yaml:
a head counting the shapes beside the three others): out of the box from the command line, and the frozen
heads' weights and metrics stay exactly those of the prebuilt model."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import brickzoo
from brickzoo.cli import main
from brickzoo.data import ShapesDataset
from brickzoo.zoo import build_recipe, load_pretrained
from brickzoo.zoo._pretrained import evaluate_pretrained

ENTRY = Path(brickzoo.__file__).parent / "zoo" / "pretrained" / "shapes_multitask"
OLD_BRICKS = ["backbone", "fpn", "classify/classify", "segment/decode", "detect/head"]
BRIEF = ["train.epochs=1", "data.train.num_samples=64", "data.val.num_samples=32", "data.num_workers=0"]


def test_num_shapes_counts_the_shapes_with_a_box_and_changes_nothing_else() -> None:
    counted, plain = ShapesDataset(40, seed=11, return_counts=True), ShapesDataset(40, seed=11)
    seen = set()
    for index in range(40):
        sample, reference = counted[index], plain[index]
        assert sample["num_shapes"].dtype == torch.int64 and int(sample["num_shapes"]) == len(reference["boxes"])
        assert set(sample) - set(reference) == {"num_shapes"}
        assert all(torch.equal(sample[key], reference[key]) for key in reference)
        seen.add(int(sample["num_shapes"]))
    assert seen == {1, 2, 3}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("finetune")
    argv = ["train", "shapes_count", "--weights", "zoo:shapes_multitask", "--freeze", "backbone", "--out", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--quiet", "--no-export", *BRIEF]) == 0
    return out / "shapes_count", printed.getvalue()


def test_the_fine_tune_reports_loaded_and_new_bricks(finetuned: tuple[Path, str]) -> None:
    run, printed = finetuned
    where = f"zoo:shapes_multitask ({ENTRY / 'weights'})"
    assert f"fine-tuning from {where}: 5 bricks loaded, 0 in part, 1 new: count/classify" in printed
    frozen = "backbone, fpn, classify/classify, classify/loss, segment/decode, segment/loss, detect/head"
    assert f"frozen bricks: {frozen}, detect/postprocess, detect/loss\n" in printed  # all but count's bricks
    record = json.loads((run / "pretrained.json").read_text())
    card = json.loads((ENTRY / "card.json").read_text())
    assert record["name"] == "shapes_multitask" and record["metrics"]["values"] == card["metrics"]["values"]
    assert record["loaded_bricks"]["new"] == ["count/classify"]


def test_the_frozen_bricks_keep_the_prebuilt_weights_bit_for_bit(finetuned: tuple[Path, str]) -> None:
    run, _ = finetuned
    for brick in OLD_BRICKS:
        stored = load_file(str(ENTRY / "weights" / f"{brick}.safetensors"))
        trained = torch.load(run / "checkpoint" / f"{brick}.pt", weights_only=True)
        assert sorted(stored) == sorted(trained), brick
        for key, tensor in stored.items():
            assert torch.equal(trained[key], tensor.to(trained[key].dtype)), f"{brick}.{key}"
    initial = dict(build_recipe("shapes_count", BRIEF, with_data=False).model.named_bricks())["count/classify"]
    learned = torch.load(run / "checkpoint" / "count" / "classify.pt", weights_only=True)
    assert any(not torch.equal(learned[k], v) for k, v in initial.state_dict().items())  # the new head did learn


def test_the_frozen_heads_metrics_are_the_prebuilt_models_on_the_same_images(finetuned: tuple[Path, str]) -> None:
    run, _ = finetuned
    final = json.loads((run / "final_metrics.json").read_text())
    prebuilt = evaluate_pretrained(load_pretrained("shapes_multitask", progress=False), "val", num_samples=32)
    compared = [k for k in prebuilt if k.split("/")[0] in ("classify", "segment", "detect") and "loss" not in k]
    assert len(compared) >= 9
    for key in compared:  # confusion matrices equal, scalars within float noise
        expected = prebuilt[key] if isinstance(prebuilt[key], list) else pytest.approx(prebuilt[key], abs=1e-6)
        assert final[f"val/{key}"] == expected, key
    assert 0.0 <= final["val/count/accuracy"] <= 1.0
