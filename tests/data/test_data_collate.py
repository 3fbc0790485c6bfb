"""collate_named and make_loader on hand-made samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brickzoo.data import ShapesDataset, collate_named, make_loader
from brickzoo.errors import DataError


def _sample(boxes: list[list[float]], labels: list[int], fill: float) -> dict[str, object]:
    return {
        "images": torch.full((3, 4, 5), fill),
        "labels": torch.tensor(int(fill * 10)),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "box_labels": torch.tensor(labels, dtype=torch.int64),
        "path": f"img{fill}.png",
    }


def test_pads_boxes_with_zeros_and_box_labels_with_minus_one() -> None:
    samples = [
        _sample([[1, 2, 3, 4], [5, 6, 7, 8]], [3, 0], 0.1),
        _sample([], [], 0.2),
        _sample([[9, 9, 10, 12]], [2], 0.3),
    ]
    batch = collate_named(samples)
    expected_boxes = torch.tensor(
        [
            [[1, 2, 3, 4], [5, 6, 7, 8]],
            [[0, 0, 0, 0], [0, 0, 0, 0]],
            [[9, 9, 10, 12], [0, 0, 0, 0]],
        ],
        dtype=torch.float32,
    )
    expected_labels = torch.tensor([[3, 0], [-1, -1], [2, -1]], dtype=torch.int64)
    assert batch["boxes"].dtype == torch.float32 and torch.equal(batch["boxes"], expected_boxes)
    assert batch["box_labels"].dtype == torch.int64 and torch.equal(batch["box_labels"], expected_labels)
    assert batch["images"].shape == (3, 3, 4, 5)
    assert torch.equal(batch["images"][1], torch.full((3, 4, 5), 0.2))
    assert torch.equal(batch["labels"], torch.tensor([1, 2, 3]))
    assert batch["path"] == ["img0.1.png", "img0.2.png", "img0.3.png"]


def test_batch_without_any_object_has_zero_width() -> None:
    batch = collate_named([_sample([], [], 0.1), _sample([], [], 0.2)])
    assert batch["boxes"].shape == (2, 0, 4) and batch["box_labels"].shape == (2, 0)


def test_custom_pad_values() -> None:
    samples = [{"points": torch.ones(2, 2)}, {"points": torch.ones(1, 2)}]
    batch = collate_named(samples, pad_values={"points": -7.0})
    assert torch.equal(batch["points"], torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [-7.0, -7.0]]]))


def test_errors_name_the_entry_and_what_was_got() -> None:
    with pytest.raises(DataError, match="empty"):
        collate_named([])
    a, b = _sample([], [], 0.1), _sample([], [], 0.2)
    del b["labels"]
    with pytest.raises(DataError, match=r"sample 1 .*missing \['labels'\]"):
        collate_named([a, b])
    small = _sample([], [], 0.1)
    small["images"] = torch.zeros(3, 8, 8)
    with pytest.raises(DataError, match=r"'images'.*\[3, 4, 5\], \[3, 8, 8\].*image_size"):
        collate_named([_sample([], [], 0.1), small])
    wrong = _sample([[1, 2, 3, 4]], [1], 0.1)
    wrong["boxes"] = torch.zeros(1, 5)
    with pytest.raises(DataError, match=r"cannot pad 'boxes', expected \[M_i, \.\.\.\].*\[1, 4\], \[1, 5\]"):
        collate_named([_sample([[1, 2, 3, 4]], [1], 0.1), wrong])
    scalar = _sample([], [], 0.1)
    scalar["box_labels"] = torch.tensor(3)
    with pytest.raises(DataError, match=r"cannot pad 'box_labels'.*got shapes \[\], \[0\]"):
        collate_named([scalar, _sample([], [], 0.2)])


def test_padding_refuses_mixed_dtypes_instead_of_casting() -> None:
    float_labels = _sample([[1, 2, 3, 4]], [1], 0.1)
    float_labels["box_labels"] = torch.tensor([1.5])
    with pytest.raises(DataError, match=r"cannot pad 'box_labels', the samples have different dtypes"):
        collate_named([_sample([[1, 2, 3, 4]], [2], 0.1), float_labels])


def test_padding_agrees_with_a_numpy_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = [3, 0, 5, 1]
    samples = [{"points": torch.randn(n, 2, 3, generator=generator)} for n in lengths]
    batch = collate_named(samples, pad_values={"points": 9.0})["points"]
    expected = np.full((4, 5, 2, 3), 9.0, dtype=np.float32)
    for i, sample in enumerate(samples):
        expected[i, : lengths[i]] = sample["points"].numpy()
    assert batch.shape == (4, 5, 2, 3)
    np.testing.assert_array_equal(batch.numpy(), expected)


def test_loader_order_depends_only_on_the_seed() -> None:
    dataset = ShapesDataset(12, image_size=16, seed=0)

    def epochs(seed: int) -> list[torch.Tensor]:
        loader = make_loader(dataset, batch_size=4, shuffle=True, seed=seed)
        return [batch["images"] for _ in range(2) for batch in loader]

    first, again, other = epochs(1), epochs(1), epochs(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # two epochs of one loader come in different orders
    assert not all(torch.equal(a, b) for a, b in zip(first[:3], first[3:], strict=True))


def test_loader_batches_follow_the_batch_contract() -> None:
    dataset = ShapesDataset(10, image_size=32, seed=1, max_shapes=4)
    batch = next(iter(make_loader(dataset, batch_size=10, shuffle=False)))
    assert batch["images"].shape == (10, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert batch["labels"].shape == (10,) and batch["labels"].dtype == torch.int64
    assert batch["masks"].shape == (10, 32, 32) and batch["masks"].dtype == torch.int64
    counts = [len(dataset[i]["boxes"]) for i in range(10)]
    assert batch["boxes"].shape == (10, max(counts), 4)
    for i, count in enumerate(counts):
        assert (batch["box_labels"][i, :count] >= 0).all()
        assert (batch["box_labels"][i, count:] == -1).all()
        assert (batch["boxes"][i, count:] == 0).all()
        assert torch.equal(batch["boxes"][i, :count], dataset[i]["boxes"])


def test_loader_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="batch_size must be at least 1, got 0"):
        make_loader(ShapesDataset(2), batch_size=0, shuffle=False)
