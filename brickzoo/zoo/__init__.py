"""Zoo configs: whole recipes (model, data, training, export) described in YAML and built safely;
prebuilt models: entries of config, per-brick weights and a model card, listed, loaded, verified and published.

Example:
    >>> from brickzoo.zoo import build_recipe, load_pretrained
    >>> recipe = build_recipe("shapes_multitask", overrides=["train.epochs=1"])  # doctest: +SKIP
    >>> recipe.model  # a BrickCollection  # doctest: +SKIP
    >>> pretrained = load_pretrained("shapes_multitask")  # doctest: +SKIP
    >>> pretrained.model, pretrained.card.metrics  # doctest: +SKIP
"""

from brickzoo.zoo._cards import (
    CardMetrics,
    FileRecord,
    HeadCard,
    ModelCard,
    OnnxLatency,
    Preprocessing,
    cards_table,
    read_card,
    write_card,
)
from brickzoo.zoo._config import apply_overrides, find_config, list_configs, load_config, validate_config
from brickzoo.zoo._datasets import dataset_entries
from brickzoo.zoo._download import brickzoo_home
from brickzoo.zoo._export import ZooExport, export_onnx
from brickzoo.zoo._pretrained import (
    Pretrained,
    PretrainedEntry,
    find_pretrained,
    is_pretrained_reference,
    list_pretrained,
    load_pretrained,
    pretrained_cards,
    publish_pretrained,
    verify_pretrained,
)
from brickzoo.zoo._recipe import Recipe, build_model, build_recipe

__all__ = [
    "CardMetrics",
    "FileRecord",
    "HeadCard",
    "ModelCard",
    "OnnxLatency",
    "Preprocessing",
    "Pretrained",
    "PretrainedEntry",
    "Recipe",
    "ZooExport",
    "apply_overrides",
    "brickzoo_home",
    "build_model",
    "build_recipe",
    "cards_table",
    "dataset_entries",
    "export_onnx",
    "find_config",
    "find_pretrained",
    "is_pretrained_reference",
    "list_configs",
    "list_pretrained",
    "load_config",
    "load_pretrained",
    "pretrained_cards",
    "publish_pretrained",
    "read_card",
    "validate_config",
    "verify_pretrained",
    "write_card",
]
