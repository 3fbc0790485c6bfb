"""brickzoo: build PyTorch models from small decoupled bricks wired by tensor names.

A brick wraps a module with the names of the tensors it reads and writes and the groups it
belongs to; a :class:`BrickCollection` runs bricks as a data-dependency graph over a dict of
named tensors, and selecting groups gives each stage (train, validation, test, inference,
export) its own graph from one recipe.
"""

from brickzoo._bricks import (
    BrickInterface,
    BrickLoss,
    BrickMetrics,
    BrickMetricSingle,
    BrickModule,
    BrickNotTrainable,
    BrickPerImageVisualization,
    BrickTrainable,
)
from brickzoo._collection import BrickCollection
from brickzoo._export import ParityReport, check_onnx_parity, export_bricks_as_onnx, read_onnx_metadata
from brickzoo._groups import LOSS, METRIC, MODEL, VISUALIZATION, Stage
from brickzoo._mermaid import create_mermaid_dag_graph
from brickzoo._predict_results import ImagePrediction
from brickzoo._predict_run import Predictor
from brickzoo._weights import LoadReport, load_bricks, save_bricks
from brickzoo.errors import (
    BrickDefinitionError,
    BrickGraphError,
    BrickOutputError,
    BrickRuntimeError,
    BrickzooError,
    MissingInputsError,
    WeightsError,
    WeightsNotADirectoryError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"

__all__ = [
    "LOSS",
    "METRIC",
    "MODEL",
    "VISUALIZATION",
    "BrickCollection",
    "BrickDefinitionError",
    "BrickGraphError",
    "BrickInterface",
    "BrickLoss",
    "BrickMetricSingle",
    "BrickMetrics",
    "BrickModule",
    "BrickNotTrainable",
    "BrickOutputError",
    "BrickPerImageVisualization",
    "BrickRuntimeError",
    "BrickTrainable",
    "BrickzooError",
    "ImagePrediction",
    "LoadReport",
    "MissingInputsError",
    "ParityReport",
    "Predictor",
    "Stage",
    "WeightsError",
    "WeightsNotADirectoryError",
    "WeightsNotFoundError",
    "__version__",
    "check_onnx_parity",
    "create_mermaid_dag_graph",
    "export_bricks_as_onnx",
    "load_bricks",
    "read_onnx_metadata",
    "save_bricks",
]
