"""Per-image visualization bricks (re-exported from the core)."""

from brickzoo._bricks import BrickPerImageVisualization

__all__ = ["BrickPerImageVisualization"]
