"""benchmarks/peers.py: the smoke run prints both tables, and its conversions and schedules match their references."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from brickzoo.data import ShapesDataset, YoloDetectionDataset
from brickzoo.training import TrainConfig
from brickzoo.training._schedule import build_scheduler

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
sys.path.insert(0, str(ROOT / "benchmarks"))

import peers  # noqa: E402  (benchmarks/ is not a package)

QUALITY = {"detection": ["mAP@0.5", "mAP@[.5:.95]"], "segmentation": ["mIoU", "pixel accuracy"]}
SPEED = ["train images/s", "vs brickzoo", "eager ms/image", "onnxruntime ms/image", "M params", "train min"]
ROWS = {  # task -> (system, schedule) rows the table must hold
    "detection": [
        ("brickzoo shapes_detection (resnet10t)", "recipe (fit)"),
        ("brickzoo shapes_detection (resnet18, FCOS's backbone)", "recipe (fit)"),
        ("torchvision FCOS (resnet18 FPN)", "own defaults"),
        ("torchvision FCOS (resnet18 FPN)", "brickzoo's schedule"),
        ("Ultralytics YOLOv8n", "own defaults"),
        ("Ultralytics YOLOv8n", "brickzoo's schedule"),
    ],
    "segmentation": [
        ("brickzoo shapes_segmentation (resnet10t)", "recipe (fit)"),
        ("smp FPN (tu-resnet10t)", "own defaults"),
        ("smp FPN (tu-resnet10t)", "brickzoo's schedule"),
        ("smp Unet (tu-resnet10t)", "own defaults"),
        ("smp Unet (tu-resnet10t)", "brickzoo's schedule"),
    ],
}


def table_after(lines: list[str], header: str) -> list[list[str]]:
    """The cells of the markdown table whose header line is ``header``."""
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        rows.append(line.removeprefix("| ").removesuffix(" |").split(" | "))
    return rows


def test_quick_run_prints_a_table_per_task_with_every_system_and_schedule(tmp_path: Path) -> None:
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")}
    result = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / "peers.py"), "--quick", "--threads", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, f"peers.py exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    for task, expected_rows in ROWS.items():
        columns = ["system", "schedule", *QUALITY[task], *SPEED]
        header = "| " + " | ".join(columns) + " |"
        assert header in lines, f"no {task} table:\n{result.stdout}"
        rows = table_after(lines, header)
        assert [(row[0], row[1]) for row in rows] == expected_rows
        assert all(len(row) == len(columns) for row in rows), rows
        for row in rows:  # every system trained and was scored: quality values in [0, 1]
            assert all(0.0 <= float(value) <= 1.0 for value in row[2:4]), row
        assert rows[0][5] == "1.00x", "the brickzoo recipe is the reference of the speed ratios"
    assert any(line.startswith("mIoU: mean over every class, background included") for line in lines)
    assert sum(line.startswith("target: ") for line in lines) == 4 + 1 + 2 + 1, result.stdout
    assert {path.name for path in tmp_path.iterdir()} <= {"ultralytics"}, "something wrote into the working folder"


def quick_settings(work: Path) -> peers.Settings:
    return peers.Settings(sizes=[64], quality_sizes=[], tasks=["detection"], train_samples=8, held_out=4, work=work)


def test_yolo_files_hold_the_shapes_images_and_boxes(tmp_path: Path) -> None:
    """Written for Ultralytics, read back by brickzoo's YoloDetectionDataset: the shapes dataset's boxes, labels
    and pixels (8-bit)."""
    config = peers.zoo_config("detection", 64, quick_settings(tmp_path))
    peers.write_yolo_data(config, tmp_path)
    reference = ShapesDataset(8, image_size=64, seed=0, max_shapes=3)
    for split, count in (("train", 8), ("val", 8)):
        read = YoloDetectionDataset(tmp_path, split=split)
        assert len(read) == count and read.class_names == ["circle", "square", "triangle", "star"]
        for index in range(count):
            expected, got = reference[index], read[index]
            torch.testing.assert_close(got["boxes"], expected["boxes"], atol=64 * 1e-6, rtol=0)
            assert torch.equal(got["box_labels"], expected["box_labels"])
            assert float((got["images"] - expected["images"]).abs().max()) <= 0.5 / 255 + 1e-6


def test_yolo_batch_is_normalised_cxcywh_of_the_real_boxes() -> None:
    boxes = torch.tensor([[[0.0, 0, 32, 16], [0, 0, 0, 0]], [[8.0, 8, 16, 40], [32, 0, 64, 64]]])
    batch = {"images": torch.zeros(2, 3, 64, 64), "boxes": boxes, "box_labels": torch.tensor([[2, -1], [0, 3]])}
    got = peers.yolo_batch(batch)
    assert got["batch_idx"].tolist() == [0.0, 1.0, 1.0]
    assert got["cls"].tolist() == [[2.0], [0.0], [3.0]]
    expected = [[16 / 64, 8 / 64, 32 / 64, 16 / 64], [12 / 64, 24 / 64, 8 / 64, 32 / 64], [0.75, 0.5, 0.5, 1.0]]
    torch.testing.assert_close(got["bboxes"], torch.tensor(expected))


def test_pad_detections_sorts_by_score_and_pads_with_label_minus_one() -> None:
    boxes = torch.tensor([[0.0, 0, 1, 1], [2, 2, 3, 3]])
    got = peers.pad_detections(
        [(boxes, torch.tensor([0.2, 0.9]), torch.tensor([1, 3])), (boxes[:0], *[torch.zeros(0)] * 2)]
    )
    assert got["boxes"].shape == (2, peers.MAX_DETECTIONS, 4)
    assert got["labels"][0, :3].tolist() == [3, 1, -1] and got["labels"][1].eq(-1).all()
    assert got["scores"][0, :3].tolist() == pytest.approx([0.9, 0.2, 0.0])
    assert got["boxes"][0, 0].tolist() == [2, 2, 3, 3] and got["boxes"][1].eq(0).all()


def learning_rates(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` optimizer steps under torch's own schedulers."""
    rates = []
    for step in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler(step)
    return rates


