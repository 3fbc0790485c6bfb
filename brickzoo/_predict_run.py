"""The :class:`Predictor`: images in, results in the original image's pixels out (see :mod:`brickzoo.predict`)."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from brickzoo._collection import BrickCollection
from brickzoo._groups import MODEL, Stage
from brickzoo._predict_heads import CLASSIFICATION, DETECTION, SEGMENTATION, HeadSpec, find_heads
from brickzoo._predict_results import (
    ClassificationResult,
    DetectionResult,
    HeadResult,
    ImagePrediction,
    SegmentationResult,
)
from brickzoo.errors import BrickDefinitionError, DataError

RESIZE_MODES = ("letterbox", "stretch")
"""How an image is brought to the model's input size: aspect ratio kept and padded, or plain resize."""

ImageInput = str | Path | Image.Image | torch.Tensor
"""An image to predict on: a file path, a pillow image, or a ``Tensor[3, H, W]`` (uint8, or float in [0, 1])."""


def _as_list(images: ImageInput | Iterable[ImageInput]) -> Iterable[ImageInput]:
    """One image as a list of one; a ``[B, 3, H, W]`` tensor as its images; anything else as given."""
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, torch.Tensor):
        return [images] if images.ndim != 4 else list(images)
    return images


def read_input(item: Any, index: int) -> tuple[Path | None, torch.Tensor]:
    """The file (if any) and the original image ``Tensor[3, H, W]`` float32 in [0, 1] of one input.

    Files go through :func:`brickzoo.data.load_image` and pillow images through the same
    conversion (EXIF orientation applied, alpha dropped, 16-bit and palette images by their
    range), so a file and the pillow image opened from it give the same pixels.

    Raises:
        DataError: a file that cannot be read, a tensor that is not ``[3, H, W]`` uint8 or float
            in [0, 1], or another type; the message names the file or the input's index.
    """
    from brickzoo.data import load_image
    from brickzoo.data._common import image_to_tensor

    if isinstance(item, (str, Path)):
        return Path(item), load_image(item)
    if isinstance(item, Image.Image):
        return None, image_to_tensor(ImageOps.exif_transpose(item), None, f"predict: image {index}")
    if not isinstance(item, torch.Tensor):
        raise DataError(
            f"predict: image {index} is a {type(item).__name__}; expected a file path, a pillow image or a "
            "Tensor[3, H, W]"
        )
    if item.ndim != 3 or item.shape[0] != 3 or min(item.shape[1:]) < 1:
        raise DataError(f"predict: image {index} has shape {list(item.shape)}; expected a Tensor[3, H, W] (RGB)")
    if item.dtype == torch.uint8:
        return None, item.detach().cpu().float() / 255.0  # [3, H, W]
    if not item.is_floating_point():
        raise DataError(f"predict: image {index} has dtype {item.dtype}; expected uint8 or float in [0, 1]")
    image = item.detach().cpu().float()  # [3, H, W]
    if not bool(torch.isfinite(image).all()) or float(image.min()) < 0.0 or float(image.max()) > 1.0:
        raise DataError(
            f"predict: image {index} holds values in [{float(image.min())}, {float(image.max())}]; expected float "
            "values in [0, 1] (un-normalised: the model normalises itself)"
        )
    return None, image


def recipe_settings(recipe: Any) -> dict[str, Any]:
    """What a recipe tells a :class:`Predictor` (and the ONNX metadata): its evaluation pipeline, input size,
    resize mode and class names (see :class:`~brickzoo.zoo.Recipe`)."""
    return {
        "input_size": recipe.input_size,
        "resize": recipe.resize_mode,
        "pipeline": recipe.eval_transform,
        "class_names": dict(recipe.class_names),
    }


