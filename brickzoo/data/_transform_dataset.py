"""Applying a transforms.v2 pipeline to brickzoo samples: tv_tensors in and out, seeded per sample, counted drops."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from brickzoo.data._common import NamedDataset, check_index
from brickzoo.errors import DataError

_BOX_INDEX = "_brickzoo_box_index"  # which input box each output box is; filtered with the boxes
_BOX_COUNT = "_brickzoo_box_count"  # how many boxes the sample had before the pipeline (an int, passed through)
_SEED_TAG = 0x62726B7A  # keeps these seeds apart from other (seed, index) streams


def _box_targets(inputs: Any) -> tuple[torch.Tensor, ...] | None:
    """The per-box tensors SanitizeBoxes filters with the boxes: ``box_labels`` and the box index, when present."""
    sample = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else inputs
    if not isinstance(sample, Mapping):
        return None
    found = tuple(sample[key] for key in ("box_labels", _BOX_INDEX) if isinstance(sample.get(key), torch.Tensor))
    return found or None


class SanitizeBoxes(v2.SanitizeBoundingBoxes):
    """``v2.SanitizeBoundingBoxes`` for brickzoo samples: drops boxes narrower than ``min_size`` or below ``min_area``.

    Unlike the v2 default it filters ``box_labels`` (not the classification ``labels``) along
    with the boxes, never touches ``[H, W]`` semantic masks (v2 would filter their rows when ``H``
    equals the number of boxes), and passes samples without boxes through.

    Args:
        min_size: smallest width and height kept, in pixels (at least 1).
        min_area: smallest area kept, in pixels (at least 1).

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> from brickzoo.data.transforms import SanitizeBoxes
        >>> boxes = tv_tensors.BoundingBoxes([[0, 0, 5, 5], [2, 2, 2.5, 9]], format="XYXY", canvas_size=(10, 10))
        >>> out = SanitizeBoxes()({"boxes": boxes, "box_labels": torch.tensor([3, 4]), "labels": torch.tensor(1)})
        >>> out["box_labels"].tolist(), out["labels"].tolist()
        ([3], 1)
    """

    def __init__(self, min_size: float = 1.0, min_area: float = 1.0) -> None:
        super().__init__(min_size=min_size, min_area=min_area, labels_getter=_box_targets)

    def forward(self, *inputs: Any) -> Any:
        """Sanitize the boxes of the sample (a dict), or return it unchanged when it has none."""
        sample = inputs if len(inputs) > 1 else inputs[0]
        if isinstance(sample, Mapping) and not any(isinstance(v, tv_tensors.BoundingBoxes) for v in sample.values()):
            return sample
        return super().forward(*inputs)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Filter boxes and per-box tensors; masks pass unchanged."""
        if isinstance(inpt, tv_tensors.Mask):
            return inpt
        return super().transform(inpt, params)

    def extra_repr(self) -> str:
        """The arguments, for ``repr``."""
        return f"min_size={self.min_size}, min_area={self.min_area}"


def _check_sample(sample: Mapping[str, Any], owner: str) -> tuple[int, int]:
    """The ``(H, W)`` of the sample's image; DataError when its entries do not fit the sample contract."""
    images = sample.get("images")
    if not isinstance(images, torch.Tensor) or images.ndim != 3 or not images.is_floating_point():
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else repr(type(images))
        raise DataError(f"{owner}: expected 'images' float [3, H, W], got {got}")
    size = (int(images.shape[-2]), int(images.shape[-1]))
    for key in ("masks", "instances"):
        if key in sample and tuple(sample[key].shape) != size:
            raise DataError(f"{owner}: {key!r} has shape {list(sample[key].shape)}, expected the image's {list(size)}")
    boxes = sample.get("boxes")
    if boxes is not None and (boxes.ndim != 2 or boxes.shape[-1] != 4):
        raise DataError(f"{owner}: expected 'boxes' [M, 4] xyxy, got {list(boxes.shape)}")
    return size