def test_smp_schedule_is_torch_cosine_annealing_over_the_run() -> None:
    total = 37
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=1e-5)
    expected = learning_rates(lambda _: cosine.step(), optimizer, total)
    plan = peers.smp_example_schedule(64)
    got = [2e-4 * plan.factor(step, total, 10) for step in range(total)]
    assert got == pytest.approx(expected, rel=1e-9)


def test_fcos_schedule_is_the_torchvision_reference() -> None:
    """references/detection/train.py: LinearLR(0.001, min(1000, len(loader) - 1)) stepped per iteration in the
    first epoch only, MultiStepLR(milestones, 0.1) stepped per epoch; lr 0.01 for 16 images, scaled."""
    batch_size, epochs, per_epoch = 32, 8, 5
    plan = peers.fcos_reference_schedule(batch_size, epochs)
    model = torch.nn.Linear(1, 1)
    optimizer = plan.optimizer(model)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02)
    milestones = [round(epochs * 16 / 26), round(epochs * 22 / 26)]
    multistep = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=per_epoch - 1)
    expected = []
    for epoch in range(epochs):
        for _ in range(per_epoch):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if epoch == 0:
                warmup.step()
        multistep.step()
    got = [0.02 * plan.factor(step, epochs * per_epoch, per_epoch) for step in range(epochs * per_epoch)]
    assert got == pytest.approx(expected, rel=1e-9)


def test_brickzoo_schedule_is_what_fit_schedules(tmp_path: Path) -> None:
    config = peers.zoo_config("detection", 64, quick_settings(tmp_path))
    train_config = TrainConfig.from_dict(config["train"])
    total = 50
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=train_config.lr)
    scheduler = build_scheduler(optimizer, train_config, total_steps=total)
    expected = learning_rates(lambda _: scheduler.step(), optimizer, total)
    plan = peers.brickzoo_schedule(config)
    got = [train_config.lr * plan.factor(step, total, 10) for step in range(total)]
    assert got == pytest.approx(expected, rel=1e-9)
    assert plan.clip == train_config.grad_clip_norm and not math.isnan(got[-1])
    assert np.isclose(plan.optimizer(torch.nn.Linear(2, 2)).param_groups[0]["weight_decay"], train_config.weight_decay)