def _pipeline(resize: str, size: tuple[int, int]) -> Any:
    from brickzoo.data.transforms import build_transforms

    if resize not in RESIZE_MODES:
        raise DataError(f"Predictor: resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
    spec = "letterbox" if resize == "letterbox" else "resize"
    return build_transforms([{spec: {"size": list(size)}}], origin=f"Predictor resize={resize!r}")


def _select(found: dict[str, HeadSpec], heads: Sequence[str] | None) -> dict[str, HeadSpec]:
    if not found:
        raise BrickDefinitionError(
            "Predictor: the model has no classification, segmentation or detection head (a ClassificationHead, "
            "SemanticSegmentationDecoder or DetectionPostprocessor brick) to predict with"
        )
    if heads is None:
        return found
    if isinstance(heads, str):
        heads = [heads]
    unknown = [name for name in heads if name not in found]
    if unknown or not heads:
        raise BrickDefinitionError(
            f"Predictor: heads {list(heads)} are not all heads of the model; it has {list(found)}"
        )
    return {name: found[name] for name in heads}


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DataError(f"Predictor: {name} must be an int >= 1, got {value!r}")
    return int(value)


class Predictor:
    """Predicts with a model's heads on images of any size; results come in the original image's pixels.

    Build it once (it finds the heads, their class names and visualizers) and call it on images:
    each goes through the evaluation ``pipeline`` (by default a ``letterbox`` or ``stretch``
    resize to ``input_size``), batches of ``batch_size`` run through the model's MODEL group,
    and each head's results are mapped back with :func:`~brickzoo.data.transforms.undo_letterbox_boxes`
    and :func:`~brickzoo.data.transforms.undo_letterbox_masks` (see :mod:`brickzoo.predict`).

    Args:
        model: the collection (its MODEL group reads one image input ``[B, 3, H, W]``).
        input_size: the model's input size, an int or ``(height, width)``; needed unless
            ``pipeline`` is given.
        resize: ``"letterbox"`` (aspect ratio kept, padded with grey) or ``"stretch"``; with a
            ``pipeline``, only the name the results give its resizing.
        pipeline: the evaluation pipeline (a transforms.v2 transform over sample dicts, e.g. a
            recipe's ``eval_transform``), used instead of a ``resize`` to ``input_size``. With
            segmentation or detection heads it may hold only transforms whose geometry can be
            undone (letterbox, resize, pad, colour).
        heads: the heads to predict with (all by default).
        class_names: ``{head: names}`` overriding the names the heads' visualizers carry.
        batch_size: images per forward pass.
        top_k: classes listed per classification result.
        device: where the model runs (its parameters' device by default).
        keep_images: keep each original image in its result, for :meth:`ImagePrediction.draw`.

    Raises:
        BrickDefinitionError: the model reads more than one input or has no head, or ``heads``
            names one it does not have.
        DataError: bad ``input_size``, ``resize``, ``batch_size`` or ``top_k``.

    Example:
        >>> import torch
        >>> from brickzoo import BrickCollection, BrickTrainable
        >>> from brickzoo.bag_of_bricks import image_classification_bricks
        >>> from brickzoo.predict import Predictor
        >>> pool = BrickTrainable(lambda images: images.mean(dim=(2, 3)), ["images"], ["pooled"])  # [B, 3]
        >>> classify = image_classification_bricks(2, "pooled", in_channels=3, class_names=["a", "b"])
        >>> predictor = Predictor(BrickCollection({"pool": pool, "classify": classify}), input_size=32)
        >>> result = predictor(torch.rand(3, 40, 60))[0]
        >>> result.width, result.height, result.heads["classify"].class_name in ("a", "b")
        (60, 40, True)
    """

    def __init__(
        self,
        model: BrickCollection,
        *,
        input_size: int | Sequence[int] | None = None,
        resize: str = "letterbox",
        pipeline: Any = None,
        heads: Sequence[str] | None = None,
        class_names: Mapping[str, Sequence[str]] | None = None,
        batch_size: int = 16,
        top_k: int = 5,
        device: str | torch.device | None = None,
        keep_images: bool = True,
    ) -> None:
        from brickzoo.data._transform_letterbox import as_size

        self.model = model
        self.input_size = as_size(input_size, "Predictor input_size") if input_size is not None else None
        self.resize = resize
        if pipeline is None:
            if self.input_size is None:
                raise DataError("Predictor: give input_size (the model's input size) or an evaluation pipeline")
            pipeline = _pipeline(resize, self.input_size)
        self.pipeline = pipeline
        inputs = model.required_inputs(MODEL)
        if len(inputs) != 1:
            raise BrickDefinitionError(f"Predictor: the model's MODEL group reads {inputs}; expected one image input")
        self.input_name = inputs[0]
        self.heads = _select(find_heads(model, class_names), heads)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.top_k = _positive_int(top_k, "top_k")
        parameter = next(iter(model.parameters()), None)
        default = parameter.device if parameter is not None else torch.device("cpu")
        self.device = torch.device(device) if device is not None else default
        self.keep_images = keep_images

    @classmethod
    def from_recipe(cls, recipe: Any, **options: Any) -> Predictor:
        """A predictor for a :class:`~brickzoo.zoo.Recipe`'s model with its input size, resize and class names.

        Args:
            recipe: the recipe (load its weights first).
            **options: the other arguments of :class:`Predictor`, or overrides of the recipe's
                (a ``resize`` resizes to the input size that way instead of the recipe's pipeline).
        """
        settings = recipe_settings(recipe)
        if "resize" in options and "pipeline" not in options:
            settings.pop("pipeline")
            if settings["input_size"] is None:
                raise DataError(f"Predictor: resize={options['resize']!r} needs the recipe's input size, unknown")
        return cls(recipe.model, **{**settings, **options})

    @property
    def maps_geometry(self) -> bool:
        """Whether results must be mapped back to the original pixels (segmentation or detection heads)."""
        return any(spec.task in (SEGMENTATION, DETECTION) for spec in self.heads.values())

    def __call__(self, images: ImageInput | Iterable[ImageInput]) -> list[ImagePrediction]:
        """Predict on one image or an iterable of them (files, pillow images, tensors); one result each, in order."""
        return list(self.stream(images))

    def stream(self, images: ImageInput | Iterable[ImageInput]) -> Iterator[ImagePrediction]:
        """Like calling the predictor, one result at a time: reads ``batch_size`` images at a time."""
        iterator = iter(_as_list(images))
        for start in itertools.count(0, self.batch_size):
            chunk = list(itertools.islice(iterator, self.batch_size))
            if not chunk:
                return
            read = [read_input(item, index) for index, item in enumerate(chunk, start)]
            yield from self.predict_read(read)

    def predict_read(self, read: Sequence[tuple[Path | None, torch.Tensor]]) -> list[ImagePrediction]:
        """Predict on images already read: ``(file or None, Tensor[3, H, W] float in [0, 1])`` each."""
        from brickzoo.data.transforms import apply_transforms, pipeline_letterbox_params

        inputs, params = [], []
        for file, image in read:
            owner = f"predict: {file if file is not None else 'image'}"
            inputs.append(apply_transforms(self.pipeline, {"images": image}, seed=0, owner=owner)["images"])
            size = (int(image.shape[-2]), int(image.shape[-1]))
            params.append(pipeline_letterbox_params(self.pipeline, size) if self.maps_geometry else None)
        outputs = self._run(inputs)
        results = []
        for index, ((file, image), letterbox) in enumerate(zip(read, params, strict=True)):
            heads = {name: self._result(spec, outputs[index], letterbox) for name, spec in self.heads.items()}
            transform: dict[str, Any] = {"resize": self.resize, "input_size": list(inputs[index].shape[-2:])}
            if letterbox is not None:
                transform["scale"] = [letterbox.scale_x, letterbox.scale_y]
                transform["offset"] = [letterbox.pad_left, letterbox.pad_top]
            height, width = (int(n) for n in image.shape[-2:])
            kept = image if self.keep_images else None
            results.append(ImagePrediction(file, width, height, heads, transform, kept))
        return results

    def _run(self, inputs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The heads' result tensors of each image (on the CPU), running images of equal size together."""
        names = [name for spec in self.heads.values() for name in spec.outputs.values()]
        per_image: list[dict[str, torch.Tensor]] = [{} for _ in inputs]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(inputs):
            by_size.setdefault(tuple(image.shape), []).append(index)
        was_training = self.model.training
        self.model.eval()
        try:
            for indices in by_size.values():
                batch = torch.stack([inputs[i] for i in indices]).to(self.device)  # [B, 3, H, W]
                with torch.no_grad():
                    outputs = self.model({self.input_name: batch}, groups=MODEL, stage=Stage.INFERENCE)
                for row, index in enumerate(indices):
                    per_image[index] = {n: outputs[n][row].detach().cpu() for n in names if n in outputs}
        finally:
            self.model.train(was_training)
        return per_image

    def _result(self, spec: HeadSpec, outputs: dict[str, torch.Tensor], letterbox: Any) -> HeadResult:
        """One head's result for one image, in the original image's pixels."""
        from brickzoo.data.transforms import undo_letterbox_boxes, undo_letterbox_masks

        if spec.task == CLASSIFICATION:
            probabilities = outputs[spec.outputs["probabilities"]].float()  # [C]
            predictions = outputs[spec.outputs["predictions"]]  # [] class index; multilabel [C] 0/1
            if spec.multilabel:
                predicted = predictions.bool()  # [C]
            else:
                predicted = torch.zeros_like(probabilities, dtype=torch.bool)
                predicted[int(predictions)] = True
            return ClassificationResult(spec, probabilities, predicted, self.top_k)
        if spec.task == SEGMENTATION:
            mask = undo_letterbox_masks(outputs[spec.outputs["predictions"]].long(), letterbox)  # [h, w]
            return SegmentationResult(spec, mask)
        labels = outputs[spec.outputs["labels"]].long()  # [K], -1 for padding rows
        valid = labels >= 0  # [K]
        boxes = undo_letterbox_boxes(outputs[spec.outputs["boxes"]][valid], letterbox)  # [k, 4] original pixels
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # [k] anything left in the image
        scores = outputs[spec.outputs["scores"]][valid].float()  # [k]
        dropped = int((~inside).sum())
        return DetectionResult(spec, boxes[inside], scores[inside], labels[valid][inside], dropped)


def predict(model: Any, images: ImageInput | Iterable[ImageInput], **options: Any) -> list[ImagePrediction]:
    """Predict on images with a recipe's or a collection's heads; results in the original image's pixels.

    Args:
        model: a :class:`~brickzoo.zoo.Recipe` (its input size, evaluation resize and class names
            are used) or a :class:`~brickzoo.BrickCollection` (then ``input_size`` is required).
        images: file paths, pillow images or ``Tensor[3, H, W]`` (uint8, or float in [0, 1]), or
            one of them.
        **options: the keyword arguments of :class:`Predictor` (``input_size``, ``resize``,
            ``heads``, ``batch_size``, ``top_k``...).

    Returns:
        One :class:`ImagePrediction` per image, in order.

    Example:
        >>> from brickzoo.predict import predict
        >>> from brickzoo.zoo import build_recipe
        >>> result = predict(build_recipe("shapes_detection"), "photo.jpg")[0]  # doctest: +SKIP
        >>> result.heads["detect"].boxes, result.heads["detect"].names  # doctest: +SKIP
    """
    if isinstance(model, BrickCollection):
        return Predictor(model, **options)(images)
    return Predictor.from_recipe(model, **options)(images)
