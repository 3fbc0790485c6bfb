"""The bag of bricks: reusable modules and brick factories for vision models."""

from brickzoo._bricks import BrickPerImageVisualization
from brickzoo.bag_of_bricks.backbones import BackboneResnet, resnet_to_brick
from brickzoo.bag_of_bricks.image_classification import ImageClassifier
from brickzoo.bag_of_bricks.preprocessors import Preprocessor

__all__ = [
    "BackboneResnet",
    "BrickPerImageVisualization",
    "ImageClassifier",
    "Preprocessor",
    "resnet_to_brick",
]