def test_results_keys_and_weight_files_differ_per_task_and_schedule(tmp_path: Path) -> None:
    """brickzoo's recipe trains for detection and for segmentation: a resumed comparison must not take one task's
    cached result (or weights) for the other's."""
    settings = quick_settings(tmp_path)
    zoo = {task: peers.make_systems(task, 64, settings)[0] for task in ("detection", "segmentation")}
    fcos = peers.make_systems("detection", 64, settings)[2]
    keys = {peers.result_key(zoo[task], "brickzoo", 64, settings) for task in zoo}
    keys |= {peers.result_key(fcos, schedule, 64, settings) for schedule in ("own", "brickzoo")}
    assert len(keys) == 4
    assert len({peers.weights_file(tmp_path / "runs.json", key) for key in keys}) == 4
    settings.zoo_overrides = ["model.heads.detect.head_channels=64"]  # a candidate fix gets its own entry
    assert peers.result_key(zoo["detection"], "brickzoo", 64, settings) not in keys
    assert peers.result_key(fcos, "own", 64, settings) in keys  # peers do not take brickzoo's overrides


def test_a_results_path_that_cannot_keep_runs_is_refused(tmp_path: Path) -> None:
    """--results: a folder, a missing folder, a file that is not JSON or not an object: exit 2 naming the path."""
    (tmp_path / "notes.json").write_text("not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "runs.json").write_text('{"64/detection/fcos/own": {}}')
    assert peers.results_problem(tmp_path / "runs.json") is None
    assert peers.results_problem(tmp_path / "new.json") is None  # created by the run
    assert "got a folder" in str(peers.results_problem(tmp_path))
    assert "does not exist" in str(peers.results_problem(tmp_path / "missing" / "runs.json"))
    assert "not JSON" in str(peers.results_problem(tmp_path / "notes.json"))
    assert "got a list" in str(peers.results_problem(tmp_path / "list.json"))
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    result = subprocess.run(
        [str(python), str(ROOT / "benchmarks" / "peers.py"), "--quick", "--results", str(tmp_path / "notes.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")},
    )
    assert result.returncode == 2, result.stderr
    assert "notes.json" in result.stderr and "not JSON" in result.stderr
    assert (tmp_path / "notes.json").read_text() == "not json"  # untouched


def test_schedules_pick_the_peers_runs_and_keep_brickzoos_recipe(tmp_path: Path) -> None:
    settings = quick_settings(tmp_path)
    systems = peers.make_systems("detection", 64, settings)
    assert [peers.schedules_to_train(s, settings) for s in systems] == [
        ["brickzoo"],
        ["brickzoo"],
        ["own", "brickzoo"],
        ["own", "brickzoo"],
    ]
    settings.schedules = ["brickzoo"]
    assert [peers.schedules_to_train(s, settings) for s in systems] == [["brickzoo"]] * 4
    settings.schedules = ["own"]
    assert [peers.schedules_to_train(s, settings) for s in systems] == [["brickzoo"], ["brickzoo"], ["own"], ["own"]]


def test_brickzoo_step_trains_in_the_recipes_precision_and_layout(tmp_path: Path) -> None:
    """The timed step is fit's: shapes_detection's channels_last and amp reach it (the layout of every conv)."""
    settings = quick_settings(tmp_path)
    (zoo,) = [s for s in peers.make_systems("detection", 64, settings) if s.family == "brickzoo"]
    assert zoo.config["train"]["channels_last"] is True and zoo.config["train"]["amp"] == "auto"
    model = zoo.build()
    batch = next(iter(peers.training_loader(zoo.config, batch_size=2)))
    step = zoo.step(model, batch)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    step()  # one optimizer step in that layout
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_smp_gets_a_timm_encoder_and_brickzoo_runs_on_it_too_when_the_recipe_backbone_is_brickzoos(
    tmp_path: Path,
) -> None:
    """At 320 px the recipe's backbone is brickzoo's CSP-Darknet, which smp cannot take as an encoder."""
    settings = peers.Settings(sizes=[320], quality_sizes=[], tasks=["segmentation"], held_out=4, work=tmp_path)
    systems = peers.make_systems("segmentation", 320, settings)
    names = [(system.name, system.family) for system in systems]
    assert names == [
        ("brickzoo shapes_multitask_320_segment_only (csp_darknet_n)", "brickzoo"),
        ("brickzoo shapes_multitask_320_segment_only (mobilenetv3_small_100, smp's encoder)", "brickzoo-timm"),
        ("smp FPN (tu-mobilenetv3_small_100)", "smp-fpn"),
        ("smp Unet (tu-mobilenetv3_small_100)", "smp-unet"),
    ]
    backbones = [system.config["model"]["backbone"]["name"] for system in systems]
    assert backbones == ["brickzoo:csp_darknet_n", *["timm:mobilenetv3_small_100"] * 3]
    model = systems[1].build()
    assert type(model.get_submodule("backbone.model")).__name__ == "TimmFeatures"
    # at 64 px the recipe's backbone is a timm model: smp runs on it, and no extra brickzoo row is made
    families = [system.family for system in peers.make_systems("segmentation", 64, settings)]
    assert families == ["brickzoo", "smp-fpn", "smp-unet"]


def test_training_sets_give_each_system_its_own_data_and_results_entry(tmp_path: Path) -> None:
    """--train-seeds: each set's brickzoo run has its own results key, every system's data follows the set,
    Ultralytics gets one data folder per set, and a peer's cached run at another set is not taken."""
    settings = quick_settings(tmp_path)
    settings.train_seeds = [0, 3]
    sets = peers.training_sets(settings)
    assert [s.zoo_overrides for s in sets] == [["data.train.seed=0"], ["data.train.seed=3"]]
    assert peers.training_sets(quick_settings(tmp_path))[0].zoo_overrides == []
    systems = [peers.make_systems("detection", 64, s) for s in sets]
    for seed, set_systems in zip((0, 3), systems, strict=True):
        assert {system.config["data"]["train"]["seed"] for system in set_systems} == {seed}
    keys = {peers.result_key(set_systems[0], "brickzoo", 64, s) for s, set_systems in zip(sets, systems, strict=True)}
    assert len(keys) == 2
    yolo = [next(system for system in set_systems if system.family == "yolo") for set_systems in systems]
    yolo_keys = [peers.result_key(system, "own", 64, s) for system, s in zip(yolo, sets, strict=True)]
    assert yolo_keys == ["64/detection/yolo/own/data.train.seed=0", "64/detection/yolo/own/data.train.seed=3"]
    assert peers.fingerprint(yolo[0]) != peers.fingerprint(yolo[1])
    folders = [peers.yolo_data_folder(system.config, 64, tmp_path) for system in yolo]
    assert folders[0] != folders[1] and folders[0] == peers.yolo_data_folder(yolo[0].config, 64, tmp_path)
    first = peers.zoo_config("detection", 64, sets[0])
    again = peers.zoo_config("detection", 64, sets[1])
    images = [ShapesDataset(8, image_size=64, seed=seed, max_shapes=3)[0]["images"] for seed in (0, 3)]
    assert not torch.equal(*images)  # the two sets are different images
    assert first["data"]["train"] != again["data"]["train"]


def test_a_peers_cached_run_at_another_brickzoo_schedule_is_not_reused(tmp_path: Path) -> None:
    """--zoo-set train.lr=... changes the schedule the peers train with: their fingerprint changes too."""
    settings = quick_settings(tmp_path)
    fcos = peers.make_systems("detection", 64, settings)[2]
    settings.zoo_overrides = ["train.lr=0.01"]
    fcos_lr = peers.make_systems("detection", 64, settings)[2]
    assert peers.result_key(fcos, "brickzoo", 64, settings) == peers.result_key(fcos_lr, "brickzoo", 64, settings)
    assert peers.fingerprint(fcos) != peers.fingerprint(fcos_lr)


def test_mean_result_averages_every_number_over_the_sets() -> None:
    runs = [
        {"map_50": 0.9, "map": 0.7, "train_minutes": 6.0, "load_average": "2.0"},
        {"map_50": 0.8, "map": 0.5, "train_minutes": 8.0, "load_average": "1.5"},
        {"diverged_at_step": 12, "train_minutes": 1.0, "load_average": "1.0"},
    ]
    assert peers.mean_result(runs[:1]) is runs[0]
    two = peers.mean_result(runs[:2])
    assert two["map_50"] == pytest.approx(0.85) and two["map"] == pytest.approx(0.6)
    assert two["train_minutes"] == pytest.approx(7.0) and two["load_average"] == "2.0"
    three = peers.mean_result(runs)
    assert "map_50" not in three, "a diverged set has no mAP: no mean over the others is shown as the system's"
    assert three["diverged_at_step"] == 12 and three["train_minutes"] == pytest.approx(5.0)


def test_train_seeds_of_the_wrong_kind_exit_2(tmp_path: Path) -> None:
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")}
    script = str(ROOT / "benchmarks" / "peers.py")
    for extra, expected in (
        (["--train-seeds", "1", "1"], "expected different integers >= 0, got [1, 1]"),
        (["--train-seeds", "-1"], "got [-1]"),
        (["--train-seeds", "1", "--zoo-set", "data.train.seed=2"], "both set data.train.seed"),
        (["--train-seeds", "one"], "invalid int value"),
    ):
        result = subprocess.run([str(python), script, "--quick", *extra], capture_output=True, text=True, env=env)
        assert result.returncode == 2 and expected in result.stderr, (extra, result.stderr)


def test_quick_run_on_two_training_sets_prints_each_set_and_their_mean(tmp_path: Path) -> None:
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")}
    command = [str(python), str(ROOT / "benchmarks" / "peers.py"), "--quick", "--threads", "1", "--task", "detection"]
    command += ["--systems", "brickzoo", "yolo", "--schedules", "brickzoo", "--train-seeds", "0", "5"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, f"peers.py exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert any("training sets of seeds [0, 5]; quality is their mean" in line for line in lines), result.stdout
    main = table_after(lines, "| " + " | ".join(["system", "schedule", *QUALITY["detection"], *SPEED]) + " |")
    main = [row for row in main if row[2] != "-"]  # YOLO's own defaults did not train (--schedules brickzoo)
    assert [(row[0], row[1]) for row in main] == [
        ("brickzoo shapes_detection (resnet10t)", "recipe (fit)"),
        ("Ultralytics YOLOv8n", "brickzoo's schedule"),
    ]
    for key, column in (("mAP@0.5", 2), ("mAP@[.5:.95]", 3)):
        start = lines.index(f"{key} on each training set (seed of data.train):")
        rows = table_after(lines[start:], "| system | schedule | set 0 | set 5 | mean | max - min |")
        assert [(row[0], row[1]) for row in rows] == [(row[0], row[1]) for row in main]
        for row, main_row in zip(rows, main, strict=True):
            first, second, mean, spread = (float(v) for v in row[2:6])
            assert mean == pytest.approx((first + second) / 2, abs=1.5e-3)  # printed with 3 decimals
            assert spread == pytest.approx(abs(first - second), abs=1.5e-3)
            assert float(main_row[column]) == pytest.approx(mean, abs=1.5e-3), "the main table shows the mean"
    targets = [line for line in lines if line.startswith("target: brickzoo mAP")]
    assert len(targets) == 2 and all("means over 2 training sets; brickzoo ahead on" in t for t in targets), targets


def test_one_training_set_is_named_in_the_data_line(tmp_path: Path) -> None:
    """--train-seeds 5 alone: the run trains on set 5 and says so (not the recipe's seed 0), without per-set tables."""
    python = PYTHON if PYTHON.exists() else Path(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")}
    command = [str(python), str(ROOT / "benchmarks" / "peers.py"), "--quick", "--threads", "1", "--task", "detection"]
    command += ["--systems", "brickzoo", "--train-seeds", "5"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, f"peers.py exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    (data_line,) = [line for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert "8 training images (seed 5)" in data_line, data_line
    assert "'seed': 5}" in result.stdout  # the trained run's fingerprint: set 5's images
    assert "on each training set" not in result.stdout