def to_tv_tensors(sample: Mapping[str, Any], owner: str = "to_tv_tensors") -> dict[str, Any]:
    """A sample dict with ``images`` as ``tv_tensors.Image``, ``masks``/``instances`` as ``Mask`` and XYXY ``boxes``.

    The other entries (``labels``, ``box_labels``, ids...) are kept as they are; v2 transforms pass
    them through. A private box index is added so that :func:`from_tv_tensors` can count the
    boxes a pipeline dropped.

    Example:
        >>> import torch
        >>> from brickzoo.data.transforms import to_tv_tensors
        >>> sample = to_tv_tensors({"images": torch.zeros(3, 4, 6), "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]])})
        >>> sample["boxes"].canvas_size
        (4, 6)
    """
    size = _check_sample(sample, owner)
    converted = dict(sample)
    converted["images"] = tv_tensors.Image(sample["images"])
    for key in ("masks", "instances"):
        if key in sample:
            converted[key] = tv_tensors.Mask(sample[key])
    if "boxes" in sample:
        boxes = sample["boxes"]
        converted["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)
        converted[_BOX_INDEX] = torch.arange(len(boxes))  # [M]
        converted[_BOX_COUNT] = len(boxes)
    return converted


def from_tv_tensors(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Back to the sample contract after a pipeline, with ``boxes_dropped`` counting the boxes it removed.

    ``images`` become plain float32 tensors clamped to [0, 1] (bicubic resizing may overshoot),
    ``masks`` int64, ``boxes`` float32 ``[K, 4]``, ``boxes_dropped (Tensor[])`` int64 (when the
    sample has boxes; added to the sample's own ``boxes_dropped`` if it has one) and ``instances``
    renumbered ``1..K`` over the kept boxes (0 elsewhere).

    Example:
        >>> import torch
        >>> from brickzoo.data.transforms import SanitizeBoxes, from_tv_tensors, to_tv_tensors
        >>> sample = {"images": torch.zeros(3, 8, 8), "boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 1, 1]])}
        >>> from_tv_tensors(SanitizeBoxes()(to_tv_tensors(sample)))["boxes_dropped"]
        tensor(1)
    """
    out = {key: value for key, value in sample.items() if key not in (_BOX_INDEX, _BOX_COUNT)}
    if not sample["images"].is_floating_point():
        raise DataError(
            f"from_tv_tensors: the pipeline returned images of dtype {sample['images'].dtype}; expected float images "
            "in [0, 1] (a transform converted them: leave dtype conversions to the model's preprocessor)"
        )
    out["images"] = sample["images"].as_subclass(torch.Tensor).float().clamp(0.0, 1.0)  # [3, H, W]
    if "masks" in sample:
        out["masks"] = sample["masks"].as_subclass(torch.Tensor).long()  # [H, W]
    if "boxes" in sample:
        out["boxes"] = sample["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)  # [K, 4]
    if _BOX_INDEX in sample:
        kept = sample[_BOX_INDEX]  # [K] indices of the input boxes that are left
        earlier = int(sample.get("boxes_dropped", 0))  # counted by an inner TransformedDataset
        out["boxes_dropped"] = torch.tensor(earlier + sample[_BOX_COUNT] - len(kept), dtype=torch.int64)
        if "instances" in sample:
            instances = sample["instances"].as_subclass(torch.Tensor).long()  # [H, W] 0 or 1..M
            largest = max(sample[_BOX_COUNT], int(instances.max()) if instances.numel() else 0)
            lut = torch.zeros(largest + 1, dtype=torch.int64)  # old instance id -> new id (0: dropped)
            lut[kept + 1] = torch.arange(1, len(kept) + 1)
            out["instances"] = lut[instances]  # [H, W] 0 or 1..K
    return out


def sample_seed(seed: int, index: int, epoch: int) -> int:
    """The seed of the augmentation of sample ``index`` in ``epoch``: a function of ``(seed, index, epoch)`` only.

    Example:
        >>> from brickzoo.data.transforms import sample_seed
        >>> sample_seed(0, 5, 1) == sample_seed(0, 5, 1) != sample_seed(0, 5, 2)
        True
    """
    if min(seed, index, epoch) < 0:
        raise DataError(f"sample_seed: seed, index and epoch must be 0 or more, got {seed}, {index}, {epoch}")
    return int(np.random.SeedSequence([_SEED_TAG, seed, index, epoch]).generate_state(1, dtype=np.uint64)[0])


_FINAL_SANITIZE = SanitizeBoxes()


def apply_transforms(
    transform: Callable[[Any], Any], sample: Mapping[str, Any], seed: int | None = None, owner: str = "apply_transforms"
) -> dict[str, Any]:
    """Run a transforms.v2 pipeline on one sample dict and return it in the sample contract.

    The sample becomes tv_tensors (:func:`to_tv_tensors`), goes through ``transform``, then
    through :class:`SanitizeBoxes` with its defaults (so no pipeline leaves a box of zero width
    or height; a pipeline's own ``sanitize_boxes`` with larger thresholds still decides), and
    comes back as plain tensors (:func:`from_tv_tensors`), with ``boxes_dropped (Tensor[])`` int64
    when the sample has boxes. With ``seed``, torch's global random generator (the one v2 draws
    from) is seeded for this call only and restored afterwards.

    Args:
        transform: a v2 transform (e.g. from :func:`build_transforms`) taking the sample dict.
        sample: ``images (Tensor[3, H, W])`` float in [0, 1] and optionally ``masks (Tensor[H, W])``,
            ``boxes (Tensor[M, 4])`` xyxy pixels, ``box_labels (Tensor[M])``, ``labels`` and others.
        seed: the seed of this call's random draws (see :func:`sample_seed`); None draws from the
            current global state.
        owner: names the caller in error messages (e.g. ``"TransformedDataset sample 12"``).

    Returns:
        The transformed sample: same keys (plus ``boxes_dropped``), new sizes.

    Raises:
        DataError: the sample does not fit the contract, or a transform fails on it (the
            message names the transform's error and the sample's keys and sizes).

    Example:
        >>> import torch
        >>> from brickzoo.data.transforms import apply_transforms, build_transforms
        >>> sample = {"images": torch.rand(3, 170, 300), "boxes": torch.tensor([[10.0, 10, 50, 50]]),
        ...           "box_labels": torch.tensor([2])}
        >>> out = apply_transforms(build_transforms([{"letterbox": {"size": 320}}]), sample)
        >>> out["images"].shape, out["boxes_dropped"].item()
        (torch.Size([3, 320, 320]), 0)
    """
    converted = to_tv_tensors(sample, owner)
    try:
        if seed is None:
            transformed = _FINAL_SANITIZE(transform(converted))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                transformed = _FINAL_SANITIZE(transform(converted))
    except (ValueError, TypeError, RuntimeError) as error:
        shapes = {k: list(v.shape) for k, v in sample.items() if isinstance(v, torch.Tensor)}
        raise DataError(
            f"{owner}: the transform pipeline failed ({type(error).__name__}: {error}) on a sample with {shapes}"
        ) from error
    return from_tv_tensors(transformed)


class TransformedDataset(NamedDataset):
    """A dataset whose samples go through a transforms.v2 pipeline, seeded per ``(seed, index, epoch)``.

    Sample ``index`` of epoch ``e`` is augmented with the seed :func:`sample_seed` ``(seed, index, e)``,
    so it is the same in any DataLoader worker, in any order, across runs; :meth:`set_epoch`
    (call it before iterating each epoch's loader, like ``DistributedSampler.set_epoch``) draws
    new augmentations. The epoch lives in shared memory, so persistent DataLoader workers see it
    too.

    Every sample is the wrapped dataset's sample after :func:`apply_transforms`: the same keys at
    the pipeline's output size, plus ``boxes_dropped (Tensor[])`` int64 when it has boxes (the
    boxes the pipeline cut out or left too small; :func:`~brickzoo.data.collate_named` stacks it to
    ``[B]``, so a training loop can sum it per epoch).

    Args:
        dataset: a dataset of sample dicts (``images``, and optionally ``masks``, ``boxes``,
            ``box_labels``, ``labels``...).
        transform: a v2 transform over the sample dict, e.g. ``build_transforms(specs)``.
        seed: seed of the augmentation (0 or more).

    Attributes:
        dataset: the wrapped dataset.
        tasks: the wrapped dataset's ``tasks`` (empty when it has none).
        class_names: the wrapped dataset's ``class_names`` (None when it has none), e.g. for
            :func:`~brickzoo.data.preview_grid`.

    Example:
        >>> from brickzoo.data import ShapesDataset
        >>> from brickzoo.data.transforms import TransformedDataset, build_transforms, default_transform_specs
        >>> shapes = ShapesDataset(8, image_size=64)
        >>> pipeline = build_transforms(default_transform_specs(list(shapes.tasks), 96, train=True))
        >>> dataset = TransformedDataset(shapes, pipeline, seed=0)
        >>> dataset.set_epoch(1)
        >>> sample = dataset[0]
        >>> sample["images"].shape, sample["masks"].shape, sample["boxes_dropped"].dtype
        (torch.Size([3, 96, 96]), torch.Size([96, 96]), torch.int64)
    """

    def __init__(self, dataset: Dataset[Any], transform: Callable[[Any], Any], seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"TransformedDataset: seed must be an int, 0 or more, got {seed!r}")
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.tasks = dict(getattr(dataset, "tasks", {}))
        names = getattr(dataset, "class_names", None)
        self.class_names: list[str] | None = list(names) if names is not None else None
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose augmentations the samples get."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch`` (0 or more) from now on, in this process and its DataLoader workers."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise DataError(f"TransformedDataset.set_epoch: epoch must be an int, 0 or more, got {epoch!r}")
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(self, index)
        seed = sample_seed(self.seed, index, self.epoch)
        return apply_transforms(self.transform, self.dataset[index], seed, f"TransformedDataset sample {index}")
