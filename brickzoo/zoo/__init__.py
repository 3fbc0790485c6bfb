"""Zoo configs: whole recipes (model, data, training, export) described in YAML and built safely.

Example:
    >>> from brickzoo.zoo import build_recipe
    >>> recipe = build_recipe("shapes_multitask", overrides=["train.epochs=1"])  # doctest: +SKIP
    >>> recipe.model  # a BrickCollection  # doctest: +SKIP
"""

from brickzoo.zoo._config import apply_overrides, find_config, list_configs, load_config, validate_config
from brickzoo.zoo._datasets import dataset_entries
from brickzoo.zoo._recipe import Recipe, build_model, build_recipe

__all__ = [
    "Recipe",
    "apply_overrides",
    "build_model",
    "build_recipe",
    "dataset_entries",
    "find_config",
    "list_configs",
    "load_config",
    "validate_config",
]
