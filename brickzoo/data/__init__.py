"""Datasets returning dicts of named tensors, and their collation into batches.

Every dataset returns per-sample dicts (no batch dimension) using the names the zoo's heads
read: ``images (Tensor[3, H, W])`` float32 in [0, 1], ``labels (Tensor[])`` int64,
``masks (Tensor[H, W])`` int64 (0 background, 255 ignore), ``boxes (Tensor[M, 4])`` float32
xyxy in pixels and ``box_labels (Tensor[M])`` int64. :func:`collate_named` stacks them into a
batch, padding boxes with zeros and box labels with -1; :func:`make_loader` makes a seeded
DataLoader that uses it.

Image files are read as they are displayed (EXIF orientation applied, alpha dropped, 16-bit grey
scaled by 65535); :func:`load_image` reads one file the same way, e.g. for prediction. Datasets
that drop or clip annotations, or doubt their masks, say so with a
:class:`~brickzoo.errors.DataWarning` that counts the cases; ``skip_unreadable=True`` leaves out
images that cannot be decoded, counted the same way.

Detection data is read from COCO JSON, the Ultralytics YOLO layout and Pascal VOC XML.
Augmentation and resizing (letterbox, the transform registry configs name, per-task defaults,
:class:`~brickzoo.data.transforms.TransformedDataset`) live in :mod:`brickzoo.data.transforms`, which
imports torchvision (this package does not).
"""

from brickzoo.data._coco import CocoDetectionDataset
from brickzoo.data._collate import DEFAULT_PAD_VALUES, collate_named, make_loader
from brickzoo.data._common import IMAGE_EXTENSIONS, ImageSize, NamedDataset, load_image
from brickzoo.data._digits import DigitsDataset
from brickzoo.data._folders import ImageFolderDataset, SegmentationFolderDataset
from brickzoo.data._preview import draw_sample, preview_grid
from brickzoo.data._shapes import AVAILABLE_SHAPE_NAMES, SHAPE_NAMES, ShapesDataset
from brickzoo.data._voc import VOC_CLASS_NAMES, VocDetectionDataset
from brickzoo.data._yolo import YoloDetectionDataset

__all__ = [
    "AVAILABLE_SHAPE_NAMES",
    "DEFAULT_PAD_VALUES",
    "IMAGE_EXTENSIONS",
    "SHAPE_NAMES",
    "VOC_CLASS_NAMES",
    "CocoDetectionDataset",
    "DigitsDataset",
    "ImageFolderDataset",
    "ImageSize",
    "NamedDataset",
    "SegmentationFolderDataset",
    "ShapesDataset",
    "VocDetectionDataset",
    "YoloDetectionDataset",
    "collate_named",
    "draw_sample",
    "load_image",
    "make_loader",
    "preview_grid",
]
