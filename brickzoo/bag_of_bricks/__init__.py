"""The bag of bricks: the zoo's reusable modules and its brick factories.

Each ``*_bricks`` factory returns a dict of bricks to nest in a :class:`~brickzoo.BrickCollection`
(under a head name, or merged at the top level for preprocessor, backbone and neck). Backbones
and necks expose ``feature_levels`` (names, channels, strides), which necks and heads accept as
``features=`` and size themselves from. :func:`list_zoo` says what exists.

Example:
    >>> from brickzoo import BrickCollection
    >>> backbone = backbone_bricks("timm:resnet10t")
    >>> model = BrickCollection({
    ...     **preprocessor_bricks(backbone),
    ...     **backbone,
    ...     "classify": image_classification_bricks(num_classes=4, features=backbone),
    ... })
"""

from brickzoo.bag_of_bricks._features import FeatureLevel, feature_levels
from brickzoo.bag_of_bricks._registry import ZooEntry, get_factory, list_factories, list_zoo, register_factory
from brickzoo.bag_of_bricks.backbones import (
    BrickBackbone,
    BrickBackboneNotTrainable,
    backbone_bricks,
    check_backbone_name,
)
from brickzoo.bag_of_bricks.image_classification import (
    ClassificationHead,
    ClassificationLoss,
    ClassificationMetrics,
    ClassificationVisualizer,
    image_classification_bricks,
)
from brickzoo.bag_of_bricks.necks import BrickNeck, FeaturePyramid, PathAggregation, fpn_bricks, pan_bricks
from brickzoo.bag_of_bricks.object_detection import object_detection_bricks
from brickzoo.bag_of_bricks.preprocessors import Preprocessor, preprocessor_bricks
from brickzoo.bag_of_bricks.semantic_segmentation import (
    SemanticSegmentationDecoder,
    SemanticSegmentationLoss,
    SemanticSegmentationMetrics,
    SemanticSegmentationVisualizer,
    semantic_segmentation_bricks,
)
from brickzoo.torchbricks_compat import BackboneResnet, BrickPerImageVisualization, ImageClassifier, resnet_to_brick

__all__ = [
    "BackboneResnet",
    "BrickBackbone",
    "BrickBackboneNotTrainable",
    "BrickNeck",
    "BrickPerImageVisualization",
    "ClassificationHead",
    "ClassificationLoss",
    "ClassificationMetrics",
    "ClassificationVisualizer",
    "FeatureLevel",
    "FeaturePyramid",
    "ImageClassifier",
    "PathAggregation",
    "Preprocessor",
    "SemanticSegmentationDecoder",
    "SemanticSegmentationLoss",
    "SemanticSegmentationMetrics",
    "SemanticSegmentationVisualizer",
    "ZooEntry",
    "backbone_bricks",
    "check_backbone_name",
    "feature_levels",
    "fpn_bricks",
    "get_factory",
    "image_classification_bricks",
    "list_factories",
    "list_zoo",
    "object_detection_bricks",
    "pan_bricks",
    "preprocessor_bricks",
    "register_factory",
    "resnet_to_brick",
    "semantic_segmentation_bricks",
]
