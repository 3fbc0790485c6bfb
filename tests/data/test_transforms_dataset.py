"""TransformedDataset: augmentation fixed by (seed, index, epoch) in any worker and order; drops counted per batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from brickzoo.data import ShapesDataset, collate_named, make_loader, preview_grid
from brickzoo.data.transforms import TransformedDataset, build_transforms, default_transform_specs, sample_seed
from brickzoo.errors import DataError

SHAPES_TASKS = ["classification", "segmentation", "detection"]


def _dataset(seed: int = 3) -> TransformedDataset:
    shapes = ShapesDataset(6, image_size=32, max_shapes=4)
    return TransformedDataset(shapes, build_transforms(default_transform_specs(SHAPES_TASKS, 40, train=True)), seed)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _epochs(dataset: TransformedDataset, num_workers: int) -> list[list[dict[str, Any]]]:
    loader = make_loader(dataset, batch_size=2, shuffle=False, num_workers=num_workers)  # persistent workers
    batches = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        batches.append(list(loader))
    return batches


def test_same_seed_index_and_epoch_give_the_same_sample_in_any_order() -> None:
    first, second = _dataset(), _dataset()
    forward = [first[i] for i in range(len(first))]
    backward = [second[i] for i in reversed(range(len(second)))][::-1]
    assert all(_same(a, b) for a, b in zip(forward, backward, strict=True))
    assert _same(first[-1], forward[-1])  # negative indices are the same samples
    assert not torch.equal(_dataset(seed=4)[0]["images"], forward[0]["images"])


def test_another_epoch_draws_another_augmentation() -> None:
    dataset = _dataset()
    epoch_0 = [dataset[i]["images"] for i in range(len(dataset))]
    dataset.set_epoch(1)
    assert dataset.epoch == 1
    epoch_1 = [dataset[i]["images"] for i in range(len(dataset))]
    assert all(a.shape == b.shape == (3, 40, 40) for a, b in zip(epoch_0, epoch_1, strict=True))
    assert sum(not torch.equal(a, b) for a, b in zip(epoch_0, epoch_1, strict=True)) >= len(dataset) - 1
    dataset.set_epoch(0)
    assert all(torch.equal(a, dataset[i]["images"]) for i, a in enumerate(epoch_0))


def test_two_workers_give_the_batches_of_the_main_process_epoch_after_epoch() -> None:
    in_main, in_workers = _epochs(_dataset(), 0), _epochs(_dataset(), 2)
    for main_epoch, worker_epoch in zip(in_main, in_workers, strict=True):
        assert all(_same(a, b) for a, b in zip(main_epoch, worker_epoch, strict=True))
    assert not torch.equal(in_workers[0][0]["images"], in_workers[1][0]["images"])  # the workers saw set_epoch(1)


def test_boxes_dropped_is_stacked_per_batch() -> None:
    shapes = ShapesDataset(4, image_size=32, max_shapes=4)
    dataset = TransformedDataset(shapes, build_transforms([{"center_crop": {"size": 12}}]))
    samples = [dataset[i] for i in range(len(dataset))]
    batch = collate_named(samples)
    assert batch["boxes_dropped"].dtype == torch.int64 and batch["boxes_dropped"].shape == (4,)
    expected = [len(shapes[i]["boxes"]) - len(samples[i]["boxes"]) for i in range(len(shapes))]
    assert batch["boxes_dropped"].tolist() == expected and sum(expected) > 0


def test_seeds_depend_on_seed_index_and_epoch_only() -> None:
    seeds = {sample_seed(s, i, e) for s in range(3) for i in range(3) for e in range(3)}
    assert len(seeds) == 27 and sample_seed(1, 2, 0) == sample_seed(1, 2, 0)
    with pytest.raises(DataError, match="0 or more"):
        sample_seed(0, 0, -1)


def test_wrapper_checks_its_arguments_and_keeps_the_tasks() -> None:
    shapes = ShapesDataset(2, image_size=16)
    dataset = TransformedDataset(shapes, build_transforms([]))
    assert dataset.tasks == shapes.tasks and dataset.num_classes_for("segmentation") == 5 and len(dataset) == 2
    with pytest.raises(DataError, match="seed must be an int, 0 or more"):
        TransformedDataset(shapes, build_transforms([]), seed=-1)
    with pytest.raises(DataError, match="epoch must be an int, 0 or more"):
        dataset.set_epoch(-2)
    with pytest.raises(IndexError):
        dataset[2]


def test_nested_wrappers_add_their_counts() -> None:
    shapes = ShapesDataset(8, image_size=32, max_shapes=4)
    inner = TransformedDataset(shapes, build_transforms([{"center_crop": {"size": 12}}]))
    outer = TransformedDataset(inner, build_transforms([{"center_crop": {"size": 6}}]))
    assert sum(int(inner[i]["boxes_dropped"]) for i in range(len(shapes))) > 0  # the inner crop drops some
    for index in range(len(shapes)):
        assert int(outer[index]["boxes_dropped"]) == len(shapes[index]["boxes"]) - len(outer[index]["boxes"])


def test_preview_grid_draws_augmented_samples_with_the_class_names() -> None:
    shapes = ShapesDataset(4, image_size=32)
    dataset = _dataset()
    assert dataset.class_names == shapes.class_names
    grid = preview_grid(dataset, range(4), columns=2, scale=1, gap=0)
    assert grid.size == (2 * 2 * 40, 2 * 40)  # image and overlay side by side, at the pipeline's size
