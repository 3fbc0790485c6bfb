"""Augmentation and resizing of brickzoo samples with ``torchvision.transforms.v2``.

Samples (dicts of ``images``, ``masks``, ``boxes``, ``box_labels``, ``labels``...) become
``tv_tensors`` (``Image``, ``Mask``, XYXY ``BoundingBoxes``) so that every geometric transform
moves the image, its mask and its boxes together, and come back as plain tensors
(:func:`apply_transforms`, :class:`TransformedDataset`). Padding fills images with neutral grey
(:data:`PAD_FILL`) and masks with 255 (ignore); v2 resizes masks with nearest neighbour, never
mixing class indices.

**Resizing.** :class:`Letterbox` scales the long side to the model size, keeps the aspect ratio
and pads, centred (the odd pixel goes right/bottom) or top-left; :func:`letterbox_params` gives
where an image lands and :func:`undo_letterbox_boxes` / :func:`undo_letterbox_masks` map
predictions back to the original pixels (:func:`pipeline_letterbox_params` reads them off an
evaluation pipeline). ``resize`` with ``[height, width]`` stretches instead.

**Dropped boxes are counted.** Boxes that a crop cuts are clipped to it; boxes left narrower than
``min_size`` or smaller than ``min_area`` (defaults 1 pixel) are dropped by :class:`SanitizeBoxes`,
which :func:`apply_transforms` always runs last, and every sample with boxes carries
``boxes_dropped (Tensor[])`` int64. Transforms registered with ``crops=True`` (``random_resized_crop``,
``random_crop``, ``random_iou_crop``, ``center_crop``: see ``list_transforms(crops=True)``) can cut
whole objects out of the image, so a classification label that depends on the objects (the
shapes dataset labels its largest shape) may stop being true; the default pipelines for samples
with both a label and objects use none of them (:func:`default_transform_specs`). ``random_crop``
with ``pad_if_needed`` after ``scale_jitter`` with ``scale_range`` at most 1 only pads and cuts
nothing.

**Determinism.** v2 draws from torch's global generator; :func:`apply_transforms` seeds it per call
and restores it, and :class:`TransformedDataset` uses :func:`sample_seed` ``(seed, index, epoch)``.

**Configs.** :func:`build_transforms` turns a spec list such as
``[{letterbox: {size: 320}}, horizontal_flip, {color_jitter: {brightness: 0.2}}]`` into a pipeline,
after :func:`check_transforms` has found every problem with its key path. The names are
:func:`list_transforms`; their arguments are those of the v2 class they build.
"""

from brickzoo.data._transform_dataset import (
    SanitizeBoxes,
    TransformedDataset,
    apply_transforms,
    from_tv_tensors,
    sample_seed,
    to_tv_tensors,
)
from brickzoo.data._transform_letterbox import (
    MASK_FILL,
    PAD_FILL,
    Letterbox,
    LetterboxParams,
    letterbox_params,
    pipeline_letterbox_params,
    stretch_params,
    undo_letterbox_boxes,
    undo_letterbox_masks,
)
from brickzoo.data._transform_registry import (
    TransformEntry,
    build_transforms,
    check_transforms,
    create_transform,
    default_transform_specs,
    list_transforms,
    register_transform,
    transform_entry,
)

__all__ = [
    "MASK_FILL",
    "PAD_FILL",
    "Letterbox",
    "LetterboxParams",
    "SanitizeBoxes",
    "TransformEntry",
    "TransformedDataset",
    "apply_transforms",
    "build_transforms",
    "check_transforms",
    "create_transform",
    "default_transform_specs",
    "from_tv_tensors",
    "letterbox_params",
    "list_transforms",
    "pipeline_letterbox_params",
    "register_transform",
    "sample_seed",
    "stretch_params",
    "to_tv_tensors",
    "transform_entry",
    "undo_letterbox_boxes",
    "undo_letterbox_masks",
]
